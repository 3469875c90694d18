#!/usr/bin/env bash
# What recording a decision costs, measured honestly on a 2-core machine: the server pinned to
# core 0 and the load generator (h2load) to core 1, against a bare tonic echo pinned the same way
# (examples/echo.rs: the same messages, one worker thread, no work). For the echo and for Warrant
# with the ledger off, async and durable, a cached Check: throughput with 2 connections of 64
# streams, and the latency of one request in flight; ROUNDS rounds (2). Then an fdatasync probe
# on the data folder's disk, on the server's core (1 KiB appends, and over zeros laid ahead).
# PROFILE=1 also records where a cached durable Check's CPU goes (perf, call graphs) into
# target/bench-pinned/; PROFILE=one, where one durable Check in flight spends its time (the
# core's busy time and context switches per Check, and the samples by thread and symbol).
#
#   scripts/bench-pinned.sh            # prints a Markdown table
#   WARRANT=/tmp/old/warrant CONFIGS="echo durable" scripts/bench-pinned.sh   # another build, fewer rows
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
CONFIGS=${CONFIGS:-echo off async durable}
WARRANT=${WARRANT:-target/release/warrant}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
OUT=target/bench-pinned
mkdir -p "$OUT"

if ! command -v h2load > /dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client > /dev/null
  else
    echo "h2load is missing: apt-get install nghttp2-client" >&2
    exit 1
  fi
fi
cargo build --release --locked --bin warrant --example echo > /dev/null 2>&1 \
  || cargo build --release --locked --bin warrant --example echo

# The Check h2load sends: a gRPC frame (no compression, 4-byte length) around a CheckRequest for
# ApiKey::pipeline-etl reading Dataset::sales-2026 (an allow, cached after the first).
python3 - "$OUT/check.bin" <<'PY'
import struct, sys
def field(number, payload):
    return bytes([number << 3 | 2, len(payload)]) + payload
def entity(type_name, entity_id):
    return field(1, type_name.encode()) + field(2, entity_id.encode())
message = (field(1, entity("ApiKey", "pipeline-etl")) + field(2, b"read")
           + field(3, entity("Dataset", "sales-2026")))
open(sys.argv[1], "wb").write(b"\x00" + struct.pack(">I", len(message)) + message)
PY

PORT=50091
start() { # name, then the command
  local name=$1; shift
  taskset -c 0 "$@" > "$OUT/$name.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2> /dev/null; then return; fi
    sleep 0.1
  done
  echo "$name did not start; see $OUT/$name.log" >&2
  exit 1
}
SERVER=
stop() { kill "$SERVER" 2> /dev/null; wait "$SERVER" 2> /dev/null || true; SERVER=; }
trap '[ -z "$SERVER" ] || stop' EXIT
warrant() { # ledger mode
  DATA=$(mktemp -d)
  start "warrant-$1" "$WARRANT" serve --policies policies --data-dir "$DATA" \
    --ledger "$1" --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 --authzen-listen 127.0.0.1:0 --console-listen 127.0.0.1:0
}
load() { # clients streams -> "req/s mean_us"
  local out
  out=$(taskset -c 1 h2load -c "$1" -m "$2" -D "$SECONDS_PER_RUN" --warm-up-time=1 -d "$OUT/check.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$PORT/warrant.v1.Authorizer/Check" 2>&1)
  local rps mean failed
  rps=$(echo "$out" | awk '/^finished in/ {gsub(",", "", $4); print $4}')
  mean=$(echo "$out" | awk '/^time for request:/ {print $6}')
  failed=$(echo "$out" | awk '/^requests:/ {print $10}')
  if [ "${failed:-1}" != "0" ]; then echo "h2load saw failures: $out" >&2; exit 1; fi
  echo "$rps|$mean"
}
to_us() { # "123.45us" or "1.23ms" -> microseconds
  python3 -c "import sys; v=sys.argv[1]; print(round(float(v[:-2])*1000) if v.endswith('ms') else round(float(v[:-2])))" "$1"
}

# fdatasync on the data folder's disk, on the server's core (the disk's interrupts may be taken
# by the other one, and the server pays that crossing too): 1 KiB appended and synced, and
# written over zeros laid ahead (as the durable writer does).
probe() { # -> "append_us laid_us"
  local folder
  folder=$(mktemp -d)
  taskset -c 0 python3 - "$folder" <<'PY'
import os, statistics, sys, time
def probe(path, laid_ahead):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if laid_ahead:
        os.write(fd, bytes(2001 * 1024))
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
    block, times = b"x" * 1023 + b"\n", []
    for _ in range(2000):
        start = time.perf_counter()
        os.write(fd, block)
        os.fdatasync(fd)
        times.append((time.perf_counter() - start) * 1e6)
    os.close(fd)
    return statistics.median(times)
folder = sys.argv[1]
print(f"{probe(os.path.join(folder, 'append'), False):.0f} {probe(os.path.join(folder, 'laid'), True):.0f}")
PY
  rm -rf "$folder"
}

declare -A THROUGHPUT ONE
PROBES=""
for round in $(seq "$ROUNDS"); do
  for config in $CONFIGS; do
    if [ "$config" = echo ]; then
      start echo target/release/examples/echo 127.0.0.1:$PORT
    else
      warrant "$config"
    fi
    many=$(load 2 64)
    single=$(load 1 1)
    stop
    [ "$config" = echo ] || rm -rf "$DATA"
    THROUGHPUT[$config]+="${many%%|*} "
    ONE[$config]+="$(to_us "${single#*|}") "
    echo "round $round $config: ${many%%|*} req/s, one in flight ${single#*|}" >&2
  done
  probed=$(probe)
  PROBES+="${probed/ /,} "
  echo "round $round fdatasync p50 (append, over zeros): $probed µs" >&2
done

# Each round's configurations ran one after the other, so each is compared with that round's
# echo (and fdatasync probe): the machine's noise moves whole rounds.
python3 - "$CONFIGS" "$PROBES" <<PY
import statistics, sys
configs, probes = sys.argv[1].split(), [tuple(map(float, p.split(","))) for p in sys.argv[2].split()]
throughput = {$(for c in $CONFIGS; do printf '"%s": [%s], ' "$c" "$(echo ${THROUGHPUT[$c]} | tr ' ' ',')"; done)}
one = {$(for c in $CONFIGS; do printf '"%s": [%s], ' "$c" "$(echo ${ONE[$c]} | tr ' ' ',')"; done)}
def spread(values, form):
    values = sorted(values)
    if values[0] == values[-1]:
        return form(values[0])
    return f"{form(values[0])} - {form(values[-1])} ({form(statistics.median(values))})"
count = lambda v: f"{v:,.0f}"
ratio = lambda v: f"{v:.2f}"
plus = lambda v: f"{v:+.0f}"
print("| configuration | cached Check req/s | vs echo | one in flight µs | vs echo |")
print("|---|---:|---:|---:|---:|")
for config in configs:
    pair = lambda f, table: [f(a, e) for a, e in zip(table[config], table["echo"])]
    row = [config, spread(throughput[config], count), "1", spread(one[config], count), ""]
    if config != "echo":
        row[2] = spread(pair(lambda a, e: a / e, throughput), ratio)
        row[4] = spread(pair(lambda a, e: a - e, one), plus)
    print("| " + " | ".join(row) + " |")
print()
print("Ranges over the rounds, medians in brackets; each ratio and difference is against the same")
print("round's echo.")
print()
print(f"fdatasync of a 1 KiB append on core 0, p50: {spread([p[0] for p in probes], count)} µs"
      f" (over zeros laid ahead: {spread([p[1] for p in probes], count)} µs)")
if "durable" in configs:
    limit = [e + 1.2 * p[0] for e, p in zip(one["echo"], probes)]
    print("one durable Check in flight against the echo plus 1.2 fdatasyncs, per round: "
          + ", ".join(f"{d:.0f} vs {l:.0f} µs" for d, l in zip(one["durable"], limit)))
PY
if [ "${PROFILE:-0}" = 1 ]; then
  warrant durable
  taskset -c 1 h2load -c 2 -m 64 -D 12 -d "$OUT/check.bin" -H 'content-type: application/grpc' \
    -H 'te: trailers' "http://127.0.0.1:$PORT/warrant.v1.Authorizer/Check" > /dev/null 2>&1 &
  LOAD=$!
  sleep 2
  perf record -F 1999 -g --call-graph dwarf,16384 -p "$SERVER" -o "$OUT/perf.data" -- sleep 5 > /dev/null 2>&1
  wait "$LOAD" || true
  stop
  rm -rf "$DATA"
  perf report -i "$OUT/perf.data" --no-children --sort comm,dso,symbol --stdio 2> /dev/null \
    | grep -v '^$' | head -80 > "$OUT/profile.txt"
  echo "profile: $OUT/profile.txt"
fi

if [ "${PROFILE:-0}" = one ]; then
  warrant durable
  taskset -c 1 h2load -c 1 -m 1 -D 10 -d "$OUT/check.bin" -H 'content-type: application/grpc' \
    -H 'te: trailers' "http://127.0.0.1:$PORT/warrant.v1.Authorizer/Check" > "$OUT/one.h2load" 2>&1 &
  LOAD=$!
  sleep 2
  perf stat -e task-clock,context-switches -p "$SERVER" -o "$OUT/one.stat" -- sleep 3 > /dev/null 2>&1
  perf record -F 9999 -p "$SERVER" -o "$OUT/one.data" -- sleep 3 > /dev/null 2>&1
  wait "$LOAD" || true
  stop
  rm -rf "$DATA"
  rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$OUT/one.h2load")
  busy=$(awk '/task-clock/ {gsub(",", "", $1); print $1}' "$OUT/one.stat")
  switches=$(awk '/context-switches/ {gsub(",", "", $1); print $1}' "$OUT/one.stat")
  {
    python3 -c "import sys; r, b, c = map(float, sys.argv[1:]); print(f'{r:,.0f} Checks/s; the core busy {b / 3 / r * 1000:.0f} us and {c / 3 / r:.1f} context switches per Check')" \
      "$rps" "$busy" "$switches"
    perf report -i "$OUT/one.data" --no-children --sort comm,symbol --stdio 2> /dev/null \
      | grep -E '^ +[0-9]' | sed -E 's/ +- +- *$//; s/ +$//' | head -40
  } > "$OUT/profile-one.txt"
  echo "one in flight: $OUT/profile-one.txt"
fi
