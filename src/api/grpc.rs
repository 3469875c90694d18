//! The native gRPC API, `warrant.v1.Authorizer`: Check and BatchCheck, each decided, recorded
//! and answered (the messages are converted by `proto::convert`); and approval requests, which
//! an identity files and watches here and humans decide on the admin API.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::admin::{approval_request_proto, control_status};
use crate::api::decider::Decider;
use crate::api::edge::with_decision_id;
use crate::api::search::{SearchAsk, SearchRefused, Searcher};
use crate::observability::metrics::Api;
use crate::observability::traces::{self, TraceHeaders};
use tracing::Instrument as _;
use warrant_control::requests::{ApprovalAsk, RequestState};
use warrant_control::{Control, ControlError};
use warrant_domain::InvalidRequest;
use warrant_engine::engine::search::Searched;
use warrant_proto as proto;
use warrant_proto::authorizer_server::Authorizer;
use warrant_proto::convert::{check_request_from_proto, check_response_to_proto, non_empty};

/// One request decided, or refused (with what could be read of it) as malformed. Short-lived
/// and moved at once, so the size difference between the two does not matter.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Decided(warrant_domain::CheckRequest, warrant_domain::Decision),
    Refused(warrant_domain::CheckRequest, InvalidRequest),
}

pub struct AuthorizerService {
    decider: Arc<Decider>,
    searcher: Arc<Searcher>,
    control: Arc<Control>,
    batch_max_items: usize,
}

impl AuthorizerService {
    pub fn new(
        decider: Arc<Decider>,
        searcher: Arc<Searcher>,
        control: Arc<Control>,
        batch_max_items: usize,
    ) -> Self {
        AuthorizerService {
            decider,
            searcher,
            control,
            batch_max_items,
        }
    }

    /// Decides one request, or says why it cannot be decided.
    /// Decides one request from `caller` (whose verified identity, if any, is the request's).
    fn decide(
        &self,
        api: Api,
        request: proto::CheckRequest,
        caller: &warrant_domain::Caller,
    ) -> Outcome {
        let readable = readable_request(&request);
        let request = match check_request_from_proto(request) {
            Ok(request) => warrant_domain::CheckRequest {
                caller_identity: caller.identity.clone(),
                ..request
            },
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
        let caller = crate::listeners::peer_of(&request).caller();
        let headers = TraceHeaders::from_metadata(request.metadata());
        let span = traces::api_span("check", &headers);
        let trace_id = traces::trace_id(&span, &headers);
        let decided = match span.in_scope(|| self.decide(Api::Check, request.into_inner(), &caller))
        {
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
        let caller = crate::listeners::peer_of(&request).caller();
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
                match self.decide(Api::BatchCheck, check, &caller) {
                    Outcome::Decided(request, decision) => recorded.push((request, decision)),
                    Outcome::Refused(readable, invalid) => {
                        let message = format!("checks[{index}].{invalid}");
                        failed.push((index, recorded.len(), message.clone()));
                        recorded.push(self.decider.refusal(
                            Api::BatchCheck,
                            &readable,
                            warrant_domain::Reason::InvalidRequest.as_str(),
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

    async fn search_subjects(
        &self,
        request: Request<proto::SearchRequest>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        self.search(request, Searching::Subjects).await
    }

    async fn search_resources(
        &self,
        request: Request<proto::SearchRequest>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        self.search(request, Searching::Resources).await
    }

    async fn search_actions(
        &self,
        request: Request<proto::SearchRequest>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        self.search(request, Searching::Actions).await
    }

    async fn ping(
        &self,
        _request: Request<proto::PingRequest>,
    ) -> Result<Response<proto::PingResponse>, Status> {
        Ok(Response::new(proto::PingResponse {}))
    }

    async fn request_approval(
        &self,
        request: Request<proto::RequestApprovalRequest>,
    ) -> Result<Response<proto::ApprovalRequestRecord>, Status> {
        let caller = crate::listeners::peer_of(&request).caller();
        let caller = caller
            .identity
            .as_deref()
            .map(str::to_owned)
            .or(caller.address);
        let request = request.into_inner();
        warrant_proto::convert::bounded_credential(&request.credential, "credential")
            .map_err(|invalid| Status::invalid_argument(invalid.to_string()))?;
        let entity =
            |e: Option<proto::EntityRef>| e.map(|e| warrant_domain::EntityRef::new(e.r#type, e.id));
        let ask = ApprovalAsk {
            identity: entity(request.identity),
            action: request.action,
            resource: entity(request.resource),
            scope: entity(request.scope),
            justification: request.justification,
            ticket: non_empty(request.ticket),
            duration_ms: request.duration_seconds.saturating_mul(1000),
            on_behalf_of: entity(request.on_behalf_of),
            decision_id: non_empty(request.decision_id),
            credential: non_empty(request.credential).map(warrant_domain::Credential),
            idempotency: None,
        };
        let filed = on_control(&self.control, move |control| {
            control.request_approval(ask, caller)
        })
        .await?;
        Ok(Response::new(approval_request_proto(&filed)))
    }

    async fn get_approval_request(
        &self,
        request: Request<proto::GetApprovalRequestRequest>,
    ) -> Result<Response<proto::ApprovalRequestRecord>, Status> {
        let id = request.into_inner().id;
        let found = on_control(&self.control, move |control| control.approval_request(&id)).await?;
        Ok(Response::new(approval_request_proto(&found)))
    }

    type WatchApprovalRequestStream = std::pin::Pin<
        Box<
            dyn futures_util::Stream<Item = Result<proto::ApprovalRequestRecord, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn watch_approval_request(
        &self,
        request: Request<proto::GetApprovalRequestRequest>,
    ) -> Result<Response<Self::WatchApprovalRequestStream>, Status> {
        let id = request.into_inner().id;
        let control = Arc::clone(&self.control);
        let mut changes = control.watch_approval_requests();
        let read = {
            let control = Arc::clone(&control);
            move |id: String| {
                let control = Arc::clone(&control);
                async move { on_control(&control, move |c| c.approval_request(&id)).await }
            }
        };
        // The first read answers NOT_FOUND as a status, not as a stream.
        let first = read(id.clone()).await?;
        changes.mark_unchanged();
        // Then each change, until the request is decided or expired (or a read fails).
        let stream = futures_util::stream::unfold(
            (Some(first.clone()), Some(first), changes),
            move |(unsent, last, mut changes)| {
                let read = read.clone();
                let control = Arc::clone(&control);
                let id = id.clone();
                async move {
                    if let Some(first) = unsent {
                        return Some((Ok(approval_request_proto(&first)), (None, last, changes)));
                    }
                    let last = last?;
                    loop {
                        if last.state != RequestState::Pending {
                            return None;
                        }
                        // Woken by any change, and at the latest when it would expire (or a
                        // minute from now, whichever is sooner).
                        let left = u64::try_from(last.expires_at - control.now().0).unwrap_or(0);
                        let wait = std::time::Duration::from_millis(left.min(60_000) + 1);
                        let _ = tokio::time::timeout(wait, changes.changed()).await;
                        match read(id.clone()).await {
                            Ok(now) if now == last => continue,
                            Ok(now) => {
                                return Some((
                                    Ok(approval_request_proto(&now)),
                                    (None, Some(now), changes),
                                ));
                            }
                            Err(status) => return Some((Err(status), (None, None, changes))),
                        }
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Runs `call` on the control plane off the async threads (it may write to disk).
async fn on_control<T: Send + 'static>(
    control: &Arc<Control>,
    call: impl FnOnce(&Control) -> Result<T, ControlError> + Send + 'static,
) -> Result<T, Status> {
    let control = Arc::clone(control);
    tokio::task::spawn_blocking(move || call(&control))
        .await
        .map_err(|error| Status::internal(format!("the call failed: {error}")))?
        .map_err(control_status)
}

impl AuthorizerService {
    /// Refuses a whole call as malformed: the refusal is recorded, and the status carries its
    /// decision id.
    async fn refuse_call(
        &self,
        api: Api,
        readable: &warrant_domain::CheckRequest,
        invalid: InvalidRequest,
        caller: warrant_domain::Caller,
        trace_id: Option<String>,
    ) -> Status {
        let refusal = self
            .decider
            .refuse(
                api,
                readable,
                warrant_domain::Reason::InvalidRequest.as_str(),
                Some(invalid.to_string()),
                caller,
                trace_id,
            )
            .await;
        with_decision_id(invalid_argument(invalid), &refusal.decision_id.to_string())
    }
}

/// Which of the three searches a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Searching {
    Subjects,
    Resources,
    Actions,
}

impl AuthorizerService {
    /// One page of a search; a malformed one is refused (and recorded) naming the field.
    async fn search(
        &self,
        request: Request<proto::SearchRequest>,
        searching: Searching,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        let caller = crate::listeners::peer_of(&request).caller();
        let headers = TraceHeaders::from_metadata(request.metadata());
        let span = traces::api_span("search", &headers);
        let trace_id = traces::trace_id(&span, &headers);
        let search = request.into_inner();
        let mut check = search.request.unwrap_or_default();
        let readable = readable_request(&check);
        let asked = search_ask(&mut check, searching).and_then(|searched| {
            let template = check_request_from_proto(check).map_err(|invalid| {
                InvalidRequest::new(format!("request.{}", invalid.field), invalid.message)
            })?;
            Ok(SearchAsk {
                searched,
                template: warrant_domain::CheckRequest {
                    caller_identity: caller.identity.clone(),
                    ..template
                },
                per_action: None,
                include_approvable: search.include_approvable,
                token: search.page_token,
                limit: (search.page_size != 0).then_some(u64::from(search.page_size)),
                max_examined: None,
            })
        });
        let invalid = match asked {
            Ok(ask) => match self
                .searcher
                .search(ask, "grpc", caller.clone(), trace_id.clone())
                .instrument(span.clone())
                .await
            {
                Ok(page) => return Ok(Response::new(search_response(page))),
                Err(SearchRefused::Unavailable(message)) => {
                    return Err(Status::unavailable(message));
                }
                Err(SearchRefused::Invalid(invalid)) => grpc_field(invalid),
            },
            Err(invalid) => invalid,
        };
        Err(self
            .refuse_call(Api::Check, &readable, invalid, caller, trace_id)
            .instrument(span)
            .await)
    }
}

/// A page of a search as this API answers it.
fn search_response(page: crate::api::search::SearchAnswer) -> proto::SearchResponse {
    proto::SearchResponse {
        results: page
            .found
            .into_iter()
            .map(|found| proto::SearchResult {
                id: found.id,
                approvable: found.approvable,
            })
            .collect(),
        next_page_token: page.next_token,
        search_id: page.search_id,
        candidates: page.candidates,
        examined: u64::try_from(page.examined).unwrap_or(u64::MAX),
        searched_at: Some(warrant_proto::convert::timestamp(page.searched_at)),
        policy_version: page.policy_version.to_string(),
        facts_version: page.facts_version.to_string(),
    }
}

/// Puts a placeholder where each candidate goes and says what is searched.
fn search_ask(
    check: &mut proto::CheckRequest,
    searching: Searching,
) -> Result<Searched, InvalidRequest> {
    const PLACEHOLDER: &str = "_";
    let searched_type = |entity: &mut Option<proto::EntityRef>, field: &str| {
        let entity = entity.get_or_insert_default();
        if entity.r#type.is_empty() {
            return Err(InvalidRequest::new(
                format!("request.{field}.type"),
                "required",
            ));
        }
        entity.id = PLACEHOLDER.to_owned();
        Ok(entity.r#type.clone())
    };
    Ok(match searching {
        Searching::Subjects => Searched::Subjects {
            type_name: searched_type(&mut check.principal, "principal")?,
        },
        Searching::Resources => Searched::Resources {
            type_name: searched_type(&mut check.resource, "resource")?,
        },
        Searching::Actions => {
            check.action = PLACEHOLDER.to_owned();
            Searched::Actions
        }
    })
}

/// A search's malformed field in this API's names.
fn grpc_field(invalid: InvalidRequest) -> InvalidRequest {
    let field = match invalid.field.as_str() {
        "page.limit" => "page_size".to_owned(),
        "page.token" => "page_token".to_owned(),
        other => format!("request.{other}"),
    };
    InvalidRequest::new(field, invalid.message)
}

/// What can be read of a request whatever is wrong with it: its names as given, no context.
fn readable_request(request: &proto::CheckRequest) -> warrant_domain::CheckRequest {
    let entity = |entity: &Option<proto::EntityRef>| {
        entity.as_ref().map_or_else(
            || warrant_domain::EntityRef::new("", ""),
            |e| warrant_domain::EntityRef::new(e.r#type.clone(), e.id.clone()),
        )
    };
    warrant_domain::CheckRequest {
        principal: entity(&request.principal),
        action: request.action.clone(),
        resource: entity(&request.resource),
        context: BTreeMap::new(),
        approval_id: non_empty(request.approval_id.clone()),
        request_id: non_empty(request.request_id.clone()),
        resource_description: None,
        caller_identity: None,
        credential: None,
    }
}

fn invalid_argument(error: InvalidRequest) -> Status {
    Status::invalid_argument(error.to_string())
}
