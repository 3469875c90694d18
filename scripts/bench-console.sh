#!/usr/bin/env bash
# The console's pages at scale (BENCHMARKS.md, "The console"): a release server on a generated
# policy folder of IDENTITIES service accounts and as many datasets (scripts/scale.py --console),
# its ledger filled with RECORDS decisions by warrant-bench (uncached Checks spread over every
# identity and dataset), then each page fetched again and again by one client signed in through
# a one-time link, timed per page (p50, p99, max). The first filtered search after the ledger
# was filled builds the search index of every segment; it is timed apart ("cold"). Needs
# about 3 GB of disk and 15 minutes at the defaults.
# Server and client are pinned to different cores (taskset) when there are two.
# Usage: scripts/bench-console.sh [IDENTITIES] [RECORDS] [REQUESTS_PER_PAGE]
set -euo pipefail
cd "$(dirname "$0")/.."
identities=${1:-1000000}
records=${2:-1000000}
requests=${3:-200}
cargo build --release --quiet --bin warrant --bin warrant-bench
W=$PWD/target/release/warrant
B=$PWD/target/release/warrant-bench
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT
server_core=() client_core=()
if [ "$(nproc)" -ge 2 ]; then server_core=(taskset -c 0); client_core=(taskset -c 1); fi

python3 scripts/scale.py "$work/policies" --policies 10 --identities "$identities" --console
"${server_core[@]}" "$W" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --admin-listen 127.0.0.1:0 --authzen-listen 127.0.0.1:0 --console-listen 127.0.0.1:0 \
  --data-dir "$work/data" --policies "$work/policies" > "$work/out" 2> "$work/err" &
pid=$!
until grep -q "listening on" "$work/out" 2>/dev/null; do
  kill -0 $pid 2>/dev/null || { cat "$work/err"; exit 1; }
  sleep 0.2
done
addr=$(sed -n 's/warrant listening on //p' "$work/out")
admin="http://$(sed -n 's/warrant admin on \([^ ]*\).*/\1/p' "$work/out")"
console=$(sed -n 's/warrant console on \([^ ]*\).*/\1/p' "$work/out")

filled=$(date +%s.%N)
"${client_core[@]}" "$B" --server "http://$addr" --principal ServiceAccount::sa-0 --action read \
  --resource Dataset::ds-0 --approval "" --hit-ratio 0 --spread "$identities" \
  --concurrency 32 --connections 2 --requests "$records" --json > "$work/fill.json"
echo "identities=$identities ledger_records=$records" \
  "filled_in_s=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$filled" "$(date +%s.%N)")" \
  "ledger_mib=$(du -sm "$work/data/ledger" | cut -f1) rss_mib=$(awk '/VmRSS/ {printf "%d", $2 / 1024}' /proc/$pid/status)"

invite=$(WARRANT_ADMIN_TOKEN=$(cat "$work/data/admin.token") "$W" console invite Human::owner --admin "$admin" |
  python3 -c "import json,sys; print(json.load(sys.stdin)['url'])")
"${client_core[@]}" python3 - "$console" "$invite" "$requests" "$identities" <<'PY'
import http.client, json, re, statistics, sys, time, urllib.parse

console, invite, requests, identities = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
base = urllib.parse.urlsplit(console)
connection = http.client.HTTPConnection(base.hostname, base.port, timeout=60)

def fetch(method, path, body=None, cookie=None):
    headers = {"Cookie": cookie} if cookie else {}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    started = time.perf_counter()
    connection.request(method, path, body=body, headers=headers)
    answer = connection.getresponse()
    page = answer.read().decode()
    return answer.status, answer.getheader("Set-Cookie") or "", page, time.perf_counter() - started

token = invite.rsplit("/", 1)[1]
_, set_cookie, _, _ = fetch("POST", "/console/invite", body=f"token={token}")
cookie = set_cookie.split(";")[0]
# The first page after the ledger was filled builds the search index of every segment (its
# pictures count the last day, which is all of it here).
status, _, page, cold = fetch("GET", "/console/decisions", cookie=cookie)
assert status == 200, (status, page[:300])
print(f"  cold: the log's first page, which builds the search index of every segment: {cold * 1000:.0f} ms")
ids = re.findall(r'href="/console/decisions/([0-9a-f-]{36})"', page)
# A principal with few decisions: its search reads every segment's index.
rare = f"ServiceAccount::sa-{identities // 2 + 7}"
pages = {
    "decisions, newest 50": "/console/decisions",
    "decisions of one principal": f"/console/decisions?principal={rare}",
    "decisions, denied, of one action": "/console/decisions?decision=DENY&action=read",
    "one decision (story, provenance, proof)": f"/console/decisions/{ids[len(ids) // 2]}",
    "identities, first 50": "/console/identities",
    "one identity (approvals, decisions, reach)": f"/console/identities/ServiceAccount/sa-{identities // 3}",
    "approval inbox": "/console/approvals",
    "policies": "/console/policies",
}
for name, path in pages.items():
    took = []
    for _ in range(requests):
        status, _, page, seconds = fetch("GET", path, cookie=cookie)
        assert status == 200, (name, status, page[:300])
        took.append(seconds * 1000)
    took.sort()
    p99 = took[min(len(took) - 1, int(len(took) * 0.99))]
    print(f"  {name}: p50 {statistics.median(took):.1f} ms, p99 {p99:.1f} ms, max {took[-1]:.1f} ms ({requests} requests)")
PY
echo "  rss_mib after the pages: $(awk '/VmRSS/ {printf "%d", $2 / 1024}' /proc/$pid/status)"
