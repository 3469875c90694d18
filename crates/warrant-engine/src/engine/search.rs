//! Who can do what: the subjects that may take an action on a resource, the resources a
//! subject may take an action on, the actions a subject may take on a resource. A candidate is
//! in the answer exactly when a Check with the same request, the searched part filled in, would
//! allow it now: the same facts, policies, links, credential rules and fail-closed handling,
//! evaluated fresh (never from the cache) and taking no use of a limited approval (it only looks
//! whether one is left). Optionally, a candidate a valid approval would allow is in the answer
//! too, marked approvable (the advice a denied Check carries).
//!
//! Candidates come in a stable order (entity keys for subjects and resources, names for actions)
//! and a page examines at most `max_examined` of them, so a search costs what its page reads,
//! whatever the store holds; the page says after which candidate the next one starts.

use super::*;

/// What a search looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Searched {
    /// Principals of this type (the template's principal id is ignored).
    Subjects { type_name: String },
    /// Resources of this type (the template's resource id is ignored).
    Resources { type_name: String },
    /// Actions (the template's action is ignored).
    Actions,
}

impl Searched {
    /// The request field the searched entity takes the place of.
    fn field(&self) -> &'static str {
        match self {
            Searched::Subjects { .. } => "principal",
            Searched::Resources { .. } => "resource",
            Searched::Actions => "action",
        }
    }
}

/// One search: the request every candidate fills in, and which page of the answer.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub searched: Searched,
    pub template: CheckRequest,
    /// For an action search whose transport shapes the request for each action (AuthZEN passes
    /// on only the context each action declares): each action's request; an action without one
    /// is no candidate. `None`: every action fills in `template`.
    pub per_action: Option<std::collections::HashMap<String, CheckRequest>>,
    /// Also answer the candidates a valid approval would allow (marked `approvable`).
    pub include_approvable: bool,
    /// Start after this candidate (`SearchPage::resume_after` of the page before).
    pub after: Option<String>,
    /// The most results on this page.
    pub limit: usize,
    /// The most candidates this page examines.
    pub max_examined: usize,
}

/// A candidate in the answer: the entity's id (an action's name for an action search).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    /// Denied now, but a valid approval would allow it.
    pub approvable: bool,
}

/// One page of a search's answer.
#[derive(Debug, Clone)]
pub struct SearchPage {
    pub found: Vec<Found>,
    /// The last candidate examined, when more remain; `None` on the last page.
    pub resume_after: Option<String>,
    /// How many candidates this page examined.
    pub examined: usize,
    /// The page's own id (a UUIDv7 stamped with `searched_at`, like a decision's), for its
    /// record.
    pub search_id: Uuid,
    pub searched_at: UnixMillis,
    pub policy_version: Arc<str>,
    pub facts_version: Arc<str>,
}

/// Why a search has no answer.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query is malformed: the field and why.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The store the candidates are read from failed.
    #[error("the facts cannot be read: {0}")]
    FactsUnreadable(String),
}

/// Candidates read from the store at a time.
const CANDIDATE_BATCH: usize = 512;

impl Engine {
    /// One page of a search. `Err` for a malformed query (naming the field) or facts that
    /// cannot be read; every candidate a Check would not allow is left out, whatever the reason.
    pub fn search(&self, query: &SearchQuery) -> Result<SearchPage, SearchError> {
        let snapshot = self.snapshot.load_full();
        let now = self.clock.now();
        let span = tracing::debug_span!(
            "search",
            searched = query.searched.field(),
            found = tracing::field::Empty,
            examined = tracing::field::Empty,
        );
        let _entered = span.enter();
        let template = self.search_template(&snapshot, query)?;
        let mut page = SearchPage {
            found: Vec::new(),
            resume_after: None,
            examined: 0,
            search_id: new_decision_id(now),
            searched_at: now,
            policy_version: Arc::clone(snapshot.policies.version()),
            facts_version: Arc::clone(snapshot.facts.version()),
        };
        // A stale replica denies every Check, and an unverifiable credential denies every
        // Check it is presented with: nothing to examine.
        let verified = self.verify_credential(template.credential.as_ref(), now);
        if self.facts_stale() || verified.is_err() {
            return Ok(page);
        }
        let mut after = query.after.clone();
        let mut more = true;
        'pages: while page.examined < query.max_examined {
            let want = CANDIDATE_BATCH.min(query.max_examined - page.examined);
            let batch = self.candidates(&snapshot, &query.searched, after.as_deref(), want)?;
            let exhausted = batch.len() < want;
            let last = batch.len();
            for (i, (key, candidate)) in batch.into_iter().enumerate() {
                page.examined += 1;
                after = Some(key);
                if let Some(found) =
                    self.judge(&snapshot, &template, candidate, &verified, now, query)
                {
                    page.found.push(found);
                    if page.found.len() == query.limit {
                        more = !(exhausted && i + 1 == last);
                        break 'pages;
                    }
                }
            }
            if exhausted {
                more = false;
                break;
            }
        }
        // Stopped with the page full or its candidates spent: the next page starts after the
        // last one examined, if any candidate is left.
        if more
            && !self
                .candidates(&snapshot, &query.searched, after.as_deref(), 1)?
                .is_empty()
        {
            page.resume_after = after;
        }
        span.record("found", page.found.len());
        span.record("examined", page.examined);
        Ok(page)
    }

    /// The query's request, checked as a Check would check it before deciding: its bounds, the
    /// names it fixes, its context against the action's (where the action is fixed).
    fn search_template(
        &self,
        snapshot: &Snapshot,
        query: &SearchQuery,
    ) -> Result<CheckRequest, InvalidRequest> {
        if query.limit == 0 {
            return Err(InvalidRequest::new("page.limit", "must be at least 1"));
        }
        let mut template = query.template.clone();
        // The searched part is each candidate's: a placeholder keeps the checks below whole.
        match &query.searched {
            Searched::Subjects { type_name } => {
                template.principal = EntityRef::new(type_name.clone(), "_");
            }
            Searched::Resources { type_name } => {
                template.resource = EntityRef::new(type_name.clone(), "_");
            }
            Searched::Actions => {}
        }
        let action = match &query.searched {
            Searched::Actions => None,
            _ => Some(template.action.clone()),
        };
        if action.is_none() {
            // Any declared action, for the checks of the names; each candidate sets its own.
            template.action = snapshot
                .policies
                .actions()
                .keys()
                .min()
                .cloned()
                .unwrap_or_default();
        }
        self.settings.limits.check(&template)?;
        cedar_request::entity_uid(&template.principal, "principal", &snapshot.policies)?;
        cedar_request::entity_uid(&template.resource, "resource", &snapshot.policies)?;
        if let Some(action) = &action {
            parse_names(&snapshot.policies, &template)?;
            if let Some((field, message)) = snapshot
                .policies
                .contexts()
                .get(action)
                .and_then(|shape| shape.misfit(&template.context, &RESERVED_CONTEXT_KEYS))
            {
                return Err(InvalidRequest::new(field, message));
            }
        }
        for key in RESERVED_CONTEXT_KEYS {
            if template.context.contains_key(key) {
                return Err(InvalidRequest::new(
                    format!("context.{key}"),
                    format!(
                        "`{key}` is set by Warrant itself and cannot be supplied by the caller"
                    ),
                ));
            }
        }
        if let Some(approval_id) = &template.approval_id
            && approval_id.is_empty()
        {
            return Err(InvalidRequest::new(
                "approval_id",
                "empty; omit it to present no approval",
            ));
        }
        Ok(template)
    }

    /// Up to `want` candidates after `after`, in order: each one's key and its request.
    fn candidates(
        &self,
        snapshot: &Snapshot,
        searched: &Searched,
        after: Option<&str>,
        want: usize,
    ) -> Result<Vec<(String, Candidate)>, SearchError> {
        let entities = |type_name: &str| -> Result<Vec<(String, EntityRef)>, SearchError> {
            let uids = snapshot
                .facts
                .reader()
                .uids_after(&[warrant_facts::type_prefix(type_name)], after, want)
                .map_err(|error| SearchError::FactsUnreadable(error.to_string()))?;
            Ok(uids
                .into_iter()
                .map(|uid| {
                    let id = EntityRef::new(type_name, uid.id().unescaped());
                    (uid.to_string(), id)
                })
                .collect())
        };
        Ok(match searched {
            Searched::Subjects { type_name } => entities(type_name)?
                .into_iter()
                .map(|(key, entity)| (key, Candidate::Principal(entity)))
                .collect(),
            Searched::Resources { type_name } => entities(type_name)?
                .into_iter()
                .map(|(key, entity)| (key, Candidate::Resource(entity)))
                .collect(),
            Searched::Actions => {
                let mut names: Vec<&String> = snapshot
                    .policies
                    .actions()
                    .keys()
                    .filter(|name| after.is_none_or(|after| name.as_str() > after))
                    .collect();
                names.sort_unstable();
                names
                    .into_iter()
                    .take(want)
                    .map(|name| (name.clone(), Candidate::Action(name.clone())))
                    .collect()
            }
        })
    }

    /// Whether a Check of `template` with `candidate` filled in would allow it now (or, asked
    /// for, an approval would): the candidate as found, or `None`.
    fn judge(
        &self,
        snapshot: &Snapshot,
        template: &CheckRequest,
        candidate: Candidate,
        verified: &Result<Option<Arc<CredentialEvidence>>, Reason>,
        now: UnixMillis,
        query: &SearchQuery,
    ) -> Option<Found> {
        let mut request = match (&candidate, &query.per_action) {
            (Candidate::Action(action), Some(per_action)) => per_action.get(action)?.clone(),
            _ => template.clone(),
        };
        let id = match candidate {
            Candidate::Principal(principal) => {
                let id = principal.id.clone();
                request.principal = principal;
                id
            }
            Candidate::Resource(resource) => {
                let id = resource.id.clone();
                request.resource = resource;
                id
            }
            Candidate::Action(action) => {
                request.action = action.clone();
                action
            }
        };
        // A request a Check would refuse as malformed is not allowed either.
        self.settings.limits.check(&request).ok()?;
        let (principal_uid, action_uid, resource_uid) =
            parse_names(&snapshot.policies, &request).ok()?;
        let mut resolved = Resolved::of(snapshot, &request, principal_uid, resource_uid).ok()?;
        resolved.credential = self.bind_credential(&request.principal, verified.clone());
        let verdict = match self
            .verdict(
                snapshot,
                &request,
                &resolved,
                action_uid.clone(),
                now,
                Uses::Peek,
            )
            .ok()?
        {
            Ok(verdict) | Err(verdict) => verdict,
        };
        if verdict.effect == Effect::Allow {
            return Some(Found {
                id,
                approvable: false,
            });
        }
        let approvable = query.include_approvable
            && advisable(&verdict.reasons)
            && self
                .approval_advice(snapshot, &request, &resolved, &action_uid, now)
                .is_some();
        approvable.then_some(Found {
            id,
            approvable: true,
        })
    }
}

/// The part of a request one candidate fills in.
enum Candidate {
    Principal(EntityRef),
    Resource(EntityRef),
    Action(String),
}
