// An agent that meets a denial an approval would lift, asks a human for exactly that approval,
// waits for the answer, and calls again under it: over MCP to the guarded vendor server, and to
// Warrant for the approval request.
//
//   WARRANT_ADDR=127.0.0.1:50051 node clients/typescript/examples/agent-asks-for-approval.mjs
//
// A human approves on the admin side meanwhile:
//   warrant approval requests --state pending
//   warrant approval approve req-... --approver Human::dana --for 30m
import { fileURLToPath } from "node:url";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

import { WarrantClient } from "@warrant/client";

const address = process.env.WARRANT_ADDR ?? "127.0.0.1:50051";
const warrant = new WarrantClient(address, { timeoutMs: 2000 });
const agent = new Client({ name: "vendor-agent", version: "1.0.0" });
await agent.connect(
  new StdioClientTransport({
    command: process.execPath,
    args: [fileURLToPath(new URL("./mcp-vendor-server.mjs", import.meta.url))],
    env: { ...process.env, WARRANT_ADDR: address },
  }),
);

const payment = { name: "pay_invoice", arguments: { vendor: "acme", amount: 1200 } };
let result = await agent.callTool(payment);
const denial = result.structuredContent?.warrant;
if (result.isError && denial?.approval_required) {
  const needed = denial.approval_required;
  const request = await warrant.requestApproval(
    {
      identity: needed.identity,
      action: needed.action,
      resource: needed.resource,
      scope: needed.scope,
      maxValiditySeconds: needed.max_validity_seconds,
      decisionId: denial.decision_id,
    },
    { justification: "pay Acme's invoice 4711", durationSeconds: 1800, ticket: "INV-4711" },
  );
  console.log(`asked for approval: ${request.id}; waiting for a human`);
  const answered = await warrant.waitForApproval(request, { timeoutMs: Number(process.env.WAIT_MS ?? 600000) });
  if (answered.state === "approved") {
    result = await agent.callTool({ ...payment, _meta: { "warrant/approval": answered.approvalId } });
  } else {
    console.log(`the request is ${answered.state} ${answered.reason}`);
  }
}
console.log(result.content.map((part) => part.text).join(" "));
await agent.close();
warrant.close();
