#!/usr/bin/env bash
# What a live change costs (BENCHMARKS.md): for each identity count, generate a policy folder
# (scripts/scale.py), start a release server on it, and time N approval grants, N revocations
# and N policy reloads through the shell commands, against N `warrant status` calls as the
# baseline (the same process start-up, connection and token, with no change behind it).
# Usage: scripts/bench-admin.sh "1000 100000" 20
set -euo pipefail
cd "$(dirname "$0")/.."
identity_counts=${1:-"1000 100000"}
rounds=${2:-20}
cargo build --release --quiet
W=$PWD/target/release/warrant
work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT
elapsed_ms() { python3 -c "import sys; print(round((float(sys.argv[2]) - float(sys.argv[1])) * 1000 / $rounds, 1))" "$@"; }
for identities in $identity_counts; do
  dir="$work/i$identities"
  python3 scripts/scale.py "$dir" --policies 10 --identities "$identities"
  export WARRANT_DATA_DIR="$work/data-$identities"
  "$W" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --authzen-listen 127.0.0.1:0 --console-listen 127.0.0.1:0 \
    --ledger off --policies "$dir" > "$work/out" 2> "$work/err" &
  pid=$!
  until grep -q "listening on" "$work/out" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$work/err"; exit 1; }
    sleep 0.05
  done
  export WARRANT_ADMIN="http://$(sed -n 's/warrant admin on \([^ ]*\).*/\1/p' "$work/out")"
  t0=$(date +%s.%N)
  for i in $(seq "$rounds"); do "$W" status > /dev/null; done
  t1=$(date +%s.%N)
  for i in $(seq "$rounds"); do
    "$W" approval grant --id "bench-$i" --ticket "CHG-$i" --approver Human::owner --requester ServiceAccount::sa-0 \
      --subject ServiceAccount::sa-0 --action read --scope Scope::data --for 1h > /dev/null
  done
  t2=$(date +%s.%N)
  for i in $(seq "$rounds"); do "$W" approval revoke "bench-$i" > /dev/null; done
  t3=$(date +%s.%N)
  for i in $(seq "$rounds"); do touch "$dir/identity.cedar"; "$W" reload > /dev/null; done
  t4=$(date +%s.%N)
  echo "identities=$identities status_ms=$(elapsed_ms "$t0" "$t1") grant_ms=$(elapsed_ms "$t1" "$t2") revoke_ms=$(elapsed_ms "$t2" "$t3") reload_ms=$(elapsed_ms "$t3" "$t4")"
  kill $pid; wait $pid 2>/dev/null || true
done
