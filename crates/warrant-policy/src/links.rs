//! Template links: grants made from Cedar templates (`?principal`, `?resource`), one link per
//! grant. The policy folder's `links.json` holds some; the admin API adds and removes the others
//! (`LiveStore` keeps them). They are held in persistent maps, so a link or an unlink copies the
//! path to what it changes and never the whole set, and indexed by the entity in their first slot,
//! so a request lists only the links that name its principal or resource or one of their
//! ancestors. What a link change can alter is recorded by entity (`changed_since`), for the cache.

use std::sync::Arc;

use cedar_policy::{EntityUid, SlotId, Template, TemplatePrincipalConstraint};
use cedar_policy::{PolicyId, TemplateResourceConstraint};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::index::{Placement, SideOfRequest, action_placement};
use warrant_domain::EntityRef;

/// The file in the policy folder that holds links, a JSON array of `LinkSpec`.
pub const LINKS_FILE: &str = "links.json";

/// A link as written: its id, its template's `@id`, and the entity for each slot the template
/// has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub id: String,
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<EntityRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<EntityRef>,
}

/// Where a link comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOrigin {
    /// The policy folder's `links.json`.
    File,
    /// The admin API (durable in the live store).
    Live,
}

/// A link checked against its template and the schema. (Held compactly: its id is shared with
/// the indexes, its template's id with every link of the template.)
#[derive(Debug, Clone)]
pub struct Link {
    pub(super) id: Arc<str>,
    pub(super) template: Arc<str>,
    pub(super) principal: Option<EntityUid>,
    pub(super) resource: Option<EntityUid>,
    pub origin: LinkOrigin,
}

impl Link {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The template's `@id`.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The link as written.
    pub fn spec(&self) -> LinkSpec {
        LinkSpec {
            id: self.id.to_string(),
            template: self.template.to_string(),
            principal: self.principal.as_ref().map(EntityRef::from_uid),
            resource: self.resource.as_ref().map(EntityRef::from_uid),
        }
    }

    /// The entity the link is indexed under: its principal, or its resource when its template
    /// has no `?principal`.
    fn anchor(&self) -> Option<&EntityUid> {
        self.principal.as_ref().or(self.resource.as_ref())
    }

    /// Cedar's slot values for linking.
    pub fn slot_values(&self) -> std::collections::HashMap<SlotId, EntityUid> {
        let mut values = std::collections::HashMap::new();
        if let Some(principal) = &self.principal {
            values.insert(SlotId::principal(), principal.clone());
        }
        if let Some(resource) = &self.resource {
            values.insert(SlotId::resource(), resource.clone());
        }
        values
    }

    /// The digest that stands for this link in `Links::live_digest`.
    fn digest(&self) -> u128 {
        let canonical = serde_json::to_vec(&self.spec()).unwrap_or_default();
        let hash = Sha256::digest(&canonical);
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash[..16]);
        u128::from_le_bytes(first)
    }
}

/// One side of a template's scope: a placement like a static policy's, or a slot.
#[derive(Debug, Clone)]
pub(super) enum TemplateSide {
    Fixed(Placement),
    Slot,
}

impl TemplateSide {
    /// Whether this side of a link whose slot here holds `value` (if it is a slot) can match
    /// `side` of a request.
    pub(super) fn admits(&self, value: Option<&EntityUid>, side: &SideOfRequest<'_>) -> bool {
        match (self, value) {
            (TemplateSide::Fixed(placement), _) => side.admits(placement),
            (TemplateSide::Slot, Some(uid)) => side.admits_entity(uid),
            (TemplateSide::Slot, None) => false,
        }
    }
}

/// A template and where its links stand: its scope with the slots still open.
pub(super) struct TemplateScope {
    pub(super) template: Template,
    /// The template's `@id`, shared by its links.
    pub(super) name: Arc<str>,
    pub(super) principal: TemplateSide,
    pub(super) action: Placement,
    pub(super) resource: TemplateSide,
}

impl TemplateScope {
    pub(super) fn of(template: &Template) -> Self {
        let principal = match template.principal_constraint() {
            TemplatePrincipalConstraint::Any => TemplateSide::Fixed(Placement::Any),
            TemplatePrincipalConstraint::Eq(Some(uid))
            | TemplatePrincipalConstraint::In(Some(uid))
            | TemplatePrincipalConstraint::IsIn(_, Some(uid)) => {
                TemplateSide::Fixed(Placement::Entities(vec![uid]))
            }
            TemplatePrincipalConstraint::Is(name) => {
                TemplateSide::Fixed(Placement::Type(name.to_string()))
            }
            TemplatePrincipalConstraint::Eq(None)
            | TemplatePrincipalConstraint::In(None)
            | TemplatePrincipalConstraint::IsIn(_, None) => TemplateSide::Slot,
        };
        let resource = match template.resource_constraint() {
            TemplateResourceConstraint::Any => TemplateSide::Fixed(Placement::Any),
            TemplateResourceConstraint::Eq(Some(uid))
            | TemplateResourceConstraint::In(Some(uid))
            | TemplateResourceConstraint::IsIn(_, Some(uid)) => {
                TemplateSide::Fixed(Placement::Entities(vec![uid]))
            }
            TemplateResourceConstraint::Is(name) => {
                TemplateSide::Fixed(Placement::Type(name.to_string()))
            }
            TemplateResourceConstraint::Eq(None)
            | TemplateResourceConstraint::In(None)
            | TemplateResourceConstraint::IsIn(_, None) => TemplateSide::Slot,
        };
        TemplateScope {
            template: template.clone(),
            name: Arc::from(template.id().as_ref()),
            principal,
            action: action_placement(template.action_constraint()),
            resource,
        }
    }

    pub(super) fn has_principal_slot(&self) -> bool {
        matches!(self.principal, TemplateSide::Slot)
    }

    pub(super) fn has_resource_slot(&self) -> bool {
        matches!(self.resource, TemplateSide::Slot)
    }

    /// Whether `link` of this template can match a request with these sides.
    pub(super) fn admits(&self, link: &Link, request: &[SideOfRequest<'_>; 3]) -> bool {
        self.principal.admits(link.principal.as_ref(), &request[0])
            && request[1].admits(&self.action)
            && self.resource.admits(link.resource.as_ref(), &request[2])
    }

    pub(super) fn id(&self) -> PolicyId {
        self.template.id().clone()
    }
}

/// Every link in force, indexed. Cloning is cheap (persistent maps); a change makes a new value
/// that shares all it did not change.
#[derive(Clone)]
pub struct Links {
    by_id: imbl::OrdMap<Arc<str>, Arc<Link>>,
    /// Links by their anchor (`Link::anchor`). Most anchors have one link or a few: a slice,
    /// copied on change, weighs a fraction of a tree node.
    by_anchor: imbl::HashMap<EntityUid, Arc<[Arc<str>]>>,
    /// Links with both slots, by their resource (their anchor is their principal): so that the
    /// links on a resource can be found from it (`anchored_at`).
    by_resource: imbl::HashMap<EntityUid, Arc<[Arc<str>]>>,
    /// Links built from nothing start a lineage; changes stay in it. Revisions compare only
    /// within one lineage.
    lineage: u64,
    /// Counts the changes in this lineage.
    revision: u64,
    /// For each anchor, the revision at which a link under it last changed.
    changed: imbl::HashMap<EntityUid, u64>,
    /// How many links came through the admin API, and the sum of their digests: it names the
    /// set of live links whatever order they came in.
    live_count: usize,
    live_digest: u128,
}

impl Default for Links {
    fn default() -> Self {
        static LINEAGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Links {
            by_id: imbl::OrdMap::new(),
            by_anchor: imbl::HashMap::new(),
            by_resource: imbl::HashMap::new(),
            lineage: LINEAGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            revision: 0,
            changed: imbl::HashMap::new(),
            live_count: 0,
            live_digest: 0,
        }
    }
}

impl Links {
    /// The links, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Link>> {
        self.by_id.values()
    }

    /// The links from `after` (exclusive), in id order.
    pub fn iter_after<'a>(&'a self, after: &str) -> impl Iterator<Item = &'a Arc<Link>> + 'a {
        let start: Arc<str> = Arc::from(after);
        self.by_id
            .range(start.clone()..)
            .filter(move |(id, _)| **id != start)
            .map(|(_, link)| link)
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Link>> {
        self.by_id.get(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The links naming `uid` in a slot.
    pub fn naming(&self, uid: &EntityUid) -> impl Iterator<Item = &Arc<Link>> {
        let anchored = self
            .by_anchor
            .get(uid)
            .into_iter()
            .flat_map(|ids| ids.iter());
        let as_anchor = anchored.filter_map(|id| self.by_id.get(id));
        // A link is anchored by its principal; one naming `uid` as its resource is found by a
        // scan (only when an entity is retired, never on the decision path).
        let as_resource = self
            .by_id
            .values()
            .filter(move |link| link.principal.is_some() && link.resource.as_ref() == Some(uid));
        as_anchor.chain(as_resource)
    }

    /// This set with one more link (checked by the caller; its id is free).
    pub(super) fn with(&self, link: Link) -> Links {
        let mut next = self.clone();
        next.insert(link);
        next
    }

    /// This set without the link `id`, and that link; `None` if there is none by that id.
    pub(super) fn without(&self, id: &str) -> Option<(Links, Arc<Link>)> {
        let mut next = self.clone();
        let link = next.remove(id)?;
        Some((next, link))
    }

    /// Adds a link in place (checked by the caller; its id is free).
    pub(super) fn insert(&mut self, link: Link) {
        self.revision += 1;
        let id = Arc::clone(&link.id);
        if let Some(anchor) = link.anchor() {
            file(&mut self.by_anchor, anchor, &id);
            self.changed.insert(anchor.clone(), self.revision);
        }
        if let (Some(_), Some(resource)) = (&link.principal, &link.resource) {
            file(&mut self.by_resource, resource, &id);
        }
        if link.origin == LinkOrigin::Live {
            self.live_count += 1;
            self.live_digest = self.live_digest.wrapping_add(link.digest());
        }
        self.by_id.insert(id, Arc::new(link));
    }

    /// Removes a link in place; `None` if there is none by that id.
    fn remove(&mut self, id: &str) -> Option<Arc<Link>> {
        let link = self.by_id.remove(id)?;
        self.revision += 1;
        if let Some(anchor) = link.anchor() {
            unfile(&mut self.by_anchor, anchor, id);
            self.changed.insert(anchor.clone(), self.revision);
        }
        if let (Some(_), Some(resource)) = (&link.principal, &link.resource) {
            unfile(&mut self.by_resource, resource, id);
        }
        if link.origin == LinkOrigin::Live {
            self.live_count -= 1;
            self.live_digest = self.live_digest.wrapping_sub(link.digest());
        }
        Some(link)
    }

    /// The same links in a lineage of their own, with no changes recorded: for links just
    /// loaded, which no decision has read yet.
    pub(super) fn settled(self) -> Links {
        Links {
            lineage: Links::default().lineage,
            revision: 0,
            changed: imbl::HashMap::new(),
            ..self
        }
    }

    /// The links anchored at an entity of this request (`SideOfRequest::keys` of its principal
    /// and resource): a superset of those that can match it.
    pub(super) fn candidates<'a>(
        &'a self,
        request: &'a [SideOfRequest<'_>; 3],
    ) -> impl Iterator<Item = &'a Arc<Link>> + 'a {
        request[0]
            .keys()
            .chain(request[2].keys())
            .filter_map(|key| self.by_anchor.get(key))
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.by_id.get(id))
    }

    /// The links that name one of `keys` in a slot that finds them: as their anchor, or as the
    /// resource of a link with both slots. Each at most once.
    pub(super) fn anchored_at<'a>(
        &'a self,
        keys: impl Iterator<Item = &'a EntityUid>,
    ) -> Vec<&'a Arc<Link>> {
        let mut found: Vec<&Arc<Link>> = keys
            .flat_map(|key| [self.by_anchor.get(key), self.by_resource.get(key)])
            .flatten()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.by_id.get(id))
            .collect();
        found.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        found.dedup_by(|a, b| a.id == b.id);
        found
    }

    /// The lineage these links belong to (see `revision`).
    pub fn lineage(&self) -> u64 {
        self.lineage
    }

    /// The number of changes since the lineage began.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Whether no link anchored at any of `uids` changed after revision `read_at` of this
    /// lineage. A link can match a request only if its anchor is the request's principal or
    /// resource or one of their ancestors, all of which a decision's reads hold.
    pub fn unchanged_since<'a>(
        &self,
        read_at: u64,
        uids: impl IntoIterator<Item = &'a EntityUid>,
    ) -> bool {
        read_at == self.revision
            || uids
                .into_iter()
                .all(|uid| self.changed.get(uid).is_none_or(|at| *at <= read_at))
    }

    /// How many links came through the admin API, and the digest that names them.
    pub fn live(&self) -> (usize, u128) {
        (self.live_count, self.live_digest)
    }
}

/// Adds `id` under `key`.
fn file(map: &mut imbl::HashMap<EntityUid, Arc<[Arc<str>]>>, key: &EntityUid, id: &Arc<str>) {
    let under: Arc<[Arc<str>]> = match map.get(key) {
        Some(ids) => ids.iter().cloned().chain([Arc::clone(id)]).collect(),
        None => Arc::from([Arc::clone(id)]),
    };
    map.insert(key.clone(), under);
}

/// Removes `id` from under `key`.
fn unfile(map: &mut imbl::HashMap<EntityUid, Arc<[Arc<str>]>>, key: &EntityUid, id: &str) {
    let rest: Arc<[Arc<str>]> = map
        .get(key)
        .map(|ids| {
            ids.iter()
                .filter(|other| ***other != *id)
                .cloned()
                .collect()
        })
        .unwrap_or_else(|| Arc::from([]));
    match rest.is_empty() {
        true => map.remove(key),
        false => map.insert(key.clone(), rest),
    };
}
