//! The shared database of a fleet of replicas (`store = "postgres://..."`): PostgreSQL holds
//! the live changes (entities' records, template links), the approval use counts and budgets
//! spent, single-use tokens seen, pushed policy bundles, and an append-only change log with
//! increasing ids. Each replica keeps its facts in its own data folder and applies the change
//! log in order (`warrant::control::replica`); this crate is the database's side: connecting (a pool,
//! TLS), migrations, publishing a change, reading the log, counting uses.
//!
//! Everything here runs on a small runtime of its own, so that the synchronous callers (the
//! engine's use counter, the control plane) can wait for an answer from any thread, inside the
//! server's runtime or not, with a deadline.
//!
//! May depend on: `warrant-domain`, `warrant-store`.
//! Invariant: a change is in the shared log before any replica applies it; the log is applied in
//!   order.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use warrant_store::{LiveEntity, LiveLink};

mod counters;
mod freshness;
mod members;
mod migrations;

pub use freshness::Freshness;
pub use members::Member;

pub use migrations::SCHEMA_VERSION;

/// The channel every published change is announced on (its payload: the change id).
pub const CHANNEL: &str = "warrant_changes";
/// Connections kept for publishing changes (one at a time per replica, under the control
/// plane's lock; one more while a dropped change is rolled back).
const PUBLISHING_CONNECTIONS: usize = 2;
/// The longest a change may take to be decided on its replica while it holds the publish lock
/// (an import of about a million entities is decided in less).
const IDLE_IN_CHANGE: Duration = Duration::from_secs(60);
/// The advisory lock that makes publishing serial, so change ids commit in order.
const PUBLISH_LOCK: i64 = 0x5741_5252_414e_5401;

/// How to reach the database.
#[derive(Clone)]
pub struct StoreSettings {
    /// `postgres://user@host:port/db?sslmode=require`; a password in it is taken but never
    /// printed.
    pub url: String,
    /// The password, from `WARRANT_STORE_PASSWORD` or `store_password_file`.
    pub password: Option<String>,
    /// CA certificates (PEM) the database's certificate must chain to; the system's otherwise.
    pub ca: Option<std::path::PathBuf>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// The longest one call to the database may take.
    pub timeout: Duration,
    /// This replica's name, in the change log and its ledger.
    pub replica: String,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &redacted_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

/// A database URL with any password replaced, fit to log.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("the shared database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("the shared database: no connection: {0}")]
    Pool(String),
    #[error("the shared database did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the shared database: {0}")]
    Invalid(String),
    #[error("the shared database holds a damaged change {id}: {message}")]
    Damaged { id: i64, message: String },
}

/// One step of a change, as the log keeps it: what a replica applies to follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ChangeOp {
    /// An entity's live record (a put, or a removal when `record.meta.retired_at` is set).
    Entity { uid: String, record: LiveEntity },
    /// A template link made.
    Link { id: String, link: LiveLink },
    /// A template link removed.
    Unlink { id: String },
    /// A policy bundle pushed (`warrant policy push`): every replica loads it.
    Policies { version: String },
}

/// A change from the log.
#[derive(Debug, Clone)]
pub struct LoggedChange {
    pub id: i64,
    pub replica: String,
    pub ops: Vec<ChangeOp>,
}

/// A change being made: a pooled connection inside a transaction that holds the publish lock.
/// Dropped without `commit_publish`, it is rolled back (and the lock let go).
pub struct Publishing {
    client: Option<deadpool_postgres::Object>,
    /// The newest change id when the lock was taken; this change will be the next.
    pub head: i64,
    handle: tokio::runtime::Handle,
}

impl Drop for Publishing {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.handle.spawn(async move {
                let _ = client.batch_execute("ROLLBACK").await;
            });
        }
    }
}

/// Everything live at one change id: how a replica that is new, or too far behind the log,
/// starts.
#[derive(Debug)]
pub struct LiveState {
    pub head: i64,
    pub entities: Vec<(String, LiveEntity)>,
    pub links: Vec<(String, LiveLink)>,
}

/// A policy bundle as pushed: its version and its files, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyBundle {
    pub version: String,
    pub files: std::collections::BTreeMap<String, String>,
}

pub struct Postgres {
    /// Taken only by `drop`, which shuts it down without waiting (a runtime may not be dropped
    /// inside another).
    runtime: Option<tokio::runtime::Runtime>,
    /// The runtime's handle, where the work is spawned.
    handle: tokio::runtime::Handle,
    /// Connections for single statements.
    pool: deadpool_postgres::Pool,
    /// Connections for changes being published (`Publishing`), each a transaction.
    publishing: deadpool_postgres::Pool,
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    settings: StoreSettings,
    /// The database's identity (made by the first migration): a data folder follows one.
    database_id: String,
}

impl Postgres {
    /// Connects, applies the migrations this build knows (refusing a database newer than it),
    /// and returns the pool.
    pub fn connect(settings: StoreSettings) -> Result<Postgres, PgError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("warrant-postgres")
            .enable_all()
            .build()
            .map_err(|error| PgError::Invalid(format!("cannot start its runtime: {error}")))?;
        let mut config: tokio_postgres::Config = settings
            .url
            .parse()
            .map_err(|error| PgError::Invalid(format!("store: not a database URL: {error}")))?;
        if let Some(password) = &settings.password {
            config.password(password.as_str());
        }
        config.connect_timeout(settings.timeout);
        // Every statement (and a wait for the publish lock) ends within the deadline callers
        // wait for; a session that stays inside a transaction (a replica cut off while it held
        // the publish lock) is ended by the server, so the lock is never kept.
        let deadline = settings.timeout.as_millis();
        config.options(format!(
            "-c statement_timeout={deadline} -c lock_timeout={deadline} \
             -c idle_in_transaction_session_timeout={}",
            IDLE_IN_CHANGE.as_millis()
        ));
        config.keepalives_idle(Duration::from_secs(10));
        config.application_name(format!("warrant {}", settings.replica));
        let tls = tls_connector(settings.ca.as_deref())?;
        let pool = |recycling_method, size| {
            let manager = deadpool_postgres::Manager::from_config(
                config.clone(),
                tls.clone(),
                deadpool_postgres::ManagerConfig { recycling_method },
            );
            deadpool_postgres::Pool::builder(manager)
                .max_size(size)
                .wait_timeout(Some(settings.timeout))
                .create_timeout(Some(settings.timeout))
                .recycle_timeout(Some(settings.timeout))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|error| PgError::Pool(error.to_string()))
        };
        // Single statements (reads, counts) leave no transaction open.
        let statements = pool(deadpool_postgres::RecyclingMethod::Fast, settings.pool_size)?;
        // A publishing connection given back inside its transaction (a change that failed
        // half-way) is rolled back before it is used again. Publishing is serial fleet-wide, so
        // two are plenty.
        let publishing = pool(
            deadpool_postgres::RecyclingMethod::Custom("ROLLBACK".to_owned()),
            PUBLISHING_CONNECTIONS,
        )?;
        let mut postgres = Postgres {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            pool: statements,
            publishing,
            config,
            tls,
            settings,
            database_id: String::new(),
        };
        postgres.database_id = postgres.migrate()?;
        Ok(postgres)
    }

    pub fn replica(&self) -> &str {
        &self.settings.replica
    }

    pub fn database_id(&self) -> &str {
        &self.database_id
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Runs `work` on this module's runtime and waits for it, at most `timeout`.
    fn block<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, PgError>> + Send + 'static,
    ) -> Result<T, PgError> {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let timeout = self.settings.timeout;
        self.handle().spawn(async move {
            let outcome = match tokio::time::timeout(timeout, work).await {
                Ok(outcome) => outcome,
                Err(_) => Err(PgError::TimedOut(timeout)),
            };
            let _ = answer.send(outcome);
        });
        answered
            .recv_timeout(timeout + Duration::from_millis(100))
            .unwrap_or(Err(PgError::TimedOut(timeout)))
    }

    /// Runs `work` with a pooled connection for single statements, on this module's runtime,
    /// and waits for it (`block`).
    fn with_client<T: Send + 'static, F>(
        &self,
        work: impl FnOnce(deadpool_postgres::Object) -> F + Send + 'static,
    ) -> Result<T, PgError>
    where
        F: Future<Output = Result<T, PgError>> + Send + 'static,
    {
        let pool = self.pool.clone();
        self.block(async move { work(get(&pool).await?).await })
    }

    /// Spawns a task on this module's runtime (the change log's follower).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.handle().spawn(task);
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// The newest change id (0 for none) and the oldest the log still holds.
    pub fn head(&self) -> Result<(i64, i64), PgError> {
        self.with_client(move |client| async move {
            let row = client
                .query_one(
                    "SELECT coalesce(max(id), 0), coalesce(min(id), 0) FROM warrant_changes",
                    &[],
                )
                .await?;
            Ok((row.get(0), row.get(1)))
        })
    }

    /// Starts a change: a transaction that holds the publish lock, so that no other replica
    /// publishes until this one commits (`commit_publish`) or is dropped (rolled back). Returns
    /// it with the newest change id, read under the lock.
    pub fn begin_publish(&self) -> Result<Publishing, PgError> {
        let pool = self.publishing.clone();
        let client = self.block(async move {
            let client = get(&pool).await?;
            client.batch_execute("BEGIN").await?;
            Ok(client)
        })?;
        let mut publishing = Publishing {
            client: Some(client),
            head: 0,
            handle: self.handle.clone(),
        };
        publishing.head = self.on_publishing(&mut publishing, |client| async move {
            let head = async {
                client
                    .execute("SELECT pg_advisory_xact_lock($1)", &[&PUBLISH_LOCK])
                    .await?;
                let row = client
                    .query_one("SELECT coalesce(max(id), 0) FROM warrant_changes", &[])
                    .await?;
                Ok::<i64, PgError>(row.get(0))
            }
            .await;
            (client, head)
        })?;
        Ok(publishing)
    }

    /// The changes after `after` up to the head `publishing` holds: what the publisher must
    /// apply before it decides.
    pub fn missed(
        &self,
        publishing: &mut Publishing,
        after: i64,
    ) -> Result<Vec<LoggedChange>, PgError> {
        self.on_publishing(publishing, move |client| async move {
            let changes = async {
                let rows = client
                    .query(
                        "SELECT id, replica, ops FROM warrant_changes WHERE id > $1 ORDER BY id",
                        &[&after],
                    )
                    .await?;
                rows.into_iter().map(logged).collect()
            }
            .await;
            (client, changes)
        })
    }

    /// Commits `ops` as the change after the head `publishing` holds, with the rows it leaves,
    /// and wakes every replica. The change log keeps `keep` changes; older ones are dropped (a
    /// replica that far behind starts again from `live_state`).
    pub fn commit_publish(
        &self,
        mut publishing: Publishing,
        ops: Vec<ChangeOp>,
        keep: i64,
    ) -> Result<i64, PgError> {
        let id = publishing.head + 1;
        let replica = self.settings.replica.clone();
        let json = serde_json::to_value(&ops)
            .map_err(|error| PgError::Invalid(format!("cannot write a change: {error}")))?;
        self.on_publishing(&mut publishing, move |client| async move {
            let committed = async {
                client
                    .execute(
                        "INSERT INTO warrant_changes (id, replica, ops) VALUES ($1, $2, $3)",
                        &[&id, &replica, &json],
                    )
                    .await?;
                for op in &ops {
                    write_op(&client, op, id).await?;
                }
                client
                    .execute(
                        "DELETE FROM warrant_changes WHERE id <= $1",
                        &[&(id - keep.max(1))],
                    )
                    .await?;
                client
                    .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &id.to_string()])
                    .await?;
                client.batch_execute("COMMIT").await?;
                Ok::<i64, PgError>(id)
            }
            .await;
            (client, committed)
        })?;
        // Committed: the connection goes back to the pool as it is.
        drop(publishing.client.take());
        Ok(id)
    }

    /// Runs `work` on the connection `publishing` holds and waits for it, at most `timeout`
    /// (the server's `statement_timeout` is the same, so the work ends by itself). A connection
    /// whose answer came too late is rolled back by the task, so the lock is never left held.
    fn on_publishing<T: Send + 'static, F>(
        &self,
        publishing: &mut Publishing,
        work: impl FnOnce(deadpool_postgres::Object) -> F + Send + 'static,
    ) -> Result<T, PgError>
    where
        F: Future<Output = (deadpool_postgres::Object, Result<T, PgError>)> + Send + 'static,
    {
        let client = publishing
            .client
            .take()
            .ok_or_else(|| PgError::Invalid("the change was already ended".to_owned()))?;
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let (client, outcome) = work(client).await;
            if let Err(returned) = answer.try_send((client, outcome)) {
                let (client, _) = match returned {
                    std::sync::mpsc::TrySendError::Full(returned)
                    | std::sync::mpsc::TrySendError::Disconnected(returned) => returned,
                };
                let _ = client.batch_execute("ROLLBACK").await;
            }
        });
        let (client, outcome) = answered
            .recv_timeout(self.settings.timeout + Duration::from_secs(1))
            .map_err(|_| PgError::TimedOut(self.settings.timeout))?;
        // A failed statement leaves the transaction aborted: `Drop` rolls it back.
        publishing.client = Some(client);
        outcome
    }

    /// The changes after `after`, in order, at most `limit`.
    pub fn changes_after(&self, after: i64, limit: i64) -> Result<Vec<LoggedChange>, PgError> {
        self.with_client(move |client| async move {
            let rows = client
                .query(
                    "SELECT id, replica, ops FROM warrant_changes WHERE id > $1 ORDER BY id LIMIT $2",
                    &[&after, &limit],
                )
                .await?;
            rows.into_iter().map(logged).collect()
        })
    }

    /// Every live record and link, and the change id they stand at, read in one snapshot.
    pub fn live_state(&self) -> Result<LiveState, PgError> {
        self.with_client(move |mut client| async move {
            let txn = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let head: i64 = txn
                .query_one("SELECT coalesce(max(id), 0) FROM warrant_changes", &[])
                .await?
                .get(0);
            let damaged = |key: &str, error: serde_json::Error| {
                PgError::Invalid(format!("a damaged live record {key:?}: {error}"))
            };
            let mut entities = Vec::new();
            for row in txn
                .query("SELECT uid, record FROM warrant_entities ORDER BY uid", &[])
                .await?
            {
                let uid: String = row.get(0);
                let record = serde_json::from_value(row.get(1)).map_err(|e| damaged(&uid, e))?;
                entities.push((uid, record));
            }
            let mut links = Vec::new();
            for row in txn
                .query("SELECT id, link FROM warrant_links ORDER BY id", &[])
                .await?
            {
                let id: String = row.get(0);
                let link = serde_json::from_value(row.get(1)).map_err(|e| damaged(&id, e))?;
                links.push((id, link));
            }
            txn.commit().await?;
            Ok(LiveState {
                head,
                entities,
                links,
            })
        })
    }

    /// Stores a validated policy bundle (its version is its id; storing one again is a no-op).
    pub fn put_policy_bundle(&self, bundle: &PolicyBundle) -> Result<(), PgError> {
        let files = serde_json::to_value(&bundle.files)
            .map_err(|error| PgError::Invalid(error.to_string()))?;
        let version = bundle.version.clone();
        self.with_client(move |client| async move {
            client
                .execute(
                    "INSERT INTO warrant_policy_bundles (version, files, change_id) VALUES ($1, $2, 0) \
                     ON CONFLICT (version) DO NOTHING",
                    &[&version, &files],
                )
                .await?;
            Ok(())
        })
    }

    /// The policy bundle of `version`, or with `None` the newest one published; `None` if there
    /// is none.
    pub fn policy_bundle(&self, version: Option<&str>) -> Result<Option<PolicyBundle>, PgError> {
        let version = version.map(str::to_owned);
        self.with_client(move |client| async move {
            let row = client
                .query_opt(
                    "SELECT version, files FROM warrant_policy_bundles \
                     WHERE ($1::text IS NULL AND change_id > 0) OR version = $1 \
                     ORDER BY change_id DESC LIMIT 1",
                    &[&version],
                )
                .await?;
            row.map(|row| {
                let version: String = row.get(0);
                let files = serde_json::from_value(row.get(1)).map_err(|error| {
                    PgError::Invalid(format!("a damaged policy bundle {version:?}: {error}"))
                })?;
                Ok(PolicyBundle { version, files })
            })
            .transpose()
        })
    }

    /// A connection of its own that listens on `CHANNEL`: each notification's change id is
    /// sent to `woken`. Returns when the connection ends (the caller reconnects).
    pub async fn listen(&self, woken: tokio::sync::mpsc::Sender<i64>) -> Result<(), PgError> {
        let (client, mut connection) = self.config.connect(self.tls.clone()).await?;
        let (ended, mut end) = tokio::sync::oneshot::channel::<Option<tokio_postgres::Error>>();
        let notified = woken.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            let mut error = None;
            while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(note)) => {
                        let id = note.payload().parse().unwrap_or(0);
                        if notified.send(id).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(failure) => {
                        error = Some(failure);
                        break;
                    }
                }
            }
            let _ = ended.send(error);
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        // Anything committed before LISTEN took effect is found by the catch-up this wakes.
        let _ = woken.send(0).await;
        loop {
            tokio::select! {
                outcome = &mut end => {
                    return match outcome {
                        Ok(Some(error)) => Err(PgError::Database(error)),
                        _ => Ok(()),
                    };
                }
                () = tokio::time::sleep(Duration::from_secs(5)) => {
                    // A quiet connection is checked, so a dead one is noticed.
                    client.simple_query("SELECT 1").await?;
                }
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A row of the change log.
fn logged(row: tokio_postgres::Row) -> Result<LoggedChange, PgError> {
    let id: i64 = row.get(0);
    let ops: serde_json::Value = row.get(2);
    let ops = serde_json::from_value(ops).map_err(|error| PgError::Damaged {
        id,
        message: error.to_string(),
    })?;
    Ok(LoggedChange {
        id,
        replica: row.get(1),
        ops,
    })
}

/// Writes the row one step of change `id` leaves (a live record, a link) or marks the bundle it
/// publishes.
async fn write_op(
    client: &deadpool_postgres::Object,
    op: &ChangeOp,
    id: i64,
) -> Result<(), PgError> {
    match op {
        ChangeOp::Entity { uid, record } => {
            let record = serde_json::to_value(record)
                .map_err(|error| PgError::Invalid(format!("cannot write an entity: {error}")))?;
            client
                .execute(
                    "INSERT INTO warrant_entities (uid, record, change_id) VALUES ($1, $2, $3) \
                     ON CONFLICT (uid) DO UPDATE SET record = EXCLUDED.record, change_id = EXCLUDED.change_id",
                    &[uid, &record, &id],
                )
                .await?;
        }
        ChangeOp::Link { id: link_id, link } => {
            let link = serde_json::to_value(link)
                .map_err(|error| PgError::Invalid(format!("cannot write a link: {error}")))?;
            client
                .execute(
                    "INSERT INTO warrant_links (id, link, change_id) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET link = EXCLUDED.link, change_id = EXCLUDED.change_id",
                    &[link_id, &link, &id],
                )
                .await?;
        }
        ChangeOp::Unlink { id: link_id } => {
            client
                .execute("DELETE FROM warrant_links WHERE id = $1", &[link_id])
                .await?;
        }
        ChangeOp::Policies { version } => {
            let updated = client
                .execute(
                    "UPDATE warrant_policy_bundles SET change_id = $2 WHERE version = $1",
                    &[version, &id],
                )
                .await?;
            if updated == 0 {
                return Err(PgError::Invalid(format!(
                    "no policy bundle {version:?} was stored"
                )));
            }
        }
    }
    Ok(())
}

/// A pooled connection, or why there is none.
async fn get(pool: &deadpool_postgres::Pool) -> Result<deadpool_postgres::Object, PgError> {
    pool.get().await.map_err(|error| match error {
        deadpool_postgres::PoolError::Backend(error) => PgError::Database(error),
        other => PgError::Pool(other.to_string()),
    })
}

/// rustls for the database connection: the given CAs, or the system's.
fn tls_connector(ca: Option<&Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|error| {
                PgError::Invalid(format!("store_ca {}: {error}", path.display()))
            })?;
            for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: rustls::pki_types::CertificateDer<'static> = cert.map_err(|error| {
                    PgError::Invalid(format!("store_ca {}: {error}", path.display()))
                })?;
                roots.add(cert).map_err(|error| {
                    PgError::Invalid(format!("store_ca {}: {error}", path.display()))
                })?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| PgError::Invalid(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
