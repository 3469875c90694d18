/**
 * Between JavaScript values and Warrant's messages (as @grpc/proto-loader gives them, field
 * names as in the protos): entity names, requests, answers, gRPC errors and the caller's trace
 * context. Nothing here talks to the network, and nothing here throws: a value that cannot make
 * a request is an `InvalidArgument` naming the field.
 */

import type { ServiceError } from "@grpc/grpc-js";
import { status as Status } from "@grpc/grpc-js";

import {
  type ApprovalRequest,
  type ApprovalRequired,
  type Decision,
  Reasons,
  clientDenial,
} from "./decision.js";

/** An entity: "Type::id" (a namespaced type too; the id may be quoted) or `{ type, id }`. */
export type Entity = string | { type: string; id: string };

/** A JSON value as a context or a resource description holds it. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** An argument that cannot make a request; `field` names it. */
export class InvalidArgument {
  constructor(
    readonly field: string,
    readonly message: string,
  ) {}
  toString(): string {
    return `${this.field}: ${this.message}`;
  }
}

// The messages, as proto-loader's objects (keepCase: the protos' own field names).
export interface EntityRefMessage {
  type: string;
  id: string;
}
type ValueMessage =
  | { nullValue: "NULL_VALUE" }
  | { boolValue: boolean }
  | { numberValue: number }
  | { stringValue: string }
  | { listValue: { values: ValueMessage[] } }
  | { structValue: StructMessage };
export interface StructMessage {
  fields: Record<string, ValueMessage>;
}
export interface TimestampMessage {
  seconds: string | number;
  nanos: number;
}
export interface CheckRequestMessage {
  principal: EntityRefMessage;
  action: string;
  resource: EntityRefMessage;
  context?: StructMessage;
  approval_id: string;
  request_id: string;
  resource_attributes?: StructMessage;
  resource_parents: EntityRefMessage[];
  credential: string;
}

/** What a check names: the arguments of `check`, and an item of `batchCheck`. */
export interface CheckInput {
  principal?: Entity;
  action: string;
  resource: Entity;
  approval?: string;
  context?: Record<string, Json>;
  requestId?: string;
  resourceAttributes?: Record<string, Json>;
  resourceParents?: Entity[];
  credential?: string;
}

export function entityRef(value: unknown, field: string): EntityRefMessage | InvalidArgument {
  if (value && typeof value === "object") {
    const { type, id } = value as { type?: unknown; id?: unknown };
    if (typeof type === "string" && type && typeof id === "string" && id) return { type, id };
  }
  if (typeof value === "string") {
    const at = value.lastIndexOf("::");
    if (at > 0) {
      let id = value.slice(at + 2);
      if (id.length >= 2 && id.startsWith('"') && id.endsWith('"')) id = id.slice(1, -1);
      if (id) return { type: value.slice(0, at), id };
    }
  }
  return new InvalidArgument(field, `${JSON.stringify(value) ?? String(value)} is not an entity ("Type::id" or { type, id })`);
}

function valueOf(value: unknown, field: string, depth: number): ValueMessage | InvalidArgument {
  if (depth > 32) return new InvalidArgument(field, "nested too deep");
  if (value === null) return { nullValue: "NULL_VALUE" };
  switch (typeof value) {
    case "boolean":
      return { boolValue: value };
    case "number":
      return Number.isFinite(value)
        ? { numberValue: value }
        : new InvalidArgument(field, `${value} is not a finite number`);
    case "string":
      return { stringValue: value };
    case "object": {
      if (Array.isArray(value)) {
        const values: ValueMessage[] = [];
        for (const [i, item] of value.entries()) {
          const converted = valueOf(item, `${field}[${i}]`, depth + 1);
          if (converted instanceof InvalidArgument) return converted;
          values.push(converted);
        }
        return { listValue: { values } };
      }
      const struct = structOf(value, field, depth + 1);
      return struct instanceof InvalidArgument ? struct : { structValue: struct };
    }
    default:
      return new InvalidArgument(field, `a ${typeof value} is not JSON`);
  }
}

export function structOf(value: unknown, field: string, depth = 0): StructMessage | InvalidArgument {
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    return new InvalidArgument(field, "must be an object");
  }
  const fields: Record<string, ValueMessage> = {};
  for (const [key, item] of Object.entries(value)) {
    if (item === undefined) continue;
    const converted = valueOf(item, `${field}.${key}`, depth);
    if (converted instanceof InvalidArgument) return converted;
    fields[key] = converted;
  }
  return { fields };
}

/** The Check message for `input`, with `principal` and `credential` as defaults. */
export function checkRequest(
  input: CheckInput,
  defaults: { principal?: Entity; credential?: string },
): CheckRequestMessage | InvalidArgument {
  if (!input || typeof input !== "object") {
    return new InvalidArgument("input", "a check is an object: { principal, action, resource, ... }");
  }
  const principalName = input.principal ?? defaults.principal;
  if (principalName === undefined) {
    return new InvalidArgument("principal", "none given, and the client has no default principal");
  }
  const principal = entityRef(principalName, "principal");
  if (principal instanceof InvalidArgument) return principal;
  if (typeof input.action !== "string" || !input.action) {
    return new InvalidArgument("action", "a non-empty string is required");
  }
  const resource = entityRef(input.resource, "resource");
  if (resource instanceof InvalidArgument) return resource;
  const message: CheckRequestMessage = {
    principal,
    action: input.action,
    resource,
    approval_id: input.approval ?? "",
    request_id: input.requestId ?? "",
    resource_parents: [],
    credential: input.credential ?? defaults.credential ?? "",
  };
  if (input.context !== undefined) {
    const context = structOf(input.context, "context");
    if (context instanceof InvalidArgument) return context;
    message.context = context;
  }
  if (input.resourceAttributes !== undefined) {
    const attributes = structOf(input.resourceAttributes, "resourceAttributes");
    if (attributes instanceof InvalidArgument) return attributes;
    message.resource_attributes = attributes;
  }
  for (const [i, parent] of (input.resourceParents ?? []).entries()) {
    const converted = entityRef(parent, `resourceParents[${i}]`);
    if (converted instanceof InvalidArgument) return converted;
    message.resource_parents.push(converted);
  }
  return message;
}

export function nameOf(entity: unknown): string {
  const ref = entity as Partial<EntityRefMessage> | null | undefined;
  return ref?.type ? `${ref.type}::${ref.id ?? ""}` : "";
}

export function dateOf(timestamp: unknown): Date | undefined {
  const t = timestamp as Partial<TimestampMessage> | null | undefined;
  if (!t || t.seconds === undefined) return undefined;
  return new Date(Number(t.seconds) * 1000 + Math.floor((t.nanos ?? 0) / 1e6));
}

const strings = (value: unknown): string[] | undefined =>
  Array.isArray(value) && value.every((item) => typeof item === "string") ? value : undefined;

/** Warrant's answer as a `Decision`; anything but a well-formed answer is a deny. */
export function decisionOf(answer: unknown, requestId = ""): Decision {
  const a = answer as Record<string, unknown> | null | undefined;
  const reasons = strings(a?.reasons);
  const decisionId = typeof a?.decision_id === "string" ? a.decision_id : "";
  const verdict = a?.decision;
  if (!a || !reasons || !decisionId || (verdict !== "DECISION_ALLOW" && verdict !== "DECISION_DENY")) {
    return clientDenial(
      Reasons.malformedAnswer,
      `decision ${String(verdict)} with id ${JSON.stringify(decisionId)}`,
      decisionId,
      requestId,
    );
  }
  const allowed = verdict === "DECISION_ALLOW";
  const needed = a.approval_required as Record<string, unknown> | null | undefined;
  let approvalRequired: ApprovalRequired | undefined;
  if (!allowed && needed) {
    approvalRequired = {
      identity: nameOf(needed.identity),
      action: String(needed.action ?? ""),
      resource: nameOf(needed.resource),
      scope: nameOf(needed.scope),
      maxValiditySeconds: Number(needed.max_validity_seconds ?? 0),
    };
  }
  const provenance = a.provenance as { answered_from_cache?: unknown } | null | undefined;
  const errors = Array.isArray(a.errors)
    ? a.errors.map((e: { policy_id?: unknown; message?: unknown }) => ({
        policyId: String(e?.policy_id ?? ""),
        message: String(e?.message ?? ""),
      }))
    : [];
  return {
    allowed,
    reasons,
    decisionId,
    validUntil: dateOf(a.valid_until),
    policyVersion: typeof a.policy_version === "string" ? a.policy_version : "",
    requestId: typeof a.request_id === "string" ? a.request_id : requestId,
    answeredFromCache: provenance?.answered_from_cache === true,
    errors,
    ...(approvalRequired ? { approvalRequired } : {}),
  };
}

export function approvalRequestOf(record: unknown): ApprovalRequest {
  const r = (record ?? {}) as Record<string, unknown>;
  const text = (value: unknown) => (typeof value === "string" ? value : "");
  return {
    id: text(r.id),
    state: text(r.state),
    identity: nameOf(r.identity),
    action: text(r.action),
    resource: nameOf(r.resource),
    scope: nameOf(r.scope),
    approvalId: text(r.approval_id),
    reason: text(r.reason),
    decidedBy: nameOf(r.decided_by),
    expiresAt: dateOf(r.expires_at),
  };
}

/** The ledger id Warrant gives a refusal, from the trailing metadata. */
function refusedDecisionId(error: Partial<ServiceError>): string {
  const value = error.metadata?.get("x-warrant-decision-id")[0];
  return value === undefined ? "" : value.toString();
}

/** The deny a failed call becomes. */
export function denialOfError(error: unknown, requestId = ""): Decision {
  const e = error as Partial<ServiceError> | null | undefined;
  if (!e || typeof e !== "object" || typeof e.code !== "number") {
    return clientDenial(Reasons.transportError, String(error), "", requestId);
  }
  const reason =
    e.code === Status.DEADLINE_EXCEEDED
      ? Reasons.timeout
      : e.code === Status.UNAVAILABLE
        ? Reasons.unavailable
        : e.code === Status.INVALID_ARGUMENT || e.code === Status.RESOURCE_EXHAUSTED
          ? Reasons.refused
          : Reasons.transportError;
  const name = Status[e.code] ?? String(e.code);
  return clientDenial(reason, `${name}: ${e.details || e.message || ""}`, refusedDecisionId(e), requestId);
}
