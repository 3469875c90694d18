// An MCP server (the official TypeScript SDK, over stdio) whose every tool call Warrant decides
// first, and whose tool list Warrant filters: the example of policies/examples/mcp-agent.
//
//   WARRANT_ADDR=127.0.0.1:50051 node clients/typescript/examples/mcp-vendor-server.mjs
//
// with Warrant serving policies/examples/mcp-agent. The server acts for one identity,
// Agent::vendor-agent (WARRANT_PRINCIPAL to change it); an approval is presented in a call's
// _meta as "warrant/approval". Payments are appended to VENDOR_PAYMENTS_FILE when it is set, so
// that a test can see whether a tool's body ran.
import { appendFileSync } from "node:fs";

import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";

import { WarrantClient } from "@warrant/client";
import { guardMcpServer } from "@warrant/client/mcp";

const warrant = new WarrantClient(process.env.WARRANT_ADDR ?? "127.0.0.1:50051", { timeoutMs: 2000 });
const server = new McpServer({ name: "vendors", version: "1.0.0" });
// Before any tool is registered: the guard wraps the handlers as the SDK sets them.
guardMcpServer(server, { client: warrant, principal: process.env.WARRANT_PRINCIPAL ?? "Agent::vendor-agent" });

const vendors = new Map([["acme", { name: "Acme", iban: "DE00 1234" }]]);

server.registerTool(
  "lookup_vendor",
  { description: "Look a vendor up by name.", inputSchema: { name: z.string() } },
  async ({ name }) => {
    const vendor = vendors.get(name.toLowerCase());
    return { content: [{ type: "text", text: vendor ? `${vendor.name}: ${vendor.iban}` : `no vendor ${name}` }] };
  },
);

server.registerTool(
  "pay_invoice",
  {
    description: "Pay a vendor's invoice (needs an approval, up to its amount).",
    inputSchema: { vendor: z.string(), amount: z.number().int(), memo: z.string().optional() },
  },
  async ({ vendor, amount }) => {
    if (process.env.VENDOR_PAYMENTS_FILE) appendFileSync(process.env.VENDOR_PAYMENTS_FILE, `${vendor} ${amount}\n`);
    return { content: [{ type: "text", text: `paid ${amount} to ${vendor}` }] };
  },
);

server.registerTool(
  "delete_vendor",
  { description: "Remove a vendor for good.", inputSchema: { name: z.string() } },
  async ({ name }) => {
    vendors.delete(name.toLowerCase());
    return { content: [{ type: "text", text: `deleted ${name}` }] };
  },
);

await server.connect(new StdioServerTransport());
