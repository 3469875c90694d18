"""Shared by the cross-language tests: the binary under test and stubs compiled from Warrant's
own protos with grpcio-tools."""

import os
import pathlib
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


