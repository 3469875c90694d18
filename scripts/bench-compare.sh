#!/usr/bin/env bash
# Two builds of the server side by side, driven by the same load generator, alternating, with
# the ledger off and durable: scripts/bench-compare.sh OLD_BINARY NEW_BINARY
# (e.g. a release build of the previous commit, from a git worktree, and target/release/warrant).
set -u
cd "$(dirname "$0")/.."
OLD=$1
NEW=$2
# The load generator built beside the new server (or set LOAD).
LOAD=${LOAD:-$(dirname "$NEW")/warrant-bench}
run() { # binary ledger method hit
  local bin=$1 ledger=$2 method=$3 hit=$4
  local data; data=$(mktemp -d)
  $bin serve --policies policies --data-dir "$data" --ledger "$ledger" --listen 127.0.0.1:50061 \
    --admin-listen 127.0.0.1:50062 --metrics-listen 127.0.0.1:9474 --authzen-listen 127.0.0.1:8090 --console-listen 127.0.0.1:0 > /dev/null 2>&1 &
  local pid=$!
  sleep 1.5
  local out
  out=$($LOAD --server http://127.0.0.1:50061 --method "$method" --hit-ratio "$hit" --concurrency 64 --duration 5 --json 2>/dev/null)
  kill $pid; wait $pid 2>/dev/null; rm -rf "$data"
  echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); print(f\"{d.get('requests_per_second', d.get('rps',0)):.0f} p50={d.get('latency_us',{}).get('p50','?')} p99={d.get('latency_us',{}).get('p99','?')}\")" 2>/dev/null || echo "$out" | head -3
}
for round in 1 2; do
  for ledger in off durable; do
    for spec in "ping 1" "check 1" "check 0"; do
      set -- $spec
      echo "round=$round ledger=$ledger method=$1 hit=$2 old: $(run "$OLD" "$ledger" "$1" "$2")"
      echo "round=$round ledger=$ledger method=$1 hit=$2 new: $(run "$NEW" "$ledger" "$1" "$2")"
    done
  done
done
