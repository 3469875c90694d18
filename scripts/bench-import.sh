#!/usr/bin/env bash
# What a large `warrant facts import` costs the server: its resident memory before, at the peak
# (VmHWM) and after, and the time the import takes, for ENTITIES datasets (200,000 by default)
# under Scope::sales-datasets, on the bundled policies.
# Usage: scripts/bench-import.sh [WARRANT_BINARY ...]   (default target/release/warrant)
# Each binary is measured on a fresh data folder, one after the other; ROUNDS=N repeats;
# SERVE_ARGS="--store-cache-bytes N ..." passes settings to each server.
set -euo pipefail
cd "$(dirname "$0")/.."
entities="${ENTITIES:-200000}"
rounds="${ROUNDS:-1}"
binaries=("$@")
[ "${#binaries[@]}" -gt 0 ] || binaries=(target/release/warrant)
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2> /dev/null; rm -rf "$work"' EXIT

python3 - "$entities" > "$work/import.jsonl" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    print(json.dumps({"uid": {"type": "Dataset", "id": f"bulk-{i:07d}"}, "attrs": {},
                      "parents": [{"type": "Scope", "id": "sales-datasets"}]}))
PY
size=$(stat -c %s "$work/import.jsonl")
kib() { awk -v k="$1" 'BEGIN { printf "%.0f MiB", k / 1024 }'; }
status() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$server/status"; }
echo "import: $entities entities, $((size / 1024 / 1024)) MiB of JSON lines"
for round in $(seq "$rounds"); do
  for binary in "${binaries[@]}"; do
    rm -rf "$work/data"
    "$binary" serve --policies policies --data-dir "$work/data" --listen 127.0.0.1:0 \
      --admin-listen 127.0.0.1:0 --authzen-listen 127.0.0.1:0 --console-listen 127.0.0.1:0 \
      --metrics-listen 127.0.0.1:0 --ledger off ${SERVE_ARGS:-} > "$work/serve.out" 2> "$work/serve.err" &
    server=$!
    for _ in $(seq 200); do
      grep -q "^warrant listening on" "$work/serve.out" && break
      sleep 0.05
    done
    admin=$(sed -n 's/^warrant admin on \([^ ]*\).*/\1/p' "$work/serve.out")
    sleep 0.5
    before=$(status VmRSS)
    start=$(date +%s.%N)
    "$binary" facts import "$work/import.jsonl" --admin "http://$admin" --data-dir "$work/data" \
      > "$work/import.out"
    took=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    peak=$(status VmHWM)
    after=$(status VmRSS)
    kill "$server"
    wait "$server" 2> /dev/null || true
    server=""
    echo "round $round  $binary: ${took} s; RSS $(kib "$before") before, $(kib "$peak") at the peak, $(kib "$after") after"
  done
done
