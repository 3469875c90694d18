//! AuthZEN 1.0's Search APIs: `POST /access/v1/search/subject`, `/search/resource` and
//! `/search/action`. The searched entity carries only its `type` (an `id` is ignored; an action
//! search has no `action`); the other parts are read as an evaluation's are, so a result is
//! exactly what `/access/v1/evaluation` would answer `true` for now. Paging per the spec: `page:
//! {token, limit}` in, `page: {next_token, count}` out, `next_token` empty on the last page.
//! `options.include_approvable` adds what a valid approval would allow, with `properties:
//! {approvable: true}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};
use warrant_engine::engine::search::Searched;

use super::{
    AnswerContext, AuthZen, Evaluation, Refused, authzen_field, engine_request, json_object,
};
use crate::api::edge::CallGuard;
use crate::api::search::{SearchAsk, SearchRefused};
use crate::observability::metrics::Api;
use crate::observability::traces::{self, TraceHeaders};
use tracing::Instrument as _;

pub const SUBJECT_PATH: &str = "/access/v1/search/subject";
pub const RESOURCE_PATH: &str = "/access/v1/search/resource";
pub const ACTION_PATH: &str = "/access/v1/search/action";

/// Which of the three searches an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Subject,
    Resource,
    Action,
}

pub(super) async fn subject(
    authzen: State<Arc<AuthZen>>,
    peer: Option<axum::Extension<crate::listeners::PeerInfo>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    search(authzen, peer, headers, body, Endpoint::Subject).await
}

pub(super) async fn resource(
    authzen: State<Arc<AuthZen>>,
    peer: Option<axum::Extension<crate::listeners::PeerInfo>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    search(authzen, peer, headers, body, Endpoint::Resource).await
}

pub(super) async fn action(
    authzen: State<Arc<AuthZen>>,
    peer: Option<axum::Extension<crate::listeners::PeerInfo>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    search(authzen, peer, headers, body, Endpoint::Action).await
}

async fn search(
    State(authzen): State<Arc<AuthZen>>,
    peer: Option<axum::Extension<crate::listeners::PeerInfo>>,
    headers: HeaderMap,
    body: Bytes,
    endpoint: Endpoint,
) -> Response {
    let guard = CallGuard::start(Arc::clone(&authzen.decider), Api::AuthZen, None);
    let peer = peer.map(|axum::Extension(peer)| peer).unwrap_or_default();
    let request_id = headers.get("x-request-id");
    let trace = TraceHeaders::from_http(&headers);
    let answer = async {
        authzen.authenticate(&headers)?;
        let body = json_object(&body)?;
        let id = request_id.and_then(|v| v.to_str().ok()).map(str::to_owned);
        let ask = authzen.search_ask(&body, endpoint, id, peer.caller().identity)?;
        let span = traces::api_span("search", &trace);
        let trace_id = traces::trace_id(&span, &trace);
        let page = authzen
            .searcher
            .search(ask, "authzen", peer.caller(), trace_id)
            .instrument(span)
            .await
            .map_err(|refused| match refused {
                SearchRefused::Invalid(error) => Refused::bad(authzen_field(error)),
                SearchRefused::Unavailable(message) => {
                    Refused(StatusCode::SERVICE_UNAVAILABLE, message, None)
                }
            })?;
        let results: Vec<Value> = page
            .found
            .iter()
            .map(|found| {
                let mut result = match endpoint {
                    Endpoint::Action => json!({ "name": found.id }),
                    Endpoint::Subject => {
                        json!({ "type": text(&body, "subject", "type"), "id": found.id })
                    }
                    Endpoint::Resource => {
                        json!({ "type": text(&body, "resource", "type"), "id": found.id })
                    }
                };
                if found.approvable {
                    result["properties"] = json!({ "approvable": true });
                }
                result
            })
            .collect();
        let mut answer = json!({
            "page": { "next_token": page.next_token, "count": results.len() },
            "results": results,
        });
        // The page's entry in the ledger (`warrant log show ID`).
        if authzen.answer_context == AnswerContext::Full {
            answer["context"] = json!({
                "search_id": page.search_id,
                "candidates": page.candidates,
            });
        }
        Ok(answer)
    }
    .await;
    authzen
        .finish(guard, answer, request_id, &body, peer, &trace)
        .await
}

fn text<'a>(body: &'a Map<String, Value>, part: &str, key: &str) -> &'a str {
    body.get(part)
        .and_then(|part| part.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl AuthZen {
    /// The search a request body from a caller of `caller_identity` asks for, read as an
    /// evaluation is (the searched entity's id, or the action, left for the candidates to fill
    /// in).
    fn search_ask(
        &self,
        body: &Map<String, Value>,
        endpoint: Endpoint,
        request_id: Option<String>,
        caller_identity: Option<Arc<str>>,
    ) -> Result<SearchAsk, Refused> {
        let part = |name: &str| -> Result<Map<String, Value>, Refused> {
            match body.get(name) {
                Some(Value::Object(object)) => Ok(object.clone()),
                None | Some(Value::Null) => Err(Refused::bad(format!("{name}: required"))),
                Some(_) => Err(Refused::bad(format!("{name}: must be an object"))),
            }
        };
        let required = |object: &Map<String, Value>, at: &str, key: &str| match object.get(key) {
            Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                Err(Refused::bad(format!("{at}.{key}: required")))
            }
            Some(_) => Err(Refused::bad(format!("{at}.{key}: must be a string"))),
        };
        let mut subject = part("subject")?;
        let mut resource = part("resource")?;
        let mut action = match endpoint {
            Endpoint::Action => Map::new(),
            _ => part("action")?,
        };
        let subject_type = required(&subject, "subject", "type")?;
        let resource_type = required(&resource, "resource", "type")?;
        let searched = match endpoint {
            Endpoint::Subject => {
                subject.insert("id".into(), json!(PLACEHOLDER_ID));
                Searched::Subjects {
                    type_name: subject_type,
                }
            }
            Endpoint::Resource => {
                resource.insert("id".into(), json!(PLACEHOLDER_ID));
                Searched::Resources {
                    type_name: resource_type,
                }
            }
            Endpoint::Action => Searched::Actions,
        };
        required(&subject, "subject", "id")?;
        required(&resource, "resource", "id")?;
        if endpoint != Endpoint::Action {
            required(&action, "action", "name")?;
        }
        for (name, object) in [
            ("subject", &subject),
            ("action", &action),
            ("resource", &resource),
        ] {
            match object.get("properties") {
                None | Some(Value::Null) | Some(Value::Object(_)) => {}
                Some(_) => {
                    return Err(Refused::bad(format!(
                        "{name}.properties: must be an object"
                    )));
                }
            }
        }
        let context = match body.get("context") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(context)) => context.clone(),
            Some(_) => return Err(Refused::bad("context: must be an object")),
        };
        let (token, limit) = page(body)?;
        let include_approvable = match body
            .get("options")
            .and_then(|o| o.get("include_approvable"))
        {
            None | Some(Value::Null) => false,
            Some(Value::Bool(include)) => *include,
            Some(_) => {
                return Err(Refused::bad(
                    "options.include_approvable: must be a boolean",
                ));
            }
        };
        let snapshot = self.decider.engine().snapshot();
        let contexts = snapshot.policies.contexts();
        let request_for = |action: Map<String, Value>| {
            engine_request(
                &Evaluation {
                    subject: subject.clone(),
                    action,
                    resource: resource.clone(),
                    context: context.clone(),
                },
                contexts,
                &request_id,
            )
            .map(|request| warrant_domain::CheckRequest {
                caller_identity: caller_identity.clone(),
                ..request
            })
        };
        // Each action passes on the context it declares, as its evaluation would; one whose
        // evaluation would be refused as malformed is no candidate.
        let per_action = (endpoint == Endpoint::Action).then(|| {
            let mut per_action = HashMap::new();
            for name in snapshot.policies.actions().keys() {
                let shaped = Map::from_iter([("name".to_owned(), json!(name))]);
                if let Ok(request) = request_for(shaped) {
                    per_action.insert(name.clone(), request);
                }
            }
            action.insert("name".into(), json!(PLACEHOLDER_ID));
            per_action
        });
        let template = request_for(action).map_err(|error| Refused::bad(authzen_field(error)))?;
        Ok(SearchAsk {
            searched,
            template,
            per_action,
            include_approvable,
            token,
            limit,
            max_examined: None,
        })
    }
}

/// The id the searched entity goes by until a candidate fills it in.
const PLACEHOLDER_ID: &str = "_";

/// The request's `page`: its token (empty for the first page) and limit.
fn page(body: &Map<String, Value>) -> Result<(String, Option<u64>), Refused> {
    let page = match body.get("page") {
        None | Some(Value::Null) => return Ok((String::new(), None)),
        Some(Value::Object(page)) => page,
        Some(_) => return Err(Refused::bad("page: must be an object")),
    };
    let token = match page.get("token") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(token)) => token.clone(),
        Some(_) => return Err(Refused::bad("page.token: must be a string")),
    };
    let limit = match page.get("limit") {
        None | Some(Value::Null) => None,
        Some(Value::Number(limit)) => Some(limit.as_u64().ok_or_else(|| {
            Refused::bad(format!("page.limit: {limit} is not a non-negative integer"))
        })?),
        Some(_) => return Err(Refused::bad("page.limit: must be a non-negative integer")),
    };
    Ok((token, limit))
}
