"""Shared by the cross-language tests: the binary under test and stubs compiled from Warrant's
own protos with grpcio-tools."""

import contextlib
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = os.environ.get("WARRANT_BIN", str(ROOT / "target" / "debug" / "warrant"))


@pytest.fixture(scope="module")
def stubs():
    out = tempfile.mkdtemp(prefix="warrant-stubs-")
    include = str(pathlib.Path(protoc.__file__).parent / "_proto")
    status = protoc.main([
        "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"-I{include}",
        f"--python_out={out}", f"--grpc_python_out={out}", "warrant/v1/authorizer.proto",
        "warrant/v1/admin.proto",
    ])
    assert status == 0, "protoc failed"
    sys.path.insert(0, out)
    from warrant.v1 import authorizer_pb2, authorizer_pb2_grpc
    return authorizer_pb2, authorizer_pb2_grpc


@pytest.fixture(scope="module")
def admin_stubs(stubs):
    from warrant.v1 import admin_pb2, admin_pb2_grpc
    return admin_pb2, admin_pb2_grpc




@contextlib.contextmanager
def running_server(*extra_args, policies=ROOT / "policies"):
    """`warrant serve` on `policies` (the bundled ones unless given) with ephemeral ports, a data
    folder of its own and `extra_args`: yields the Check, admin and AuthZEN addresses and the
    admin token; killed afterwards."""
    data = tempfile.mkdtemp(prefix="warrant-data-")
    process = subprocess.Popen(
        [BINARY, "serve", "--listen", "127.0.0.1:0", "--policies", str(policies),
         "--data-dir", data, "--metrics-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
         "--authzen-listen", "127.0.0.1:0", *extra_args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        addresses = {}
        for line in process.stdout:
            for name in ("metrics", "admin", "authzen", "listening"):
                prefix = f"warrant {name} on "
                if line.startswith(prefix):
                    addresses[name] = line.removeprefix(prefix).split()[0]
            if "listening" in addresses:
                break
        assert "listening" in addresses, "server did not start"
        token = (pathlib.Path(data) / "admin.token").read_text().strip()
        yield {"check": addresses["listening"], "admin": addresses["admin"],
               "authzen": addresses["authzen"], "token": token}
    finally:
        process.kill()
        process.wait()
