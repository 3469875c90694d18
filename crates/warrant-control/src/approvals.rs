//! Approvals through the admin API: granting one (Warrant's rules beyond the schema:
//! separation of duties, a bounded window, known actions and scope), revoking it, and reading
//! them back with their state.

use super::change_rules::{ApprovalTerms, Approver};
use super::*;

/// Approval attributes set by their own fields of a grant, not through `attributes`.
const APPROVAL_FIELDS: [&str; 9] = [
    "ticket",
    "approver",
    "actions",
    "scope",
    "not_before",
    "expires_at",
    "revoked",
    "playbook",
    "max_uses",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalState {
    Pending,
    Active,
    Expired,
    Revoked,
    Exhausted,
}

/// A grant, as asked for.
#[derive(Debug, Clone, Default)]
pub struct ApprovalGrant {
    pub id: Option<String>,
    pub ticket: String,
    pub approver: Option<EntityRef>,
    /// The approver's own credential (a JWT naming a Human), if they presented one.
    pub approver_credential: Option<String>,
    pub requester: Option<EntityRef>,
    pub subject: Option<EntityRef>,
    pub actions: Vec<String>,
    pub scope: Option<EntityRef>,
    /// Now when `None`.
    pub not_before: Option<UnixMillis>,
    pub expires_at: Option<UnixMillis>,
    pub max_uses: Option<u64>,
    pub playbook: Option<String>,
    pub justification: Option<String>,
    /// Further attributes the schema declares for approvals, in Cedar's JSON form.
    pub attributes: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct ApprovalView {
    pub approval: Arc<Approval>,
    /// Its attributes beyond the ones `Approval` holds, in Cedar's JSON form.
    pub attributes: Map<String, Value>,
    pub meta: ChangeMeta,
    pub uses: u64,
    /// What its uses have spent, for an approval with a budget.
    pub spent: u64,
    pub origin: Origin,
    pub state: ApprovalState,
}

#[derive(Debug, Clone, Default)]
pub struct ApprovalFilter {
    pub subject: Option<EntityRef>,
    pub ticket: Option<String>,
    pub state: Option<ApprovalState>,
}

impl Control {
    /// Grants an approval, its approver named or proven by their credential (`Control::approver`).
    pub fn grant_approval(&self, grant: ApprovalGrant) -> Result<ApprovalView, ControlError> {
        let approver = self.approver(
            grant.approver.as_ref(),
            grant.approver_credential.as_deref(),
            "approval.approver",
        )?;
        self.grant_by(grant, approver)
    }

    /// Grants an approval given by `approver`, whose identity is settled.
    pub(super) fn grant_by(
        &self,
        grant: ApprovalGrant,
        approver: Approver,
    ) -> Result<ApprovalView, ControlError> {
        let (mut state, publishing) = self.changing()?;
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let now = self.clock.now();
        let id = match grant.id.as_deref() {
            Some("") | None => format!("apr-{}", uuid::Uuid::now_v7()),
            Some(id) => id.to_owned(),
        };
        if facts.approval(&id).is_some() {
            return Err(ControlError::AlreadyExists(format!(
                "an approval with id {id:?} exists"
            )));
        }
        if grant.ticket.is_empty() {
            return Err(invalid("approval.ticket", "required"));
        }
        let Approver {
            entity: approver,
            credential: approver_credential,
        } = approver;
        let requester = required_ref(grant.requester.as_ref(), "approval.requester")?;
        let subject = required_ref(grant.subject.as_ref(), "approval.subject")?;
        let scope = required_ref(grant.scope.as_ref(), "approval.scope")?;
        known(&facts, &state.policies, &approver, "approval.approver")?;
        known(&facts, &state.policies, &requester, "approval.requester")?;
        let subject_uid = known(&facts, &state.policies, &subject, "approval.subject")?;
        let Some(identity) = facts.identity(&subject_uid) else {
            return Err(invalid(
                "approval.subject",
                format!(
                    "an approval is granted to an identity ({}), not to a {}",
                    identity_types(state.policies.schema()).join(", "),
                    subject.type_name
                ),
            ));
        };
        known(&facts, &state.policies, &scope, "approval.scope")?;
        if grant.actions.is_empty() {
            return Err(invalid(
                "approval.actions",
                "at least one action is required",
            ));
        }
        let mut actions = Vec::new();
        for (i, action) in grant.actions.iter().enumerate() {
            let uid = state.policies.actions().get(action).ok_or_else(|| {
                invalid(
                    format!("approval.actions[{i}]"),
                    format!("the schema declares no action {action:?}"),
                )
            })?;
            actions.push(entity_json(uid));
        }
        // Separation of duties, and a window that is the right way round, not too long, and
        // not over.
        let not_before = grant.not_before.unwrap_or(now);
        let expires_at = grant
            .expires_at
            .ok_or_else(|| invalid("approval.expires_at", "required"))?;
        self.rules.approval(
            &ApprovalTerms {
                approver: &approver,
                requester: Some(&requester),
                subject_owner: identity.owner.as_ref().map(|owner| &owner.entity),
                not_before,
                expires_at,
            },
            "approval.",
        )?;
        if expires_at <= now {
            return Err(invalid(
                "approval.expires_at",
                format!("must be in the future (now is {})", now.to_rfc3339()),
            ));
        }
        let mut attrs = Map::new();
        for (key, value) in &grant.attributes {
            if APPROVAL_FIELDS.contains(&key.as_str()) {
                return Err(invalid(
                    format!("approval.attributes.{key}"),
                    "is set by its own field of the grant",
                ));
            }
            attrs.insert(key.clone(), value.clone());
        }
        attrs.insert("ticket".into(), json!(grant.ticket));
        attrs.insert("approver".into(), entity_json(&uid_of(&approver)));
        attrs.insert("actions".into(), Value::Array(actions));
        attrs.insert("scope".into(), entity_json(&uid_of(&scope)));
        attrs.insert("not_before".into(), datetime_json(not_before));
        attrs.insert("expires_at".into(), datetime_json(expires_at));
        attrs.insert("revoked".into(), json!(false));
        if let Some(playbook) = grant.playbook.filter(|p| !p.is_empty()) {
            attrs.insert("playbook".into(), json!(playbook));
        }
        if let Some(max_uses) = grant.max_uses.filter(|n| *n > 0) {
            if max_uses > MAX_EXACT_INTEGER as u64 {
                return Err(invalid("approval.max_uses", "at most 2^53"));
            }
            attrs.insert("max_uses".into(), json!(max_uses));
        }
        #[expect(clippy::expect_used, reason = "a constant type name Cedar parses")]
        let uid = EntityUid::from_type_name_and_id(
            APPROVAL_TYPE.parse().expect("a valid type name"),
            EntityId::new(&id),
        );
        let entity = LiveEntity {
            entity: json!({
                "uid": {"type": APPROVAL_TYPE, "id": id},
                "attrs": attrs,
                "parents": [{"type": subject.type_name, "id": subject.id}],
            }),
            meta: ChangeMeta {
                requester: Some(requester),
                justification: grant.justification.filter(|j| !j.is_empty()),
                granted_at: Some(now.0),
                approver_credential,
                ..ChangeMeta::default()
            },
        };
        self.change(&mut state, publishing, &uid, entity, "approval")?;
        tracing::info!(approval = id, ticket = grant.ticket, %approver, %subject, "approval granted");
        self.approval_in(&state, &id)
    }

    pub fn revoke_approval(&self, id: &str, reason: &str) -> Result<ApprovalView, ControlError> {
        let (mut state, publishing) = self.changing()?;
        let view = self.approval_in(&state, id)?;
        if view.approval.revoked {
            return Ok(view);
        }
        let key = view.approval.uid.to_string();
        let (mut entity, mut meta, _) = self
            .current(&key)
            .ok_or_else(|| ControlError::NotFound(format!("no approval {id:?}")))?;
        entity["attrs"]["revoked"] = json!(true);
        meta.revoked_at = Some(self.clock.now().0);
        meta.revoke_reason = Some(reason.to_owned()).filter(|r| !r.is_empty());
        let uid = view.approval.uid.clone();
        self.change(
            &mut state,
            publishing,
            &uid,
            LiveEntity { entity, meta },
            "id",
        )?;
        tracing::info!(approval = id, reason, "approval revoked");
        self.approval_in(&state, id)
    }

    pub fn approval(&self, id: &str) -> Result<ApprovalView, ControlError> {
        self.approval_in(&self.state(), id)
    }

    fn approval_in(&self, state: &State, id: &str) -> Result<ApprovalView, ControlError> {
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let approval = facts
            .approval(id)
            .ok_or_else(|| ControlError::NotFound(format!("no approval {id:?}")))?;
        self.approval_view(state, &approval)
    }

    fn approval_view(
        &self,
        _locked: &State,
        approval: &Arc<Approval>,
    ) -> Result<ApprovalView, ControlError> {
        let key = approval.uid.to_string();
        let (entity, meta, origin) = self
            .current(&key)
            .ok_or_else(|| ControlError::NotFound(format!("no approval {key}")))?;
        let id = approval.uid.id().unescaped();
        let (uses, spent) = match self.replication() {
            Some(replication) if approval.max_uses.is_some() || approval.budget.is_some() => {
                replication
                    .postgres
                    .counts(id)
                    .map_err(|error| ControlError::SharedStore(error.to_string()))?
            }
            _ => (
                match approval.max_uses {
                    Some(_) => self.store.uses(id)?,
                    None => 0,
                },
                match approval.budget {
                    Some(_) => self.store.spent(id)?,
                    None => 0,
                },
            ),
        };
        let now = self.clock.now();
        let state = if approval.revoked {
            ApprovalState::Revoked
        } else if now >= approval.expires_at {
            ApprovalState::Expired
        } else if approval.max_uses.is_some_and(|max| uses >= max)
            || approval.budget.as_ref().is_some_and(|b| spent >= b.total)
        {
            ApprovalState::Exhausted
        } else if now < approval.not_before {
            ApprovalState::Pending
        } else {
            ApprovalState::Active
        };
        Ok(ApprovalView {
            approval: Arc::clone(approval),
            attributes: other_attributes(&entity, &APPROVAL_FIELDS),
            meta,
            uses,
            spent,
            origin,
            state,
        })
    }

    /// Approvals matching `filter`, by id, after the page token `after`: at most `limit`,
    /// from at most `MAX_LIST_SCAN` read, with the token of the next page.
    pub fn approvals(
        &self,
        filter: &ApprovalFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<ApprovalView>, ControlError> {
        let state = self.state();
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let subject = filter.subject.as_ref().map(uid_of);
        let prefixes = [warrant_facts::type_prefix(APPROVAL_TYPE)];
        page_of(&facts, &prefixes, after, limit, |uid| {
            let Some(approval) = facts.approval(uid.id().unescaped()) else {
                return Ok(None);
            };
            if subject.as_ref().is_some_and(|s| &approval.subject != s)
                || filter
                    .ticket
                    .as_ref()
                    .is_some_and(|t| &approval.ticket != t)
            {
                return Ok(None);
            }
            let view = self.approval_view(&state, &approval)?;
            Ok(filter.state.is_none_or(|s| s == view.state).then_some(view))
        })
    }
}
