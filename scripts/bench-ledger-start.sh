#!/usr/bin/env bash
# Start-up time and memory against the ledger's size: fills a ledger with about RECORDS records
# (async mode, load from `warrant bench`), stops the server gracefully, then starts each given
# binary on a copy of that data folder and reports the time until it listens and its RSS.
#   scripts/bench-ledger-start.sh RECORDS BINARY [BINARY...]
# The first binary fills the ledger. Release builds; ports 50071-50074.
set -eu
records=$1; shift
fill=$1
# Its load comes from the warrant-bench built beside it (or set LOAD).
load=${LOAD:-$(dirname "$fill")/warrant-bench}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ports=(--listen 127.0.0.1:50071 --admin-listen 127.0.0.1:50072 --metrics-listen 127.0.0.1:50073 --authzen-listen 127.0.0.1:50074 --console-listen 127.0.0.1:0)
cd "$(dirname "$0")/.."

"$fill" serve --policies policies --data-dir "$work/data" --ledger async "${ports[@]}" > "$work/fill.log" 2>&1 &
pid=$!
sleep 1.5
while :; do
  written=$(curl -s 127.0.0.1:50073/metrics | awk '/^warrant_ledger_records_total /{print $2}')
  [ "${written%.*}" -ge "$records" ] && break
  "$load" --server http://127.0.0.1:50071 --hit-ratio 1 --concurrency 64 --duration 5 > /dev/null 2>&1
done
kill -TERM $pid; wait $pid || true
echo "ledger: $written records, $(du -sh "$work/data/ledger" | cut -f1)"

start() { # binary [empty]
  local bin=$1
  rm -rf "$work/run"
  if [ "${2:-}" = empty ]; then mkdir "$work/run"; else cp -a "$work/data" "$work/run"; fi
  local begin; begin=$(date +%s.%N)
  "$bin" serve --policies policies --data-dir "$work/run" --ledger async "${ports[@]}" > "$work/run.log" 2>&1 &
  local pid=$!
  until grep -q "warrant listening on" "$work/run.log" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$work/run.log"; return 1; }
    sleep 0.01
  done
  local ready; ready=$(date +%s.%N)
  local rss peak
  rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  peak=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
  kill -TERM $pid; wait $pid || true
  printf '%s %s: ready in %.2f s, RSS %d MiB (peak %d MiB)\n' "$bin" "${2:-full}" "$(echo "$ready - $begin" | bc)" $((rss / 1024)) $((peak / 1024))
}
for bin in "$@"; do start "$bin" empty; start "$bin"; done
