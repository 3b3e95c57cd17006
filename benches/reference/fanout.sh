#!/usr/bin/env bash
# Benchmark 2: fan-out under a typing load over real WebSockets on 127.0.0.1, for three servers
# in one run: `concord serve`, the reference automerge-repo 2.5.6 Node server, and a bare
# WebSocket broadcast server (the floor). Servers are pinned to CPU 0 and the load generator
# (fanout.mjs, stock automerge-repo clients) to CPU 1 with taskset; the server's CPU time comes
# from /proc, the client's from process.cpuUsage().
#
#   benches/reference/fanout.sh [--quick] [DOCS READERS RATE SECS]   (default 10 4 10 10)
#
# Needs CONCORD_BIN (a built `concord`), node >= 20. Installs the locked npm packages if needed.
set -euo pipefail
cd "$(dirname "$0")"
QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; shift; fi
DOCS=${1:-10}; READERS=${2:-4}; RATE=${3:-10}; SECS=${4:-10}
if [ "$QUICK" = 1 ]; then DOCS=2; READERS=2; RATE=5; SECS=1; fi
: "${CONCORD_BIN:?set CONCORD_BIN to a built concord binary}"

. ./lib.sh
npm_install_locked
TMP=$(mktemp -d)
SERVER_PID=""
cleanup() { if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi; rm -rf "$TMP"; }
trap cleanup EXIT

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# run NAME MODE URL: the load against the server whose pid is $SERVER_PID.
run() {
  local name=$1 mode=$2 url=$3 out
  out=$("${PIN_CLIENT[@]}" node fanout.mjs "$mode" "$url" "$DOCS" "$READERS" "$RATE" "$SECS" "$SERVER_PID")
  echo "$name $(rss_kb "$SERVER_PID") $out" >>"$TMP/results"
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
}

port=$(free_port)
"${PIN_SERVER[@]}" "$CONCORD_BIN" serve --insecure-no-auth --bind "127.0.0.1:$port" --data "$TMP/concord" >"$TMP/concord.log" 2>&1 &
SERVER_PID=$!
wait_listening "$TMP/concord.log"
run concord repo "ws://127.0.0.1:$port"

port=$(free_port)
"${PIN_SERVER[@]}" node automerge-repo-server.mjs "$port" "$TMP/reference" >"$TMP/reference.log" 2>&1 &
SERVER_PID=$!
wait_listening "$TMP/reference.log"
run reference repo "ws://127.0.0.1:$port"

port=$(free_port)
"${PIN_SERVER[@]}" node broadcast-server.mjs "$port" >"$TMP/broadcast.log" 2>&1 &
SERVER_PID=$!
wait_listening "$TMP/broadcast.log"
run broadcast broadcast "ws://127.0.0.1:$port"

echo "# fanout: $DOCS docs x (1 writer + $READERS readers), $RATE changes/s per writer, $SECS s; server on CPU 0, clients on CPU 1 (${PIN_SERVER[*]:-not pinned})"
node -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(l => {
  const [name, rssKb, ...json] = l.split(" ");
  const r = JSON.parse(json.join(" "));
  return { name, cpuMs: r.server_cpu_s * 1000, rssKb: Number(rssKb), ...r };
});
const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "n/a");
console.log("server    | delivered/s | of expected | p50 ms | p99 ms | server CPU s | CPU ms per 1k delivered | server RSS MiB | client CPU s");
for (const r of rows) {
  const per = r.delivered ? (r.cpuMs / r.delivered) * 1000 : NaN;
  console.log(`${r.name.padEnd(9)} | ${f(r.delivered / r.secs, 0).padStart(11)} | ${f(r.delivered / r.expected * 100, 0).padStart(10)}% | ${f(r.p50_ms).padStart(6)} | ${f(r.p99_ms).padStart(6)} | ${f(r.cpuMs / 1000).padStart(12)} | ${f(per, 1).padStart(23)} | ${f(r.rssKb / 1024, 1).padStart(14)} | ${f(r.client_cpu_s).padStart(12)}`);
}
const by = Object.fromEntries(rows.map(r => [r.name, r]));
if (by.concord && by.reference && by.broadcast) {
  const eff = r => r.delivered / Math.max(r.cpuMs, 1);
  console.log(`ratio: concord/reference delivered per server CPU second ${f(eff(by.concord) / eff(by.reference))} (target >= 5); concord p99 / floor p99 ${f(by.concord.p99_ms / by.broadcast.p99_ms)} (target <= 3)`);
}
' "$TMP/results"
