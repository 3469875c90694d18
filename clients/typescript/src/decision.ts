/**
 * What a Check comes back as: a `Decision` that is an allow only when Warrant said so. Every
 * other outcome (a deny, a timeout, an unreachable server, a refused request, an answer the
 * client cannot read, arguments that make no request) is a deny with its reasons: nothing here
 * throws for them, so no `catch` can turn a failure into an allow.
 */

/** Reasons the client gives when it could not get Warrant's answer. Each is a deny. */
export const Reasons = {
  timeout: "warrant-client:timeout",
  unavailable: "warrant-client:unavailable",
  refused: "warrant-client:refused",
  malformedAnswer: "warrant-client:malformed-answer",
  transportError: "warrant-client:transport-error",
  invalidRequest: "warrant-client:invalid-request",
} as const;

/** On a deny: the approval that would allow the request (Warrant decided it again under one). */
export interface ApprovalRequired {
  identity: string;
  action: string;
  resource: string;
  scope: string;
  maxValiditySeconds: number;
}

/** One decision. `allowed` is true only for an allow Warrant gave. */
export interface Decision {
  readonly allowed: boolean;
  /** The determining policies' ids, Warrant's `warrant:*` reasons, or the client's own. */
  readonly reasons: readonly string[];
  /** The ledger record's id ("" when the server recorded nothing). */
  readonly decisionId: string;
  /** How long the answer may be relied on (undefined for the client's own denials). */
  readonly validUntil?: Date;
  readonly policyVersion: string;
  readonly requestId: string;
  /** Whether Warrant answered from its decision cache. */
  readonly answeredFromCache: boolean;
  /** Policies that failed to evaluate. */
  readonly errors: readonly { policyId: string; message: string }[];
  /** Why the client denied on its own, if it did. */
  readonly failure?: string;
  /** On a deny that a valid approval would lift: that approval. */
  readonly approvalRequired?: ApprovalRequired;
}

/** An approval request as it stands. */
export interface ApprovalRequest {
  id: string;
  /** pending, approved, rejected or expired. */
  state: string;
  identity: string;
  action: string;
  resource: string;
  scope: string;
  /** The approval an approved request became: present it with the next check. */
  approvalId: string;
  reason: string;
  decidedBy: string;
  expiresAt?: Date;
}

/** A deny the client gives on its own. */
export function clientDenial(
  reason: string,
  failure: string,
  decisionId = "",
  requestId = "",
): Decision {
  return {
    allowed: false,
    reasons: [reason],
    decisionId,
    policyVersion: "",
    requestId,
    answeredFromCache: false,
    errors: [],
    failure,
  };
}

/** A decision in words: "denied (payment-needs-approval), decision 01...". */
export function describe(decision: Decision): string {
  let text = `${decision.allowed ? "allowed" : "denied"} (${decision.reasons.join(", ") || "no reason"})`;
  if (decision.decisionId) text += `, decision ${decision.decisionId}`;
  if (decision.failure) text += `: ${decision.failure}`;
  return text;
}

/** Thrown by `guard` when the answer is not an allow. */
export class Denied extends Error {
  readonly decision: Decision;
  constructor(decision: Decision) {
    super(describe(decision));
    this.name = "Denied";
    this.decision = decision;
  }
}
