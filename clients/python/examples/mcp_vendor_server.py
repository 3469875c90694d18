"""An MCP server (the official `mcp` SDK, over stdio) whose every tool call Warrant decides first,
and whose tool list Warrant filters: the example of `policies/examples/mcp-agent`.

    WARRANT_ADDR=127.0.0.1:50051 python clients/python/examples/mcp_vendor_server.py

with Warrant serving `policies/examples/mcp-agent`. The server acts for one identity,
`Agent::vendor-agent` (`WARRANT_PRINCIPAL` to change it); an approval is presented in a call's
`_meta` as `"warrant/approval"`."""

import os

from mcp.server.mcpserver import MCPServer

from warrant_client import AsyncClient
from warrant_client.mcp import WarrantToolGuard

warrant = AsyncClient(os.environ.get("WARRANT_ADDR", "127.0.0.1:50051"), timeout=2.0)
guard = WarrantToolGuard(warrant, principal=os.environ.get("WARRANT_PRINCIPAL",
                                                           "Agent::vendor-agent"))
server = MCPServer("vendors", middleware=[guard])

VENDORS = {"acme": {"name": "Acme", "iban": "DE00 1234"}}
PAID: list[tuple[str, int]] = []


@server.tool()
def lookup_vendor(name: str) -> str:
    """Look a vendor up by name."""
    vendor = VENDORS.get(name.lower())
    return f"{vendor['name']}: {vendor['iban']}" if vendor else f"no vendor {name}"


@server.tool()
def pay_invoice(vendor: str, amount: int, memo: str = "") -> str:
    """Pay a vendor's invoice (needs an approval, up to its amount)."""
    PAID.append((vendor, amount))
    return f"paid {amount} to {vendor}"


@server.tool()
def delete_vendor(name: str) -> str:
    """Remove a vendor for good."""
    VENDORS.pop(name.lower(), None)
    return f"deleted {name}"


if __name__ == "__main__":
    server.run("stdio")
