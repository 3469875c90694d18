//! The shared database's schema, versioned: each migration is applied once, in order, in a
//! transaction of its own, under an advisory lock so that replicas starting together do not
//! race. A database whose schema is newer than this build knows is refused: an older replica
//! must not write to tables it does not understand.

use super::{PgError, Postgres};

/// The newest schema this build knows.
#[expect(
    clippy::cast_possible_truncation,
    reason = "a const context, and a handful of migrations"
)]
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock migrations run under.
const MIGRATION_LOCK: i64 = 0x5741_5252_414e_5402;

/// Migration `n` is `MIGRATIONS[n - 1]`. Never edit one that has shipped; add the next.
const MIGRATIONS: &[&str] = &[
    // 1: the change log, the live records it leaves, links, counters, policy bundles.
    "CREATE TABLE warrant_database (id text PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now());
     INSERT INTO warrant_database (id) VALUES (md5(random()::text || clock_timestamp()::text));
     CREATE TABLE warrant_changes (
         id bigint PRIMARY KEY,
         committed_at timestamptz NOT NULL DEFAULT now(),
         replica text NOT NULL,
         ops jsonb NOT NULL);
     CREATE TABLE warrant_entities (
         uid text PRIMARY KEY,
         record jsonb NOT NULL,
         change_id bigint NOT NULL);
     CREATE TABLE warrant_links (
         id text PRIMARY KEY,
         link jsonb NOT NULL,
         change_id bigint NOT NULL);
     CREATE TABLE warrant_approval_uses (
         approval text PRIMARY KEY,
         used bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
         spent bigint NOT NULL DEFAULT 0 CHECK (spent >= 0));
     CREATE TABLE warrant_seen_tokens (
         token text PRIMARY KEY,
         expires_at bigint NOT NULL);
     CREATE INDEX warrant_seen_tokens_by_expiry ON warrant_seen_tokens (expires_at);
     CREATE TABLE warrant_policy_bundles (
         version text PRIMARY KEY,
         files jsonb NOT NULL,
         pushed_at timestamptz NOT NULL DEFAULT now(),
         change_id bigint NOT NULL DEFAULT 0);",
    // 2: the replicas that make themselves known, for the console's fleet-wide decision log.
    "CREATE TABLE warrant_replicas (
         id text PRIMARY KEY,
         admin_url text NOT NULL,
         console_url text,
         seen_at timestamptz NOT NULL DEFAULT now());",
];

impl Postgres {
    /// Applies the migrations the database lacks and returns its identity.
    pub(super) fn migrate(&self) -> Result<String, PgError> {
        self.with_client(move |mut client| async move {
            let txn = client.transaction().await?;
            txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            txn.batch_execute(
                "CREATE TABLE IF NOT EXISTS warrant_migrations (
                     version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await?;
            let applied: i32 = txn
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM warrant_migrations",
                    &[],
                )
                .await?
                .get(0);
            if applied > SCHEMA_VERSION {
                return Err(PgError::Invalid(format!(
                    "its schema is at version {applied}, newer than this Warrant knows \
                     ({SCHEMA_VERSION}): upgrade this replica"
                )));
            }
            for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
                let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
                txn.batch_execute(migration).await?;
                txn.execute(
                    "INSERT INTO warrant_migrations (version) VALUES ($1)",
                    &[&version],
                )
                .await?;
                tracing::info!(version, "shared database migrated");
            }
            let id: String = txn
                .query_one("SELECT id FROM warrant_database", &[])
                .await?
                .get(0);
            txn.commit().await?;
            Ok(id)
        })
    }
}
