// A credential with every check: a JWT (ES256) signed here with a key whose JWKS the server's
// configuration names. Required for API keys: denied without one, allowed with the client's
// (a function that returns a fresh token), and a per-call token for someone else is a mismatch.
import assert from "node:assert/strict";
import { createSign, generateKeyPairSync } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { WarrantClient } from "@warrant/client";

import { startServer } from "../test-support/harness.mjs";

const ISSUER = "https://issuer.test";
const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
const b64 = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

function token(subject) {
  const header = b64({ alg: "ES256", kid: "k1", typ: "JWT" });
  const claims = b64({ iss: ISSUER, sub: subject, exp: Math.floor(Date.now() / 1000) + 600 });
  const signature = createSign("SHA256")
    .update(`${header}.${claims}`)
    .sign({ key: privateKey, dsaEncoding: "ieee-p1363" })
    .toString("base64url");
  return `${header}.${claims}.${signature}`;
}

let server;
before(async () => {
  const files = mkdtempSync(join(tmpdir(), "warrant-ts-jwt-"));
  const jwk = { ...publicKey.export({ format: "jwk" }), kid: "k1", alg: "ES256" };
  writeFileSync(join(files, "jwks.json"), JSON.stringify({ keys: [jwk] }));
  writeFileSync(
    join(files, "warrant.toml"),
    `[credentials]\nrequired_for = ["ApiKey"]\n\n[[credentials.issuers]]\nissuer = "${ISSUER}"\n` +
      `jwks_file = "${join(files, "jwks.json")}"\nprincipal = "ApiKey::{sub}"\n`,
  );
  server = await startServer({ args: ["--config", join(files, "warrant.toml")] });
});
after(() => server.stop());

const read = { principal: "ApiKey::pipeline-etl", action: "read", resource: "Dataset::sales-2026" };

test("a credential travels with every check, the client's or the call's own", async () => {
  const without = new WarrantClient(server.check);
  assert.deepEqual((await without.check(read)).reasons, ["warrant:credential-required"]);
  without.close();

  const client = new WarrantClient(server.check, { credential: () => token("pipeline-etl") });
  const allowed = await client.check(read);
  assert.equal(allowed.allowed, true, allowed.reasons.join());
  const someoneElse = await client.check({ ...read, credential: token("pipeline-expired") });
  assert.deepEqual(someoneElse.reasons, ["warrant:credential-mismatch"]);
  client.close();
});
