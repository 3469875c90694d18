#!/usr/bin/env python3
"""The Python client's own cost per Check, against bare grpcio on the same server in the same
run: Ping (the empty RPC), Check through a bare grpcio stub, Check through `warrant_client.Client`
and through `AsyncClient`, one call in flight, the same cached question each time.

    cargo build --release
    .venv/bin/pip install ./clients/python
    .venv/bin/python scripts/bench-python-client.py [CALLS]

Prints a Markdown table (µs per call: mean, p50, p99)."""

import asyncio
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import grpc

from warrant_client import AsyncClient, Client
from warrant_client._proto.warrant.v1 import authorizer_pb2 as pb
from warrant_client._proto.warrant.v1 import authorizer_pb2_grpc as pb_grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
QUESTION = ("ApiKey::pipeline-etl", "read", "Dataset::sales-2026")


def start():
    data = tempfile.mkdtemp(prefix="warrant-bench-")
    process = subprocess.Popen(
        [str(ROOT / "target" / "release" / "warrant"), "serve", "--listen", "127.0.0.1:0",
         "--policies", str(ROOT / "policies"), "--data-dir", data, "--ledger", "off",
         "--metrics-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
         "--authzen-listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        if line.startswith("warrant listening on "):
            return process, line.split()[3]
    raise SystemExit("the server did not start")


def timed(call, calls):
    for _ in range(min(1000, calls)):
        call()
    took = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        call()
        took.append(time.perf_counter_ns() - started)
    return took


async def timed_async(call, calls):
    for _ in range(min(1000, calls)):
        await call()
    took = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        await call()
        took.append(time.perf_counter_ns() - started)
    return took


def row(name, took):
    took = sorted(took)
    p = lambda q: took[min(len(took) - 1, int(q * len(took)))] / 1000
    return f"| {name} | {statistics.fmean(took) / 1000:.0f} | {p(0.5):.0f} | {p(0.99):.0f} |"


def main():
    process, address = start()
    try:
        rows = []
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.AuthorizerStub(channel)
            rows.append(row("grpcio stub, Ping", timed(
                lambda: stub.Ping(pb.PingRequest(), timeout=5), CALLS)))
            request = pb.CheckRequest(principal=pb.EntityRef(type="ApiKey", id="pipeline-etl"),
                                      action="read",
                                      resource=pb.EntityRef(type="Dataset", id="sales-2026"))
            rows.append(row("grpcio stub, Check", timed(
                lambda: stub.Check(request, timeout=5), CALLS)))
        with Client(address, timeout=5) as client:
            assert client.check(*QUESTION).allowed
            rows.append(row("`Client.check`", timed(lambda: client.check(*QUESTION), CALLS)))

        async def asynchronous():
            async with grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.AuthorizerStub(channel)
                rows.append(row("grpc.aio stub, Check", await timed_async(
                    lambda: stub.Check(request, timeout=5), CALLS)))
            async with AsyncClient(address, timeout=5) as client:
                rows.append(row("`AsyncClient.check`", await timed_async(
                    lambda: client.check(*QUESTION), CALLS)))

        asyncio.run(asynchronous())
        print("| call (one in flight, cached allow) | mean µs | p50 µs | p99 µs |")
        print("|---|---:|---:|---:|")
        print("\n".join(rows))
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()
