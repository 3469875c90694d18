#!/usr/bin/env bash
# Scaling runs for BENCHMARKS.md: for each policy count and identity count, and for each count of
# template links (beside 10 policies), generate a policy directory (scripts/scale.py), start a
# release server on it, and record start-up time, resident memory and uncached decision latency
# (one request in flight, every request a cache miss).
# Usage: scripts/bench-scaling.sh "10 100 1000 10000" "1000" ["100000"]
set -euo pipefail
cd "$(dirname "$0")/.."
policy_counts=${1:-"10 100 1000 10000"}
identity_counts=${2:-"1000"}
link_counts=${3:-""}
cargo build --release --quiet
W=target/release/warrant
B=target/release/warrant-bench
work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT
run() {
  local policies=$1 links=$2 identities=$3
  local dir="$work/p$policies-l$links-i$identities"
  python3 scripts/scale.py "$dir" --policies "$policies" --links "$links" --identities "$identities"
  start=$(date +%s.%N)
  "$W" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --authzen-listen 127.0.0.1:0 --console-listen 127.0.0.1:0 \
    --ledger off --data-dir "$work/data-$policies-$links-$identities" --policies "$dir" > "$work/out" 2> "$work/err" &
  pid=$!
  until grep -q "listening on" "$work/out" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$work/err"; exit 1; }
    sleep 0.05
  done
  ready=$(date +%s.%N)
  addr=$(sed -n 's/warrant listening on //p' "$work/out")
  rss_kib=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  report=$("$B" --server "http://$addr" --principal ServiceAccount::sa-0 --action read \
    --resource Dataset::ds-0 --approval "" --hit-ratio 0 --concurrency 1 --connections 1 \
    --duration 5 --json)
  python3 - "$policies" "$links" "$identities" "$start" "$ready" "$rss_kib" "$report" <<'PY'
import json, sys
policies, links, identities, start, ready, rss, report = sys.argv[1:]
r = json.loads(report)
l = r["latency_us"]
print(f"policies={policies} links={links} identities={identities} "
      f"startup_s={float(ready)-float(start):.2f} rss_mib={int(rss)/1024:.0f} "
      f"req_s={r['requests_per_second']:.0f} p50_us={l['p50']} p99_us={l['p99']} "
      f"decisions={r['decisions']} errors={r['errors']}")
PY
  kill $pid; wait $pid 2>/dev/null || true
}
for identities in $identity_counts; do
  for policies in $policy_counts; do
    run "$policies" 0 "$identities"
  done
  for links in $link_counts; do
    run 10 "$links" "$identities"
  done
done
