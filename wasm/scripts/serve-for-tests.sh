#!/usr/bin/env bash
# Sourced by wasm/scripts/test.sh: starts `concord serve` on 127.0.0.1 (port 0) with a fresh data
# directory, waits (bounded) for its listening line, mints a full-access token, and exports
#   CONCORD_WASM_TEST_SERVER  ws://127.0.0.1:PORT/...   CONCORD_WASM_TEST_HTTP  http://127.0.0.1:PORT
#   CONCORD_WASM_TEST_TOKEN   the token                  CONCORD_WASM_TEST_PID   the server's pid
# `stop_test_server` stops it (by pid) and removes its data.
start_test_server() {
  CONCORD_WASM_TEST_DATA=$(mktemp -d)
  local log="$CONCORD_WASM_TEST_DATA/serve.out"
  env -u CONCORD_INSECURE_NO_AUTH "$CONCORD_BIN" serve --bind 127.0.0.1:0 --data "$CONCORD_WASM_TEST_DATA/db" \
    >"$log" 2>"$CONCORD_WASM_TEST_DATA/serve.err" &
  CONCORD_WASM_TEST_PID=$!
  local line="" i
  for i in $(seq 1 200); do
    line=$(grep -o 'listening on http://[^ ]* (WebSocket: ws://[^)]*)' "$log" || true)
    [ -n "$line" ] && break
    kill -0 "$CONCORD_WASM_TEST_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$line" ]; then
    echo "concord serve did not start:" >&2; cat "$CONCORD_WASM_TEST_DATA/serve.err" >&2; return 1
  fi
  CONCORD_WASM_TEST_HTTP=$(sed -E 's/listening on (http:[^ ]*) .*/\1/' <<<"$line")
  CONCORD_WASM_TEST_SERVER=$(sed -E 's/.*WebSocket: (ws:[^)]*)\)/\1/' <<<"$line")
  CONCORD_WASM_TEST_TOKEN=$("$CONCORD_BIN" token create --data "$CONCORD_WASM_TEST_DATA/db" \
    --principal wasm-tests --ttl 1h | awk '{print $NF}' | tail -1)
  export CONCORD_WASM_TEST_SERVER CONCORD_WASM_TEST_HTTP CONCORD_WASM_TEST_TOKEN CONCORD_WASM_TEST_PID
}

stop_test_server() {
  if [ -n "${CONCORD_WASM_TEST_PID:-}" ]; then
    kill "$CONCORD_WASM_TEST_PID" 2>/dev/null || true
    wait "$CONCORD_WASM_TEST_PID" 2>/dev/null || true
    CONCORD_WASM_TEST_PID=""
  fi
  [ -n "${CONCORD_WASM_TEST_DATA:-}" ] && rm -rf "$CONCORD_WASM_TEST_DATA"
  CONCORD_WASM_TEST_DATA=""
}
