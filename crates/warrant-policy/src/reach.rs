//! Where a search need look: with one side of a request fixed (the principal, or the
//! resource) and the action, the entities on the other side that any permit could allow. Cedar
//! allows only when a permit is satisfied, and a permit is satisfied only where its scope
//! matches, so the entities a permit's scope names on the searched side (`==` one, `in` one and
//! all below it) hold every entity that can be allowed: a superset, which the search then decides
//! one by one. A permit that constrains the searched side by type alone, or not at all, can allow
//! anywhere, and so can a template whose links cannot be told from the fixed side.

use cedar_policy::{Effect, Entities, EntityUid};

use crate::PolicySnapshot;
use crate::index::{Placement, SideOfRequest};
use crate::links::{TemplateScope, TemplateSide};

/// Which side of the request a search fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchedSide {
    Principal,
    Resource,
}

/// Where the entities a permit could allow lie on the searched side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Anywhere: some permit that can match constrains the searched side by type or not at all.
    Anywhere,
    /// Only at or below these entities (what the permits' `==` and `in` constraints name).
    Under(Vec<EntityUid>),
}

impl PolicySnapshot {
    /// Where the entities on the `searched` side lie that a permit could allow, with `fixed` on
    /// the other side and `action`, their ancestors read from `entities`.
    pub fn reach(
        &self,
        searched: SearchedSide,
        fixed: &EntityUid,
        action: &EntityUid,
        entities: &Entities,
    ) -> Reach {
        let (fixed_at, searched_at) = match searched {
            SearchedSide::Principal => (2, 0),
            SearchedSide::Resource => (0, 2),
        };
        let fixed_side = SideOfRequest::new(fixed, entities);
        let action_side = SideOfRequest::new(action, entities);
        let fixed_of = |scope| sides(scope, searched).0;
        let searched_of = |scope| sides(scope, searched).1;
        let mut under: Vec<EntityUid> = Vec::new();
        for (policy, placed) in &self.files.index.policies {
            if policy.effect() == Effect::Permit
                && fixed_side.admits(&placed[fixed_at])
                && action_side.admits(&placed[1])
                && !add(&mut under, &placed[searched_at])
            {
                return Reach::Anywhere;
            }
        }
        for scope in self.files.templates.values() {
            if scope.template.effect() != Effect::Permit || !action_side.admits(&scope.action) {
                continue;
            }
            match (fixed_of(scope), searched_of(scope)) {
                // Its links are found from the fixed side (`Links::anchored_at`), below.
                (TemplateSide::Slot, _) => {}
                (TemplateSide::Fixed(placement), _) if !fixed_side.admits(placement) => {}
                // Its searched side is fixed: the template says where.
                (TemplateSide::Fixed(_), TemplateSide::Fixed(placement)) => {
                    if !add(&mut under, placement) {
                        return Reach::Anywhere;
                    }
                }
                // Its links name the searched side, and nothing finds them from the fixed one.
                (TemplateSide::Fixed(_), TemplateSide::Slot) => return Reach::Anywhere,
            }
        }
        for link in self.links.anchored_at(fixed_side.keys()) {
            let Some(scope) = self.files.templates.get(link.template()) else {
                continue;
            };
            let (fixed_value, searched_value) = match searched {
                SearchedSide::Principal => (&link.resource, &link.principal),
                SearchedSide::Resource => (&link.principal, &link.resource),
            };
            if scope.template.effect() != Effect::Permit
                || !fixed_of(scope).admits(fixed_value.as_ref(), &fixed_side)
                || !action_side.admits(&scope.action)
            {
                continue;
            }
            match (searched_of(scope), searched_value) {
                (TemplateSide::Slot, Some(uid)) => under.push(uid.clone()),
                (TemplateSide::Slot, None) => {}
                (TemplateSide::Fixed(placement), _) => {
                    if !add(&mut under, placement) {
                        return Reach::Anywhere;
                    }
                }
            }
        }
        under.sort();
        under.dedup();
        Reach::Under(under)
    }

    /// The actions a permit can allow `principal` on `resource` (each named by an `==` or `in`
    /// constraint: an action in a group named is allowed too), their ancestors read from
    /// `entities`; `None` when some permit that can match constrains the action not at all.
    pub fn reach_actions(
        &self,
        principal: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> Option<Vec<EntityUid>> {
        let principal_side = SideOfRequest::new(principal, entities);
        let resource_side = SideOfRequest::new(resource, entities);
        let mut named = Vec::new();
        for (policy, placed) in &self.files.index.policies {
            if policy.effect() == Effect::Permit
                && principal_side.admits(&placed[0])
                && resource_side.admits(&placed[2])
                && !add(&mut named, &placed[1])
            {
                return None;
            }
        }
        // Templates without slots have no links; every link is found from a slot value.
        for link in self
            .links
            .anchored_at(principal_side.keys().chain(resource_side.keys()))
        {
            let Some(scope) = self.files.templates.get(link.template()) else {
                continue;
            };
            if scope.template.effect() == Effect::Permit
                && scope
                    .principal
                    .admits(link.principal.as_ref(), &principal_side)
                && scope
                    .resource
                    .admits(link.resource.as_ref(), &resource_side)
                && !add(&mut named, &scope.action)
            {
                return None;
            }
        }
        named.sort();
        named.dedup();
        Some(named)
    }
}

/// A template's (fixed, searched) sides.
fn sides(scope: &TemplateScope, searched: SearchedSide) -> (&TemplateSide, &TemplateSide) {
    match searched {
        SearchedSide::Principal => (&scope.resource, &scope.principal),
        SearchedSide::Resource => (&scope.principal, &scope.resource),
    }
}

/// Adds the entities a placement names to `under`; `false` for one that names none (by type, or
/// no constraint: anywhere).
fn add(under: &mut Vec<EntityUid>, placement: &Placement) -> bool {
    match placement {
        Placement::Entities(uids) => {
            under.extend(uids.iter().cloned());
            true
        }
        Placement::Any | Placement::Type(_) => false,
    }
}
