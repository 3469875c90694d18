"""Between Python values and Warrant's messages: entity names, requests, answers, gRPC errors
and the caller's trace context. Nothing here talks to the network."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Union

import grpc
from google.protobuf import struct_pb2

from warrant_client._decision import (
    MALFORMED_ANSWER, REFUSED, TIMEOUT, TRANSPORT_ERROR, UNAVAILABLE, ApprovalRequest,
    ApprovalRequired, Decision, client_denial,
)
from warrant_client._proto.warrant.v1 import authorizer_pb2 as pb

# An entity: "Type::id" (a namespaced type too, "Ns::Type::id"; the id may be quoted), or a
# (type, id) pair.
Entity = Union[str, "tuple[str, str]"]


def entity_ref(value: Entity, field: str) -> pb.EntityRef:
    if isinstance(value, tuple) and len(value) == 2:
        return pb.EntityRef(type=str(value[0]), id=str(value[1]))
    if isinstance(value, str) and "::" in value:
        type_name, _, entity_id = value.rpartition("::")
        if entity_id.startswith('"') and entity_id.endswith('"') and len(entity_id) >= 2:
            entity_id = entity_id[1:-1]
        if type_name and entity_id:
            return pb.EntityRef(type=type_name, id=entity_id)
    raise ValueError(f"{field}: {value!r} is not an entity (\"Type::id\" or (type, id))")


def struct_of(values: Mapping[str, Any] | None, field: str) -> struct_pb2.Struct | None:
    if values is None:
        return None
    message = struct_pb2.Struct()
    try:
        message.update(dict(values))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{field}: {error}") from error
    return message


def check_request(
    principal: Entity,
    action: str,
    resource: Entity,
    *,
    approval: str | None = None,
    context: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    resource_parents: Sequence[Entity] = (),
    credential: str | None = None,
) -> pb.CheckRequest:
    """The Check message; a `ValueError` names the argument that cannot be sent."""
    if not isinstance(action, str) or not action:
        raise ValueError("action: a non-empty string is required")
    return pb.CheckRequest(
        principal=entity_ref(principal, "principal"),
        action=action,
        resource=entity_ref(resource, "resource"),
        context=struct_of(context, "context"),
        approval_id=approval or "",
        request_id=request_id or "",
        resource_attributes=struct_of(resource_attributes, "resource_attributes"),
        resource_parents=[entity_ref(p, f"resource_parents[{i}]")
                          for i, p in enumerate(resource_parents)],
        credential=credential or "",
    )


def decision_of(answer: Any, request_id: str = "") -> Decision:
    """Warrant's answer as a `Decision`; anything but a well-formed answer is a deny."""
    if not isinstance(answer, pb.CheckResponse):
        return client_denial(MALFORMED_ANSWER, f"not a CheckResponse: {type(answer).__name__}",
                             request_id=request_id)
    if answer.decision not in (pb.DECISION_ALLOW, pb.DECISION_DENY) or not answer.decision_id:
        return client_denial(MALFORMED_ANSWER,
                             f"decision {answer.decision} with id {answer.decision_id!r}",
                             decision_id=answer.decision_id, request_id=request_id)
    valid_until = None
    if answer.HasField("valid_until"):
        valid_until = answer.valid_until.ToDatetime(tzinfo=datetime.timezone.utc)
    advice = None
    if answer.HasField("approval_required") and answer.decision == pb.DECISION_DENY:
        needed = answer.approval_required
        advice = ApprovalRequired(
            identity=name_of(needed.identity), action=needed.action,
            resource=name_of(needed.resource), scope=name_of(needed.scope),
            max_validity_seconds=needed.max_validity_seconds)
    return Decision(
        allowed=answer.decision == pb.DECISION_ALLOW,
        reasons=tuple(answer.reasons),
        decision_id=answer.decision_id,
        valid_until=valid_until,
        policy_version=answer.policy_version,
        request_id=answer.request_id,
        provenance=answer.provenance if answer.HasField("provenance") else None,
        errors=tuple((e.policy_id, e.message) for e in answer.errors),
        approval_required=advice,
    )


def name_of(entity: pb.EntityRef) -> str:
    return f"{entity.type}::{entity.id}" if entity.type else ""


def approval_request_of(record: pb.ApprovalRequestRecord) -> ApprovalRequest:
    return ApprovalRequest(
        id=record.id, state=record.state, identity=name_of(record.identity),
        action=record.action, resource=name_of(record.resource), scope=name_of(record.scope),
        approval_id=record.approval_id, reason=record.reason,
        decided_by=name_of(record.decided_by),
        expires_at=(record.expires_at.ToDatetime(tzinfo=datetime.timezone.utc)
                    if record.HasField("expires_at") else None))


def approval_request_message(decision_or_advice: Any, justification: str, duration_seconds: int,
                             ticket: str | None, on_behalf_of: Entity | None,
                             credential: str | None = None) -> pb.RequestApprovalRequest:
    """The request for what a denial's `approval_required` names."""
    advice = getattr(decision_or_advice, "approval_required", decision_or_advice)
    if not isinstance(advice, ApprovalRequired):
        raise ValueError("decision: it names no approval that would allow it")
    return pb.RequestApprovalRequest(
        identity=entity_ref(advice.identity, "identity"), action=advice.action,
        resource=entity_ref(advice.resource, "resource"),
        scope=entity_ref(advice.scope, "scope"), justification=justification,
        ticket=ticket or "", duration_seconds=int(duration_seconds),
        on_behalf_of=entity_ref(on_behalf_of, "on_behalf_of") if on_behalf_of else None,
        decision_id=getattr(decision_or_advice, "decision_id", "") or "",
        credential=credential or "")


def refused_decision_id(error: grpc.RpcError) -> str:
    """The ledger id Warrant gives a refusal, from the trailing metadata."""
    try:
        trailing = error.trailing_metadata() or ()
    except Exception:  # an error raised before any answer carries none
        return ""
    for key, value in trailing:
        if key == "x-warrant-decision-id":
            return value if isinstance(value, str) else value.decode(errors="replace")
    return ""


def denial_of_error(error: Exception, request_id: str = "") -> Decision:
    """The deny a failed call becomes."""
    if not isinstance(error, grpc.RpcError) or not hasattr(error, "code"):
        return client_denial(TRANSPORT_ERROR, f"{type(error).__name__}: {error}",
                             request_id=request_id)
    code = error.code()
    details = error.details() or code.name
    reason = {
        grpc.StatusCode.DEADLINE_EXCEEDED: TIMEOUT,
        grpc.StatusCode.UNAVAILABLE: UNAVAILABLE,
        grpc.StatusCode.INVALID_ARGUMENT: REFUSED,
        grpc.StatusCode.RESOURCE_EXHAUSTED: REFUSED,
    }.get(code, TRANSPORT_ERROR)
    return client_denial(reason, f"{code.name}: {details}", refused_decision_id(error), request_id)


def trace_metadata() -> list[tuple[str, str]]:
    """`traceparent` (and `tracestate`) of the caller's current OpenTelemetry span, if there is
    one and OpenTelemetry is installed."""
    try:
        from opentelemetry import propagate
    except ImportError:
        return []
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key.lower(), value) for key, value in carrier.items()
            if key.lower() in ("traceparent", "tracestate")]


def search_request(
    searched: str,
    principal: Entity | None,
    action: str | None,
    resource: Entity | None,
    *,
    of_type: str | None = None,
    approval: str | None = None,
    context: Mapping[str, Any] | None = None,
    include_approvable: bool = False,
    page_size: int = 0,
    credential: str | None = None,
) -> pb.SearchRequest:
    """A search's first page: `searched` is "subjects", "resources" or "actions"; the searched
    part is left out (its type is `of_type`). A `ValueError` names the argument."""
    def typed(value: str | None, field: str) -> pb.EntityRef:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{field}: a type is required")
        return pb.EntityRef(type=value, id="")

    if searched == "subjects":
        principal_ref, resource_ref = typed(of_type, "of_type"), entity_ref(resource, "resource")
    elif searched == "resources":
        principal_ref, resource_ref = entity_ref(principal, "principal"), typed(of_type, "of_type")
    else:
        principal_ref, resource_ref = entity_ref(principal, "principal"), entity_ref(resource, "resource")
    if searched != "actions" and (not isinstance(action, str) or not action):
        raise ValueError("action: a non-empty string is required")
    if not isinstance(page_size, int) or page_size < 0:
        raise ValueError("page_size: a non-negative integer is required")
    return pb.SearchRequest(
        request=pb.CheckRequest(
            principal=principal_ref, action=action or "", resource=resource_ref,
            context=struct_of(context, "context"), approval_id=approval or "",
            credential=credential or ""),
        include_approvable=include_approvable, page_size=page_size)
