// What the client adds to a bare gRPC call: the same cached Check sent N times in sequence by
// WarrantClient.check and by a bare @grpc/grpc-js stub on the same channel settings, alternating
// in rounds, against a running server; Ping by the bare stub as the floor.
//
//   node clients/typescript/bench/overhead.mjs 127.0.0.1:50051 [calls per round]
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

import { WarrantClient } from "@warrant/client";

const [target = "127.0.0.1:50051", perRound = "2000"] = process.argv.slice(2);
const calls = Number(perRound);
const definition = protoLoader.loadSync("warrant/v1/authorizer.proto", {
  includeDirs: [fileURLToPath(new URL("../proto/", import.meta.url))],
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});
const Authorizer = grpc.loadPackageDefinition(definition).warrant.v1.Authorizer;
const bare = new Authorizer(target, grpc.credentials.createInsecure(), { "grpc.enable_retries": 0 });
const client = new WarrantClient(target, { timeoutMs: 1000 });

const check = { principal: "ApiKey::pipeline-etl", action: "read", resource: "Dataset::sales-2026" };
const message = {
  principal: { type: "ApiKey", id: "pipeline-etl" }, action: "read",
  resource: { type: "Dataset", id: "sales-2026" }, approval_id: "", request_id: "",
  resource_parents: [], credential: "",
};
const unary = (method, body) =>
  new Promise((resolve, reject) =>
    bare[method](body, new grpc.Metadata(), { deadline: new Date(Date.now() + 1000) }, (error, answer) =>
      error ? reject(error) : resolve(answer)));

const runs = {
  "Ping, bare stub": () => unary("Ping", {}),
  "Check, bare stub": () => unary("Check", message),
  "Check, WarrantClient": async () => {
    const decision = await client.check(check);
    if (!decision.allowed) throw new Error(decision.failure ?? decision.reasons.join());
  },
};
const samples = Object.fromEntries(Object.keys(runs).map((name) => [name, []]));
for (const run of Object.values(runs)) for (let i = 0; i < 200; i++) await run(); // warm-up
for (let round = 0; round < 3; round++) {
  for (const [name, run] of Object.entries(runs)) {
    for (let i = 0; i < calls; i++) {
      const start = performance.now();
      await run();
      samples[name].push((performance.now() - start) * 1000);
    }
  }
}
const at = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
console.log("| calls, one in flight | p50 µs | p99 µs | mean µs |");
console.log("|---|---:|---:|---:|");
for (const [name, values] of Object.entries(samples)) {
  const sorted = [...values].sort((a, b) => a - b);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  console.log(`| ${name} (${values.length}) | ${at(sorted, 0.5).toFixed(0)} | ${at(sorted, 0.99).toFixed(0)} | ${mean.toFixed(0)} |`);
}
client.close();
bare.close();
