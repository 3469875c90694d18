"""An agent that meets a denial an approval would lift, asks a human for exactly that approval,
waits for the answer, and calls again under it: over MCP (the `mcp` SDK's client, over stdio) to
the guarded vendor server, and to Warrant for the approval request.

    WARRANT_ADDR=127.0.0.1:50051 python clients/python/examples/mcp_agent_asks.py

A human approves on the admin side meanwhile:

    warrant approval requests --state pending
    warrant approval approve req-... --approver Human::dana --for 30m
"""

import asyncio
import os
import pathlib
import sys
from types import SimpleNamespace

from mcp import Client
from mcp.client.stdio import StdioServerParameters

from warrant_client import AsyncClient, ApprovalRequired

ADDRESS = os.environ.get("WARRANT_ADDR", "127.0.0.1:50051")
SERVER = pathlib.Path(__file__).with_name("mcp_vendor_server.py")


async def main() -> None:
    vendors = StdioServerParameters(command=sys.executable, args=[str(SERVER)],
                                    env={**os.environ, "WARRANT_ADDR": ADDRESS})
    payment = {"vendor": "acme", "amount": 1200}
    async with Client(vendors) as agent, AsyncClient(ADDRESS, timeout=2.0) as warrant:
        result = await agent.call_tool("pay_invoice", payment)
        denial = (result.structured_content or {}).get("warrant", {})
        needed = denial.get("approval_required")
        if result.is_error and needed:
            advice = ApprovalRequired(needed["identity"], needed["action"], needed["resource"],
                                      needed["scope"], needed["max_validity_seconds"])
            request = await warrant.request_approval(
                SimpleNamespace(approval_required=advice, decision_id=denial["decision_id"]),
                justification="pay Acme's invoice 4711", duration_seconds=1800,
                ticket="INV-4711")
            print(f"asked for approval: {request.id}; waiting for a human", flush=True)
            answered = await warrant.wait_for_approval(
                request, timeout=float(os.environ.get("WAIT_SECONDS", "600")))
            if answered.approved:
                result = await agent.call_tool("pay_invoice", payment,
                                               meta={"warrant/approval": answered.approval_id})
            else:
                print(f"the request is {answered.state} {answered.reason}")
        print(" ".join(getattr(part, "text", "") for part in result.content), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
