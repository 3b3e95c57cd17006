#!/usr/bin/env bash
# Runs the JS interop tests: stock automerge-repo clients (exact versions from package-lock.json)
# against a real `concord serve`. Idempotent, works from any cwd.
#
#   tests/js/run.sh [extra node --test args, e.g. --test-name-pattern=restart]
#
# The `concord` binary is taken from $CONCORD_BIN, else $CARGO_TARGET_DIR/debug/concord when
# CARGO_TARGET_DIR is set, else <workspace>/target/debug/concord. Build it first:
#   cargo build -p concord-server
# Debugging: CONCORD_TEST_VERBOSE=1 streams the servers' logs; CONCORD_LOG=concord=trace logs frames.
set -euo pipefail
caller_dir="$PWD"
cd "$(dirname "$0")"

command -v node >/dev/null || { echo "run.sh: node (>= 20) is required" >&2; exit 1; }
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "run.sh: node >= 20 is required (found $(node --version))" >&2
  exit 1
fi

# Install exactly the locked packages when node_modules is missing or was installed from another
# package.json / package-lock.json / node version.
stamp_file=node_modules/.concord-install-stamp
want_stamp="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1) node-$(node --version)"
if [ ! -f "$stamp_file" ] || [ "$(cat "$stamp_file")" != "$want_stamp" ]; then
  echo "== npm ci (tests/js)"
  # --ignore-scripts: the only install script is cbor-extract's check for its prebuilt binary
  # (installed as an optional package); without it cbor-x uses its pure-JS codec, as in browsers.
  npm ci --ignore-scripts --no-audit --no-fund
  printf '%s' "$want_stamp" >"$stamp_file"
fi

if [ -n "${CONCORD_BIN:-}" ] && [ "${CONCORD_BIN#/}" = "$CONCORD_BIN" ]; then
  CONCORD_BIN="$caller_dir/$CONCORD_BIN" # relative to where run.sh was called from
fi
if [ -z "${CONCORD_BIN:-}" ]; then
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    case "$CARGO_TARGET_DIR" in
      /*) CONCORD_BIN="$CARGO_TARGET_DIR/debug/concord" ;;
      *) CONCORD_BIN="$caller_dir/$CARGO_TARGET_DIR/debug/concord" ;;
    esac
  else
    CONCORD_BIN="$PWD/../../target/debug/concord"
  fi
fi
if bin_dir="$(cd "$(dirname "$CONCORD_BIN")" 2>/dev/null && pwd)"; then
  CONCORD_BIN="$bin_dir/$(basename "$CONCORD_BIN")" # absolute: the tests resolve it from their own dir
fi
if [ ! -x "$CONCORD_BIN" ]; then
  echo "run.sh: no concord binary at $CONCORD_BIN (build it: cargo build -p concord-server, or set CONCORD_BIN)" >&2
  exit 1
fi
export CONCORD_BIN

echo "== node --test (tests/js, $CONCORD_BIN)"
flags=(--test --test-timeout=60000)
# Do not let a leaked handle keep the runner alive once every test has finished.
if node --help | grep -q -- '--test-force-exit'; then flags+=(--test-force-exit); fi
exec node "${flags[@]}" "$@" ./*.test.mjs
