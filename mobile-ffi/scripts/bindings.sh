#!/usr/bin/env bash
# Builds libconcord_ffi (debug, or release with --release) and generates the Kotlin, Swift and
# Python bindings into mobile-ffi/bindings/{kotlin,swift,python} (regenerated on every run; the
# directory is gitignored). The Python directory also gets a copy of the library, so
# `PYTHONPATH=mobile-ffi/bindings/python python3 -c 'import concord_ffi'` works as is.
#
# Respects $CARGO_TARGET_DIR (default: <workspace>/target). Works from any directory.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FFI="$(cd "$HERE/.." && pwd)"
ROOT="$(cd "$FFI/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE=debug
CARGO_PROFILE=()
if [ "${1:-}" = "--release" ]; then
  PROFILE=release
  CARGO_PROFILE=(--release)
fi
OUT="${BINDINGS_OUT:-$FFI/bindings}"

cd "$ROOT"
if [ "${CONCORD_FFI_PREBUILT:-0}" = 1 ]; then
  # The caller (scripts/test) already ran `cargo build --workspace`, which built both.
  echo "== using the workspace build of concord-ffi and uniffi-bindgen in $CARGO_TARGET_DIR"
else
  echo "== building concord-ffi ($PROFILE) and uniffi-bindgen in $CARGO_TARGET_DIR"
  # Two invocations: built together, cargo would unify uniffi's `cli` feature into the library.
  cargo build "${CARGO_PROFILE[@]}" -p concord-ffi
  cargo build "${CARGO_PROFILE[@]}" -p concord-uniffi-bindgen
fi

case "$(uname -s)" in
  Darwin) LIBNAME=libconcord_ffi.dylib ;;
  *) LIBNAME=libconcord_ffi.so ;;
esac
LIB="$CARGO_TARGET_DIR/$PROFILE/$LIBNAME"
BINDGEN="$CARGO_TARGET_DIR/$PROFILE/uniffi-bindgen"
[ -f "$LIB" ] || { echo "missing $LIB" >&2; exit 1; }

rm -rf "$OUT"
for lang in kotlin swift python; do
  mkdir -p "$OUT/$lang"
  "$BINDGEN" generate --library "$LIB" --language "$lang" --out-dir "$OUT/$lang" --no-format
done
cp "$LIB" "$OUT/python/"
# Kotlin/JNA finds the library through -Djna.library.path; keep a copy next to the sources too.
mkdir -p "$OUT/kotlin/lib"
cp "$LIB" "$OUT/kotlin/lib/"
echo "== bindings in $OUT:"
(cd "$OUT" && find . -type f | sort)
