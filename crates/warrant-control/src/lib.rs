//! The control plane: every change to what decisions are made from goes through here. Admin
//! calls (grant or revoke an approval; create, update or retire an identity) and policy reloads
//! (from the folder watcher or `ReloadPolicies`) are checked against Warrant's rules, a whole new
//! snapshot is built and validated, the change is persisted, and only then is the snapshot
//! swapped into the engine. Changes run one at a time; one that fails leaves everything as it was.
//!
//! May depend on: `warrant-domain`, `warrant-engine`, `warrant-facts`, `warrant-files`,
//!   `warrant-fleet`, `warrant-ledger`, `warrant-policy`, `warrant-store`; never a wire format.
//! Invariant: one change at a time, persisted before its snapshot answers; a change that fails
//!   leaves everything as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cedar_policy::{EntityId, EntityUid, Schema};
use serde_json::{Map, Value, json};

use warrant_domain::clock::{Clock, UnixMillis};
use warrant_domain::ports::{CredentialVerifier, FactsFreshness, UseCounter};
use warrant_domain::{APPROVAL_TYPE, Approval, EntityRef, HUMAN_TYPE, Identity, MAX_EXACT_INTEGER};
use warrant_engine::engine::{Engine, EngineParts, EngineSettings, Snapshot};
pub use warrant_facts::Origin;
use warrant_facts::{Facts, FactsError, entities_file_digest};
use warrant_policy::PolicySnapshot;
use warrant_store::facts::{FactsStore, FactsWriter, check_rules};
use warrant_store::{ChangeMeta, LiveEntity, LiveLink, LiveStore, StoreError};

pub mod approvals;
mod change_rules;
pub mod entities;
pub mod identities;
pub mod links;
mod reload;
pub mod replica;
pub mod requests;

/// The rules the control plane enforces beyond the schema.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The longest an approval may last, from `not_before` to `expires_at`.
    pub approval_max_validity_ms: i64,
    /// The most bytes one facts import may send.
    pub max_import_bytes: u64,
    /// How long an approval request waits for a decision before it expires.
    pub approval_request_ttl_ms: i64,
    /// The most approval requests one identity may have pending.
    pub max_pending_requests_per_identity: usize,
    /// Whether an identity's own owner may approve for it.
    pub owner_may_approve: bool,
    /// Whether an approver must present their own credential (not only be named).
    pub require_authenticated_approver: bool,
    /// About how many bytes of parsed entities the facts keep in memory.
    pub facts_cache_bytes: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            approval_max_validity_ms: 30 * 24 * 3_600_000,
            max_import_bytes: 256 * 1024 * 1024,
            approval_request_ttl_ms: 24 * 3_600_000,
            max_pending_requests_per_identity: 8,
            owner_may_approve: true,
            require_authenticated_approver: false,
            facts_cache_bytes: 128 * 1024 * 1024,
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
    /// The change cannot apply to the thing's current state (e.g. a request already decided).
    #[error("{0}")]
    Conflict(String),
    /// A bound was reached (e.g. too many pending requests).
    #[error("{0}")]
    Exhausted(String),
    /// The caller may not ask this (e.g. without the identity's credential), with Warrant's
    /// reason.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The shared database of a fleet cannot be reached: nothing was changed.
    #[error("{0}")]
    SharedStore(String),
    /// The change is stored but its ledger entry could not be written (the ledger has failed).
    #[error("{0}")]
    Unrecorded(String),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ControlError {
    ControlError::Invalid {
        field: field.into(),
        message: message.into(),
    }
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
    pub template_count: usize,
    pub link_count: usize,
    pub facts_version: Arc<str>,
    pub entity_count: u64,
    pub identity_count: u64,
    pub approval_count: u64,
    pub live_changes: u64,
    pub last_reload_error: Option<(UnixMillis, String)>,
    /// Successful reloads since start, whether or not they changed anything.
    pub reloads: u64,
    pub reload_failures: u64,
    /// On a replica of a fleet: where it stands in the shared database.
    pub replica: Option<ReplicaView>,
}

/// A replica's place in its shared database's change log.
#[derive(Debug, Clone)]
pub struct ReplicaView {
    pub id: String,
    pub applied_change: i64,
    pub head_change: i64,
    pub fresh_as_of: UnixMillis,
    pub stale: bool,
}

/// What the control plane shows its metrics at one moment (`Control::stats`): the status, the
/// approval requests by state, and a replica's replication. A value: whoever reports it holds
/// no part of the control plane.
#[derive(Debug, Clone)]
pub struct ControlStats {
    pub status: StatusView,
    /// How many approval requests are kept in each state.
    pub requests_by_state: Vec<(requests::RequestState, usize)>,
    /// When the oldest pending approval request was filed (Unix ms), if one is pending.
    pub oldest_pending_at: Option<i64>,
    pub fleet: Option<FleetStats>,
}

/// A replica's replication of its shared database, counted (where it stands in the log is in
/// `StatusView::replica`).
#[derive(Debug, Clone)]
pub struct FleetStats {
    /// How long ago (ms) the facts were last known to hold every committed change.
    pub lag_ms: i64,
    pub reconnects: u64,
    pub failures: u64,
}

/// What the control plane holds between changes. Guarded by one mutex: changes are serialised.
struct State {
    /// The policy folder's policies, as last loaded successfully, with the live links.
    policies: Arc<PolicySnapshot>,
    /// Every template link made through the admin API, by link id.
    live_links: BTreeMap<String, LiveLink>,
    policies_loaded_at: UnixMillis,
    facts_changed_at: UnixMillis,
    facts_changes: u64,
    reloads: u64,
    reload_failures: u64,
    /// Cleared by the next successful reload.
    last_reload_error: Option<(UnixMillis, String)>,
}

/// Where approval requests' filings and decisions are announced (the server's webhook): told
/// each event as JSON, it must not block (a webhook queues and delivers on its own).
pub trait Notifier: Send + Sync {
    fn notify(&self, event: &Value);
}

pub struct Control {
    engine: Arc<Engine>,
    store: Arc<LiveStore>,
    /// The facts' tables in the live store's database: every snapshot's facts are read from it.
    facts_store: Arc<FactsStore>,
    /// The issuers whose credentials requests (and approvers) may present, if any.
    credentials: Option<Arc<dyn CredentialVerifier>>,
    /// The policy folder: the one configured, or a pushed bundle's (`replica`).
    policies_dir: std::sync::RwLock<PathBuf>,
    /// Set on a replica of a shared database.
    replication: Option<replica::Replication>,
    /// Candidate policies evaluated beside the active ones (`--shadow-policies`), reloaded with
    /// them.
    shadow_dir: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    rules: Rules,
    state: Mutex<State>,
    /// Bumped whenever an approval request is filed or decided (`requests`).
    requests_changed: tokio::sync::watch::Sender<u64>,
    /// Approval requests are filed and decided one at a time.
    requests_lock: Mutex<()>,
    /// Told of every request filed and decided, when one is configured.
    webhook: std::sync::OnceLock<Arc<dyn Notifier>>,
    /// Where approval requests' filings and decisions are recorded, when the ledger is on.
    ledger: std::sync::OnceLock<Arc<warrant_ledger::Ledger>>,
}

impl Control {
    /// Loads the policy folder and the live changes in `store`, and builds the engine on them.
    pub fn open(
        policies_dir: &Path,
        store: Arc<LiveStore>,
        clock: Arc<dyn Clock>,
        settings: EngineSettings,
        rules: Rules,
        replication: Option<replica::Replication>,
        credentials: Option<Arc<dyn CredentialVerifier>>,
    ) -> anyhow::Result<Control> {
        let started = std::time::Instant::now();
        let resync = match &replication {
            Some(replication) => replication.join(&store)?,
            None => false,
        };
        let bundle_dir = match &replication {
            Some(replication) => replication.bundle_dir(None)?,
            None => None,
        };
        let policies_dir = bundle_dir.as_deref().unwrap_or(policies_dir);
        let folder = PolicySnapshot::load(policies_dir)?;
        let policies_took = started.elapsed();
        let facts_store = Arc::new(FactsStore::open(
            Arc::clone(store.database()),
            rules.facts_cache_bytes,
        )?);
        let mut facts = Facts::open(Arc::clone(&facts_store) as _, folder.schema())?;
        let in_folder = |message: String| {
            anyhow::anyhow!(
                "{}: the policy folder's facts with the live changes in the data folder: {message}",
                policies_dir.display()
            )
        };
        if let Some(writer) =
            facts_to_sync(&facts, &facts_store, &folder, policies_dir, &store, resync)?
        {
            if resync {
                LiveStore::resynced_in(writer.transaction())?;
            }
            let committing = std::time::Instant::now();
            let committed = writer.commit().map_err(|e| in_folder(e.to_string()))?;
            tracing::info!(
                changed = committed.touched.len(),
                commit_ms = u64::try_from(committing.elapsed().as_millis()).unwrap_or(u64::MAX),
                "facts file imported into the facts store"
            );
            facts = facts.after(&committed, None)?;
        }
        let facts_took = started.elapsed() - policies_took;
        let live_links = store.links()?;
        let policies = links::with_live_links(&folder, &live_links, &|uid| facts.contains(uid))
            .map_err(|message| {
            anyhow::anyhow!(
                "{}: the policy folder's templates with the live links in the data folder: {message}",
                policies_dir.display()
            )
        })?;
        let policies = Arc::new(policies);
        tracing::info!(
            policies = policies.policy_count(),
            templates = policies.template_count(),
            links = policies.links().len(),
            live_links = live_links.len(),
            policies_ms = u64::try_from(policies_took.as_millis()).unwrap_or(u64::MAX),
            facts_ms = u64::try_from(facts_took.as_millis()).unwrap_or(u64::MAX),
            links_checked_ms =
                u64::try_from((started.elapsed() - policies_took - facts_took).as_millis())
                    .unwrap_or(u64::MAX),
            "policy folder and live changes loaded"
        );
        let snapshot = Snapshot {
            policies: Arc::clone(&policies),
            facts: Arc::new(facts),
        };
        let uses: Arc<dyn UseCounter> = match &replication {
            Some(replication) => Arc::clone(&replication.postgres) as Arc<dyn UseCounter>,
            None => Arc::clone(&store) as Arc<dyn UseCounter>,
        };
        let parts = EngineParts {
            uses: Some(uses),
            credentials: credentials.clone(),
            freshness: replication
                .as_ref()
                .map(|replication| Arc::clone(&replication.freshness) as Arc<dyn FactsFreshness>),
        };
        let engine = Engine::new(snapshot, Arc::clone(&clock), settings, parts);
        Ok(Control {
            engine: Arc::new(engine),
            store,
            facts_store,
            credentials,
            policies_dir: std::sync::RwLock::new(policies_dir.to_path_buf()),
            replication,
            shadow_dir: None,
            rules,
            state: Mutex::new(State {
                policies,
                live_links,
                policies_loaded_at: clock.now(),
                facts_changed_at: clock.now(),
                facts_changes: 0,
                reloads: 0,
                reload_failures: 0,
                last_reload_error: None,
            }),
            requests_changed: tokio::sync::watch::Sender::new(0),
            requests_lock: Mutex::new(()),
            webhook: std::sync::OnceLock::new(),
            ledger: std::sync::OnceLock::new(),
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
        let candidate = links::shadow_with_live_links(candidate, &self.state().live_links);
        self.engine.set_shadow(Some(Arc::new(candidate)));
        self.shadow_dir = Some(dir.to_path_buf());
        Ok(self)
    }

    /// The issuers whose credentials requests (and approvers) may present, if any.
    fn credentials(&self) -> Option<&Arc<dyn CredentialVerifier>> {
        self.credentials.as_ref()
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The live store (which also remembers single-use credentials).
    pub fn store(&self) -> &Arc<LiveStore> {
        &self.store
    }

    /// The policy folder in force: the one configured, or a pushed bundle's.
    pub fn policies_dir(&self) -> PathBuf {
        self.policies_dir
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Makes `dir` the policy folder; returns the one before.
    fn set_policies_dir(&self, dir: PathBuf) -> PathBuf {
        let mut held = self
            .policies_dir
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::replace(&mut *held, dir)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half change: the snapshot is swapped
        // last, and `live` is restored on every error path.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state, for a change: on a replica of a fleet, with the shared database's publish lock
    /// held and every change other replicas published applied, so that the change is decided on
    /// facts no one else can change until it ends (`replica::begin_change`).
    fn changing(
        &self,
    ) -> Result<(MutexGuard<'_, State>, Option<warrant_fleet::Publishing>), ControlError> {
        let mut state = self.state();
        let publishing = self.begin_change(&mut state)?;
        Ok((state, publishing))
    }

    pub fn status(&self) -> StatusView {
        self.status_of(&self.state())
    }

    /// What the metrics show of the control plane now.
    pub fn stats(&self) -> ControlStats {
        use requests::RequestState;
        use std::sync::atomic::Ordering::Relaxed;
        // Read from the store at scrape time; none kept means none counted.
        let requests = self.approval_requests(None, None).unwrap_or_default();
        let states = [
            RequestState::Pending,
            RequestState::Approved,
            RequestState::Rejected,
            RequestState::Expired,
        ];
        ControlStats {
            status: self.status(),
            requests_by_state: states
                .into_iter()
                .map(|state| (state, requests.iter().filter(|r| r.state == state).count()))
                .collect(),
            oldest_pending_at: requests
                .iter()
                .filter(|r| r.state == RequestState::Pending)
                .map(|r| r.requested_at)
                .min(),
            fleet: self.replication.as_ref().map(|replication| {
                use warrant_domain::ports::FactsFreshness as _;
                FleetStats {
                    lag_ms: replication.freshness.lag_ms(self.clock.now()),
                    reconnects: replication.stats.reconnects.load(Relaxed),
                    failures: replication.stats.failures.load(Relaxed),
                }
            }),
        }
    }

    fn status_of(&self, state: &State) -> StatusView {
        let snapshot = self.engine.snapshot();
        StatusView {
            policy_version: Arc::clone(snapshot.policies.version()),
            policies_loaded_at: state.policies_loaded_at,
            facts_changed_at: state.facts_changed_at,
            facts_changes: state.facts_changes,
            policy_count: snapshot.policies.policy_count(),
            template_count: snapshot.policies.template_count(),
            link_count: snapshot.policies.links().len(),
            facts_version: Arc::clone(snapshot.facts.version()),
            entity_count: snapshot.facts.entity_count(),
            identity_count: snapshot.facts.identity_count(),
            approval_count: snapshot.facts.approval_count(),
            live_changes: self.store.entity_count().unwrap_or(0),
            last_reload_error: state.last_reload_error.clone(),
            reloads: state.reloads,
            reload_failures: state.reload_failures,
            replica: self.replication.as_ref().map(|replication| {
                use std::sync::atomic::Ordering::Relaxed;
                ReplicaView {
                    id: replication.postgres.replica().to_owned(),
                    applied_change: replication.applied(),
                    head_change: replication
                        .stats
                        .head
                        .load(Relaxed)
                        .max(replication.applied()),
                    fresh_as_of: replication.freshness.confirmed_at(),
                    stale: self.engine.facts_stale(),
                }
            }),
        }
    }

    /// Makes `entity` the live form of `uid` (or removes it, when it is retired): the facts'
    /// store and the live record change in one durable transaction, then the new facts are
    /// swapped in.
    fn change(
        &self,
        state: &mut State,
        publishing: Option<warrant_fleet::Publishing>,
        uid: &EntityUid,
        entity: LiveEntity,
        field: &str,
    ) -> Result<(), ControlError> {
        let key = uid.to_string();
        let current = Arc::clone(&self.engine.snapshot().facts);
        let schema = state.policies.schema();
        let mut writer = self.facts_store.writer(schema).map_err(unavailable)?;
        let applied = match entity.meta.retired_at {
            None => writer.put(entity.entity.clone(), Origin::Live).map(drop),
            Some(_) => writer.remove(uid),
        }
        .and_then(|()| check_rules(&writer, schema));
        applied.map_err(|error| invalid(field, error.to_string()))?;
        let ops = vec![warrant_fleet::ChangeOp::Entity {
            uid: key.clone(),
            record: entity.clone(),
        }];
        let published = self.end_change(publishing, ops)?;
        LiveStore::put_in(writer.transaction(), &[(key, entity)])?;
        if let Some(id) = published {
            LiveStore::set_applied_in(writer.transaction(), id)?;
        }
        let committed = writer.commit().map_err(unavailable)?;
        let facts = current.after(&committed, None).map_err(unavailable)?;
        self.engine.replace_snapshot(Snapshot {
            policies: Arc::clone(&state.policies),
            facts: Arc::new(facts),
        });
        self.applied(published);
        state.facts_changed_at = self.clock.now();
        state.facts_changes += 1;
        Ok(())
    }

    /// The current JSON form of an entity and what the admin API recorded of it. Callers hold
    /// the state lock (the `_locked` of the views built from it), so that the live record and
    /// the facts agree.
    fn current(&self, key: &str) -> Option<(Value, ChangeMeta, Origin)> {
        match self.store.entity(key).ok().flatten() {
            Some(live) => Some((live.entity, live.meta, Origin::Live)),
            None => {
                let uid: EntityUid = key.parse().ok()?;
                let (json, origin) = self.engine.snapshot().facts.json(&uid)?;
                Some((json, ChangeMeta::default(), origin))
            }
        }
    }
}

/// How many threads check a facts file's entities against the schema while it is imported.
const PREPARERS: usize = 2;

/// A facts store that cannot be read or written: the change is not made.
fn unavailable(error: FactsError) -> ControlError {
    ControlError::Store(StoreError::Facts(error.to_string()))
}

/// The change that brings the facts' store in line with the policy folder's `entities.json`
/// and the live changes, when the file or the schema differ from what the store last took
/// (`None` when they do not). The file is read one entity at a time; each entity is checked
/// against the schema; a live change (or removal) takes the place of the file's entity; the
/// file's entities no longer in it are removed; rows that come out the same keep their
/// revision. Nothing is visible until the writer commits.
fn facts_to_sync(
    facts: &Facts,
    facts_store: &FactsStore,
    folder: &PolicySnapshot,
    dir: &Path,
    store: &LiveStore,
    force: bool,
) -> anyhow::Result<Option<FactsWriter>> {
    let digest = entities_file_digest(dir)?;
    let reader = facts.reader();
    if !force
        && reader.file_digest() == Some(digest.as_str())
        && reader.schema_version() == Some(folder.schema_version().as_ref())
    {
        return Ok(None);
    }
    let live = store.entities()?;
    let path = dir.join(warrant_facts::ENTITIES_FILE);
    let path_for_reader = path.clone();
    let schema = folder.schema();
    let mut writer = facts_store.writer(schema)?;
    let started = std::time::Instant::now();
    // One thread reads the file, `PREPARERS` check its entities against the schema, and this
    // one writes them (in any order: a put closes ancestors whichever comes first).
    let (preparation_schema, identity_types) = writer.preparation();
    let (to_write, prepared) =
        std::sync::mpsc::sync_channel::<Result<warrant_store::facts::Prepared, String>>(4096);
    let (read, written) = std::thread::scope(|scope| {
        let mut to_prepare = Vec::new();
        for _ in 0..PREPARERS {
            let (sender, receiver) = std::sync::mpsc::sync_channel::<Value>(1024);
            to_prepare.push(sender);
            let to_write = to_write.clone();
            let (schema, types) = (&preparation_schema, &identity_types);
            scope.spawn(move || {
                for entity in receiver.iter() {
                    let prepared = warrant_store::facts::Prepared::new(entity, schema, types)
                        .map_err(|error| error.to_string());
                    if to_write.send(prepared).is_err() {
                        return;
                    }
                }
            });
        }
        drop(to_write);
        let reading = scope.spawn(move || {
            let mut next = 0usize;
            let digest = warrant_facts::each_file_entity(&path_for_reader, |entity| {
                if warrant_facts::is_action(&entity) {
                    return Ok(());
                }
                next = (next + 1) % to_prepare.len();
                to_prepare[next]
                    .send(entity)
                    .map_err(|_| "the facts store stopped taking entities".to_owned())
            });
            drop(to_prepare);
            digest
        });
        let mut in_file: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut written = Ok(());
        for prepared in prepared.iter() {
            let outcome = prepared.and_then(|prepared| {
                if !in_file.insert(prepared.key().to_owned()) {
                    return Err(format!("{} is given twice", prepared.key()));
                }
                if live.contains_key(prepared.key()) {
                    // The live change (or removal) takes its place.
                    return Ok(());
                }
                writer
                    .put_prepared(prepared, Origin::File)
                    .map(drop)
                    .map_err(|error| error.to_string())
            });
            if let Err(error) = outcome {
                written = Err(error);
                break;
            }
        }
        // (Dropping the receiver stops the preparers, and then the reader, at their next entity.)
        drop(prepared);
        let read = reading
            .join()
            .map_err(|_| anyhow::anyhow!("the facts file's reader failed"))
            .and_then(|read| read.map_err(anyhow::Error::from));
        (read.map(|digest| (digest, in_file)), written)
    });
    written.map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    let (digest, in_file) = read?;
    for (key, entity) in &live {
        let uid: EntityUid = key
            .parse()
            .map_err(|error| anyhow::anyhow!("the live store's {key}: {error}"))?;
        match entity.meta.retired_at {
            Some(_) => writer.remove(&uid)?,
            None => drop(writer.put(entity.entity.clone(), Origin::Live)?),
        }
    }
    for key in writer.uids_of(Origin::File)? {
        if !in_file.contains(&key) {
            let uid: EntityUid = key
                .parse()
                .map_err(|error| anyhow::anyhow!("the facts store's {key}: {error}"))?;
            writer.remove(&uid)?;
        }
    }
    let written_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    check_rules(&writer, schema).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    tracing::info!(
        entities = in_file.len(),
        written_ms,
        checked_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX) - written_ms,
        "facts file read into the facts store"
    );
    writer.set_meta(warrant_store::facts::META_FILE_DIGEST, digest);
    writer.set_meta(
        warrant_store::facts::META_SCHEMA_VERSION,
        folder.schema_version().to_string(),
    );
    Ok(Some(writer))
}

/// The most entities one page of a list reads, matching or not: a list call's work is bounded
/// whatever its filter.
pub const MAX_LIST_SCAN: usize = 10_000;

/// One page of a list, and the token of the next (`None` on the last).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after: Option<String>,
}

/// The entities of `prefixes` after the token `after`, in key order, each kept if `view` gives
/// it one: at most `limit` kept, from at most `MAX_LIST_SCAN` read.
fn page_of<T>(
    facts: &Facts,
    prefixes: &[String],
    after: Option<&str>,
    limit: usize,
    mut view: impl FnMut(&EntityUid) -> Result<Option<T>, ControlError>,
) -> Result<Page<T>, ControlError> {
    let scanned = facts
        .reader()
        .uids_after(prefixes, after, MAX_LIST_SCAN)
        .map_err(unavailable)?;
    let mut items = Vec::new();
    let mut last_read: Option<&EntityUid> = None;
    for uid in &scanned {
        if items.len() == limit {
            return Ok(Page {
                items,
                next_after: last_read.map(ToString::to_string),
            });
        }
        if let Some(item) = view(uid)? {
            items.push(item);
        }
        last_read = Some(uid);
    }
    let next_after = (scanned.len() == MAX_LIST_SCAN)
        .then(|| last_read.map(ToString::to_string))
        .flatten();
    Ok(Page { items, next_after })
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
    if !facts.contains(&uid) {
        return Err(invalid(field, format!("no {entity} is known")));
    }
    Ok(uid)
}

fn entity_json(uid: &EntityUid) -> Value {
    json!({"__entity": {"type": uid.type_name().to_string(), "id": uid.id().unescaped()}})
}

fn datetime_json(at: UnixMillis) -> Value {
    json!({"__extn": {"fn": "datetime", "arg": at.to_cedar_datetime()}})
}

/// `parents` in JSON, each a known entity of a declared type.
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

/// An entity's parents, from its JSON form.
fn parents_of(entity: &Value) -> Vec<EntityRef> {
    entity["parents"]
        .as_array()
        .map(|parents| {
            parents
                .iter()
                .filter_map(|p| EntityUid::from_json(p.clone()).ok())
                .map(|uid| EntityRef::from_uid(&uid))
                .collect()
        })
        .unwrap_or_default()
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

/// NOT_FOUND for `entity` (`what` says what it was asked as: "identity ", or ""), naming the
/// entities of its type whose ids are within two edits of its own, when there are any.
pub(crate) fn not_found(
    facts: &warrant_facts::Facts,
    what: &str,
    entity: &EntityRef,
) -> ControlError {
    let near: Vec<String> = facts
        .similar(&uid_of(entity), 3)
        .iter()
        .map(|uid| EntityRef::from_uid(uid).to_string())
        .collect();
    match near.as_slice() {
        [] => ControlError::NotFound(format!("no {what}{entity}")),
        _ => ControlError::NotFound(format!(
            "no {what}{entity}; did you mean {}?",
            near.join(" or ")
        )),
    }
}

#[cfg(test)]
mod tests {
    //! The control plane in process, on the bundled policies, with a manual clock: what each
    //! change does to the very next decision, and that a refused change leaves nothing behind.

    use std::collections::BTreeMap;

    use super::approvals::{ApprovalGrant, ApprovalState};
    use super::identities::IdentityUpdate;
    use super::*;
    use warrant_domain::clock::ManualClock;
    use warrant_domain::{CheckRequest, Effect};

    const HOUR: i64 = 3_600_000;

    fn control(now: UnixMillis) -> (Arc<Control>, Arc<ManualClock>, tempfile::TempDir) {
        let data = tempfile::tempdir().unwrap();
        let store = LiveStore::open(data.path()).unwrap();
        let clock = Arc::new(ManualClock::new(now));
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        let control = Control::open(
            &policies,
            Arc::new(store),
            clock.clone(),
            EngineSettings::default(),
            Rules::default(),
            None,
            None,
        )
        .unwrap();
        (Arc::new(control), clock, data)
    }

    /// A copy of the bundled policy folder, to change.
    fn bundled_policies_copy() -> tempfile::TempDir {
        let folder = tempfile::tempdir().unwrap();
        let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        for entry in std::fs::read_dir(&bundled).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, folder.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        folder
    }

    fn deploy(approval: &str) -> CheckRequest {
        CheckRequest {
            principal: EntityRef::new("ServiceAccount", "deploy-bot"),
            action: "update".into(),
            resource: EntityRef::new("Config", "payments-api"),
            context: BTreeMap::new(),
            approval_id: Some(approval.into()),
            request_id: None,
            resource_description: None,
            caller_identity: None,
            credential: None,
        }
    }

    fn grant(id: &str, now: UnixMillis) -> ApprovalGrant {
        ApprovalGrant {
            id: Some(id.into()),
            ticket: format!("CHG-{id}"),
            approver: Some(EntityRef::new("Human", "alice")),
            requester: Some(EntityRef::new("Human", "bob")),
            subject: Some(EntityRef::new("ServiceAccount", "deploy-bot")),
            actions: vec!["update".into()],
            scope: Some(EntityRef::new("Scope", "production")),
            expires_at: Some(UnixMillis(now.0 + HOUR)),
            justification: Some("payments hotfix".into()),
            ..ApprovalGrant::default()
        }
    }

    fn effect(control: &Control, request: &CheckRequest) -> (Effect, Vec<String>) {
        let decision = control.engine().check(request).unwrap();
        (decision.effect, decision.reasons)
    }

    #[test]
    fn a_grant_allows_at_once_until_it_expires_or_is_revoked() {
        let now = UnixMillis::parse_cedar_datetime("2026-06-01T12:00:00Z").unwrap();
        let (control, clock, _data) = control(now);
        assert_eq!(
            effect(&control, &deploy("live-1")).1,
            ["warrant:unknown-approval"]
        );
        let view = control.grant_approval(grant("live-1", now)).unwrap();
        assert_eq!(view.state, ApprovalState::Active);
        assert_eq!(effect(&control, &deploy("live-1")).0, Effect::Allow);

        // The cached allow does not outlive the approval.
        clock.set(UnixMillis(now.0 + HOUR));
        assert_eq!(effect(&control, &deploy("live-1")).0, Effect::Deny);
        assert_eq!(
            control.approval("live-1").unwrap().state,
            ApprovalState::Expired
        );

        clock.set(now);
        control.grant_approval(grant("live-2", now)).unwrap();
        assert_eq!(effect(&control, &deploy("live-2")).0, Effect::Allow);
        control.revoke_approval("live-2", "rolled back").unwrap();
        assert_eq!(effect(&control, &deploy("live-2")).0, Effect::Deny);
        assert_eq!(
            control.approval("live-2").unwrap().state,
            ApprovalState::Revoked
        );
    }

    #[test]
    fn a_refused_change_names_its_field_and_leaves_the_facts_as_they_were() {
        let now = UnixMillis::parse_cedar_datetime("2026-06-01T12:00:00Z").unwrap();
        let (control, _clock, _data) = control(now);
        let facts_before = Arc::clone(control.engine().snapshot().facts.version());
        let mut own = grant("self-approved", now);
        own.approver = own.requester.clone();
        match control.grant_approval(own) {
            Err(ControlError::Invalid { field, .. }) => assert_eq!(field, "approval.approver"),
            other => panic!("a self-approval was not refused: {other:?}"),
        }
        let mut forever = grant("too-long", now);
        forever.expires_at = Some(UnixMillis(now.0 + 10_000 * HOUR));
        assert!(matches!(
            control.grant_approval(forever),
            Err(ControlError::Invalid { field, .. }) if field == "approval.expires_at"
        ));
        assert_eq!(control.engine().snapshot().facts.version(), &facts_before);
        assert!(matches!(
            control.approval("self-approved"),
            Err(ControlError::NotFound(_))
        ));
    }

    #[test]
    fn suspending_an_identity_denies_its_next_check_and_reactivating_allows_again() {
        let now = UnixMillis::parse_cedar_datetime("2026-06-01T12:00:00Z").unwrap();
        let (control, _clock, _data) = control(now);
        control.grant_approval(grant("live-3", now)).unwrap();
        assert_eq!(effect(&control, &deploy("live-3")).0, Effect::Allow);
        let bot = EntityRef::new("ServiceAccount", "deploy-bot");
        let status = |status: &str| IdentityUpdate {
            status: Some(status.into()),
            ..IdentityUpdate::default()
        };
        control.update_identity(&bot, status("suspended")).unwrap();
        assert_eq!(effect(&control, &deploy("live-3")).0, Effect::Deny);
        control.update_identity(&bot, status("active")).unwrap();
        assert_eq!(effect(&control, &deploy("live-3")).0, Effect::Allow);
    }

    #[test]
    fn a_cached_decision_keeps_answering_through_changes_to_entities_it_did_not_read() {
        let now = UnixMillis::parse_cedar_datetime("2026-06-01T12:00:00Z").unwrap();
        let (control, clock, _data) = control(now);
        control.grant_approval(grant("live-4", now)).unwrap();
        // (At the approval's first instant, a decision is known for that millisecond only.)
        clock.set(UnixMillis(now.0 + 1_000));
        let answer = |request: &CheckRequest| control.engine().check(request).unwrap();
        assert!(!answer(&deploy("live-4")).provenance.answered_from_cache);
        let cache = control.engine().cache().unwrap();
        let hits = cache
            .counters()
            .hits
            .load(std::sync::atomic::Ordering::Relaxed);
        // A hundred changes to other identities, in place and (with new parents) rebuilt, and
        // grants to others: the cached allow keeps answering, under each new facts version.
        let other = EntityRef::new("ServiceAccount", "reporting");
        for i in 0..100 {
            let update = IdentityUpdate {
                status: Some(if i % 2 == 0 { "suspended" } else { "active" }.into()),
                parents: (i % 10 == 0).then(Vec::new),
                ..IdentityUpdate::default()
            };
            control.update_identity(&other, update).unwrap();
            if i % 25 == 0 {
                let mut to_other = grant(&format!("other-{i}"), now);
                to_other.subject = Some(EntityRef::new("ServiceAccount", "db-admin"));
                to_other.scope = Some(EntityRef::new("Scope", "customer-databases"));
                control.grant_approval(to_other).unwrap();
            }
            let decision = answer(&deploy("live-4"));
            assert_eq!(decision.effect, Effect::Allow);
            assert!(decision.provenance.answered_from_cache, "change {i}");
            assert_eq!(
                &decision.provenance.facts_version,
                control.engine().snapshot().facts.version()
            );
        }
        assert_eq!(
            cache
                .counters()
                .hits
                .load(std::sync::atomic::Ordering::Relaxed),
            hits + 100
        );
        // A change to what it read (its principal) is seen at once.
        control
            .update_identity(
                &EntityRef::new("ServiceAccount", "deploy-bot"),
                IdentityUpdate {
                    status: Some("suspended".into()),
                    ..IdentityUpdate::default()
                },
            )
            .unwrap();
        let decision = answer(&deploy("live-4"));
        assert_eq!(decision.effect, Effect::Deny);
        assert!(!decision.provenance.answered_from_cache);
        assert!(
            cache
                .counters()
                .stale
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
    }

    /// The facts store outlives the process: a restart with the same file reads nothing again;
    /// a restart after the file changed takes the file's changes, keeps the live ones in
    /// their place (and the file's entity they replaced out), and drops what left the file.
    #[test]
    fn a_restart_takes_the_file_s_changes_and_keeps_the_live_ones() {
        let now = UnixMillis::parse_cedar_datetime("2026-06-01T12:00:00Z").unwrap();
        let folder = bundled_policies_copy();
        let data = tempfile::tempdir().unwrap();
        let open = || {
            Control::open(
                folder.path(),
                Arc::new(LiveStore::open(data.path()).unwrap()),
                Arc::new(ManualClock::new(now)),
                EngineSettings::default(),
                Rules::default(),
                None,
                None,
            )
            .unwrap()
        };
        let deploy_bot = EntityRef::new("ServiceAccount", "deploy-bot");
        let reporting = EntityRef::new("ServiceAccount", "reporting");
        let (version, revision) = {
            let control = open();
            control.grant_approval(grant("live-7", now)).unwrap();
            let update = IdentityUpdate {
                status: Some("suspended".into()),
                ..IdentityUpdate::default()
            };
            control.update_identity(&reporting, update).unwrap();
            let facts = Arc::clone(&control.engine().snapshot().facts);
            (Arc::clone(facts.version()), facts.revision())
        };
        // The same file: the store is taken as it is.
        let control = open();
        let facts = Arc::clone(&control.engine().snapshot().facts);
        assert_eq!(facts.version(), &version);
        assert_eq!(facts.revision(), revision);
        assert_eq!(effect(&control, &deploy("live-7")).0, Effect::Allow);
        drop((control, facts));

        // The file changes: a dataset leaves it, a human's email changes, and the identity the
        // admin API changed is changed in the file too.
        let file = folder.path().join(warrant_facts::ENTITIES_FILE);
        let mut entities: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        entities.retain(|e| e["uid"]["id"] != "sales-2026");
        for entity in &mut entities {
            if entity["uid"]["id"] == "alice" {
                entity["attrs"]["email"] = json!("alice@new.example.com");
            }
            if entity["uid"]["id"] == "reporting" {
                entity["attrs"]["environment"] = json!("staging");
            }
        }
        std::fs::write(&file, serde_json::to_string(&entities).unwrap()).unwrap();
        let control = open();
        let facts = Arc::clone(&control.engine().snapshot().facts);
        assert!(facts.revision() > revision);
        assert!(!facts.contains(&uid_of(&EntityRef::new("Dataset", "sales-2026"))));
        let alice = facts
            .entity(&uid_of(&EntityRef::new("Human", "alice")))
            .unwrap();
        assert_eq!(
            warrant_facts::Origin::File,
            alice.origin,
            "a file entity stays the file's"
        );
        assert_eq!(
            control
                .identity(&deploy_bot)
                .unwrap()
                .identity
                .owner
                .as_ref()
                .unwrap()
                .email,
            Some("alice@new.example.com".into())
        );
        // The live change stands in place of the file's new form.
        let view = control.identity(&reporting).unwrap();
        assert_eq!(view.identity.status.as_deref(), Some("suspended"));
        assert_eq!(view.origin, Origin::Live);
        assert_ne!(view.attributes.get("environment"), Some(&json!("staging")));
        assert_eq!(effect(&control, &deploy("live-7")).0, Effect::Allow);
    }

    #[test]
    fn a_reload_that_leaves_the_facts_file_and_schema_alone_keeps_the_facts() {
        let now = UnixMillis::parse_cedar_datetime("2026-06-01T12:00:00Z").unwrap();
        let folder = bundled_policies_copy();
        let data = tempfile::tempdir().unwrap();
        let control = Control::open(
            folder.path(),
            Arc::new(LiveStore::open(data.path()).unwrap()),
            Arc::new(ManualClock::new(now)),
            EngineSettings::default(),
            Rules::default(),
            None,
            None,
        )
        .unwrap();
        control.grant_approval(grant("live-9", now)).unwrap();
        let before = Arc::clone(&control.engine().snapshot().facts);
        // A policy changes: the facts are the very same, live approval and all.
        let policy = folder.path().join("exports.cedar");
        let mut text = std::fs::read_to_string(&policy).unwrap();
        text.push_str("\n// reviewed\n");
        std::fs::write(&policy, text).unwrap();
        control.reload_policies().unwrap();
        let snapshot = control.engine().snapshot();
        assert!(Arc::ptr_eq(&before, &snapshot.facts));
        assert_eq!(effect(&control, &deploy("live-9")).0, Effect::Allow);
        // The facts file changes: parsed again, with the live approval kept on top.
        let file = folder.path().join(warrant_facts::ENTITIES_FILE);
        let mut entities: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        entities.push(json!({"uid": {"type": "Human", "id": "zoe"},
            "attrs": {"name": "Zoe", "email": "zoe@example.com"}, "parents": []}));
        std::fs::write(&file, serde_json::to_string(&entities).unwrap()).unwrap();
        control.reload_policies().unwrap();
        let facts = Arc::clone(&control.engine().snapshot().facts);
        assert!(!Arc::ptr_eq(&before, &facts));
        assert!(facts.contains(&uid_of(&EntityRef::new("Human", "zoe"))));
        assert_eq!(effect(&control, &deploy("live-9")).0, Effect::Allow);
    }
}
