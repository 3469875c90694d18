//! The control plane: every change to what decisions are made from goes through here. Admin
//! calls (grant or revoke an approval; create, update or retire an identity) and policy reloads
//! (from the folder watcher or `ReloadPolicies`) are checked against Warrant's rules, a whole new
//! snapshot is built and validated, the change is persisted, and only then is the snapshot
//! swapped into the engine. Changes run one at a time; one that fails leaves everything as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cedar_policy::{EntityId, EntityUid, Schema};
use serde_json::{Map, Value, json};

use crate::clock::{Clock, UnixMillis};
use crate::domain::{Approval, EntityRef, Identity, MAX_EXACT_INTEGER};
use crate::engine::{Engine, EngineSettings, Snapshot, UseCounter};
use crate::facts::{APPROVAL_TYPE, Facts, HUMAN_TYPE, load_entities_file, merged};
use crate::policy::PolicySnapshot;
use crate::store::{ChangeMeta, LiveEntity, LiveStore, StoreError};

/// The statuses an identity can have.
pub const IDENTITY_STATUSES: [&str; 3] = ["active", "suspended", "retired"];
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
/// How long the folder must be quiet after a change before it is reloaded.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(250);

/// The rules the control plane enforces beyond the schema.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The longest an approval may last, from `not_before` to `expires_at`.
    pub approval_max_validity_ms: i64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            approval_max_validity_ms: 30 * 24 * 3_600_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The change breaks a rule or does not fit the schema; `field` names the culprit.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A policy reload failed; the last good set keeps serving.
    #[error("{0}")]
    ReloadFailed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ControlError {
    ControlError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Where an entity's current form comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The policy folder's `entities.json`, unchanged.
    File,
    /// Changed or created through the admin API.
    Live,
}

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
    pub origin: Origin,
    pub state: ApprovalState,
}

#[derive(Debug, Clone, Default)]
pub struct ApprovalFilter {
    pub subject: Option<EntityRef>,
    pub ticket: Option<String>,
    pub state: Option<ApprovalState>,
}

/// A new identity.
#[derive(Debug, Clone, Default)]
pub struct IdentitySpec {
    pub entity: Option<EntityRef>,
    pub owner: Option<EntityRef>,
    /// "active" when `None`.
    pub status: Option<String>,
    pub attributes: Map<String, Value>,
    pub parents: Vec<EntityRef>,
}

/// A partial update: only what is `Some` changes.
#[derive(Debug, Clone, Default)]
pub struct IdentityUpdate {
    pub owner: Option<EntityRef>,
    pub status: Option<String>,
    /// Each key replaces that attribute; `null` removes it.
    pub attributes: Map<String, Value>,
    pub parents: Option<Vec<EntityRef>>,
}

#[derive(Debug, Clone)]
pub struct IdentityView {
    pub entity: EntityRef,
    pub identity: Arc<Identity>,
    /// Its attributes beyond owner and status, in Cedar's JSON form.
    pub attributes: Map<String, Value>,
    pub parents: Vec<EntityRef>,
    pub meta: ChangeMeta,
    pub origin: Origin,
}

#[derive(Debug, Clone, Default)]
pub struct IdentityFilter {
    pub type_name: Option<String>,
    pub owner: Option<EntityRef>,
    pub status: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StatusView {
    pub policy_version: Arc<str>,
    pub policies_loaded_at: UnixMillis,
    /// When the facts last changed (a live change, or a reload that changed them).
    pub facts_changed_at: UnixMillis,
    /// Changes to the facts since start.
    pub facts_changes: u64,
    pub policy_count: usize,
    pub facts_version: Arc<str>,
    pub entity_count: usize,
    pub identity_count: usize,
    pub approval_count: usize,
    pub live_changes: usize,
    pub last_reload_error: Option<(UnixMillis, String)>,
    pub reloads: u64,
    pub reload_failures: u64,
}

/// What the control plane holds between changes. Guarded by one mutex: changes are serialised.
struct State {
    /// The policy folder's policies, as last loaded successfully.
    policies: Arc<PolicySnapshot>,
    /// The policy folder's `entities.json`, by uid, as last loaded successfully.
    base: BTreeMap<String, Value>,
    policies_loaded_at: UnixMillis,
    facts_changed_at: UnixMillis,
    facts_changes: u64,
    /// Every entity changed through the admin API, by uid: they replace the file's.
    live: BTreeMap<String, LiveEntity>,
    reloads: u64,
    reload_failures: u64,
    /// Cleared by the next successful reload.
    last_reload_error: Option<(UnixMillis, String)>,
}

pub struct Control {
    engine: Arc<Engine>,
    store: Arc<LiveStore>,
    policies_dir: PathBuf,
    /// Candidate policies evaluated beside the active ones (`--shadow-policies`), reloaded with
    /// them.
    shadow_dir: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    rules: Rules,
    state: Mutex<State>,
}

impl Control {
    /// Loads the policy folder and the live changes in `store`, and builds the engine on them.
    pub fn open(
        policies_dir: &Path,
        store: LiveStore,
        clock: Arc<dyn Clock>,
        settings: EngineSettings,
        rules: Rules,
    ) -> anyhow::Result<Control> {
        let store = Arc::new(store);
        let policies = Arc::new(PolicySnapshot::load(policies_dir)?);
        let base = load_entities_file(policies_dir)?;
        let live = store.entities()?;
        let facts = merged(policies.schema(), &base, live_entities(&live)).map_err(|message| {
            anyhow::anyhow!(
                "{}: the policy folder's facts with the live changes in the data folder: {message}",
                policies_dir.display()
            )
        })?;
        let snapshot = Snapshot {
            policies: Arc::clone(&policies),
            facts: Arc::new(facts),
        };
        let engine = Engine::new(snapshot, Arc::clone(&clock), settings)
            .with_use_counter(Arc::clone(&store) as Arc<dyn UseCounter>);
        Ok(Control {
            engine: Arc::new(engine),
            store,
            policies_dir: policies_dir.to_path_buf(),
            shadow_dir: None,
            rules,
            state: Mutex::new(State {
                policies,
                base,
                policies_loaded_at: clock.now(),
                facts_changed_at: clock.now(),
                facts_changes: 0,
                live,
                reloads: 0,
                reload_failures: 0,
                last_reload_error: None,
            }),
            clock,
        })
    }

    /// Evaluates the candidate policies in `dir` beside the active ones from now on, and
    /// reloads them whenever the active ones are reloaded.
    pub fn with_shadow(mut self, dir: &Path) -> anyhow::Result<Self> {
        let candidate = PolicySnapshot::load(dir)
            .map_err(|e| anyhow::anyhow!("the shadow policies in {}: {e}", dir.display()))?;
        tracing::info!(
            policy_version = %candidate.version(),
            policies = candidate.policy_count(),
            "shadow policies loaded from {}: evaluated beside the active set, answering nothing",
            dir.display()
        );
        self.engine.set_shadow(Some(Arc::new(candidate)));
        self.shadow_dir = Some(dir.to_path_buf());
        Ok(self)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn policies_dir(&self) -> &Path {
        &self.policies_dir
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half change: the snapshot is swapped
        // last, and `live` is restored on every error path.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reloads the policy folder: all or nothing. On failure the last good set keeps serving,
    /// and the error is logged, counted and kept for `status`.
    pub fn reload_policies(&self) -> Result<StatusView, ControlError> {
        let mut state = self.state();
        let loaded = PolicySnapshot::load(&self.policies_dir)
            .map_err(|error| error.to_string())
            .and_then(|policies| {
                let base =
                    load_entities_file(&self.policies_dir).map_err(|error| error.to_string())?;
                let facts = merged(policies.schema(), &base, live_entities(&state.live))
                    .map_err(|error| error.to_string())?;
                let candidate = match &self.shadow_dir {
                    Some(dir) => Some(PolicySnapshot::load(dir).map_err(|error| {
                        format!("the shadow policies in {}: {error}", dir.display())
                    })?),
                    None => None,
                };
                Ok((policies, base, facts, candidate))
            });
        let now = self.clock.now();
        match loaded {
            Ok((policies, base, facts, candidate)) => {
                if let Some(candidate) = candidate {
                    let current = self.engine.shadow().map(|s| Arc::clone(s.version()));
                    if current.as_deref() != Some(candidate.version().as_ref()) {
                        tracing::info!(policy_version = %candidate.version(), "shadow policies reloaded");
                        self.engine.set_shadow(Some(Arc::new(candidate)));
                    }
                }
                let current = self.engine.snapshot();
                if current.policies.version() == policies.version()
                    && current.facts.version == facts.version
                {
                    tracing::debug!("policy folder unchanged");
                } else {
                    let policies = Arc::new(policies);
                    tracing::info!(
                        policy_version = %policies.version(),
                        facts_version = %facts.version,
                        policies = policies.policy_count(),
                        "policies reloaded from {}",
                        self.policies_dir.display()
                    );
                    if current.facts.version != facts.version {
                        state.facts_changed_at = now;
                        state.facts_changes += 1;
                    }
                    self.engine.replace_snapshot(Snapshot {
                        policies: Arc::clone(&policies),
                        facts: Arc::new(facts),
                    });
                    state.policies = policies;
                    state.base = base;
                    state.policies_loaded_at = now;
                    state.reloads += 1;
                }
                state.last_reload_error = None;
                Ok(self.status_of(&state))
            }
            Err(message) => {
                tracing::error!(
                    error = %message,
                    "policy reload failed; the last good policies keep serving"
                );
                state.reload_failures += 1;
                state.last_reload_error = Some((now, message.clone()));
                Err(ControlError::ReloadFailed(message))
            }
        }
    }

    pub fn status(&self) -> StatusView {
        self.status_of(&self.state())
    }

    fn status_of(&self, state: &State) -> StatusView {
        let snapshot = self.engine.snapshot();
        StatusView {
            policy_version: Arc::clone(snapshot.policies.version()),
            policies_loaded_at: state.policies_loaded_at,
            facts_changed_at: state.facts_changed_at,
            facts_changes: state.facts_changes,
            policy_count: snapshot.policies.policy_count(),
            facts_version: Arc::clone(&snapshot.facts.version),
            entity_count: snapshot.facts.entities.len(),
            identity_count: snapshot.facts.identities.len(),
            approval_count: snapshot.facts.approvals.len(),
            live_changes: state.live.len(),
            last_reload_error: state.last_reload_error.clone(),
            reloads: state.reloads,
            reload_failures: state.reload_failures,
        }
    }

    /// Makes `entity` the live form of `uid`: builds the new facts first, persists, then swaps.
    fn change(
        &self,
        state: &mut State,
        uid: &EntityUid,
        entity: LiveEntity,
        field: &str,
    ) -> Result<(), ControlError> {
        let key = uid.to_string();
        let previous = state.live.insert(key.clone(), entity.clone());
        // Most changes (an identity's status or owner, an approval granted or revoked) update
        // the current facts in place; anything else rebuilds them from the file and the overlay.
        let current = Arc::clone(&self.engine.snapshot().facts);
        let built = match current.with_changes(
            state.policies.schema(),
            std::slice::from_ref(&entity.entity),
        ) {
            Ok(Some(facts)) => Ok(facts),
            Ok(None) => merged(
                state.policies.schema(),
                &state.base,
                live_entities(&state.live),
            ),
            Err(error) => Err(error),
        };
        let persisted = match built {
            Ok(facts) => self
                .store
                .put(&key, &entity)
                .map(|()| facts)
                .map_err(ControlError::from),
            Err(error) => Err(invalid(field, error.to_string())),
        };
        match persisted {
            Ok(facts) => {
                self.engine.replace_snapshot(Snapshot {
                    policies: Arc::clone(&state.policies),
                    facts: Arc::new(facts),
                });
                state.facts_changed_at = self.clock.now();
                state.facts_changes += 1;
                Ok(())
            }
            Err(error) => {
                match previous {
                    Some(previous) => state.live.insert(key, previous),
                    None => state.live.remove(&key),
                };
                Err(error)
            }
        }
    }

    /// The current JSON form of an entity and what the admin API recorded of it.
    fn current(&self, state: &State, key: &str) -> Option<(Value, ChangeMeta, Origin)> {
        match state.live.get(key) {
            Some(live) => Some((live.entity.clone(), live.meta.clone(), Origin::Live)),
            None => state
                .base
                .get(key)
                .map(|entity| (entity.clone(), ChangeMeta::default(), Origin::File)),
        }
    }

    pub fn grant_approval(&self, grant: ApprovalGrant) -> Result<ApprovalView, ControlError> {
        let mut state = self.state();
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let now = self.clock.now();
        let id = match grant.id.as_deref() {
            Some("") | None => format!("apr-{}", uuid::Uuid::now_v7()),
            Some(id) => id.to_owned(),
        };
        if facts.approvals.contains_key(&id) {
            return Err(ControlError::AlreadyExists(format!(
                "an approval with id {id:?} exists"
            )));
        }
        if grant.ticket.is_empty() {
            return Err(invalid("approval.ticket", "required"));
        }
        let approver = required_ref(grant.approver.as_ref(), "approval.approver")?;
        let requester = required_ref(grant.requester.as_ref(), "approval.requester")?;
        let subject = required_ref(grant.subject.as_ref(), "approval.subject")?;
        let scope = required_ref(grant.scope.as_ref(), "approval.scope")?;
        // Separation of duties: a human approves, and not the one who asked.
        if approver.type_name != HUMAN_TYPE {
            return Err(invalid(
                "approval.approver",
                format!(
                    "separation of duties: an approval is given by a {HUMAN_TYPE}, not by a {}",
                    approver.type_name
                ),
            ));
        }
        known(&facts, &state.policies, &approver, "approval.approver")?;
        known(&facts, &state.policies, &requester, "approval.requester")?;
        if approver == requester {
            return Err(invalid(
                "approval.approver",
                format!("separation of duties: the approver cannot be the requester ({approver})"),
            ));
        }
        let subject_uid = known(&facts, &state.policies, &subject, "approval.subject")?;
        if !facts.identities.contains_key(&subject_uid) {
            return Err(invalid(
                "approval.subject",
                format!(
                    "an approval is granted to an identity ({}), not to a {}",
                    identity_types(state.policies.schema()).join(", "),
                    subject.type_name
                ),
            ));
        }
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
        // Validity: a window that is the right way round, not over, and not too long.
        let not_before = grant.not_before.unwrap_or(now);
        let expires_at = grant
            .expires_at
            .ok_or_else(|| invalid("approval.expires_at", "required"))?;
        if expires_at <= not_before {
            return Err(invalid(
                "approval.expires_at",
                format!("must be after not_before ({})", not_before.to_rfc3339()),
            ));
        }
        if expires_at <= now {
            return Err(invalid(
                "approval.expires_at",
                format!("must be in the future (now is {})", now.to_rfc3339()),
            ));
        }
        let length = expires_at.0 - not_before.0;
        if length > self.rules.approval_max_validity_ms {
            return Err(invalid(
                "approval.expires_at",
                format!(
                    "the approval would last {}, longer than the maximum of {} \
                     (setting approval_max_validity_hours)",
                    hours(length),
                    hours(self.rules.approval_max_validity_ms)
                ),
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
                ..ChangeMeta::default()
            },
        };
        self.change(&mut state, &uid, entity, "approval")?;
        tracing::info!(approval = id, ticket = grant.ticket, %approver, %subject, "approval granted");
        self.approval_in(&state, &id)
    }

    pub fn revoke_approval(&self, id: &str, reason: &str) -> Result<ApprovalView, ControlError> {
        let mut state = self.state();
        let view = self.approval_in(&state, id)?;
        if view.approval.revoked {
            return Ok(view);
        }
        let key = view.approval.uid.to_string();
        let (mut entity, mut meta, _) = self
            .current(&state, &key)
            .ok_or_else(|| ControlError::NotFound(format!("no approval {id:?}")))?;
        entity["attrs"]["revoked"] = json!(true);
        meta.revoked_at = Some(self.clock.now().0);
        meta.revoke_reason = Some(reason.to_owned()).filter(|r| !r.is_empty());
        let uid = view.approval.uid.clone();
        self.change(&mut state, &uid, LiveEntity { entity, meta }, "id")?;
        tracing::info!(approval = id, reason, "approval revoked");
        self.approval_in(&state, id)
    }

    pub fn approval(&self, id: &str) -> Result<ApprovalView, ControlError> {
        self.approval_in(&self.state(), id)
    }

    fn approval_in(&self, state: &State, id: &str) -> Result<ApprovalView, ControlError> {
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let approval = facts
            .approvals
            .get(id)
            .ok_or_else(|| ControlError::NotFound(format!("no approval {id:?}")))?;
        self.approval_view(state, approval)
    }

    fn approval_view(
        &self,
        state: &State,
        approval: &Arc<Approval>,
    ) -> Result<ApprovalView, ControlError> {
        let key = approval.uid.to_string();
        let (entity, meta, origin) = self
            .current(state, &key)
            .ok_or_else(|| ControlError::NotFound(format!("no approval {key}")))?;
        let id = approval.uid.id().unescaped();
        let uses = match approval.max_uses {
            Some(_) => self.store.uses(id)?,
            None => 0,
        };
        let now = self.clock.now();
        let state = if approval.revoked {
            ApprovalState::Revoked
        } else if now >= approval.expires_at {
            ApprovalState::Expired
        } else if approval.max_uses.is_some_and(|max| uses >= max) {
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
            origin,
            state,
        })
    }

    pub fn approvals(&self, filter: &ApprovalFilter) -> Result<Vec<ApprovalView>, ControlError> {
        let state = self.state();
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let subject = filter.subject.as_ref().map(uid_of);
        let mut found: Vec<&Arc<Approval>> = facts
            .approvals
            .values()
            .filter(|a| subject.as_ref().is_none_or(|s| &a.subject == s))
            .filter(|a| filter.ticket.as_ref().is_none_or(|t| &a.ticket == t))
            .collect();
        found.sort_by(|a, b| a.uid.id().unescaped().cmp(b.uid.id().unescaped()));
        let mut views = Vec::new();
        for approval in found {
            let view = self.approval_view(&state, approval)?;
            if filter.state.is_none_or(|s| s == view.state) {
                views.push(view);
            }
        }
        Ok(views)
    }

    pub fn create_identity(&self, spec: IdentitySpec) -> Result<IdentityView, ControlError> {
        let mut state = self.state();
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let entity = required_ref(spec.entity.as_ref(), "identity.entity")?;
        if !identity_types(state.policies.schema()).contains(&entity.type_name) {
            return Err(invalid(
                "identity.entity.type",
                format!(
                    "{:?} is not an identity type of the schema ({})",
                    entity.type_name,
                    identity_types(state.policies.schema()).join(", ")
                ),
            ));
        }
        let uid = uid_of(&entity);
        if facts.entities.get(&uid).is_some() {
            return Err(ControlError::AlreadyExists(format!("{entity} exists")));
        }
        let owner = required_ref(spec.owner.as_ref(), "identity.owner")?;
        let mut attrs = Map::new();
        for (key, value) in spec.attributes {
            if key == "owner" || key == "status" {
                return Err(invalid(
                    format!("identity.attributes.{key}"),
                    "is set by its own field",
                ));
            }
            attrs.insert(key, value);
        }
        attrs.insert(
            "owner".into(),
            owner_json(&facts, &state.policies, &owner, "identity.owner")?,
        );
        let status = spec.status.unwrap_or_else(|| "active".to_owned());
        attrs.insert("status".into(), status_json(&status, "identity.status")?);
        let parents = parents_json(&facts, &state.policies, &spec.parents, "identity.parents")?;
        let live = LiveEntity {
            entity: json!({
                "uid": {"type": entity.type_name, "id": entity.id},
                "attrs": attrs,
                "parents": parents,
            }),
            meta: ChangeMeta {
                updated_at: Some(self.clock.now().0),
                ..ChangeMeta::default()
            },
        };
        self.change(&mut state, &uid, live, "identity")?;
        tracing::info!(identity = %entity, %owner, status, "identity created");
        self.identity_in(&state, &entity)
    }

    pub fn update_identity(
        &self,
        entity: &EntityRef,
        update: IdentityUpdate,
    ) -> Result<IdentityView, ControlError> {
        let mut state = self.state();
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let uid = uid_of(entity);
        if !facts.identities.contains_key(&uid) {
            return Err(ControlError::NotFound(format!("no identity {entity}")));
        }
        let key = uid.to_string();
        let (mut json, mut meta, _) = self
            .current(&state, &key)
            .ok_or_else(|| ControlError::NotFound(format!("no identity {entity}")))?;
        let mut attrs = json["attrs"].as_object().cloned().unwrap_or_default();
        for (key, value) in update.attributes {
            if key == "owner" || key == "status" {
                return Err(invalid(
                    format!("attributes.{key}"),
                    "is set by its own field",
                ));
            }
            if value.is_null() {
                attrs.remove(&key);
            } else {
                attrs.insert(key, value);
            }
        }
        if let Some(owner) = &update.owner {
            attrs.insert(
                "owner".into(),
                owner_json(&facts, &state.policies, owner, "owner")?,
            );
        }
        if let Some(status) = &update.status {
            attrs.insert("status".into(), status_json(status, "status")?);
        }
        json["attrs"] = Value::Object(attrs);
        if let Some(parents) = &update.parents {
            json["parents"] = parents_json(&facts, &state.policies, parents, "parents")?;
        }
        meta.updated_at = Some(self.clock.now().0);
        self.change(
            &mut state,
            &uid,
            LiveEntity { entity: json, meta },
            "attributes",
        )?;
        tracing::info!(identity = %entity, owner = ?update.owner, status = ?update.status, "identity updated");
        self.identity_in(&state, entity)
    }

    pub fn retire_identity(&self, entity: &EntityRef) -> Result<IdentityView, ControlError> {
        self.update_identity(
            entity,
            IdentityUpdate {
                status: Some("retired".to_owned()),
                ..IdentityUpdate::default()
            },
        )
    }

    pub fn identity(&self, entity: &EntityRef) -> Result<IdentityView, ControlError> {
        self.identity_in(&self.state(), entity)
    }

    fn identity_in(&self, state: &State, entity: &EntityRef) -> Result<IdentityView, ControlError> {
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let uid = uid_of(entity);
        let identity = facts
            .identities
            .get(&uid)
            .ok_or_else(|| ControlError::NotFound(format!("no identity {entity}")))?;
        let (json, meta, origin) = self
            .current(state, &uid.to_string())
            .ok_or_else(|| ControlError::NotFound(format!("no identity {entity}")))?;
        let parents = json["parents"]
            .as_array()
            .map(|parents| {
                parents
                    .iter()
                    .filter_map(|p| EntityUid::from_json(p.clone()).ok())
                    .map(|uid| EntityRef::from_uid(&uid))
                    .collect()
            })
            .unwrap_or_default();
        Ok(IdentityView {
            entity: entity.clone(),
            identity: Arc::clone(identity),
            attributes: other_attributes(&json, &["owner", "status"]),
            parents,
            meta,
            origin,
        })
    }

    pub fn identities(&self, filter: &IdentityFilter) -> Result<Vec<IdentityView>, ControlError> {
        let state = self.state();
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let mut found: Vec<(&EntityUid, &Arc<Identity>)> = facts
            .identities
            .iter()
            .filter(|(uid, _)| {
                filter
                    .type_name
                    .as_ref()
                    .is_none_or(|t| &uid.type_name().to_string() == t)
            })
            .filter(|(_, i)| {
                filter
                    .owner
                    .as_ref()
                    .is_none_or(|o| i.owner.as_ref().is_some_and(|owner| &owner.entity == o))
            })
            .filter(|(_, i)| {
                filter
                    .status
                    .as_ref()
                    .is_none_or(|s| i.status.as_ref() == Some(s))
            })
            .collect();
        found.sort_by_key(|(uid, _)| uid.to_string());
        found
            .into_iter()
            .map(|(uid, _)| self.identity_in(&state, &EntityRef::from_uid(uid)))
            .collect()
    }

    /// Watches the policy folder and reloads it once changes have settled. Watching stops when
    /// the returned watcher is dropped.
    pub fn watch(self: &Arc<Self>) -> notify::Result<notify::RecommendedWatcher> {
        use notify::Watcher as _;
        let (sender, receiver) = std::sync::mpsc::channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(event) => changes_content(&event.kind),
                    Err(_) => true,
                };
                if relevant {
                    let _ = sender.send(());
                }
            })?;
        watcher.watch(&self.policies_dir, notify::RecursiveMode::NonRecursive)?;
        if let Some(dir) = &self.shadow_dir {
            watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
        }
        let control = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("warrant-policy-watch".to_owned())
            .spawn(move || {
                // Ends when the watcher, and with it the sender, is dropped.
                while receiver.recv().is_ok() {
                    // Editors and deploy tools write several files: wait for quiet, and for
                    // the folder's files to stop changing (a writer that closes and reopens).
                    loop {
                        while receiver.recv_timeout(RELOAD_DEBOUNCE).is_ok() {}
                        let Some(control) = control.upgrade() else {
                            return;
                        };
                        let before = folder_state(&control.policies_dir);
                        std::thread::sleep(RELOAD_DEBOUNCE);
                        if folder_state(&control.policies_dir) == before {
                            break;
                        }
                    }
                    let Some(control) = control.upgrade() else {
                        return;
                    };
                    // A failure is logged, counted and kept for Status by reload_policies.
                    let _ = control.reload_policies();
                }
            })
            .map_err(notify::Error::io)?;
        Ok(watcher)
    }
}

/// Whether a file event marks a finished change to the folder: a file closed after writing, a
/// rename (an atomic deploy, or a symlink swap), a removal, a new directory. A plain write is
/// not: the file is still open and may be half written (a rewrite in place truncates first),
/// and its close will follow. Reads, including our own, change nothing.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => true,
        EventKind::Create(CreateKind::Folder) => true,
        // Unknown kinds (another platform's watcher): reload, the stable-content check guards.
        EventKind::Any | EventKind::Other => true,
        EventKind::Access(_) | EventKind::Create(_) | EventKind::Modify(_) => false,
    }
}

/// The folder's files as (name, length, modification time), to see that it has stopped
/// changing before it is loaded.
fn folder_state(dir: &Path) -> Vec<(std::ffi::OsString, u64, Option<std::time::SystemTime>)> {
    let mut state: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let meta = std::fs::metadata(entry.path()).ok()?;
            Some((entry.file_name(), meta.len(), meta.modified().ok()))
        })
        .collect();
    state.sort();
    state
}

fn hours(millis: i64) -> String {
    format!("{:.1} h", millis as f64 / 3_600_000.0)
}

/// The principal types of the schema: the kinds of identity.
fn identity_types(schema: &Schema) -> Vec<String> {
    let mut types: Vec<String> = schema
        .principals()
        .map(ToString::to_string)
        .filter(|t| t != APPROVAL_TYPE)
        .collect();
    types.sort();
    types.dedup();
    types
}

fn required_ref(entity: Option<&EntityRef>, field: &str) -> Result<EntityRef, ControlError> {
    match entity {
        Some(entity) if !entity.type_name.is_empty() && !entity.id.is_empty() => Ok(entity.clone()),
        Some(entity) if entity.type_name.is_empty() => {
            Err(invalid(format!("{field}.type"), "required"))
        }
        Some(_) => Err(invalid(format!("{field}.id"), "required")),
        None => Err(invalid(field, "required")),
    }
}

#[expect(clippy::expect_used, reason = "a constant type name Cedar parses")]
fn uid_of(entity: &EntityRef) -> EntityUid {
    match entity.type_name.parse() {
        Ok(type_name) => EntityUid::from_type_name_and_id(type_name, EntityId::new(&entity.id)),
        // A type name Cedar cannot parse names nothing: give a uid no entity can have.
        Err(_) => EntityUid::from_type_name_and_id(
            "__warrant_invalid".parse().expect("a valid type name"),
            EntityId::new(&entity.id),
        ),
    }
}

/// The entity, which must exist in `facts` and be of a type the schema declares.
fn known(
    facts: &Facts,
    policies: &PolicySnapshot,
    entity: &EntityRef,
    field: &str,
) -> Result<EntityUid, ControlError> {
    if !policies.entity_types().contains_key(&entity.type_name) {
        return Err(invalid(
            format!("{field}.type"),
            format!("the schema declares no entity type {:?}", entity.type_name),
        ));
    }
    let uid = uid_of(entity);
    if facts.entities.get(&uid).is_none() {
        return Err(invalid(field, format!("no {entity} is known")));
    }
    Ok(uid)
}

fn owner_json(
    facts: &Facts,
    policies: &PolicySnapshot,
    owner: &EntityRef,
    field: &str,
) -> Result<Value, ControlError> {
    if owner.type_name != HUMAN_TYPE {
        return Err(invalid(
            field,
            format!(
                "an identity is owned by a {HUMAN_TYPE}, not by a {}",
                owner.type_name
            ),
        ));
    }
    let uid = known(facts, policies, owner, field)?;
    Ok(entity_json(&uid))
}

fn status_json(status: &str, field: &str) -> Result<Value, ControlError> {
    if IDENTITY_STATUSES.contains(&status) {
        Ok(json!(status))
    } else {
        Err(invalid(
            field,
            format!("{status:?} is not one of {}", IDENTITY_STATUSES.join(", ")),
        ))
    }
}

fn parents_json(
    facts: &Facts,
    policies: &PolicySnapshot,
    parents: &[EntityRef],
    field: &str,
) -> Result<Value, ControlError> {
    let mut all = Vec::new();
    for (i, parent) in parents.iter().enumerate() {
        known(facts, policies, parent, &format!("{field}[{i}]"))?;
        all.push(json!({"type": parent.type_name, "id": parent.id}));
    }
    Ok(Value::Array(all))
}

fn entity_json(uid: &EntityUid) -> Value {
    json!({"__entity": {"type": uid.type_name().to_string(), "id": uid.id().unescaped()}})
}

fn datetime_json(at: UnixMillis) -> Value {
    json!({"__extn": {"fn": "datetime", "arg": at.to_cedar_datetime()}})
}

/// An entity's attributes except `known` ones.
fn other_attributes(entity: &Value, known: &[&str]) -> Map<String, Value> {
    entity["attrs"]
        .as_object()
        .map(|attrs| {
            attrs
                .iter()
                .filter(|(key, _)| !known.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The live entities as changes to the file's.
fn live_entities(live: &BTreeMap<String, LiveEntity>) -> impl Iterator<Item = (&str, &Value)> {
    live.iter()
        .map(|(key, entity)| (key.as_str(), &entity.entity))
}
