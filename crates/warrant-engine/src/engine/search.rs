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
use warrant_policy::{Reach, SearchedSide};

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
    /// Where the candidates came from, as a person reads it: what the policies narrowed the
    /// search to, or why every entity of the type is a candidate.
    pub candidates: String,
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
            candidates: String::new(),
            search_id: new_decision_id(now),
            searched_at: now,
            policy_version: Arc::clone(snapshot.policies.version()),
            facts_version: Arc::clone(snapshot.facts.version()),
        };
        // A stale replica denies every Check, and an unverifiable credential denies every
        // Check it is presented with: nothing to examine.
        let verified = self.verify_credential(template.credential.as_ref(), now);
        if self.facts_stale() {
            page.candidates = "none: this replica's facts are stale, so every Check is denied \
                               (warrant:facts-stale)"
                .to_owned();
            return Ok(page);
        }
        if let Err(reason) = &verified {
            page.candidates = format!(
                "none: the credential presented does not verify, so every Check is denied ({})",
                reason.as_str()
            );
            return Ok(page);
        }
        let (plan, candidates) = self.plan(&snapshot, &query.searched, &template)?;
        page.candidates = candidates;
        let mut after = query.after.clone();
        let mut more = true;
        'pages: while page.examined < query.max_examined {
            let want = CANDIDATE_BATCH.min(query.max_examined - page.examined);
            let batch = self.candidates(&snapshot, &plan, after.as_deref(), want)?;
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
                .candidates(&snapshot, &plan, after.as_deref(), 1)?
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
        // The action is checked here only where the query fixes it.
        let action = match &query.searched {
            Searched::Subjects { type_name } => {
                template.principal = EntityRef::new(type_name.clone(), "_");
                Some(template.action.clone())
            }
            Searched::Resources { type_name } => {
                template.resource = EntityRef::new(type_name.clone(), "_");
                Some(template.action.clone())
            }
            Searched::Actions => {
                // Any declared action, for the checks of the names; each candidate sets its own.
                template.action = snapshot
                    .policies
                    .actions()
                    .keys()
                    .min()
                    .cloned()
                    .unwrap_or_default();
                None
            }
        };
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

    /// Where this search's candidates come from: for a subject or resource search, the
    /// entities at or below what the permits that can match name on the searched side
    /// (`PolicySnapshot::reach`), when they are few enough to list; else every entity of the
    /// searched type. Either way a superset of what can be allowed, in key order.
    fn plan(
        &self,
        snapshot: &Snapshot,
        searched: &Searched,
        template: &CheckRequest,
    ) -> Result<(Plan, String), SearchError> {
        let (side, type_name, side_name, fixed_name) = match searched {
            Searched::Actions => return self.plan_actions(snapshot, template),
            Searched::Subjects { type_name } => {
                (SearchedSide::Principal, type_name, "principal", "resource")
            }
            Searched::Resources { type_name } => {
                (SearchedSide::Resource, type_name, "resource", "principal")
            }
        };
        let scan = |because: String| {
            Ok((
                Plan::Scan(type_name.clone()),
                format!("every {type_name}: {because}"),
            ))
        };
        let (principal, action, resource) = parse_names(&snapshot.policies, template)?;
        let fixed_uid = match side {
            SearchedSide::Principal => resource,
            SearchedSide::Resource => principal,
        };
        // A fixed side the facts do not hold (a resource described by the caller) has ancestors
        // only the request knows: no narrowing.
        if !snapshot.facts.contains(&fixed_uid) {
            return scan(format!(
                "the {fixed_name} is not in the facts, so the policies cannot narrow the search"
            ));
        }
        let slice = snapshot
            .facts
            .slice([&fixed_uid, &action], None)
            .map_err(|error| SearchError::FactsUnreadable(error.to_string()))?;
        let roots = match snapshot
            .policies
            .reach(side, &fixed_uid, &action, slice.entities())
        {
            Reach::Anywhere => {
                return scan(format!(
                    "a permit that can match constrains the {side_name} by type or not at all"
                ));
            }
            Reach::Under(roots) => roots,
        };
        let named = match roots.as_slice() {
            [] => "nothing".to_owned(),
            [one] => one.to_string(),
            [one, two] => format!("{one} and {two}"),
            [one, two, rest @ ..] => format!("{one}, {two} and {} more", rest.len()),
        };
        let prefix = warrant_facts::type_prefix(type_name);
        let reader = snapshot.facts.reader();
        let mut keys = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // Roots the facts do not hold name nothing below them; every other key comes from the
        // store's own index of children, so it is held.
        let mut queue: std::collections::VecDeque<String> = roots
            .iter()
            .filter(|root| snapshot.facts.contains(root))
            .map(ToString::to_string)
            .collect();
        while let Some(key) = queue.pop_front() {
            if !seen.insert(key.clone()) {
                continue;
            }
            if seen.len() > MOST_REACHED {
                return scan(format!(
                    "more than {MOST_REACHED} entities lie at or below what the permits name"
                ));
            }
            let children = reader
                .children_of(&key, MOST_REACHED)
                .map_err(|error| SearchError::FactsUnreadable(error.to_string()))?;
            if key.starts_with(&prefix) {
                keys.push(key);
            }
            queue.extend(children);
        }
        keys.sort_unstable();
        let described = format!(
            "the {} {type_name} at or below {named}, which the permits that can match name",
            keys.len()
        );
        Ok((Plan::Listed(keys), described))
    }

    /// An action search's candidates: the declared actions (by name) that a permit can allow
    /// the principal on the resource (`PolicySnapshot::reach_actions`), each one named or in a
    /// group named; every declared action where that cannot be narrowed.
    fn plan_actions(
        &self,
        snapshot: &Snapshot,
        template: &CheckRequest,
    ) -> Result<(Plan, String), SearchError> {
        let declared = snapshot.policies.actions();
        let mut every: Vec<(&String, &EntityUid)> = declared.iter().collect();
        every.sort_unstable();
        let total = every.len();
        let all = |because: &str| {
            (
                Plan::Actions(every.iter().map(|(name, _)| (*name).clone()).collect()),
                format!("every action ({total}): {because}"),
            )
        };
        let (Ok(principal), Ok(resource)) = (
            cedar_request::entity_uid(&template.principal, "principal", &snapshot.policies),
            cedar_request::entity_uid(&template.resource, "resource", &snapshot.policies),
        ) else {
            return Ok(all("the principal or the resource cannot be named"));
        };
        if !snapshot.facts.contains(&principal) || !snapshot.facts.contains(&resource) {
            return Ok(all(
                "the principal or the resource is not in the facts, so the policies cannot \
                 narrow the search",
            ));
        }
        let roots = [&principal, &resource]
            .into_iter()
            .chain(every.iter().map(|(_, uid)| *uid));
        let slice = snapshot
            .facts
            .slice(roots, None)
            .map_err(|error| SearchError::FactsUnreadable(error.to_string()))?;
        let entities = slice.entities();
        let Some(named) = snapshot
            .policies
            .reach_actions(&principal, &resource, entities)
        else {
            return Ok(all(
                "a permit that can match constrains the action not at all",
            ));
        };
        let names: Vec<String> = every
            .into_iter()
            .filter(|(_, uid)| {
                named.contains(uid)
                    || entities
                        .ancestors(uid)
                        .is_some_and(|mut ancestors| ancestors.any(|a| named.contains(a)))
            })
            .map(|(name, _)| name.clone())
            .collect();
        let described = format!(
            "the {} of {total} actions that the permits that can match name",
            names.len()
        );
        Ok((Plan::Actions(names), described))
    }

    /// Up to `want` of the plan's candidates after `after`, in order: each one's key and what
    /// it fills in.
    fn candidates(
        &self,
        snapshot: &Snapshot,
        plan: &Plan,
        after: Option<&str>,
        want: usize,
    ) -> Result<Vec<(String, Candidate)>, SearchError> {
        let entity = |uid: EntityUid| {
            let found = EntityRef::new(uid.type_name().to_string(), uid.id().unescaped());
            (uid.to_string(), Candidate::Entity(found))
        };
        Ok(match plan {
            Plan::Scan(type_name) => snapshot
                .facts
                .reader()
                .uids_after(&[warrant_facts::type_prefix(type_name)], after, want)
                .map_err(|error| SearchError::FactsUnreadable(error.to_string()))?
                .into_iter()
                .map(entity)
                .collect(),
            Plan::Listed(keys) => following(keys, after, want)
                .filter_map(|key| key.parse().ok())
                .map(entity)
                .collect(),
            Plan::Actions(names) => following(names, after, want)
                .map(|name| (name.clone(), Candidate::Action(name.clone())))
                .collect(),
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
            Candidate::Entity(entity) => {
                let id = entity.id.clone();
                match query.searched {
                    Searched::Subjects { .. } => request.principal = entity,
                    _ => request.resource = entity,
                }
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

/// The part of a request one candidate fills in: the searched entity (principal or resource),
/// or the action.
enum Candidate {
    Entity(EntityRef),
    Action(String),
}

/// Up to `want` of `sorted` after `after`.
fn following<'a>(
    sorted: &'a [String],
    after: Option<&str>,
    want: usize,
) -> impl Iterator<Item = &'a String> {
    let start = after.map_or(0, |after| {
        sorted.partition_point(|key| key.as_str() <= after)
    });
    sorted.iter().skip(start).take(want)
}

/// Where a search's candidates come from, in key order.
enum Plan {
    /// Every entity of this type.
    Scan(String),
    /// These keys (sorted), the entities at or below what the permits name.
    Listed(Vec<String>),
    /// These action names (sorted).
    Actions(Vec<String>),
}

/// The most entities a plan lists by walking down from what the permits name; past it, the
/// search scans the searched type instead.
const MOST_REACHED: usize = 200_000;
