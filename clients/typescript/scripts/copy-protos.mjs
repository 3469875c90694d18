// Copies the project's protos into the package (proto/), where the client loads them from: the
// package carries the very messages the server it talks to was built from.
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const from = join(here, "..", "..", "..", "proto", "warrant");
const to = join(here, "..", "proto", "warrant");
rmSync(to, { recursive: true, force: true });
mkdirSync(to, { recursive: true });
cpSync(from, to, { recursive: true });
