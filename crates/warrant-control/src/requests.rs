//! Approval requests: an identity (an agent, usually, after a denial that said what approval
//! would allow) asks for an approval; a human approves or rejects it. An approved request
//! becomes an ordinary approval, granted by `grant_approval` with all its rules (separation of
//! duties, the validity cap, the schema), bound to the identity that asked. A request not
//! decided within `approval_request_ttl` expires. Requests are durable in the live store before
//! they are acknowledged; their number is bounded (pending ones per identity, and all of them:
//! the oldest decided ones are forgotten first). Every change wakes the watchers.

use super::approvals::ApprovalGrant;
use super::change_rules::Approver;
use super::*;

/// The most requests kept, pending and decided.
const MOST_REQUESTS: usize = 10_000;
/// The longest justification, reason or ticket, in bytes.
const MOST_TEXT_BYTES: usize = 2_048;

/// What an identity asks for.
#[derive(Debug, Clone, Default)]
pub struct ApprovalAsk {
    pub identity: Option<EntityRef>,
    pub action: String,
    pub resource: Option<EntityRef>,
    /// The scope to approve; the resource's nearest scope when `None`.
    pub scope: Option<EntityRef>,
    pub justification: String,
    pub ticket: Option<String>,
    /// How long the approval is needed for.
    pub duration_ms: i64,
    /// The human the identity acts for, if any: never its approver.
    pub on_behalf_of: Option<EntityRef>,
    /// The decision that prompted it, if any.
    pub decision_id: Option<String>,
    /// A credential proving the caller is the identity: required where the identity's type
    /// requires one for Checks (`credentials.required_for`), verified whenever given.
    pub credential: Option<warrant_domain::Credential>,
    /// For a retried submission: the caller's idempotency key and its submission's digest.
    pub idempotency: Option<Idempotency>,
}

/// An idempotency key as a submission carried it: a retry with the same key, by the same
/// identity, gets the request the first filed, and the same key with a different submission is
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Idempotency {
    pub key: String,
    /// SHA-256 (hex) of the submission, as the API canonicalises it.
    pub submission_sha256: String,
}

/// How the human deciding a request is known.
#[derive(Debug, Clone)]
pub enum ApproverProof {
    /// Named by the admin caller: asserted, refused under `require_authenticated_approver`.
    Named,
    /// Their own credential, a JWT naming a Human.
    Credential(String),
    /// Signed in to the console as that Human: the digest of the sign-in (`console:sha256:..`),
    /// which the request keeps as `decided_by_credential`.
    SignedIn(String),
}

/// A human's decision on a request.
#[derive(Debug, Clone)]
pub enum Verdict {
    Approve {
        approver: EntityRef,
        approver_proof: ApproverProof,
        /// At most the duration asked for; that duration when `None`.
        duration_ms: Option<i64>,
        max_uses: Option<u64>,
        /// A budget over the approval's uses.
        budget: Option<warrant_domain::Budget>,
        /// Why the approver approves, kept as the request's `reason`.
        note: Option<String>,
    },
    Reject {
        approver: EntityRef,
        approver_proof: ApproverProof,
        reason: String,
    },
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Pending,
    Approved,
    Rejected,
    Expired,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Rejected => "rejected",
            RequestState::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            RequestState::Pending,
            RequestState::Approved,
            RequestState::Rejected,
            RequestState::Expired,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// A request as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApprovalRequest {
    pub id: String,
    pub identity: EntityRef,
    pub action: String,
    pub resource: EntityRef,
    pub scope: EntityRef,
    pub justification: String,
    pub ticket: Option<String>,
    pub duration_ms: i64,
    pub on_behalf_of: Option<EntityRef>,
    pub decision_id: Option<String>,
    /// Who filed it, as the transport saw them.
    pub caller: Option<String>,
    pub requested_at: i64,
    /// When it expires if not decided.
    pub expires_at: i64,
    /// `Pending` until decided (an undecided request past `expires_at` reads as expired).
    pub state: RequestState,
    pub decided_by: Option<EntityRef>,
    /// The SHA-256 of the credential `decided_by` presented; `None`: named, not proven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by_credential: Option<String>,
    pub decided_at: Option<i64>,
    /// The approver's reason: why it was rejected, or their note approving it.
    pub reason: Option<String>,
    /// The approval an approved request became.
    pub approval_id: Option<String>,
    /// Until when that approval is valid. (Absent in requests decided before it was kept.)
    #[serde(default)]
    pub approval_expires_at: Option<i64>,
    /// The idempotency key it was filed with, if any.
    #[serde(default)]
    pub idempotency: Option<Idempotency>,
}

impl ApprovalRequest {
    /// Its state at `now`.
    pub fn state_at(&self, now: UnixMillis) -> RequestState {
        match self.state {
            RequestState::Pending if now.0 >= self.expires_at => RequestState::Expired,
            state => state,
        }
    }
}

fn text(value: &str, field: &str, required: bool) -> Result<String, ControlError> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(invalid(field, "required"));
    }
    if value.len() > MOST_TEXT_BYTES {
        return Err(invalid(
            field,
            format!("{} bytes; the limit is {MOST_TEXT_BYTES}", value.len()),
        ));
    }
    Ok(value.to_owned())
}

impl Control {
    /// Files a request, durably; `caller` is who sent it, as the transport saw them.
    pub fn request_approval(
        &self,
        ask: ApprovalAsk,
        caller: Option<String>,
    ) -> Result<ApprovalRequest, ControlError> {
        let _one_at_a_time = self.lock_requests();
        let state = self.state();
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let now = self.clock.now();
        let identity = required_ref(ask.identity.as_ref(), "identity")?;
        let identity_uid = known(&facts, &state.policies, &identity, "identity")?;
        // Whoever may act as the identity may ask for it, as for a Check.
        self.engine
            .credential_for(&identity, ask.credential.as_ref())
            .map_err(|reason| ControlError::Refused(reason.as_str().to_owned()))?;
        if facts.identity(&identity_uid).is_none() {
            return Err(invalid(
                "identity",
                format!("{identity} is not an identity an approval can be granted to"),
            ));
        }
        if !state.policies.actions().contains_key(&ask.action) {
            return Err(invalid(
                "action",
                format!("the schema declares no action {:?}", ask.action),
            ));
        }
        let resource = required_ref(ask.resource.as_ref(), "resource")?;
        let resource_uid = known(&facts, &state.policies, &resource, "resource")?;
        let scope = match ask.scope {
            Some(scope) if !scope.type_name.is_empty() || !scope.id.is_empty() => {
                let scope = required_ref(Some(&scope), "scope")?;
                known(&facts, &state.policies, &scope, "scope")?;
                scope
            }
            _ => facts
                .scopes_of(&resource_uid)
                .first()
                .cloned()
                .ok_or_else(|| {
                    invalid("scope", format!("required: {resource} lies in no scope"))
                })?,
        };
        if let Some(human) = &ask.on_behalf_of {
            let human = required_ref(Some(human), "on_behalf_of")?;
            known(&facts, &state.policies, &human, "on_behalf_of")?;
            if human.type_name != HUMAN_TYPE {
                return Err(invalid(
                    "on_behalf_of",
                    format!("names the {HUMAN_TYPE} the identity acts for"),
                ));
            }
        }
        if ask.duration_ms <= 0 {
            return Err(invalid("duration", "required, and more than 0"));
        }
        if ask.duration_ms > self.rules.approval_max_validity_ms {
            return Err(invalid(
                "duration",
                format!(
                    "longer than an approval may last ({} s, setting approval_max_validity_hours)",
                    self.rules.approval_max_validity_ms / 1000
                ),
            ));
        }
        let justification = text(&ask.justification, "justification", true)?;
        let ticket = ask
            .ticket
            .as_deref()
            .map(|t| text(t, "ticket", false))
            .transpose()?
            .filter(|t| !t.is_empty());
        let all: BTreeMap<String, ApprovalRequest> = self.store.approval_requests()?;
        if let Some(idempotency) = &ask.idempotency {
            let first = all.values().find(|r| {
                r.identity == identity
                    && r.idempotency
                        .as_ref()
                        .is_some_and(|i| i.key == idempotency.key)
            });
            if let Some(first) = first {
                if first.idempotency.as_ref() != Some(idempotency) {
                    return Err(ControlError::Conflict(format!(
                        "idempotency key {:?} was used by {identity} for a different submission \
                         (request {})",
                        idempotency.key, first.id
                    )));
                }
                let mut first = first.clone();
                first.state = first.state_at(now);
                return Ok(first);
            }
        }
        let forget = self.room_for(&all, &identity, now)?;
        self.ledger_accepting()?;
        let request = ApprovalRequest {
            id: format!("req-{}", uuid::Uuid::now_v7()),
            identity,
            action: ask.action,
            resource,
            scope,
            justification,
            ticket,
            duration_ms: ask.duration_ms,
            on_behalf_of: ask.on_behalf_of,
            decision_id: ask.decision_id.filter(|d| !d.is_empty()),
            caller,
            requested_at: now.0,
            expires_at: now.0.saturating_add(self.rules.approval_request_ttl_ms),
            state: RequestState::Pending,
            decided_by: None,
            decided_by_credential: None,
            decided_at: None,
            reason: None,
            approval_id: None,
            approval_expires_at: None,
            idempotency: ask.idempotency,
        };
        self.store
            .put_approval_request(&request.id, &request, &forget)?;
        drop(state);
        tracing::info!(request = request.id, identity = %request.identity, action = request.action, resource = %request.resource, "approval requested");
        self.requests_changed.send_modify(|n| *n += 1);
        let recorded = self.record_step("filed", &request, now, None);
        self.tell_webhook("approval_requested", &request);
        recorded.map(|()| request)
    }

    /// Whether `identity` may file one more request now, and which decided (or expired)
    /// requests to forget to keep the store bounded: the oldest, as many as it takes.
    fn room_for(
        &self,
        all: &BTreeMap<String, ApprovalRequest>,
        identity: &EntityRef,
        now: UnixMillis,
    ) -> Result<Vec<String>, ControlError> {
        let pending = all
            .values()
            .filter(|r| r.identity == *identity && r.state_at(now) == RequestState::Pending)
            .count();
        if pending >= self.rules.max_pending_requests_per_identity {
            return Err(ControlError::Exhausted(format!(
                "{identity} has {pending} approval requests pending; the limit is {} \
                 (setting approval_requests_max_pending)",
                self.rules.max_pending_requests_per_identity
            )));
        }
        // Bounded: the oldest decided (or expired) requests make room.
        let mut forget = Vec::new();
        if all.len() >= MOST_REQUESTS {
            let mut done: Vec<&ApprovalRequest> = all
                .values()
                .filter(|r| r.state_at(now) != RequestState::Pending)
                .collect();
            done.sort_by_key(|r| r.decided_at.unwrap_or(r.expires_at));
            forget = done
                .iter()
                .take(all.len() + 1 - MOST_REQUESTS)
                .map(|r| r.id.clone())
                .collect();
            if all.len() - forget.len() >= MOST_REQUESTS {
                return Err(ControlError::Exhausted(format!(
                    "{MOST_REQUESTS} approval requests are pending; none can be filed until \
                     some are decided or expire"
                )));
            }
        }
        Ok(forget)
    }

    /// One request, as it stands now.
    pub fn approval_request(&self, id: &str) -> Result<ApprovalRequest, ControlError> {
        let now = self.clock.now();
        self.store
            .approval_request::<ApprovalRequest>(id)?
            .map(|mut request| {
                request.state = request.state_at(now);
                request
            })
            .ok_or_else(|| ControlError::NotFound(format!("no approval request {id:?}")))
    }

    /// Requests in `state` (all when `None`), for `identity` if given, oldest first.
    pub fn approval_requests(
        &self,
        state: Option<RequestState>,
        identity: Option<&EntityRef>,
    ) -> Result<Vec<ApprovalRequest>, ControlError> {
        let all: BTreeMap<String, ApprovalRequest> = self.store.approval_requests()?;
        let now = self.clock.now();
        let mut found: Vec<ApprovalRequest> = all
            .into_values()
            .map(|mut request| {
                request.state = request.state_at(now);
                request
            })
            .filter(|r| state.is_none_or(|s| r.state == s))
            .filter(|r| identity.is_none_or(|i| r.identity == *i))
            .collect();
        found.sort_by(|a, b| (a.requested_at, &a.id).cmp(&(b.requested_at, &b.id)));
        Ok(found)
    }

    /// Approves or rejects a pending request. An approval is granted with every rule of
    /// `grant_approval`, and the request names it.
    pub fn decide_approval_request(
        &self,
        id: &str,
        verdict: Verdict,
    ) -> Result<ApprovalRequest, ControlError> {
        let _one_at_a_time = self.lock_requests();
        let mut request = self.approval_request(id)?;
        if request.state != RequestState::Pending {
            return Err(ControlError::Conflict(format!(
                "approval request {id:?} is {}, not pending",
                request.state.as_str()
            )));
        }
        let now = self.clock.now();
        let approver = match &verdict {
            Verdict::Approve {
                approver,
                approver_proof,
                ..
            }
            | Verdict::Reject {
                approver,
                approver_proof,
                ..
            } => match approver_proof {
                ApproverProof::Named => self.approver(Some(approver), None, "approver")?,
                ApproverProof::Credential(token) => {
                    self.approver(Some(approver), Some(token), "approver")?
                }
                ApproverProof::SignedIn(sign_in) => Approver {
                    entity: approver.clone(),
                    credential: Some(sign_in.clone()),
                },
            },
        };
        {
            let state = self.state();
            let facts = Arc::clone(&self.engine.snapshot().facts);
            known(&facts, &state.policies, &approver.entity, "approver")?;
        }
        if approver.entity.type_name != HUMAN_TYPE {
            return Err(invalid(
                "approver",
                format!(
                    "separation of duties: a request is decided by a {HUMAN_TYPE}, not by a {}",
                    approver.entity.type_name
                ),
            ));
        }
        if request.on_behalf_of.as_ref() == Some(&approver.entity) {
            return Err(invalid(
                "approver",
                format!(
                    "separation of duties: {} asked for it (the identity acts for them)",
                    approver.entity
                ),
            ));
        }
        self.ledger_accepting()?;
        let mut granted = None;
        match verdict {
            Verdict::Approve {
                duration_ms,
                max_uses,
                budget,
                note,
                ..
            } => {
                request.reason = note
                    .map(|note| text(&note, "note", false))
                    .transpose()?
                    .filter(|note| !note.is_empty());
                let duration = duration_ms.unwrap_or(request.duration_ms);
                if duration <= 0 || duration > request.duration_ms {
                    return Err(invalid(
                        "duration",
                        format!(
                            "more than 0 and at most what was asked for ({} s)",
                            request.duration_ms / 1000
                        ),
                    ));
                }
                let approval = self.grant_by(
                    ApprovalGrant {
                        id: None,
                        ticket: request.ticket.clone().unwrap_or_else(|| request.id.clone()),
                        // (Settled: `approver`, below.)
                        approver: None,
                        approver_credential: None,
                        requester: Some(
                            request
                                .on_behalf_of
                                .clone()
                                .unwrap_or_else(|| request.identity.clone()),
                        ),
                        subject: Some(request.identity.clone()),
                        actions: vec![request.action.clone()],
                        scope: Some(request.scope.clone()),
                        not_before: Some(now),
                        expires_at: Some(UnixMillis(now.0.saturating_add(duration))),
                        max_uses,
                        playbook: None,
                        justification: Some(request.justification.clone()),
                        attributes: budget
                            .map(|budget| {
                                Map::from_iter([
                                    ("budget_total".to_owned(), json!(budget.total)),
                                    ("budget_attribute".to_owned(), json!(budget.attribute)),
                                ])
                            })
                            .unwrap_or_default(),
                    },
                    approver.clone(),
                )?;
                request.state = RequestState::Approved;
                request.approval_id = Some(approval.approval.uid.id().unescaped().to_owned());
                request.approval_expires_at = Some(approval.approval.expires_at.0);
                granted = Some(max_uses);
            }
            Verdict::Reject { reason, .. } => {
                request.state = RequestState::Rejected;
                request.reason = Some(text(&reason, "reason", true)?);
            }
        }
        request.decided_by = Some(approver.entity);
        request.decided_by_credential = approver.credential;
        request.decided_at = Some(now.0);
        self.store
            .put_approval_request(&request.id, &request, &[])?;
        tracing::info!(request = request.id, state = request.state.as_str(), approver = ?request.decided_by, "approval request decided");
        self.requests_changed.send_modify(|n| *n += 1);
        let event = request.state.as_str();
        let recorded = self.record_step(event, &request, now, granted.flatten());
        self.tell_webhook("approval_request_decided", &request);
        recorded.map(|()| request)
    }

    /// Records ledgers where approval requests' steps go (the server's, when it has one).
    pub fn set_ledger(&self, ledger: Arc<warrant_ledger::Ledger>) {
        let _ = self.ledger.set(ledger);
    }

    /// Refuses a step up front when the ledger has failed: it could not be put on record.
    fn ledger_accepting(&self) -> Result<(), ControlError> {
        match self.ledger.get() {
            Some(ledger) if ledger.stats().failed => Err(ControlError::Unrecorded(
                "the ledger has failed, so approval requests cannot be put on record; nothing \
                 was changed"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    /// Puts a step of `request` on record (durably before it is acknowledged, in the durable
    /// mode), called under the requests lock so the ledger's order is the store's. The step is
    /// already in the store: if the ledger fails now, the caller is told so (UNAVAILABLE) and
    /// the ledger's failure makes every Check a deny until it is fixed, so nothing acts on a
    /// step that is not on record.
    fn record_step(
        &self,
        event: &str,
        request: &ApprovalRequest,
        now: UnixMillis,
        max_uses: Option<u64>,
    ) -> Result<(), ControlError> {
        let Some(ledger) = self.ledger.get() else {
            return Ok(());
        };
        let at = |ms: i64| UnixMillis(ms).to_rfc3339();
        let step = warrant_ledger::ApprovalRequestRecord {
            action: request.action.clone(),
            approval_expires_at: request.approval_expires_at.map(at),
            approval_id: request.approval_id.clone(),
            approval_max_uses: max_uses,
            caller: request.caller.clone(),
            decided_by: request.decided_by.clone(),
            decided_by_credential: request.decided_by_credential.clone(),
            decision_id: request.decision_id.clone(),
            duration_seconds: request.duration_ms / 1000,
            event: event.to_owned(),
            expires_at: at(request.expires_at),
            id: request.id.clone(),
            identity: request.identity.clone(),
            justification: request.justification.clone(),
            on_behalf_of: request.on_behalf_of.clone(),
            reason: request.reason.clone(),
            resource: request.resource.clone(),
            scope: request.scope.clone(),
            ticket: request.ticket.clone(),
            time: now.to_rfc3339(),
        };
        ledger
            .append_approval_request_blocking(&step)
            .map_err(|error| {
                tracing::error!(%error, request = request.id, event, "an approval request's step is stored but not on record");
                ControlError::Unrecorded(format!(
                    "approval request {} is {event} but could not be put on record: {error}",
                    request.id
                ))
            })
    }

    fn lock_requests(&self) -> MutexGuard<'_, ()> {
        self.requests_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells `webhook` (from now on) of every request filed and decided.
    pub fn set_webhook(&self, webhook: Arc<dyn Notifier>) {
        let _ = self.webhook.set(webhook);
    }

    fn tell_webhook(&self, event: &str, request: &ApprovalRequest) {
        if let Some(webhook) = self.webhook.get() {
            let at = |ms: i64| UnixMillis(ms).to_rfc3339();
            webhook.notify(&json!({
                "event": event,
                "request": {
                    "id": request.id,
                    "state": request.state.as_str(),
                    "identity": request.identity,
                    "action": request.action,
                    "resource": request.resource,
                    "scope": request.scope,
                    "justification": request.justification,
                    "ticket": request.ticket,
                    "duration_seconds": request.duration_ms / 1000,
                    "on_behalf_of": request.on_behalf_of,
                    "decision_id": request.decision_id,
                    "requested_at": at(request.requested_at),
                    "expires_at": at(request.expires_at),
                    "decided_by": request.decided_by,
                    "decided_at": request.decided_at.map(at),
                    "reason": request.reason,
                    "approval_id": request.approval_id,
                },
            }));
        }
    }

    /// The control plane's clock.
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// A receiver that changes whenever a request is filed or decided.
    pub fn watch_approval_requests(&self) -> tokio::sync::watch::Receiver<u64> {
        self.requests_changed.subscribe()
    }
}
