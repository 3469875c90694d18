//! Every entity of the facts by uid, each holding its closed ancestor set (its parents and all
//! of theirs), with the index of each entity's children, in persistent maps: a copy shares
//! everything but what a change replaces, so a change costs a path, not the whole map (Cedar's
//! `Entities` is copied whole, and its upsert repairs the closure over every entity). A
//! decision's slice takes the entities it needs by reference count, not by copy.

use std::sync::Arc;

use cedar_policy::{Entity, EntityUid};
use cedar_policy_core::ast;
use ref_cast::RefCast as _;

use super::Map;

#[derive(Clone, Default)]
pub struct EntityMap {
    entities: Map<EntityUid, Arc<ast::Entity>>,
    /// Each entity's children (the entities that name it as a parent), for what a change or a
    /// removal below it must know without reading every entity.
    children: Map<EntityUid, imbl::OrdSet<EntityUid>>,
}

impl EntityMap {
    /// From Cedar's entities, whose ancestor sets Cedar has closed, without copying any entity.
    pub fn from_cedar(entities: cedar_policy::Entities) -> Self {
        // A copy of Cedar's map shares its entities; once the original is gone each is held
        // once, and taking it out of its `Arc` moves it.
        let core: cedar_policy_core::entities::Entities = entities.as_ref().clone();
        drop(entities);
        let mut map = EntityMap::default();
        for entity in core {
            map.insert(Arc::new(entity));
        }
        map
    }

    /// Adds `entity` (its ancestor set already closed), or replaces the entity of its uid
    /// (which must have had the same parents: its children's ancestor sets are not revisited).
    pub fn insert(&mut self, entity: Arc<ast::Entity>) {
        let uid = EntityUid::from(entity.uid().clone());
        for parent in entity.parents() {
            self.children
                .entry(EntityUid::from(parent.clone()))
                .or_default()
                .insert(uid.clone());
        }
        self.entities.insert(uid, entity);
    }

    /// `entity` with its ancestor set closed over the entities here: its parents' ancestors
    /// added to its own.
    pub fn closed(&self, entity: &Entity) -> Arc<ast::Entity> {
        let mut closed = entity.as_ref().clone();
        let parents: Vec<ast::EntityUID> = closed.parents().cloned().collect();
        for parent in parents {
            if let Some(known) = self.entities.get(EntityUid::ref_cast(&parent)) {
                for ancestor in known.ancestors() {
                    closed.add_indirect_ancestor(ancestor.clone());
                }
            }
        }
        Arc::new(closed)
    }

    pub fn get(&self, uid: &EntityUid) -> Option<&Entity> {
        self.entities
            .get(uid)
            .map(|entity| Entity::ref_cast(entity.as_ref()))
    }

    /// The entity as shared, for a slice.
    pub fn shared(&self, uid: &EntityUid) -> Option<&Arc<ast::Entity>> {
        self.entities.get(uid)
    }

    pub fn contains(&self, uid: &EntityUid) -> bool {
        self.entities.contains_key(uid)
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entity> {
        self.entities
            .values()
            .map(|entity| Entity::ref_cast(entity.as_ref()))
    }

    /// Every ancestor of `uid` (parents and theirs); `None` for an entity not here.
    pub fn ancestors(&self, uid: &EntityUid) -> Option<impl Iterator<Item = &EntityUid>> {
        self.entities
            .get(uid)
            .map(|entity| entity.ancestors().map(EntityUid::ref_cast))
    }

    /// All of them as one Cedar `Entities`: what evaluating over the whole facts reads, for
    /// comparisons with a slice (tests, benchmarks). Costs a copy of every entity.
    pub fn to_cedar(&self) -> cedar_policy::Entities {
        cedar_policy_core::entities::Entities::new()
            .add_entities(
                self.entities.values().cloned().collect::<Vec<_>>(),
                None::<&cedar_policy_core::entities::NoEntitiesSchema>,
                cedar_policy_core::entities::TCComputation::AssumeAlreadyComputed,
                cedar_policy_core::extensions::Extensions::all_available(),
            )
            .map(cedar_policy::Entities::from)
            .unwrap_or_default()
    }

    /// The entities that name `uid` as a parent.
    pub fn children(&self, uid: &EntityUid) -> impl Iterator<Item = &EntityUid> {
        self.children.get(uid).into_iter().flatten()
    }
}
