"""MCP end to end: the example MCP server (the official `mcp` SDK, with `WarrantToolGuard`) run
over stdio and driven by the SDK's own client, against Warrant serving
`policies/examples/mcp-agent`. The tool list is filtered, each call is decided before the tool
runs, a denial reaches the client as a tool error with its reasons and decision id (which the
ledger holds), an approval travels in the call's `_meta`, and an unreachable Warrant hides every
tool and refuses every call."""

import asyncio
import os
import socket
import sys
from types import SimpleNamespace

from mcp import Client
from mcp.client.stdio import StdioServerParameters
from warrant_client import AsyncClient
from warrant_client.mcp import WarrantToolGuard

from conftest import ROOT, decision_record, running_server

SERVER = ROOT / "clients" / "python" / "examples" / "mcp_vendor_server.py"


def vendor_server(warrant_address):
    return StdioServerParameters(command=sys.executable, args=[str(SERVER)],
                                 env={**os.environ, "WARRANT_ADDR": warrant_address})


def searches(addresses):
    """Resource searches the server answered over gRPC, from its metrics."""
    import re
    import urllib.request

    with urllib.request.urlopen(addresses["metrics"], timeout=5) as page:
        text = page.read().decode()
    found = re.search(r'warrant_searches_total\{kind="resource",transport="grpc",outcome="ok"\} '
                      r'(\d+)', text)
    return int(found.group(1)) if found else 0


def text_of(result):
    return " ".join(part.text for part in result.content if getattr(part, "text", None))


def test_every_tool_call_is_decided_by_warrant_and_the_list_is_filtered():
    with running_server(policies=ROOT / "policies" / "examples" / "mcp-agent") as addresses:
        async def session():
            async with Client(vendor_server(addresses["check"])) as client:
                listed = await client.list_tools()
                assert sorted(tool.name for tool in listed.tools) == ["lookup_vendor",
                                                                      "pay_invoice"]
                # Filtered with one resource search, not a Check per tool.
                assert searches(addresses) == 1

                looked_up = await client.call_tool("lookup_vendor", {"name": "acme"})
                assert not looked_up.is_error, text_of(looked_up)
                assert "Acme" in text_of(looked_up)

                unapproved = await client.call_tool("pay_invoice",
                                                    {"vendor": "acme", "amount": 1200})
                assert unapproved.is_error
                assert "payment-needs-approval" in text_of(unapproved)
                denial = unapproved.structured_content["warrant"]
                assert denial["reasons"] == ["payment-needs-approval"]
                # The approval that would allow it, and how to ask.
                assert denial["approval_required"]["action"] == "pay_invoice"
                assert denial["approval_required"]["resource"] == "Tool::pay_invoice"
                assert "An approval would allow it" in text_of(unapproved)
                record = decision_record(addresses, denial["decision_id"])
                assert record["decision"] == "DENY"
                assert record["action"] == "pay_invoice"
                assert record["context"]["input"] == {"vendor": "acme", "amount": 1200}

                paid = await client.call_tool("pay_invoice", {"vendor": "acme", "amount": 1200},
                                              meta={"warrant/approval": "INV-42"})
                assert not paid.is_error, text_of(paid)
                assert "paid 1200" in text_of(paid)

                too_much = await client.call_tool("pay_invoice",
                                                  {"vendor": "acme", "amount": 9000},
                                                  meta={"warrant/approval": "INV-42"})
                assert too_much.is_error
                assert too_much.structured_content["warrant"]["reasons"] == [
                    "payment-over-approved-amount"]

                hidden = await client.call_tool("delete_vendor", {"name": "acme"})
                assert hidden.is_error
                assert "outside-agent-scopes" in text_of(hidden)
                # The tool did not run: the vendor is still there.
                again = await client.call_tool("lookup_vendor", {"name": "acme"})
                assert "Acme" in text_of(again)

        asyncio.run(session())


def test_an_unreachable_warrant_hides_every_tool_and_refuses_every_call():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{probe.getsockname()[1]}"

    async def session():
        async with Client(vendor_server(nowhere)) as client:
            listed = await client.list_tools()
            assert listed.tools == []
            called = await client.call_tool("lookup_vendor", {"name": "acme"})
            assert called.is_error
            assert called.structured_content["warrant"]["reasons"][0].startswith("warrant-client:")

    asyncio.run(session())


def test_a_tool_call_without_a_request_id_is_decided_too():
    # A `tools/call` that came as a notification (no request id) is still checked: denied, the
    # tool's body never runs; allowed, it does.
    with running_server(policies=ROOT / "policies" / "examples" / "mcp-agent") as addresses:
        async def session():
            guard = WarrantToolGuard(AsyncClient(addresses["check"], timeout=5.0),
                                     principal="Agent::vendor-agent")
            ran = []

            async def tool(ctx):
                ran.append(ctx.params["name"])
                return "ran"

            def call(name, arguments):
                return SimpleNamespace(method="tools/call", request_id=None,
                                       params={"name": name, "arguments": arguments})

            denied = await guard(call("pay_invoice", {"vendor": "acme", "amount": 1200}), tool)
            assert denied.is_error
            assert denied.structured_content["warrant"]["reasons"] == ["payment-needs-approval"]
            assert ran == []
            allowed = await guard(call("lookup_vendor", {"name": "acme"}), tool)
            assert allowed == "ran"
            assert ran == ["lookup_vendor"]

        asyncio.run(session())


def test_the_agent_example_asks_a_human_and_proceeds_under_the_approval():
    import subprocess

    import grpc
    from warrant_client._proto.warrant.v1 import admin_pb2, admin_pb2_grpc, authorizer_pb2

    example = ROOT / "clients" / "python" / "examples" / "mcp_agent_asks.py"
    with running_server(policies=ROOT / "policies" / "examples" / "mcp-agent") as addresses:
        agent = subprocess.Popen(
            [sys.executable, str(example)], stdout=subprocess.PIPE, text=True,
            env={**os.environ, "WARRANT_ADDR": addresses["check"], "WAIT_SECONDS": "20"})
        lines = []
        for line in agent.stdout:
            lines.append(line)
            if line.startswith("asked for approval: "):
                request_id = line.split()[3].rstrip(";")
                with grpc.insecure_channel(addresses["admin"]) as channel:
                    admin_pb2_grpc.AdminStub(channel).DecideApprovalRequest(
                        admin_pb2.DecideApprovalRequestRequest(
                            id=request_id, approver=authorizer_pb2.EntityRef(type="Human", id="dana"),
                            approve=True, max_uses=1),
                        metadata=[("authorization", f"Bearer {addresses['token']}")], timeout=5)
        assert agent.wait(timeout=60) == 0
        assert "paid 1200 to acme" in "".join(lines), "".join(lines)
