/**
 * `WarrantClient`: Warrant's `warrant.v1.Authorizer` for Node agent runtimes, over @grpc/grpc-js
 * with the messages loaded from the project's own protos. Every call has a deadline; UNAVAILABLE
 * is retried within it (with backoff), nothing else is; whatever goes wrong (the server down, the
 * deadline passed, a refusal, an answer that cannot be read, arguments that make no request)
 * comes back from `check` and `batchCheck` as a deny with its reason, never as an exception.
 */

import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

import {
  type ApprovalRequest,
  type ApprovalRequired,
  type Decision,
  Denied,
  Reasons,
  clientDenial,
} from "./decision.js";
import {
  type CheckInput,
  type Entity,
  InvalidArgument,
  approvalRequestOf,
  checkRequest,
  decisionOf,
  denialOfError,
  entityRef,
} from "./wire.js";

const PROTO_ROOT = fileURLToPath(new URL("../proto/", import.meta.url));
const definition = protoLoader.loadSync("warrant/v1/authorizer.proto", {
  includeDirs: [PROTO_ROOT],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
// biome-ignore lint: the loaded package is untyped by nature.
const loaded = grpc.loadPackageDefinition(definition) as any;
const AuthorizerService = loaded.warrant.v1.Authorizer as typeof grpc.Client;

/** The optional OpenTelemetry API, when the application has it. */
let otel: typeof import("@opentelemetry/api") | undefined;
try {
  otel = await import("@opentelemetry/api");
} catch {
  otel = undefined;
}

const DEFAULT_TIMEOUT_MS = 1000;
const FIRST_RETRY_MS = 20;
const LONGEST_RETRY_MS = 250;

/** How the client reaches Warrant. */
export interface ClientOptions {
  /** The deadline of each call, in milliseconds [default: 1000]. */
  timeoutMs?: number;
  /** The identity checks are made for when a call names none. */
  principal?: Entity;
  /** A credential (JWT) sent with every check, or a function that returns a fresh one. */
  credential?: string | (() => string);
  /** TLS: the CA certificates (PEM) the server's certificate must chain to; with `cert` and
   * `key` (PEM) too, mutual TLS. `serverName` overrides the name checked. Plaintext without. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer; serverName?: string };
}

/** What an approval request says beside the denial it asks about. */
export interface ApprovalAsk {
  justification: string;
  durationSeconds: number;
  ticket?: string;
  /** The human the identity acts for: never its approver. */
  onBehalfOf?: Entity;
  timeoutMs?: number;
}

/** Out of time before an answer. */
class OutOfTime extends Error {}

/** The trace context of the caller's active OpenTelemetry span, if any. */
function traceMetadata(): grpc.Metadata {
  const metadata = new grpc.Metadata();
  if (otel) {
    const carrier: Record<string, string> = {};
    otel.propagation.inject(otel.context.active(), carrier);
    for (const key of ["traceparent", "tracestate"]) {
      const value = carrier[key];
      if (value) metadata.set(key, value);
    }
  }
  return metadata;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class WarrantClient {
  readonly target: string;
  readonly timeoutMs: number;
  readonly principal?: Entity;
  private readonly credential?: string | (() => string);
  private readonly stub: grpc.Client;

  /** `target` is host:port. */
  constructor(target: string, options: ClientOptions = {}) {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(timeoutMs > 0)) throw new RangeError("timeoutMs: must be more than 0");
    this.target = target;
    this.timeoutMs = timeoutMs;
    this.principal = options.principal;
    this.credential = options.credential;
    const channelOptions: grpc.ChannelOptions = { "grpc.enable_retries": 0 };
    let credentials: grpc.ChannelCredentials;
    if (options.tls) {
      credentials = grpc.credentials.createSsl(options.tls.ca, options.tls.key ?? null, options.tls.cert ?? null);
      if (options.tls.serverName) channelOptions["grpc.ssl_target_name_override"] = options.tls.serverName;
    } else {
      credentials = grpc.credentials.createInsecure();
    }
    this.stub = new AuthorizerService(target, credentials, channelOptions);
  }

  close(): void {
    this.stub.close();
  }

  private currentCredential(): string | undefined {
    return typeof this.credential === "function" ? this.credential() : this.credential;
  }

  /** One unary call, answered or failed before `deadline`. */
  private unary(method: string, message: unknown, deadline: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const call = (this.stub as unknown as Record<string, Function>)[method];
      if (typeof call !== "function") {
        reject(new Error(`no method ${method}`));
        return;
      }
      call.call(
        this.stub,
        message,
        traceMetadata(),
        { deadline: new Date(deadline) },
        (error: grpc.ServiceError | null, answer: unknown) => (error ? reject(error) : resolve(answer)),
      );
    });
  }

  /** `method` until an answer, a failure other than UNAVAILABLE, or the deadline. */
  private async call(method: string, message: unknown, timeoutMs?: number): Promise<unknown> {
    const deadline = Date.now() + (timeoutMs ?? this.timeoutMs);
    let pause = FIRST_RETRY_MS;
    for (;;) {
      if (Date.now() >= deadline) throw new OutOfTime();
      try {
        return await this.unary(method, message, deadline);
      } catch (error) {
        const code = (error as Partial<grpc.ServiceError>)?.code;
        if (code !== grpc.status.UNAVAILABLE || deadline - Date.now() <= pause) throw error;
        await sleep(pause);
        pause = Math.min(pause * 2, LONGEST_RETRY_MS);
      }
    }
  }

  /** Whether the principal may do `action` on `resource`, now. Never throws: every failure is
   * a deny with a `warrant-client:*` reason (`invalid-request` names the argument). */
  async check(input: CheckInput & { timeoutMs?: number }): Promise<Decision> {
    const requestId = input?.requestId ?? "";
    try {
      const message = checkRequest(input, {
        principal: this.principal,
        credential: this.currentCredential(),
      });
      if (message instanceof InvalidArgument) {
        return clientDenial(Reasons.invalidRequest, message.toString(), "", requestId);
      }
      return decisionOf(await this.call("Check", message, input.timeoutMs), requestId);
    } catch (error) {
      if (error instanceof OutOfTime) return clientDenial(Reasons.timeout, "the deadline passed", "", requestId);
      return denialOfError(error, requestId);
    }
  }

  /** Many decisions in one call, one per item in order; a failed call denies every item. */
  async batchCheck(items: CheckInput[], options: { timeoutMs?: number } = {}): Promise<Decision[]> {
    const count = Array.isArray(items) ? items.length : 0;
    const every = (decision: Decision) => Array.from({ length: count }, () => decision);
    try {
      const checks = [];
      for (const [at, item] of (items ?? []).entries()) {
        const message = checkRequest(item, { principal: this.principal, credential: this.currentCredential() });
        if (message instanceof InvalidArgument) {
          return every(clientDenial(Reasons.invalidRequest, `checks[${at}].${message.toString()}`));
        }
        checks.push(message);
      }
      const answer = (await this.call("BatchCheck", { checks }, options.timeoutMs)) as {
        results?: Array<Record<string, unknown>>;
      };
      const results = answer?.results;
      if (!Array.isArray(results) || results.length !== count) {
        return every(clientDenial(Reasons.malformedAnswer, `${results?.length} results for ${count} checks`));
      }
      return results.map((result) => {
        const error = result.error as { code?: number; message?: string; decision_id?: string } | undefined;
        if (result.result === "error" && error) {
          return clientDenial(Reasons.refused, `${error.code}: ${error.message}`, error.decision_id ?? "");
        }
        return decisionOf(result.response);
      });
    } catch (error) {
      if (error instanceof OutOfTime) return every(clientDenial(Reasons.timeout, "the deadline passed"));
      return every(denialOfError(error));
    }
  }

  /** `check`, throwing `Denied` unless the answer is an allow. */
  async guard(input: CheckInput & { timeoutMs?: number }): Promise<Decision> {
    const decision = await this.check(input);
    if (!decision.allowed) throw new Denied(decision);
    return decision;
  }

  /** Asks for the approval a denied decision names (its `approvalRequired`): a pending request
   * a human decides. Rejects if Warrant refuses or cannot be reached: nothing is allowed by
   * asking. */
  async requestApproval(
    decision: Decision | (ApprovalRequired & { decisionId?: string }),
    ask: ApprovalAsk,
  ): Promise<ApprovalRequest> {
    const advice = "allowed" in decision ? decision.approvalRequired : decision;
    if (!advice) throw new TypeError("decision: it names no approval that would allow it");
    const field = (value: unknown, name: string) => {
      const ref = entityRef(value, name);
      if (ref instanceof InvalidArgument) throw new TypeError(ref.toString());
      return ref;
    };
    const message = {
      identity: field(advice.identity, "identity"),
      action: advice.action,
      resource: field(advice.resource, "resource"),
      scope: field(advice.scope, "scope"),
      justification: ask.justification,
      ticket: ask.ticket ?? "",
      duration_seconds: String(Math.trunc(ask.durationSeconds)),
      on_behalf_of: ask.onBehalfOf === undefined ? null : field(ask.onBehalfOf, "onBehalfOf"),
      decision_id: decision.decisionId ?? "",
      credential: this.currentCredential() ?? "",
    };
    return approvalRequestOf(await this.call("RequestApproval", message, ask.timeoutMs));
  }

  /** Waits until the request is approved, rejected or expired, or `timeoutMs` passes, and returns
   * it as it then stands (still `pending` if time ran out). */
  waitForApproval(request: ApprovalRequest | string, options: { timeoutMs: number }): Promise<ApprovalRequest> {
    const id = typeof request === "string" ? request : request.id;
    return new Promise((resolve, reject) => {
      let last: ApprovalRequest | undefined;
      const stream = (this.stub as unknown as Record<string, Function>).WatchApprovalRequest!.call(
        this.stub,
        { id },
        traceMetadata(),
        { deadline: new Date(Date.now() + options.timeoutMs) },
      ) as grpc.ClientReadableStream<unknown>;
      stream.on("data", (record: unknown) => {
        last = approvalRequestOf(record);
        if (last.state !== "pending") {
          stream.cancel();
          resolve(last);
        }
      });
      stream.on("error", (error: grpc.ServiceError) => {
        if (last && (error.code === grpc.status.DEADLINE_EXCEEDED || error.code === grpc.status.CANCELLED)) {
          resolve(last);
        } else {
          reject(error);
        }
      });
      stream.on("end", () => (last ? resolve(last) : reject(new Error("the watch ended without an answer"))));
    });
  }
}
