//! The decision. Takes a request that names a principal, an action, a resource and maybe an
//! approval; resolves every fact about them from the stores; builds the Cedar request with
//! `context.now` from the injected clock; evaluates; applies the fail-closed rules; and says how
//! long the answer stays valid. Knows nothing of gRPC, HTTP or JSON.

use std::sync::Arc;

use arc_swap::ArcSwap;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, EntityId, EntityUid, Request,
    RequestValidationError, RestrictedExpression,
};
use uuid::Uuid;

use crate::decide::cache::{CacheKey, CacheSettings, CachedDecision, DecisionCache};

use crate::clock::{Clock, UnixMillis};
use crate::decide::limits::{RequestLimits, quote};
use crate::domain::{
    Approval, ApprovalEvidence, CheckRequest, ContextValue, Decision, Effect, EntityRef, Identity,
    InvalidRequest, PolicyError, Provenance, RESERVED_CONTEXT_KEYS, Reason, ShadowVerdict,
};
use crate::facts::{APPROVAL_TYPE, Facts};
use crate::policy::PolicySnapshot;

/// Durable, atomic counting of the uses of limited approvals (`max_uses`).
pub trait UseCounter: Send + Sync {
    /// Records one use of the approval unless `max_uses` are recorded already: the number of
    /// this use, or `None` when every use is taken.
    fn consume(&self, approval_id: &str, max_uses: u64) -> Result<Option<u64>, UseCountError>;

    /// Gives back one use, taken for a decision that could not be recorded: a use counts only
    /// if its decision is on record.
    fn release(&self, approval_id: &str) -> Result<(), UseCountError>;
}

/// A use of a limited approval that could not be counted: the counter's own error.
#[derive(Debug, thiserror::Error)]
#[error("cannot count a use of a limited approval: {0}")]
pub struct UseCountError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// A context value as a Cedar expression.
fn cedar_value(value: &ContextValue) -> RestrictedExpression {
    match value {
        ContextValue::Bool(b) => RestrictedExpression::new_bool(*b),
        ContextValue::Long(n) => RestrictedExpression::new_long(*n),
        ContextValue::String(s) => RestrictedExpression::new_string(s.clone()),
        ContextValue::Set(items) => RestrictedExpression::new_set(items.iter().map(cedar_value)),
        #[expect(clippy::expect_used, reason = "BTreeMap keys are unique")]
        ContextValue::Record(fields) => RestrictedExpression::new_record(
            fields.iter().map(|(k, v)| (k.clone(), cedar_value(v))),
        )
        .expect("new_record only refuses duplicate keys, and BTreeMap keys are unique"),
    }
}

/// The policies and facts one decision is made from, always taken together. Either part can
/// be replaced alone (a new `Facts` keeps the policies), hence the `Arc`s.
#[derive(Clone)]
pub struct Snapshot {
    pub policies: Arc<PolicySnapshot>,
    pub facts: Arc<Facts>,
}

#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// The longest a caller may rely on an allow (and the longest one is cached).
    pub allow_max_age_ms: i64,
    /// The longest a caller may rely on a deny (and the longest one is cached).
    pub deny_max_age_ms: i64,
    /// `None` turns the decision cache off.
    pub cache: Option<CacheSettings>,
    /// The bounds a request must keep to be decided.
    pub limits: RequestLimits,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            allow_max_age_ms: 60_000,
            deny_max_age_ms: 10_000,
            cache: Some(CacheSettings::default()),
            limits: RequestLimits::default(),
        }
    }
}

pub struct Engine {
    snapshot: ArcSwap<Snapshot>,
    clock: Arc<dyn Clock>,
    settings: EngineSettings,
    authorizer: Authorizer,
    cache: Option<DecisionCache>,
    /// `None`: a limited approval allows nothing.
    uses: Option<std::sync::Arc<dyn UseCounter>>,
    /// Candidate policies evaluated beside the active ones, answering nothing.
    shadow: arc_swap::ArcSwapOption<PolicySnapshot>,
}

/// What Warrant resolved before evaluating, carried into the decision.
struct Resolved<'a> {
    principal_uid: EntityUid,
    resource_uid: EntityUid,
    identity: Option<&'a Arc<Identity>>,
    approval: Option<&'a Arc<Approval>>,
}

impl<'a> Resolved<'a> {
    fn of(
        facts: &'a Facts,
        request: &CheckRequest,
        principal_uid: EntityUid,
        resource_uid: EntityUid,
    ) -> Self {
        Resolved {
            identity: facts.identities().get(&principal_uid),
            approval: request
                .approval_id
                .as_deref()
                .and_then(|id| facts.approvals().get(id)),
            principal_uid,
            resource_uid,
        }
    }
}

/// What one policy, evaluated alone, makes of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// Its scope matches and its conditions hold: a permit would allow, a forbid denies.
    Satisfied,
    NotSatisfied,
    /// It failed to evaluate (and so, in the whole set, makes the decision a deny).
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyExplanation {
    pub policy_id: String,
    /// `permit` or `forbid`.
    pub effect: &'static str,
    pub outcome: PolicyOutcome,
}

/// A decision and every policy's own outcome.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub decision: Decision,
    /// Empty when Warrant decided before any policy ran (an unknown principal, say).
    pub policies: Vec<PolicyExplanation>,
}

/// A decision before it is stamped: what was decided, not yet when or under which id.
struct Verdict {
    effect: Effect,
    reasons: Vec<String>,
    errors: Vec<PolicyError>,
    /// The use of a limited approval this allow took.
    approval_use: Option<u64>,
}

impl Verdict {
    fn warrant_deny(why: &str) -> Self {
        Verdict {
            effect: Effect::Deny,
            reasons: vec![why.to_owned()],
            errors: Vec::new(),
            approval_use: None,
        }
    }
}

impl Engine {
    pub fn new(snapshot: Snapshot, clock: Arc<dyn Clock>, settings: EngineSettings) -> Self {
        Engine {
            snapshot: ArcSwap::from_pointee(snapshot),
            cache: settings.cache.map(DecisionCache::new),
            clock,
            settings,
            authorizer: Authorizer::new(),
            uses: None,
            shadow: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Evaluates every later request against `candidate` too, recording what it would have
    /// decided (`Decision::shadow`) without letting it answer. `None` stops that.
    pub fn set_shadow(&self, candidate: Option<Arc<PolicySnapshot>>) {
        self.shadow.store(candidate);
    }

    /// The candidate policies evaluated beside the active ones, if any.
    pub fn shadow(&self) -> Option<Arc<PolicySnapshot>> {
        self.shadow.load_full()
    }

    /// Counts the uses of limited approvals with `uses`.
    pub fn with_use_counter(mut self, uses: Arc<dyn UseCounter>) -> Self {
        self.uses = Some(uses);
        self
    }

    /// The policies and facts decisions are made from right now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Makes every later decision use `snapshot`. Cached decisions made from the old one are
    /// unreachable from the moment this returns: their keys carry the old versions. (They are
    /// not cleared: they age out or are evicted, and come back into use only if the policies and
    /// facts return to exactly those versions, where they are true again.)
    pub fn replace_snapshot(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    pub fn cache(&self) -> Option<&DecisionCache> {
        self.cache.as_ref()
    }

    /// Decides one request. `Err` only for a malformed request; every other problem is a deny.
    pub fn check(&self, request: &CheckRequest) -> Result<Decision, InvalidRequest> {
        self.settings.limits.check(request)?;
        let snapshot = self.snapshot.load_full();
        let span = tracing::debug_span!(
            "decision",
            principal = %request.principal,
            action = %request.action,
            resource = %request.resource,
            approval_id = request.approval_id.as_deref().unwrap_or(""),
            decision = tracing::field::Empty,
            decision_id = tracing::field::Empty,
            cached = tracing::field::Empty,
            reasons = tracing::field::Empty,
            error_count = tracing::field::Empty,
            policy_version = %snapshot.policies.version(),
        );
        let _entered = span.enter();
        let now = self.clock.now();
        let decision = self.answer(&snapshot, request, now)?;
        span.record("decision", tracing::field::debug(decision.effect));
        span.record("decision_id", tracing::field::display(decision.decision_id));
        span.record("cached", decision.provenance.answered_from_cache);
        span.record("reasons", tracing::field::debug(&decision.reasons));
        span.record("error_count", decision.errors.len());
        Ok(decision)
    }

    /// Decides `request` afresh (never from the cache) and evaluates each policy alone against
    /// the same Cedar request, for `warrant check --explain`.
    pub fn explain(&self, request: &CheckRequest) -> Result<Explanation, InvalidRequest> {
        self.settings.limits.check(request)?;
        let snapshot = self.snapshot.load_full();
        let now = self.clock.now();
        let decision = self.evaluate(&snapshot, None, request, now)?;
        let (principal_uid, action_uid, resource_uid) = parse_names(&snapshot.policies, request)?;
        let resolved = Resolved::of(&snapshot.facts, request, principal_uid, resource_uid);
        let policies = match self.cedar_request(&snapshot, request, &resolved, action_uid, now)? {
            Err(_) => Vec::new(),
            Ok(cedar_request) => snapshot
                .policies
                .policies()
                .policies()
                .map(|policy| {
                    #[expect(clippy::expect_used, reason = "one policy has no duplicate id")]
                    let alone = cedar_policy::PolicySet::from_policies([policy.clone()])
                        .expect("a set of one policy has no duplicate id");
                    let response = self.authorizer.is_authorized(
                        &cedar_request,
                        &alone,
                        snapshot.facts.entities(),
                    );
                    let diagnostics = response.diagnostics();
                    let outcome = match diagnostics.errors().next() {
                        Some(error) => PolicyOutcome::Failed(error.to_string()),
                        None if diagnostics.reason().next().is_some() => PolicyOutcome::Satisfied,
                        None => PolicyOutcome::NotSatisfied,
                    };
                    PolicyExplanation {
                        policy_id: policy.id().to_string(),
                        effect: match policy.effect() {
                            cedar_policy::Effect::Permit => "permit",
                            cedar_policy::Effect::Forbid => "forbid",
                        },
                        outcome,
                    }
                })
                .collect(),
        };
        Ok(Explanation { decision, policies })
    }

    /// Gives back the approval use `decision` took, if it took one: its record could not be
    /// written, so it is answered as a deny and must not count.
    pub fn release_use(&self, decision: &Decision) {
        let Some(evidence) = &decision.provenance.approval else {
            return;
        };
        if evidence.use_number.is_none() {
            return;
        }
        let id = evidence.approval.uid.id().unescaped();
        if let Some(uses) = &self.uses
            && let Err(error) = uses.release(id)
        {
            tracing::error!(approval = id, %error, "cannot give back the use of an unrecorded decision");
        }
    }

    /// The limits requests are held to.
    pub fn limits(&self) -> &RequestLimits {
        &self.settings.limits
    }

    /// A deny for a request refused before it could be decided (malformed, over a limit,
    /// unreadable, or refused by a wire API before the engine): stamped with an id and the
    /// clock's time like any decision, so that it can be recorded and its id answered. `why` is
    /// one of Warrant's reasons; `detail`, if any, says what was wrong (it is recorded as the
    /// decision's error). Valid for no time at all, and never cached.
    pub fn refusal(&self, request: &CheckRequest, why: &str, detail: Option<String>) -> Decision {
        let snapshot = self.snapshot.load_full();
        let now = self.clock.now();
        let decision_id = new_decision_id(now);
        let request = self.settings.limits.excerpt(request);
        Decision {
            effect: Effect::Deny,
            decision_id,
            reasons: vec![why.to_owned()],
            errors: detail
                .map(|message| PolicyError {
                    policy_id: why.to_owned(),
                    message,
                })
                .into_iter()
                .collect(),
            provenance: Provenance {
                principal: request.principal,
                identity: None,
                approval: None,
                resource: request.resource,
                resource_scopes: Arc::from([]),
                decided_at: now,
                facts_version: Arc::clone(snapshot.facts.version()),
                evaluation_id: decision_id,
                answered_from_cache: false,
            },
            valid_until: now,
            policy_version: Arc::clone(snapshot.policies.version()),
            request_id: request.request_id,
            shadow: None,
        }
    }

    /// From the cache if a cached decision is still true now, else a fresh evaluation.
    fn answer(
        &self,
        snapshot: &Snapshot,
        request: &CheckRequest,
        now: UnixMillis,
    ) -> Result<Decision, InvalidRequest> {
        let shadow = self.shadow.load_full();
        let Some(cache) = &self.cache else {
            return self.evaluate(snapshot, shadow.as_ref(), request, now);
        };
        // A malformed request is never cached, so looking up before validating is safe.
        let key = CacheKey {
            principal: request.principal.clone(),
            action: request.action.clone(),
            resource: request.resource.clone(),
            context: request.context.clone(),
            approval_id: request.approval_id.clone(),
            policy_version: Arc::clone(snapshot.policies.version()),
            facts_version: Arc::clone(snapshot.facts.version()),
            shadow_version: shadow.as_ref().map(|s| Arc::clone(s.version())),
        };
        if let Some(entry) = cache.get(&key, now) {
            let mut decision = entry.decision.clone();
            decision.decision_id = new_decision_id(now);
            decision.provenance.decided_at = now;
            decision.provenance.answered_from_cache = true;
            decision.valid_until = entry.expires_at;
            decision.request_id = request.request_id.clone();
            return Ok(decision);
        }
        let decision = self.evaluate(snapshot, shadow.as_ref(), request, now)?;
        // Errors are never cached (the shadow set's neither); nor is anything under policies
        // that do arithmetic on time, nor anything about a limited approval (each allow must
        // take a use).
        let limited = decision
            .provenance
            .approval
            .as_ref()
            .is_some_and(|evidence| evidence.approval.max_uses.is_some());
        let arithmetic = snapshot.policies.time_use().arithmetic
            || shadow.as_ref().is_some_and(|s| s.time_use().arithmetic);
        let shadow_failed = decision.shadow.as_ref().is_some_and(|s| s.error_count > 0);
        if decision.errors.is_empty() && !arithmetic && !limited && !shadow_failed {
            cache.insert(
                key,
                CachedDecision {
                    expires_at: decision.valid_until,
                    decision: decision.clone(),
                },
            );
        }
        Ok(decision)
    }

    fn evaluate(
        &self,
        snapshot: &Snapshot,
        shadow: Option<&Arc<PolicySnapshot>>,
        request: &CheckRequest,
        now: UnixMillis,
    ) -> Result<Decision, InvalidRequest> {
        let (principal_uid, action_uid, resource_uid) = parse_names(&snapshot.policies, request)?;
        for key in RESERVED_CONTEXT_KEYS {
            if request.context.contains_key(key) {
                return Err(InvalidRequest::new(
                    format!("context.{key}"),
                    format!(
                        "`{key}` is set by Warrant itself and cannot be supplied by the caller"
                    ),
                ));
            }
        }
        let resolved = Resolved::of(&snapshot.facts, request, principal_uid, resource_uid);
        let verdict = match self.verdict(snapshot, request, &resolved, action_uid, now)? {
            Ok(verdict) | Err(verdict) => verdict,
        };
        let shadow_verdict = shadow
            .map(|candidate| self.shadow_verdict(snapshot, candidate, request, &resolved, now));
        let mut decision = self.stamp(
            snapshot,
            shadow.map(|s| &**s),
            request,
            &resolved,
            now,
            verdict,
        );
        decision.shadow = shadow_verdict;
        Ok(decision)
    }

    /// The verdict on a well-formed request: `Err` holds a deny Warrant gave before Cedar ran.
    fn verdict(
        &self,
        snapshot: &Snapshot,
        request: &CheckRequest,
        resolved: &Resolved<'_>,
        action_uid: EntityUid,
        now: UnixMillis,
    ) -> Result<Result<Verdict, Verdict>, InvalidRequest> {
        let cedar_request =
            match self.cedar_request(snapshot, request, resolved, action_uid, now)? {
                Ok(cedar_request) => cedar_request,
                Err(verdict) => return Ok(Err(verdict)),
            };
        let facts = &snapshot.facts;
        let response = self.authorizer.is_authorized(
            &cedar_request,
            snapshot.policies.policies(),
            facts.entities(),
        );
        self.conclude(resolved, response)
    }

    /// The Cedar request for a well-formed request, with Warrant's own context (`now`, the
    /// approval): `Err` holds a deny Warrant gives before Cedar runs.
    fn cedar_request(
        &self,
        snapshot: &Snapshot,
        request: &CheckRequest,
        resolved: &Resolved<'_>,
        action_uid: EntityUid,
        now: UnixMillis,
    ) -> Result<Result<Request, Verdict>, InvalidRequest> {
        let facts = &snapshot.facts;
        // Facts Warrant checks itself, before any policy: fail closed on what it cannot resolve.
        if resolved.identity.is_none() && facts.entities().get(&resolved.principal_uid).is_none() {
            return Ok(Err(Verdict::warrant_deny(
                Reason::UnknownPrincipal.as_str(),
            )));
        }
        if facts.entities().get(&resolved.resource_uid).is_none() {
            return Ok(Err(Verdict::warrant_deny(Reason::UnknownResource.as_str())));
        }
        if request.approval_id.is_some() {
            match resolved.approval {
                None => return Ok(Err(Verdict::warrant_deny(Reason::UnknownApproval.as_str()))),
                Some(approval) if approval.subject != resolved.principal_uid => {
                    return Ok(Err(Verdict::warrant_deny(
                        Reason::ApprovalReplayed.as_str(),
                    )));
                }
                Some(_) => {}
            }
        }

        let mut context: Vec<(String, RestrictedExpression)> = request
            .context
            .iter()
            .map(|(key, value)| (key.clone(), cedar_value(value)))
            .collect();
        context.push(("now".to_owned(), cedar_datetime(now)));
        if let Some(approval) = resolved.approval {
            context.push((
                "approval".to_owned(),
                RestrictedExpression::new_entity_uid(approval.uid.clone()),
            ));
        }
        let context = Context::from_pairs(context)
            .map_err(|error| InvalidRequest::new("context", error.to_string()))?;
        let cedar_request = match Request::new(
            resolved.principal_uid.clone(),
            action_uid,
            resolved.resource_uid.clone(),
            context,
            Some(snapshot.policies.schema()),
        ) {
            Ok(cedar_request) => cedar_request,
            Err(RequestValidationError::InvalidPrincipalType(_))
            | Err(RequestValidationError::InvalidResourceType(_)) => {
                return Ok(Err(Verdict::warrant_deny(
                    Reason::ActionNotApplicable.as_str(),
                )));
            }
            Err(RequestValidationError::UndeclaredAction(error)) => {
                return Err(InvalidRequest::new("action", error.to_string()));
            }
            Err(RequestValidationError::UndeclaredPrincipalType(error)) => {
                return Err(InvalidRequest::new("principal.type", error.to_string()));
            }
            Err(RequestValidationError::UndeclaredResourceType(error)) => {
                return Err(InvalidRequest::new("resource.type", error.to_string()));
            }
            // Cedar's message quotes the context's values, which may be secrets: say which key
            // does not fit, from the schema's declaration, and never the value.
            Err(_) => {
                let misfit = snapshot
                    .policies
                    .contexts()
                    .get(&request.action)
                    .and_then(|shape| shape.misfit(&request.context, &RESERVED_CONTEXT_KEYS));
                return Err(match misfit {
                    Some((field, message)) => InvalidRequest::new(field, message),
                    None => InvalidRequest::new(
                        "context",
                        format!(
                            "does not fit the context the schema declares for action {}",
                            quote(&request.action)
                        ),
                    ),
                });
            }
        };
        Ok(Ok(cedar_request))
    }

    /// Cedar's response under Warrant's rules: any error denies; a limited approval's allow
    /// takes one of its uses.
    fn conclude(
        &self,
        resolved: &Resolved<'_>,
        response: cedar_policy::Response,
    ) -> Result<Result<Verdict, Verdict>, InvalidRequest> {
        let mut verdict = cedar_verdict(&response);
        if verdict.effect == Effect::Allow
            && let Some((approval, max_uses)) =
                resolved.approval.and_then(|a| Some((a, a.max_uses?)))
        {
            let id = approval.uid.id().unescaped();
            let counted = match &self.uses {
                Some(uses) => uses.consume(id, max_uses),
                None => Err(UseCountError("no use counter is configured".into())),
            };
            match counted {
                Ok(Some(number)) => verdict.approval_use = Some(number),
                Ok(None) => {
                    return Ok(Err(Verdict::warrant_deny(
                        Reason::ApprovalUsesExhausted.as_str(),
                    )));
                }
                Err(error) => {
                    tracing::error!(approval = id, %error, "cannot record a use of a limited approval; denying");
                    return Ok(Err(Verdict::warrant_deny(
                        Reason::ApprovalUseNotRecorded.as_str(),
                    )));
                }
            }
        }
        Ok(Ok(verdict))
    }

    /// What the candidate (shadow) policies would have decided: the same facts, the same
    /// request, the same fail-closed rules, but no approval use is taken and nothing answers.
    fn shadow_verdict(
        &self,
        snapshot: &Snapshot,
        candidate: &Arc<PolicySnapshot>,
        request: &CheckRequest,
        resolved: &Resolved<'_>,
        now: UnixMillis,
    ) -> ShadowVerdict {
        let verdict = match candidate.actions().get(&request.action) {
            None => Verdict::warrant_deny(Reason::NotDecidableByCandidate.as_str()),
            Some(action_uid) => {
                let under_candidate = Snapshot {
                    policies: Arc::clone(candidate),
                    facts: Arc::clone(&snapshot.facts),
                };
                match self.cedar_request(
                    &under_candidate,
                    request,
                    resolved,
                    action_uid.clone(),
                    now,
                ) {
                    Err(_) => Verdict::warrant_deny(Reason::NotDecidableByCandidate.as_str()),
                    Ok(Err(verdict)) => verdict,
                    Ok(Ok(cedar_request)) => cedar_verdict(&self.authorizer.is_authorized(
                        &cedar_request,
                        candidate.policies(),
                        snapshot.facts.entities(),
                    )),
                }
            }
        };
        ShadowVerdict {
            effect: verdict.effect,
            reasons: verdict.reasons,
            error_count: verdict.errors.len(),
            policy_version: Arc::clone(candidate.version()),
        }
    }

    /// Gives a verdict its id, time, validity and evidence.
    fn stamp(
        &self,
        snapshot: &Snapshot,
        shadow: Option<&PolicySnapshot>,
        request: &CheckRequest,
        resolved: &Resolved<'_>,
        now: UnixMillis,
        verdict: Verdict,
    ) -> Decision {
        let facts = &snapshot.facts;
        let approval = resolved.approval.map(|approval| {
            let bound = approval.subject == resolved.principal_uid;
            ApprovalEvidence {
                valid_at_decision: bound && approval.is_valid_at(now),
                replay_suspected: !bound,
                use_number: verdict.approval_use,
                approval: Arc::clone(approval),
            }
        });
        let max_age = match verdict.effect {
            Effect::Allow => self.settings.allow_max_age_ms,
            Effect::Deny => self.settings.deny_max_age_ms,
        };
        let time_use = &snapshot.policies.time_use();
        // A shadow set's verdict is cached with the decision, so its times count too.
        let shadow_time = shadow.map(|s| s.time_use());
        let valid_until = if time_use.arithmetic || shadow_time.is_some_and(|t| t.arithmetic) {
            // The policies compute with the clock: the answer is known for this millisecond only.
            now.saturating_add_millis(1)
        } else {
            // Otherwise the answer can change only when the clock crosses a time the decision
            // could have compared it with: in the facts of the entities it could read, or in
            // the policies themselves.
            let read = [&resolved.principal_uid, &resolved.resource_uid]
                .into_iter()
                .chain(resolved.approval.map(|approval| &approval.uid))
                .chain(&time_use.entity_literals)
                .chain(shadow_time.into_iter().flat_map(|t| &t.entity_literals))
                .map(|uid| facts.time_bounds(uid));
            let horizon = now.saturating_add_millis(max_age);
            read.chain([time_use.datetime_literals.as_slice()])
                .chain(shadow_time.map(|t| t.datetime_literals.as_slice()))
                .filter_map(|bounds| next_change(bounds, now))
                .fold(horizon, UnixMillis::min)
        };
        let decision_id = new_decision_id(now);
        let resource_scopes = facts
            .resource_scopes()
            .get(&resolved.resource_uid)
            .cloned()
            .unwrap_or_else(|| Arc::from([]));
        Decision {
            effect: verdict.effect,
            decision_id,
            reasons: verdict.reasons,
            errors: verdict.errors,
            provenance: Provenance {
                principal: request.principal.clone(),
                identity: resolved.identity.cloned(),
                approval,
                resource: request.resource.clone(),
                resource_scopes,
                decided_at: now,
                facts_version: Arc::clone(facts.version()),
                evaluation_id: decision_id,
                answered_from_cache: false,
            },
            valid_until,
            policy_version: Arc::clone(snapshot.policies.version()),
            request_id: request.request_id.clone(),
            shadow: None,
        }
    }
}

/// The first instant after `now` at which comparing the clock with one of `bounds` (sorted)
/// can give a different result: a bound `t` changes `<` and `>=` at `t`, and `<=`, `>` and
/// `==` at `t + 1ms`.
fn next_change(bounds: &[UnixMillis], now: UnixMillis) -> Option<UnixMillis> {
    let first_not_past = bounds.partition_point(|bound| *bound < now);
    match bounds.get(first_not_past) {
        Some(bound) if *bound == now => Some(now.saturating_add_millis(1)),
        Some(bound) => Some(*bound),
        None => None,
    }
}

/// Cedar's answer under Warrant's rules: any policy error denies (Cedar skips a policy that
/// errors, so a skipped forbid could have let an allow through); a deny says why.
fn cedar_verdict(response: &cedar_policy::Response) -> Verdict {
    let diagnostics = response.diagnostics();
    let errors: Vec<PolicyError> = diagnostics
        .errors()
        .map(|error| {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(error) = error;
            PolicyError {
                policy_id: error.policy_id().to_string(),
                message: error.inner().to_string(),
            }
        })
        .collect();
    let mut reasons: Vec<String> = diagnostics.reason().map(ToString::to_string).collect();
    reasons.sort_unstable();
    let effect = if !errors.is_empty() {
        reasons.push(Reason::EvaluationError.as_str().to_owned());
        Effect::Deny
    } else if response.decision() == CedarDecision::Allow {
        Effect::Allow
    } else {
        if reasons.is_empty() {
            reasons.push(Reason::NoPermittingPolicy.as_str().to_owned());
        }
        Effect::Deny
    };
    Verdict {
        effect,
        reasons,
        errors,
        approval_use: None,
    }
}

/// Turns the caller's names into Cedar ids, refusing what the schema cannot know.
fn parse_names(
    policies: &PolicySnapshot,
    request: &CheckRequest,
) -> Result<(EntityUid, EntityUid, EntityUid), InvalidRequest> {
    let principal = entity_uid(&request.principal, "principal", policies)?;
    let resource = entity_uid(&request.resource, "resource", policies)?;
    if request.action.is_empty() {
        return Err(InvalidRequest::new("action", "required"));
    }
    let action = policies
        .actions()
        .get(&request.action)
        .cloned()
        .ok_or_else(|| {
            InvalidRequest::new(
                "action",
                format!("the schema declares no action {}", quote(&request.action)),
            )
        })?;
    if let Some(approval_id) = &request.approval_id
        && approval_id.is_empty()
    {
        return Err(InvalidRequest::new(
            "approval_id",
            "empty; omit it to present no approval",
        ));
    }
    Ok((principal, action, resource))
}

fn entity_uid(
    entity: &EntityRef,
    field: &str,
    policies: &PolicySnapshot,
) -> Result<EntityUid, InvalidRequest> {
    if entity.type_name.is_empty() {
        return Err(InvalidRequest::new(format!("{field}.type"), "required"));
    }
    if entity.id.is_empty() {
        return Err(InvalidRequest::new(format!("{field}.id"), "required"));
    }
    let type_name = policies
        .entity_types()
        .get(&entity.type_name)
        .filter(|_| entity.type_name != APPROVAL_TYPE)
        .ok_or_else(|| {
            InvalidRequest::new(
                format!("{field}.type"),
                format!(
                    "the schema declares no {field} type {}",
                    quote(&entity.type_name)
                ),
            )
        })?;
    Ok(EntityUid::from_type_name_and_id(
        type_name.clone(),
        EntityId::new(&entity.id),
    ))
}

/// `now` as a Cedar `datetime` expression. Building one costs microseconds (Cedar resolves the
/// extension's name on every call), so each thread keeps the one for the current millisecond.
fn cedar_datetime(now: UnixMillis) -> RestrictedExpression {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(UnixMillis, RestrictedExpression)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((at, expression)) if *at == now => expression.clone(),
        _ => {
            let expression = RestrictedExpression::new_datetime(now.to_cedar_datetime());
            *last = Some((now, expression.clone()));
            expression
        }
    })
}

/// A UUIDv7 stamped with decision time (from the injected clock), random in its other bits.
fn new_decision_id(now: UnixMillis) -> Uuid {
    let millis = now.0.max(0) as u64;
    let timestamp = uuid::Timestamp::from_unix(
        uuid::NoContext,
        millis / 1_000,
        ((millis % 1_000) * 1_000_000) as u32,
    );
    Uuid::new_v7(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_change_is_at_a_bound_or_just_after_one_that_is_now() {
        let bounds = [UnixMillis(10), UnixMillis(20), UnixMillis(30)];
        assert_eq!(next_change(&bounds, UnixMillis(5)), Some(UnixMillis(10)));
        // `now == 20` can flip at 21 (for `<=`, `>`, `==`).
        assert_eq!(next_change(&bounds, UnixMillis(20)), Some(UnixMillis(21)));
        assert_eq!(next_change(&bounds, UnixMillis(21)), Some(UnixMillis(30)));
        assert_eq!(next_change(&bounds, UnixMillis(31)), None);
        assert_eq!(next_change(&[], UnixMillis(0)), None);
    }
}
