//! Policy reloads: the folder (and the shadow folder) loaded, validated and swapped in whole,
//! on `ReloadPolicies` or when the folder watcher sees a change settle.

use super::*;

/// How long the folder must be quiet after a change before it is reloaded.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(250);

/// How often a reload reads the folder again when its files changed while it was being read.
const RELOAD_ATTEMPTS: usize = 5;

/// A policy folder read and validated, not yet swapped in: its policies, the uncommitted change
/// that brings the facts' store in line with its facts file (`None` when the file and the
/// schema are as they were, and the facts are kept), and the shadow policies.
type LoadedFolder = (PolicySnapshot, Option<FactsWriter>, Option<PolicySnapshot>);

impl Control {
    /// Reloads the policy folder: all or nothing. On failure the last good set keeps serving,
    /// and the error is logged, counted and kept for `status`. What is loaded is what the
    /// folder held from the start of the reading to its end: if a file changed meanwhile (a
    /// writer that started while the folder was read), it is read again.
    pub fn reload_policies(&self) -> Result<StatusView, ControlError> {
        let mut state = self.state();
        let mut loaded = Err(String::new());
        for attempt in 1..=RELOAD_ATTEMPTS {
            let before = folder_state(&self.policies_dir());
            // (A change read before must be let go first: the store takes one writer at a time.)
            drop(std::mem::replace(&mut loaded, Err(String::new())));
            loaded = self.load_folder(&state, false);
            if folder_state(&self.policies_dir()) == before {
                break;
            }
            loaded = Err(format!(
                "the policy folder kept changing while it was read ({attempt} attempts)"
            ));
            std::thread::sleep(RELOAD_DEBOUNCE / 5);
        }
        self.apply_reload(&mut state, loaded)
    }

    /// The folder's policies, facts (with the live changes) and shadow policies, read and
    /// validated; nothing swapped yet. `resync` rebuilds the facts from the folder and the live
    /// records even if neither changed (a replica that took the live records whole).
    pub(super) fn load_folder(&self, state: &State, resync: bool) -> Result<LoadedFolder, String> {
        let dir = self.policies_dir();
        PolicySnapshot::load(&dir)
            .map_err(|error| error.to_string())
            .and_then(|policies| {
                let current = self.engine.snapshot();
                // The same file checked against the same schema, with the same live changes,
                // gives the facts in force: kept, not read again.
                let sync = facts_to_sync(
                    &current.facts,
                    &self.facts_store,
                    &policies,
                    &dir,
                    &self.store,
                    resync,
                )
                .map_err(|error| format!("{error:#}"))?;
                if resync && let Some(writer) = &sync {
                    LiveStore::resynced_in(writer.transaction())
                        .map_err(|error| error.to_string())?;
                }
                let policies = match &sync {
                    Some(writer) => links::with_live_links(&policies, &state.live_links, &|uid| {
                        writer.contains(uid).unwrap_or(false)
                    })?,
                    None => links::with_live_links(&policies, &state.live_links, &|uid| {
                        current.facts.contains(uid)
                    })?,
                };
                let candidate = match &self.shadow_dir {
                    Some(dir) => Some(links::shadow_with_live_links(
                        PolicySnapshot::load(dir).map_err(|error| {
                            format!("the shadow policies in {}: {error}", dir.display())
                        })?,
                        &state.live_links,
                    )),
                    None => None,
                };
                Ok((policies, sync, candidate))
            })
    }

    /// Swaps in what `load_folder` read, or records why it could not be.
    pub(super) fn apply_reload(
        &self,
        state: &mut State,
        loaded: Result<LoadedFolder, String>,
    ) -> Result<StatusView, ControlError> {
        let now = self.clock.now();
        match loaded {
            Ok((policies, sync, candidate)) => {
                let current = self.engine.snapshot();
                let facts = match sync {
                    None => Arc::clone(&current.facts),
                    Some(writer) => {
                        let committed = writer.commit().map_err(unavailable);
                        match committed.and_then(|committed| {
                            current
                                .facts
                                .after(&committed, Some(policies.schema()))
                                .map_err(unavailable)
                        }) {
                            Ok(facts) => Arc::new(facts),
                            Err(error) => {
                                state.reload_failures += 1;
                                state.last_reload_error = Some((now, error.to_string()));
                                return Err(error);
                            }
                        }
                    }
                };
                if let Some(candidate) = candidate {
                    let current = self.engine.shadow().map(|s| Arc::clone(s.version()));
                    if current.as_deref() != Some(candidate.version().as_ref()) {
                        tracing::info!(policy_version = %candidate.version(), "shadow policies reloaded");
                        self.engine.set_shadow(Some(Arc::new(candidate)));
                    }
                }
                let current = self.engine.snapshot();
                if current.policies.version() == policies.version()
                    && current.facts.version() == facts.version()
                {
                    tracing::debug!("policy folder unchanged");
                } else {
                    let policies = Arc::new(policies);
                    tracing::info!(
                        policy_version = %policies.version(),
                        facts_version = %facts.version(),
                        policies = policies.policy_count(),
                        "policies reloaded from {}",
                        self.policies_dir().display()
                    );
                    if current.facts.version() != facts.version() {
                        state.facts_changed_at = now;
                        state.facts_changes += 1;
                    }
                    self.engine.replace_snapshot(Snapshot {
                        policies: Arc::clone(&policies),
                        facts,
                    });
                    state.policies = policies;
                    state.policies_loaded_at = now;
                }
                // A reload that found the folder as it was still succeeded.
                state.reloads += 1;
                state.last_reload_error = None;
                Ok(self.status_of(state))
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
        watcher.watch(&self.policies_dir(), notify::RecursiveMode::NonRecursive)?;
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
                        let before = folder_state(&control.policies_dir());
                        std::thread::sleep(RELOAD_DEBOUNCE);
                        if folder_state(&control.policies_dir()) == before {
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
