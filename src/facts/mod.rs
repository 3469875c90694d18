//! The facts store: the entities a decision is made from (identities and their owners, resources
//! and their scopes, approvals), loaded from a Cedar entities file and validated against the
//! schema, kept in persistent maps (`EntityMap`). Beside the entities, it indexes the evidence
//! Warrant reports and reasons about itself: an identity's owner and status, an approval's
//! ticket, subject and window.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedar_policy::{Entities, Entity, EntityUid, EvalResult, Schema};
use sha2::{Digest, Sha256};

use crate::clock::UnixMillis;
use crate::domain::{Approval, Budget, EntityRef, Identity, MAX_EXACT_INTEGER, Owner};

mod entity_map;
mod evidence;
mod time_bounds;

pub use entity_map::EntityMap;

use evidence::{index_identity, read_approval, scopes_nearest_first};
use time_bounds::{TimeReferences, closure_of, direct_times_of, time_bounds_by_entity};

/// The facts file in a policy directory.
pub const ENTITIES_FILE: &str = "entities.json";
/// The entity type of approvals. An approval's single parent is the identity it was granted to.
pub const APPROVAL_TYPE: &str = "Approval";
/// The entity type of people: owners of identities, approvers of approvals.
pub const HUMAN_TYPE: &str = "Human";

/// The maps the facts keep: persistent (a copy shares all but what changes), so that a change
/// to one entity copies a path, not the whole map. Ordered rather than hashed: `imbl`'s hash
/// trie has fixed 32-slot nodes, nearly empty at a million keys (13.9 against 18.8 GiB for a
/// million identities, BENCHMARKS.md).
pub type Map<K, V> = imbl::OrdMap<K, V>;

/// One consistent set of facts. Immutable once built.
pub struct Facts {
    entities: EntityMap,
    identities: Map<EntityUid, Arc<Identity>>,
    approvals: Map<String, Arc<Approval>>,
    /// For each resource, every scope it lies in, nearest first.
    resource_scopes: Map<EntityUid, Arc<[EntityRef]>>,
    /// Identities by the SPIFFE ID of their workload (their `spiffe_id` attribute), for gateways
    /// that name the caller by its mTLS certificate.
    spiffe_ids: Map<String, EntityUid>,
    /// For each entity that has any: every `datetime` in its attributes and tags and in those of
    /// every entity reachable from it through entity-valued attributes, sorted. A decision that
    /// reads an entity can only change when the clock crosses one of these.
    time_bounds: Map<EntityUid, Arc<[UnixMillis]>>,
    /// Each entity's own datetimes and entity references (for the entities that hold any),
    /// and who refers to whom the other way: what an incremental update needs to redo only
    /// the affected `time_bounds`.
    direct_times: Map<EntityUid, Arc<TimeReferences>>,
    referrers: Map<EntityUid, imbl::OrdSet<EntityUid>>,
    /// `sha256:` of the facts' JSON text (the file's, plus the live changes if there are any).
    version: Arc<str>,
    /// What changed when, for caches that must forget only what a change touched.
    revisions: Revisions,
}

/// Per-entity revisions: every change to the facts has a number, and each entity carries the
/// number of the last change that created or altered it (its attributes, tags, parents or
/// ancestors). An entity no change has touched since the first build is at revision 0. An
/// entity the facts do not hold is at the number of the last change that removed one, so that
/// reading "absent" stays true only while no entity has been removed (or created under that uid:
/// a created entity gets the creating change's number). The map holds present entities only.
#[derive(Debug, Clone)]
struct Revisions {
    /// Facts built from nothing start a lineage of their own; changes to them stay in it.
    /// Revisions compare only within one lineage.
    lineage: u64,
    /// The number of the change that made these facts.
    current: u64,
    by_entity: Map<EntityUid, u64>,
    /// The number of the last change that removed an entity.
    last_removal: u64,
}

impl Revisions {
    /// The revisions of facts built from nothing: a new lineage, every entity at 0.
    fn first() -> Self {
        static LINEAGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Revisions {
            lineage: LINEAGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            current: 0,
            by_entity: Map::new(),
            last_removal: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FactsLoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: entities do not fit the schema: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {entity}: {message}")]
    BadEntity {
        path: PathBuf,
        entity: EntityRef,
        message: String,
    },
}

impl Facts {
    // The facts' parts, read-only: a `Facts` is immutable once built (`from_json`,
    // `with_changes`), and its indexes agree with its entities.

    /// Every entity, each with its closed ancestor set.
    pub fn entities(&self) -> &EntityMap {
        &self.entities
    }

    /// What Warrant knows of each identity, by uid.
    pub fn identities(&self) -> &Map<EntityUid, Arc<Identity>> {
        &self.identities
    }

    /// Approvals, by id.
    pub fn approvals(&self) -> &Map<String, Arc<Approval>> {
        &self.approvals
    }

    /// For each resource, every scope it lies in, nearest first.
    pub fn resource_scopes(&self) -> &Map<EntityUid, Arc<[EntityRef]>> {
        &self.resource_scopes
    }

    /// Identities by the SPIFFE ID of their workload.
    pub fn spiffe_ids(&self) -> &Map<String, EntityUid> {
        &self.spiffe_ids
    }

    /// `sha256:` of the facts' JSON text.
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// Loads `dir/entities.json`, validated against `schema`.
    pub fn load(dir: &Path, schema: &Schema) -> Result<Self, FactsLoadError> {
        let path = dir.join(ENTITIES_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| FactsLoadError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_json(&text, schema).map_err(|error| match error {
            FactsError::Invalid(message) => FactsLoadError::Invalid { path, message },
            FactsError::BadEntity { entity, message } => FactsLoadError::BadEntity {
                path,
                entity,
                message,
            },
        })
    }

    /// Builds facts from the text of a Cedar entities file.
    pub fn from_json(text: &str, schema: &Schema) -> Result<Self, FactsError> {
        let entities = EntityMap::from_cedar(
            Entities::from_json_str(text, Some(schema))
                .map_err(|error| FactsError::Invalid(error_chain(&error)))?,
        );
        let principal_types: Vec<String> = schema.principals().map(|t| t.to_string()).collect();
        let resource_types: Vec<String> = schema.resources().map(|t| t.to_string()).collect();

        let mut identities = Map::new();
        let mut approvals = Map::new();
        let mut resource_scopes = Map::new();
        let mut spiffe_ids = Map::new();
        for entity in entities.iter() {
            let uid = entity.uid();
            let type_name = uid.type_name().to_string();
            if type_name == APPROVAL_TYPE {
                let approval =
                    read_approval(entity, &entities, &principal_types).map_err(|message| {
                        FactsError::BadEntity {
                            entity: EntityRef::from_uid(&uid),
                            message,
                        }
                    })?;
                approvals.insert(uid.id().unescaped().to_owned(), Arc::new(approval));
                continue;
            }
            if principal_types.contains(&type_name) {
                index_identity(entity, &entities, &mut identities, &mut spiffe_ids).map_err(
                    |message| FactsError::BadEntity {
                        entity: EntityRef::from_uid(&uid),
                        message,
                    },
                )?;
            }
            if resource_types.contains(&type_name) {
                resource_scopes.insert(uid.clone(), scopes_nearest_first(&entities, &uid));
            }
        }
        let (time_bounds, direct_times, referrers) = time_bounds_by_entity(&entities)?;
        let version = format!("sha256:{:x}", Sha256::digest(text.as_bytes())).into();
        Ok(Facts {
            entities,
            identities,
            approvals,
            resource_scopes,
            spiffe_ids,
            time_bounds,
            direct_times,
            referrers,
            version,
            revisions: Revisions::first(),
        })
    }

    /// These facts with `changes` (entities in Cedar's JSON form) in place of the entities of
    /// the same uid, or added, without re-reading the others: for the admin API's changes.
    /// `Ok(None)` when a change is of a shape this cannot apply exactly (a `Human`, whose name
    /// is part of the identities it owns; different parents for an existing entity, which move
    /// every entity below it; an entity others already name): build the facts afresh then. The version chains the old one with the changes.
    pub fn with_changes(
        &self,
        schema: &Schema,
        changes: &[serde_json::Value],
    ) -> Result<Option<Self>, FactsError> {
        let parsed =
            Entities::from_json_value(serde_json::Value::Array(changes.to_vec()), Some(schema))
                .map_err(|error| FactsError::Invalid(error_chain(&error)))?;
        let principal_types: Vec<String> = schema.principals().map(|t| t.to_string()).collect();
        let resource_types: Vec<String> = schema.resources().map(|t| t.to_string()).collect();
        let mut changed = Vec::new();
        // (Parsing with a schema adds the schema's action entities: only the changes count.)
        for change in changes {
            let uid = EntityUid::from_json(change["uid"].clone())
                .map_err(|error| FactsError::Invalid(format!("bad `uid`: {error}")))?;
            let Some(entity) = parsed.get(&uid) else {
                return Ok(None);
            };
            let type_name = uid.type_name().to_string();
            // A human's name and email are part of the identities it owns: rebuilt whole.
            if type_name == HUMAN_TYPE || uid.type_name().basename() == "Action" {
                return Ok(None);
            }
            // New parents would change ancestors elsewhere: only a full build gets that right.
            let parents: std::collections::BTreeSet<String> = parents_of(entity)?;
            match self.entities.get(&uid) {
                Some(old) if parents_of(old)? != parents => return Ok(None),
                // An entity others already name (as a parent or in an attribute) but that did
                // not exist: also left to a full build.
                None if self.referrers.contains_key(&uid)
                    || self.entities.children(&uid).next().is_some() =>
                {
                    return Ok(None);
                }
                _ => {}
            }
            changed.push(entity.clone());
        }
        // Its parents unchanged, a changed entity keeps its ancestors, and so does every entity
        // below it: each change is one entry replaced or added, its ancestor set closed over
        // its parents as they stand (a parent added in the same change first: within the
        // change, Cedar's parse has counted each entity's ancestors there).
        changed.sort_by_key(|entity| entity.as_ref().ancestors().count());
        let mut entities = self.entities.clone();
        for entity in &changed {
            let closed = entities.closed(entity);
            entities.insert(closed);
        }

        let mut identities = self.identities.clone();
        let mut approvals = self.approvals.clone();
        let mut resource_scopes = self.resource_scopes.clone();
        let mut spiffe_ids = self.spiffe_ids.clone();
        let mut direct_times = self.direct_times.clone();
        let mut referrers = self.referrers.clone();
        let mut affected = Vec::new();
        for entity in &changed {
            let uid = entity.uid();
            let bad = |message: String| FactsError::BadEntity {
                entity: EntityRef::from_uid(&uid),
                message,
            };
            let Some(entity) = entities.get(&uid) else {
                return Err(bad("missing from the entities it was just added to".into()));
            };
            let type_name = uid.type_name().to_string();
            if type_name == APPROVAL_TYPE {
                let approval = read_approval(entity, &entities, &principal_types).map_err(bad)?;
                approvals.insert(uid.id().unescaped().to_owned(), Arc::new(approval));
            } else if principal_types.contains(&type_name) {
                // Its SPIFFE ID as it was, if it had one, is no longer its.
                if let Some(old) = self.entities.get(&uid)
                    && let Ok(Some(old_id)) = evidence::string_attr(old, "spiffe_id")
                    && spiffe_ids.get(&old_id) == Some(&uid)
                {
                    spiffe_ids.remove(&old_id);
                }
                index_identity(entity, &entities, &mut identities, &mut spiffe_ids).map_err(bad)?;
            }
            if resource_types.contains(&type_name) {
                resource_scopes.insert(uid.clone(), scopes_nearest_first(&entities, &uid));
            }
            // Time bounds: this entity's own references, and everyone who reaches it.
            let found = direct_times_of(entity)?;
            if let Some(old) = direct_times.get(&uid) {
                for reference in &old.entities {
                    if let Some(set) = referrers.get_mut(reference) {
                        set.remove(&uid);
                    }
                }
            }
            for reference in &found.entities {
                referrers
                    .entry(reference.clone())
                    .or_default()
                    .insert(uid.clone());
            }
            if found.datetimes.is_empty() && found.entities.is_empty() {
                direct_times.remove(&uid);
            } else {
                direct_times.insert(uid.clone(), Arc::new(found));
            }
            affected.push(uid);
        }
        let mut time_bounds = self.time_bounds.clone();
        let mut seen: std::collections::HashSet<EntityUid> = affected.iter().cloned().collect();
        while let Some(uid) = affected.pop() {
            match closure_of(&uid, &direct_times) {
                Some(times) => time_bounds.insert(uid.clone(), times),
                None => time_bounds.remove(&uid),
            };
            for referrer in referrers.get(&uid).into_iter().flatten() {
                if seen.insert(referrer.clone()) {
                    affected.push(referrer.clone());
                }
            }
        }
        let mut hasher = Sha256::new();
        hasher.update(self.version.as_bytes());
        for change in changes {
            hasher.update(change.to_string().as_bytes());
        }
        let mut revisions = self.revisions.clone();
        revisions.current += 1;
        for entity in &changed {
            revisions.by_entity.insert(entity.uid(), revisions.current);
        }
        Ok(Some(Facts {
            entities,
            identities,
            approvals,
            resource_scopes,
            spiffe_ids,
            time_bounds,
            direct_times,
            referrers,
            version: format!("sha256:{:x}", hasher.finalize()).into(),
            revisions,
        }))
    }

    /// These facts, built afresh, as the change that follows `previous`: every entity that is
    /// new or differs from its form there (attributes, tags, parents, ancestors) gets this
    /// change's revision, the others keep theirs, and if any entity of `previous` is gone, this
    /// change counts as a removal. Costs one comparison per entity. What Warrant derives from
    /// an entity (an identity's owner, an approval's subject, time bounds) comes from it and the
    /// entities it refers to, which a decision's reads hold too; a resource's scope order also
    /// depends on its scopes' depths, compared here.
    pub fn succeeding(mut self, previous: &Facts) -> Facts {
        let mut revisions = Revisions {
            lineage: previous.revisions.lineage,
            current: previous.revisions.current + 1,
            by_entity: Map::new(),
            last_removal: previous.revisions.last_removal,
        };
        for entity in self.entities.iter() {
            let uid = entity.uid();
            let revision = match previous.entities.get(&uid) {
                // (A resource's scopes are ordered by their depth, which can change while its
                // ancestor set does not: compare the order too.)
                Some(before)
                    if before.as_ref().deep_eq(entity.as_ref())
                        && self.resource_scopes.get(&uid) == previous.resource_scopes.get(&uid) =>
                {
                    match previous.revisions.by_entity.get(&uid) {
                        Some(revision) => *revision,
                        None => continue,
                    }
                }
                _ => revisions.current,
            };
            revisions.by_entity.insert(uid, revision);
        }
        if previous
            .entities
            .iter()
            .any(|entity| self.entities.get(&entity.uid()).is_none())
        {
            revisions.last_removal = revisions.current;
        }
        self.revisions = revisions;
        self
    }

    /// The lineage these facts belong to: facts built from nothing start one, and the facts
    /// derived from them by changes (`with_changes`, `succeeding`) stay in it. Revisions of two
    /// facts compare only if their lineages are equal.
    pub fn lineage(&self) -> u64 {
        self.revisions.lineage
    }

    /// The revision of `uid` in these facts (see `Revisions`): equal in two facts of one lineage
    /// exactly when no change between them touched that entity.
    pub fn revision_of(&self, uid: &EntityUid) -> u64 {
        match self.revisions.by_entity.get(uid) {
            Some(revision) => *revision,
            None if self.entities.contains(uid) => 0,
            None => self.revisions.last_removal,
        }
    }

    /// What a decision over `roots` (and `described`) read, with the revision of each: the
    /// entities `slice` gathers, the roots the facts do not hold, and the described resource's
    /// parents and references. A decision cached with this list stays true while every entity
    /// on it keeps its revision.
    pub fn reads<'a>(
        &self,
        roots: impl IntoIterator<Item = &'a EntityUid>,
        described: Option<&Entity>,
    ) -> Result<Vec<(EntityUid, u64)>, FactsError> {
        // What the described resource names: its attributes' and tags' entities, its parents.
        let mut described_roots = Vec::new();
        if let Some(entity) = described {
            described_roots = direct_times_of(entity)?.entities;
            described_roots.extend(entity.as_ref().parents().cloned().map(EntityUid::from));
        }
        let skip = described.map(Entity::uid);
        let roots: Vec<&EntityUid> = roots.into_iter().collect();
        Ok(self
            .reachable(roots, &described_roots, skip.as_ref())
            .into_iter()
            .map(|uid| (uid.clone(), self.revision_of(uid)))
            .collect())
    }

    /// The number of the change that made these facts (0 for facts built from nothing).
    pub fn revision(&self) -> u64 {
        self.revisions.current
    }

    /// Whether every entity in `reads` (`Facts::reads` of these facts' lineage, at revision
    /// `read_at`) still has the revision it had: then a decision that read them decides the
    /// same now. While no entity has been removed since `read_at`, the one lookup per entity in
    /// the (small) map of changed entities tells it: an entity that was created, changed or
    /// moved since is there with a later revision; one absent from the map has not changed.
    pub fn unchanged_since(&self, read_at: u64, reads: &[(EntityUid, u64)]) -> bool {
        if self.revisions.last_removal > read_at {
            return reads
                .iter()
                .all(|(uid, revision)| self.revision_of(uid) == *revision);
        }
        reads.iter().all(|(uid, revision)| {
            self.revisions
                .by_entity
                .get(uid)
                .is_none_or(|now| now == revision)
        })
    }

    /// Every uid in `roots` and `more_roots`, and every one reachable from them through
    /// entity-valued attributes and tags, each once, `skip` excepted. Uids the facts do not hold
    /// are included; nothing is reached through them.
    fn reachable<'s>(
        &'s self,
        roots: impl IntoIterator<Item = &'s EntityUid>,
        more_roots: &'s [EntityUid],
        skip: Option<&EntityUid>,
    ) -> Vec<&'s EntityUid> {
        let mut queue: Vec<&EntityUid> = roots.into_iter().collect();
        queue.extend(more_roots);
        let mut seen: std::collections::HashSet<&EntityUid> =
            std::collections::HashSet::with_capacity(queue.len() * 2);
        let mut reached = Vec::with_capacity(queue.len() * 2);
        while let Some(uid) = queue.pop() {
            if skip == Some(uid) || !seen.insert(uid) {
                continue;
            }
            if let Some(found) = self.direct_times.get(uid) {
                queue.extend(&found.entities);
            }
            reached.push(uid);
        }
        reached
    }

    /// The part of the facts a decision can read: every entity in `roots` (the principal, the
    /// action, the resource, the presented approval, the entities the policies name) and every
    /// entity reachable from them through entity-valued attributes and tags, at any depth, with
    /// `described` (a resource the caller described, whose parents must be among the roots)
    /// added. Each entity keeps its whole ancestor set, so `in` answers as over the whole facts;
    /// an ancestor's own attributes are not reachable from a policy unless something refers to
    /// it, and then it is in the slice. Roots the facts do not hold are left out (Cedar then
    /// finds no such entity, exactly as over the whole facts).
    pub fn slice<'a>(
        &self,
        roots: impl IntoIterator<Item = &'a EntityUid>,
        described: Option<&Entity>,
    ) -> Result<Slice, FactsError> {
        let described_refs = match described {
            Some(entity) => direct_times_of(entity)?.entities,
            None => Vec::new(),
        };
        let skip = described.map(Entity::uid);
        let roots: Vec<&EntityUid> = roots.into_iter().collect();
        let mut picked: Vec<Arc<cedar_policy_core::ast::Entity>> = self
            .reachable(roots, &described_refs, skip.as_ref())
            .into_iter()
            .filter_map(|uid| self.entities.shared(uid).cloned())
            .collect();
        if let Some(entity) = described {
            // Its ancestors: its parents and all of theirs, so that its ancestor set is closed
            // like every other entity's.
            picked.push(self.entities.closed(entity));
        }
        // Every entity's ancestor set was closed when the whole facts were built, so the slice
        // needs no transitive closure of its own (Cedar's would cost more than the evaluation).
        cedar_policy_core::entities::Entities::new()
            .add_entities(
                picked,
                None::<&cedar_policy_core::entities::NoEntitiesSchema>,
                cedar_policy_core::entities::TCComputation::AssumeAlreadyComputed,
                cedar_policy_core::extensions::Extensions::all_available(),
            )
            .map(Slice)
            .map_err(|error| FactsError::Invalid(error_chain(&error)))
    }

    /// The first entity `entity` refers to (in its attributes or tags), itself aside, that these
    /// facts do not hold, if any.
    pub fn unknown_reference(&self, entity: &Entity) -> Option<EntityUid> {
        let found = direct_times_of(entity).ok()?;
        let own = entity.uid();
        found
            .entities
            .into_iter()
            .find(|uid| uid != &own && !self.entities.contains(uid))
    }

    /// An entity other than `uid` that names it: in an attribute or tag, or as a parent.
    pub fn referrer_of(&self, uid: &EntityUid) -> Option<EntityUid> {
        self.referrers
            .get(uid)
            .into_iter()
            .flatten()
            .chain(self.entities.children(uid))
            .find(|referrer| *referrer != uid && self.entities.contains(referrer))
            .cloned()
    }

    /// Whether `descendant` lies in `ancestor` (is it, or has it among its ancestors).
    pub fn lies_in(&self, descendant: &EntityUid, ancestor: &EntityUid) -> bool {
        descendant == ancestor
            || self
                .entities
                .ancestors(descendant)
                .is_some_and(|mut ancestors| ancestors.any(|a| a == ancestor))
    }

    /// The datetimes a decision reading `entity` (not itself in these facts: a resource the
    /// caller described) might compare the clock with: its own and those of every entity it
    /// refers to, sorted.
    pub fn time_bounds_of(&self, entity: &Entity) -> Vec<UnixMillis> {
        let Ok(found) = direct_times_of(entity) else {
            return Vec::new();
        };
        let mut times = found.datetimes;
        for reference in &found.entities {
            times.extend_from_slice(self.time_bounds(reference));
        }
        times.sort_unstable();
        times.dedup();
        times
    }

    /// Every `datetime` a decision that reads `uid` might compare the clock with (see
    /// `time_bounds`). Empty for an unknown entity or one that holds no time.
    pub fn time_bounds(&self, uid: &EntityUid) -> &[UnixMillis] {
        self.time_bounds.get(uid).map_or(&[], |bounds| bounds)
    }
}

/// The entities one decision can read (`Facts::slice`).
pub struct Slice(cedar_policy_core::entities::Entities);

impl Slice {
    /// As Cedar's entities, for `is_authorized`.
    pub fn entities(&self) -> &Entities {
        use ref_cast::RefCast as _;
        Entities::ref_cast(&self.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a facts file was refused (without its path).
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("entities do not fit the schema: {0}")]
    Invalid(String),
    /// One entity is wrong (an owner that is not a `Human`, an approval without a ticket...).
    #[error("{entity}: {message}")]
    BadEntity { entity: EntityRef, message: String },
}

impl FactsError {
    /// The entity the error is about, when it names one. Cedar's conformance errors keep the
    /// entity's uid private and name it only in their text (`in attribute `status` on
    /// `ServiceAccount::"bot"``), so for those it is read from the first `Type::"id"` there.
    pub fn entity(&self) -> Option<EntityRef> {
        match self {
            FactsError::BadEntity { entity, .. } => Some(entity.clone()),
            FactsError::Invalid(message) => {
                let quote = message.find("::\"")?;
                let type_start = message[..quote]
                    .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .map_or(0, |at| at + 1);
                let id_start = quote + 3;
                let id_end = id_start + message[id_start..].find('"')?;
                Some(EntityRef::new(
                    &message[type_start..quote],
                    &message[id_start..id_end],
                ))
            }
        }
    }
}

/// An error's message with every source's after it, `: `-separated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

/// An entity's parents, as text (for comparing two versions of it).
fn parents_of(entity: &Entity) -> Result<std::collections::BTreeSet<String>, FactsError> {
    let json = entity.to_json_value().map_err(|e| FactsError::BadEntity {
        entity: EntityRef::from_uid(&entity.uid()),
        message: e.to_string(),
    })?;
    Ok(json["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(ToString::to_string)
        .collect())
}

/// The policy folder's `entities.json` by uid (`Type::"id"`), as JSON. Refuses an entity given
/// twice.
/// `sha256:` of the facts file's bytes: whether it changed, without parsing it.
pub fn entities_file_digest(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(ENTITIES_FILE);
    let mut file = std::fs::File::open(&path)
        .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
    Ok(format!("sha256:{:x}", hasher.finalize()))
}

/// The facts file's entities by uid, each as its JSON text: kept for rebuilding the facts with
/// live changes, and a fraction of the memory of parsed JSON values.
pub type FileEntities = BTreeMap<String, Box<serde_json::value::RawValue>>;

/// Reads `dir/entities.json` into `FileEntities`, refusing a uid given twice, with the
/// `entities_file_digest` of the bytes it read.
pub fn load_entities_file(dir: &Path) -> anyhow::Result<(FileEntities, String)> {
    /// Just the uid of an entity's text.
    #[derive(serde::Deserialize)]
    struct Uid {
        uid: serde_json::Value,
    }
    let path = dir.join(ENTITIES_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
    let entities: Vec<Box<serde_json::value::RawValue>> =
        serde_json::from_str(&text).map_err(|error| {
            anyhow::anyhow!("{}: not a JSON array of entities: {error}", path.display())
        })?;
    let digest = format!("sha256:{:x}", Sha256::digest(text.as_bytes()));
    drop(text);
    let mut base = BTreeMap::new();
    for (i, entity) in entities.into_iter().enumerate() {
        let uid = serde_json::from_str::<Uid>(entity.get())
            .map_err(|error| error.to_string())
            .and_then(|found| EntityUid::from_json(found.uid).map_err(|e| e.to_string()))
            .map_err(|error| {
                anyhow::anyhow!("{}: entity {i}: bad `uid`: {error}", path.display())
            })?;
        let key = uid.to_string();
        if base.insert(key.clone(), entity).is_some() {
            anyhow::bail!("{}: {key} is given twice", path.display());
        }
    }
    Ok((base, digest))
}

/// Facts from `base` (entities by uid) with each of `changes` in place of the entity of the same
/// uid, or added; a change of `None` removes the entity.
pub fn merged<'a>(
    schema: &Schema,
    base: &'a FileEntities,
    changes: impl IntoIterator<Item = (&'a str, Option<&'a serde_json::Value>)>,
) -> Result<Facts, FactsError> {
    enum Text<'a> {
        File(&'a serde_json::value::RawValue),
        Changed(&'a serde_json::Value),
    }
    let mut merged: BTreeMap<&str, Text<'_>> = base
        .iter()
        .map(|(key, value)| (key.as_str(), Text::File(value)))
        .collect();
    for (key, change) in changes {
        match change {
            Some(entity) => merged.insert(key, Text::Changed(entity)),
            None => merged.remove(key),
        };
    }
    let mut text =
        String::with_capacity(base.values().map(|e| e.get().len() + 1).sum::<usize>() + 2);
    text.push('[');
    for (i, entity) in merged.values().enumerate() {
        if i > 0 {
            text.push(',');
        }
        match entity {
            Text::File(raw) => text.push_str(raw.get()),
            Text::Changed(value) => text.push_str(&value.to_string()),
        }
    }
    text.push(']');
    Facts::from_json(&text, schema)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn an_error_names_its_entity_whether_warrant_or_cedar_found_it() {
        let cedar = FactsError::Invalid(
            "entity does not conform to the schema: in attribute `status` on \
             `Ns::ServiceAccount::\"old-deployer\"`, type mismatch"
                .into(),
        );
        assert_eq!(
            cedar.entity(),
            Some(EntityRef::new("Ns::ServiceAccount", "old-deployer"))
        );
        let ours = FactsError::BadEntity {
            entity: EntityRef::new("Approval", "a-1"),
            message: "no ticket".into(),
        };
        assert_eq!(ours.entity(), Some(EntityRef::new("Approval", "a-1")));
        assert_eq!(FactsError::Invalid("bad JSON".into()).entity(), None);
    }

    #[test]
    fn time_bounds_reach_through_entity_attributes() {
        let (schema, _) = Schema::from_cedarschema_str(
            r#"entity Human = { away_until?: datetime };
entity Bot = { owner: Human, status: String, expires_at?: datetime };
entity Doc;
action "read" appliesTo { principal: [Bot], resource: [Doc] };"#,
        )
        .unwrap();
        let facts = Facts::from_json(
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
            facts.time_bounds(&bot),
            [day("2030-01-01"), day("2030-01-02")]
        );
        assert_eq!(facts.identities[&bot].expires_at, Some(day("2030-01-01")));
        let doc = EntityUid::from_str(r#"Doc::"d""#).unwrap();
        assert!(facts.time_bounds(&doc).is_empty());
    }
}
