//! The facts: the entities a decision is made from (identities and their owners, resources and
//! their scopes, approvals), held in an indexed store (`stored`: redb, in the data folder, or in
//! memory for facts built from a file alone) and read per decision: a decision reads only the
//! slice of entities it can reach. Warrant reads the evidence it reports and reasons about
//! (an identity's owner and status, an approval's ticket, subject and window, a resource's
//! scopes) from those entities as it needs them.
//!
//! May depend on: `warrant-domain`.
//! Invariant: a `Facts` is one consistent read of the store, immutable once made.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedar_policy::{Entities, Entity, EntityUid, EvalResult, Schema};
use sha2::{Digest, Sha256};

use warrant_domain::clock::UnixMillis;
use warrant_domain::{
    APPROVAL_TYPE, Approval, Budget, EntityRef, Identity, MAX_EXACT_INTEGER, Owner,
};

mod evidence;
mod source;
pub mod time_bounds;

pub use source::{Committed, FactsRead, FactsSource, Origin, StoredEntity};

use time_bounds::direct_times_of;

/// The facts file in a policy directory.
pub const ENTITIES_FILE: &str = "entities.json";

/// The persistent maps the facts keep beside the store (a copy shares all but what changes).
pub type Map<K, V> = imbl::OrdMap<K, V>;

/// The most entities the in-memory list of recent changes holds (`Revisions::changed`); past
/// it, the list is dropped and every decision cached before counts as changed.
pub const MAX_RECENT_CHANGES: usize = 100_000;

/// One consistent set of facts: a read of the store at one revision, with what the schema says
/// of identities, approvals and resources. Immutable once made.
pub struct Facts {
    store: Arc<dyn FactsSource>,
    reader: Box<dyn FactsRead>,
    shape: Arc<SchemaShape>,
    revisions: Revisions,
}

/// What the facts need of the schema: which types are identities and resources, and the action
/// entities (which the schema, not the store, holds).
struct SchemaShape {
    principal_types: Vec<String>,
    resource_types: Vec<String>,
    actions: HashMap<EntityUid, Arc<cedar_policy_core::ast::Entity>>,
}

impl SchemaShape {
    fn of(schema: &Schema) -> Result<Self, FactsError> {
        let actions = schema
            .action_entities()
            .map_err(|error| FactsError::Invalid(error_chain(&error)))?;
        let core: cedar_policy_core::entities::Entities = actions.as_ref().clone();
        Ok(SchemaShape {
            // A Human is a principal only of the console's actions, never an identity.
            principal_types: schema
                .principals()
                .map(|t| t.to_string())
                .filter(|t| t != warrant_domain::HUMAN_TYPE)
                .collect(),
            resource_types: schema.resources().map(|t| t.to_string()).collect(),
            actions: core
                .into_iter()
                .map(|entity| (EntityUid::from(entity.uid().clone()), Arc::new(entity)))
                .collect(),
        })
    }

    fn is_identity_type(&self, type_name: &str) -> bool {
        type_name != APPROVAL_TYPE && self.principal_types.iter().any(|t| t == type_name)
    }
}

/// Per-entity revisions: every change to the store has a number, and each entity carries the
/// number of the last change that created or altered it (its attributes, tags, parents or
/// ancestors). An entity the facts do not hold is at the number of the last change that removed
/// one, so that reading "absent" stays true only while no entity has been removed (or created
/// under that uid). `changed` lists what changed since `floor` in this process, for caches.
#[derive(Debug, Clone)]
struct Revisions {
    /// The store these facts were read from: revisions compare only within one.
    lineage: u64,
    current: u64,
    /// Every entity changed after `floor`, with its revision now.
    changed: Map<EntityUid, u64>,
    floor: u64,
    last_removal: u64,
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
    /// The facts as `store` holds them now.
    pub fn open(store: Arc<dyn FactsSource>, schema: &Schema) -> Result<Self, FactsError> {
        let reader = store.read()?;
        let revisions = Revisions {
            lineage: store.lineage(),
            current: reader.revision(),
            changed: Map::new(),
            floor: reader.revision(),
            last_removal: reader.last_removal(),
        };
        Ok(Facts {
            store,
            reader,
            shape: Arc::new(SchemaShape::of(schema)?),
            revisions,
        })
    }

    /// These facts after `committed` (a change to their store), read anew; with `schema`'s
    /// shape when the schema changed with it.
    pub fn after(
        &self,
        committed: &Committed,
        schema: Option<&Schema>,
    ) -> Result<Self, FactsError> {
        let reader = self.store.read()?;
        let mut revisions = self.revisions.clone();
        revisions.current = reader.revision();
        revisions.last_removal = reader.last_removal();
        if revisions.changed.len() + committed.touched.len() > MAX_RECENT_CHANGES {
            revisions.changed = Map::new();
            revisions.floor = committed.revision;
        } else {
            for uid in &committed.touched {
                revisions.changed.insert(uid.clone(), committed.revision);
            }
        }
        let shape = match schema {
            Some(schema) => Arc::new(SchemaShape::of(schema)?),
            None => Arc::clone(&self.shape),
        };
        Ok(Facts {
            store: Arc::clone(&self.store),
            reader,
            shape,
            revisions,
        })
    }

    /// The store these facts are read from.
    pub fn store(&self) -> &Arc<dyn FactsSource> {
        &self.store
    }

    /// The store's counters as these facts read them.
    pub fn reader(&self) -> &dyn FactsRead {
        self.reader.as_ref()
    }

    /// `sha256:` chained over every change the store has taken.
    pub fn version(&self) -> &Arc<str> {
        self.reader.version()
    }

    /// These facts with `changes` (entities in Cedar's JSON form) in place of the entities of
    /// the same uid, or added, and `removals` removed: one change to their store.
    pub fn with_changes(
        &self,
        schema: &Schema,
        changes: &[serde_json::Value],
        removals: &[EntityUid],
    ) -> Result<Self, FactsError> {
        let committed = self.store.apply(schema, changes, removals)?;
        self.after(&committed, None)
    }

    // What decisions and the control plane read.

    /// Whether the facts hold `uid` (an action of the schema included).
    pub fn contains(&self, uid: &EntityUid) -> bool {
        self.shape.actions.contains_key(uid) || self.reader.contains(uid).unwrap_or(false)
    }

    /// The entity of `uid`, parsed. A row that cannot be read is logged and read as absent.
    pub fn entity(&self, uid: &EntityUid) -> Option<Arc<StoredEntity>> {
        match self.reader.get(uid) {
            Ok(found) => found,
            Err(error) => {
                tracing::error!(%error, entity = %uid, "cannot read an entity of the facts");
                None
            }
        }
    }

    /// The entity of `uid`, parsed and not cached (see `FactsRead::peek`).
    fn peek(&self, uid: &EntityUid) -> Option<Arc<StoredEntity>> {
        match self.reader.peek(uid) {
            Ok(found) => found,
            Err(error) => {
                tracing::error!(%error, entity = %uid, "cannot read an entity of the facts");
                None
            }
        }
    }

    /// What Warrant knows of the identity `uid`: `None` if it is not one the facts hold.
    pub fn identity(&self, uid: &EntityUid) -> Option<Arc<Identity>> {
        self.identity_read(uid, Self::entity)
    }

    /// `identity`, read with `read` (cached or not).
    fn identity_read(
        &self,
        uid: &EntityUid,
        read: fn(&Self, &EntityUid) -> Option<Arc<StoredEntity>>,
    ) -> Option<Arc<Identity>> {
        if !self.shape.is_identity_type(&uid.type_name().to_string()) {
            return None;
        }
        let stored = read(self, uid)?;
        let entity = stored.as_entity();
        let owner = evidence::entity_attr(entity, "owner")
            .ok()
            .flatten()
            .and_then(|owner| read(self, &owner));
        match evidence::read_identity(entity, owner.as_ref().map(|o| o.as_entity())) {
            Ok(identity) => Some(Arc::new(identity)),
            Err(message) => {
                tracing::error!(entity = %uid, %message, "an identity of the facts cannot be read");
                None
            }
        }
    }

    /// The approval of id `id`.
    pub fn approval(&self, id: &str) -> Option<Arc<Approval>> {
        self.approval_read(id, Self::entity)
    }

    fn approval_read(
        &self,
        id: &str,
        read: fn(&Self, &EntityUid) -> Option<Arc<StoredEntity>>,
    ) -> Option<Arc<Approval>> {
        let uid = approval_uid(id)?;
        let stored = read(self, &uid)?;
        match evidence::read_approval(stored.as_entity(), &self.shape.principal_types) {
            Ok(approval) => Some(Arc::new(approval)),
            Err(message) => {
                tracing::error!(entity = %uid, %message, "an approval of the facts cannot be read");
                None
            }
        }
    }

    /// Every scope the resource `uid` lies in, nearest first (empty for an unknown one).
    pub fn scopes_of(&self, uid: &EntityUid) -> Arc<[EntityRef]> {
        if !self
            .shape
            .resource_types
            .contains(&uid.type_name().to_string())
        {
            return Arc::from([]);
        }
        self.entity(uid)
            .map_or_else(|| Arc::from([]), |stored| Arc::clone(&stored.ancestors))
    }

    /// Every identity the facts hold, by uid.
    pub fn identities(&self) -> Vec<(EntityUid, Arc<Identity>)> {
        let mut all = Vec::new();
        for type_name in self.identity_types() {
            for uid in self
                .reader
                .uids_after(&[type_prefix(type_name)], None, usize::MAX)
                .unwrap_or_default()
            {
                if let Some(identity) = self.identity(&uid) {
                    all.push((uid, identity));
                }
            }
        }
        all.sort_by_key(|(uid, _)| uid.to_string());
        all
    }

    /// A text attribute of `entity`: `None` when the facts do not hold the entity, `Some(None)`
    /// when it lacks the attribute (or holds something else there).
    pub fn text_attribute(&self, entity: &EntityRef, name: &str) -> Option<Option<String>> {
        let stored = self.entity(&uid_of(entity)?)?;
        Some(
            evidence::string_attr(stored.as_entity(), name)
                .ok()
                .flatten(),
        )
    }

    /// What Warrant knows of the identity `entity` (see `identity`).
    pub fn identity_named(&self, entity: &EntityRef) -> Option<Arc<Identity>> {
        self.identity(&uid_of(entity)?)
    }

    /// The principal types whose entities may be identities, each once.
    fn identity_types(&self) -> std::collections::BTreeSet<&String> {
        self.shape
            .principal_types
            .iter()
            .filter(|t| *t != APPROVAL_TYPE)
            .collect()
    }

    /// Calls `each` with every identity the facts hold, reading them a page at a time and
    /// keeping none in the parsed-entity cache (an identity that cannot be read is logged and
    /// skipped).
    pub fn each_identity(&self, each: &mut dyn FnMut(&EntityUid, &Identity)) {
        for type_name in self.identity_types() {
            self.each_uid(&type_prefix(type_name), &mut |uid| {
                if let Some(identity) = self.identity_read(uid, Self::peek) {
                    each(uid, &identity);
                }
            });
        }
    }

    /// Calls `each` with every approval the facts hold, a page at a time.
    pub fn each_approval(&self, each: &mut dyn FnMut(&Approval)) {
        self.each_uid(&type_prefix(APPROVAL_TYPE), &mut |uid| {
            if let Some(approval) = self.approval_read(uid.id().unescaped(), Self::peek) {
                each(&approval);
            }
        });
    }

    /// Entities of `uid`'s type whose ids are within two edits of `uid`'s, for a "did you
    /// mean": read in key order from a little before where `uid` would be, a few keys at most,
    /// so it costs the same at any size (and finds a typo near the end of an id, not one at its
    /// start).
    pub fn similar(&self, uid: &EntityUid, max: usize) -> Vec<EntityUid> {
        const READ: usize = 32;
        let id: &str = uid.id().as_ref();
        let prefix = format!("{}::\"", uid.type_name());
        let kept: String = id
            .chars()
            .take(id.chars().count().saturating_sub(3))
            .collect();
        let after = format!("{prefix}{kept}");
        let Ok(near) = self
            .reader
            .uids_after(std::slice::from_ref(&prefix), Some(&after), READ)
        else {
            return Vec::new();
        };
        near.into_iter()
            .filter(|candidate| {
                let other: &str = candidate.id().as_ref();
                other != id && edits_within(id, other, 2)
            })
            .take(max)
            .collect()
    }

    /// Every uid whose key starts with `prefix`, in pages.
    fn each_uid(&self, prefix: &str, each: &mut dyn FnMut(&EntityUid)) {
        const PAGE: usize = 10_000;
        let prefixes = [prefix.to_owned()];
        let mut after: Option<String> = None;
        loop {
            let page = match self.reader.uids_after(&prefixes, after.as_deref(), PAGE) {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, prefix, "cannot read the facts' entities");
                    return;
                }
            };
            for uid in &page {
                each(uid);
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.to_string()),
                _ => return,
            }
        }
    }

    /// Every approval the facts hold.
    pub fn approvals(&self) -> Vec<Arc<Approval>> {
        self.reader
            .uids_after(&[type_prefix(APPROVAL_TYPE)], None, usize::MAX)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|uid| self.approval(uid.id().unescaped()))
            .collect()
    }

    /// The identity whose workload has SPIFFE ID `spiffe_id`.
    pub fn identity_by_spiffe_id(&self, spiffe_id: &str) -> Option<EntityUid> {
        self.reader.identity_by_spiffe_id(spiffe_id).ok().flatten()
    }

    /// How many entities the facts hold (actions aside).
    pub fn entity_count(&self) -> u64 {
        self.reader.count(None).unwrap_or(0)
    }

    /// How many identities the facts hold.
    pub fn identity_count(&self) -> u64 {
        let types: Vec<String> = self
            .shape
            .principal_types
            .iter()
            .filter(|t| *t != APPROVAL_TYPE)
            .cloned()
            .collect();
        self.reader.count(Some(&types)).unwrap_or(0)
    }

    /// How many approvals the facts hold.
    pub fn approval_count(&self) -> u64 {
        self.reader
            .count(Some(&[APPROVAL_TYPE.to_owned()]))
            .unwrap_or(0)
    }

    /// The lineage these facts belong to: one per store opened. Revisions of two facts compare
    /// only if their lineages are equal.
    pub fn lineage(&self) -> u64 {
        self.revisions.lineage
    }

    /// The revision of `uid` in these facts (see `Revisions`): equal in two facts of one lineage
    /// exactly when no change between them touched that entity.
    pub fn revision_of(&self, uid: &EntityUid) -> u64 {
        if self.shape.actions.contains_key(uid) {
            return 0;
        }
        match self.reader.get(uid) {
            Ok(Some(stored)) => stored.revision,
            Ok(None) => self.revisions.last_removal,
            // Unreadable: a revision no read can have had.
            Err(_) => u64::MAX,
        }
    }

    /// The number of the last change the facts' store took.
    pub fn revision(&self) -> u64 {
        self.revisions.current
    }

    /// What a decision over `roots` (and `described`) read, in one walk: every uid `slice`
    /// gathers, the roots the facts do not hold, and the described resource's parents and
    /// references, each with its revision (a decision cached with this list stays true while
    /// every entity on it keeps its revision); and every `datetime` they and the described
    /// resource hold, sorted (the times at which the clock could change the decision).
    pub fn reached<'a>(
        &self,
        roots: impl IntoIterator<Item = &'a EntityUid>,
        described: Option<&Entity>,
    ) -> Result<Reached, FactsError> {
        let mut datetimes = Vec::new();
        let mut described_roots = Vec::new();
        if let Some(entity) = described {
            let found = direct_times_of(entity)?;
            datetimes = found.datetimes;
            described_roots = found.entities;
            described_roots.extend(entity.as_ref().parents().cloned().map(EntityUid::from));
        }
        let skip = described.map(Entity::uid);
        let roots: Vec<EntityUid> = roots.into_iter().cloned().chain(described_roots).collect();
        let mut reads = Vec::new();
        for (uid, stored) in self.reachable(roots, skip.as_ref())? {
            let revision = match stored {
                Some(stored) => {
                    datetimes.extend_from_slice(&stored.datetimes);
                    stored.revision
                }
                None if self.shape.actions.contains_key(&uid) => 0,
                None => self.revisions.last_removal,
            };
            reads.push((uid, revision));
        }
        datetimes.sort_unstable();
        datetimes.dedup();
        Ok(Reached { reads, datetimes })
    }

    /// Whether every entity in `reads` (`Facts::reached` of these facts' lineage, at revision
    /// `read_at`) still has the revision it had: then a decision that read them decides the
    /// same now. While no entity has been removed since `read_at`, one lookup per entity in the
    /// (bounded) list of recent changes tells it.
    pub fn unchanged_since(&self, read_at: u64, reads: &[(EntityUid, u64)]) -> bool {
        if read_at < self.revisions.floor {
            return false;
        }
        if self.revisions.last_removal > read_at {
            return reads
                .iter()
                .all(|(uid, revision)| self.revision_of(uid) == *revision);
        }
        reads.iter().all(|(uid, revision)| {
            self.revisions
                .changed
                .get(uid)
                .is_none_or(|now| now == revision)
        })
    }

    /// Every uid in `roots` and every one reachable from them through entity-valued attributes
    /// and tags, each once, `skip` excepted, with the entity where the facts hold one (actions
    /// aside: they name nothing).
    fn reachable(
        &self,
        roots: Vec<EntityUid>,
        skip: Option<&EntityUid>,
    ) -> Result<Vec<ReachedUid>, FactsError> {
        let mut queue = roots;
        let mut seen: std::collections::HashSet<EntityUid> =
            std::collections::HashSet::with_capacity(queue.len() * 2);
        let mut reached = Vec::with_capacity(queue.len() * 2);
        while let Some(uid) = queue.pop() {
            if skip == Some(&uid) || seen.contains(&uid) {
                continue;
            }
            seen.insert(uid.clone());
            let stored = if self.shape.actions.contains_key(&uid) {
                None
            } else {
                self.reader.get(&uid)?
            };
            if let Some(stored) = &stored {
                queue.extend(stored.references.iter().cloned());
            }
            reached.push((uid, stored));
        }
        Ok(reached)
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
        let roots: Vec<EntityUid> = roots.into_iter().cloned().chain(described_refs).collect();
        let mut picked: Vec<Arc<cedar_policy_core::ast::Entity>> = Vec::new();
        for (uid, stored) in self.reachable(roots, skip.as_ref())? {
            match stored {
                Some(stored) => picked.push(Arc::clone(&stored.entity)),
                None => {
                    if let Some(action) = self.shape.actions.get(&uid) {
                        picked.push(Arc::clone(action));
                    }
                }
            }
        }
        if let Some(entity) = described {
            // Its ancestors: its parents and all of theirs, so that its ancestor set is closed
            // like every other entity's.
            picked.push(self.closed(entity));
        }
        closed_entities(picked).map(Slice)
    }

    /// `entity` with its ancestor set closed over the facts: its parents' ancestors added.
    fn closed(&self, entity: &Entity) -> Arc<cedar_policy_core::ast::Entity> {
        let mut closed = entity.as_ref().clone();
        let parents: Vec<EntityUid> = closed.parents().cloned().map(EntityUid::from).collect();
        for parent in parents {
            if let Some(stored) = self.entity(&parent) {
                for ancestor in stored.entity.ancestors() {
                    closed.add_indirect_ancestor(ancestor.clone());
                }
            }
        }
        Arc::new(closed)
    }

    /// The first entity `entity` refers to (in its attributes or tags), itself aside, that these
    /// facts do not hold, if any.
    pub fn unknown_reference(&self, entity: &Entity) -> Option<EntityUid> {
        let found = direct_times_of(entity).ok()?;
        let own = entity.uid();
        found
            .entities
            .into_iter()
            .find(|uid| uid != &own && !self.contains(uid))
    }

    /// An entity other than `uid` that names it: in an attribute or tag, or as a parent.
    pub fn referrer_of(&self, uid: &EntityUid) -> Option<EntityUid> {
        self.reader.namer_of(uid).ok().flatten()
    }

    /// Whether `descendant` lies in `ancestor` (is it, or has it among its ancestors).
    pub fn lies_in(&self, descendant: &EntityUid, ancestor: &EntityUid) -> bool {
        descendant == ancestor
            || self
                .entity(descendant)
                .is_some_and(|stored| stored.entity.is_descendant_of(ancestor.as_ref()))
    }

    /// The JSON form of `uid` as stored, with where it came from.
    pub fn json(&self, uid: &EntityUid) -> Option<(serde_json::Value, Origin)> {
        self.reader.json(uid).ok().flatten()
    }

    /// Every entity as one Cedar `Entities`: what evaluating over the whole facts reads, for
    /// comparisons with a slice (tests, benchmarks). Reads and copies every entity.
    pub fn to_cedar(&self) -> Result<Entities, FactsError> {
        let mut all: Vec<Arc<cedar_policy_core::ast::Entity>> =
            self.shape.actions.values().cloned().collect();
        self.reader.each_json(&mut |json| {
            let uid = EntityUid::from_json(json["uid"].clone())
                .map_err(|error| FactsError::Invalid(error.to_string()))?;
            if let Some(stored) = self.reader.get(&uid)? {
                all.push(Arc::clone(&stored.entity));
            }
            Ok(())
        })?;
        closed_entities(all).map(Entities::from)
    }
}

/// What a decision read (`Facts::reached`).
#[derive(Debug, Default)]
pub struct Reached {
    /// Every uid it read, with its revision.
    pub reads: Vec<(EntityUid, u64)>,
    /// Every datetime those entities hold, sorted.
    pub datetimes: Vec<UnixMillis>,
}

/// Cedar's entities of `entities`, whose ancestor sets are already closed (every row's is,
/// when it is stored): no transitive closure of Cedar's own, which would cost more than an
/// evaluation.
fn closed_entities(
    entities: Vec<Arc<cedar_policy_core::ast::Entity>>,
) -> Result<cedar_policy_core::entities::Entities, FactsError> {
    cedar_policy_core::entities::Entities::new()
        .add_entities(
            entities,
            None::<&cedar_policy_core::entities::NoEntitiesSchema>,
            cedar_policy_core::entities::TCComputation::AssumeAlreadyComputed,
            cedar_policy_core::extensions::Extensions::all_available(),
        )
        .map_err(|error| FactsError::Invalid(error_chain(&error)))
}

/// A uid a decision reaches, with its entity when the store holds one.
type ReachedUid = (EntityUid, Option<Arc<StoredEntity>>);

/// The start of the keys of every entity of type `type_name` in the store (`Type::"`).
pub fn type_prefix(type_name: &str) -> String {
    format!("{type_name}::\"")
}

/// The uid `entity` names, if its type name is one Cedar can parse.
fn uid_of(entity: &EntityRef) -> Option<EntityUid> {
    let type_name = entity.type_name.parse().ok()?;
    Some(EntityUid::from_type_name_and_id(
        type_name,
        cedar_policy::EntityId::new(&entity.id),
    ))
}

/// The uid of the approval of id `id`.
pub fn approval_uid(id: &str) -> Option<EntityUid> {
    Some(EntityUid::from_type_name_and_id(
        APPROVAL_TYPE.parse().ok()?,
        cedar_policy::EntityId::new(id),
    ))
}

/// Whether an entity's JSON form is an action's (the schema's, not the facts').
pub fn is_action(entity: &serde_json::Value) -> bool {
    entity["uid"]["type"]
        .as_str()
        .is_some_and(|t| t == "Action" || t.ends_with("::Action"))
}

/// An approval as Warrant reads it from its entity (`principal_types`: the schema's).
pub fn approval_of(entity: &Entity, principal_types: &[String]) -> Result<Approval, String> {
    evidence::read_approval(entity, principal_types)
}

/// An identity as Warrant reads it from its entity, without its owner's name and email.
pub fn identity_of(entity: &Entity) -> Result<Identity, String> {
    evidence::read_identity(entity, None)
}

/// Warrant's rules for an identity on its own: its status and expiry read as Warrant reads
/// them (`None` for an entity of another type).
pub fn identity_rules(entity: &Entity, principal_types: &[String]) -> Result<(), FactsError> {
    let type_name = entity.uid().type_name().to_string();
    if type_name == APPROVAL_TYPE || !principal_types.contains(&type_name) {
        return Ok(());
    }
    evidence::read_identity(entity, None)
        .map(drop)
        .map_err(|message| FactsError::BadEntity {
            entity: EntityRef::from_uid(&entity.uid()),
            message,
        })
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

/// `sha256:` of the facts file's bytes: whether it changed, without parsing it.
pub fn entities_file_digest(dir: &Path) -> Result<String, FactsFileError> {
    let path = dir.join(ENTITIES_FILE);
    let mut file = std::fs::File::open(&path).map_err(FactsFileError::io(&path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(FactsFileError::io(&path))?;
    Ok(format!("sha256:{:x}", hasher.finalize()))
}

/// Reads the Cedar entities file at `path` one entity at a time (its bytes are read whole,
/// but never parsed whole into memory), handing each to `each`; returns the `sha256:` of the
/// bytes read.
pub fn each_file_entity(
    path: &Path,
    mut each: impl FnMut(serde_json::Value) -> Result<(), String>,
) -> Result<String, FactsFileError> {
    use serde::de::{Deserializer as _, SeqAccess, Visitor};

    struct Each<'f, F>(&'f mut F);
    impl<'de, F: FnMut(serde_json::Value) -> Result<(), String>> Visitor<'de> for Each<'_, F> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array of entities")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut index = 0usize;
            while let Some(entity) = seq.next_element::<serde_json::Value>()? {
                (self.0)(entity).map_err(|message| {
                    serde::de::Error::custom(format!("entity {index}: {message}"))
                })?;
                index += 1;
            }
            Ok(())
        }
    }
    let bytes = std::fs::read(path).map_err(FactsFileError::io(path))?;
    let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    deserializer
        .deserialize_seq(Each(&mut each))
        .and_then(|()| deserializer.end())
        .map_err(|error| FactsFileError::invalid(path, error))?;
    Ok(digest)
}

/// The facts file's entities by uid, each as its JSON text: for building facts in memory with
/// changes (authoring tools, tests).
pub type FileEntities = BTreeMap<String, Box<serde_json::value::RawValue>>;

/// Reads `dir/entities.json` into `FileEntities`, refusing a uid given twice, with the
/// `entities_file_digest` of the bytes it read.
pub fn load_entities_file(dir: &Path) -> Result<(FileEntities, String), FactsFileError> {
    /// Just the uid of an entity's text.
    #[derive(serde::Deserialize)]
    struct Uid {
        uid: serde_json::Value,
    }
    let path = dir.join(ENTITIES_FILE);
    let text = std::fs::read_to_string(&path).map_err(FactsFileError::io(&path))?;
    let entities: Vec<Box<serde_json::value::RawValue>> =
        serde_json::from_str(&text).map_err(|error| {
            FactsFileError::invalid(&path, format!("not a JSON array of entities: {error}"))
        })?;
    let digest = format!("sha256:{:x}", Sha256::digest(text.as_bytes()));
    drop(text);
    let mut base = BTreeMap::new();
    for (i, entity) in entities.into_iter().enumerate() {
        let uid = serde_json::from_str::<Uid>(entity.get())
            .map_err(|error| error.to_string())
            .and_then(|found| EntityUid::from_json(found.uid).map_err(|e| e.to_string()))
            .map_err(|error| {
                FactsFileError::invalid(&path, format!("entity {i}: bad `uid`: {error}"))
            })?;
        let key = uid.to_string();
        if base.insert(key.clone(), entity).is_some() {
            return Err(FactsFileError::invalid(
                &path,
                format!("{key} is given twice"),
            ));
        }
    }
    Ok((base, digest))
}

/// A facts file that could not be read, or holds something other than entities.
#[derive(Debug, thiserror::Error)]
pub enum FactsFileError {
    #[error("cannot read {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl FactsFileError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |error| FactsFileError::Io {
            path: path.to_path_buf(),
            error,
        }
    }

    fn invalid(path: &Path, message: impl std::fmt::Display) -> Self {
        FactsFileError::Invalid {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}

/// Whether `a` becomes `b` in at most `limit` insertions, deletions or substitutions of a
/// character (Levenshtein), for short texts such as ids.
fn edits_within(a: &str, b: &str, limit: usize) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > limit {
        return false;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(x != y);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()] <= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_are_counted_as_levenshtein_does() {
        assert!(edits_within("deploy-bot", "deploy-bott", 1));
        assert!(edits_within("deploy-bot", "depoly-bot", 2));
        assert!(!edits_within("deploy-bot", "depoly-bot", 1));
        assert!(!edits_within("a", "abcd", 2));
        assert!(edits_within("", "ab", 2));
    }

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
}
