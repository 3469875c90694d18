"""Cross-language check: a Python grpcio client, with stubs compiled from Warrant's own proto,
calls Check on a real server and gets one allow and one deny."""

import os
import pathlib
import subprocess
import sys
import tempfile

import grpc
import pytest
from google.protobuf import struct_pb2
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
    ])
    assert status == 0, "protoc failed"
    sys.path.insert(0, out)
    from warrant.v1 import authorizer_pb2, authorizer_pb2_grpc
    return authorizer_pb2, authorizer_pb2_grpc


@pytest.fixture(scope="module")
def server():
    data = tempfile.mkdtemp(prefix="warrant-data-")
    process = subprocess.Popen(
        [BINARY, "serve", "--listen", "127.0.0.1:0", "--policies", str(ROOT / "policies"),
         "--data-dir", data, "--metrics-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = process.stdout.readline()
        while line.startswith("warrant metrics on "):
            line = process.stdout.readline()
        assert line.startswith("warrant listening on "), f"server did not start: {line!r}"
        yield line.removeprefix("warrant listening on ").strip()
    finally:
        process.kill()
        process.wait()


def test_allow_and_deny_over_grpcio(stubs, server):
    pb, pb_grpc = stubs
    with grpc.insecure_channel(server) as channel:
        client = pb_grpc.AuthorizerStub(channel)
        context = struct_pb2.Struct()
        context.update({"vendor": "Acme", "amount": 1200})
        allowed = client.Check(pb.CheckRequest(
            principal=pb.EntityRef(type="Agent", id="procurement-agent"),
            action="submit_vendor_request",
            resource=pb.EntityRef(type="Tool", id="vendor-portal"),
            context=context,
            approval_id="TASK-77",
            request_id="py-1",
        ), timeout=5)
        assert allowed.decision == pb.DECISION_ALLOW
        assert allowed.request_id == "py-1"
        assert allowed.provenance.owner.name == "Carol Ng"
        assert allowed.provenance.approval.ticket == "TASK-77"

        denied = client.Check(pb.CheckRequest(
            principal=pb.EntityRef(type="ApiKey", id="pipeline-etl"),
            action="read",
            resource=pb.EntityRef(type="Dataset", id="salaries"),
        ), timeout=5)
        assert denied.decision == pb.DECISION_DENY
        assert list(denied.reasons) == ["dataset-outside-identity-scopes"]


def test_bad_input_is_invalid_argument(stubs, server):
    pb, pb_grpc = stubs
    with grpc.insecure_channel(server) as channel:
        client = pb_grpc.AuthorizerStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            client.Check(pb.CheckRequest(action="read"), timeout=5)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details().startswith("principal")
