"""Warrant in front of every MCP tool call, in process: `WarrantToolGuard` is a middleware for
the official MCP Python SDK's servers (`mcp` 2.x: `MCPServer(..., middleware=[guard])` or the
low-level `Server.middleware`).

- `tools/call`: before the tool runs, Warrant decides whether the principal may call it, with
  the call's arguments in the context (`{"input": arguments}`, as a schema from
  `warrant schema from-mcp` declares them) and the approval the caller presents in the request's
  `_meta` (`"warrant/approval"`). A denial reaches the model as a tool error it can read (the
  reasons and the decision id, and when an approval would lift it, that approval and how to
  ask), never as a crash, and the tool does not run.
- `tools/list`: the listing is filtered to the tools the principal may see: one resource search
  (`SearchResources`: the tools the principal may `list_action`, exactly those a Check would
  allow) when each tool is the resource `Type::{tool}`; otherwise one BatchCheck of
  `list_action` on each tool. A call is decided on its arguments and approval, which a listing
  does not have, so seeing a tool is its own question for the policies.

Everything fails closed: a Warrant that cannot be reached denies the call and hides every tool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import mcp_types

from warrant_client._decision import SearchFailed
from warrant_client._wire import Entity
from warrant_client.client import AsyncClient

APPROVAL_META_KEY = "warrant/approval"


def _template(template: str | Callable[[str], Entity | str], tool: str) -> Any:
    return template(tool) if callable(template) else template.replace("{tool}", tool)


def _searchable_type(template: str | Callable[[str], Entity | str]) -> str | None:
    """The entity type of a `Type::{tool}` resource template (each tool's resource is that type
    with the tool's name as id), which one resource search can list; `None` for any other."""
    suffix = "::{tool}"
    if isinstance(template, str) and template.endswith(suffix) and template.count("{tool}") == 1:
        return template[: -len(suffix)] or None
    return None


class WarrantToolGuard:
    """Checks each `tools/call` with Warrant and filters `tools/list`.

    - `principal`: the identity the server acts for ("Agent::triage"), or a function of the
      request context (the SDK's `ServerRequestContext`) that names it, e.g. from the
      authenticated caller.
    - `action`: the action of a tool call, with `{tool}` for the tool's name (default: the tool's
      name itself, one action per tool), or a function of the name.
    - `resource`: the resource a call acts on (default `Tool::{tool}`), or a function of the name.
    - `list_action`: the action that decides whether a tool is listed (default `list_tool`);
      `None` lists every tool.
    """

    def __init__(self, client: AsyncClient, *, principal: Entity | Callable[[Any], Entity],
                 action: str | Callable[[str], str] = "{tool}",
                 resource: str | Callable[[str], Entity] = "Tool::{tool}",
                 list_action: str | None = "list_tool"):
        self.client = client
        self.principal = principal
        self.action = action
        self.resource = resource
        self.list_action = list_action

    def _principal_of(self, ctx: Any) -> Entity:
        return self.principal(ctx) if callable(self.principal) else self.principal

    async def __call__(self, ctx: Any, call_next: Callable) -> Any:
        # Every call and every listing, with a request id or without one: a `tools/call` sent as
        # a notification is still a tool call, and is decided like any other.
        if ctx.method == "tools/call":
            return await self._call(ctx, call_next)
        if ctx.method == "tools/list" and self.list_action:
            return await self._list(ctx, call_next)
        return await call_next(ctx)

    async def _call(self, ctx: Any, call_next: Callable) -> Any:
        params: Mapping[str, Any] = ctx.params or {}
        name = params.get("name")
        arguments = params.get("arguments") or {}
        meta = params.get("_meta") or {}
        if not isinstance(name, str) or not isinstance(arguments, Mapping):
            return _refusal("the call names no tool, or its arguments are not an object")
        approval = meta.get(APPROVAL_META_KEY) if isinstance(meta, Mapping) else None
        try:
            decision = await self.client.check(
                self._principal_of(ctx), _template(self.action, name),
                _template(self.resource, name), context={"input": dict(arguments)},
                approval=approval if isinstance(approval, str) else None,
                request_id=None if ctx.request_id is None else str(ctx.request_id))
        except ValueError as error:  # arguments that cannot make a request: not an allow
            return _refusal(f"the call cannot be checked: {error}")
        if not decision.allowed:
            return denial_result(name, decision)
        return await call_next(ctx)

    async def _list(self, ctx: Any, call_next: Callable) -> Any:
        listed = await call_next(ctx)
        tools = listed.get("tools", []) if isinstance(listed, dict) else getattr(listed, "tools", [])
        names = [tool.get("name") if isinstance(tool, dict) else tool.name for tool in tools]
        principal = self._principal_of(ctx)
        listable = await self._listable(principal, [name for name in names if isinstance(name, str)])
        kept = [tool for tool, name in zip(tools, names) if name in listable]
        if isinstance(listed, dict):
            return {**listed, "tools": kept}
        return listed.model_copy(update={"tools": kept})

    async def _listable(self, principal: Entity, names: list[str]) -> set[str]:
        """The names of the tools `principal` may list; none if Warrant cannot say."""
        if not names:
            return set()
        of_type = _searchable_type(self.resource)
        if of_type is not None:
            try:
                found = await self.client.search_resources(of_type, self.list_action,
                                                           principal=principal)
            except (SearchFailed, ValueError):  # fail closed: no answer lists nothing
                return set()
            allowed = {result.id for result in found if not result.approvable}
            return {name for name in names if name in allowed}
        try:
            decisions = await self.client.batch_check([
                {"principal": principal, "action": self.list_action,
                 "resource": _template(self.resource, name)} for name in names
            ])
        except ValueError:  # a tool that cannot be named to Warrant is not listed, nor the rest
            return set()
        return {name for name, decision in zip(names, decisions) if decision.allowed}


def denial_result(tool: str, decision: Any) -> Any:
    """The tool error a denial becomes: readable by the model, structured for the agent, and,
    when an approval would lift it, naming that approval and how to ask (as the TypeScript guard
    does)."""
    warrant: dict[str, Any] = {"decision": "deny", "reasons": list(decision.reasons),
                               "decision_id": decision.decision_id}
    text = f"Warrant denied this call to {tool}: {decision.describe()}"
    needed = decision.approval_required
    if needed is not None:
        warrant["approval_required"] = {
            "identity": needed.identity, "action": needed.action, "resource": needed.resource,
            "scope": needed.scope, "max_validity_seconds": needed.max_validity_seconds}
        text += (f". An approval would allow it: ask a human for one (Warrant's RequestApproval, "
                 f"with decision {decision.decision_id}) covering {needed.action} on "
                 f"{needed.resource} in {needed.scope}, then call again with _meta "
                 f"{{\"{APPROVAL_META_KEY}\": \"<the approval's id>\"}}.")
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=text)],
        structured_content={"warrant": warrant}, is_error=True)


def _refusal(text: str) -> Any:
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=f"Warrant refused this call: {text}")],
        is_error=True)
