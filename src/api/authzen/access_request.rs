//! The AuthZEN Access Request and Approval Profile (draft 1) on the AuthZEN listener, with
//! Warrant as its own Access Request Service. A denial that an approval would lift is a
//! requestable denial: its context carries `evaluation_id` (the decision id), `evaluated_at`,
//! `reason` and `access_request.expires_at`. `POST /access/v1/requests` binds a submission to that
//! denial by resolving the evaluation id in the ledger (the same subject, action and resource,
//! within the window) and files an approval request for exactly the approval the denial named;
//! `GET /access/v1/requests/{id}` is the task's status, and an approved task's result names the
//! approval the PEP presents at `context.approval` when it evaluates again. Humans decide the
//! requests on the admin API, as for requests filed over gRPC.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{AuthZen, CREDENTIAL_CONTEXT_KEY, json_object, parse_evaluation};
use warrant_control::requests::{ApprovalAsk, ApprovalRequest, Idempotency, RequestState};
use warrant_control::{Control, ControlError};
use warrant_domain::clock::UnixMillis;
use warrant_domain::{Effect, EntityRef, Reason};
use warrant_ledger::Ledger;

pub const REQUESTS_PATH: &str = "/access/v1/requests";
pub const TASK_PATH: &str = "/access/v1/requests/{id}";
/// Advertised in the PDP metadata's `capabilities`.
pub const CAPABILITY: &str = "urn:openid:authzen:capability:access-request";
const PROBLEM_PREFIX: &str = "urn:openid:authzen:access-request:error:";
/// The longest `Idempotency-Key` taken, in bytes.
const MOST_KEY_BYTES: usize = 256;
/// How long an approval is asked for when the submission names no `requested_until`: an hour,
/// or less where the rules allow less.
const DEFAULT_DURATION_MS: i64 = 3_600_000;

/// What the access request endpoints need beyond the AuthZEN listener's own parts.
pub struct AccessRequests {
    control: Arc<Control>,
    /// Where denials are resolved by their evaluation id.
    ledger: Arc<Ledger>,
    /// How long a denial stays requestable.
    window_ms: i64,
}

impl AccessRequests {
    /// Until when a denial decided at `decided_at` can be submitted.
    fn requestable_until(&self, decided_at: UnixMillis) -> UnixMillis {
        decided_at.saturating_add_millis(self.window_ms)
    }

    pub fn new(control: Arc<Control>, ledger: Arc<Ledger>, window: Duration) -> Self {
        AccessRequests {
            control,
            ledger,
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The profile's members of a denied answer's `context`: for a denial an approval would
    /// lift, the requestable denial; for one that presented an approval, why it did not help
    /// (`reason`) and what the PEP should do next (`next_action`).
    pub fn denial_context(
        &self,
        request: &warrant_domain::CheckRequest,
        decision: &warrant_domain::Decision,
        context: &mut Value,
    ) {
        if decision.effect == Effect::Allow {
            return;
        }
        let requestable = decision.approval_required.is_some();
        let presented = request.approval_id.is_some();
        if requestable {
            let evaluated_at = decision.provenance.decided_at;
            context["evaluation_id"] = json!(decision.decision_id.to_string());
            context["evaluated_at"] = json!(evaluated_at.to_rfc3339());
            context["access_request"] = json!({
                "expires_at": self.requestable_until(evaluated_at).to_rfc3339(),
            });
        }
        if !requestable && !presented {
            return;
        }
        let has = |reason: Reason| decision.reasons.iter().any(|r| r == reason.as_str());
        let approval_valid = decision
            .provenance
            .approval
            .as_ref()
            .is_some_and(|evidence| evidence.valid_at_decision);
        let reason = if !presented {
            "approval_required"
        } else if has(Reason::UnknownApproval) || has(Reason::ApprovalReplayed) {
            "approval_unverifiable"
        } else if has(Reason::ApprovalUsesExhausted)
            || has(Reason::ApprovalBudgetExhausted)
            || !approval_valid
        {
            "approval_expired"
        } else if requestable {
            "out_of_scope"
        } else {
            "policy_denied"
        };
        context["reason"] = json!(reason);
        if presented {
            context["next_action"] = json!(if requestable { "request" } else { "none" });
        }
    }
}

/// An answer under the profile's error model: RFC 9457 problem details, typed with the
/// profile's URNs where it defines one.
struct Problem {
    status: StatusCode,
    /// The profile's error name (`invalid_denial_binding`, ...), or `None` for `about:blank`.
    kind: Option<&'static str>,
    detail: String,
}

impl Problem {
    /// An `about:blank` problem: the status says what it is.
    fn plain(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            status,
            kind: None,
            detail: detail.into(),
        }
    }

    fn bad(detail: impl Into<String>) -> Self {
        Problem::plain(StatusCode::BAD_REQUEST, detail)
    }

    fn of(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            kind: Some(kind),
            detail: detail.into(),
        }
    }

    fn unbound(detail: impl Into<String>) -> Self {
        Problem::of(StatusCode::BAD_REQUEST, "invalid_denial_binding", detail)
    }

    fn into_response(self) -> Response {
        let (kind, title) = match self.kind {
            Some(kind) => (format!("{PROBLEM_PREFIX}{kind}"), kind.replace('_', " ")),
            None => (
                "about:blank".to_owned(),
                self.status.canonical_reason().unwrap_or("Error").to_owned(),
            ),
        };
        let body = json!({
            "type": kind,
            "title": title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// A control-plane refusal in the profile's terms, with Warrant's field names turned into the
/// submission's.
fn control_problem(error: ControlError) -> Problem {
    match error {
        ControlError::Invalid { field, message } => {
            let field = match field.as_str() {
                "identity" => "subject",
                "duration" => "requested_access.requested_until",
                "justification" => "context.justification",
                "ticket" => "context.ticket",
                "on_behalf_of" => "context.on_behalf_of",
                other => other,
            };
            Problem::bad(format!("{field}: {message}"))
        }
        ControlError::NotFound(message) => Problem::bad(message),
        ControlError::Refused(reason) => Problem::plain(StatusCode::FORBIDDEN, reason),
        ControlError::Exhausted(message) => Problem::plain(StatusCode::TOO_MANY_REQUESTS, message),
        ControlError::Conflict(message) | ControlError::AlreadyExists(message) => {
            Problem::of(StatusCode::CONFLICT, "duplicate_request", message)
        }
        ControlError::Store(_)
        | ControlError::Unrecorded(_)
        | ControlError::ReloadFailed(_)
        | ControlError::SharedStore(_) => {
            tracing::error!(%error, "an access request could not be filed");
            Problem::plain(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
        }
    }
}

/// Runs `call` on the control plane off the async threads (it writes to disk).
async fn on_control<T: Send + 'static>(
    control: &Arc<Control>,
    call: impl FnOnce(&Control) -> Result<T, ControlError> + Send + 'static,
) -> Result<T, Problem> {
    let control = Arc::clone(control);
    tokio::task::spawn_blocking(move || call(&control))
        .await
        .map_err(|error| {
            Problem::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the call failed: {error}"),
            )
        })?
        .map_err(control_problem)
}

/// A string member of `object`, if present; a value of another type is refused by `at`.
fn optional_text<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<&'a str>, Problem> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(Problem::bad(format!("{at}{key}: must be a string"))),
    }
}

fn optional_object<'a>(
    object: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, Problem> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(Problem::bad(format!("{key}: must be an object"))),
    }
}

fn entity_of(object: &Map<String, Value>) -> EntityRef {
    let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default();
    EntityRef::new(text("type"), text("id"))
}

/// `POST /access/v1/requests`.
pub(super) async fn submit(
    State(authzen): State<Arc<AuthZen>>,
    peer: Option<axum::Extension<crate::listeners::PeerInfo>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer.map(|axum::Extension(peer)| peer).unwrap_or_default();
    let answer = match authzen.access_requests() {
        Some(service) => file(&authzen, service, &peer, &headers, &body).await,
        None => Err(Problem::of(
            StatusCode::NOT_FOUND,
            "not_requestable",
            "access requests need the ledger, which is off",
        )),
    };
    finish(&authzen, "submit", answer, &headers)
}

/// `GET /access/v1/requests/{id}`.
pub(super) async fn status(
    State(authzen): State<Arc<AuthZen>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        let Some(service) = authzen.access_requests() else {
            return Err(Problem::of(
                StatusCode::NOT_FOUND,
                "unknown_task",
                "no such task",
            ));
        };
        authzen
            .authenticate(&headers)
            .map_err(|_| unauthenticated())?;
        let lookup = id.clone();
        let request = on_control(&service.control, move |control| {
            control.approval_request(&lookup)
        })
        .await
        .map_err(|problem| match problem.status {
            StatusCode::BAD_REQUEST => Problem::of(
                StatusCode::NOT_FOUND,
                "unknown_task",
                format!("no task {id:?}"),
            ),
            _ => problem,
        })?;
        let task = task_json(&authzen, service, &request, &headers).await;
        Ok((StatusCode::OK, task))
    }
    .await;
    finish(&authzen, "status", answer, &headers)
}

fn unauthenticated() -> Problem {
    Problem::plain(
        StatusCode::UNAUTHORIZED,
        "Authorization: a valid bearer token is required".to_owned(),
    )
}

/// Counts the call and sends its answer (a task, with its `Location`, or a problem), echoing
/// the request id.
fn finish(
    authzen: &AuthZen,
    endpoint: &'static str,
    answer: Result<(StatusCode, Value), Problem>,
    headers: &HeaderMap,
) -> Response {
    let mut response = match answer {
        Ok((status, body)) => {
            let location = body["task"]["status_endpoint"]
                .as_str()
                .and_then(|url| HeaderValue::from_str(url).ok());
            let mut response = (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response();
            if let (StatusCode::ACCEPTED, Some(location)) = (status, location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(problem) => {
            if problem.status.is_server_error() {
                tracing::warn!(
                    endpoint,
                    detail = problem.detail,
                    "access request call failed"
                );
            }
            problem.into_response()
        }
    };
    authzen
        .metrics()
        .access_request_call(endpoint, response.status().as_u16());
    if let Some(id) = headers.get("x-request-id") {
        response.headers_mut().insert("x-request-id", id.clone());
    }
    response
}

/// Binds a submission to its denial and files the approval request it asks for.
async fn file(
    authzen: &AuthZen,
    service: &AccessRequests,
    peer: &crate::listeners::PeerInfo,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(StatusCode, Value), Problem> {
    authzen
        .authenticate(headers)
        .map_err(|_| unauthenticated())?;
    let submission = json_object(body).map_err(|refused| Problem::bad(refused.message()))?;
    if submission.contains_key("items") {
        return Err(Problem::bad(
            "items: bundled access requests are not supported; submit one per denial",
        ));
    }
    let asked = parse_evaluation(&submission, &Map::new(), "").map_err(Problem::bad)?;
    let denial = optional_object(&submission, "denial")?
        .ok_or_else(|| Problem::unbound("denial: required, with the denial's evaluation_id"))?;
    let evaluation_id = optional_text(denial, "evaluation_id", "denial.")?.ok_or_else(|| {
        Problem::unbound(
            "denial.evaluation_id: required (Warrant binds a request to its denial by the \
             evaluation id; it issues no binding tokens)",
        )
    })?;
    // The denial as Warrant recorded it, not as the PEP echoes it.
    let record = recorded_denial(service, evaluation_id).await?;
    let Some(advice) = record
        .approval_required
        .clone()
        .filter(|_| record.decision == "DENY")
    else {
        return Err(Problem::of(
            StatusCode::BAD_REQUEST,
            "not_requestable",
            format!("evaluation {evaluation_id} is not a denial an approval would lift"),
        ));
    };
    for (field, submitted, recorded) in [
        ("subject", entity_of(&asked.subject), &record.principal),
        ("resource", entity_of(&asked.resource), &record.resource),
    ] {
        if &submitted != recorded {
            return Err(Problem::unbound(format!(
                "{field}: {submitted} is not the denied evaluation's ({recorded})"
            )));
        }
    }
    let action = asked
        .action
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if action != record.action {
        return Err(Problem::unbound(format!(
            "action.name: {action:?} is not the denied evaluation's ({:?})",
            record.action
        )));
    }
    let now = service.control.now();
    let expires_at =
        service.requestable_until(UnixMillis::parse_rfc3339(&record.time).unwrap_or(UnixMillis(0)));
    if now >= expires_at {
        return Err(Problem::of(
            StatusCode::GONE,
            "expired_denial",
            format!(
                "the denial was requestable until {}; evaluate again for a fresh one",
                expires_at.to_rfc3339()
            ),
        ));
    }

    let context = &asked.context;
    let justification = match optional_text(context, "justification", "context.")? {
        Some(text) => text,
        None => optional_text(context, "business_justification", "context.")?.unwrap_or(""),
    };
    let ticket = optional_text(context, "ticket", "context.")?;
    let credential = optional_text(context, CREDENTIAL_CONTEXT_KEY, "context.")?;
    let on_behalf_of = match context.get("on_behalf_of") {
        None | Some(Value::Null) => None,
        Some(Value::Object(human)) => Some(entity_of(human)),
        Some(_) => return Err(Problem::bad("context.on_behalf_of: must be an object")),
    };
    let requested_access = optional_object(&submission, "requested_access")?;
    let duration_ms = match requested_access
        .map(|access| optional_text(access, "requested_until", "requested_access."))
        .transpose()?
        .flatten()
    {
        Some(until) => {
            let until = UnixMillis::parse_rfc3339(until).ok_or_else(|| {
                Problem::bad("requested_access.requested_until: not an RFC 3339 time")
            })?;
            if until <= now {
                return Err(Problem::bad(
                    "requested_access.requested_until: must be in the future",
                ));
            }
            until.0 - now.0
        }
        None => DEFAULT_DURATION_MS.min(advice.max_validity_seconds.saturating_mul(1000)),
    };
    let idempotency = idempotency(headers, &submission)?;
    let caller = peer.caller();
    let caller = caller
        .identity
        .as_deref()
        .map(str::to_owned)
        .or(caller.address);
    let ask = ApprovalAsk {
        identity: Some(advice.identity.clone()),
        action: advice.action.clone(),
        resource: Some(advice.resource.clone()),
        scope: Some(advice.scope.clone()),
        justification: justification.to_owned(),
        ticket: ticket.map(str::to_owned),
        duration_ms,
        on_behalf_of,
        decision_id: Some(record.decision_id.clone()),
        credential: credential.map(|token| warrant_domain::Credential(token.to_owned())),
        idempotency,
    };
    let filed = on_control(&service.control, move |control| {
        control.request_approval(ask, caller)
    })
    .await?;
    let task = task_json(authzen, service, &filed, headers).await;
    Ok((StatusCode::ACCEPTED, task))
}

/// The evaluation `evaluation_id` as the ledger holds it.
async fn recorded_denial(
    service: &AccessRequests,
    evaluation_id: &str,
) -> Result<warrant_ledger::Record, Problem> {
    let ledger = Arc::clone(&service.ledger);
    let lookup = evaluation_id.to_owned();
    let stored = tokio::task::spawn_blocking(move || ledger.get(&lookup))
        .await
        .map_err(|error| {
            Problem::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the ledger lookup failed: {error}"),
            )
        })?
        .map_err(|error| {
            tracing::error!(%error, "an access request's denial could not be looked up");
            Problem::plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the ledger could not be read: {error}"),
            )
        })?
        .ok_or_else(|| {
            Problem::unbound(format!(
                "denial.evaluation_id: Warrant recorded no evaluation {evaluation_id:?}"
            ))
        })?;
    Ok(stored.record)
}

/// The submission's `Idempotency-Key`, with the SHA-256 of the submission it came with.
fn idempotency(
    headers: &HeaderMap,
    submission: &Map<String, Value>,
) -> Result<Option<Idempotency>, Problem> {
    Ok(match headers.get("idempotency-key") {
        None => None,
        Some(key) => {
            let key = key
                .to_str()
                .ok()
                .map(|k| k.trim().trim_matches('"'))
                .filter(|k| !k.is_empty() && k.len() <= MOST_KEY_BYTES)
                .ok_or_else(|| {
                    Problem::bad(format!(
                        "Idempotency-Key: must be visible ASCII, 1 to {MOST_KEY_BYTES} bytes"
                    ))
                })?;
            let canonical = serde_json_canonicalizer::to_vec(&Value::Object(submission.clone()))
                .map_err(|error| Problem::bad(format!("body: {error}")))?;
            use sha2::Digest as _;
            Some(Idempotency {
                key: key.to_owned(),
                submission_sha256: hex::encode(sha2::Sha256::digest(&canonical)),
            })
        }
    })
}

/// A request as the profile's task (and, once approved, its result).
async fn task_json(
    authzen: &AuthZen,
    service: &AccessRequests,
    request: &ApprovalRequest,
    headers: &HeaderMap,
) -> Value {
    let at = |ms: i64| UnixMillis(ms).to_rfc3339();
    let status = match request.state {
        RequestState::Pending => "pending",
        RequestState::Approved => "approved",
        RequestState::Rejected => "denied",
        RequestState::Expired => "expired",
    };
    let mut task = json!({
        "id": request.id,
        "status": status,
        "status_endpoint": format!("{}{REQUESTS_PATH}/{}", authzen.base_url(headers), request.id),
    });
    if request.state == RequestState::Pending {
        task["expires_at"] = json!(at(request.expires_at));
    }
    let mut answer = json!({ "task": task });
    if let (RequestState::Approved, Some(approval_id)) = (request.state, &request.approval_id) {
        // Kept with requests decided since the expiry was; read from the approval before.
        let approved_until = match request.approval_expires_at {
            Some(until) => Some(until),
            None => {
                let id = approval_id.clone();
                on_control(&service.control, move |control| control.approval(&id))
                    .await
                    .ok()
                    .map(|view| view.approval.expires_at.0)
            }
        };
        let mut approval = json!({ "id": approval_id });
        if let Some(decided_at) = request.decided_at {
            approval["approved_at"] = json!(at(decided_at));
        }
        if let Some(until) = approved_until {
            approval["approved_until"] = json!(at(until));
        }
        answer["result"] = json!({ "mode": "reevaluate", "approval": approval });
    }
    answer
}
