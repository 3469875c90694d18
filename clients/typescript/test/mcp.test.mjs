// The MCP guard end to end: the example vendor server (the official TypeScript SDK, guarded by
// guardMcpServer) run over stdio and driven by the SDK's own client, against Warrant serving
// policies/examples/mcp-agent. The list is filtered; each call is decided before the tool runs
// (a denied payment never reaches the payments file); a denial an approval would lift says which
// approval and how to ask; an approval in _meta allows; the agent example asks a human and
// proceeds; an unreachable Warrant hides every tool and refuses every call.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

import { ROOT, admin, record, startServer } from "../test-support/harness.mjs";

const EXAMPLES = fileURLToPath(new URL("../examples/", import.meta.url));

let server;
before(async () => {
  server = await startServer({ policies: join(ROOT, "policies", "examples", "mcp-agent") });
});
after(() => server.stop());

async function vendorClient(warrantAddress, env = {}) {
  const client = new Client({ name: "test-agent", version: "1.0.0" });
  await client.connect(
    new StdioClientTransport({
      command: process.execPath,
      args: [join(EXAMPLES, "mcp-vendor-server.mjs")],
      env: { ...process.env, WARRANT_ADDR: warrantAddress, ...env },
    }),
  );
  return client;
}

const text = (result) => result.content.map((part) => part.text ?? "").join(" ");

test("every tool call is decided by Warrant and the list is filtered", async () => {
  const payments = join(mkdtempSync(join(tmpdir(), "vendors-")), "payments");
  writeFileSync(payments, "");
  const client = await vendorClient(server.check, { VENDOR_PAYMENTS_FILE: payments });
  try {
    const listed = await client.listTools();
    assert.deepEqual(listed.tools.map((tool) => tool.name).sort(), ["lookup_vendor", "pay_invoice"]);

    const looked = await client.callTool({ name: "lookup_vendor", arguments: { name: "acme" } });
    assert.ok(!looked.isError, text(looked));
    assert.match(text(looked), /Acme/);

    // Denied: the tool's body never runs, and the agent is told which approval would allow it.
    const unapproved = await client.callTool({ name: "pay_invoice", arguments: { vendor: "acme", amount: 1200 } });
    assert.equal(unapproved.isError, true);
    const denial = unapproved.structuredContent.warrant;
    assert.deepEqual(denial.reasons, ["payment-needs-approval"]);
    assert.equal(denial.approval_required.action, "pay_invoice");
    assert.equal(denial.approval_required.resource, "Tool::pay_invoice");
    assert.match(text(unapproved), /An approval would allow it/);
    assert.equal(readFileSync(payments, "utf8"), "", "a denied payment ran");
    const recorded = await record(server, denial.decision_id);
    assert.equal(recorded.decision, "DENY");
    assert.deepEqual(recorded.context.input, { vendor: "acme", amount: 1200 });

    // Allowed under the approval it presents in _meta; over its amount, denied.
    const paid = await client.callTool({
      name: "pay_invoice",
      arguments: { vendor: "acme", amount: 1200 },
      _meta: { "warrant/approval": "INV-42" },
    });
    assert.ok(!paid.isError, text(paid));
    assert.equal(readFileSync(payments, "utf8"), "acme 1200\n");
    const tooMuch = await client.callTool({
      name: "pay_invoice",
      arguments: { vendor: "acme", amount: 9000 },
      _meta: { "warrant/approval": "INV-42" },
    });
    assert.deepEqual(tooMuch.structuredContent.warrant.reasons, ["payment-over-approved-amount"]);
    assert.equal(readFileSync(payments, "utf8"), "acme 1200\n");

    // Hidden, and refused when called anyway.
    const hidden = await client.callTool({ name: "delete_vendor", arguments: { name: "acme" } });
    assert.deepEqual(hidden.structuredContent.warrant.reasons, ["outside-agent-scopes"]);
    assert.match(text(await client.callTool({ name: "lookup_vendor", arguments: { name: "acme" } })), /Acme/);
  } finally {
    await client.close();
  }
});

test("the agent example asks a human for the approval and proceeds under it", async () => {
  const agent = spawn(process.execPath, [join(EXAMPLES, "agent-asks-for-approval.mjs")], {
    env: { ...process.env, WARRANT_ADDR: server.check, WAIT_MS: "20000" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: agent.stdout });
  const output = [];
  for await (const line of lines) {
    output.push(line);
    const asked = line.match(/^asked for approval: (\S+);/);
    if (asked) {
      await admin(server, "DecideApprovalRequest", {
        id: asked[1],
        approver: { type: "Human", id: "dana" },
        approve: true,
        max_uses: 1,
      });
    }
  }
  assert.match(output.join("\n"), /paid 1200 to acme/);
});

test("an unreachable Warrant hides every tool and refuses every call", async () => {
  const port = await new Promise((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
  const client = await vendorClient(`127.0.0.1:${port}`);
  try {
    assert.deepEqual((await client.listTools()).tools, []);
    const called = await client.callTool({ name: "lookup_vendor", arguments: { name: "acme" } });
    assert.equal(called.isError, true);
    assert.match(called.structuredContent.warrant.reasons[0], /^warrant-client:/);
  } finally {
    await client.close();
  }
});
