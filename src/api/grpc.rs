//! The native gRPC API, `warrant.v1.Authorizer`: Check and BatchCheck. Converts protobuf to the
//! engine's types (naming the field of anything malformed) and decisions back to protobuf.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use prost_types::value::Kind;
use tonic::{Request, Response, Status};

use crate::api::decider::Decider;
use crate::clock::UnixMillis;
use crate::engine::{self, ContextValue, Effect, InvalidRequest};
use crate::proto;
use crate::proto::authorizer_server::Authorizer;
use crate::telemetry::Api;
use crate::traces::{self, TraceHeaders};
use tracing::Instrument as _;

/// Largest integer a protobuf `Value` (a double) carries exactly.
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

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

    fn decide(
        &self,
        api: Api,
        request: proto::CheckRequest,
    ) -> Result<(engine::CheckRequest, engine::Decision), Status> {
        let request = check_request_from_proto(request)
            .inspect_err(|_| self.decider.metrics().invalid(api))
            .map_err(invalid_argument)?;
        let decision = self
            .decider
            .decide(api, &request)
            .map_err(invalid_argument)?;
        Ok((request, decision))
    }
}

#[tonic::async_trait]
impl Authorizer for AuthorizerService {
    async fn check(
        &self,
        request: Request<proto::CheckRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        let answer = self.check_one(request).await;
        self.decider
            .metrics()
            .answered(Api::Check, status_code(&answer));
        answer
    }

    async fn batch_check(
        &self,
        request: Request<proto::BatchCheckRequest>,
    ) -> Result<Response<proto::BatchCheckResponse>, Status> {
        let answer = self.check_batch(request).await;
        self.decider
            .metrics()
            .answered(Api::BatchCheck, status_code(&answer));
        answer
    }

    async fn ping(
        &self,
        _request: Request<proto::PingRequest>,
    ) -> Result<Response<proto::PingResponse>, Status> {
        Ok(Response::new(proto::PingResponse {}))
    }
}

fn status_code<T>(answer: &Result<T, Status>) -> tonic::Code {
    answer
        .as_ref()
        .map_or_else(Status::code, |_| tonic::Code::Ok)
}

impl AuthorizerService {
    async fn check_one(
        &self,
        request: Request<proto::CheckRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        let started = Instant::now();
        let caller = request.remote_addr().map(|addr| addr.to_string());
        let headers = TraceHeaders::from_metadata(request.metadata());
        let span = traces::api_span("check", &headers);
        let trace_id = traces::trace_id(&span, &headers);
        let decided = span.in_scope(|| self.decide(Api::Check, request.into_inner()))?;
        let mut decided = [decided];
        self.decider
            .record(Api::Check, &mut decided, caller, trace_id)
            .instrument(span)
            .await;
        let [(_, decision)] = decided;
        self.decider
            .metrics()
            .latency(Api::Check, started.elapsed());
        Ok(Response::new(check_response_to_proto(decision)))
    }

    async fn check_batch(
        &self,
        request: Request<proto::BatchCheckRequest>,
    ) -> Result<Response<proto::BatchCheckResponse>, Status> {
        let started = Instant::now();
        let caller = request.remote_addr().map(|addr| addr.to_string());
        let headers = TraceHeaders::from_metadata(request.metadata());
        let span = traces::api_span("batch_check", &headers);
        let trace_id = traces::trace_id(&span, &headers);
        let checks = request.into_inner().checks;
        if checks.len() > self.batch_max_items {
            return Err(Status::invalid_argument(format!(
                "checks: the batch has {} items; the most one batch may have is {}",
                checks.len(),
                self.batch_max_items
            )));
        }
        use proto::batch_check_result::Result as Item;
        let mut decided = Vec::with_capacity(checks.len());
        let mut failed = Vec::new();
        span.in_scope(|| {
            for (index, check) in checks.into_iter().enumerate() {
                match self.decide(Api::BatchCheck, check) {
                    Ok(done) => decided.push(done),
                    Err(status) => failed.push((index, status)),
                }
            }
        });
        self.decider
            .record(Api::BatchCheck, &mut decided, caller, trace_id)
            .instrument(span)
            .await;
        self.decider
            .metrics()
            .latency(Api::BatchCheck, started.elapsed());
        let mut answers = decided
            .into_iter()
            .map(|(_, decision)| check_response_to_proto(decision));
        let mut failed = failed.into_iter().peekable();
        let results = (0..answers.len() + failed.len())
            .map(|index| {
                let item = match failed.next_if(|(at, _)| *at == index) {
                    Some((_, status)) => Item::Error(proto::ItemError {
                        code: status.code() as i32,
                        message: format!("checks[{index}].{}", status.message()),
                    }),
                    None => Item::Response(answers.next().expect("one answer per decided item")),
                };
                proto::BatchCheckResult { result: Some(item) }
            })
            .collect();
        Ok(Response::new(proto::BatchCheckResponse { results }))
    }
}

fn invalid_argument(error: InvalidRequest) -> Status {
    Status::invalid_argument(error.to_string())
}

/// Converts a protobuf `CheckRequest` into the engine's, naming the field of anything missing.
pub fn check_request_from_proto(
    request: proto::CheckRequest,
) -> Result<engine::CheckRequest, InvalidRequest> {
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
    Ok(engine::CheckRequest {
        principal: engine::EntityRef::new(principal.r#type, principal.id),
        action: request.action,
        resource: engine::EntityRef::new(resource.r#type, resource.id),
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
            if n.is_finite() && n.fract() == 0.0 && n.abs() <= MAX_EXACT_INTEGER {
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

pub(crate) fn entity_ref(entity: &engine::EntityRef) -> proto::EntityRef {
    proto::EntityRef {
        r#type: entity.type_name.clone(),
        id: entity.id.clone(),
    }
}

pub(crate) fn uid_ref(uid: &cedar_policy::EntityUid) -> proto::EntityRef {
    entity_ref(&engine::EntityRef::from_uid(uid))
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
pub fn check_response_to_proto(decision: engine::Decision) -> proto::CheckResponse {
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
