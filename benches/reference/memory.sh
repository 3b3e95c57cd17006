#!/usr/bin/env bash
# Benchmark 6: server memory per active and per idle document, `concord serve` (eviction after
# EVICT seconds idle) vs the reference automerge-repo 2.5.6 Node server, same documents, one run.
# RSS from /proc: (RSS with the documents - RSS before) / DOCS.
#
#   benches/reference/memory.sh [DOCS] [EVICT_SECS]     (default 2000 5)
set -euo pipefail
cd "$(dirname "$0")"
DOCS=${1:-2000}; EVICT=${2:-5}
: "${CONCORD_BIN:?set CONCORD_BIN to a built concord binary}"
. ./lib.sh
npm_install_locked
TMP=$(mktemp -d); SERVER_PID=""
cleanup() { if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi; rm -rf "$TMP"; }
trap cleanup EXIT
report() {
  node -e '
const [name, json] = process.argv.slice(1); const r = JSON.parse(json);
const per = kb => ((kb - r.base_kb) * 1024 / r.docs).toFixed(0);
console.log(`${name.padEnd(9)} | ${(r.base_kb/1024).toFixed(1).padStart(8)} | ${(r.active_kb/1024).toFixed(1).padStart(10)} | ${(r.idle_kb/1024).toFixed(1).padStart(8)} | ${per(r.active_kb).padStart(16)} | ${per(r.idle_kb).padStart(14)}`);' "$1" "$2"
}
echo "# memory: $DOCS documents (200-char text + 20 keys each) created by one client; idle = ${EVICT}+ s after it left"
echo "server    | base MiB | active MiB | idle MiB | B/doc active | B/doc idle"
port=$(free_port)
"$CONCORD_BIN" serve --insecure-no-auth --evict-idle-secs "$EVICT" --bind "127.0.0.1:$port" --data "$TMP/concord" >"$TMP/c.log" 2>&1 &
SERVER_PID=$!; wait_listening "$TMP/c.log"
report concord "$(node memory.mjs "ws://127.0.0.1:$port" "$DOCS" "$SERVER_PID" $((EVICT + 2)))"
echo "  concord metrics after the idle period: $(curl -s "http://127.0.0.1:$port/metrics" | grep -E '^concord_(documents_resident|evictions_total)' | tr '\n' ' ')"
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
port=$(free_port)
node automerge-repo-server.mjs "$port" "$TMP/reference" >"$TMP/r.log" 2>&1 &
SERVER_PID=$!; wait_listening "$TMP/r.log"
report reference "$(node memory.mjs "ws://127.0.0.1:$port" "$DOCS" "$SERVER_PID" $((EVICT + 2)))"
