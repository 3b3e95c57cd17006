#!/usr/bin/env bash
# Quick mode of the benchmark suite: every benchmark at a small size, in seconds, so that the
# benchmarks keep compiling and running. It asserts nothing about speed; the figures it prints
# mean nothing (debug build, tiny sizes). Full runs: see BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
run() { cargo run -q -p concord-bench -- "$@"; }
run probe --sizes 1000 --iters 3 --batches 1,10
run ingest --sizes 1000 --typists 2 --rate 20 --secs 0.5 --reference-msgs 5
run durable --docs 10 --changes 3
run coldload --sizes 1000 --reps 1
run reconnect --docs 50
if [ "${CONCORD_BENCH_FANOUT:-1}" = 1 ] && [ -f benches/reference/fanout.sh ] && [ -x "${CONCORD_BIN:-}" ] && command -v node >/dev/null; then
  bash benches/reference/fanout.sh --quick
fi
# The native load generator against concord, the Node reference and the relay (samod only when
# SAMOD_BIN names a built benches/reference/samod-server: building it here would add minutes).
if [ "${CONCORD_BENCH_SATURATION:-1}" = 1 ] && [ -x "${CONCORD_BIN:-}" ] && command -v node >/dev/null; then
  BENCH_BIN="${CARGO_TARGET_DIR:-target}/debug/concord-bench" bash benches/reference/saturation.sh --quick
fi
# The A/B and instruction-count tools of BENCHMARKS 7 (concord against itself, tiny sizes).
if [ -x "${CONCORD_BIN:-}" ]; then
  BIN_DIR="${CARGO_TARGET_DIR:-target}/debug"
  CONCORD_A="$CONCORD_BIN" CONCORD_B="$CONCORD_BIN" BENCH_BIN="$BIN_DIR/concord-bench" \
    bash benches/reference/ab.sh 2 1 2 1 1
  if command -v valgrind >/dev/null; then
    CG_OUT=$(mktemp -d)
    CALLGRIND_SETTLE=1 BENCH_BIN="$BIN_DIR/concord-bench" \
      bash benches/reference/callgrind.sh 1 1 2 1 "$CG_OUT"
    rm -rf "$CG_OUT"
  fi
fi
echo "bench quick mode: ok"
