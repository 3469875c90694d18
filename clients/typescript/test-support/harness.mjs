// The real server for the tests: `warrant serve` (WARRANT_BIN, else the debug build) on
// ephemeral ports with a data folder of its own, its admin API with the token, and certificates
// made with openssl for mutual TLS.
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const BINARY = process.env.WARRANT_BIN ?? join(ROOT, "target", "debug", "warrant");

/** Starts a server; resolves to its addresses, admin token and `stop()`. */
export async function startServer({ policies = join(ROOT, "policies"), args = [] } = {}) {
  const data = mkdtempSync(join(tmpdir(), "warrant-ts-"));
  const child = spawn(
    BINARY,
    [
      "serve", "--listen", "127.0.0.1:0", "--policies", policies, "--data-dir", data,
      "--metrics-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
      "--authzen-listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0", ...args,
    ],
    { stdio: ["ignore", "pipe", "ignore"] },
  );
  const addresses = {};
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    for (const name of ["metrics", "admin", "authzen", "listening"]) {
      const prefix = `warrant ${name} on `;
      if (line.startsWith(prefix)) addresses[name] = line.slice(prefix.length).split(" ")[0];
    }
    if (addresses.listening) break;
  }
  if (!addresses.listening) throw new Error("the server did not start");
  const token = readFileSync(join(data, "admin.token"), "utf8").trim();
  return {
    check: addresses.listening,
    admin: addresses.admin,
    data,
    token,
    stop: () => child.kill("SIGKILL"),
  };
}

const protos = protoLoader.loadSync(["warrant/v1/admin.proto", "warrant/v1/authorizer.proto"], {
  includeDirs: [join(ROOT, "proto")],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const warrantV1 = grpc.loadPackageDefinition(protos).warrant.v1;

/** A unary admin call with the bearer token: `await admin(server, "GetDecision", {...})`. */
export function admin(server, method, message) {
  const client = new warrantV1.Admin(server.admin, grpc.credentials.createInsecure());
  const log = new warrantV1.DecisionLog(server.admin, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${server.token}`);
  const stub = typeof client[method] === "function" ? client : log;
  return new Promise((resolve, reject) =>
    stub[method](message, metadata, { deadline: new Date(Date.now() + 5000) }, (error, answer) => {
      client.close();
      log.close();
      return error ? reject(error) : resolve(answer);
    }),
  );
}

/** The ledger record of a decision, as JSON. */
export async function record(server, decisionId) {
  const found = await admin(server, "GetDecision", { decision_id: decisionId });
  return JSON.parse(found.record_json);
}

/** A CA, a server certificate (localhost, 127.0.0.1) and a client certificate with a SPIFFE ID. */
export function certificates() {
  const dir = mkdtempSync(join(tmpdir(), "warrant-ts-certs-"));
  const openssl = (...args) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
    "-subj", "/CN=warrant test CA", "-keyout", "ca.key", "-out", "ca.pem");
  const leaf = (name, subject, san) => {
    writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\n`);
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", subject,
      "-keyout", `${name}.key`, "-out", `${name}.csr`);
    openssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
      "-days", "1", "-extfile", `${name}.ext`, "-out", `${name}.pem`);
  };
  leaf("server", "/CN=warrant", "DNS:localhost,IP:127.0.0.1");
  leaf("client", "/CN=agent", "URI:spiffe://test.example/ns/agents/sa/node");
  const file = (name) => join(dir, name);
  return { dir, file, read: (name) => readFileSync(file(name)) };
}
