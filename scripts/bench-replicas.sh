#!/usr/bin/env bash
# A fleet on one machine (BENCHMARKS.md, "A fleet of replicas"): a PostgreSQL server in a
# temporary folder (as the user nobody when run as root; Debian's postgresql, installed when
# missing), three release replicas on it, then:
#   - propagation: ROUNDS grants and revocations on replica A, each timed until replicas B and C
#     both answer it (warrant-bench propagation);
#   - changes per second the database takes through one replica (approvals granted back to
#     back) and through three at once;
#   - Checks per second on one replica, all cache misses, with and without a max_uses approval,
#     beside the same on a single node with the embedded store (the baseline, in the same run).
# Usage: scripts/bench-replicas.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1000}
if ! ls /usr/lib/postgresql/*/bin/pg_ctl > /dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql > /dev/null
fi
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
cargo build --release --quiet
W=$PWD/target/release/warrant
B=$PWD/target/release/warrant-bench
work=$(mktemp -d)
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi; }
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir "$work/pg"
[ "$(id -u)" = 0 ] && chown nobody "$work/pg"
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate stop > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
as_pg "$pg_bin/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 > /dev/null
as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $work/pg -c max_connections=200" start > /dev/null
as_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres warrant
url="postgres://postgres@127.0.0.1:$pg_port/warrant"

start() { # name [extra args] -> sets addr_NAME admin_NAME token_NAME
  local name=$1; shift
  "$W" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --authzen-listen 127.0.0.1:0 --console-listen 127.0.0.1:0 --data-dir "$work/$name" --policies policies "$@" \
    > "$work/$name.out" 2> "$work/$name.err" &
  local pid=$!
  until grep -q "listening on" "$work/$name.out" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$work/$name.err"; exit 1; }
    sleep 0.05
  done
  printf -v "addr_$name" '%s' "$(sed -n 's/warrant listening on //p' "$work/$name.out")"
  printf -v "admin_$name" '%s' "http://$(sed -n 's/warrant admin on \([^ ]*\).*/\1/p' "$work/$name.out")"
  printf -v "token_$name" '%s' "$(cat "$work/$name/admin.token")"
}
start a --store "$url" --replica-id a
start b --store "$url" --replica-id b
start c --store "$url" --replica-id c
start single

echo "== propagation: $rounds rounds, changes on A, Checks on B and C"
WARRANT_ADMIN_TOKEN=$token_a "$B" propagation --admin "$admin_a" \
  --replica "http://$addr_b" --replica "http://$addr_c" --rounds "$rounds"

puts() { # name seconds prefix: PutEntity back to back through replica NAME (beside a trickle of Checks)
  local addr_var="addr_$1" admin_var="admin_$1" token_var="token_$1"
  WARRANT_ADMIN_TOKEN=${!token_var} "$B" --server "http://${!addr_var}" --admin "${!admin_var}" \
    --concurrency 1 --connections 1 --rate 50 --duration "$2" --warmup 0 \
    --churn-per-second 100000 --churn-entity "Dataset::$3" --churn-parent Scope::sales-datasets --json |
    python3 -c "import json,sys; r=json.load(sys.stdin)['churn']; l=r['latency_us']; print(f\"$1: {r['changes']} changes, {r['changes_per_second']:.0f}/s, p50 {l['p50']} us, p99 {l['p99']} us, errors {sum(r['errors'].values())}\")"
}
echo "== changes through one replica for 10 s (PutEntity back to back)"
puts a 10 one
echo "== changes through three replicas at once for 10 s"
puts a 10 three-a > "$work/ga" &
ga=$!
puts b 10 three-b > "$work/gb" &
gb=$!
puts c 10 three-c > "$work/gc" &
gc=$!
wait $ga $gb $gc
cat "$work/ga" "$work/gb" "$work/gc"

uncached() { # addr
  "$B" --server "http://$1" --hit-ratio 0 --concurrency 32 --duration 10 --json |
    python3 -c "import json,sys; r=json.load(sys.stdin); l=r['latency_us']; print(f\"{r['requests_per_second']:.0f} Checks/s, p50 {l['p50']} us, p99 {l['p99']} us\")"
}
echo "== uncached Checks on replica B (its fleet changing nothing)"
uncached "$addr_b"
echo "== uncached Checks on a single node with the embedded store (baseline)"
uncached "$addr_single"

# A limited approval takes a use in the database on every allow: one conditional update each.
limited() { # addr admin token
  WARRANT_ADMIN_TOKEN=$3 "$W" approval grant --admin "$2" --id "LIMITED-$4" --ticket "LIMITED-$4" \
    --approver Human::alice --requester Human::bob --subject ServiceAccount::deploy-bot \
    --action update --scope Scope::production --for 2h --max-uses 100000000 > /dev/null
  "$B" --server "http://$1" --approval "LIMITED-$4" --hit-ratio 0 --concurrency 32 --duration 10 --json |
    python3 -c "import json,sys; r=json.load(sys.stdin); l=r['latency_us']; print(f\"{r['requests_per_second']:.0f} Checks/s, p50 {l['p50']} us, p99 {l['p99']} us\")"
}
echo "== uncached Checks under a max_uses approval on replica B (a use taken in PostgreSQL each)"
limited "$addr_b" "$admin_b" "$token_b" b
echo "== the same on the single node (a use taken in its counters.redb each)"
limited "$addr_single" "$admin_single" "$token_single" single
