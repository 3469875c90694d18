"""What a Check comes back as: a `Decision` that is an allow only when Warrant said so, and the
`Denied` error that `guard` and `requires` raise."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

# Reasons the client gives when it could not get Warrant's answer. Each is a deny.
TIMEOUT = "warrant-client:timeout"
UNAVAILABLE = "warrant-client:unavailable"
REFUSED = "warrant-client:refused"
MALFORMED_ANSWER = "warrant-client:malformed-answer"
TRANSPORT_ERROR = "warrant-client:transport-error"


@dataclasses.dataclass(frozen=True)
class ApprovalRequired:
    """On a deny: the approval that would allow the request (Warrant decided it again under one
    to find out). Pass the decision to `request_approval` to ask for exactly this."""

    identity: str
    action: str
    resource: str
    scope: str
    max_validity_seconds: int


@dataclasses.dataclass(frozen=True)
class ApprovalRequest:
    """An approval request as it stands: `pending` until a human approves it (then
    `approval_id` is the approval to present), rejects it (`reason`), or it expires."""

    id: str
    state: str
    identity: str
    action: str
    resource: str
    scope: str
    approval_id: str = ""
    reason: str = ""
    decided_by: str = ""
    expires_at: datetime.datetime | None = None

    @property
    def approved(self) -> bool:
        return self.state == "approved"


@dataclasses.dataclass(frozen=True)
class Decision:
    """One decision. `allowed` is True only for an allow Warrant gave; everything else (a deny,
    a timeout, an unreachable server, a refused request, an answer the client cannot read) is a
    deny with its reasons. `bool(decision)` is `allowed`."""

    allowed: bool
    # The determining policies' ids, Warrant's own `warrant:*` reasons, or the client's
    # `warrant-client:*` reason when there was no answer.
    reasons: tuple[str, ...]
    # The ledger record's id ("" when the server recorded nothing, e.g. it was unreachable).
    decision_id: str = ""
    # How long the answer may be relied on (None for the client's own denials).
    valid_until: datetime.datetime | None = None
    policy_version: str = ""
    request_id: str = ""
    # The evidence (`warrant.v1.Provenance`), when Warrant decided.
    provenance: Any = None
    # Policies that failed to evaluate, as (policy id, message).
    errors: tuple[tuple[str, str], ...] = ()
    # Why the client denied on its own (the server's message, the transport's error), if it did.
    failure: str | None = None
    # On a deny that a valid approval would lift: that approval.
    approval_required: ApprovalRequired | None = None

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def answered_from_cache(self) -> bool:
        return bool(self.provenance is not None and self.provenance.answered_from_cache)

    def describe(self) -> str:
        what = "allowed" if self.allowed else "denied"
        text = f"{what} ({', '.join(self.reasons) or 'no reason'})"
        if self.decision_id:
            text += f", decision {self.decision_id}"
        if self.failure:
            text += f": {self.failure}"
        return text


class Denied(PermissionError):
    """Raised by `guard` and `requires` when the answer is not an allow."""

    def __init__(self, decision: Decision):
        super().__init__(decision.describe())
        self.decision = decision


def client_denial(reason: str, failure: str, decision_id: str = "", request_id: str = "") -> Decision:
    return Decision(allowed=False, reasons=(reason,), decision_id=decision_id,
                    request_id=request_id, failure=failure)


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """One result of a search: an entity's id (or an action's name), and whether only a valid
    approval would allow it (asked for with `include_approvable`)."""
    id: str
    approvable: bool = False


class SearchFailed(Exception):
    """A search that could not be answered (refused, unreachable, out of time). Unlike a Check,
    a search has no deny to fall back to: a failure is never an empty answer."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
