//! The native gRPC API, `warrant.v1.Authorizer`: Check and BatchCheck. Converts protobuf to the
//! engine's types (naming the field of anything malformed) and decisions back to protobuf.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost_types::value::Kind;
use tonic::{Request, Response, Status};

use crate::api::decider::Decider;
use crate::api::edge::with_decision_id;
use crate::clock::UnixMillis;
use crate::domain::{self, ContextValue, Effect, InvalidRequest, MAX_EXACT_INTEGER};
use crate::observability::metrics::Api;
use crate::observability::traces::{self, TraceHeaders};
use crate::proto;
use crate::proto::authorizer_server::Authorizer;
use tracing::Instrument as _;

/// One request decided, or refused (with what could be read of it) as malformed. Short-lived
/// and moved at once, so the size difference between the two does not matter.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Decided(domain::CheckRequest, domain::Decision),
    Refused(domain::CheckRequest, InvalidRequest),
}

pub struct AuthorizerService {
    decider: Arc<Decider>,
    batch_max_items: usize,
}

impl AuthorizerService {
    pub fn new(decider: Arc<Decider>, batch_max_items: usize) -> Self {
        AuthorizerService {
            decider,
            batch_max_items,
        }
    }

    /// Decides one request, or says why it cannot be decided.
    fn decide(&self, api: Api, request: proto::CheckRequest) -> Outcome {
        let readable = readable_request(&request);
        let request = match check_request_from_proto(request) {
            Ok(request) => request,
            Err(invalid) => {
                self.decider.metrics().invalid(api);
                return Outcome::Refused(readable, invalid);
            }
        };
        match self.decider.decide(api, &request) {
            Ok(decision) => Outcome::Decided(request, decision),
            Err(invalid) => Outcome::Refused(request, invalid),
        }
    }
}

#[tonic::async_trait]
impl Authorizer for AuthorizerService {
    // Calls are counted by their final status, with their latency, in `api::edge`.
    async fn check(
        &self,
        request: Request<proto::CheckRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        let caller = request.remote_addr().map(|addr| addr.to_string());
        let headers = TraceHeaders::from_metadata(request.metadata());
        let span = traces::api_span("check", &headers);
        let trace_id = traces::trace_id(&span, &headers);
        let decided = match span.in_scope(|| self.decide(Api::Check, request.into_inner())) {
            Outcome::Decided(request, decision) => (request, decision),
            Outcome::Refused(readable, invalid) => {
                return Err(self
                    .refuse_call(Api::Check, &readable, invalid, caller, trace_id)
                    .instrument(span)
                    .await);
            }
        };
        let mut decided = [decided];
        self.decider
            .record(Api::Check, &mut decided, caller, trace_id)
            .instrument(span)
            .await;
        let [(_, decision)] = decided;
        Ok(Response::new(check_response_to_proto(decision)))
    }

    async fn batch_check(
        &self,
        request: Request<proto::BatchCheckRequest>,
    ) -> Result<Response<proto::BatchCheckResponse>, Status> {
        let caller = request.remote_addr().map(|addr| addr.to_string());
        let headers = TraceHeaders::from_metadata(request.metadata());
        let span = traces::api_span("batch_check", &headers);
        let trace_id = traces::trace_id(&span, &headers);
        let checks = request.into_inner().checks;
        if checks.len() > self.batch_max_items {
            let invalid = InvalidRequest::new(
                "checks",
                format!(
                    "the batch has {} items; the most one batch may have is {}",
                    checks.len(),
                    self.batch_max_items
                ),
            );
            self.decider.metrics().invalid(Api::BatchCheck);
            let readable = checks.first().map(readable_request).unwrap_or_default();
            return Err(self
                .refuse_call(Api::BatchCheck, &readable, invalid, caller, trace_id)
                .instrument(span)
                .await);
        }
        use proto::batch_check_result::Result as Item;
        // Every item is decided or refused, and each of those is recorded in one append.
        let mut recorded = Vec::with_capacity(checks.len());
        let mut failed = Vec::new();
        span.in_scope(|| {
            for (index, check) in checks.into_iter().enumerate() {
                match self.decide(Api::BatchCheck, check) {
                    Outcome::Decided(request, decision) => recorded.push((request, decision)),
                    Outcome::Refused(readable, invalid) => {
                        let message = format!("checks[{index}].{invalid}");
                        failed.push((index, recorded.len(), message.clone()));
                        recorded.push(self.decider.refusal(
                            Api::BatchCheck,
                            &readable,
                            domain::reason::INVALID_REQUEST,
                            Some(message),
                        ));
                    }
                }
            }
        });
        self.decider
            .record(Api::BatchCheck, &mut recorded, caller, trace_id)
            .instrument(span)
            .await;
        let mut failed = failed.into_iter().peekable();
        let results = recorded
            .into_iter()
            .enumerate()
            .map(|(at, (_, decision))| {
                let item = match failed.next_if(|(_, slot, _)| *slot == at) {
                    Some((_, _, message)) => Item::Error(proto::ItemError {
                        code: tonic::Code::InvalidArgument as i32,
                        message,
                        decision_id: decision.decision_id.to_string(),
                    }),
                    None => Item::Response(check_response_to_proto(decision)),
                };
                proto::BatchCheckResult { result: Some(item) }
            })
            .collect();
        Ok(Response::new(proto::BatchCheckResponse { results }))
    }

    async fn ping(
        &self,
        _request: Request<proto::PingRequest>,
    ) -> Result<Response<proto::PingResponse>, Status> {
        Ok(Response::new(proto::PingResponse {}))
    }
}

impl AuthorizerService {
    /// Refuses a whole call as malformed: the refusal is recorded, and the status carries its
    /// decision id.
    async fn refuse_call(
        &self,
        api: Api,
        readable: &domain::CheckRequest,
        invalid: InvalidRequest,
        caller: Option<String>,
        trace_id: Option<String>,
    ) -> Status {
        let refusal = self
            .decider
            .refuse(
                api,
                readable,
                domain::reason::INVALID_REQUEST,
                Some(invalid.to_string()),
                caller,
                trace_id,
            )
            .await;
        with_decision_id(invalid_argument(invalid), &refusal.decision_id.to_string())
    }
}

/// What can be read of a request whatever is wrong with it: its names as given, no context.
fn readable_request(request: &proto::CheckRequest) -> domain::CheckRequest {
    let entity = |entity: &Option<proto::EntityRef>| {
        entity.as_ref().map_or_else(
            || domain::EntityRef::new("", ""),
            |e| domain::EntityRef::new(e.r#type.clone(), e.id.clone()),
        )
    };
    domain::CheckRequest {
        principal: entity(&request.principal),
        action: request.action.clone(),
        resource: entity(&request.resource),
        context: BTreeMap::new(),
        approval_id: non_empty(request.approval_id.clone()),
        request_id: non_empty(request.request_id.clone()),
    }
}

fn invalid_argument(error: InvalidRequest) -> Status {
    Status::invalid_argument(error.to_string())
}

/// Converts a protobuf `CheckRequest` into the engine's, naming the field of anything missing.
pub fn check_request_from_proto(
    request: proto::CheckRequest,
) -> Result<domain::CheckRequest, InvalidRequest> {
    let principal = request
        .principal
        .ok_or_else(|| InvalidRequest::new("principal", "required"))?;
    let resource = request
        .resource
        .ok_or_else(|| InvalidRequest::new("resource", "required"))?;
    if request.action.is_empty() {
        return Err(InvalidRequest::new("action", "required"));
    }
    let context = match request.context {
        Some(context) => struct_to_context(context, "context")?,
        None => BTreeMap::new(),
    };
    Ok(domain::CheckRequest {
        principal: domain::EntityRef::new(principal.r#type, principal.id),
        action: request.action,
        resource: domain::EntityRef::new(resource.r#type, resource.id),
        context,
        approval_id: non_empty(request.approval_id),
        request_id: non_empty(request.request_id),
    })
}

pub(crate) fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn struct_to_context(
    value: prost_types::Struct,
    path: &str,
) -> Result<BTreeMap<String, ContextValue>, InvalidRequest> {
    value
        .fields
        .into_iter()
        .map(|(key, value)| {
            let field = format!("{path}.{key}");
            let value = value_to_context(value, &field)?;
            Ok((key, value))
        })
        .collect()
}

fn value_to_context(value: prost_types::Value, path: &str) -> Result<ContextValue, InvalidRequest> {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Err(InvalidRequest::new(
            path,
            "null has no Cedar value; leave the key out instead",
        )),
        Some(Kind::BoolValue(b)) => Ok(ContextValue::Bool(b)),
        Some(Kind::StringValue(s)) => Ok(ContextValue::String(s)),
        Some(Kind::NumberValue(n)) => {
            if n.is_finite() && n.fract() == 0.0 && n.abs() <= MAX_EXACT_INTEGER as f64 {
                Ok(ContextValue::Long(n as i64))
            } else {
                Err(InvalidRequest::new(
                    path,
                    format!("{n} is not an integer; Cedar numbers are 64-bit integers"),
                ))
            }
        }
        Some(Kind::ListValue(list)) => list
            .values
            .into_iter()
            .enumerate()
            .map(|(index, item)| value_to_context(item, &format!("{path}[{index}]")))
            .collect::<Result<_, _>>()
            .map(ContextValue::Set),
        Some(Kind::StructValue(record)) => {
            struct_to_context(record, path).map(ContextValue::Record)
        }
    }
}

pub(crate) fn entity_ref(entity: &domain::EntityRef) -> proto::EntityRef {
    proto::EntityRef {
        r#type: entity.type_name.clone(),
        id: entity.id.clone(),
    }
}

pub(crate) fn uid_ref(uid: &cedar_policy::EntityUid) -> proto::EntityRef {
    entity_ref(&domain::EntityRef::from_uid(uid))
}

/// A protobuf timestamp in Unix milliseconds (sub-millisecond parts dropped).
pub(crate) fn unix_millis(at: &prost_types::Timestamp) -> UnixMillis {
    UnixMillis(at.seconds.saturating_mul(1_000) + i64::from(at.nanos) / 1_000_000)
}

pub(crate) fn timestamp(at: UnixMillis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.0.div_euclid(1_000),
        nanos: (at.0.rem_euclid(1_000) * 1_000_000) as i32,
    }
}

/// Converts an engine decision into the protobuf answer.
pub fn check_response_to_proto(decision: domain::Decision) -> proto::CheckResponse {
    let provenance = &decision.provenance;
    let identity = provenance.identity.as_deref();
    let owner = identity
        .and_then(|identity| identity.owner.as_ref())
        .map(|owner| proto::Owner {
            entity: Some(entity_ref(&owner.entity)),
            name: owner.name.clone().unwrap_or_default(),
            email: owner.email.clone().unwrap_or_default(),
        });
    let approval = provenance.approval.as_ref().map(|evidence| {
        let approval = &evidence.approval;
        proto::ApprovalEvidence {
            id: approval.uid.id().unescaped().to_owned(),
            ticket: approval.ticket.clone(),
            approver: Some(entity_ref(&approval.approver)),
            subject: Some(uid_ref(&approval.subject)),
            actions: approval.actions.clone(),
            scope: Some(entity_ref(&approval.scope)),
            not_before: Some(timestamp(approval.not_before)),
            expires_at: Some(timestamp(approval.expires_at)),
            revoked: approval.revoked,
            playbook: approval.playbook.clone().unwrap_or_default(),
            valid_at_decision: evidence.valid_at_decision,
            replay_suspected: evidence.replay_suspected,
            max_uses: approval.max_uses.unwrap_or(0),
            use_number: evidence.use_number.unwrap_or(0),
        }
    });
    let decision_value = match decision.effect {
        Effect::Allow => proto::Decision::Allow,
        Effect::Deny => proto::Decision::Deny,
    };
    proto::CheckResponse {
        decision: decision_value as i32,
        decision_id: decision.decision_id.to_string(),
        reasons: decision.reasons,
        errors: decision
            .errors
            .into_iter()
            .map(|error| proto::PolicyError {
                policy_id: error.policy_id,
                message: error.message,
            })
            .collect(),
        provenance: Some(proto::Provenance {
            principal: Some(entity_ref(&provenance.principal)),
            owner,
            principal_status: identity
                .and_then(|identity| identity.status.clone())
                .unwrap_or_default(),
            approval,
            resource: Some(entity_ref(&provenance.resource)),
            resource_scopes: provenance.resource_scopes.iter().map(entity_ref).collect(),
            decided_at: Some(timestamp(provenance.decided_at)),
            facts_version: provenance.facts_version.to_string(),
            answered_from_cache: provenance.answered_from_cache,
            evaluation_id: provenance.evaluation_id.to_string(),
        }),
        valid_until: Some(timestamp(decision.valid_until)),
        policy_version: decision.policy_version.to_string(),
        request_id: decision.request_id.unwrap_or_default(),
    }
}
