"""Cross-language check: a Python grpcio client, with stubs compiled from Warrant's own protos,
calls Check on a real server and gets one allow and one deny, and grants and revokes an approval
through the admin API with the server's token."""

import json
import time
import urllib.request

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from conftest import ROOT, running_server


@pytest.fixture(scope="module")
def server():
    with running_server() as addresses:
        yield addresses


def test_allow_and_deny_over_grpcio(stubs, server):
    pb, pb_grpc = stubs
    with grpc.insecure_channel(server["check"]) as channel:
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
    with grpc.insecure_channel(server["check"]) as channel:
        client = pb_grpc.AuthorizerStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            client.Check(pb.CheckRequest(action="read"), timeout=5)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details().startswith("principal")


def test_grant_and_revoke_through_the_admin_api(stubs, admin_stubs, server):
    pb, pb_grpc = stubs
    admin_pb, admin_pb_grpc = admin_stubs
    deploy = pb.CheckRequest(
        principal=pb.EntityRef(type="ServiceAccount", id="deploy-bot"),
        action="update",
        resource=pb.EntityRef(type="Config", id="payments-api"),
        approval_id="PY-1",
    )
    expires = timestamp_pb2.Timestamp()
    expires.FromSeconds(int(time.time()) + 3600)
    grant = admin_pb.GrantApprovalRequest(approval=admin_pb.ApprovalSpec(
        id="PY-1", ticket="CHG-PY", approver=pb.EntityRef(type="Human", id="alice"),
        requester=pb.EntityRef(type="Human", id="bob"),
        subject=pb.EntityRef(type="ServiceAccount", id="deploy-bot"), actions=["update"],
        scope=pb.EntityRef(type="Scope", id="production"), expires_at=expires,
    ))
    with grpc.insecure_channel(server["admin"]) as admin_channel, \
            grpc.insecure_channel(server["check"]) as check_channel:
        admin = admin_pb_grpc.AdminStub(admin_channel)
        check = pb_grpc.AuthorizerStub(check_channel)
        with pytest.raises(grpc.RpcError) as raised:
            admin.GrantApproval(grant, timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        auth = [("authorization", f"Bearer {server['token']}")]
        granted = admin.GrantApproval(grant, metadata=auth, timeout=5)
        assert granted.state == admin_pb.APPROVAL_STATE_ACTIVE
        assert check.Check(deploy, timeout=5).decision == pb.DECISION_ALLOW
        admin.RevokeApproval(admin_pb.RevokeApprovalRequest(id="PY-1"), metadata=auth, timeout=5)
        assert check.Check(deploy, timeout=5).decision == pb.DECISION_DENY


@pytest.fixture(scope="module")
def gateway_server():
    with running_server(policies=ROOT / "policies" / "examples" / "authzen-gateway") as addresses:
        yield addresses["authzen"]


def test_authzen_interop_cases_as_the_working_group_harness_sends_them(gateway_server):
    """POST each case of the API-gateway scenario to /access/v1/evaluation with Python's own
    HTTP client and compare `decision` with `expected`, as the AuthZEN interop harness does."""
    cases = json.loads((ROOT / "tests" / "fixtures" / "authzen" / "decisions.json").read_text())
    failures = []
    for i, case in enumerate(cases["evaluation"]):
        request = urllib.request.Request(
            f"{gateway_server}/access/v1/evaluation",
            data=json.dumps(case["request"]).encode(),
            headers={"Content-Type": "application/json", "X-Request-ID": f"case-{i}"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
            assert response.headers["X-Request-ID"] == f"case-{i}"
            decision = json.load(response)["decision"]
        if decision != case["expected"]:
            failures.append((i, case, decision))
    assert len(cases["evaluation"]) == 25
    assert failures == []
