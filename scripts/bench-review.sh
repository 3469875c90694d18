#!/usr/bin/env bash
# The access review at scale (BENCHMARKS.md, "Access reviews"): a release server on a generated
# policy folder of IDENTITIES service accounts (scripts/scale.py, LINKS of them with a template
# link), its ledger holding RECORDS decisions over 120 days written beforehand by
# `warrant-bench history` (through the ledger's own writer, which keeps the usage summary), then
# `warrant review --out` timed, with the server's and the shell's memory (the server started
# again after its first start imported the facts, as one that has been running would be). Last, the usage
# summary is deleted and the server started again, to time building it from every record.
# Server and shell are pinned to different cores (taskset) when there are two.
# Usage: scripts/bench-review.sh [IDENTITIES] [RECORDS] [LINKS]
set -euo pipefail
cd "$(dirname "$0")/.."
identities=${1:-1000000}
records=${2:-10000000}
links=${3:-100000}
cargo build --release --quiet --bin warrant --bin warrant-bench
W=$PWD/target/release/warrant
B=$PWD/target/release/warrant-bench
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT
server_core=() client_core=()
if [ "$(nproc)" -ge 2 ]; then server_core=(taskset -c 0); client_core=(taskset -c 1); fi

python3 scripts/scale.py "$work/policies" --policies 10 --identities "$identities" --links "$links" --console
echo "history: $("${client_core[@]}" "$B" history --data-dir "$work/data" --records "$records" \
  --identities "$identities" --links "$links" | tr -d '\n') ledger_mib=$(du -sm "$work/data/ledger" | cut -f1)"

serve() {
  started=$(date +%s.%N)
  RUST_LOG=info "${server_core[@]}" "$W" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --authzen-listen 127.0.0.1:0 --no-console \
    --data-dir "$work/data" --policies "$work/policies" > "$work/out" 2> "$work/err" &
  pid=$!
  until grep -q "listening on" "$work/out" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$work/err"; exit 1; }
    sleep 0.2
  done
  admin="http://$(sed -n 's/warrant admin on \([^ ]*\).*/\1/p' "$work/out")"
  echo "serving_after_s=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")" \
    "rss_mib=$(awk '/VmRSS/ {printf "%d", $2 / 1024}' /proc/$pid/status)"
}

rss() { awk '/VmRSS/ {printf "%d", $2 / 1024}' /proc/$pid/status; }

# The server's resident memory, sampled while the review runs: its peak.
sample() {
  peak=0
  while kill -0 "$1" 2>/dev/null; do
    now=$(rss); [ "$now" -gt "$peak" ] && peak=$now
    echo "$peak" > "$work/peak"
    sleep 0.2
  done
}

# The first start imports the facts; a server reviewed has been running for a while: start it
# again, as it would be after any restart.
serve
kill -TERM $pid; wait $pid 2>/dev/null || true
serve
# The server counts the findings for its metrics once the usage summary is read (and then every
# [review] interval_seconds): wait for that count, which is a whole review without the
# sending, so that it does not run beside the timed ones (one review holds the summary at a
# time).
metrics=$(sed -n 's/warrant metrics on //p' "$work/out")
until curl -sf "$metrics" | grep -q '^warrant_review_duration_seconds'; do sleep 1; done
echo "server's own count: $(curl -sf "$metrics" | grep '^warrant_review_duration_seconds') rss_mib=$(rss)"
for round in 1 2; do
  before=$(rss)
  ( sleep 0.1; sample $pid ) & sampler=$!
  started=$(date +%s.%N)
  WARRANT_ADMIN_TOKEN=$(cat "$work/data/admin.token") "${client_core[@]}" /usr/bin/time -f "%M" -o "$work/cli-rss" \
    "$W" review --admin "$admin" --out "$work/review-$round" > "$work/review.json"
  took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")
  kill $sampler 2>/dev/null || true; wait $sampler 2>/dev/null || true
  echo "review round=$round took_s=$took findings=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['findings'])" "$work/review.json")" \
    "server_rss_mib_before=$before server_rss_mib_peak=$(cat "$work/peak")" \
    "shell_max_rss_mib=$(( $(cat "$work/cli-rss") / 1024 ))" \
    "report_kib=$(( $(stat -c %s "$work/review-$round/report.html") / 1024 ))" \
    "findings_csv_mib=$(( $(stat -c %s "$work/review-$round/findings.csv") / 1048576 ))"
done
python3 -c "import json,sys; print('counts:', json.dumps(json.load(open(sys.argv[1]))['counts']))" "$work/review.json"
kill -TERM $pid; wait $pid 2>/dev/null || true

# The usage summary built again from every record (an upgrade, or a lost summary file).
rm -f "$work/data/ledger/usage.summary"
serve
until grep -q "usage summary brought up to date" "$work/err"; do sleep 1; done
echo "rebuilt: $(sed 's/\x1b\[[0-9;]*m//g' "$work/err" | grep -o 'records=[0-9]* seconds=[0-9.]*' | tail -1) rss_mib=$(rss)"
kill -TERM $pid; wait $pid 2>/dev/null || true
