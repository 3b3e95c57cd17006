#!/usr/bin/env bash
# Instructions per delivered change of `concord serve` under the native load generator, counted
# by valgrind's callgrind (instruction counts do not depend on what else the machine runs, so
# two builds can be compared on a busy machine). Counting starts once every client is set up
# and stops after the step and its drain: only the typing load is counted (and the 15 s the
# generator lets the setup settle, idle but for pings and the housekeeping tick).
#
#   CONCORD_BIN=path BENCH_BIN=path [CALLGRIND_SETTLE=15] benches/reference/callgrind.sh [DOCS READERS RATE SECS OUT]
#                                                             (default 100 3 10 40 a fresh dir)
#
# Prints the generator's step line, the server's instruction total and instructions per
# delivery; OUT keeps callgrind's file for `callgrind_annotate --inclusive=yes OUT/cg.out.1`.
set -euo pipefail
: "${CONCORD_BIN:?}" "${BENCH_BIN:?}"
DOCS=${1:-100}; READERS=${2:-3}; RATE=${3:-10}; SECS=${4:-40}; OUT=${5:-$(mktemp -d)}
command -v valgrind >/dev/null || { echo "valgrind is required" >&2; exit 1; }
cd "$(dirname "$0")"
. ./lib.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$OUT"
DATA=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DATA"' EXIT
TOKEN=$("$CONCORD_BIN" token create --data "$DATA" --principal callgrind 2>/dev/null | tail -1)
CONCORD_LOG=${CONCORD_LOG:-info,automerge=warn} valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$OUT/cg.out" "$CONCORD_BIN" serve --bind 127.0.0.1:0 --data "$DATA" \
  --max-connections-per-ip 1000000 --max-connections-per-principal 1000000 \
  --max-pending-connections-per-ip 1000000 --max-pending-connections 1000000 \
  --handshake-timeout-secs 600 --idle-timeout-secs 600 >"$OUT/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 600); do grep -q listening "$OUT/server.log" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$OUT/server.log" || { cat "$OUT/server.log" >&2; exit 1; }
"$BENCH_BIN" loadgen --name callgrind --url "$(ws_address "$OUT/server.log")?token=$TOKEN" \
  --server-pid "$PID" --docs "$DOCS" --readers "$READERS" --rates "$RATE" --step-secs "$SECS" \
  --settle-secs "${CALLGRIND_SETTLE:-15}" --drain-secs 20 --setup-secs 900 --connect-concurrency 8 \
  | while IFS= read -r line; do
      printf '%s\n' "$line"
      case $line in side*|*'chg/s offered'*) callgrind_control -i on "$PID" >/dev/null ;; esac
    done | tee "$OUT/loadgen.txt"
callgrind_control -i off "$PID" >/dev/null
callgrind_control -d "$PID" >/dev/null
kill "$PID"; wait "$PID" 2>/dev/null || true
# Inclusive counts: the whole program, tungstenite's zero-fill of its read buffer before every
# socket read (memset: callgrind counts `rep stosb` once per byte, far above its real cost, and
# how many reads there are depends on timing), and the engine (every job a shard's core runs).
INCL=$(callgrind_annotate --inclusive=yes "$OUT/cg.out.1" 2>/dev/null | tr -d ,)
pick() { awk -v re="$1" '$0 ~ re && !t { t = $1 } END { print t + 0 }' <<<"$INCL"; }
TOTAL=$(pick 'PROGRAM TOTALS')
FILL=$(pick '__memset_avx2_unaligned_erms')
ENGINE=$(pick 'concord::repo::driver::Shared::work \\[')
N=$(awk -v r="$RATE" -v n="$READERS" -v s="$SECS" 'BEGIN { printf "%d", r * n * s }')
echo "callgrind: $DOCS docs x (1 + $READERS), $RATE keystrokes/s for $SECS s, $N deliveries; instructions per delivery: total $((TOTAL / N)), without memset (nearly all of it the read-buffer zero-fill) $(((TOTAL - FILL) / N)), engine $((ENGINE / N)) (callgrind_annotate --inclusive=yes $OUT/cg.out.1)"
