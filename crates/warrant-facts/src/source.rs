//! The port the facts are read through: a store (`FactsSource`) gives consistent reads
//! (`FactsRead`) at one revision each and takes changes whole. `warrant-store` implements it on
//! redb; nothing here knows how rows are kept.

use std::sync::Arc;

use cedar_policy::{Entity, EntityUid, Schema};
use cedar_policy_core::ast;
use warrant_domain::EntityRef;
use warrant_domain::clock::UnixMillis;

use crate::FactsError;

/// Where an entity's current form comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The policy folder's `entities.json`, unchanged.
    File,
    /// Changed or created through the admin API or an import.
    Live,
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

    /// Roughly the bytes it holds in memory, for the cache's bound.
    pub fn weight(&self) -> u32 {
        let parts = self.references.len() + self.ancestors.len();
        u32::try_from(1024 + 256 * parts).unwrap_or(u32::MAX)
    }
}

/// What a committed change touched.
#[derive(Debug, Clone)]
pub struct Committed {
    pub revision: u64,
    pub touched: Vec<EntityUid>,
}

/// A store of facts: entities by uid, each with its closed ancestor set and its revision.
pub trait FactsSource: Send + Sync {
    /// Unique to this store in this process: revisions of facts read from it compare.
    fn lineage(&self) -> u64;

    /// The parsed-entity cache's entries and estimated bytes, for metrics.
    fn cache_usage(&self) -> (u64, u64);

    /// A read of the store as last committed.
    fn read(&self) -> Result<Box<dyn FactsRead>, FactsError>;

    /// One change, whole: `changes` (entities in Cedar's JSON form) in place of the entities of
    /// the same uid or added, `removals` removed, validated against `schema` and Warrant's rules
    /// for identities and approvals, and committed durably; or nothing at all.
    fn apply(
        &self,
        schema: &Schema,
        changes: &[serde_json::Value],
        removals: &[EntityUid],
    ) -> Result<Committed, FactsError>;
}

/// One consistent read of a store: every answer is as of `revision`.
pub trait FactsRead: Send + Sync {
    /// The number of the last change the store had taken.
    fn revision(&self) -> u64;

    /// The number of the last change that removed an entity.
    fn last_removal(&self) -> u64;

    /// `sha256:` chained over every change the store has taken.
    fn version(&self) -> &Arc<str>;

    /// `sha256:` of the facts file the store holds, if it holds one.
    fn file_digest(&self) -> Option<&str>;

    /// The version of the schema every entity was last checked against.
    fn schema_version(&self) -> Option<&str>;

    /// The entity of `uid`, parsed.
    fn get(&self, uid: &EntityUid) -> Result<Option<Arc<StoredEntity>>, FactsError>;

    /// The entity of `uid`, parsed, without keeping it in any cache (for a scan of them all,
    /// which must not push out what decisions read).
    fn peek(&self, uid: &EntityUid) -> Result<Option<Arc<StoredEntity>>, FactsError> {
        self.get(uid)
    }

    fn contains(&self, uid: &EntityUid) -> Result<bool, FactsError>;

    /// The JSON form of `uid` and its origin.
    fn json(&self, uid: &EntityUid) -> Result<Option<(serde_json::Value, Origin)>, FactsError>;

    /// Every entity's JSON form, by uid.
    fn each_json(
        &self,
        each: &mut dyn FnMut(serde_json::Value) -> Result<(), FactsError>,
    ) -> Result<(), FactsError>;

    /// The uids of entities whose keys start with one of `prefixes` (`Type::"`), in key order,
    /// after the key `after` (from the first, for `None`), at most `limit`.
    fn uids_after(
        &self,
        prefixes: &[String],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EntityUid>, FactsError>;

    /// The keys (`Type::"id"`) of the entities that name the entity of key `key` as a parent,
    /// at most `limit`. (Keys, not uids: a walk down a hierarchy parses none.)
    fn children_of(&self, key: &str, limit: usize) -> Result<Vec<String>, FactsError>;

    /// An entity other than `uid` that names it as a parent or in an attribute or tag.
    fn namer_of(&self, uid: &EntityUid) -> Result<Option<EntityUid>, FactsError>;

    /// The identity whose `spiffe_id` attribute is `spiffe_id`.
    fn identity_by_spiffe_id(&self, spiffe_id: &str) -> Result<Option<EntityUid>, FactsError>;

    /// How many entities of each of `types` the store holds; all of them for `None`.
    fn count(&self, types: Option<&[String]>) -> Result<u64, FactsError>;
}
