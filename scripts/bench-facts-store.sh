#!/usr/bin/env bash
# The facts store at scale (BENCHMARKS.md, "The facts store"). For each identity count: a
# generated policy folder (scripts/scale.py: as many identities as datasets), then a release
# server started on a new data folder (the first import of entities.json), stopped, and started
# again on the same data folder (what a restart pays). On the restarted server: resident memory
# when serving, after 10 s of uncached Checks over every identity and dataset at random
# (warrant-bench --spread) and after 10 s of uncached Checks of one identity on one dataset; and
# the time a policy reload takes when the facts file did not change (ReloadPolicies).
# Usage: scripts/bench-facts-store.sh "1000 1000000"
set -euo pipefail
cd "$(dirname "$0")/.."
identity_counts=${1:-"1000"}
cargo build --release --quiet
W=$PWD/target/release/warrant
B=$PWD/target/release/warrant-bench
work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT
start_server() { # dir data -> sets pid addr admin; prints seconds to serving
  local started
  started=$(date +%s.%N)
  "$W" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --authzen-listen 127.0.0.1:0 --console-listen 127.0.0.1:0 --ledger off --data-dir "$2" --policies "$1" \
    > "$work/out" 2> "$work/err" &
  pid=$!
  until grep -q "listening on" "$work/out" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$work/err"; exit 1; }
    sleep 0.05
  done
  addr=$(sed -n 's/warrant listening on //p' "$work/out")
  admin="http://$(sed -n 's/warrant admin on \([^ ]*\).*/\1/p' "$work/out")"
  ready_s=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" \
    "$started" "$(date +%s.%N)")
}
rss_mib() { awk '/VmRSS/ {printf "%d", $2 / 1024}' /proc/$pid/status; }
uncached() { # extra args
  "$B" --server "http://$addr" --principal ServiceAccount::sa-0 --action read \
    --resource Dataset::ds-0 --approval "" --hit-ratio 0 --concurrency 1 --connections 1 \
    --duration 10 --json "$@" |
    python3 -c "import json,sys; r=json.load(sys.stdin); l=r['latency_us']; print(f\"p50_us={l['p50']} p99_us={l['p99']} req_s={r['requests_per_second']:.0f}\")"
}
for identities in $identity_counts; do
  dir="$work/i$identities"
  data="$work/data-$identities"
  python3 scripts/scale.py "$dir" --policies 10 --identities "$identities"
  start_server "$dir" "$data"
  first_import_s=$ready_s
  kill $pid; wait $pid 2>/dev/null || true
  start_server "$dir" "$data"
  echo "identities=$identities first_start_s=$first_import_s restart_s=$ready_s" \
    "rss_at_start_mib=$(rss_mib) store_mib=$(du -m "$data/facts.redb" | cut -f1)"
  echo "  uncached, at random over $identities: $(uncached --spread "$identities") rss_mib=$(rss_mib)"
  echo "  uncached, one identity and dataset: $(uncached) rss_mib=$(rss_mib)"
  reload_started=$(date +%s.%N)
  WARRANT_ADMIN_TOKEN=$(cat "$data/admin.token") "$W" reload --admin "$admin" > /dev/null
  echo "  reload with the facts file unchanged: $(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" \
    "$reload_started" "$(date +%s.%N)") s"
  kill $pid; wait $pid 2>/dev/null || true
done
