//! The facts on disk: every entity in a redb table by uid, each row holding the entity in
//! Cedar's explicit JSON form, its ancestors nearest first, its revision and its origin, beside
//! the indexes a change needs (children, referrers, SPIFFE IDs, counts by type) and the store's
//! counters (revision, last removal, version, the facts file's digest and the schema it was
//! checked against). `FactsWriter` changes it in one write transaction, keeping every row's
//! ancestor list closed; `FactsReader` reads it in one read transaction, so a reader sees one
//! consistent set, through a bounded cache of parsed entities keyed by revision.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::str::FromStr as _;
use std::sync::Arc;

use cedar_policy::{Entity, EntityUid, Schema};
use redb::{
    Database, MultimapTableDefinition, ReadOnlyMultimapTable, ReadOnlyTable, ReadableDatabase as _,
    ReadableMultimapTable as _, ReadableTable as _, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use warrant_domain::{APPROVAL_TYPE, EntityRef};
use warrant_facts::time_bounds::TimeReferences;
use warrant_facts::{
    Committed, ENTITIES_FILE, Facts, FactsError, FactsLoadError, FactsRead, FactsSource,
    FileEntities, Origin, StoredEntity, approval_of, error_chain, identity_rules, is_action,
};

mod writer;

pub use writer::{FactsWriter, Prepared};

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

/// A row, parsed.
fn parse(key: &str, row: &[u8]) -> Result<StoredEntity, FactsError> {
    let (revision, origin) = header(key, row)?;
    let body = body(key, row)?;
    let found = TimeReferences::of_entity(&body.entity)
        .map_err(|message| FactsError::Invalid(format!("{key}: {message}")))?;
    let parsed = Entity::from_json_value(body.entity, None)
        .map_err(|error| FactsError::Invalid(format!("{key}: {}", error_chain(&error))))?;
    let mut entity = parsed.as_ref().clone();
    let mut ancestors = Vec::with_capacity(body.ancestors.len());
    for ancestor in &body.ancestors {
        let uid = EntityUid::from_str(ancestor)
            .map_err(|error| FactsError::Invalid(format!("{key}: ancestor {ancestor}: {error}")))?;
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

    /// A reader over the store as last committed.
    fn reader(&self) -> Result<FactsReader, FactsError> {
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
            cache: self.cache.clone(),
            revision,
            last_removal,
            version: version.into(),
            file_digest,
            schema_version,
        })
    }

    /// Begins a change: nothing is visible to readers until `FactsWriter::commit`, and a writer
    /// dropped uncommitted changes nothing.
    pub fn writer(&self, schema: &Schema) -> Result<FactsWriter, FactsError> {
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

/// Loads `dir/entities.json` into a store in memory, validated against `schema`.
pub fn load(dir: &Path, schema: &Schema) -> Result<Facts, FactsLoadError> {
    let path = dir.join(ENTITIES_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| FactsLoadError::Io {
        path: path.clone(),
        source,
    })?;
    from_json(&text, schema).map_err(|error| match error {
        FactsError::Invalid(message) => FactsLoadError::Invalid { path, message },
        FactsError::BadEntity { entity, message } => FactsLoadError::BadEntity {
            path,
            entity,
            message,
        },
    })
}

/// Facts in a store in memory from the text of a Cedar entities file.
pub fn from_json(text: &str, schema: &Schema) -> Result<Facts, FactsError> {
    let entities: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|error| FactsError::Invalid(format!("not a JSON array of entities: {error}")))?;
    let store = Arc::new(FactsStore::in_memory()?);
    let mut writer = store.writer(schema)?;
    let mut seen = HashSet::new();
    for entity in entities {
        if is_action(&entity) {
            continue;
        }
        let uid = writer.put(entity, Origin::File)?;
        if !seen.insert(uid.to_string()) {
            return Err(FactsError::Invalid(format!("{uid} is given twice")));
        }
    }
    check_rules(&writer, schema)?;
    writer.commit()?;
    Facts::open(store, schema)
}

/// Facts in a store in memory from `base` (entities by uid) with each of `changes` in place of
/// the entity of the same uid, or added; a change of `None` removes the entity.
pub fn merged<'a>(
    schema: &Schema,
    base: &'a FileEntities,
    changes: impl IntoIterator<Item = (&'a str, Option<&'a serde_json::Value>)>,
) -> Result<Facts, FactsError> {
    let store = Arc::new(FactsStore::in_memory()?);
    let mut writer = store.writer(schema)?;
    let changes: BTreeMap<&str, Option<&serde_json::Value>> = changes.into_iter().collect();
    for (key, text) in base {
        if changes.contains_key(key.as_str()) {
            continue;
        }
        let entity: serde_json::Value = serde_json::from_str(text.get())
            .map_err(|error| FactsError::Invalid(format!("{key}: {error}")))?;
        if !is_action(&entity) {
            writer.put(entity, Origin::File)?;
        }
    }
    for entity in changes.into_values().flatten() {
        writer.put(entity.clone(), Origin::Live)?;
    }
    check_rules(&writer, schema)?;
    writer.commit()?;
    Facts::open(store, schema)
}

/// Warrant's own rules over the approvals `writer` touched, as they stand once the change is
/// whole: an approval is granted to exactly one identity (its parent, which may come later in
/// the change) and holds its ticket, approver, scope and window. (An identity's own rules are
/// checked as it is put: `identity_rules`.)
pub fn check_rules(writer: &FactsWriter, schema: &Schema) -> Result<(), FactsError> {
    let principal_types: Vec<String> = schema.principals().map(|t| t.to_string()).collect();
    let prefix = format!("{APPROVAL_TYPE}::\"");
    for key in writer.touched().filter(|key| key.starts_with(&prefix)) {
        let Ok(uid) = key.parse::<EntityUid>() else {
            continue;
        };
        let Some(stored) = writer.get(&uid)? else {
            continue;
        };
        approval_of(stored.as_entity(), &principal_types).map_err(|message| {
            FactsError::BadEntity {
                entity: EntityRef::from_uid(&uid),
                message,
            }
        })?;
    }
    Ok(())
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
    cache: ParsedCache,
    revision: u64,
    last_removal: u64,
    version: Arc<str>,
    file_digest: Option<String>,
    schema_version: Option<String>,
}

impl FactsSource for FactsStore {
    fn lineage(&self) -> u64 {
        self.lineage
    }

    fn cache_usage(&self) -> (u64, u64) {
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    fn read(&self) -> Result<Box<dyn FactsRead>, FactsError> {
        Ok(Box::new(self.reader()?))
    }

    fn apply(
        &self,
        schema: &Schema,
        changes: &[serde_json::Value],
        removals: &[EntityUid],
    ) -> Result<Committed, FactsError> {
        let mut writer = self.writer(schema)?;
        for change in changes {
            writer.put(change.clone(), Origin::Live)?;
        }
        for uid in removals {
            writer.remove(uid)?;
        }
        check_rules(&writer, schema)?;
        writer.commit()
    }
}

impl FactsReader {
    /// The entity of `uid`, parsed: from the cache when it holds this revision of it, else
    /// parsed from its row, and put in the cache if `keep`.
    fn read(&self, uid: &EntityUid, keep: bool) -> Result<Option<Arc<StoredEntity>>, FactsError> {
        let key = uid.to_string();
        let Some(row) = self.entities.get(key.as_str()).map_err(store_error)? else {
            return Ok(None);
        };
        let row = row.value();
        let (revision, _) = header(&key, row)?;
        if let Some(cached) = self.cache.get(&key)
            && cached.revision == revision
        {
            return Ok(Some(cached));
        }
        let parsed = Arc::new(parse(&key, row)?);
        if keep {
            self.cache.insert(key, Arc::clone(&parsed));
        }
        Ok(Some(parsed))
    }
}

impl FactsRead for FactsReader {
    fn revision(&self) -> u64 {
        self.revision
    }

    fn last_removal(&self) -> u64 {
        self.last_removal
    }

    fn version(&self) -> &Arc<str> {
        &self.version
    }

    fn file_digest(&self) -> Option<&str> {
        self.file_digest.as_deref()
    }

    fn schema_version(&self) -> Option<&str> {
        self.schema_version.as_deref()
    }

    /// The entity of `uid`, parsed (from the cache when it holds this revision of it).
    fn get(&self, uid: &EntityUid) -> Result<Option<Arc<StoredEntity>>, FactsError> {
        self.read(uid, true)
    }

    fn peek(&self, uid: &EntityUid) -> Result<Option<Arc<StoredEntity>>, FactsError> {
        self.read(uid, false)
    }

    fn contains(&self, uid: &EntityUid) -> Result<bool, FactsError> {
        Ok(self
            .entities
            .get(uid.to_string().as_str())
            .map_err(store_error)?
            .is_some())
    }

    /// The JSON form of `uid` and its origin.
    fn json(&self, uid: &EntityUid) -> Result<Option<(serde_json::Value, Origin)>, FactsError> {
        let key = uid.to_string();
        let Some(row) = self.entities.get(key.as_str()).map_err(store_error)? else {
            return Ok(None);
        };
        let (_, origin) = header(&key, row.value())?;
        Ok(Some((body(&key, row.value())?.entity, origin)))
    }

    /// Every entity's JSON form, by uid.
    fn each_json(
        &self,
        each: &mut dyn FnMut(serde_json::Value) -> Result<(), FactsError>,
    ) -> Result<(), FactsError> {
        for row in self.entities.iter().map_err(store_error)? {
            let (key, value) = row.map_err(store_error)?;
            each(body(key.value(), value.value())?.entity)?;
        }
        Ok(())
    }

    /// The uids of entities whose keys start with one of `prefixes` (`Type::"`), in key order,
    /// after the key `after` (from the first, for `None`), at most `limit`.
    fn uids_after(
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
    fn children_of(&self, key: &str, limit: usize) -> Result<Vec<String>, FactsError> {
        let mut children = Vec::new();
        for child in self.children.get(key).map_err(store_error)? {
            if children.len() == limit {
                break;
            }
            let child = child.map_err(store_error)?;
            if child.value() != key {
                children.push(child.value().to_owned());
            }
        }
        Ok(children)
    }

    fn namer_of(&self, uid: &EntityUid) -> Result<Option<EntityUid>, FactsError> {
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

    fn identity_by_spiffe_id(&self, spiffe_id: &str) -> Result<Option<EntityUid>, FactsError> {
        Ok(self
            .spiffe_ids
            .get(spiffe_id)
            .map_err(store_error)?
            .and_then(|uid| EntityUid::from_str(uid.value()).ok()))
    }

    /// How many entities of each of `types` the store holds; all of them for `None`.
    fn count(&self, types: Option<&[String]>) -> Result<u64, FactsError> {
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

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use warrant_domain::clock::UnixMillis;

    #[test]
    fn time_bounds_reach_through_entity_attributes() {
        let (schema, _) = Schema::from_cedarschema_str(
            r#"entity Human = { away_until?: datetime };
entity Bot = { owner: Human, status: String, expires_at?: datetime };
entity Doc;
action "read" appliesTo { principal: [Bot], resource: [Doc] };"#,
        )
        .unwrap();
        let facts = from_json(
            r#"[
  {"uid": {"type": "Human", "id": "h"}, "attrs": {"away_until": {"__extn": {"fn": "datetime", "arg": "2030-01-02"}}}, "parents": []},
  {"uid": {"type": "Bot", "id": "b"}, "attrs": {"owner": {"__entity": {"type": "Human", "id": "h"}}, "status": "active",
   "expires_at": {"__extn": {"fn": "datetime", "arg": "2030-01-01"}}}, "parents": []},
  {"uid": {"type": "Doc", "id": "d"}, "attrs": {}, "parents": []}
]"#,
            &schema,
        )
        .unwrap();
        let bot = EntityUid::from_str(r#"Bot::"b""#).unwrap();
        let day = |d| UnixMillis::parse_cedar_datetime(d).unwrap();
        // The bot's own expiry, and its owner's, which a policy can read as principal.owner.
        assert_eq!(
            facts.reached([&bot], None).unwrap().datetimes,
            [day("2030-01-01"), day("2030-01-02")]
        );
        assert_eq!(
            facts.identity(&bot).unwrap().expires_at,
            Some(day("2030-01-01"))
        );
        let doc = EntityUid::from_str(r#"Doc::"d""#).unwrap();
        assert!(facts.reached([&doc], None).unwrap().datetimes.is_empty());
    }
}
