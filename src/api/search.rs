//! Who can do what, for every transport (AuthZEN's Search API, gRPC, the shell): pages a search
//! through the engine (`warrant_engine::engine::search`), on a blocking thread since a page may
//! examine thousands of candidates. A page token is the place the next page starts, HMAC'd
//! (`page_token`) together with a digest of the query, so a token is refused for any query but
//! its own and cannot be forged.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use warrant_domain::clock::UnixMillis;
use warrant_domain::{Caller, CheckRequest, InvalidRequest};
use warrant_engine::engine::search::{Found, SearchError, SearchQuery, Searched};
use warrant_ledger::SearchRecord;

use crate::api::decider::Decider;
use crate::api::page_token::PageTokens;

/// How large a page may be and how much one may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchLimits {
    /// Results on a page when the caller names no limit.
    pub default_page: usize,
    /// The largest limit a caller may name.
    pub max_page: usize,
    /// The most candidates one page examines; a search that reads that many without filling
    /// its page answers what it found and a token to go on.
    pub max_examined: usize,
    /// The most pages evaluated at once (each is CPU work beside the Checks); the others wait.
    pub max_in_flight: usize,
}

impl Default for SearchLimits {
    fn default() -> Self {
        SearchLimits {
            default_page: 100,
            max_page: 1_000,
            max_examined: 10_000,
            max_in_flight: 2,
        }
    }
}

/// A search as a transport read it.
#[derive(Debug, Clone)]
pub struct SearchAsk {
    pub searched: Searched,
    /// The request each candidate fills in (its searched part is ignored).
    pub template: CheckRequest,
    /// See `SearchQuery::per_action`.
    pub per_action: Option<std::collections::HashMap<String, CheckRequest>>,
    pub include_approvable: bool,
    /// The token of the page before; empty for the first page.
    pub token: String,
    /// The most results on this page; `None` for the default.
    pub limit: Option<u64>,
    /// The most candidates this page examines, if fewer than `search_max_examined` (a preview,
    /// such as the console's).
    pub max_examined: Option<usize>,
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct SearchAnswer {
    /// The page's id: its entry in the ledger.
    pub search_id: String,
    pub found: Vec<Found>,
    /// The token of the next page; empty on the last.
    pub next_token: String,
    pub examined: usize,
    /// Where the candidates came from (`SearchPage::candidates`).
    pub candidates: String,
    pub searched_at: UnixMillis,
    pub policy_version: Arc<str>,
    pub facts_version: Arc<str>,
}

/// Why a search has no answer.
#[derive(Debug)]
pub enum SearchRefused {
    /// Malformed (`INVALID_ARGUMENT`, HTTP 400): the field and why, in the engine's names.
    Invalid(InvalidRequest),
    /// The facts could not be read, or the page could not be recorded (`UNAVAILABLE`, HTTP
    /// 503): no answer is given that is not on record.
    Unavailable(String),
}

/// Runs searches for one server.
pub struct Searcher {
    decider: Arc<Decider>,
    tokens: PageTokens,
    limits: SearchLimits,
    /// One permit per page being evaluated (`SearchLimits::max_in_flight`).
    evaluating: Arc<tokio::sync::Semaphore>,
}

impl Searcher {
    pub fn new(decider: Arc<Decider>, tokens: PageTokens, limits: SearchLimits) -> Self {
        Searcher {
            decider,
            tokens,
            evaluating: Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight.max(1))),
            limits,
        }
    }

    /// One page of `ask` from `caller`, on record in the ledger (when it is on) before it is
    /// answered, and counted in the metrics under `transport`.
    pub async fn search(
        &self,
        ask: SearchAsk,
        transport: &'static str,
        caller: Caller,
        trace_id: Option<String>,
    ) -> Result<SearchAnswer, SearchRefused> {
        let started = Instant::now();
        let kind = kind(&ask.searched);
        let answer = self.page(ask, transport, caller, trace_id).await;
        let metrics = self.decider.metrics();
        match &answer {
            Ok(page) => {
                metrics.searched(kind, transport, "ok", started.elapsed());
                metrics.search_examined(page.examined, page.found.len());
            }
            Err(SearchRefused::Invalid(_)) => {
                metrics.searched(kind, transport, "invalid", started.elapsed());
            }
            Err(SearchRefused::Unavailable(error)) => {
                tracing::error!(%error, kind, "a search page could not be answered");
                metrics.searched(kind, transport, "unavailable", started.elapsed());
            }
        }
        answer
    }

    async fn page(
        &self,
        ask: SearchAsk,
        transport: &'static str,
        caller: Caller,
        trace_id: Option<String>,
    ) -> Result<SearchAnswer, SearchRefused> {
        let limit = match ask.limit {
            None => self.limits.default_page.min(self.limits.max_page),
            Some(0) => return Err(invalid("page.limit", "must be at least 1")),
            Some(limit) => match usize::try_from(limit) {
                Ok(limit) if limit <= self.limits.max_page => limit,
                _ => {
                    return Err(invalid(
                        "page.limit",
                        format!(
                            "{limit} is more than {} (search_max_page)",
                            self.limits.max_page
                        ),
                    ));
                }
            },
        };
        let list = format!("search:{}", hex::encode(&query_digest(&ask, limit)[..16]));
        let after = self.tokens.read(&list, &ask.token).map_err(|_| {
            invalid(
                "page.token",
                "not a token this server gave for this query (every part of the query and \
                 page.limit must stay as they were for the first page)",
            )
        })?;
        let mut record = search_record(&ask, transport, caller, trace_id);
        let query = SearchQuery {
            searched: ask.searched,
            template: ask.template,
            per_action: ask.per_action,
            include_approvable: ask.include_approvable,
            after,
            limit,
            max_examined: ask.max_examined.map_or(self.limits.max_examined, |most| {
                most.min(self.limits.max_examined)
            }),
        };
        let waiting = Waiting::start(&self.decider);
        let permit = Arc::clone(&self.evaluating).acquire_owned().await;
        drop(waiting);
        let permit =
            permit.map_err(|_| SearchRefused::Unavailable("the server is stopping".to_owned()))?;
        let decider = Arc::clone(&self.decider);
        let page = tokio::task::spawn_blocking(move || {
            let _evaluating = permit;
            decider.engine().search(&query)
        })
        .await
        .map_err(|error| SearchRefused::Unavailable(format!("the search failed: {error}")))?
        .map_err(|error| match error {
            SearchError::Invalid(invalid) => SearchRefused::Invalid(invalid),
            SearchError::FactsUnreadable(_) => SearchRefused::Unavailable(error.to_string()),
        })?;
        record.examined = u64::try_from(page.examined).unwrap_or(u64::MAX);
        record.results = u64::try_from(page.found.len()).unwrap_or(u64::MAX);
        record.more = page.resume_after.is_some();
        record.search_id = page.search_id.to_string();
        record.time = page.searched_at.to_rfc3339();
        record.policy_version = page.policy_version.to_string();
        record.facts_version = page.facts_version.to_string();
        if let Some(ledger) = self.decider.ledger() {
            let ledger = Arc::clone(ledger);
            tokio::task::spawn_blocking(move || ledger.append_search_blocking(&record))
                .await
                .map_err(|error| error.to_string())
                .and_then(|written| written.map_err(|error| error.to_string()))
                .map_err(|error| {
                    SearchRefused::Unavailable(format!("the search could not be recorded: {error}"))
                })?;
        }
        Ok(SearchAnswer {
            search_id: page.search_id.to_string(),
            next_token: page
                .resume_after
                .map(|after| self.tokens.issue(&list, &after))
                .unwrap_or_default(),
            found: page.found,
            examined: page.examined,
            candidates: page.candidates,
            searched_at: page.searched_at,
            policy_version: page.policy_version,
            facts_version: page.facts_version,
        })
    }
}

/// What the ledger keeps of a search, before its page is known.
fn search_record(
    ask: &SearchAsk,
    transport: &'static str,
    caller: Caller,
    trace_id: Option<String>,
) -> SearchRecord {
    let template = &ask.template;
    let (principal, action, resource, searched_type) = match &ask.searched {
        Searched::Subjects { type_name } => (
            None,
            Some(template.action.clone()),
            Some(template.resource.clone()),
            Some(type_name.clone()),
        ),
        Searched::Resources { type_name } => (
            Some(template.principal.clone()),
            Some(template.action.clone()),
            None,
            Some(type_name.clone()),
        ),
        Searched::Actions => (
            Some(template.principal.clone()),
            None,
            Some(template.resource.clone()),
            None,
        ),
    };
    SearchRecord {
        action,
        approval_presented: template.approval_id.clone(),
        caller: caller.address,
        caller_identity: caller.identity.map(|identity| identity.to_string()),
        examined: 0,
        facts_version: String::new(),
        include_approvable: ask.include_approvable,
        more: false,
        paged: !ask.token.is_empty(),
        policy_version: String::new(),
        principal,
        request_id: template.request_id.clone(),
        resource,
        results: 0,
        search_id: String::new(),
        searched: kind(&ask.searched).to_owned(),
        searched_type,
        time: String::new(),
        trace_id,
        transport: transport.to_owned(),
    }
}

/// A page waiting for its turn, counted until it has it or its caller goes away.
struct Waiting<'a>(&'a Decider);

impl<'a> Waiting<'a> {
    fn start(decider: &'a Decider) -> Self {
        decider.metrics().search_waiting(1);
        Waiting(decider)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.metrics().search_waiting(-1);
    }
}

fn invalid(field: &str, message: impl Into<String>) -> SearchRefused {
    SearchRefused::Invalid(InvalidRequest::new(field, message))
}

/// What is searched, as the metrics label it.
pub fn kind(searched: &Searched) -> &'static str {
    match searched {
        Searched::Subjects { .. } => "subject",
        Searched::Resources { .. } => "resource",
        Searched::Actions => "action",
    }
}

/// The digest of everything a page token is bound to: what is searched, every part of the
/// request but the searched one, the options and the page's limit.
fn query_digest(ask: &SearchAsk, limit: usize) -> [u8; 32] {
    let template = &ask.template;
    let mut hasher = Sha256::new();
    let mut part = |text: String| {
        hasher.update(u64::try_from(text.len()).unwrap_or(u64::MAX).to_be_bytes());
        hasher.update(text.as_bytes());
    };
    part(format!("{:?}", ask.searched));
    if !matches!(ask.searched, Searched::Subjects { .. }) {
        part(format!("{:?}", template.principal));
    }
    if !matches!(ask.searched, Searched::Actions) {
        part(format!("{:?}", template.action));
    }
    if !matches!(ask.searched, Searched::Resources { .. }) {
        part(format!("{:?}", template.resource));
    }
    part(format!("{:?}", template.context));
    let mut per_action: Vec<_> = ask.per_action.iter().flatten().collect();
    per_action.sort_by_key(|(action, _)| *action);
    for (action, request) in per_action {
        part(format!("{action:?} {:?}", request.context));
    }
    part(format!("{:?}", template.approval_id));
    part(format!("{:?}", template.resource_description));
    part(format!("{:?}", template.caller_identity));
    part(
        template
            .credential
            .as_ref()
            .map(|credential| hex::encode(Sha256::digest(credential.0.as_bytes())))
            .unwrap_or_default(),
    );
    part(format!("{} {limit}", ask.include_approvable));
    hasher.finalize().into()
}
