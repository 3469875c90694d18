//! The facts on disk: every entity in a redb table by uid, each row holding the entity in
//! Cedar's explicit JSON form, its ancestors nearest first, its revision and its origin, beside
//! the indexes a change needs (children, referrers, SPIFFE IDs, counts by type) and the store's
//! counters (revision, last removal, version, the facts file's digest and the schema it was
//! checked against). `FactsWriter` changes it in one write transaction, keeping every row's
//! ancestor list closed; `FactsReader` reads it in one read transaction, so a reader sees one
//! consistent set, through a bounded cache of parsed entities keyed by revision.

use std::collections::{BTreeSet, HashSet};
use std::str::FromStr as _;
use std::sync::Arc;

use cedar_policy::{Entity, EntityUid, Schema};
use cedar_policy_core::ast;
use redb::{
    Database, MultimapTableDefinition, ReadOnlyMultimapTable, ReadOnlyTable, ReadableDatabase as _,
    ReadableMultimapTable as _, ReadableTable as _, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::time_bounds::TimeReferences;
use super::{FactsError, error_chain};
use warrant_domain::EntityRef;
use warrant_domain::clock::UnixMillis;

/// Entities by uid (`Type::"id"`): `Row`.
const ENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("facts_entities");
/// (parent, child) for every parent an entity names.
const CHILDREN: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("facts_children");
/// (named, namer) for every entity an entity names in its attributes or tags.
const REFERRERS: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("facts_referrers");
/// Identities by their `spiffe_id` attribute.
const SPIFFE_IDS: TableDefinition<&str, &str> = TableDefinition::new("facts_spiffe_ids");
/// How many entities of each type.
const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("facts_counts");
/// The store's counters, by name (`META_*`).
const META: TableDefinition<&str, &str> = TableDefinition::new("facts_meta");

const META_REVISION: &str = "revision";
const META_LAST_REMOVAL: &str = "last_removal";
const META_VERSION: &str = "version";
/// `sha256:` of the facts file the store holds.
pub const META_FILE_DIGEST: &str = "file_digest";
/// The version of the schema every entity was last checked against.
pub const META_SCHEMA_VERSION: &str = "schema_version";

/// Where an entity's current form comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The policy folder's `entities.json`, unchanged.
    File,
    /// Changed or created through the admin API or an import.
    Live,
}

/// A row: 8 bytes of revision (little-endian), 1 byte of origin, then `RowBody` as JSON.
#[derive(Serialize, Deserialize, PartialEq)]
struct RowBody {
    /// `{"uid", "attrs", "parents", "tags"?}`, in Cedar's explicit form.
    entity: serde_json::Value,
    /// Every ancestor (parents and theirs), nearest first: deeper scopes before shallower ones,
    /// ties by name.
    ancestors: Vec<String>,
}

const ROW_HEADER: usize = 9;

fn encode(revision: u64, origin: Origin, body: &RowBody) -> Result<Vec<u8>, FactsError> {
    let mut row = Vec::with_capacity(256);
    row.extend_from_slice(&revision.to_le_bytes());
    row.push(match origin {
        Origin::File => 0,
        Origin::Live => 1,
    });
    serde_json::to_writer(&mut row, body).map_err(|e| FactsError::Invalid(e.to_string()))?;
    Ok(row)
}

fn header(key: &str, row: &[u8]) -> Result<(u64, Origin), FactsError> {
    let damaged = || FactsError::Invalid(format!("the facts store holds a damaged row for {key}"));
    let revision = u64::from_le_bytes(
        row.get(..8)
            .ok_or_else(damaged)?
            .try_into()
            .map_err(|_| damaged())?,
    );
    let origin = match row.get(8) {
        Some(0) => Origin::File,
        Some(1) => Origin::Live,
        _ => return Err(damaged()),
    };
    Ok((revision, origin))
}

fn body(key: &str, row: &[u8]) -> Result<RowBody, FactsError> {
    serde_json::from_slice(&row[ROW_HEADER.min(row.len())..])
        .map_err(|e| FactsError::Invalid(format!("the facts store's row for {key}: {e}")))
}

fn store_error(error: impl Into<redb::Error>) -> FactsError {
    FactsError::Invalid(format!("the facts store: {}", error.into()))
}

/// An entity as the store holds it, parsed: what decisions read.
#[derive(Debug)]
pub struct StoredEntity {
    pub revision: u64,
    pub origin: Origin,
    /// With its whole ancestor set.
    pub entity: Arc<ast::Entity>,
    /// Its ancestors, nearest first.
    pub ancestors: Arc<[EntityRef]>,
    /// The entities its attributes and tags name.
    pub references: Box<[EntityUid]>,
    /// The datetimes in its attributes and tags.
    pub datetimes: Box<[UnixMillis]>,
}

impl StoredEntity {
    pub fn as_entity(&self) -> &Entity {
        use ref_cast::RefCast as _;
        Entity::ref_cast(self.entity.as_ref())
    }

    fn parse(key: &str, row: &[u8]) -> Result<Self, FactsError> {
        let (revision, origin) = header(key, row)?;
        let body = body(key, row)?;
        let found = TimeReferences::of_entity(&body.entity)
            .map_err(|message| FactsError::Invalid(format!("{key}: {message}")))?;
        let parsed = Entity::from_json_value(body.entity, None)
            .map_err(|error| FactsError::Invalid(format!("{key}: {}", error_chain(&error))))?;
        let mut entity = parsed.as_ref().clone();
        let mut ancestors = Vec::with_capacity(body.ancestors.len());
        for ancestor in &body.ancestors {
            let uid = EntityUid::from_str(ancestor).map_err(|error| {
                FactsError::Invalid(format!("{key}: ancestor {ancestor}: {error}"))
            })?;
            entity.add_indirect_ancestor(uid.as_ref().clone());
            ancestors.push(EntityRef::from_uid(&uid));
        }
        Ok(StoredEntity {
            revision,
            origin,
            entity: Arc::new(entity),
            ancestors: ancestors.into(),
            references: found.entities.into(),
            datetimes: found.datetimes.into(),
        })
    }

    /// Roughly the bytes it holds in memory, for the cache's bound.
    fn weight(&self) -> u32 {
        let parts = self.references.len() + self.ancestors.len();
        u32::try_from(1024 + 256 * parts).unwrap_or(u32::MAX)
    }
}

/// Parsed entities by uid, shared by every reader of one store; an entry is used only for the
/// revision it was parsed at.
pub type ParsedCache = moka::sync::Cache<String, Arc<StoredEntity>>;

/// The database and the parsed-entity cache in front of it.
pub struct FactsStore {
    db: Arc<Database>,
    cache: ParsedCache,
    /// Unique to this store in this process: revisions of facts read from it compare.
    lineage: u64,
}

impl FactsStore {
    /// The facts tables in `db` (created if missing), with a cache of parsed entities of about
    /// `cache_bytes`.
    pub fn open(db: Arc<Database>, cache_bytes: u64) -> Result<Self, FactsError> {
        let txn = db.begin_write().map_err(store_error)?;
        txn.open_table(ENTITIES).map_err(store_error)?;
        txn.open_multimap_table(CHILDREN).map_err(store_error)?;
        txn.open_multimap_table(REFERRERS).map_err(store_error)?;
        txn.open_table(SPIFFE_IDS).map_err(store_error)?;
        txn.open_table(COUNTS).map_err(store_error)?;
        txn.open_table(META).map_err(store_error)?;
        txn.commit().map_err(store_error)?;
        let cache = moka::sync::Cache::builder()
            .max_capacity(cache_bytes)
            .weigher(|_key: &String, value: &Arc<StoredEntity>| value.weight())
            .build();
        static LINEAGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(FactsStore {
            db,
            cache,
            lineage: LINEAGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// A store in memory, for facts built from a file alone (authoring tools, tests).
    pub fn in_memory() -> Result<Self, FactsError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(store_error)?;
        Self::open(Arc::new(db), 64 * 1024 * 1024)
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    pub fn lineage(&self) -> u64 {
        self.lineage
    }

    /// The parsed-entity cache's entries and estimated bytes, for metrics.
    pub fn cache_usage(&self) -> (u64, u64) {
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// A reader over the store as last committed.
    pub fn reader(self: &Arc<Self>) -> Result<FactsReader, FactsError> {
        let txn = self.db.begin_read().map_err(store_error)?;
        let meta = txn.open_table(META).map_err(store_error)?;
        let Counters {
            revision,
            last_removal,
            version,
        } = Counters::read(&meta)?;
        let file_digest = meta_value(&meta, META_FILE_DIGEST)?;
        let schema_version = meta_value(&meta, META_SCHEMA_VERSION)?;
        Ok(FactsReader {
            entities: txn.open_table(ENTITIES).map_err(store_error)?,
            children: txn.open_multimap_table(CHILDREN).map_err(store_error)?,
            referrers: txn.open_multimap_table(REFERRERS).map_err(store_error)?,
            spiffe_ids: txn.open_table(SPIFFE_IDS).map_err(store_error)?,
            counts: txn.open_table(COUNTS).map_err(store_error)?,
            store: Arc::clone(self),
            revision,
            last_removal,
            version: version.into(),
            file_digest,
            schema_version,
        })
    }

    /// Begins a change: nothing is visible to readers until `FactsWriter::commit`, and a writer
    /// dropped uncommitted changes nothing.
    pub fn writer(self: &Arc<Self>, schema: &Schema) -> Result<FactsWriter, FactsError> {
        let txn = self.db.begin_write().map_err(store_error)?;
        let Counters {
            revision,
            last_removal,
            version,
        } = Counters::read(&txn.open_table(META).map_err(store_error)?)?;
        let mut hasher = Sha256::new();
        hasher.update(version.as_bytes());
        Ok(FactsWriter {
            txn,
            schema: schema.clone(),
            principal_types: schema.principals().map(|t| t.to_string()).collect(),
            revision: revision + 1,
            last_removal,
            touched: BTreeSet::new(),
            removed: false,
            hasher,
            meta: Vec::new(),
            ancestors_memo: std::collections::HashMap::new(),
        })
    }
}

/// The store's change counters (`META_REVISION`, `META_LAST_REMOVAL`, `META_VERSION`).
struct Counters {
    revision: u64,
    last_removal: u64,
    version: String,
}

impl Counters {
    fn read(
        meta: &impl redb::ReadableTable<&'static str, &'static str>,
    ) -> Result<Self, FactsError> {
        let number = |name| -> Result<u64, FactsError> {
            Ok(meta_value(meta, name)?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0))
        };
        Ok(Counters {
            revision: number(META_REVISION)?,
            last_removal: number(META_LAST_REMOVAL)?,
            version: meta_value(meta, META_VERSION)?.unwrap_or_else(|| empty_version().to_owned()),
        })
    }
}

/// One of the store's counters, as written.
fn meta_value(
    meta: &impl redb::ReadableTable<&'static str, &'static str>,
    name: &str,
) -> Result<Option<String>, FactsError> {
    Ok(meta
        .get(name)
        .map_err(store_error)?
        .map(|v| v.value().to_owned()))
}

/// The version of a store that never held anything.
fn empty_version() -> &'static str {
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
}

/// One consistent view of the store: a read transaction's tables.
pub struct FactsReader {
    entities: ReadOnlyTable<&'static str, &'static [u8]>,
    children: ReadOnlyMultimapTable<&'static str, &'static str>,
    referrers: ReadOnlyMultimapTable<&'static str, &'static str>,
    spiffe_ids: ReadOnlyTable<&'static str, &'static str>,
    counts: ReadOnlyTable<&'static str, u64>,
    store: Arc<FactsStore>,
    pub revision: u64,
    pub last_removal: u64,
    pub version: Arc<str>,
    pub file_digest: Option<String>,
    pub schema_version: Option<String>,
}

impl FactsReader {
    /// The entity of `uid`, parsed (from the cache when it holds this revision of it).
    pub fn get(&self, uid: &EntityUid) -> Result<Option<Arc<StoredEntity>>, FactsError> {
        let key = uid.to_string();
        let Some(row) = self.entities.get(key.as_str()).map_err(store_error)? else {
            return Ok(None);
        };
        let row = row.value();
        let (revision, _) = header(&key, row)?;
        if let Some(cached) = self.store.cache.get(&key)
            && cached.revision == revision
        {
            return Ok(Some(cached));
        }
        let parsed = Arc::new(StoredEntity::parse(&key, row)?);
        self.store.cache.insert(key, Arc::clone(&parsed));
        Ok(Some(parsed))
    }

    pub fn contains(&self, uid: &EntityUid) -> Result<bool, FactsError> {
        Ok(self
            .entities
            .get(uid.to_string().as_str())
            .map_err(store_error)?
            .is_some())
    }

    /// The JSON form of `uid` and its origin.
    pub fn json(&self, uid: &EntityUid) -> Result<Option<(serde_json::Value, Origin)>, FactsError> {
        let key = uid.to_string();
        let Some(row) = self.entities.get(key.as_str()).map_err(store_error)? else {
            return Ok(None);
        };
        let (_, origin) = header(&key, row.value())?;
        Ok(Some((body(&key, row.value())?.entity, origin)))
    }

    /// Every entity's JSON form, by uid.
    pub fn each_json(
        &self,
        mut each: impl FnMut(serde_json::Value) -> Result<(), FactsError>,
    ) -> Result<(), FactsError> {
        for row in self.entities.iter().map_err(store_error)? {
            let (key, value) = row.map_err(store_error)?;
            each(body(key.value(), value.value())?.entity)?;
        }
        Ok(())
    }

    /// The uids of entities whose keys start with one of `prefixes` (`Type::"`), in key order,
    /// after the key `after` (from the first, for `None`), at most `limit`.
    pub fn uids_after(
        &self,
        prefixes: &[String],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EntityUid>, FactsError> {
        let mut prefixes: Vec<&String> = prefixes.iter().collect();
        prefixes.sort();
        let mut found = Vec::new();
        for prefix in prefixes {
            if after
                .is_some_and(|after| !after.starts_with(prefix.as_str()) && after > prefix.as_str())
            {
                continue;
            }
            let start = match after {
                Some(after) if after.starts_with(prefix.as_str()) => after,
                _ => prefix.as_str(),
            };
            for row in self.entities.range(start..).map_err(store_error)? {
                let (key, _) = row.map_err(store_error)?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) || found.len() == limit {
                    break;
                }
                if Some(key) == after {
                    continue;
                }
                if let Ok(uid) = EntityUid::from_str(key) {
                    found.push(uid);
                }
            }
            if found.len() == limit {
                break;
            }
        }
        Ok(found)
    }

    /// An entity other than `uid` that names it as a parent or in an attribute or tag.
    pub fn namer_of(&self, uid: &EntityUid) -> Result<Option<EntityUid>, FactsError> {
        let key = uid.to_string();
        for table in [&self.children, &self.referrers] {
            for namer in table.get(key.as_str()).map_err(store_error)? {
                let namer = namer.map_err(store_error)?;
                if namer.value() != key
                    && let Ok(uid) = EntityUid::from_str(namer.value())
                {
                    return Ok(Some(uid));
                }
            }
        }
        Ok(None)
    }

    pub fn identity_by_spiffe_id(&self, spiffe_id: &str) -> Result<Option<EntityUid>, FactsError> {
        Ok(self
            .spiffe_ids
            .get(spiffe_id)
            .map_err(store_error)?
            .and_then(|uid| EntityUid::from_str(uid.value()).ok()))
    }

    /// How many entities of each of `types` the store holds; all of them for `None`.
    pub fn count(&self, types: Option<&[String]>) -> Result<u64, FactsError> {
        let mut total = 0;
        for row in self.counts.iter().map_err(store_error)? {
            let (type_name, count) = row.map_err(store_error)?;
            if types.is_none_or(|types| types.iter().any(|t| t == type_name.value())) {
                total += count.value();
            }
        }
        Ok(total)
    }
}

/// A change to the store in one write transaction. `put` and `remove` keep every row's
/// ancestors, the children and referrer indexes, the SPIFFE IDs and the counts right as they
/// go; a row whose content does not change keeps its revision.
pub struct FactsWriter {
    txn: WriteTransaction,
    schema: Schema,
    principal_types: Vec<String>,
    /// The revision this change gives what it touches.
    revision: u64,
    last_removal: u64,
    /// Every uid this change created, altered or removed.
    touched: BTreeSet<String>,
    removed: bool,
    hasher: Sha256,
    meta: Vec<(&'static str, String)>,
    /// Ancestors of entities read in this change, by uid (`ancestors_of`): a bulk put reads
    /// the same few parents again and again. Kept right on every write.
    ancestors_memo: std::collections::HashMap<String, Option<Arc<[String]>>>,
}

/// The most entities `FactsWriter::ancestors_memo` remembers before it starts over.
const ANCESTORS_MEMO_ENTRIES: usize = 65_536;

/// An entity checked against the schema and read for what the store indexes: the part of a
/// `put` that needs no transaction.
pub struct Prepared {
    uid: EntityUid,
    key: String,
    /// In Cedar's explicit JSON form.
    explicit: serde_json::Value,
    parents: Vec<String>,
    references: Vec<String>,
    spiffe_id: Option<String>,
}

impl Prepared {
    pub fn new(
        json: serde_json::Value,
        schema: &Schema,
        principal_types: &[String],
    ) -> Result<Self, FactsError> {
        let parsed = Entity::from_json_value(json, Some(schema))
            .map_err(|error| FactsError::Invalid(error_chain(&error)))?;
        super::identity_rules(&parsed, principal_types)?;
        let uid = parsed.uid();
        let explicit = parsed
            .to_json_value()
            .map_err(|error| FactsError::BadEntity {
                entity: EntityRef::from_uid(&uid),
                message: error.to_string(),
            })?;
        let parents: Vec<String> = parsed
            .as_ref()
            .parents()
            .map(|p| EntityUid::from(p.clone()).to_string())
            .collect();
        let references =
            TimeReferences::of_entity(&explicit).map_err(|message| FactsError::BadEntity {
                entity: EntityRef::from_uid(&uid),
                message,
            })?;
        let spiffe_id = match (
            principal_types.contains(&uid.type_name().to_string()),
            explicit["attrs"].get("spiffe_id"),
        ) {
            (true, Some(serde_json::Value::String(id))) => Some(id.clone()),
            _ => None,
        };
        Ok(Prepared {
            key: uid.to_string(),
            uid,
            explicit,
            parents,
            references: references
                .entities
                .iter()
                .map(ToString::to_string)
                .collect(),
            spiffe_id,
        })
    }

    pub fn uid(&self) -> &EntityUid {
        &self.uid
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

/// What a committed change touched.
pub struct Committed {
    pub revision: u64,
    pub touched: Vec<EntityUid>,
}

impl FactsWriter {
    /// The transaction, for writes of other tables that must land with this change.
    pub fn transaction(&self) -> &WriteTransaction {
        &self.txn
    }

    /// Whether the store holds `uid` as this change stands.
    pub fn contains(&self, uid: &EntityUid) -> Result<bool, FactsError> {
        let table = self.txn.open_table(ENTITIES).map_err(store_error)?;
        Ok(table
            .get(uid.to_string().as_str())
            .map_err(store_error)?
            .is_some())
    }

    /// The entity of `uid` as this change stands, parsed.
    pub fn get(&self, uid: &EntityUid) -> Result<Option<StoredEntity>, FactsError> {
        let key = uid.to_string();
        let table = self.txn.open_table(ENTITIES).map_err(store_error)?;
        let row = table.get(key.as_str()).map_err(store_error)?;
        row.map(|row| StoredEntity::parse(&key, row.value()))
            .transpose()
    }

    /// The uids of every row of `origin`.
    pub fn uids_of(&self, origin: Origin) -> Result<Vec<String>, FactsError> {
        let table = self.txn.open_table(ENTITIES).map_err(store_error)?;
        let mut found = Vec::new();
        for row in table.iter().map_err(store_error)? {
            let (key, value) = row.map_err(store_error)?;
            if header(key.value(), value.value())?.1 == origin {
                found.push(key.value().to_owned());
            }
        }
        Ok(found)
    }

    /// Records `value` under `name` in the store's counters when the change commits.
    pub fn set_meta(&mut self, name: &'static str, value: String) {
        self.meta.push((name, value));
    }

    /// Adds `json` (an entity in Cedar's JSON form, checked against the schema here), or
    /// replaces the entity of its uid. Parents the store does not hold yet count once they
    /// are put in the same change.
    pub fn put(
        &mut self,
        json: serde_json::Value,
        origin: Origin,
    ) -> Result<EntityUid, FactsError> {
        let prepared = Prepared::new(json, &self.schema, &self.principal_types)?;
        self.put_prepared(prepared, origin)
    }

    /// The schema and identity types `Prepared::new` needs, for preparing entities on another
    /// thread while this writer writes.
    pub fn preparation(&self) -> (Schema, Vec<String>) {
        (self.schema.clone(), self.principal_types.clone())
    }

    /// `put` of an entity already checked and read (`Prepared::new`).
    pub fn put_prepared(
        &mut self,
        prepared: Prepared,
        origin: Origin,
    ) -> Result<EntityUid, FactsError> {
        let Prepared {
            uid,
            key,
            explicit,
            parents,
            references,
            spiffe_id,
        } = prepared;
        let old = self.row(&key)?;
        let ancestors = self.ancestors_over(&key, &parents)?;
        let body = RowBody {
            entity: explicit,
            ancestors,
        };
        if let Some((_, old_origin, old_body)) = &old
            && *old_origin == origin
            && *old_body == body
        {
            return Ok(uid);
        }
        let old_parents = old
            .as_ref()
            .map(|(_, _, b)| parents_in(&b.entity))
            .unwrap_or_default();
        let old_references = match &old {
            Some((_, _, b)) => references_in(&b.entity),
            None => Vec::new(),
        };
        let ancestors_changed = old
            .as_ref()
            .is_some_and(|(_, _, b)| b.ancestors != body.ancestors);
        self.repoint(CHILDREN, &key, &old_parents, &parents)?;
        self.repoint(REFERRERS, &key, &old_references, &references)?;
        if let Some((_, _, old_body)) = &old {
            self.forget_spiffe_id(&key, &old_body.entity)?;
        }
        if let Some(id) = &spiffe_id {
            let mut spiffe = self.txn.open_table(SPIFFE_IDS).map_err(store_error)?;
            let other = spiffe
                .get(id.as_str())
                .map_err(store_error)?
                .map(|v| v.value().to_owned());
            if let Some(other) = other.filter(|other| *other != key) {
                return Err(FactsError::BadEntity {
                    entity: EntityRef::from_uid(&uid),
                    message: format!("spiffe_id {id:?} is also {other}'s"),
                });
            }
            spiffe
                .insert(id.as_str(), key.as_str())
                .map_err(store_error)?;
        }
        if old.is_none() {
            self.count(&uid.type_name().to_string(), 1)?;
        }
        self.write_row(&key, origin, &body)?;
        if ancestors_changed || old.is_none() {
            // Everything below it (which may already name it) has new ancestors too.
            self.reclose_below(&key)?;
        }
        Ok(uid)
    }

    /// Removes the entity of `uid`, if the store holds it. Entities below it lose it (and what
    /// was above it only through it) from their ancestors.
    pub fn remove(&mut self, uid: &EntityUid) -> Result<(), FactsError> {
        let key = uid.to_string();
        let Some((_, _, old)) = self.row(&key)? else {
            return Ok(());
        };
        self.repoint(CHILDREN, &key, &parents_in(&old.entity), &[])?;
        self.repoint(REFERRERS, &key, &references_in(&old.entity), &[])?;
        self.forget_spiffe_id(&key, &old.entity)?;
        self.count(&uid.type_name().to_string(), -1)?;
        self.txn
            .open_table(ENTITIES)
            .map_err(store_error)?
            .remove(key.as_str())
            .map_err(store_error)?;
        self.remember(&key, None);
        self.hasher.update(b"\nremoved ");
        self.hasher.update(key.as_bytes());
        self.touched.insert(key.clone());
        self.removed = true;
        self.reclose_below(&key)
    }

    /// Makes the change durable and visible to new readers.
    pub fn commit(mut self) -> Result<Committed, FactsError> {
        let changed = !self.touched.is_empty();
        {
            let mut meta = self.txn.open_table(META).map_err(store_error)?;
            if changed {
                let version = format!("sha256:{:x}", self.hasher.finalize_reset());
                let last_removal = if self.removed {
                    self.revision
                } else {
                    self.last_removal
                };
                meta.insert(META_REVISION, self.revision.to_string().as_str())
                    .map_err(store_error)?;
                meta.insert(META_LAST_REMOVAL, last_removal.to_string().as_str())
                    .map_err(store_error)?;
                meta.insert(META_VERSION, version.as_str())
                    .map_err(store_error)?;
            }
            for (name, value) in &self.meta {
                meta.insert(*name, value.as_str()).map_err(store_error)?;
            }
        }
        self.txn.commit().map_err(store_error)?;
        let touched = self
            .touched
            .iter()
            .filter_map(|key| EntityUid::from_str(key).ok())
            .collect();
        Ok(Committed {
            revision: if changed {
                self.revision
            } else {
                self.revision - 1
            },
            touched,
        })
    }

    /// The uids this change has touched so far.
    pub fn touched(&self) -> impl Iterator<Item = &str> {
        self.touched.iter().map(String::as_str)
    }

    fn row(&self, key: &str) -> Result<Option<(u64, Origin, RowBody)>, FactsError> {
        let table = self.txn.open_table(ENTITIES).map_err(store_error)?;
        let Some(row) = table.get(key).map_err(store_error)? else {
            return Ok(None);
        };
        let (revision, origin) = header(key, row.value())?;
        Ok(Some((revision, origin, body(key, row.value())?)))
    }

    /// The ancestors of the entity `key` as this change stands (`None` if it is not held),
    /// remembered for the change's next puts under the same parents.
    fn ancestors_of(&mut self, key: &str) -> Result<Option<Arc<[String]>>, FactsError> {
        if let Some(known) = self.ancestors_memo.get(key) {
            return Ok(known.clone());
        }
        let found = self.row(key)?.map(|(_, _, body)| Arc::from(body.ancestors));
        if self.ancestors_memo.len() >= ANCESTORS_MEMO_ENTRIES {
            self.ancestors_memo.clear();
        }
        self.ancestors_memo.insert(key.to_owned(), found.clone());
        Ok(found)
    }

    /// Drops the SPIFFE ID `entity` (the old form of `key`) had, if it is still `key`'s.
    fn forget_spiffe_id(&self, key: &str, entity: &serde_json::Value) -> Result<(), FactsError> {
        let Some(serde_json::Value::String(id)) = entity["attrs"].get("spiffe_id") else {
            return Ok(());
        };
        let mut spiffe = self.txn.open_table(SPIFFE_IDS).map_err(store_error)?;
        let mine = spiffe
            .get(id.as_str())
            .map_err(store_error)?
            .is_some_and(|v| v.value() == key);
        if mine {
            spiffe.remove(id.as_str()).map_err(store_error)?;
        }
        Ok(())
    }

    /// Makes `key` one of the values of `new` in the multimap `table` (children or referrers)
    /// in place of `old`.
    fn repoint(
        &self,
        table: MultimapTableDefinition<&str, &str>,
        key: &str,
        old: &[String],
        new: &[String],
    ) -> Result<(), FactsError> {
        let mut table = self.txn.open_multimap_table(table).map_err(store_error)?;
        for was in old {
            table.remove(was.as_str(), key).map_err(store_error)?;
        }
        for is in new {
            table.insert(is.as_str(), key).map_err(store_error)?;
        }
        Ok(())
    }

    /// Writes the row of `key` at this change's revision, and counts it as touched.
    fn write_row(&mut self, key: &str, origin: Origin, body: &RowBody) -> Result<(), FactsError> {
        let row = encode(self.revision, origin, body)?;
        self.hasher.update(&row[ROW_HEADER..]);
        self.txn
            .open_table(ENTITIES)
            .map_err(store_error)?
            .insert(key, row.as_slice())
            .map_err(store_error)?;
        self.remember(key, Some(&body.ancestors));
        self.touched.insert(key.to_owned());
        Ok(())
    }

    /// Keeps `ancestors_memo` right after a write of `key`.
    fn remember(&mut self, key: &str, ancestors: Option<&[String]>) {
        if let Some(known) = self.ancestors_memo.get_mut(key) {
            *known = ancestors.map(Arc::from);
        }
    }

    /// The ancestors of an entity with `parents`, nearest first: the parents and their
    /// ancestors as the store holds them. Refuses a cycle through `key`.
    fn ancestors_over(&mut self, key: &str, parents: &[String]) -> Result<Vec<String>, FactsError> {
        let mut all: HashSet<String> = HashSet::new();
        for parent in parents {
            all.insert(parent.clone());
            if let Some(ancestors) = self.ancestors_of(parent)? {
                all.extend(ancestors.iter().cloned());
            }
        }
        if all.contains(key) {
            return Err(FactsError::Invalid(format!(
                "{key} would be its own ancestor: the hierarchy has a cycle"
            )));
        }
        let mut ranked = Vec::with_capacity(all.len());
        for ancestor in all {
            let depth = self.ancestors_of(&ancestor)?.map_or(0, |a| a.len());
            ranked.push((depth, ancestor));
        }
        ranked.sort_by(|(a_depth, a), (b_depth, b)| b_depth.cmp(a_depth).then_with(|| a.cmp(b)));
        Ok(ranked.into_iter().map(|(_, uid)| uid).collect())
    }

    /// Recomputes the ancestors of everything below `key`, nearest levels first.
    fn reclose_below(&mut self, key: &str) -> Result<(), FactsError> {
        let mut queue = std::collections::VecDeque::from([key.to_owned()]);
        let mut seen = HashSet::new();
        while let Some(parent) = queue.pop_front() {
            let children: Vec<String> = {
                let table = self
                    .txn
                    .open_multimap_table(CHILDREN)
                    .map_err(store_error)?;
                let mut found = Vec::new();
                for child in table.get(parent.as_str()).map_err(store_error)? {
                    found.push(child.map_err(store_error)?.value().to_owned());
                }
                found
            };
            for child in children {
                if child == key {
                    return Err(FactsError::Invalid(format!(
                        "{key} would be its own ancestor: the hierarchy has a cycle"
                    )));
                }
                let Some((_, origin, mut body)) = self.row(&child)? else {
                    continue;
                };
                let ancestors = self.ancestors_over(&child, &parents_in(&body.entity))?;
                if ancestors != body.ancestors {
                    body.ancestors = ancestors;
                    self.write_row(&child, origin, &body)?;
                }
                if seen.insert(child.clone()) {
                    queue.push_back(child);
                }
            }
        }
        Ok(())
    }

    fn count(&mut self, type_name: &str, delta: i64) -> Result<(), FactsError> {
        let mut counts = self.txn.open_table(COUNTS).map_err(store_error)?;
        let now = counts
            .get(type_name)
            .map_err(store_error)?
            .map_or(0, |v| v.value());
        let next = now.saturating_add_signed(delta);
        if next == 0 {
            counts.remove(type_name).map_err(store_error)?;
        } else {
            counts.insert(type_name, next).map_err(store_error)?;
        }
        Ok(())
    }
}

/// The parents in an entity's explicit JSON form, as uids.
fn parents_in(entity: &serde_json::Value) -> Vec<String> {
    entity["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| EntityUid::from_json(p.clone()).ok())
        .map(|uid| uid.to_string())
        .collect()
}

/// The entities named in an entity's attributes and tags, as uids.
fn references_in(entity: &serde_json::Value) -> Vec<String> {
    // (A stored entity's references were read when it was put.)
    TimeReferences::of_entity(entity)
        .map(|found| found.entities.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}
