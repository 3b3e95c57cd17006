#!/usr/bin/env bash
# Cluster on PostgreSQL (issue 14's benchmarks), on one throwaway PostgreSQL (`temp-postgres`,
# PostgreSQL's defaults: fsync=on, synchronous_commit=on):
#   1. durable ingest: `concord-bench durable --database URL`: Concord on SQLite, on PostgreSQL
#      (with and without the cluster's NOTIFY) and the same writes replayed with rusqlite and
#      with plain sqlx statements, in the same transactions; changes/s and ratios.
#   2. fan-out: first, as the reference, one `concord serve --data DIR` (SQLite); then 1, 2 and
#      3 `concord serve --database URL` nodes; `concord-bench loadgen` with every writer on
#      node 1 and the READERS readers of each document spread over the nodes (reader k on node
#      k mod N); two steps at each of the fixed RATES (the better step of each pair is the
#      figure). Per step: same-node vs cross-node delivery latency p50/p99, CPU per delivery
#      of every node, of the nodes together, of PostgreSQL (postmaster + backends) and in total;
#      after each run, each node's mean bus lag (commit on another node to the notice here) from
#      /metrics.
#
#   benches/reference/cluster.sh [--quick] [DOCS READERS RATES]     (default 100 3 50,100)
#
# RATES: keystrokes per second over all writers (deliveries/s = rate x READERS), comma-separated.
# Needs CONCORD_BIN (a built `concord`), BENCH_BIN (a built `concord-bench`) and TEMP_PG_BIN (a
# built `temp-postgres` of the tests crate); release builds for real figures:
#   cargo build --release -p concord-server -p concord-bench -p concord-tests --bins
#   T=${CARGO_TARGET_DIR:-target}/release
#   CONCORD_BIN=$T/concord BENCH_BIN=$T/concord-bench TEMP_PG_BIN=$T/temp-postgres \
#     benches/reference/cluster.sh
# Optional: DURABLE_ARGS (e.g. "--docs 200 --changes 20"), STEP_SECS (default 10).
# --quick: 4 documents x 3 readers at 20 keystrokes/s, 1 s steps, a small durable run.
set -euo pipefail
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
: "${CONCORD_BIN:?set CONCORD_BIN to a built concord binary}"
: "${BENCH_BIN:?set BENCH_BIN to a built concord-bench binary}"
: "${TEMP_PG_BIN:?set TEMP_PG_BIN to a built temp-postgres binary (tests crate)}"
CONCORD_BIN=$(abs "$CONCORD_BIN"); BENCH_BIN=$(abs "$BENCH_BIN"); TEMP_PG_BIN=$(abs "$TEMP_PG_BIN")
cd "$(dirname "$0")"
QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; shift; fi
DOCS=${1:-100}; READERS=${2:-3}; RATES=${3:-50,100}; STEP_SECS=${STEP_SECS:-10}
# shellcheck disable=SC2206
DURABLE=(${DURABLE_ARGS:-})
if [ "$QUICK" = 1 ]; then DOCS=4; READERS=3; RATES=20; STEP_SECS=1; DURABLE=(--docs 20 --changes 5); fi
. ./lib.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export RUST_LIB_BACKTRACE=0

TMP=$(mktemp -d)
NODE_PIDS=()
PG_PID=""
stop_nodes() {
  local p
  for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${NODE_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  NODE_PIDS=()
}
cleanup() {
  stop_nodes
  # temp-postgres stops its server when its standard input closes.
  if [ -n "$PG_PID" ]; then exec {PG[1]}>&- 2>/dev/null || true; wait "$PG_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

coproc PG { "$TEMP_PG_BIN"; }
PG_PID=$PG_PID
read -r line <&"${PG[0]}"
URL=${line#URL }
# The postmaster: the parent of PostgreSQL's checkpointer.
CHECKPOINTER=$(psql "$URL" -Atc "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
POSTMASTER=$(ps -o ppid= -p "$CHECKPOINTER" | tr -d ' ')
echo "# cluster: $(uptime); $(nproc) CPUs shared with other work; PostgreSQL $(psql "$URL" -Atc 'SHOW server_version'), postmaster pid $POSTMASTER"
echo

echo "## 1. durable ingest"
"$BENCH_BIN" durable --database "$URL" "${DURABLE[@]}"
echo

# start_node I: starts node I on the cluster's database, waits for its listening line.
start_node() {
  "$CONCORD_BIN" serve --bind 127.0.0.1:0 --database "$URL" --node-id "node$1" \
    --max-connections-per-ip 1000000 --max-connections-per-principal 1000000 \
    --max-pending-connections-per-ip 1000000 --max-pending-connections 1000000 \
    >"$TMP/node$1.log" 2>&1 &
  NODE_PIDS+=($!)
  wait_listening "$TMP/node$1.log"
}

# bus_lag I TOKEN: "seconds notices" summed by node I's /metrics.
bus_lag() {
  local addr
  addr=$(ws_address "$TMP/node$1.log" | sed 's#^ws://##; s#/.*##')
  curl -fsS -H "Authorization: Bearer $2" "http://$addr/metrics" |
    awk '/^concord_cluster_bus_lag_seconds_total /{s=$2} /^concord_cluster_bus_lag_notices_total /{n=$2} END{print s+0, n+0}'
}

# Each rate twice.
STEPS=$(echo "$RATES" | tr ',' '\n' | awk 'NR > 1 {printf ","} {printf "%s,%s", $1, $1}')
LOAD=(--docs "$DOCS" --readers "$READERS" --rates "$STEPS" --step-secs "$STEP_SECS")

echo "## 2. fan-out: writers on node 1, ${READERS} readers per document spread over the nodes, $RATES keystrokes/s"
echo "### reference: one node on SQLite (--data)"
"$CONCORD_BIN" serve --bind 127.0.0.1:0 --data "$TMP/sqlite" \
  --max-connections-per-ip 1000000 --max-connections-per-principal 1000000 \
  --max-pending-connections-per-ip 1000000 --max-pending-connections 1000000 \
  >"$TMP/sqlite.log" 2>&1 &
NODE_PIDS+=($!)
wait_listening "$TMP/sqlite.log"
TOKEN=$("$CONCORD_BIN" token create --data "$TMP/sqlite" --principal loadgen --ttl 2h 2>/dev/null | tail -1)
"$BENCH_BIN" loadgen --name sqlite --url "$(ws_address "$TMP/sqlite.log")?token=$TOKEN" \
  --server-pid "${NODE_PIDS[0]}" "${LOAD[@]}" || echo "# sqlite: the load generator stopped with an error (above)"
stop_nodes
echo

for N in 1 2 3; do
  for i in $(seq 1 "$N"); do start_node "$i"; done
  TOKEN=$("$CONCORD_BIN" token create --database "$URL" --principal loadgen --ttl 2h 2>/dev/null | tail -1)
  READER_URLS=()
  for i in $(seq 1 "$N"); do READER_URLS+=(--reader-url "$(ws_address "$TMP/node$i.log")?token=$TOKEN"); done
  PIDS=$(IFS=,; echo "${NODE_PIDS[*]}")
  declare -A LAG0=()
  for i in $(seq 1 "$N"); do LAG0[$i]=$(bus_lag "$i" "$TOKEN"); done
  echo "### $N node(s)"
  if ! "$BENCH_BIN" loadgen --name "nodes-$N" --url "$(ws_address "$TMP/node1.log")?token=$TOKEN" \
    "${READER_URLS[@]}" --server-pid "$PIDS" --db-pid "$POSTMASTER" "${LOAD[@]}"; then
    echo "# nodes-$N: the load generator stopped with an error (above); node 1's last log lines:"
    tail -n 5 "$TMP/node1.log"
  fi
  for i in $(seq 1 "$N"); do
    read -r s0 n0 <<<"${LAG0[$i]}"
    read -r s1 n1 <<<"$(bus_lag "$i" "$TOKEN")"
    awk -v i="$i" -v s="$(awk -v a="$s1" -v b="$s0" 'BEGIN{print a-b}')" -v n="$((${n1%.*} - ${n0%.*}))" \
      'BEGIN{ if (n > 0) printf "#   node%d bus lag: %d notices, mean %.2f ms\n", i, n, s*1000/n; else printf "#   node%d bus lag: no notices\n", i }'
  done
  unset LAG0
  stop_nodes
  echo
done
echo "# cluster: $(uptime)"
