#!/usr/bin/env bash
# A/B of two `concord serve` builds or settings at one fixed rate: server CPU per delivery and
# RSS from the native load generator, ROUNDS rounds interleaved (A, B, A, B, ...) so that the
# machine's drift hits both alike. Server on CPU 0, generator on CPU 1 (as saturation.sh).
#
#   CONCORD_A=path CONCORD_B=path [LOG_A=filter] [LOG_B=filter] BENCH_BIN=path \
#     benches/reference/ab.sh [DOCS READERS RATE SECS ROUNDS]        (default 200 3 600 10 2)
#
# LOG_A / LOG_B set CONCORD_LOG for each side (e.g. LOG_B=info,automerge=warn).
set -euo pipefail
: "${CONCORD_A:?}" "${CONCORD_B:?}" "${BENCH_BIN:?}"
DOCS=${1:-200}; READERS=${2:-3}; RATE=${3:-600}; SECS=${4:-10}; ROUNDS=${5:-2}
cd "$(dirname "$0")"
. ./lib.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export RUST_LIB_BACKTRACE=0

# side NAME BIN FILTER: one fixed-rate step against a fresh server.
side() {
  local name=$1 bin=$2 filter=$3 dir pid token
  dir=$(mktemp -d)
  CONCORD_LOG=$filter "${PIN_SERVER[@]}" "$bin" serve --bind 127.0.0.1:0 --data "$dir" \
    --max-connections-per-ip 1000000 --max-connections-per-principal 1000000 \
    --max-pending-connections-per-ip 1000000 --max-pending-connections 1000000 >"$dir/log" 2>&1 &
  pid=$!
  wait_listening "$dir/log"
  token=$("$bin" token create --data "$dir" --principal ab 2>/dev/null | tail -1)
  "${PIN_CLIENT[@]}" "$BENCH_BIN" loadgen --name "$name" --url "$(ws_address "$dir/log")?token=$token" \
    --server-pid "$pid" --docs "$DOCS" --readers "$READERS" --rates "$RATE" --step-secs "$SECS" \
    | grep -E '^ +0 \|' | sed "s/^/$name /"
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$dir"
}

echo "# ab: $DOCS docs x (1 + $READERS), $RATE keystrokes/s, $SECS s, $ROUNDS rounds; $(uptime)"
echo "side | step | chg/s offered | dlv/s offered | dlv/s seen | missing | p50 ms | p99 ms | p99.9 ms | max ms | server us/dlv | sys share | server RSS MiB | gen core"
for _ in $(seq 1 "$ROUNDS"); do
  side A "$CONCORD_A" "${LOG_A:-info}"
  side B "$CONCORD_B" "${LOG_B:-info}"
done
echo "# ab: $(uptime)"
