#!/usr/bin/env bash
# Tests of the mobile bindings, end to end. Idempotent; works from any directory.
#
#   1. installs what is missing: Debian's libjna-java (and a JRE, node/npm if absent), and the npm
#      package kotlin-compiler@2.4.20 into $CONCORD_KOTLIN_HOME (default ~/.cache/concord-kotlin);
#   2. builds the server (unless $CONCORD_BIN is given), the library and the bindings
#      (scripts/bindings.sh), and runs the crate's Rust unit tests;
#   3. checks the Swift output exists (there is no Swift compiler here);
#   4. runs the Python tests (unittest, tests/python: test_concord, test_deletes,
#      test_history) and the Kotlin
#      program (tests/kotlin,
#      compiled with kotlinc, run on the JVM with JNA). Both start their own `concord serve` on
#      127.0.0.1:0 and stop it when they end.
#
# Environment: CARGO_TARGET_DIR (default <workspace>/target), CONCORD_BIN (default
# $CARGO_TARGET_DIR/debug/concord), CONCORD_KOTLIN_HOME. Exits non-zero if any step failed.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FFI="$(cd "$HERE/.." && pwd)"
ROOT="$(cd "$FFI/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export CARGO_TERM_COLOR=never
BUILD_SERVER=1
if [ -n "${CONCORD_BIN:-}" ]; then BUILD_SERVER=0; fi
export CONCORD_BIN="${CONCORD_BIN:-$CARGO_TARGET_DIR/debug/concord}"
KOTLIN_HOME="${CONCORD_KOTLIN_HOME:-$HOME/.cache/concord-kotlin}"
KOTLIN_VERSION=2.4.20
KC="$KOTLIN_HOME/node_modules/kotlin-compiler"
JNA_JAR=/usr/share/java/jna.jar
BINDINGS="$FFI/bindings"
T0=$(date +%s)

need() { command -v "$1" >/dev/null 2>&1; }
APT_UPDATED=0
apt_install() {
  need apt-get || { echo "missing $* and no apt-get to install it" >&2; exit 1; }
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  if [ "$APT_UPDATED" = 0 ]; then $sudo apt-get update -qq; APT_UPDATED=1; fi
  $sudo apt-get install -y -qq "$@" >/dev/null
}

echo "== prerequisites"
need cargo || { echo "cargo is required" >&2; exit 1; }
need python3 || apt_install python3
need java || apt_install openjdk-17-jre-headless
[ -f "$JNA_JAR" ] || apt_install libjna-java
{ need node && need npm; } || apt_install nodejs npm
installed=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$KC/package.json" 2>/dev/null | head -1)
if [ ! -x "$KC/bin/kotlinc" ] || [ "$installed" != "$KOTLIN_VERSION" ]; then
  echo "installing kotlin-compiler@$KOTLIN_VERSION into $KOTLIN_HOME"
  mkdir -p "$KOTLIN_HOME"
  npm install --prefix "$KOTLIN_HOME" --no-audit --no-fund --loglevel=error "kotlin-compiler@$KOTLIN_VERSION" >/dev/null
fi
COROUTINES_JAR="$KC/lib/kotlinx-coroutines-core-jvm.jar"
STDLIB_JAR="$KC/lib/kotlin-stdlib.jar"
for f in "$KC/bin/kotlinc" "$COROUTINES_JAR" "$STDLIB_JAR" "$JNA_JAR"; do
  [ -e "$f" ] || { echo "missing $f" >&2; exit 1; }
done

echo "== build"
cd "$ROOT"
if [ "$BUILD_SERVER" = 1 ]; then
  cargo build -p concord-server || exit 1
fi
[ -x "$CONCORD_BIN" ] || { echo "no server binary at $CONCORD_BIN" >&2; exit 1; }
"$HERE/bindings.sh" || exit 1

PASSED=0
FAILED=0
FAILED_STEPS=()
step() { # step NAME COMMAND...: runs one test step, timing it, without stopping on failure
  local name="$1" t
  shift
  t=$(date +%s)
  echo "== $name"
  if "$@"; then
    PASSED=$((PASSED + 1))
    echo "-- $name: ok ($(( $(date +%s) - t )) s)"
  else
    FAILED=$((FAILED + 1))
    FAILED_STEPS+=("$name")
    echo "-- $name: FAILED ($(( $(date +%s) - t )) s)"
  fi
}

rust_unit_tests() {
  if [ "${CONCORD_FFI_PREBUILT:-0}" = 1 ]; then
    echo "   (already run by cargo test --workspace)"
    return 0
  fi
  cargo test -q -p concord-ffi 2>&1 | grep -E "^(test result|running|failures|---- )|panicked"; return "${PIPESTATUS[0]}"
}

swift_check() {
  local ok=0 f
  for f in Concord.swift ConcordFFI.h ConcordFFI.modulemap; do
    if [ -s "$BINDINGS/swift/$f" ]; then echo "   present: swift/$f"; else echo "   MISSING: swift/$f"; ok=1; fi
  done
  grep -q "module ConcordFFI" "$BINDINGS/swift/ConcordFFI.modulemap" || { echo "   modulemap names no ConcordFFI module"; ok=1; }
  grep -q "uniffi_concord_ffi_fn_method_dochandle_put" "$BINDINGS/swift/ConcordFFI.h" || { echo "   header lacks the DocHandle functions"; ok=1; }
  grep -q "open class Repo" "$BINDINGS/swift/Concord.swift" || { echo "   Concord.swift lacks class Repo"; ok=1; }
  echo "   (generation only: no Swift compiler on this machine)"
  return $ok
}

python_tests() {
  (cd "$FFI/tests/python" && PYTHONPATH="$BINDINGS/python" timeout 600 python3 -m unittest -v test_concord test_deletes test_history)
}

kotlin_program() {
  local out="$KOTLIN_HOME/build" sum
  mkdir -p "$out"
  # Recompile only when the generated bindings or the program changed (kotlinc takes ~40 s).
  sum=$(cat "$BINDINGS/kotlin/dev/concord/concord_ffi.kt" "$FFI/tests/kotlin/SyncScenario.kt" | sha256sum | cut -c1-16)
  if [ ! -f "$out/app-$sum.jar" ]; then
    rm -f "$out"/app-*.jar
    echo "   kotlinc $KOTLIN_VERSION: compiling the bindings and tests/kotlin/SyncScenario.kt"
    "$KC/bin/kotlinc" -nowarn -cp "$JNA_JAR:$COROUTINES_JAR" \
      "$BINDINGS/kotlin/dev/concord/concord_ffi.kt" "$FFI/tests/kotlin/SyncScenario.kt" \
      -d "$out/app-$sum.jar" || return 1
  else
    echo "   using the cached build $out/app-$sum.jar"
  fi
  timeout 300 java -Djna.library.path="$BINDINGS/kotlin/lib" \
    -cp "$out/app-$sum.jar:$JNA_JAR:$COROUTINES_JAR:$STDLIB_JAR" SyncScenarioKt
}

step "rust unit tests (concord-ffi)" rust_unit_tests
step "swift bindings present" swift_check
step "python tests" python_tests
step "kotlin program" kotlin_program

echo "== mobile-ffi done in $(( $(date +%s) - T0 )) s"
for s in "${FAILED_STEPS[@]}"; do echo "   failed: $s"; done
echo "mobile-ffi: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
