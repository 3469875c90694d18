//! The AuthZEN Authorization API 1.0 over HTTP (JSON; HTTP/1.1 and HTTP/2): `POST
//! /access/v1/evaluation`, `POST /access/v1/evaluations` (defaults, per-item overrides and the
//! three evaluation semantics) and `GET /.well-known/authzen-configuration`. Turns each
//! evaluation into an engine request (subject -> principal, action name -> action, resource ->
//! resource; `properties` and `context` become caller-asserted context attributes, only those
//! the action's context declares) and decisions into AuthZEN's answer. `access_request` adds
//! the Access Request and Approval Profile on the same listener.

pub mod access_request;
pub mod search;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq as _;

use crate::api::decider::Decider;
use crate::api::edge::CallGuard;
use crate::observability::metrics::Api;
use crate::observability::traces::{self, TraceHeaders};
use access_request::{AccessRequests, REQUESTS_PATH};
use tracing::Instrument as _;
use warrant_domain::{
    ContextValue, Effect, EntityRef, InvalidRequest, RESERVED_CONTEXT_KEYS, Reason,
};
use warrant_policy::context_shape::{ContextShape, Kind};

pub const EVALUATION_PATH: &str = "/access/v1/evaluation";
pub const EVALUATIONS_PATH: &str = "/access/v1/evaluations";
pub const METADATA_PATH: &str = "/.well-known/authzen-configuration";
/// The context key whose string value is the presented approval's id.
pub const APPROVAL_CONTEXT_KEY: &str = "approval_id";
/// The context key whose string is the subject's credential (a JWT Warrant verifies); it never
/// reaches the Cedar context.
pub const CREDENTIAL_CONTEXT_KEY: &str = "credential";

/// How an AuthZEN endpoint is served.
/// What an AuthZEN answer's `context` holds for a decided evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum AnswerContext {
    /// `decision_id` and `reasons`.
    #[default]
    Full,
    /// None: the answer is `{"decision": ...}` alone, as the working group's interop runners
    /// compare it. The decision ids are in the `x-warrant-decision-id` header either way.
    DecisionOnly,
}

pub struct AuthZen {
    decider: Arc<Decider>,
    answer_context: AnswerContext,
    /// When set, `/access/*` calls need `Authorization: Bearer <token>`.
    token: Option<String>,
    /// The PDP's identifier in the metadata; from the `Host` header when not set.
    base_url: Option<String>,
    max_evaluations: usize,
    /// The access request profile's endpoints, when the ledger is on (denials are resolved
    /// there).
    access_requests: Option<AccessRequests>,
    searcher: Arc<crate::api::search::Searcher>,
}

impl AuthZen {
    pub fn new(
        decider: Arc<Decider>,
        searcher: Arc<crate::api::search::Searcher>,
        token: Option<String>,
        base_url: Option<String>,
        max_evaluations: usize,
        answer_context: AnswerContext,
        access_requests: Option<AccessRequests>,
    ) -> Self {
        AuthZen {
            decider,
            answer_context,
            token,
            base_url: base_url.map(|url| url.trim_end_matches('/').to_owned()),
            max_evaluations,
            access_requests,
            searcher,
        }
    }

    pub(super) fn access_requests(&self) -> Option<&AccessRequests> {
        self.access_requests.as_ref()
    }

    pub(super) fn metrics(&self) -> &crate::observability::metrics::Metrics {
        self.decider.metrics()
    }

    /// The PDP's URL: as configured, or from the request's `Host` header.
    pub(super) fn base_url(&self, headers: &HeaderMap) -> String {
        self.base_url.clone().unwrap_or_else(|| {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        })
    }
}

/// The router for the AuthZEN listener.
pub fn router(authzen: Arc<AuthZen>, max_body_bytes: usize) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(EVALUATION_PATH, post(evaluation))
        .route(EVALUATIONS_PATH, post(evaluations))
        .route(METADATA_PATH, get(metadata))
        .route(search::SUBJECT_PATH, post(search::subject))
        .route(search::RESOURCE_PATH, post(search::resource))
        .route(search::ACTION_PATH, post(search::action))
        .route(REQUESTS_PATH, post(access_request::submit))
        .route(access_request::TASK_PATH, get(access_request::status))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .with_state(authzen)
}

/// The three evaluation semantics of the Access Evaluations API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

/// One evaluation as asked (after defaults are applied).
pub(super) struct Evaluation {
    pub(super) subject: Map<String, Value>,
    pub(super) action: Map<String, Value>,
    pub(super) resource: Map<String, Value>,
    pub(super) context: Map<String, Value>,
}

/// A request refused whole: HTTP 4xx with a message that names the field, and the id of the
/// refusal's record once it has one.
pub(super) struct Refused(StatusCode, String, Option<String>);

impl Refused {
    fn bad(message: impl Into<String>) -> Self {
        Refused(StatusCode::BAD_REQUEST, message.into(), None)
    }

    pub(super) fn message(&self) -> &str {
        &self.1
    }
}

/// An evaluation that could not be decided: why (naming the field), and its refusal's id.
struct ItemRefusal {
    message: String,
    decision_id: String,
}

fn respond(status: StatusCode, body: Value, request_id: Option<&HeaderValue>) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Some(id) = request_id {
        response.headers_mut().insert("x-request-id", id.clone());
    }
    response
}

fn refuse(refused: Refused, request_id: Option<&HeaderValue>) -> Response {
    let mut response = (
        refused.0,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        refused.1,
    )
        .into_response();
    if let Some(id) = request_id {
        response.headers_mut().insert("x-request-id", id.clone());
    }
    if let Some(decision_id) = refused.2.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response
            .headers_mut()
            .insert(crate::api::envoy::DECISION_ID_HEADER, decision_id);
    }
    response
}

impl AuthZen {
    pub(super) fn authenticate(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let matches = presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.as_bytes())));
        if matches {
            Ok(())
        } else {
            tracing::warn!("AuthZEN call refused: missing or wrong bearer token");
            Err(Refused(
                StatusCode::UNAUTHORIZED,
                "Authorization: a valid bearer token is required".to_owned(),
                None,
            ))
        }
    }

    /// Decides the evaluations in order under `semantic`, records them (an evaluation that
    /// cannot be decided is recorded as a refusal), and answers each: its decision, or why it
    /// could not be decided (a message naming the field, prefixed with `at(i)`) and its
    /// refusal's id.
    async fn decide(
        &self,
        evaluations: Vec<Result<Evaluation, String>>,
        semantic: Semantic,
        request_id: Option<String>,
        caller: warrant_domain::Caller,
        trace: &TraceHeaders,
        at: impl Fn(usize) -> String,
    ) -> Vec<Result<Value, ItemRefusal>> {
        let span = traces::api_span("authzen", trace);
        let trace_id = traces::trace_id(&span, trace);
        let snapshot = self.decider.engine().snapshot();
        // Each answer: its index in `decided`, and the error if it was refused.
        let mut answers: Vec<(usize, Option<String>)> = Vec::new();
        let mut decided = Vec::new();
        for (i, evaluation) in evaluations.into_iter().enumerate() {
            let mut readable = warrant_domain::CheckRequest {
                request_id: request_id.clone(),
                ..warrant_domain::CheckRequest::default()
            };
            let outcome = evaluation.and_then(|evaluation| {
                readable = readable_request(&evaluation, &request_id);
                let request = warrant_domain::CheckRequest {
                    caller_identity: caller.identity.clone(),
                    ..engine_request(&evaluation, snapshot.policies.contexts(), &request_id)
                        .map_err(|e| format!("{}{}", at(i), authzen_field(e)))?
                };
                readable = request.clone();
                let decision = span
                    .in_scope(|| self.decider.decide(Api::AuthZen, &request))
                    .map_err(|e| format!("{}{}", at(i), authzen_field(e)))?;
                Ok((request, decision))
            });
            let allowed = match outcome {
                Ok(pair) => {
                    let allowed = pair.1.effect == Effect::Allow;
                    answers.push((decided.len(), None));
                    decided.push(pair);
                    allowed
                }
                Err(message) => {
                    answers.push((decided.len(), Some(message.clone())));
                    decided.push(self.decider.refusal(
                        Api::AuthZen,
                        &readable,
                        warrant_domain::Reason::InvalidRequest.as_str(),
                        Some(message),
                    ));
                    false
                }
            };
            match (semantic, allowed) {
                (Semantic::DenyOnFirstDeny, false) | (Semantic::PermitOnFirstPermit, true) => {
                    break;
                }
                _ => {}
            }
        }
        // On record before answered; a ledger failure turns them into denies.
        self.decider
            .record(Api::AuthZen, &mut decided, caller, trace_id)
            .instrument(span)
            .await;
        answers
            .into_iter()
            .map(|(index, refused)| {
                let decision = &decided[index].1;
                match refused {
                    Some(message) => Err(ItemRefusal {
                        message,
                        decision_id: decision.decision_id.to_string(),
                    }),
                    None => {
                        let mut context = json!({
                            "decision_id": decision.decision_id.to_string(),
                            "reasons": decision.reasons,
                        });
                        if let Some(advice) = &decision.approval_required {
                            context["advice"] = json!([{
                                "id": "approval_required",
                                "attributes": warrant_ledger::ApprovalAdviceRecord::from(advice),
                            }]);
                        }
                        // The approval an allow used, and until when (the access request
                        // profile's re-evaluation answer).
                        if decision.effect == Effect::Allow
                            && let Some(evidence) = &decision.provenance.approval
                        {
                            context["approval"] = json!({
                                "id": evidence.approval.uid.id().unescaped(),
                                "approved_until": evidence.approval.expires_at.to_rfc3339(),
                            });
                        }
                        if let Some(requests) = &self.access_requests {
                            requests.denial_context(&decided[index].0, decision, &mut context);
                        }
                        Ok(json!({
                            "decision": decision.effect == Effect::Allow,
                            "context": context,
                        }))
                    }
                }
            })
            .collect()
    }

    /// Decides one evaluation and answers it alone: one that cannot be decided is refused whole
    /// (400, with its refusal's id), not answered as a deny.
    async fn decide_one(
        &self,
        evaluation: Evaluation,
        request_id: Option<String>,
        caller: warrant_domain::Caller,
        trace: &TraceHeaders,
    ) -> Result<Value, Refused> {
        let mut answers = self
            .decide(
                vec![Ok(evaluation)],
                Semantic::ExecuteAll,
                request_id,
                caller,
                trace,
                |_| String::new(),
            )
            .await;
        match answers.pop() {
            Some(Ok(answer)) => Ok(answer),
            Some(Err(refused)) => Err(Refused(
                StatusCode::BAD_REQUEST,
                refused.message,
                Some(refused.decision_id),
            )),
            None => Err(Refused::bad("no answer")),
        }
    }

    /// Records a refusal of the whole call (one that has no record yet), with what could be
    /// read of its request.
    async fn record_refusal(
        &self,
        refused: &mut Refused,
        readable: &warrant_domain::CheckRequest,
        caller: warrant_domain::Caller,
        trace: &TraceHeaders,
    ) {
        if refused.2.is_some() {
            return;
        }
        let why = if refused.0 == StatusCode::UNAUTHORIZED {
            Reason::Unauthenticated.as_str()
        } else if refused.0.is_server_error() {
            Reason::InternalError.as_str()
        } else {
            warrant_domain::Reason::InvalidRequest.as_str()
        };
        let span = traces::api_span("authzen", trace);
        let trace_id = traces::trace_id(&span, trace);
        let decision = self
            .decider
            .refuse(
                Api::AuthZen,
                readable,
                why,
                Some(refused.1.clone()),
                caller,
                trace_id,
            )
            .instrument(span)
            .await;
        refused.2 = Some(decision.decision_id.to_string());
    }

    /// Records a refusal that has no record yet, counts the call's time and sends its answer,
    /// echoing the request id.
    async fn finish(
        &self,
        mut guard: CallGuard,
        mut answer: Result<Value, Refused>,
        request_id: Option<&HeaderValue>,
        body: &[u8],
        peer: crate::listeners::PeerInfo,
        trace: &TraceHeaders,
    ) -> Response {
        if let Err(refused) = &mut answer {
            let mut readable = readable_body(body);
            readable.request_id = request_id.and_then(|v| v.to_str().ok()).map(str::to_owned);
            self.record_refusal(refused, &readable, peer.caller(), trace)
                .await;
        }
        guard.answered(match &answer {
            Ok(_) => tonic::Code::Ok,
            Err(Refused(StatusCode::UNAUTHORIZED, ..)) => tonic::Code::Unauthenticated,
            Err(Refused(StatusCode::SERVICE_UNAVAILABLE, ..)) => tonic::Code::Unavailable,
            Err(_) => tonic::Code::InvalidArgument,
        });
        match answer {
            Ok(mut body) => {
                let decision_ids = self.decision_ids(&mut body);
                let mut response = respond(StatusCode::OK, body, request_id);
                if !decision_ids.is_empty()
                    && let Ok(ids) = HeaderValue::from_str(&decision_ids.join(","))
                {
                    response
                        .headers_mut()
                        .insert(crate::api::envoy::DECISION_ID_HEADER, ids);
                }
                response
            }
            Err(refused) => refuse(refused, request_id),
        }
    }
}

impl AuthZen {
    /// The decision id of every answer in `body`, in order (one for `/evaluation`, one per item
    /// for `/evaluations`); with `AnswerContext::DecisionOnly`, each decided answer's `context`
    /// is removed (a refused item keeps its `context.error`).
    fn decision_ids(&self, body: &mut Value) -> Vec<String> {
        let strip = self.answer_context == AnswerContext::DecisionOnly;
        let mut ids = Vec::new();
        let mut visit = |answer: &mut Value| {
            let Some(object) = answer.as_object_mut() else {
                return;
            };
            let context = object.get("context");
            if let Some(id) = context
                .and_then(|c| c.get("decision_id"))
                .and_then(Value::as_str)
            {
                ids.push(id.to_owned());
            }
            if strip && context.is_some_and(|c| c.get("error").is_none()) {
                object.remove("context");
            }
        };
        match body.get_mut("evaluations").and_then(Value::as_array_mut) {
            Some(items) => items.iter_mut().for_each(&mut visit),
            None => visit(body),
        }
        ids
    }
}

async fn evaluation(
    State(authzen): State<Arc<AuthZen>>,
    peer: Option<axum::Extension<crate::listeners::PeerInfo>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Counted in flight, and once when answered, or as CANCELLED if the client goes away.
    let guard = CallGuard::start(Arc::clone(&authzen.decider), Api::AuthZen, None);
    // Put there by the listener; a router driven without one has an unknown peer.
    let peer = peer.map(|axum::Extension(peer)| peer).unwrap_or_default();
    let request_id = headers.get("x-request-id");
    let trace = TraceHeaders::from_http(&headers);
    let answer = async {
        authzen.authenticate(&headers)?;
        let body = json_object(&body)?;
        let evaluation = parse_evaluation(&body, &Map::new(), "").map_err(Refused::bad)?;
        let id = request_id.and_then(|v| v.to_str().ok()).map(str::to_owned);
        // One evaluation: one that cannot be decided is refused whole (400), not a deny.
        authzen
            .decide_one(evaluation, id, peer.caller(), &trace)
            .await
    }
    .await;
    authzen
        .finish(guard, answer, request_id, &body, peer.clone(), &trace)
        .await
}

async fn evaluations(
    State(authzen): State<Arc<AuthZen>>,
    peer: Option<axum::Extension<crate::listeners::PeerInfo>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Counted in flight, and once when answered, or as CANCELLED if the client goes away.
    let guard = CallGuard::start(Arc::clone(&authzen.decider), Api::AuthZen, None);
    // Put there by the listener; a router driven without one has an unknown peer.
    let peer = peer.map(|axum::Extension(peer)| peer).unwrap_or_default();
    let request_id = headers.get("x-request-id");
    let trace = TraceHeaders::from_http(&headers);
    let answer = async {
        authzen.authenticate(&headers)?;
        let body = json_object(&body)?;
        let semantic = match body.get("options").map(|o| o.get("evaluations_semantic")) {
            None | Some(None) => Semantic::ExecuteAll,
            Some(Some(Value::String(name))) => match name.as_str() {
                "execute_all" => Semantic::ExecuteAll,
                "deny_on_first_deny" => Semantic::DenyOnFirstDeny,
                "permit_on_first_permit" => Semantic::PermitOnFirstPermit,
                other => {
                    return Err(Refused::bad(format!(
                        "options.evaluations_semantic: {} is not one of execute_all, \
                         deny_on_first_deny, permit_on_first_permit",
                        warrant_engine::limits::quote(other)
                    )));
                }
            },
            Some(Some(_)) => {
                return Err(Refused::bad(
                    "options.evaluations_semantic: must be a string",
                ));
            }
        };
        let id = request_id.and_then(|v| v.to_str().ok()).map(str::to_owned);
        let items = match body.get("evaluations") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(_) => return Err(Refused::bad("evaluations: must be an array")),
        };
        if items.is_empty() {
            // No evaluations: the request is a single evaluation, answered as one.
            let evaluation = parse_evaluation(&body, &Map::new(), "").map_err(Refused::bad)?;
            return authzen
                .decide_one(evaluation, id, peer.caller(), &trace)
                .await;
        }
        if items.len() > authzen.max_evaluations {
            return Err(Refused::bad(format!(
                "evaluations: {} items; at most {} in one request",
                items.len(),
                authzen.max_evaluations
            )));
        }
        let defaults = body;
        let parsed = items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(item) => {
                    parse_evaluation(item, &defaults, &format!("evaluations[{i}]."))
                }
                _ => Err(format!("evaluations[{i}]: must be an object")),
            })
            .collect();
        let answers: Vec<Value> = authzen
            .decide(parsed, semantic, id, peer.caller(), &trace, |i| {
                format!("evaluations[{i}].")
            })
            .await
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|refused| {
                    json!({
                        "decision": false,
                        "context": {
                            "decision_id": refused.decision_id,
                            "error": {"status": 400, "message": refused.message},
                        },
                    })
                })
            })
            .collect();
        Ok(json!({ "evaluations": answers }))
    }
    .await;
    authzen
        .finish(guard, answer, request_id, &body, peer.clone(), &trace)
        .await
}

async fn metadata(State(authzen): State<Arc<AuthZen>>, headers: HeaderMap) -> Response {
    let base = authzen.base_url(&headers);
    let mut metadata = json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}{EVALUATION_PATH}"),
        "access_evaluations_endpoint": format!("{base}{EVALUATIONS_PATH}"),
        "search_subject_endpoint": format!("{base}{}", search::SUBJECT_PATH),
        "search_resource_endpoint": format!("{base}{}", search::RESOURCE_PATH),
        "search_action_endpoint": format!("{base}{}", search::ACTION_PATH),
        // A denied decision's context may carry advice: `approval_required`, the approval
        // that would allow it.
        "decision_advice_supported": ["approval_required"],
    });
    if authzen.access_requests.is_some() {
        metadata["access_request_endpoint"] = json!(format!("{base}{REQUESTS_PATH}"));
        metadata["capabilities"] = json!([access_request::CAPABILITY]);
    }
    respond(StatusCode::OK, metadata, headers.get("x-request-id"))
}

pub(super) fn json_object(body: &[u8]) -> Result<Map<String, Value>, Refused> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Refused::bad("body: must be a JSON object")),
        Err(error) => Err(Refused::bad(format!("body: not JSON: {error}"))),
    }
}

/// An evaluation from `item`, each of subject, action, resource and context taken from
/// `defaults` where `item` lacks it (an item's own value replaces the default whole).
pub(super) fn parse_evaluation(
    item: &Map<String, Value>,
    defaults: &Map<String, Value>,
    at: &str,
) -> Result<Evaluation, String> {
    let part = |name: &str| -> Result<Option<Map<String, Value>>, String> {
        match item.get(name).or_else(|| defaults.get(name)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(object)) => Ok(Some(object.clone())),
            Some(_) => Err(format!("{at}{name}: must be an object")),
        }
    };
    let required = |name: &str| -> Result<Map<String, Value>, String> {
        part(name)?.ok_or_else(|| {
            if at.is_empty() {
                format!("{name}: required")
            } else {
                format!("{at}{name}: required (in the evaluation or as a top-level default)")
            }
        })
    };
    let subject = required("subject")?;
    let action = required("action")?;
    let resource = required("resource")?;
    for (name, object, keys) in [
        ("subject", &subject, &["type", "id"][..]),
        ("action", &action, &["name"][..]),
        ("resource", &resource, &["type", "id"][..]),
    ] {
        for key in keys {
            match object.get(*key) {
                Some(Value::String(text)) if !text.is_empty() => {}
                Some(Value::String(_)) | None | Some(Value::Null) => {
                    return Err(format!("{at}{name}.{key}: required"));
                }
                Some(_) => return Err(format!("{at}{name}.{key}: must be a string")),
            }
        }
        match object.get("properties") {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(_) => return Err(format!("{at}{name}.properties: must be an object")),
        }
    }
    Ok(Evaluation {
        subject,
        action,
        resource,
        context: part("context")?.unwrap_or_default(),
    })
}

fn text<'a>(object: &'a Map<String, Value>, key: &str) -> &'a str {
    object.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// What can be read of an evaluation whatever is wrong with it: its names, no context.
fn readable_request(
    evaluation: &Evaluation,
    request_id: &Option<String>,
) -> warrant_domain::CheckRequest {
    warrant_domain::CheckRequest {
        principal: EntityRef::new(
            text(&evaluation.subject, "type"),
            text(&evaluation.subject, "id"),
        ),
        action: text(&evaluation.action, "name").to_owned(),
        resource: EntityRef::new(
            text(&evaluation.resource, "type"),
            text(&evaluation.resource, "id"),
        ),
        request_id: request_id.clone(),
        ..warrant_domain::CheckRequest::default()
    }
}

/// What can be read of a request body refused whole: the top-level subject, action and
/// resource names, if it is JSON at all.
fn readable_body(body: &[u8]) -> warrant_domain::CheckRequest {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return warrant_domain::CheckRequest::default();
    };
    let part = |name: &str| match body.get(name) {
        Some(Value::Object(object)) => object.clone(),
        _ => Map::new(),
    };
    readable_request(
        &Evaluation {
            subject: part("subject"),
            action: part("action"),
            resource: part("resource"),
            context: Map::new(),
        },
        &None,
    )
}

/// The engine request for an evaluation. Caller-asserted attributes go into the Cedar context
/// only where the action's context declares them: each `context` entry under its own name, and
/// the subject's, action's and resource's `properties` as records under `subject`, `action` and
/// `resource`, each keeping only the attributes the schema declares (at any depth). Anything
/// else, and every `null`, is ignored, as AuthZEN asks of unknown fields; keys Warrant sets
/// itself (`now`, `approval`) are never taken from the caller.
fn engine_request(
    evaluation: &Evaluation,
    contexts: &std::collections::HashMap<String, Arc<ContextShape>>,
    request_id: &Option<String>,
) -> Result<warrant_domain::CheckRequest, InvalidRequest> {
    let action = text(&evaluation.action, "name").to_owned();
    let shape = contexts.get(&action);
    let declared = |key: &str| {
        shape
            .filter(|_| !RESERVED_CONTEXT_KEYS.contains(&key))
            .and_then(|shape| shape.attributes.get(key))
    };
    let mut context = BTreeMap::new();
    for (key, value) in &evaluation.context {
        if key == APPROVAL_CONTEXT_KEY || key == CREDENTIAL_CONTEXT_KEY {
            continue;
        }
        if let Some(declared) = declared(key)
            && let Some(value) = declared_value(value, &declared.kind, &format!("context.{key}"))?
        {
            context.insert(key.clone(), value);
        }
    }
    for (key, entity) in [
        ("subject", &evaluation.subject),
        ("action", &evaluation.action),
        ("resource", &evaluation.resource),
    ] {
        if let Some(properties) = entity.get("properties")
            && let Some(declared) = declared(key)
            && let Some(value) =
                declared_value(properties, &declared.kind, &format!("{key}.properties"))?
        {
            context.insert(key.to_owned(), value);
        }
    }
    let approval_id = match evaluation.context.get(APPROVAL_CONTEXT_KEY) {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(_) => {
            return Err(InvalidRequest::new(
                format!("context.{APPROVAL_CONTEXT_KEY}"),
                "must be a string",
            ));
        }
    };
    // The access request profile's re-evaluation carries the approval as an object at
    // `context.approval`; its `id` is the approval presented (checked like any other).
    let profile_approval_id = match evaluation.context.get("approval") {
        None | Some(Value::Null) => None,
        Some(Value::Object(approval)) => match approval.get("id") {
            Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
            _ => {
                return Err(InvalidRequest::new(
                    "context.approval.id",
                    "required, a string",
                ));
            }
        },
        Some(_) => {
            return Err(InvalidRequest::new(
                "context.approval",
                "must be an object (the access request's approval result)",
            ));
        }
    };
    let approval_id = match (approval_id, profile_approval_id) {
        (Some(id), Some(other)) if id != other => {
            return Err(InvalidRequest::new(
                "context.approval.id",
                format!("{other:?} is not context.{APPROVAL_CONTEXT_KEY} ({id:?})"),
            ));
        }
        (id, other) => id.or(other),
    };
    let credential = match evaluation.context.get(CREDENTIAL_CONTEXT_KEY) {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => {
            warrant_proto::convert::bounded_credential(
                token,
                &format!("context.{CREDENTIAL_CONTEXT_KEY}"),
            )?;
            Some(warrant_domain::Credential(token.clone()))
        }
        Some(_) => {
            return Err(InvalidRequest::new(
                format!("context.{CREDENTIAL_CONTEXT_KEY}"),
                "must be a string",
            ));
        }
    };
    // The resource's properties also describe it, for a resource of a `@described_by_caller`
    // type that Warrant's facts do not hold (the engine keeps the declared attributes only).
    let resource_description = match evaluation.resource.get("properties") {
        Some(Value::Object(properties)) => {
            let mut attributes = BTreeMap::new();
            for (key, value) in properties {
                if let Some(value) =
                    crate::api::json_context_value(value, &format!("resource.properties.{key}"))?
                {
                    attributes.insert(key.clone(), value);
                }
            }
            Some(warrant_domain::ResourceDescription {
                attributes,
                parents: Vec::new(),
            })
        }
        _ => None,
    };
    Ok(warrant_domain::CheckRequest {
        principal: EntityRef::new(
            text(&evaluation.subject, "type"),
            text(&evaluation.subject, "id"),
        ),
        action,
        resource: EntityRef::new(
            text(&evaluation.resource, "type"),
            text(&evaluation.resource, "id"),
        ),
        context,
        approval_id,
        request_id: request_id.clone(),
        resource_description,
        caller_identity: None,
        credential,
    })
}

/// A caller's JSON value as the context value the schema declares for it: a record keeps only
/// its declared attributes, and `null` is nothing at all. `None`: nothing to pass on.
fn declared_value(
    value: &Value,
    kind: &Kind,
    at: &str,
) -> Result<Option<ContextValue>, InvalidRequest> {
    match (value, kind) {
        (Value::Null, _) => Ok(None),
        (Value::Object(fields), Kind::Record(shape)) => {
            let mut record = BTreeMap::new();
            for (key, value) in fields {
                if let Some(declared) = shape.attributes.get(key)
                    && let Some(value) =
                        declared_value(value, &declared.kind, &format!("{at}.{key}"))?
                {
                    record.insert(key.clone(), value);
                }
            }
            Ok(Some(ContextValue::Record(record)))
        }
        (Value::Array(items), Kind::Set(element)) => {
            let mut set = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                if let Some(value) = declared_value(item, element, &format!("{at}[{i}]"))? {
                    set.push(value);
                }
            }
            Ok(Some(ContextValue::Set(set)))
        }
        _ => crate::api::json_context_value(value, at),
    }
}

/// The engine's field names in AuthZEN's words.
fn authzen_field(error: InvalidRequest) -> String {
    let field = match error.field.as_str() {
        "principal" => "subject".to_owned(),
        "principal.type" => "subject.type".to_owned(),
        "principal.id" => "subject.id".to_owned(),
        "action" => "action.name".to_owned(),
        other => other.to_owned(),
    };
    format!("{field}: {}", error.message)
}
