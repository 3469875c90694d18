/**
 * Warrant in front of every tool of an MCP server built with `@modelcontextprotocol/sdk`:
 * `guardMcpServer(server, { client, principal })`, called before the server's tools are
 * registered, wraps the server's `tools/call` and `tools/list` handlers as they are set.
 *
 * - `tools/call`: before the tool runs, Warrant decides whether the principal may call it, with
 *   the call's arguments as `context.input` (as `warrant schema from-mcp` declares them) and the
 *   approval the caller presents in the request's `_meta` (`"warrant/approval"`). A denial reaches
 *   the agent as a tool error it can read (reasons, decision id and, when an approval would lift
 *   it, the approval to ask for and how), and the tool does not run.
 * - `tools/list`: filtered to the tools the principal may see (one BatchCheck of `listAction` on
 *   each tool).
 *
 * Everything fails closed: a Warrant that cannot be reached denies every call and hides every
 * tool. The mapping from tools to actions and resources is the Python guard's and the MCP example
 * policies': the action is the tool's name, the resource `Tool::{tool}`.
 */

import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js";

import type { WarrantClient } from "./client.js";
import { type Decision, describe } from "./decision.js";
import type { Entity, Json } from "./wire.js";

/** The `_meta` key a call presents its approval under. */
export const APPROVAL_META_KEY = "warrant/approval";

type Template = string | ((tool: string) => string);
type Handler = (request: any, extra: any) => unknown;

/** What the guard asks Warrant. */
export interface GuardOptions {
  client: WarrantClient;
  /** The identity the server acts for, or a function of the request's `extra` (the SDK's
   * `RequestHandlerExtra`: `authInfo`, `sessionId`, ...) that names it. */
  principal: Entity | ((extra: any) => Entity);
  /** A call's action, with `{tool}` for the tool's name [default: `{tool}`]. */
  action?: Template;
  /** The resource a call acts on [default: `Tool::{tool}`]. */
  resource?: Template;
  /** The action that decides whether a tool is listed [default: `list_tool`]; `null` lists
   * every tool. */
  listAction?: string | null;
}

/** A server as the SDK gives it: the low-level `Server`, or an `McpServer` (its `.server`). */
interface RequestHandlers {
  setRequestHandler(schema: unknown, handler: Handler): void;
  assertCanSetRequestHandler(method: string): void;
}

const filled = (template: Template, tool: string) =>
  typeof template === "function" ? template(tool) : template.replaceAll("{tool}", tool);

/** The tool error a denial becomes: readable by the model, structured for the agent. */
export function denialResult(tool: string, decision: Decision) {
  const warrant: Record<string, Json> = {
    decision: "deny",
    reasons: [...decision.reasons],
    decision_id: decision.decisionId,
  };
  let text = `Warrant denied this call to ${tool}: ${describe(decision)}`;
  const needed = decision.approvalRequired;
  if (needed) {
    warrant.approval_required = {
      identity: needed.identity,
      action: needed.action,
      resource: needed.resource,
      scope: needed.scope,
      max_validity_seconds: needed.maxValiditySeconds,
    };
    text +=
      `. An approval would allow it: ask a human for one (Warrant's RequestApproval, with decision ` +
      `${decision.decisionId}) covering ${needed.action} on ${needed.resource} in ${needed.scope}, ` +
      `then call again with _meta {"${APPROVAL_META_KEY}": "<the approval's id>"}.`;
  }
  return { content: [{ type: "text" as const, text }], structuredContent: { warrant }, isError: true };
}

/** Wraps the `tools/call` and `tools/list` handlers `server` gets from now on. Throws if they
 * are set already: install the guard before registering tools. */
export function guardMcpServer(server: RequestHandlers | { server: RequestHandlers }, options: GuardOptions): void {
  const target: RequestHandlers = "server" in server ? server.server : server;
  for (const method of ["tools/call", "tools/list"]) {
    try {
      target.assertCanSetRequestHandler(method);
    } catch {
      throw new Error(`guardMcpServer: ${method} has a handler already; install the guard before registering tools`);
    }
  }
  const action = options.action ?? "{tool}";
  const resource = options.resource ?? "Tool::{tool}";
  const listAction = options.listAction === undefined ? "list_tool" : options.listAction;
  const principalOf = (extra: any): Entity =>
    typeof options.principal === "function" ? options.principal(extra) : options.principal;
  const set = target.setRequestHandler.bind(target);

  const guardedCall = (handler: Handler): Handler => async (request, extra) => {
    const params = request?.params ?? {};
    const name = params.name;
    const args = params.arguments ?? {};
    const meta = params._meta;
    if (typeof name !== "string" || !args || typeof args !== "object" || Array.isArray(args)) {
      return {
        content: [{ type: "text", text: "Warrant refused this call: it names no tool, or its arguments are not an object" }],
        isError: true,
      };
    }
    const approval = meta && typeof meta[APPROVAL_META_KEY] === "string" ? meta[APPROVAL_META_KEY] : undefined;
    const decision = await options.client.check({
      principal: principalOf(extra),
      action: filled(action, name),
      resource: filled(resource, name),
      context: { input: args },
      ...(approval ? { approval } : {}),
      ...(request?.id !== undefined ? { requestId: String(request.id) } : {}),
    });
    if (!decision.allowed) return denialResult(name, decision);
    return handler(request, extra);
  };

  const guardedList = (handler: Handler): Handler => async (request, extra) => {
    const listed = (await handler(request, extra)) as { tools?: Array<{ name: string }> };
    const tools = Array.isArray(listed?.tools) ? listed.tools : [];
    if (listAction === null) return listed;
    const principal = principalOf(extra);
    const decisions = tools.length
      ? await options.client.batchCheck(
          tools.map((tool) => ({ principal, action: listAction, resource: filled(resource, tool.name) })),
        )
      : [];
    return { ...listed, tools: tools.filter((_, i) => decisions[i]?.allowed === true) };
  };

  target.setRequestHandler = (schema: unknown, handler: Handler) => {
    if (schema === CallToolRequestSchema) return set(schema, guardedCall(handler));
    if (schema === ListToolsRequestSchema) return set(schema, guardedList(handler));
    return set(schema, handler);
  };
}
