#!/usr/bin/env bash
# Fan-out saturation and tail latency (issue 16): the native load generator
# (`concord-bench loadgen`: DOCS documents, 1 writer + READERS readers each, every client its
# own connection and Automerge replica, open-loop, ramping the keystroke rate from 20/s by 1.5x
# per step until the p99 passes 100 ms) against four servers, one after the other, each pinned
# to CPU 0 with the generator on CPU 1:
#   concord          `concord serve` (SQLite FULL, real tokens: `concord token create`)
#   automerge-repo   the automerge-repo 2.5.6 Node server (automerge-repo-server.mjs)
#   samod            samod 0.16 behind axum (samod-server/, built here if SAMOD_BIN is unset)
#   relay            `concord-bench relay`, the floor
# then concord and the relay again at half of concord's saturation rate (concord-half,
# relay-half), and prints the ratios of the issue's targets (`concord-bench loadgen-compare`).
#
#   benches/reference/saturation.sh [--quick] [DOCS READERS]     (default 500 3)
#
# Needs CONCORD_BIN (a built `concord`) and BENCH_BIN (a built `concord-bench`; release builds
# for real figures), node >= 20 (installs the locked npm packages if needed). Optional:
# SAMOD_BIN (a built samod-reference-server; without it the script builds it with cargo,
# except in --quick mode, which then skips samod; SAMOD_BIN=none skips it too), LOADGEN_ARGS (extra loadgen options, e.g.
# "--start-rate 200 --step-secs 10"), SATURATION_OUT (a directory to keep the JSON lines in).
# --quick: 4 documents x 2 readers, two half-second steps per server; asserts nothing.
set -euo pipefail
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
: "${CONCORD_BIN:?set CONCORD_BIN to a built concord binary}"
: "${BENCH_BIN:?set BENCH_BIN to a built concord-bench binary}"
CONCORD_BIN=$(abs "$CONCORD_BIN"); BENCH_BIN=$(abs "$BENCH_BIN")
if [ -n "${SAMOD_BIN:-}" ] && [ "$SAMOD_BIN" != none ]; then SAMOD_BIN=$(abs "$SAMOD_BIN"); fi
cd "$(dirname "$0")"
QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; shift; fi
DOCS=${1:-500}; READERS=${2:-3}
. ./lib.sh
npm_install_locked
if [ -z "${SAMOD_BIN:-}" ] && [ "$QUICK" = 0 ]; then
  cargo build -q --release --locked --manifest-path samod-server/Cargo.toml
  SAMOD_BIN="${CARGO_TARGET_DIR:-samod-server/target}/release/samod-reference-server"
fi
# Thousands of connections: one descriptor each, on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export RUST_LIB_BACKTRACE=0   # errors as one message, not a backtrace

TMP=$(mktemp -d)
OUT=${SATURATION_OUT:-$TMP}
mkdir -p "$OUT"
SERVER_PID=""
cleanup() { if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi; rm -rf "$TMP"; }
trap cleanup EXIT

LOAD=(--docs "$DOCS" --readers "$READERS" --start-rate 20 --factor 1.5 --max-steps 16)
if [ "$QUICK" = 1 ]; then LOAD=(--quick); fi
# shellcheck disable=SC2206
EXTRA=(${LOADGEN_ARGS:-})

# start NAME CMD...: starts a server pinned to CPU 0, waits for its "listening" line.
start() {
  local name=$1; shift
  "${PIN_SERVER[@]}" "$@" >"$TMP/$name.log" 2>&1 &
  SERVER_PID=$!
  wait_listening "$TMP/$name.log"
}

# load NAME URL [loadgen options...]: the load against the server $SERVER_PID, then stops it.
load() {
  local name=$1 url=$2; shift 2
  rm -f "$OUT/$name.jsonl"
  if ! "${PIN_CLIENT[@]}" "$BENCH_BIN" loadgen --name "$name" --url "$url" --server-pid "$SERVER_PID" \
    --json "$OUT/$name.jsonl" "$@"; then
    echo "# $name: the load generator stopped with an error (above); its finished steps are kept"
  fi
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  echo
}

concord() {
  start "$1" "$CONCORD_BIN" serve --bind 127.0.0.1:0 --data "$TMP/$1" \
    --max-connections-per-ip 1000000 --max-connections-per-principal 1000000 \
    --max-pending-connections-per-ip 1000000 --max-pending-connections 1000000
  local token
  token=$("$CONCORD_BIN" token create --data "$TMP/$1" --principal loadgen --ttl 2h 2>/dev/null | tail -1)
  load "$1" "$(ws_address "$TMP/$1.log")?token=$token" "${@:2}"
}

relay() {
  start "$1" "$BENCH_BIN" relay
  load "$1" "$(ws_address "$TMP/$1.log")/" "${@:2}"
}

echo "# saturation: $(uptime)"
concord concord "${LOAD[@]}" "${EXTRA[@]}"
start automerge-repo node automerge-repo-server.mjs 0 "$TMP/automerge-repo"
load automerge-repo "$(ws_address "$TMP/automerge-repo.log")" "${LOAD[@]}" "${EXTRA[@]}"
if [ -n "${SAMOD_BIN:-}" ] && [ "$SAMOD_BIN" != none ]; then
  start samod "$SAMOD_BIN" 0 "$TMP/samod"
  load samod "$(ws_address "$TMP/samod.log")/" "${LOAD[@]}" "${EXTRA[@]}"
fi
relay relay "${LOAD[@]}" "${EXTRA[@]}"

# Half of concord's saturation rate (keystrokes/s), or of its first step if none kept up.
HALF=$("$BENCH_BIN" loadgen-compare --half-rate-of concord "$OUT/concord.jsonl")
HALF_LOAD=(--docs "$DOCS" --readers "$READERS" --rates "$HALF" --step-secs 10)
if [ "$QUICK" = 1 ]; then HALF_LOAD=(--quick --rates "$HALF"); fi
concord concord-half "${HALF_LOAD[@]}" "${EXTRA[@]}"
relay relay-half "${HALF_LOAD[@]}" "${EXTRA[@]}"

echo "# saturation: $(uptime)"
"$BENCH_BIN" loadgen-compare "$OUT"/*.jsonl
