//! The AuthZEN Authorization API 1.0 over HTTP (JSON; HTTP/1.1 and HTTP/2): `POST
//! /access/v1/evaluation`, `POST /access/v1/evaluations` (defaults, per-item overrides and the
//! three evaluation semantics) and `GET /.well-known/authzen-configuration`. Turns each
//! evaluation into an engine request (subject -> principal, action name -> action, resource ->
//! resource; `properties` and `context` become caller-asserted context attributes, only those
//! the action's context declares) and decisions into AuthZEN's answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::api::admin::equal_in_constant_time;
use crate::api::decider::Decider;
use crate::engine::{self, ContextValue, Effect, InvalidRequest, RESERVED_CONTEXT_KEYS};
use crate::facts::EntityRef;
use crate::telemetry::Api;
use crate::traces::{self, TraceHeaders};
use tracing::Instrument as _;

pub const EVALUATION_PATH: &str = "/access/v1/evaluation";
pub const EVALUATIONS_PATH: &str = "/access/v1/evaluations";
pub const METADATA_PATH: &str = "/.well-known/authzen-configuration";
/// The context key whose string value is the presented approval's id.
pub const APPROVAL_CONTEXT_KEY: &str = "approval_id";

/// How an AuthZEN endpoint is served.
pub struct AuthZen {
    decider: Arc<Decider>,
    /// When set, `/access/*` calls need `Authorization: Bearer <token>`.
    token: Option<String>,
    /// The PDP's identifier in the metadata; from the `Host` header when not set.
    base_url: Option<String>,
    max_evaluations: usize,
}

impl AuthZen {
    pub fn new(
        decider: Arc<Decider>,
        token: Option<String>,
        base_url: Option<String>,
        max_evaluations: usize,
    ) -> Self {
        AuthZen {
            decider,
            token,
            base_url: base_url.map(|url| url.trim_end_matches('/').to_owned()),
            max_evaluations,
        }
    }
}

/// The router for the AuthZEN listener.
pub fn router(authzen: Arc<AuthZen>, max_body_bytes: usize) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(EVALUATION_PATH, post(evaluation))
        .route(EVALUATIONS_PATH, post(evaluations))
        .route(METADATA_PATH, get(metadata))
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
struct Evaluation {
    subject: Map<String, Value>,
    action: Map<String, Value>,
    resource: Map<String, Value>,
    context: Map<String, Value>,
}

/// A request refused whole: HTTP 4xx with a message that names the field.
struct Refused(StatusCode, String);

impl Refused {
    fn bad(message: impl Into<String>) -> Self {
        Refused(StatusCode::BAD_REQUEST, message.into())
    }
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
    response
}

impl AuthZen {
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let matches =
            presented.is_some_and(|p| equal_in_constant_time(p.as_bytes(), token.as_bytes()));
        if matches {
            Ok(())
        } else {
            tracing::warn!("AuthZEN call refused: missing or wrong bearer token");
            Err(Refused(
                StatusCode::UNAUTHORIZED,
                "Authorization: a valid bearer token is required".to_owned(),
            ))
        }
    }

    /// Decides the evaluations in order under `semantic`, records them, and answers each: its
    /// decision, or why it could not be decided (a message naming the field).
    async fn decide(
        &self,
        evaluations: Vec<Result<Evaluation, String>>,
        semantic: Semantic,
        request_id: Option<String>,
        caller: String,
        trace: &TraceHeaders,
    ) -> Vec<Result<Value, String>> {
        let span = traces::api_span("authzen", trace);
        let trace_id = traces::trace_id(&span, trace);
        let snapshot = self.decider.engine().snapshot();
        // Each answer: a decided request's index in `decided`, or an error.
        let mut answers: Vec<Result<usize, String>> = Vec::new();
        let mut decided = Vec::new();
        for evaluation in evaluations {
            let outcome = evaluation.and_then(|evaluation| {
                let request =
                    engine_request(&evaluation, &snapshot.policies.context_keys, &request_id)
                        .map_err(authzen_field)?;
                let decision = span
                    .in_scope(|| self.decider.decide(Api::AuthZen, &request))
                    .map_err(authzen_field)?;
                Ok((request, decision))
            });
            let allowed = match outcome {
                Ok(pair) => {
                    let allowed = pair.1.effect == Effect::Allow;
                    decided.push(pair);
                    answers.push(Ok(decided.len() - 1));
                    allowed
                }
                Err(error) => {
                    answers.push(Err(error));
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
            .record(Api::AuthZen, &mut decided, Some(caller), trace_id)
            .instrument(span)
            .await;
        answers
            .into_iter()
            .map(|answer| {
                answer.map(|index| {
                    let decision = &decided[index].1;
                    json!({
                        "decision": decision.effect == Effect::Allow,
                        "context": {
                            "decision_id": decision.decision_id.to_string(),
                            "reasons": decision.reasons,
                        },
                    })
                })
            })
            .collect()
    }

    /// Counts the call's time and sends its answer, echoing the request id.
    fn finish(
        &self,
        started: Instant,
        answer: Result<Value, Refused>,
        request_id: Option<&HeaderValue>,
    ) -> Response {
        let metrics = self.decider.metrics();
        metrics.latency(Api::AuthZen, started.elapsed());
        metrics.answered(
            Api::AuthZen,
            match &answer {
                Ok(_) => tonic::Code::Ok,
                Err(Refused(StatusCode::UNAUTHORIZED, _)) => tonic::Code::Unauthenticated,
                Err(_) => tonic::Code::InvalidArgument,
            },
        );
        match answer {
            Ok(body) => respond(StatusCode::OK, body, request_id),
            Err(refused) => refuse(refused, request_id),
        }
    }
}

async fn evaluation(
    State(authzen): State<Arc<AuthZen>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let request_id = headers.get("x-request-id");
    let answer = async {
        authzen.authenticate(&headers)?;
        let body = json_object(&body)?;
        let evaluation = parse_evaluation(&body, &Map::new(), "").map_err(Refused::bad)?;
        let id = request_id.and_then(|v| v.to_str().ok()).map(str::to_owned);
        // One evaluation: one that cannot be decided is refused whole (400), not a deny.
        let mut answers = authzen
            .decide(
                vec![Ok(evaluation)],
                Semantic::ExecuteAll,
                id,
                peer.to_string(),
                &trace_headers(&headers),
            )
            .await;
        answers
            .pop()
            .unwrap_or_else(|| Err("no answer".to_owned()))
            .map_err(Refused::bad)
    }
    .await;
    authzen.finish(started, answer, request_id)
}

async fn evaluations(
    State(authzen): State<Arc<AuthZen>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let request_id = headers.get("x-request-id");
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
                        "options.evaluations_semantic: {other:?} is not one of execute_all, \
                         deny_on_first_deny, permit_on_first_permit"
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
            let mut answers = authzen
                .decide(
                    vec![Ok(evaluation)],
                    semantic,
                    id,
                    peer.to_string(),
                    &trace_headers(&headers),
                )
                .await;
            return answers
                .pop()
                .unwrap_or_else(|| Err("no answer".to_owned()))
                .map_err(Refused::bad);
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
            .decide(
                parsed,
                semantic,
                id,
                peer.to_string(),
                &trace_headers(&headers),
            )
            .await
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|message| {
                    json!({
                        "decision": false,
                        "context": {"error": {"status": 400, "message": message}},
                    })
                })
            })
            .collect();
        Ok(json!({ "evaluations": answers }))
    }
    .await;
    authzen.finish(started, answer, request_id)
}

async fn metadata(State(authzen): State<Arc<AuthZen>>, headers: HeaderMap) -> Response {
    let base = authzen.base_url.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    });
    respond(
        StatusCode::OK,
        json!({
            "policy_decision_point": base,
            "access_evaluation_endpoint": format!("{base}{EVALUATION_PATH}"),
            "access_evaluations_endpoint": format!("{base}{EVALUATIONS_PATH}"),
        }),
        headers.get("x-request-id"),
    )
}

fn trace_headers(headers: &HeaderMap) -> TraceHeaders {
    TraceHeaders::from_pairs(
        headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
    )
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, Refused> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Refused::bad("body: must be a JSON object")),
        Err(error) => Err(Refused::bad(format!("body: not JSON: {error}"))),
    }
}

/// An evaluation from `item`, each of subject, action, resource and context taken from
/// `defaults` where `item` lacks it (an item's own value replaces the default whole).
fn parse_evaluation(
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

/// The engine request for an evaluation. Caller-asserted attributes go into the Cedar context
/// under keys the action's context declares: each `context` entry under its own name, and the
/// subject's, action's and resource's `properties` as records under `subject`, `action` and
/// `resource`. Anything else is ignored, as AuthZEN asks of unknown fields; keys Warrant sets
/// itself (`now`, `approval`) are never taken from the caller.
fn engine_request(
    evaluation: &Evaluation,
    context_keys: &std::collections::HashMap<String, Arc<std::collections::BTreeSet<String>>>,
    request_id: &Option<String>,
) -> Result<engine::CheckRequest, InvalidRequest> {
    let action = text(&evaluation.action, "name").to_owned();
    let declared = context_keys.get(&action);
    let accepts = |key: &str| {
        !RESERVED_CONTEXT_KEYS.contains(&key) && declared.is_some_and(|keys| keys.contains(key))
    };
    let mut context = BTreeMap::new();
    for (key, value) in &evaluation.context {
        if key != APPROVAL_CONTEXT_KEY && accepts(key) {
            context.insert(
                key.clone(),
                context_value(value, &format!("context.{key}"))?,
            );
        }
    }
    for (key, entity) in [
        ("subject", &evaluation.subject),
        ("action", &evaluation.action),
        ("resource", &evaluation.resource),
    ] {
        if let Some(properties) = entity.get("properties").filter(|p| p.is_object())
            && accepts(key)
        {
            context.insert(
                key.to_owned(),
                context_value(properties, &format!("{key}.properties"))?,
            );
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
    Ok(engine::CheckRequest {
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
    })
}

/// A caller's JSON value in Cedar's terms: integers, strings, booleans, arrays, objects.
fn context_value(value: &Value, at: &str) -> Result<ContextValue, InvalidRequest> {
    Ok(match value {
        Value::Bool(b) => ContextValue::Bool(*b),
        Value::String(s) => ContextValue::String(s.clone()),
        Value::Number(n) => ContextValue::Long(n.as_i64().ok_or_else(|| {
            InvalidRequest::new(at, format!("{n} is not an integer Cedar can hold"))
        })?),
        Value::Array(items) => ContextValue::Set(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| context_value(item, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => ContextValue::Record(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), context_value(v, &format!("{at}.{k}"))?)))
                .collect::<Result<_, InvalidRequest>>()?,
        ),
        Value::Null => return Err(InvalidRequest::new(at, "null has no Cedar value")),
    })
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
