#!/usr/bin/env bash
# Does the decision cache keep answering while the facts change, and what does a change cost
# (BENCHMARKS.md)? For each identity count: a release server on a generated policy folder
# (scripts/scale.py), the load generator asking one cached question (every request a hit) for
# 10 s, first with no changes, then while it puts RATE new entities a second through the admin
# API (warrant-bench --churn-per-second). Reports Checks/s, the cache's hits, misses and stale
# entries over the run, and the changes with their latency. With "links" as third argument, the
# folder also holds one template link per identity, and each change is a live link of that
# template followed by its unlink (LinkPolicy, UnlinkPolicy; both measured).
# Usage: scripts/bench-cache-churn.sh "1000 100000" 100 [links]
set -euo pipefail
cd "$(dirname "$0")/.."
identity_counts=${1:-"1000"}
rate=${2:-100}
mode=${3:-entities}
cargo build --release --quiet
W=$PWD/target/release/warrant
B=$PWD/target/release/warrant-bench
work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT
metric() { curl -s "$metrics" | awk -v m="$1" '$1 == m {print $2}'; }
for identities in $identity_counts; do
  dir="$work/i$identities"
  links=0
  [ "$mode" = links ] && links=$identities
  python3 scripts/scale.py "$dir" --policies 10 --identities "$identities" --links "$links"
  data="$work/data-$identities"
  "$W" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --authzen-listen 127.0.0.1:0 --console-listen 127.0.0.1:0 --ledger off --data-dir "$data" --policies "$dir" \
    > "$work/out" 2> "$work/err" &
  pid=$!
  until grep -q "listening on" "$work/out" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$work/err"; exit 1; }
    sleep 0.05
  done
  addr=$(sed -n 's/warrant listening on //p' "$work/out")
  metrics=$(sed -n 's/warrant metrics on \([^ ]*\).*/\1/p' "$work/out")
  admin="http://$(sed -n 's/warrant admin on \([^ ]*\).*/\1/p' "$work/out")"
  for churn in 0 "$rate"; do
    before=("$(metric warrant_cache_hits_total)" "$(metric warrant_cache_misses_total)" "$(metric warrant_cache_stale_total)")
    churn_args=()
    if [ "$churn" != 0 ]; then
      churn_args=(--churn-per-second "$churn" --admin "$admin" --churn-entity "Dataset::churn-$churn")
      if [ "$mode" = links ]; then
        # Link sa-1 to existing datasets: the Checks (sa-0) read none of what changes.
        churn_args=(--churn-per-second "$churn" --admin "$admin" --churn-entity "Dataset::ds"
          --churn-link-template dataset-grant --churn-link-principal ServiceAccount::sa-1)
      fi
    fi
    report=$(WARRANT_ADMIN_TOKEN=$(cat "$data/admin.token") "$B" --server "http://$addr" \
      --principal ServiceAccount::sa-0 --action read --resource Dataset::ds-0 --approval "" \
      --hit-ratio 1 --concurrency 16 --duration 10 --json "${churn_args[@]}")
    after=("$(metric warrant_cache_hits_total)" "$(metric warrant_cache_misses_total)" "$(metric warrant_cache_stale_total)")
    python3 - "$identities" "$report" "${before[@]}" "${after[@]}" <<'PY'
import json, sys
identities, report, h0, m0, s0, h1, m1, s1 = sys.argv[1:]
r = json.loads(report)
c = r.get("churn")
changes = (f"changes={c['changes']} ({c['changes_per_second']:.0f}/s) change_p50_us="
           f"{c['latency_us']['p50']} change_p99_us={c['latency_us']['p99']} change_errors={c['errors']}"
           if c else "changes=0")
print(f"identities={identities} {changes} checks_s={r['requests_per_second']:.0f} "
      f"check_p99_us={r['latency_us']['p99']} hits={float(h1) - float(h0):.0f} "
      f"misses={float(m1) - float(m0):.0f} stale={float(s1) - float(s0):.0f}")
PY
  done
  kill $pid; wait $pid 2>/dev/null || true
done
