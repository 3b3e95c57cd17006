#!/usr/bin/env bash
# Tests the browser package end to end. Idempotent: installs only what is missing (the wasm32
# target, wasm-bindgen-cli 0.2.130, Debian's chromium + chromium-driver, the npm packages locked
# in wasm/package-lock.json) and reuses caches.
#   1. clippy -D warnings for wasm32 (library and tests)
#   2. wasm-bindgen tests in Node (the API, bad input, history)
#   3. wasm-bindgen tests in headless Chromium: IndexedDB conformance, persistence across a
#      Repo reopen, quota errors; then sync with a real `concord serve` started here
#   4. the package build (wasm/scripts/build.sh: web + nodejs, .d.ts, wasm-opt)
#   5. node --test: bad input from JS (pkg/nodejs) and the Playwright e2e of the editor
# The server binary is $CONCORD_BIN, else it is built (cargo build -p concord-server).
set -euo pipefail
cd "$(dirname "$0")/.."
WASM_DIR=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WASM_DIR/../target}"
export CARGO_TERM_COLOR=never
start=$(date +%s)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# shellcheck source=build-tools.sh
source scripts/build-tools.sh
ensure_build_tools
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "== installing chromium and chromium-driver (apt)"
  as_root apt-get update -qq && as_root apt-get install -y -qq chromium chromium-driver
fi
if [ -z "${CONCORD_BIN:-}" ]; then
  cargo build -q -p concord-server
  CONCORD_BIN="$CARGO_TARGET_DIR/debug/concord"
fi
export CONCORD_BIN

export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver)}"
export WASM_BINDGEN_TEST_TIMEOUT=120
# webdriver.json (read from the current directory) passes Chromium's flags for this machine.
test -f webdriver.json
wasm_test() { cargo test -p concord-wasm --target wasm32-unknown-unknown "$@"; }

echo "== wasm: clippy (wasm32)"
cargo clippy -q -p concord-wasm --target wasm32-unknown-unknown --all-targets -- -D warnings

echo "== wasm: API tests in Node"
wasm_test --test node_api --test node_history

echo "== wasm: IndexedDB tests in headless Chromium"
wasm_test --test browser_storage

# shellcheck source=serve-for-tests.sh
source scripts/serve-for-tests.sh
trap stop_test_server EXIT
start_test_server
echo "== wasm: sync tests in headless Chromium against concord serve ($CONCORD_WASM_TEST_SERVER)"
wasm_test --test browser_sync

echo "== wasm: package (wasm/pkg)"
bash scripts/build.sh

echo "== wasm: JS bad-input test and editor e2e (Playwright, automerge-repo 2.5.6)"
flags=(--test --test-timeout=180000)
if node --help | grep -q -- '--test-force-exit'; then flags+=(--test-force-exit); fi
node "${flags[@]}" tests/js/api.test.mjs tests/js/editor.e2e.test.mjs
echo "== wasm: all passed in $(( $(date +%s) - start )) s"
