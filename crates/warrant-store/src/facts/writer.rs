//! A change to the facts' tables: `FactsWriter` puts and removes entities in one write
//! transaction, keeping every row's ancestors closed and the indexes right; `Prepared` is the
//! part of a put that needs no transaction (schema checks, what the store indexes).

use super::*;

/// A change to the store in one write transaction. `put` and `remove` keep every row's
/// ancestors, the children and referrer indexes, the SPIFFE IDs and the counts right as they
/// go; a row whose content does not change keeps its revision.
pub struct FactsWriter {
    pub(super) txn: WriteTransaction,
    pub(super) schema: Schema,
    pub(super) principal_types: Vec<String>,
    /// The revision this change gives what it touches.
    pub(super) revision: u64,
    pub(super) last_removal: u64,
    /// Every uid this change created, altered or removed.
    pub(super) touched: BTreeSet<String>,
    pub(super) removed: bool,
    pub(super) hasher: Sha256,
    pub(super) meta: Vec<(&'static str, String)>,
    /// Ancestors of entities read in this change, by uid (`ancestors_of`): a bulk put reads
    /// the same few parents again and again. Kept right on every write.
    pub(super) ancestors_memo: std::collections::HashMap<String, Option<Arc<[String]>>>,
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
        identity_rules(&parsed, principal_types)?;
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
        row.map(|row| parse(&key, row.value())).transpose()
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
