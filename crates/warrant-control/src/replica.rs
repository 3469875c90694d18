//! A replica of a shared database (`postgres`). Every change made here is decided under the
//! database's publish lock on facts that hold every change before it (`begin_change`),
//! committed in the database's change log first (`end_change`) and then applied here. Every
//! change made elsewhere is applied here in log order (`catch_up`), woken by the database's
//! notifications and, as a fallback, by a poll. `Freshness` says until when this replica was
//! known to hold every committed change: past `max_staleness` the engine denies everything
//! (`warrant:facts-stale`) and health turns NOT_SERVING, until a catch-up succeeds again.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use super::*;
use warrant_fleet::Freshness;
use warrant_fleet::{ChangeOp, LoggedChange, PgError, PolicyBundle, Postgres, Publishing};

/// The most changes read from the log at once.
const CHANGES_PER_READ: i64 = 1_000;
/// Folders of pushed policy bundles, in the data folder.
pub const POLICY_BUNDLES_DIR: &str = "policy-bundles";

/// What a replica needs beside its control plane.
pub struct Replication {
    pub postgres: Arc<Postgres>,
    pub freshness: Arc<Freshness>,
    /// How often the log is read when no notification woke the replica.
    pub poll: Duration,
    /// The most changes the log keeps (older ones are dropped; a replica that far behind
    /// starts again from the live records).
    pub keep_changes: i64,
    /// Where pushed policy bundles are unpacked.
    pub data_dir: PathBuf,
    pub stats: ReplicaStats,
}

/// The replica's own counters, for the metrics.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// The newest change id this replica has heard of.
    pub head: AtomicI64,
    /// The last change id applied here (the one place it is held; written under the state
    /// lock).
    pub applied: AtomicI64,
    /// Times the notification connection was made again after it failed.
    pub reconnects: AtomicU64,
    /// Catch-ups that failed (the database unreachable, or a change that does not apply).
    pub failures: AtomicU64,
    /// Whether the last catch-up failed (logged once per failing stretch).
    pub failing: AtomicBool,
}

impl Replication {
    /// The last change of the log applied here.
    pub fn applied(&self) -> i64 {
        self.stats.applied.load(Ordering::Acquire)
    }

    /// Brings a data folder in line with the database before its facts are opened: a folder
    /// that follows another database, or holds live changes of its own, is refused; one that is
    /// new, or further behind than the log reaches, takes the database's live records whole.
    /// Sets the change id the folder stands at, and returns whether its facts must be rebuilt
    /// from the policy folder and the live records.
    pub fn join(&self, store: &LiveStore) -> anyhow::Result<bool> {
        let database = self.postgres.database_id();
        let (head, oldest) = self.postgres.head()?;
        let applied = match store.replication()? {
            Some(followed) if followed.database == database && followed.resync => {
                self.stats
                    .applied
                    .store(followed.applied, Ordering::Release);
                return Ok(true);
            }
            Some(followed) if followed.database == database => Some(followed.applied),
            Some(followed) => anyhow::bail!(
                "the data folder follows another shared database ({}, not {database}): \
                 give this replica a data folder of its own",
                followed.database
            ),
            None if store.entity_count()? > 0 || !store.links()?.is_empty() => anyhow::bail!(
                "the data folder holds live changes made without the shared database: export them \
                 (`warrant facts export`), import them into the fleet, and start this replica on \
                 a new data folder"
            ),
            None => None,
        };
        match applied {
            Some(applied) if applied >= oldest.saturating_sub(1) || applied == head => {
                self.stats.applied.store(applied, Ordering::Release);
                Ok(false)
            }
            _ => {
                let live = self.postgres.live_state()?;
                store.replace_live(database, live.head, &live.entities, &live.links)?;
                tracing::info!(
                    head = live.head,
                    entities = live.entities.len(),
                    links = live.links.len(),
                    "data folder set to the shared database's live records"
                );
                self.stats.applied.store(live.head, Ordering::Release);
                Ok(true)
            }
        }
    }

    /// The policy folder a pushed bundle is unpacked to (made if need be), or `None` when no
    /// bundle was pushed.
    pub fn bundle_dir(&self, version: Option<&str>) -> Result<Option<PathBuf>, ControlError> {
        self.postgres
            .policy_bundle(version)
            .map_err(shared)?
            .map(|bundle| unpack(&self.data_dir.join(POLICY_BUNDLES_DIR), &bundle))
            .transpose()
    }
}

/// Writes a bundle's files into `root/<sha256 of its version>` (once: a folder there is
/// complete, since it is renamed into place whole).
fn unpack(root: &Path, bundle: &PolicyBundle) -> Result<PathBuf, ControlError> {
    use sha2::Digest as _;
    let name = hex::encode(sha2::Sha256::digest(bundle.version.as_bytes()));
    let dir = root.join(&name);
    if dir.is_dir() {
        return Ok(dir);
    }
    let io = |error: std::io::Error| {
        ControlError::ReloadFailed(format!("cannot unpack policy bundle: {error}"))
    };
    warrant_files::private_dir(root).map_err(io)?;
    let partial = root.join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir(&partial).map_err(io)?;
    for (file, text) in &bundle.files {
        if file.contains('/') || file.starts_with('.') {
            return Err(ControlError::ReloadFailed(format!(
                "policy bundle {}: a file named {file:?} is not allowed",
                bundle.version
            )));
        }
        std::fs::write(partial.join(file), text).map_err(io)?;
    }
    std::fs::rename(&partial, &dir).map_err(io)?;
    Ok(dir)
}

/// Removes the unpacked bundles other than `kept` (the one in force): the folder holds one.
fn forget_bundles_but(kept: &Path) {
    let Some(root) = kept.parent() else {
        return;
    };
    let Ok(listing) = std::fs::read_dir(root) else {
        return;
    };
    for entry in listing.flatten() {
        let path = entry.path();
        if path != kept
            && let Err(error) = std::fs::remove_dir_all(&path)
        {
            tracing::warn!(%error, path = %path.display(), "cannot remove an old policy bundle");
        }
    }
}

fn shared(error: PgError) -> ControlError {
    ControlError::SharedStore(error.to_string())
}

impl Control {
    /// Starts a change on a replica (`None` for a single node, which has no log): takes the
    /// shared database's publish lock, so that no other replica publishes until this change
    /// ends, and applies here whatever other replicas published before it. The change is then
    /// decided on facts no other replica can change under it.
    pub(super) fn begin_change(
        &self,
        state: &mut State,
    ) -> Result<Option<Publishing>, ControlError> {
        let Some(replication) = self.replication.as_ref() else {
            return Ok(None);
        };
        let postgres = &replication.postgres;
        let mut publishing = postgres.begin_publish().map_err(shared)?;
        replication
            .stats
            .head
            .fetch_max(publishing.head, Ordering::AcqRel);
        let applied = replication.applied();
        if publishing.head > applied {
            for change in postgres.missed(&mut publishing, applied).map_err(shared)? {
                let id = change.id;
                self.apply_logged(state, change)?;
                self.applied(Some(id));
            }
        }
        Ok(Some(publishing))
    }

    /// Commits a change begun with `begin_change` in the shared database's log: its id, once
    /// it is committed there (`None` for a single node). The caller then applies it here.
    pub(super) fn end_change(
        &self,
        publishing: Option<Publishing>,
        ops: Vec<ChangeOp>,
    ) -> Result<Option<i64>, ControlError> {
        let (Some(publishing), Some(replication)) = (publishing, self.replication.as_ref()) else {
            return Ok(None);
        };
        let id = replication
            .postgres
            .commit_publish(publishing, ops, replication.keep_changes)
            .map_err(shared)?;
        replication.stats.head.fetch_max(id, Ordering::AcqRel);
        Ok(Some(id))
    }

    /// Records durably that a change which touched no facts (a link) is applied here.
    pub(super) fn record_applied(&self, applied: Option<i64>) -> Result<(), ControlError> {
        if let Some(id) = applied {
            self.store.set_applied(id)?;
        }
        self.applied(applied);
        Ok(())
    }

    /// Marks `applied` as applied here, once its change is in force. (Called under the state
    /// lock, which every change and catch-up holds.)
    pub(super) fn applied(&self, applied: Option<i64>) {
        if let (Some(id), Some(replication)) = (applied, self.replication.as_ref()) {
            replication.stats.applied.store(id, Ordering::Release);
        }
    }

    /// Applies every change of the shared database's log after the last one applied here, and
    /// confirms the facts fresh as of when it started. Returns how many were applied.
    pub fn catch_up(&self) -> Result<usize, ControlError> {
        let mut state = self.state();
        self.catch_up_locked(&mut state)
    }

    pub(super) fn catch_up_locked(&self, state: &mut State) -> Result<usize, ControlError> {
        let Some(replication) = self.replication.as_ref() else {
            return Ok(0);
        };
        let mut applied = 0;
        loop {
            let started = self.clock.now();
            let after = replication.applied();
            let changes = replication
                .postgres
                .changes_after(after, CHANGES_PER_READ)
                .map_err(shared)?;
            let complete = (changes.len() as i64) < CHANGES_PER_READ;
            if let Some(first) = changes.first()
                && first.id != after + 1
            {
                tracing::warn!(
                    log_starts_at = first.id,
                    applied = after,
                    "the shared database's log no longer reaches back to this replica's last \
                     change: taking its live records whole"
                );
                self.rejoin(state)?;
                continue;
            }
            for change in changes {
                let id = change.id;
                self.apply_logged(state, change)?;
                self.applied(Some(id));
                replication.stats.head.fetch_max(id, Ordering::AcqRel);
                applied += 1;
            }
            if complete {
                replication.freshness.confirm(started);
                return Ok(applied);
            }
        }
    }

    /// Takes the shared database's live records whole and rebuilds the facts and links from
    /// them and the policy folder, as a reload does: for a replica the log no longer reaches
    /// (it was trimmed past this replica's last change while it was cut off). Until the rebuild
    /// commits, the data folder says it is owed (`resync`), so a crash in between is repaired
    /// at the next start.
    fn rejoin(&self, state: &mut State) -> Result<(), ControlError> {
        let Some(replication) = self.replication.as_ref() else {
            return Ok(());
        };
        let live = replication.postgres.live_state().map_err(shared)?;
        self.store.replace_live(
            replication.postgres.database_id(),
            live.head,
            &live.entities,
            &live.links,
        )?;
        state.live_links = self.store.links()?;
        let loaded = self.load_folder(state, true);
        self.apply_reload(state, loaded)?;
        self.applied(Some(live.head));
        tracing::info!(
            head = live.head,
            entities = live.entities.len(),
            links = live.links.len(),
            "rejoined the shared database from its live records"
        );
        Ok(())
    }

    /// Applies one change of the log, made by any replica, as its maker did.
    fn apply_logged(&self, state: &mut State, change: LoggedChange) -> Result<(), ControlError> {
        let mut entities = Vec::new();
        for op in change.ops {
            match op {
                ChangeOp::Entity { uid, record } => entities.push((uid, record)),
                ChangeOp::Link { id, link } => self.apply_link(state, &id, Some(link))?,
                ChangeOp::Unlink { id } => self.apply_link(state, &id, None)?,
                ChangeOp::Policies { version } => self.apply_bundle(state, &version)?,
            }
        }
        if entities.is_empty() {
            return self.record_applied(Some(change.id));
        }
        let current = Arc::clone(&self.engine.snapshot().facts);
        let mut writer = self
            .facts_store
            .writer(state.policies.schema())
            .map_err(unavailable)?;
        for (uid, record) in &entities {
            let parsed: EntityUid = uid.parse().map_err(|error| {
                ControlError::Conflict(format!("change {}: {uid}: {error}", change.id))
            })?;
            match record.meta.retired_at {
                None => writer.put(record.entity.clone(), Origin::Live).map(drop),
                Some(_) => writer.remove(&parsed),
            }
            .map_err(|error| {
                ControlError::Conflict(format!(
                    "change {} from replica {}: {uid} does not apply here: {error}",
                    change.id, change.replica
                ))
            })?;
        }
        LiveStore::put_in(writer.transaction(), &entities)?;
        LiveStore::set_applied_in(writer.transaction(), change.id)?;
        let committed = writer.commit().map_err(unavailable)?;
        let facts = current.after(&committed, None).map_err(unavailable)?;
        self.engine.replace_snapshot(Snapshot {
            policies: Arc::clone(&state.policies),
            facts: Arc::new(facts),
        });
        state.facts_changed_at = self.clock.now();
        state.facts_changes += 1;
        Ok(())
    }

    /// Loads the pushed policy bundle `version` as this replica's policy folder.
    fn apply_bundle(&self, state: &mut State, version: &str) -> Result<(), ControlError> {
        let Some(replication) = self.replication.as_ref() else {
            return Ok(());
        };
        let Some(dir) = replication.bundle_dir(Some(version))? else {
            return Err(ControlError::NotFound(format!(
                "the shared database holds no policy bundle {version:?}"
            )));
        };
        let before = self.set_policies_dir(dir.clone());
        let loaded = self.load_folder(state, false);
        let reloaded = self.apply_reload(state, loaded);
        match reloaded {
            Ok(_) => forget_bundles_but(&dir),
            Err(_) => {
                self.set_policies_dir(before);
            }
        }
        reloaded.map(drop)
    }

    /// Starts following the shared database: a task listens for its notifications
    /// (reconnecting when the connection fails) and another applies the log whenever woken,
    /// or every `poll`.
    pub fn follow(self: &Arc<Self>) {
        let Some(replication) = self.replication.as_ref() else {
            return;
        };
        let postgres = Arc::clone(&replication.postgres);
        let (woken, mut wake) = tokio::sync::mpsc::channel::<i64>(64);
        let listening = Arc::clone(self);
        let listener_postgres = Arc::clone(&postgres);
        postgres.spawn(async move {
            let mut pause = Duration::from_millis(50);
            loop {
                let outcome = listener_postgres.listen(woken.clone()).await;
                if woken.is_closed() {
                    return;
                }
                if let Some(replication) = listening.replication.as_ref() {
                    replication.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                if let Err(error) = outcome {
                    tracing::warn!(%error, "the shared database's notifications stopped; reconnecting");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        });
        let control = Arc::clone(self);
        let poll = replication.poll;
        postgres.spawn(async move {
            loop {
                tokio::select! {
                    woke = wake.recv() => {
                        if let Some(id) = woke
                            && let Some(replication) = control.replication.as_ref()
                        {
                            replication.stats.head.fetch_max(id, Ordering::AcqRel);
                        }
                        while wake.try_recv().is_ok() {}
                    }
                    () = tokio::time::sleep(poll) => {}
                }
                let applying = Arc::clone(&control);
                let outcome = tokio::task::spawn_blocking(move || applying.catch_up()).await;
                let Some(replication) = control.replication.as_ref() else {
                    return;
                };
                match outcome {
                    Ok(Ok(_)) => {
                        if replication.stats.failing.swap(false, Ordering::AcqRel) {
                            tracing::info!(
                                "the shared database is reachable again; facts caught up"
                            );
                        }
                    }
                    Ok(Err(error)) => {
                        replication.stats.failures.fetch_add(1, Ordering::Relaxed);
                        if !replication.stats.failing.swap(true, Ordering::AcqRel) {
                            tracing::error!(
                                %error,
                                "cannot catch up with the shared database; deciding from the \
                                 facts held until max_staleness"
                            );
                        }
                    }
                    Err(error) => tracing::error!(%error, "the catch-up task failed"),
                }
            }
        });
    }

    /// The replication in force, for a replica of a shared database.
    pub fn replication(&self) -> Option<&Replication> {
        self.replication.as_ref()
    }
}
