//! What Warrant keeps in redb in the data folder, one database file owned here: the facts'
//! tables (`facts`, the `FactsSource` of `warrant-facts`) and the live store (`LiveStore`): the
//! approvals and identities changed through the admin API, and the use counts of limited
//! approvals. Every write is committed durably before it returns. The live store knows nothing
//! of rules or of Cedar: `control` decides what to write.
//!
//! May depend on: `warrant-domain`, `warrant-facts`, `warrant-files`.
//! Invariant: every write is durable when it returns; a use counts only once.

pub mod facts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

use warrant_domain::EntityRef;
use warrant_domain::ports::{Take, Taken, UseCountError, UseCounter};

/// The database file in the data folder.
pub const STORE_FILE: &str = "facts.redb";
/// The database file of what Checks count (`LiveStore::counters`).
pub const COUNTERS_FILE: &str = "counters.redb";
/// The counters' own bookkeeping: `MOVED_FROM_FACTS` once the counters of an older data
/// folder were moved out of `facts.redb`.
const COUNTERS_META: TableDefinition<&str, u64> = TableDefinition::new("counters_meta");
const MOVED_FROM_FACTS: &str = "moved_from_facts";
/// How much of the database redb keeps in memory unless told otherwise.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// Live entities by their Cedar uid (`Type::"id"`), as JSON `LiveEntity`.
const ENTITIES: TableDefinition<&str, &str> = TableDefinition::new("entities");
/// Template links made through the admin API, by link id, as JSON `LiveLink`.
const LINKS: TableDefinition<&str, &str> = TableDefinition::new("policy_links");
/// Single-use credentials seen, by `issuer` + "\n" + `jti`, with their expiry (Unix ms).
const SEEN_TOKENS: TableDefinition<&str, i64> = TableDefinition::new("seen_tokens");
/// The same, by expiry, for forgetting them once they have expired.
const SEEN_BY_EXPIRY: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("seen_tokens_by_expiry");
/// How many expired entries one `first_use` forgets, at most.
const FORGET_PER_USE: usize = 16;
/// Allowed uses of limited approvals, by approval id.
const USES: TableDefinition<&str, u64> = TableDefinition::new("approval_uses");
/// What each approval with a budget has spent.
const SPENT: TableDefinition<&str, u64> = TableDefinition::new("approval_spent");
/// Approval requests, by request id: what an identity asked for and what became of it.
const APPROVAL_REQUESTS: TableDefinition<&str, &str> = TableDefinition::new("approval_requests");
/// On a replica of a shared database: which database it follows (`database`) and the id of the
/// last change of its log applied here (`applied`, decimal).
const REPLICATION: TableDefinition<&str, &str> = TableDefinition::new("replication");

/// Where a data folder stands in the shared database it follows (`LiveStore::replication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicated {
    pub database: String,
    pub applied: i64,
    /// The live records were taken whole and the facts not yet rebuilt from them.
    pub resync: bool,
}

/// An entity as changed through the admin API: its whole Cedar JSON form (it replaces the
/// entity of the same uid in `entities.json`), and what Warrant knows of the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveEntity {
    /// `{"uid": .., "attrs": .., "parents": ..}` in Cedar's explicit JSON form.
    pub entity: serde_json::Value,
    #[serde(default)]
    pub meta: ChangeMeta,
}

/// What the admin API records beside an entity. Times are Unix milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<EntityRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    /// Set when the entity was removed: `entity` is then its last form, kept for the audit
    /// trail, and the facts no longer hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<i64>,
    /// Written by an import that skipped the approval and identity rules (`ImportFacts` with
    /// `unchecked`): nothing but the schema vouched for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchecked: bool,
    /// For a grant: the SHA-256 of the credential its approver presented (`sha256:...`). Absent:
    /// the approver was named by the admin caller, not proven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver_credential: Option<String>,
}

/// A template link made through the admin API: the link as written (a template's `@id` and an
/// entity for each of its slots), and who asked for it and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveLink {
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<EntityRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<EntityRef>,
    #[serde(default)]
    pub meta: ChangeMeta,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// (The cause is in the message, not the error's source, so that it is printed once.)
    #[error("the live facts store {path}: {cause}")]
    Open {
        path: PathBuf,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "the live facts store {path} is open in another process{holders}: one data folder serves \
         one Warrant at a time; stop that one, or give this one a folder of its own with \
         --data-dir (or data_dir in the settings file)"
    )]
    InUse { path: PathBuf, holders: String },
    #[error("the live facts store: {0}")]
    Database(#[from] redb::Error),
    #[error("the live facts store: cannot write an entity: {0}")]
    Serialise(#[from] serde_json::Error),
    /// The facts' tables (`facts::FactsStore`) could not be read or written.
    #[error("{0}")]
    Facts(String),
    #[error("the live facts store holds a damaged entry {key:?}: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Why `path` could not be opened; when another process holds it, which (by pid and name, as
/// `/proc` tells, where it can be read).
fn opening(path: &Path, error: redb::DatabaseError) -> StoreError {
    if !matches!(error, redb::DatabaseError::DatabaseAlreadyOpen) {
        return StoreError::Open {
            path: path.to_path_buf(),
            cause: error.into(),
        };
    }
    let holders = holders_of(path);
    StoreError::InUse {
        path: path.to_path_buf(),
        holders: match holders.is_empty() {
            true => String::new(),
            false => format!(" ({})", holders.join(", ")),
        },
    }
}

/// The processes (other than this one) with `path` open: "pid 123, warrant".
fn holders_of(path: &Path) -> Vec<String> {
    let Ok(target) = path.canonicalize() else {
        return Vec::new();
    };
    let me = std::process::id().to_string();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    processes
        .flatten()
        .filter_map(|process| {
            let pid = process.file_name().into_string().ok()?;
            if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let holds = std::fs::read_dir(process.path().join("fd"))
                .ok()?
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| link == target));
            let name = std::fs::read_to_string(process.path().join("comm")).unwrap_or_default();
            holds.then(|| format!("pid {pid}, {}", name.trim()))
        })
        .collect()
}

/// Opens (or creates) `dir/counters.redb`. Data folders from before it kept the counters in
/// `facts.redb`: they are copied over once, in the transaction that marks the copy done, and
/// then dropped from `facts.redb`.
fn open_counters(dir: &Path, old: &Database) -> Result<Database, StoreError> {
    let path = dir.join(COUNTERS_FILE);
    let open_error = |cause: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
        path: path.clone(),
        cause,
    };
    let counters = Database::create(&path).map_err(|e| opening(&path, e))?;
    warrant_files::make_private(&path).map_err(|e| open_error(e.into()))?;
    let txn = counters.begin_write().map_err(io)?;
    let moved = {
        let mut meta = txn.open_table(COUNTERS_META).map_err(io)?;
        let moved = meta.get(MOVED_FROM_FACTS).map_err(io)?.is_some();
        if !moved {
            meta.insert(MOVED_FROM_FACTS, 1).map_err(io)?;
        }
        moved
    };
    txn.open_table(USES).map_err(io)?;
    txn.open_table(SPENT).map_err(io)?;
    txn.open_table(SEEN_TOKENS).map_err(io)?;
    txn.open_table(SEEN_BY_EXPIRY).map_err(io)?;
    if moved {
        txn.commit().map_err(io)?;
        return Ok(counters);
    }
    {
        let read = old.begin_read().map_err(io)?;
        for table in [USES, SPENT] {
            let Ok(from) = read.open_table(table) else {
                continue;
            };
            let mut to = txn.open_table(table).map_err(io)?;
            for row in from.iter().map_err(io)? {
                let (key, value) = row.map_err(io)?;
                to.insert(key.value(), value.value()).map_err(io)?;
            }
        }
        if let Ok(from) = read.open_table(SEEN_TOKENS) {
            let mut to = txn.open_table(SEEN_TOKENS).map_err(io)?;
            for row in from.iter().map_err(io)? {
                let (key, value) = row.map_err(io)?;
                to.insert(key.value(), value.value()).map_err(io)?;
            }
        }
        if let Ok(from) = read.open_table(SEEN_BY_EXPIRY) {
            let mut to = txn.open_table(SEEN_BY_EXPIRY).map_err(io)?;
            for row in from.iter().map_err(io)? {
                let (key, _) = row.map_err(io)?;
                to.insert(key.value(), ()).map_err(io)?;
            }
        }
    }
    txn.commit().map_err(io)?;
    let txn = old.begin_write().map_err(io)?;
    txn.delete_table(USES).map_err(io)?;
    txn.delete_table(SPENT).map_err(io)?;
    txn.delete_table(SEEN_TOKENS).map_err(io)?;
    txn.delete_table(SEEN_BY_EXPIRY).map_err(io)?;
    txn.commit().map_err(io)?;
    Ok(counters)
}

fn io(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Database(error.into())
}

pub struct LiveStore {
    db: Arc<Database>,
    /// What Checks write on their way (approval uses and budgets spent, single-use tokens
    /// seen), in a database of their own (`COUNTERS_FILE`): never behind a long change to the
    /// facts (a reload that imports a large facts file is one write transaction).
    counters: Database,
}

impl LiveStore {
    /// Opens (or creates) `dir/facts.redb`, keeping up to `DEFAULT_CACHE_BYTES` of it in memory.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) `dir/facts.redb`, keeping up to `cache_bytes` of its pages in memory.
    /// redb recovers from a crash on open.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let path = dir.join(STORE_FILE);
        let open_error = |cause: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.clone(),
            cause,
        };
        warrant_files::private_dir(dir).map_err(|e| open_error(e.into()))?;
        let db = Database::builder()
            .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
            .create(&path)
            .map_err(|e| opening(&path, e))?;
        warrant_files::make_private(&path).map_err(|e| open_error(e.into()))?;
        let txn = db.begin_write().map_err(|e| open_error(e.into()))?;
        txn.open_table(ENTITIES).map_err(|e| open_error(e.into()))?;
        txn.open_table(LINKS).map_err(|e| open_error(e.into()))?;
        txn.open_table(APPROVAL_REQUESTS)
            .map_err(|e| open_error(e.into()))?;
        txn.commit().map_err(|e| open_error(e.into()))?;
        let counters = open_counters(dir, &db)?;
        Ok(LiveStore {
            db: Arc::new(db),
            counters,
        })
    }

    /// The database, which the facts' tables share (`facts::FactsStore`): a change to the facts
    /// and its live record land in one transaction.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// Every live entity, by uid.
    pub fn entities(&self) -> Result<BTreeMap<String, LiveEntity>, StoreError> {
        self.all(ENTITIES)
    }

    /// The live record of one entity, by uid.
    pub fn entity(&self, uid: &str) -> Result<Option<LiveEntity>, StoreError> {
        self.one(ENTITIES, uid)
    }

    /// How many entities have a live record.
    pub fn entity_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata as _;
        let txn = self.db.begin_read().map_err(io)?;
        txn.open_table(ENTITIES).map_err(io)?.len().map_err(io)
    }

    /// Every live template link, by link id.
    pub fn links(&self) -> Result<BTreeMap<String, LiveLink>, StoreError> {
        self.all(LINKS)
    }

    /// Every approval request, by id.
    pub fn approval_requests<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<BTreeMap<String, T>, StoreError> {
        self.all(APPROVAL_REQUESTS)
    }

    /// One approval request, by id.
    pub fn approval_request<T: serde::de::DeserializeOwned>(
        &self,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        self.one(APPROVAL_REQUESTS, id)
    }

    /// One row of a table of JSON values.
    fn one<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &str>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(table).map_err(io)?;
        let Some(row) = table.get(key).map_err(io)? else {
            return Ok(None);
        };
        serde_json::from_str(row.value())
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                key: key.to_owned(),
                source,
            })
    }

    /// Writes one approval request and removes `forget` (requests decided long ago), in one
    /// durable transaction.
    pub fn put_approval_request<T: serde::Serialize>(
        &self,
        id: &str,
        request: &T,
        forget: &[String],
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(request)?;
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut table = txn.open_table(APPROVAL_REQUESTS).map_err(io)?;
            for old in forget {
                table.remove(old.as_str()).map_err(io)?;
            }
            table.insert(id, json.as_str()).map_err(io)?;
        }
        txn.commit().map_err(io)
    }

    /// Every row of a table of JSON values, by key.
    fn all<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &str>,
    ) -> Result<BTreeMap<String, T>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(table).map_err(io)?;
        let mut all = BTreeMap::new();
        for row in table.iter().map_err(io)? {
            let (key, value) = row.map_err(io)?;
            let parsed =
                serde_json::from_str(value.value()).map_err(|source| StoreError::Corrupt {
                    key: key.value().to_owned(),
                    source,
                })?;
            all.insert(key.value().to_owned(), parsed);
        }
        Ok(all)
    }

    /// The shared database this data folder follows, the last change of its log applied here,
    /// and whether its facts must still be rebuilt from the live records it took whole
    /// (`replace_live`): `None` for a data folder that never followed one.
    pub fn replication(&self) -> Result<Option<Replicated>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = match txn.open_table(REPLICATION) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(io(error)),
        };
        let read = |key: &str| -> Result<Option<String>, StoreError> {
            Ok(table.get(key).map_err(io)?.map(|v| v.value().to_owned()))
        };
        match (read("database")?, read("applied")?) {
            (Some(database), Some(applied)) => Ok(Some(Replicated {
                database,
                applied: applied.parse().map_err(|_| {
                    StoreError::Facts(format!("the replication position {applied:?} is damaged"))
                })?,
                resync: read("resync")?.is_some(),
            })),
            _ => Ok(None),
        }
    }

    /// Records in `txn` (the one that rebuilds the facts) that the facts match the live records
    /// again.
    pub fn resynced_in(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
        let mut table = txn.open_table(REPLICATION).map_err(io)?;
        table.remove("resync").map_err(io)?;
        Ok(())
    }

    /// Records in `txn` that the change `applied` of the shared database's log is applied.
    pub fn set_applied_in(txn: &redb::WriteTransaction, applied: i64) -> Result<(), StoreError> {
        let mut table = txn.open_table(REPLICATION).map_err(io)?;
        table
            .insert("applied", applied.to_string().as_str())
            .map_err(io)?;
        Ok(())
    }

    /// Records that the change `applied` is applied, durably (a change of links or policies,
    /// which touches no facts).
    pub fn set_applied(&self, applied: i64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        Self::set_applied_in(&txn, applied)?;
        txn.commit().map_err(io)
    }

    /// Makes this data folder's live records and links those of the shared database at change
    /// `head` (a replica that is new, or was too far behind the log), in one transaction.
    pub fn replace_live(
        &self,
        database: &str,
        head: i64,
        entities: &[(String, LiveEntity)],
        links: &[(String, LiveLink)],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            txn.delete_table(ENTITIES).map_err(io)?;
            txn.delete_table(LINKS).map_err(io)?;
            let mut table = txn.open_table(LINKS).map_err(io)?;
            for (id, link) in links {
                let json = serde_json::to_string(link)?;
                table.insert(id.as_str(), json.as_str()).map_err(io)?;
            }
            let mut table = txn.open_table(REPLICATION).map_err(io)?;
            table.insert("database", database).map_err(io)?;
            // Until the facts are rebuilt from these records (`resynced_in`).
            table.insert("resync", "1").map_err(io)?;
        }
        Self::put_in(&txn, entities)?;
        Self::set_applied_in(&txn, head)?;
        txn.commit().map_err(io)
    }

    /// Writes one template link, durably.
    pub fn put_link(&self, id: &str, link: &LiveLink) -> Result<(), StoreError> {
        let json = serde_json::to_string(link)?;
        let txn = self.db.begin_write().map_err(io)?;
        txn.open_table(LINKS)
            .map_err(io)?
            .insert(id, json.as_str())
            .map_err(io)?;
        txn.commit().map_err(io)
    }

    /// Removes one template link, durably.
    pub fn remove_link(&self, id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        txn.open_table(LINKS).map_err(io)?.remove(id).map_err(io)?;
        txn.commit().map_err(io)
    }

    /// Writes entities in `txn` (the facts' change that they record): durable when it commits.
    pub fn put_in(
        txn: &redb::WriteTransaction,
        entities: &[(String, LiveEntity)],
    ) -> Result<(), StoreError> {
        let mut table = txn.open_table(ENTITIES).map_err(io)?;
        for (uid, entity) in entities {
            let json = serde_json::to_string(entity)?;
            table.insert(uid.as_str(), json.as_str()).map_err(io)?;
        }
        Ok(())
    }

    /// Records the use of a single-use credential: `true` the first time `key` is seen (durable
    /// when it returns), `false` if it was seen before and has not expired. Forgets a few entries
    /// that expired before `now`, so the table holds only tokens that could still be presented.
    pub fn first_use(&self, key: &str, expires_at: i64, now: i64) -> Result<bool, StoreError> {
        let txn = self.counters.begin_write().map_err(io)?;
        let first = {
            let mut seen = txn.open_table(SEEN_TOKENS).map_err(io)?;
            let mut by_expiry = txn.open_table(SEEN_BY_EXPIRY).map_err(io)?;
            let expired: Vec<(i64, String)> = by_expiry
                .range::<(i64, &str)>(..(now, ""))
                .map_err(io)?
                .take(FORGET_PER_USE)
                .map(|row| row.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
                .collect::<Result<_, _>>()
                .map_err(io)?;
            for (at, old) in &expired {
                by_expiry.remove((*at, old.as_str())).map_err(io)?;
                let current = seen.get(old.as_str()).map_err(io)?.map(|v| v.value());
                if current == Some(*at) {
                    seen.remove(old.as_str()).map_err(io)?;
                }
            }
            let before = seen.get(key).map_err(io)?.map(|at| at.value());
            match before {
                Some(at) if at > now => false,
                _ => {
                    if let Some(at) = before {
                        by_expiry.remove((at, key)).map_err(io)?;
                    }
                    seen.insert(key, expires_at).map_err(io)?;
                    by_expiry.insert((expires_at, key), ()).map_err(io)?;
                    true
                }
            }
        };
        txn.commit().map_err(io)?;
        Ok(first)
    }

    /// Allowed uses recorded for an approval.
    pub fn uses(&self, approval_id: &str) -> Result<u64, StoreError> {
        let txn = self.counters.begin_read().map_err(io)?;
        let table = txn.open_table(USES).map_err(io)?;
        Ok(table
            .get(approval_id)
            .map_err(io)?
            .map_or(0, |count| count.value()))
    }

    /// Takes a use (if `take.max_uses`) and spends an amount (if `take.spend`) of an approval,
    /// both or neither, in one durable write transaction: concurrent takes are exact.
    pub fn take(&self, approval_id: &str, take: Take) -> Result<Taken, StoreError> {
        let txn = self.counters.begin_write().map_err(io)?;
        let taken = {
            let mut uses = txn.open_table(USES).map_err(io)?;
            let mut spent = txn.open_table(SPENT).map_err(io)?;
            let used = uses
                .get(approval_id)
                .map_err(io)?
                .map_or(0, |count| count.value());
            let so_far = spent
                .get(approval_id)
                .map_err(io)?
                .map_or(0, |amount| amount.value());
            let taken = take.against(used, so_far);
            if let Taken::Granted {
                use_number,
                budget_left,
            } = taken
            {
                if let Some(use_number) = use_number {
                    uses.insert(approval_id, use_number).map_err(io)?;
                }
                if let (Some((amount, _)), Some(_)) = (take.spend, budget_left) {
                    spent.insert(approval_id, so_far + amount).map_err(io)?;
                }
            }
            taken
        };
        match taken {
            Taken::Granted { .. } => txn.commit().map_err(io)?,
            _ => txn.abort().map_err(io)?,
        }
        Ok(taken)
    }

    /// What `take` would give now, taking nothing.
    pub fn would_take(&self, approval_id: &str, take: Take) -> Result<Taken, StoreError> {
        Ok(take.against(self.uses(approval_id)?, self.spent(approval_id)?))
    }

    /// Gives back a use and an amount taken for a decision that could not be recorded, so that
    /// the counts are those of recorded decisions. Atomic and durable when it returns.
    pub fn give_back(
        &self,
        approval_id: &str,
        a_use: bool,
        amount: Option<u64>,
    ) -> Result<(), StoreError> {
        let txn = self.counters.begin_write().map_err(io)?;
        {
            if a_use {
                let mut table = txn.open_table(USES).map_err(io)?;
                let used = table
                    .get(approval_id)
                    .map_err(io)?
                    .map_or(0, |count| count.value());
                table
                    .insert(approval_id, used.saturating_sub(1))
                    .map_err(io)?;
            }
            if let Some(amount) = amount {
                let mut table = txn.open_table(SPENT).map_err(io)?;
                let spent = table
                    .get(approval_id)
                    .map_err(io)?
                    .map_or(0, |total| total.value());
                table
                    .insert(approval_id, spent.saturating_sub(amount))
                    .map_err(io)?;
            }
        }
        txn.commit().map_err(io)?;
        Ok(())
    }

    /// What an approval with a budget has spent.
    pub fn spent(&self, approval_id: &str) -> Result<u64, StoreError> {
        let txn = self.counters.begin_read().map_err(io)?;
        let table = txn.open_table(SPENT).map_err(io)?;
        Ok(table
            .get(approval_id)
            .map_err(io)?
            .map_or(0, |amount| amount.value()))
    }
}

impl warrant_domain::ports::SeenTokens for LiveStore {
    fn first_use(
        &self,
        key: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, warrant_domain::ports::SeenTokensError> {
        LiveStore::first_use(self, key, expires_at, now)
            .map_err(|error| warrant_domain::ports::SeenTokensError(error.into()))
    }
}

impl UseCounter for LiveStore {
    fn take(&self, approval_id: &str, take: Take) -> Result<Taken, UseCountError> {
        LiveStore::take(self, approval_id, take).map_err(|error| UseCountError(error.into()))
    }

    fn would_take(&self, approval_id: &str, take: Take) -> Result<Taken, UseCountError> {
        LiveStore::would_take(self, approval_id, take).map_err(|error| UseCountError(error.into()))
    }

    fn give_back(
        &self,
        approval_id: &str,
        a_use: bool,
        amount: Option<u64>,
    ) -> Result<(), UseCountError> {
        LiveStore::give_back(self, approval_id, a_use, amount)
            .map_err(|error| UseCountError(error.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_and_uses_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let entity = LiveEntity {
            entity: serde_json::json!({"uid": {"type": "Approval", "id": "a"}, "attrs": {}, "parents": []}),
            meta: ChangeMeta {
                justification: Some("because".to_owned()),
                ..ChangeMeta::default()
            },
        };
        {
            let store = LiveStore::open(dir.path()).unwrap();
            let txn = store.database().begin_write().unwrap();
            LiveStore::put_in(&txn, &[(r#"Approval::"a""#.to_owned(), entity.clone())]).unwrap();
            txn.commit().unwrap();
            assert_eq!(store.take("a", uses(2)).unwrap(), granted(Some(1), None));
        }
        let store = LiveStore::open(dir.path()).unwrap();
        assert_eq!(store.entities().unwrap()[r#"Approval::"a""#], entity);
        assert_eq!(store.take("a", uses(2)).unwrap(), granted(Some(2), None));
        assert_eq!(store.take("a", uses(2)).unwrap(), Taken::UsesExhausted);
        assert_eq!(store.uses("a").unwrap(), 2);
        assert_eq!(store.uses("b").unwrap(), 0);
    }

    #[test]
    fn the_counters_of_an_older_data_folder_move_to_their_own_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A data folder from before `counters.redb`: the counters in `facts.redb`.
            let db = Database::create(dir.path().join(STORE_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(USES).unwrap().insert("a", 3).unwrap();
            txn.open_table(SPENT).unwrap().insert("a", 40).unwrap();
            txn.open_table(SEEN_TOKENS)
                .unwrap()
                .insert("issuer\njti", 99)
                .unwrap();
            txn.open_table(SEEN_BY_EXPIRY)
                .unwrap()
                .insert((99, "issuer\njti"), ())
                .unwrap();
            txn.commit().unwrap();
        }
        for _ in 0..2 {
            let store = LiveStore::open(dir.path()).unwrap();
            assert_eq!(store.uses("a").unwrap(), 3);
            assert_eq!(store.spent("a").unwrap(), 40);
            assert!(!store.first_use("issuer\njti", 99, 50).unwrap());
            let txn = store.database().begin_read().unwrap();
            assert!(txn.open_table(USES).is_err(), "moved out of facts.redb");
        }
    }

    fn uses(max: u64) -> Take {
        Take {
            max_uses: Some(max),
            spend: None,
        }
    }

    fn granted(use_number: Option<u64>, budget_left: Option<u64>) -> Taken {
        Taken::Granted {
            use_number,
            budget_left,
        }
    }

    #[test]
    fn a_budget_is_spent_exactly_and_with_a_use_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LiveStore::open(dir.path()).unwrap();
        let spend = |amount, max_uses| Take {
            max_uses,
            spend: Some((amount, 100)),
        };
        assert_eq!(
            store.take("b", spend(60, None)).unwrap(),
            granted(None, Some(40))
        );
        assert_eq!(
            store.take("b", spend(41, None)).unwrap(),
            Taken::BudgetExhausted
        );
        assert_eq!(
            store.take("b", spend(40, None)).unwrap(),
            granted(None, Some(0))
        );
        assert_eq!(store.spent("b").unwrap(), 100);
        store.give_back("b", false, Some(40)).unwrap();
        assert_eq!(store.spent("b").unwrap(), 60);
        // With a use limit too: neither is taken when the other cannot be.
        assert_eq!(
            store.take("c", spend(10, Some(1))).unwrap(),
            granted(Some(1), Some(90))
        );
        assert_eq!(
            store.take("c", spend(10, Some(1))).unwrap(),
            Taken::UsesExhausted
        );
        assert_eq!(store.spent("c").unwrap(), 10);
        assert_eq!(
            store.take("d", spend(200, Some(1))).unwrap(),
            Taken::BudgetExhausted
        );
        assert_eq!(store.uses("d").unwrap(), 0);
    }

    #[test]
    fn a_single_use_token_is_first_used_once_until_it_expires_and_then_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LiveStore::open(dir.path()).unwrap();
            assert!(store.first_use("iss\na", 1_000, 0).unwrap());
            assert!(!store.first_use("iss\na", 1_000, 500).unwrap());
        }
        let store = LiveStore::open(dir.path()).unwrap();
        assert!(
            !store.first_use("iss\na", 1_000, 999).unwrap(),
            "remembered across a restart"
        );
        // Past its expiry it is forgotten (the table stays bounded) and could be seen anew.
        assert!(store.first_use("iss\nb", 5_000, 2_000).unwrap());
        let txn = store.counters.begin_read().unwrap();
        assert!(
            txn.open_table(SEEN_TOKENS)
                .unwrap()
                .get("iss\na")
                .unwrap()
                .is_none()
        );
        assert_eq!(
            txn.open_table(SEEN_BY_EXPIRY)
                .unwrap()
                .iter()
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn links_survive_reopening_and_removal_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let link = LiveLink {
            template: "grant".to_owned(),
            principal: Some(EntityRef::new("User", "u")),
            resource: None,
            meta: ChangeMeta::default(),
        };
        {
            let store = LiveStore::open(dir.path()).unwrap();
            store.put_link("one", &link).unwrap();
            store.put_link("two", &link).unwrap();
            store.remove_link("two").unwrap();
        }
        let links = LiveStore::open(dir.path()).unwrap().links().unwrap();
        assert_eq!(links.keys().collect::<Vec<_>>(), ["one"]);
        assert_eq!(links["one"], link);
    }
}
