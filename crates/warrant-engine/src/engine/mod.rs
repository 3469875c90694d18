//! The decision. Takes a request that names a principal, an action, a resource and maybe an
//! approval; resolves every fact about them from the stores; builds the Cedar request with
//! `context.now` from the injected clock; evaluates; applies the fail-closed rules; and says how
//! long the answer stays valid. Knows nothing of gRPC, HTTP or JSON.

use std::sync::Arc;

use arc_swap::ArcSwap;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entity, EntityId, EntityUid, Request,
    RequestValidationError, RestrictedExpression,
};
use uuid::Uuid;

use crate::cache::{CacheKey, CacheSettings, CachedDecision, DecisionCache, Reads};

use crate::limits::{RequestLimits, quote};
use warrant_domain::APPROVAL_TYPE;
use warrant_domain::clock::{Clock, UnixMillis};
use warrant_domain::ports::{
    CredentialVerifier, FactsFreshness, Take, Taken, UseCountError, UseCounter,
};
use warrant_domain::{
    Approval, ApprovalEvidence, CheckRequest, ContextValue, CredentialEvidence, Decision, Effect,
    EntityRef, Identity, InvalidRequest, PolicyError, Provenance, RESERVED_CONTEXT_KEYS, Reason,
    ResourceFacts, ShadowVerdict,
};
use warrant_facts::Facts;
use warrant_policy::PolicySnapshot;

mod advice;
mod cedar_request;
mod described;
pub mod explain;
pub mod search;
mod validity;

use cedar_request::parse_names;

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
    /// The longest an approval may last (what a denial's approval advice offers).
    pub approval_max_validity_ms: i64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            allow_max_age_ms: 60_000,
            deny_max_age_ms: 10_000,
            cache: Some(CacheSettings::default()),
            limits: RequestLimits::default(),
            approval_max_validity_ms: 30 * 24 * 3_600_000,
        }
    }
}

pub struct Engine {
    snapshot: ArcSwap<Snapshot>,
    clock: Arc<dyn Clock>,
    settings: EngineSettings,
    authorizer: Authorizer,
    cache: Option<DecisionCache>,
    /// Candidate policies evaluated beside the active ones, answering nothing.
    shadow: arc_swap::ArcSwapOption<PolicySnapshot>,
    parts: EngineParts,
}

/// What an engine is given of the world beyond its policies and facts, all at construction:
/// each part is a port (`warrant_domain::ports`) an adapter implements. `Default`: none of them.
#[derive(Clone, Default)]
pub struct EngineParts {
    /// Counts the uses and spends the budgets of limited approvals. `None`: a limited approval
    /// allows nothing.
    pub uses: Option<Arc<dyn UseCounter>>,
    /// Verifies the credentials requests carry. `None`: a request with one is denied (nothing
    /// can verify it).
    pub credentials: Option<Arc<dyn CredentialVerifier>>,
    /// A fleet replica's: past its staleness, every decision is a deny (`warrant:facts-stale`).
    /// `None` on a single node, whose facts are always its own.
    pub freshness: Option<Arc<dyn FactsFreshness>>,
}

/// What an allow under a limited approval does with its uses: a decision takes one, a search
/// only looks whether one is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uses {
    Take,
    Peek,
}

/// What Warrant resolved before evaluating, carried into the decision.
struct Resolved {
    principal_uid: EntityUid,
    resource_uid: EntityUid,
    identity: Option<Arc<Identity>>,
    approval: Option<Arc<Approval>>,
    /// The resource as the caller described it: only for a resource the facts do not hold, of a
    /// type the schema marks `@described_by_caller`.
    described: Option<Entity>,
    resource_facts: ResourceFacts,
    /// The caller described a resource the facts hold; its description was ignored.
    description_ignored: bool,
    /// The credential the request presented, verified; `Err`: why it denies.
    credential: Result<Option<Arc<CredentialEvidence>>, Reason>,
}

impl Resolved {
    fn of(
        snapshot: &Snapshot,
        request: &CheckRequest,
        principal_uid: EntityUid,
        resource_uid: EntityUid,
    ) -> Result<Self, InvalidRequest> {
        let facts = &snapshot.facts;
        let stored = facts.contains(&resource_uid);
        let described = if stored {
            None
        } else {
            described::described_resource(snapshot, request, &resource_uid)?
        };
        Ok(Resolved {
            identity: facts.identity(&principal_uid),
            approval: request
                .approval_id
                .as_deref()
                .and_then(|id| facts.approval(id)),
            principal_uid,
            resource_uid,
            resource_facts: match (stored, &described) {
                (true, _) => ResourceFacts::Stored,
                (false, Some(_)) => ResourceFacts::DescribedByCaller,
                (false, None) => ResourceFacts::Unknown,
            },
            description_ignored: stored && request.resource_description.is_some(),
            described,
            credential: Ok(None),
        })
    }
}

/// A decision before it is stamped: what was decided, not yet when or under which id.
struct Verdict {
    effect: Effect,
    reasons: Vec<String>,
    errors: Vec<PolicyError>,
    /// The use of a limited approval this allow took.
    approval_use: Option<u64>,
    /// What this allow spent from its approval's budget, and what is left.
    budget: Option<(u64, u64)>,
}

impl Verdict {
    fn warrant_deny(why: &str) -> Self {
        Verdict {
            effect: Effect::Deny,
            reasons: vec![why.to_owned()],
            errors: Vec::new(),
            approval_use: None,
            budget: None,
        }
    }

    /// A deny because Warrant itself failed (logged by the caller): the error is recorded.
    fn internal_error(message: String) -> Self {
        Verdict {
            effect: Effect::Deny,
            reasons: vec![Reason::InternalError.as_str().to_owned()],
            errors: vec![PolicyError {
                policy_id: Reason::InternalError.as_str().to_owned(),
                message,
            }],
            approval_use: None,
            budget: None,
        }
    }
}

impl Engine {
    pub fn new(
        snapshot: Snapshot,
        clock: Arc<dyn Clock>,
        settings: EngineSettings,
        parts: EngineParts,
    ) -> Self {
        Engine {
            snapshot: ArcSwap::from_pointee(snapshot),
            cache: settings.cache.map(DecisionCache::new),
            clock,
            settings,
            authorizer: Authorizer::new(),
            shadow: arc_swap::ArcSwapOption::empty(),
            parts,
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

    /// Whether this engine decides from a fleet replica's copy of the facts.
    pub fn follows_a_fleet(&self) -> bool {
        self.parts.freshness.is_some()
    }

    /// Whether this replica's facts are past their staleness now (every decision is a deny).
    pub fn facts_stale(&self) -> bool {
        self.parts
            .freshness
            .as_ref()
            .is_some_and(|freshness| freshness.is_stale(self.clock.now()))
    }

    /// The verified credential `principal` presents, now: `Err` is the reason to refuse
    /// (none where one is required, one that does not verify, or one for someone else).
    pub fn credential_for(
        &self,
        principal: &EntityRef,
        credential: Option<&warrant_domain::Credential>,
    ) -> Result<Option<Arc<CredentialEvidence>>, Reason> {
        self.credential_at(principal, credential, self.clock.now())
    }

    /// What `principal`'s credential proves, at `now`: `Ok(None)` without one (unless the
    /// principal's type requires one), `Err` with the reason to deny.
    fn credential_at(
        &self,
        principal: &EntityRef,
        credential: Option<&warrant_domain::Credential>,
        now: UnixMillis,
    ) -> Result<Option<Arc<CredentialEvidence>>, Reason> {
        self.bind_credential(principal, self.verify_credential(credential, now))
    }

    /// What a presented credential proves at `now`, whoever presents it: `Ok(None)` for none.
    fn verify_credential(
        &self,
        credential: Option<&warrant_domain::Credential>,
        now: UnixMillis,
    ) -> Result<Option<Arc<CredentialEvidence>>, Reason> {
        let Some(token) = credential.map(|c| c.0.as_str()) else {
            return Ok(None);
        };
        let credentials = self
            .parts
            .credentials
            .as_ref()
            .ok_or(Reason::CredentialUnknownIssuer)?;
        Ok(Some(Arc::new(credentials.verify(token, now)?)))
    }

    /// A verified credential (or none) as `principal`'s: `Err` for none where its type requires
    /// one, or one proving someone else.
    fn bind_credential(
        &self,
        principal: &EntityRef,
        verified: Result<Option<Arc<CredentialEvidence>>, Reason>,
    ) -> Result<Option<Arc<CredentialEvidence>>, Reason> {
        match verified? {
            None => match &self.parts.credentials {
                Some(credentials) if credentials.required_for(&principal.type_name) => {
                    Err(Reason::CredentialRequired)
                }
                _ => Ok(None),
            },
            Some(evidence) if evidence.principal != *principal => Err(Reason::CredentialMismatch),
            Some(evidence) => Ok(Some(evidence)),
        }
    }

    /// The time decisions are made at, now (the engine's clock).
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// The policies and facts decisions are made from right now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Makes every later decision use `snapshot`. From the moment this returns, no cached
    /// decision made under other policies is answered (their keys carry the policy versions),
    /// nor one that read an entity whose revision differs in the new facts (its entry holds the
    /// revisions it read). The others stay true and keep answering. (Nothing is cleared:
    /// entries age out or are evicted.) Facts that do not descend from the old ones
    /// (`Facts::with_changes`, `Facts::succeeding`) start a new lineage, which no entry made
    /// before matches.
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
        let decision = match &self.parts.freshness {
            Some(freshness) if freshness.is_stale(now) => self.refusal(
                request,
                Reason::FactsStale.as_str(),
                Some(format!(
                    "this replica's facts were last known complete {} ms ago (max_staleness {} ms): \
                     it cannot reach the shared database",
                    freshness.lag_ms(now),
                    freshness.max_staleness_ms()
                )),
            ),
            _ => self.answer(&snapshot, request, now)?,
        };
        span.record("decision", tracing::field::debug(decision.effect));
        span.record("decision_id", tracing::field::display(decision.decision_id));
        span.record("cached", decision.provenance.answered_from_cache);
        span.record("reasons", tracing::field::debug(&decision.reasons));
        span.record("error_count", decision.errors.len());
        Ok(decision)
    }

    /// Gives back the approval use `decision` took, if it took one: its record could not be
    /// written, so it is answered as a deny and must not count.
    pub fn release_use(&self, decision: &Decision) {
        let Some(evidence) = &decision.provenance.approval else {
            return;
        };
        if evidence.use_number.is_none() && evidence.budget_spent.is_none() {
            return;
        }
        let id = evidence.approval.uid.id().unescaped();
        if let Some(uses) = &self.parts.uses
            && let Err(error) =
                uses.give_back(id, evidence.use_number.is_some(), evidence.budget_spent)
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
                resource_facts: ResourceFacts::Unknown,
                resource_description_ignored: false,
                decided_at: now,
                facts_version: Arc::clone(snapshot.facts.version()),
                evaluation_id: decision_id,
                answered_from_cache: false,
                policy_links: Vec::new(),
                credential: None,
            },
            valid_until: now,
            policy_version: Arc::clone(snapshot.policies.version()),
            request_id: request.request_id,
            shadow: None,
            approval_required: None,
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
            return self
                .evaluate(snapshot, shadow.as_ref(), request, now, false, Uses::Take)
                .map(|(decision, _)| decision);
        };
        // A malformed request is never cached, so looking up before validating is safe.
        let key = CacheKey {
            principal: request.principal.clone(),
            action: request.action.clone(),
            resource: request.resource.clone(),
            context: request.context.clone(),
            approval_id: request.approval_id.clone(),
            resource_description: request.resource_description.clone(),
            caller_identity: request.caller_identity.clone(),
            credential_sha256: request.credential.as_ref().map(|token| {
                use sha2::Digest as _;
                sha2::Sha256::digest(token.0.as_bytes()).into()
            }),
            policy_version: Arc::clone(snapshot.policies.files_version()),
            links_lineage: snapshot.policies.links().lineage(),
            facts_lineage: snapshot.facts.lineage(),
            shadow_version: shadow.as_ref().map(|s| Arc::clone(s.version())),
        };
        let links = snapshot.policies.links();
        // A decision made under a credential holds while the credential still verifies (its
        // key may have left its issuer's set since): a lookup by the hash the key holds.
        let credential_holds = || match (&key.credential_sha256, &self.parts.credentials) {
            (None, _) => true,
            (Some(digest), Some(credentials)) => credentials.still_verified(digest, now),
            (Some(_), None) => false,
        };
        if let Some(entry) = cache.get(&key, now, |entry| {
            snapshot.facts.unchanged_since(entry.read_at, &entry.reads)
                && links
                    .unchanged_since(entry.links_read_at, entry.reads.iter().map(|(uid, _)| uid))
        }) && credential_holds()
        {
            let mut decision = entry.decision.clone();
            decision.decision_id = new_decision_id(now);
            decision.provenance.decided_at = now;
            // Nothing it read has changed, so these facts decide it the same way.
            decision.provenance.facts_version = Arc::clone(snapshot.facts.version());
            // Nor did any link that could match it.
            decision.policy_version = Arc::clone(snapshot.policies.version());
            decision.provenance.answered_from_cache = true;
            decision.valid_until = entry.expires_at;
            decision.request_id = request.request_id.clone();
            return Ok(decision);
        }
        // Errors are never cached (the shadow set's neither); nor is anything under policies
        // that do arithmetic on time (then what a decision read is not even gathered), nor
        // anything about a limited approval (each allow must take a use).
        let arithmetic = snapshot.policies.time_use().arithmetic
            || shadow.as_ref().is_some_and(|s| s.time_use().arithmetic);
        let (decision, reads) = self.evaluate(
            snapshot,
            shadow.as_ref(),
            request,
            now,
            !arithmetic,
            Uses::Take,
        )?;
        let limited = decision
            .provenance
            .approval
            .as_ref()
            .is_some_and(|evidence| {
                evidence.approval.max_uses.is_some() || evidence.approval.budget.is_some()
            })
            || decision
                .provenance
                .credential
                .as_ref()
                .is_some_and(|credential| credential.single_use);
        let shadow_failed = decision.shadow.as_ref().is_some_and(|s| s.error_count > 0);
        // A credential refused now may pass later for reasons no read tracks (its issuer's
        // keys rotated in): such a deny is decided afresh each time.
        let credential_refused = decision
            .reasons
            .iter()
            .any(|reason| reason.starts_with(Reason::CREDENTIAL_PREFIX));
        if let Some(reads) = reads
            && decision.errors.is_empty()
            && !arithmetic
            && !limited
            && !shadow_failed
            && !credential_refused
        {
            cache.insert(
                key,
                CachedDecision {
                    expires_at: decision.valid_until,
                    decision: decision.clone(),
                    reads,
                    read_at: snapshot.facts.revision(),
                    links_read_at: links.revision(),
                },
            );
        }
        Ok(decision)
    }

    /// A fresh decision, and with `track_reads` what it read (`Facts::reached`; `None` if that
    /// cannot be told, and then the decision must not be cached).
    fn evaluate(
        &self,
        snapshot: &Snapshot,
        shadow: Option<&Arc<PolicySnapshot>>,
        request: &CheckRequest,
        now: UnixMillis,
        track_reads: bool,
        uses: Uses,
    ) -> Result<(Decision, Option<Reads>), InvalidRequest> {
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
        let mut resolved = Resolved::of(snapshot, request, principal_uid, resource_uid)?;
        resolved.credential =
            self.credential_at(&request.principal, request.credential.as_ref(), now);
        let reached = read_by(snapshot, shadow, request, &resolved, &action_uid);
        let read_times = reached
            .as_ref()
            .map_or(&[][..], |reached| reached.datetimes.as_slice());
        let verdict =
            match self.verdict(snapshot, request, &resolved, action_uid.clone(), now, uses)? {
                Ok(verdict) | Err(verdict) => verdict,
            };
        let advice = (verdict.effect == Effect::Deny && advisable(&verdict.reasons))
            .then(|| self.approval_advice(snapshot, request, &resolved, &action_uid, now))
            .flatten();
        let shadow_verdict = shadow
            .map(|candidate| self.shadow_verdict(snapshot, candidate, request, &resolved, now));
        let mut decision = self.stamp(
            snapshot,
            shadow.map(|s| &**s),
            request,
            &resolved,
            now,
            verdict,
            read_times,
        );
        decision.shadow = shadow_verdict;
        decision.approval_required = advice;
        let reads = reached
            .filter(|_| track_reads)
            .map(|reached| reached.reads.into_boxed_slice());
        Ok((decision, reads))
    }

    /// The verdict on a well-formed request: `Err` holds a deny Warrant gave before Cedar ran.
    /// An allow under a limited approval takes a use (`Uses::Take`) or only looks whether one
    /// is left (`Uses::Peek`).
    fn verdict(
        &self,
        snapshot: &Snapshot,
        request: &CheckRequest,
        resolved: &Resolved,
        action_uid: EntityUid,
        now: UnixMillis,
        uses: Uses,
    ) -> Result<Result<Verdict, Verdict>, InvalidRequest> {
        let cedar_request =
            match self.cedar_request(snapshot, request, resolved, action_uid.clone(), now)? {
                Ok(cedar_request) => cedar_request,
                Err(verdict) => return Ok(Err(verdict)),
            };
        let literals = &snapshot.policies.time_use().entity_literals;
        let entities = match slice(&snapshot.facts, resolved, &action_uid, literals) {
            Ok(entities) => entities,
            Err(verdict) => return Ok(Err(verdict)),
        };
        let applicable = match snapshot.policies.applicable(
            &resolved.principal_uid,
            &action_uid,
            &resolved.resource_uid,
            entities.entities(),
        ) {
            Ok(applicable) => applicable,
            Err(error) => {
                tracing::error!(%error, "cannot assemble the policies of a decision; denying");
                return Ok(Err(Verdict::internal_error(error)));
            }
        };
        let response =
            self.authorizer
                .is_authorized(&cedar_request, &applicable, entities.entities());
        self.conclude(request, resolved, response, uses)
    }

    /// Cedar's response under Warrant's rules: any error denies; a limited approval's allow
    /// takes one of its uses (or, peeking, needs one left).
    fn conclude(
        &self,
        request: &CheckRequest,
        resolved: &Resolved,
        response: cedar_policy::Response,
        uses: Uses,
    ) -> Result<Result<Verdict, Verdict>, InvalidRequest> {
        let mut verdict = cedar_verdict(&response);
        let Some(approval) = &resolved.approval else {
            return Ok(Ok(verdict));
        };
        if verdict.effect != Effect::Allow
            || (approval.max_uses.is_none() && approval.budget.is_none())
        {
            return Ok(Ok(verdict));
        }
        let spend = match &approval.budget {
            None => None,
            Some(budget) => match request.context.get(&budget.attribute) {
                Some(ContextValue::Long(amount)) if *amount >= 0 => {
                    Some((*amount as u64, budget.total))
                }
                _ => {
                    return Ok(Err(Verdict::warrant_deny(
                        Reason::ApprovalBudgetAmountMissing.as_str(),
                    )));
                }
            },
        };
        let id = approval.uid.id().unescaped();
        let take = Take {
            max_uses: approval.max_uses,
            spend,
        };
        let taken = match (&self.parts.uses, uses) {
            (Some(counter), Uses::Take) => counter.take(id, take),
            (Some(counter), Uses::Peek) => counter.would_take(id, take),
            (None, _) => Err(UseCountError("no use counter is configured".into())),
        };
        match taken {
            Ok(Taken::Granted {
                use_number,
                budget_left,
            }) => {
                verdict.approval_use = use_number;
                verdict.budget = spend.map(|(amount, _)| (amount, budget_left.unwrap_or(0)));
            }
            Ok(Taken::UsesExhausted) => {
                return Ok(Err(Verdict::warrant_deny(
                    Reason::ApprovalUsesExhausted.as_str(),
                )));
            }
            Ok(Taken::BudgetExhausted) => {
                return Ok(Err(Verdict::warrant_deny(
                    Reason::ApprovalBudgetExhausted.as_str(),
                )));
            }
            Err(error) => {
                tracing::error!(approval = id, %error, "cannot record a use of a limited approval; denying");
                return Ok(Err(Verdict::warrant_deny(
                    Reason::ApprovalUseNotRecorded.as_str(),
                )));
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
        resolved: &Resolved,
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
                    Ok(Ok(cedar_request)) => {
                        let literals = &candidate.time_use().entity_literals;
                        match slice(&snapshot.facts, resolved, action_uid, literals) {
                            Err(verdict) => verdict,
                            Ok(entities) => {
                                match candidate.applicable(
                                    &resolved.principal_uid,
                                    action_uid,
                                    &resolved.resource_uid,
                                    entities.entities(),
                                ) {
                                    Err(error) => Verdict::internal_error(error),
                                    Ok(applicable) => {
                                        cedar_verdict(&self.authorizer.is_authorized(
                                            &cedar_request,
                                            &applicable,
                                            entities.entities(),
                                        ))
                                    }
                                }
                            }
                        }
                    }
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
}

/// The entities a decision can read (`Facts::slice`): the principal, the action, the resource,
/// the presented approval and the entities the policies name, with all they refer to. A slice
/// that cannot be built denies (fail closed) with the reason in the errors.
fn slice(
    facts: &Facts,
    resolved: &Resolved,
    action_uid: &EntityUid,
    literals: &[EntityUid],
) -> Result<warrant_facts::Slice, Verdict> {
    let roots = [&resolved.principal_uid, action_uid, &resolved.resource_uid]
        .into_iter()
        .chain(resolved.approval.as_ref().map(|approval| &approval.uid))
        .chain(literals);
    facts
        .slice(roots, resolved.described.as_ref())
        .map_err(|error| {
            tracing::error!(%error, "cannot gather the facts of a decision; denying");
            Verdict::internal_error(error.to_string())
        })
}

/// Every entity a decision on `request` reads, with its revision, and the datetimes they hold
/// (`Facts::reached`): the principal, the action, the resource, the presented approval (by the
/// id the caller gave, held or not), the entities the active and shadow policies name, and all
/// they refer to. `None` (logged) if that cannot be told.
fn read_by(
    snapshot: &Snapshot,
    shadow: Option<&Arc<PolicySnapshot>>,
    request: &CheckRequest,
    resolved: &Resolved,
    action_uid: &EntityUid,
) -> Option<warrant_facts::Reached> {
    let approval_uid = request
        .approval_id
        .as_deref()
        .and_then(warrant_facts::approval_uid);
    let roots = [&resolved.principal_uid, action_uid, &resolved.resource_uid]
        .into_iter()
        .chain(&approval_uid)
        .chain(&snapshot.policies.time_use().entity_literals)
        .chain(
            shadow
                .into_iter()
                .flat_map(|s| &s.time_use().entity_literals),
        );
    match snapshot.facts.reached(roots, resolved.described.as_ref()) {
        Ok(reached) => Some(reached),
        Err(error) => {
            tracing::error!(%error, "cannot tell what a decision read; not caching it");
            None
        }
    }
}

/// Whether a deny for these reasons may be one an approval would lift: one Cedar's policies
/// gave, or an approval that is unknown or used up. Not one for an unknown principal or
/// resource, a refused credential, an action that does not apply, an approval presented by
/// another identity, or a failure.
fn advisable(reasons: &[String]) -> bool {
    reasons.iter().all(|reason| {
        !reason.starts_with("warrant:")
            || reason == Reason::UnknownApproval.as_str()
            || reason == Reason::ApprovalUsesExhausted.as_str()
            || reason == Reason::NoPermittingPolicy.as_str()
    })
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
        budget: None,
    }
}

/// A UUIDv7 stamped with decision time (from the injected clock), random in its other bits.
fn new_decision_id(now: UnixMillis) -> Uuid {
    let millis = u64::try_from(now.0).unwrap_or(0);
    // Under a second of nanoseconds: fits a u32.
    let nanos = u32::try_from((millis % 1_000) * 1_000_000).unwrap_or(0);
    let timestamp = uuid::Timestamp::from_unix(uuid::NoContext, millis / 1_000, nanos);
    Uuid::new_v7(timestamp)
}
