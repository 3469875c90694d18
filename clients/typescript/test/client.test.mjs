// WarrantClient against the real server: allow, deny with its reasons and the approval that would
// lift it, batches, arguments that make no request, a server that is down and a deadline that
// passes (each a deny, never an exception), mutual TLS, the caller's trace context on record,
// and an approval asked for, approved by a human on the admin API, waited for and used.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, before, test } from "node:test";

import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";

import { Denied, Reasons, WarrantClient } from "@warrant/client";

import { admin, certificates, record, startServer } from "../test-support/harness.mjs";

let server;
before(async () => {
  server = await startServer();
});
after(() => server.stop());

const read = (dataset) => ({ principal: "ApiKey::pipeline-etl", action: "read", resource: `Dataset::${dataset}` });
const deploy = { principal: "ServiceAccount::deploy-bot", action: "update", resource: "Config::payments-api" };

test("an allow is an allow, on record", async () => {
  const client = new WarrantClient(server.check);
  const decision = await client.check(read("sales-2026"));
  assert.equal(decision.allowed, true, decision.failure);
  assert.match(decision.decisionId, /^[0-9a-f-]{36}$/);
  assert.ok(decision.validUntil instanceof Date);
  assert.equal((await record(server, decision.decisionId)).decision, "ALLOW");
  assert.equal((await client.guard(read("sales-2026"))).allowed, true);
  client.close();
});

test("a deny says why and which approval would lift it; guard throws Denied", async () => {
  const client = new WarrantClient(server.check);
  const decision = await client.check(deploy);
  assert.equal(decision.allowed, false);
  assert.deepEqual(decision.reasons, ["production-change-needs-approval"]);
  assert.equal(decision.approvalRequired?.identity, "ServiceAccount::deploy-bot");
  assert.equal(decision.approvalRequired?.scope, "Scope::prod-payments-config");
  await assert.rejects(client.guard(deploy), (error) => error instanceof Denied && !error.decision.allowed);
  client.close();
});

test("a batch answers each item in order", async () => {
  const client = new WarrantClient(server.check, { principal: "ApiKey::pipeline-etl" });
  const decisions = await client.batchCheck([
    { action: "read", resource: "Dataset::sales-2026" },
    { action: "read", resource: "Dataset::salaries" },
  ]);
  assert.deepEqual(decisions.map((d) => d.allowed), [true, false]);
  client.close();
});

test("arguments that make no request are a deny naming the field, never an exception", async () => {
  const client = new WarrantClient(server.check);
  for (const [input, field] of [
    [{ action: "read", resource: "Dataset::x" }, "principal"],
    [{ principal: "no-type", action: "read", resource: "Dataset::x" }, "principal"],
    [{ principal: "ApiKey::pipeline-etl", action: "", resource: "Dataset::x" }, "action"],
    [{ ...read("x"), context: { amount: Number.NaN } }, "context.amount"],
    [undefined, "input"],
  ]) {
    const decision = await client.check(input);
    assert.equal(decision.allowed, false);
    assert.deepEqual(decision.reasons, [Reasons.invalidRequest]);
    assert.ok(decision.failure?.includes(field), decision.failure);
  }
  // One the server refuses: recorded, with its id.
  const refused = await client.check({ ...read("sales-2026"), context: { now: "2020" } });
  assert.deepEqual(refused.reasons, [Reasons.refused]);
  assert.ok(refused.decisionId);
  client.close();
});

test("a server that is down, and a deadline that passes, are denies", async () => {
  const port = await new Promise((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
  const nowhere = new WarrantClient(`127.0.0.1:${port}`, { timeoutMs: 300 });
  const down = await nowhere.check(read("sales-2026"));
  assert.equal(down.allowed, false);
  assert.ok([Reasons.unavailable, Reasons.timeout].includes(down.reasons[0]), down.reasons[0]);
  assert.deepEqual((await nowhere.batchCheck([read("a"), read("b")])).map((d) => d.allowed), [false, false]);
  nowhere.close();
  const hasty = new WarrantClient(server.check, { timeoutMs: 1 });
  await new Promise((resolve) => setTimeout(resolve, 5));
  const late = await hasty.check(read("sales-2026"));
  assert.equal(late.allowed, false);
  assert.ok([Reasons.timeout, Reasons.unavailable].includes(late.reasons[0]), late.reasons[0]);
  hasty.close();
});

test("the caller's trace context reaches the record", async () => {
  const manager = new AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(manager);
  // A W3C propagator, as the OpenTelemetry SDK installs one.
  propagation.setGlobalPropagator({
    inject(ctx, carrier, setter) {
      const span = trace.getSpanContext(ctx);
      if (span) setter.set(carrier, "traceparent", `00-${span.traceId}-${span.spanId}-01`);
    },
    extract: (ctx) => ctx,
    fields: () => ["traceparent"],
  });
  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  const client = new WarrantClient(server.check);
  const decision = await context.with(
    trace.setSpanContext(context.active(), { traceId, spanId: "00f067aa0ba902b7", traceFlags: 1 }),
    () => client.check(read("sales-2026")),
  );
  assert.equal((await record(server, decision.decisionId)).trace_id, traceId);
  client.close();
  propagation.disable();
  context.disable();
});

test("an approval asked for, approved by a human, waited for and used", async () => {
  const client = new WarrantClient(server.check, { timeoutMs: 3000 });
  const denied = await client.check(deploy);
  const request = await client.requestApproval(denied, {
    justification: "roll out the payments fix",
    durationSeconds: 1800,
    ticket: "CHG-9001",
    onBehalfOf: "Human::bob",
  });
  assert.equal(request.state, "pending");
  const waiting = client.waitForApproval(request, { timeoutMs: 10000 });
  await admin(server, "DecideApprovalRequest", {
    id: request.id,
    approver: { type: "Human", id: "carol" },
    approve: true,
    max_uses: 1,
  });
  const answered = await waiting;
  assert.equal(answered.state, "approved");
  assert.equal(answered.decidedBy, "Human::carol");
  const allowed = await client.check({ ...deploy, approval: answered.approvalId });
  assert.equal(allowed.allowed, true, allowed.reasons.join());
  client.close();
});

test("mutual TLS: served with a client certificate, denied without one", async () => {
  const certs = certificates();
  const tls = await startServer({
    args: ["--tls-cert", certs.file("server.pem"), "--tls-key", certs.file("server.key"),
      "--tls-client-ca", certs.file("ca.pem")],
  });
  try {
    const mutual = new WarrantClient(tls.check, {
      tls: { ca: certs.read("ca.pem"), cert: certs.read("client.pem"), key: certs.read("client.key"), serverName: "localhost" },
    });
    const decision = await mutual.check(read("sales-2026"));
    assert.equal(decision.allowed, true, decision.failure);
    mutual.close();
    const anonymous = new WarrantClient(tls.check, { tls: { ca: certs.read("ca.pem"), serverName: "localhost" }, timeoutMs: 500 });
    const refused = await anonymous.check(read("sales-2026"));
    assert.equal(refused.allowed, false);
    anonymous.close();
  } finally {
    tls.stop();
  }
});
