"""The Python client package (`clients/python`, installed into the test venv as a wheel) against
the real server: typed decisions, `guard` and `requires` (sync and asyncio), BatchCheck, the
caller's trace joining the decision's, and every way of failing closed: an unreachable server, one
that never answers, a refused request, and a server that answers nonsense (a grpcio server of the
test's own)."""

import asyncio
import concurrent.futures
import datetime
import socket
import time

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

import warrant_client
from warrant_client import AsyncClient, Client, Denied
from warrant_client._proto.warrant.v1 import authorizer_pb2 as pb
from warrant_client._proto.warrant.v1 import authorizer_pb2_grpc as pb_grpc

from conftest import decision_record, running_server

AGENT = "Agent::procurement-agent"


@pytest.fixture(scope="module")
def server():
    with running_server() as addresses:
        yield addresses


def test_decisions_are_typed_and_deny_unless_warrant_allows(server):
    with Client(server["check"], timeout=5) as client:
        allowed = client.check("ApiKey::pipeline-etl", "read", "Dataset::sales-2026",
                               request_id="py-client-1")
        assert allowed and allowed.allowed
        assert allowed.reasons == ("pipeline-etl-reads-sales",)
        assert allowed.request_id == "py-client-1"
        assert allowed.valid_until > datetime.datetime.now(datetime.timezone.utc)
        assert allowed.provenance.owner.name
        assert decision_record(server, allowed.decision_id)["decision"] == "ALLOW"

        denied = client.check(("ApiKey", "pipeline-etl"), "read", ("Dataset", "salaries"))
        assert not denied
        assert denied.reasons == ("dataset-outside-identity-scopes",)
        with pytest.raises(Denied) as raised:
            client.guard("ApiKey::pipeline-etl", "read", "Dataset::salaries")
        assert raised.value.decision.decision_id
        assert "dataset-outside-identity-scopes" in str(raised.value)


def test_a_guarded_tool_runs_only_when_allowed(server):
    client = Client(server["check"], timeout=5, principal=AGENT)
    calls = []

    @client.requires("submit_vendor_request", resource="Tool::vendor-portal",
                     approval=lambda ticket: ticket, context=["vendor", "amount"])
    def submit(vendor: str, amount: int, ticket: str = "") -> str:
        calls.append((vendor, amount))
        return f"submitted {vendor}"

    assert submit("Acme", 1200, ticket="TASK-77") == "submitted Acme"
    with pytest.raises(Denied) as raised:
        submit("Acme", 1200)  # no approval
    assert raised.value.decision.reasons == ("vendor-request-needs-task-approval",)
    with pytest.raises(Denied) as raised:
        submit("Acme", 10_000_000, ticket="TASK-77")  # over the approved amount
    assert raised.value.decision.reasons == ("vendor-request-over-approved-amount",)
    assert calls == [("Acme", 1200)]
    # The decorated function keeps its signature (tool frameworks read it).
    assert list(__import__("inspect").signature(submit).parameters) == ["vendor", "amount", "ticket"]
    client.close()


def test_batch_check_decides_each_item_and_denies_a_refused_one(server):
    with Client(server["check"], timeout=5) as client:
        decisions = client.batch_check([
            {"principal": "ApiKey::pipeline-etl", "action": "read", "resource": "Dataset::sales-2026"},
            {"principal": "ApiKey::pipeline-etl", "action": "no-such-action",
             "resource": "Dataset::sales-2026"},
        ])
    assert [d.allowed for d in decisions] == [True, False]
    assert decisions[1].reasons == (warrant_client.REFUSED,)
    assert decisions[1].decision_id, "the refusal is a recorded decision"


def test_a_refused_request_is_a_deny_with_its_recorded_id(server):
    with Client(server["check"], timeout=5) as client:
        refused = client.check("ApiKey::pipeline-etl", "read", "Dataset::sales-2026",
                               context={"now": "2020-01-01"})
    assert not refused
    assert refused.reasons == (warrant_client.REFUSED,)
    assert "INVALID_ARGUMENT" in refused.failure
    assert decision_record(server, refused.decision_id)["decision"] == "DENY"


def test_an_unreachable_server_is_a_deny_after_retrying_within_the_deadline():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Client(f"127.0.0.1:{port}", timeout=0.5) as client:
        started = time.monotonic()
        decision = client.check("ApiKey::pipeline-etl", "read", "Dataset::sales-2026")
        assert time.monotonic() - started < 5
    assert not decision
    assert decision.reasons in ((warrant_client.UNAVAILABLE,), (warrant_client.TIMEOUT,))
    assert decision.decision_id == ""


def test_a_server_that_never_answers_is_a_timeout_and_the_tool_does_not_run():
    # Accepts connections and reads nothing: the call can only time out.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    client = Client(f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.3, principal=AGENT)
    ran = []

    @client.requires("submit_vendor_request", resource="Tool::vendor-portal")
    def submit():
        ran.append(True)

    with pytest.raises(Denied) as raised:
        submit()
    assert raised.value.decision.reasons in ((warrant_client.TIMEOUT,), (warrant_client.UNAVAILABLE,))
    assert ran == []
    client.close()
    silent.close()


class Nonsense(pb_grpc.AuthorizerServicer):
    """A server that answers Check with what a PDP must never be trusted for."""

    def __init__(self):
        self.answers = []

    def Check(self, request, context):
        return self.answers.pop(0)


def test_an_answer_the_client_cannot_read_is_a_deny():
    nonsense = Nonsense()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_AuthorizerServicer_to_server(nonsense, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        nonsense.answers = [
            pb.CheckResponse(decision=pb.DECISION_UNSPECIFIED, decision_id="x"),
            pb.CheckResponse(decision=pb.DECISION_ALLOW),  # an allow nobody recorded
            pb.CheckResponse(decision=pb.DECISION_ALLOW, decision_id="0190-recorded"),
        ]
        with Client(f"127.0.0.1:{port}", timeout=5) as client:
            ask = lambda: client.check("ApiKey::a", "read", "Dataset::b")
            first, second, third = ask(), ask(), ask()
        assert first.reasons == (warrant_client.MALFORMED_ANSWER,) and not first
        assert second.reasons == (warrant_client.MALFORMED_ANSWER,) and not second
        assert third.allowed, "a well-formed allow is an allow"
    finally:
        server.stop(None)


def test_the_async_client_guards_coroutines(server):
    async def scenario():
        async with AsyncClient(server["check"], timeout=5, principal=AGENT) as client:
            @client.requires("submit_vendor_request", resource="Tool::vendor-portal",
                             approval="TASK-77", context=lambda amount: {"vendor": "Acme",
                                                                           "amount": amount})
            async def submit(amount: int) -> int:
                return amount

            assert await submit(100) == 100
            with pytest.raises(Denied):
                await submit(10_000_000)
            decisions = await client.batch_check([
                {"action": "submit_vendor_request", "resource": "Tool::vendor-portal",
                 "approval": "TASK-77", "context": {"vendor": "Acme", "amount": 5}},
                {"principal": "ApiKey::pipeline-etl", "action": "read",
                 "resource": "Dataset::salaries"},
            ])
            assert [d.allowed for d in decisions] == [True, False]
        with pytest.raises(TypeError):
            client.requires("read", resource="Dataset::x")(lambda: None)

    asyncio.run(scenario())


def test_the_decision_joins_the_callers_trace(server):
    provider = TracerProvider()
    tracer = provider.get_tracer("warrant-client-test")
    with Client(server["check"], timeout=5) as client:
        with tracer.start_as_current_span("agent-step") as span:
            decision = client.check("ApiKey::pipeline-etl", "read", "Dataset::sales-2026")
            trace_id = format(span.get_span_context().trace_id, "032x")
    assert decision_record(server, decision.decision_id)["trace_id"] == trace_id


def test_the_readmes_example_runs(server):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    example = ROOT / "clients" / "python" / "examples" / "guarded_tool.py"
    ran = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                         env={**os.environ, "WARRANT_ADDR": server["check"]}, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.splitlines()[0].startswith("ALLOW")


def test_a_denied_agent_asks_for_the_approval_and_proceeds_once_a_human_grants_it(server):
    import threading

    from warrant_client._proto.warrant.v1 import admin_pb2, admin_pb2_grpc

    with Client(server["check"], timeout=5) as client:
        denied = client.check("ServiceAccount::deploy-bot", "update", "Config::payments-api")
        assert not denied and denied.approval_required is not None
        assert denied.approval_required.scope == "Scope::prod-payments-config"
        filed = client.request_approval(denied, justification="roll out the fix",
                                        duration_seconds=600, ticket="CHG-77")
        assert filed.state == "pending"

        def approve():
            time.sleep(0.5)
            with grpc.insecure_channel(server["admin"]) as channel:
                admin_pb2_grpc.AdminStub(channel).DecideApprovalRequest(
                    admin_pb2.DecideApprovalRequestRequest(
                        id=filed.id, approver=pb.EntityRef(type="Human", id="carol"),
                        approve=True, max_uses=1),
                    metadata=[("authorization", f"Bearer {server['token']}")], timeout=5)

        threading.Thread(target=approve).start()
        decided = client.wait_for_approval(filed, timeout=20)
        assert decided.approved and decided.decided_by == "Human::carol"
        allowed = client.check("ServiceAccount::deploy-bot", "update", "Config::payments-api",
                               approval=decided.approval_id)
        assert allowed, allowed.describe()

        async def asynchronously():
            async with AsyncClient(server["check"], timeout=5) as aclient:
                again = await aclient.check("ServiceAccount::deploy-bot", "update",
                                            "Config::payments-api")
                asked = await aclient.request_approval(again, justification="once more",
                                                       duration_seconds=60)
                waited = await aclient.wait_for_approval(asked, timeout=1)
                assert waited.state == "pending"

        asyncio.run(asynchronously())


def test_searches_answer_who_can_do_what_across_pages_and_fail_loudly(server):
    from warrant_client import SearchFailed, SearchResult

    with Client(server["check"], timeout=5, principal="ApiKey::pipeline-etl") as client:
        assert client.search_resources("Dataset", "read") == [SearchResult("sales-2026")]
        who = client.search_subjects("ServiceAccount", "update", "Config::payments-api",
                                     approval="CHG-1042")
        assert [result.id for result in who] == ["deploy-bot"]
        what = client.search_actions("Config::payments-api", principal="ServiceAccount::deploy-bot",
                                     include_approvable=True)
        assert what == [SearchResult("update", approvable=True)]
        # Each result is what Check allows.
        assert client.check(action="read", resource="Dataset::sales-2026").allowed
        with pytest.raises(SearchFailed) as refused:
            client.search_resources("Spaceship", "read")
        assert refused.value.code == "INVALID_ARGUMENT"
        assert refused.value.message.startswith("request.resource.type: ")
        with pytest.raises(ValueError, match="of_type"):
            client.search_resources("", "read")

    async def asynchronous():
        async with AsyncClient(server["check"], timeout=5) as client:
            found = await client.search_resources("Dataset", "read",
                                                  principal="ApiKey::pipeline-etl", limit=1)
            assert found == [SearchResult("sales-2026")]
            assert await client.search_actions("Config::payments-api",
                                               principal="ServiceAccount::deploy-bot") == []

    asyncio.run(asynchronous())
    # An unreachable server is a failure, never an empty answer.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
    with Client(address, timeout=0.3, principal="ApiKey::pipeline-etl") as client:
        with pytest.raises(SearchFailed):
            client.search_resources("Dataset", "read")
