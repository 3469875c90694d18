//! The policy index: for a request, the policies whose scope can match it, so that Cedar
//! evaluates those instead of the whole set. Each policy is placed by its principal, action and
//! resource constraints (`==` and `in` under the entity they name, `is` under the type, no
//! constraint under "any"); a request's candidates on each side are the policies under its
//! entity, each of its ancestors, its type, and "any"; the policies evaluated are those that
//! are candidates on all three sides. Conditions are left to Cedar.
//!
//! Why leaving a policy out changes nothing: Cedar evaluates a policy's scope before its
//! conditions and stops at the first false, and a scope cannot error, so a policy whose scope
//! does not match neither applies nor errors. The index only ever leaves out such policies: it
//! may keep some whose scope does not match (an `==` under an ancestor's key, an `is in` whose
//! type differs), and Cedar then finds them not to apply, as over the whole set.

use std::borrow::Cow;
use std::collections::HashMap;

use cedar_policy::{
    ActionConstraint, Entities, EntityUid, Policy, PolicySet, PrincipalConstraint,
    ResourceConstraint,
};

/// Where policies stand on one side of the scope (principal, action or resource).
#[derive(Debug, Default)]
struct Side {
    /// Policies with no constraint on this side, by position in the set.
    any: Vec<usize>,
    /// Policies under the entity their constraint names (`==`, `in`, `is .. in`).
    by_entity: HashMap<EntityUid, Vec<usize>>,
    /// Policies under the type of an `is` constraint.
    by_type: HashMap<String, Vec<usize>>,
}

impl Side {
    fn place(&mut self, at: usize, placement: &Placement) {
        match placement {
            Placement::Any => self.any.push(at),
            Placement::Entities(uids) => {
                for uid in uids {
                    let list = self.by_entity.entry(uid.clone()).or_default();
                    if list.last() != Some(&at) {
                        list.push(at);
                    }
                }
            }
            Placement::Type(name) => self.by_type.entry(name.clone()).or_default().push(at),
        }
    }

    /// How many policies `candidates` would list, counting repeats: the cost of listing them.
    fn count(&self, request: &SideOfRequest<'_>) -> usize {
        let listed = |list: Option<&Vec<usize>>| list.map_or(0, Vec::len);
        self.any.len()
            + listed(self.by_type.get(&request.type_name))
            + request
                .keys()
                .map(|key| listed(self.by_entity.get(key)))
                .sum::<usize>()
    }

    /// The policies that can match this side of the request, sorted.
    fn candidates(&self, request: &SideOfRequest<'_>) -> Vec<usize> {
        let mut found: Vec<usize> = self.any.clone();
        if let Some(list) = self.by_type.get(&request.type_name) {
            found.extend_from_slice(list);
        }
        for key in request.keys() {
            if let Some(list) = self.by_entity.get(key) {
                found.extend_from_slice(list);
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }
}

/// One side of a request: the entity, its ancestors and its type.
pub(super) struct SideOfRequest<'a> {
    uid: &'a EntityUid,
    ancestors: Vec<&'a EntityUid>,
    type_name: String,
}

impl<'a> SideOfRequest<'a> {
    pub(super) fn new(uid: &'a EntityUid, entities: &'a Entities) -> Self {
        SideOfRequest {
            uid,
            ancestors: entities.ancestors(uid).into_iter().flatten().collect(),
            type_name: uid.type_name().to_string(),
        }
    }

    /// The entities a constraint may name and still match: the entity and its ancestors.
    pub(super) fn keys(&self) -> impl Iterator<Item = &'a EntityUid> + '_ {
        std::iter::once(self.uid).chain(self.ancestors.iter().copied())
    }

    /// Whether a policy placed so can match this side.
    pub(super) fn admits(&self, placement: &Placement) -> bool {
        match placement {
            Placement::Any => true,
            Placement::Entities(uids) => uids.iter().any(|uid| self.admits_entity(uid)),
            Placement::Type(name) => *name == self.type_name,
        }
    }

    /// Whether a constraint naming `uid` (`==` or `in`) can match this side.
    pub(super) fn admits_entity(&self, uid: &EntityUid) -> bool {
        uid == self.uid || self.ancestors.contains(&uid)
    }
}

/// Where a policy stands on one side of the scope.
#[derive(Debug, Clone)]
pub(super) enum Placement {
    Any,
    Entities(Vec<EntityUid>),
    Type(String),
}

/// The policy set, indexed by scope. Built once with the policy snapshot; immutable.
pub struct PolicyIndex {
    /// The policies in the set's order (positions are what the sides hold), with where each
    /// stands on the principal, action and resource sides.
    pub(super) policies: Vec<(Policy, [Placement; 3])>,
    principal: Side,
    action: Side,
    resource: Side,
}

/// How many of the whole set a selection may hold before evaluating the whole set is cheaper
/// than assembling the selection (a `PolicySet` costs about a microsecond per policy to build;
/// a policy whose scope does not match costs Cedar a fraction of that). Measured in
/// BENCHMARKS.md.
const WHOLE_SET_FRACTION: usize = 2;

impl PolicyIndex {
    pub fn new(set: &PolicySet) -> Self {
        let mut index = PolicyIndex {
            policies: Vec::new(),
            principal: Side::default(),
            action: Side::default(),
            resource: Side::default(),
        };
        for (at, policy) in set.policies().enumerate() {
            let placed = [
                match policy.principal_constraint() {
                    PrincipalConstraint::Any => Placement::Any,
                    PrincipalConstraint::Eq(uid)
                    | PrincipalConstraint::In(uid)
                    | PrincipalConstraint::IsIn(_, uid) => Placement::Entities(vec![uid]),
                    PrincipalConstraint::Is(name) => Placement::Type(name.to_string()),
                },
                action_placement(policy.action_constraint()),
                match policy.resource_constraint() {
                    ResourceConstraint::Any => Placement::Any,
                    ResourceConstraint::Eq(uid)
                    | ResourceConstraint::In(uid)
                    | ResourceConstraint::IsIn(_, uid) => Placement::Entities(vec![uid]),
                    ResourceConstraint::Is(name) => Placement::Type(name.to_string()),
                },
            ];
            index.principal.place(at, &placed[0]);
            index.action.place(at, &placed[1]);
            index.resource.place(at, &placed[2]);
            index.policies.push((policy.clone(), placed));
        }
        index
    }

    /// The positions of the policies whose scope can match a request for `principal`,
    /// `action` and `resource`, with their ancestors read from `entities` (an entity it does not
    /// hold has none), in the set's order.
    pub fn select(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> Vec<usize> {
        self.select_for(&[
            SideOfRequest::new(principal, entities),
            SideOfRequest::new(action, entities),
            SideOfRequest::new(resource, entities),
        ])
    }

    /// `select` for a request's three sides.
    pub(super) fn select_for(&self, request: &[SideOfRequest<'_>; 3]) -> Vec<usize> {
        let sides = [&self.principal, &self.action, &self.resource];
        // List the candidates of the most selective side only, then keep those the other two
        // sides admit: a side where thousands of policies stand together (every per-identity
        // grant names the same action) is never listed.
        let narrowest = (0..3)
            .min_by_key(|&side| sides[side].count(&request[side]))
            .unwrap_or(0);
        sides[narrowest]
            .candidates(&request[narrowest])
            .into_iter()
            .filter(|&at| {
                self.policies.get(at).is_some_and(|(_, placed)| {
                    (0..3).all(|side| side == narrowest || request[side].admits(&placed[side]))
                })
            })
            .collect()
    }

    /// The policies to evaluate for this request: `whole` (the set this index was built from)
    /// when the selection is most of it, else a set of the selected policies alone.
    pub fn applicable<'a>(
        &self,
        whole: &'a PolicySet,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> Cow<'a, PolicySet> {
        self.assemble(whole, self.select(principal, action, resource, entities))
    }

    /// The policies at `selected` (positions in `whole`): `whole` itself when they are most of
    /// it, else a set of them alone.
    pub(super) fn assemble<'a>(
        &self,
        whole: &'a PolicySet,
        selected: Vec<usize>,
    ) -> Cow<'a, PolicySet> {
        if selected.len() * WHOLE_SET_FRACTION >= self.policies.len() {
            return Cow::Borrowed(whole);
        }
        let mut set = PolicySet::new();
        for at in selected {
            if let Some((policy, _)) = self.policies.get(at)
                && set.add(policy.clone()).is_err()
            {
                // Cannot happen (the policies come from one valid set); if it did, evaluating
                // the whole set is still exact.
                return Cow::Borrowed(whole);
            }
        }
        Cow::Owned(set)
    }

    /// The static policies at `selected`, in a set of their own.
    pub(super) fn policies_at(&self, selected: &[usize]) -> impl Iterator<Item = &Policy> {
        selected
            .iter()
            .filter_map(|&at| self.policies.get(at).map(|(policy, _)| policy))
    }
}

pub(super) fn action_placement(constraint: ActionConstraint) -> Placement {
    match constraint {
        ActionConstraint::Any => Placement::Any,
        ActionConstraint::Eq(uid) => Placement::Entities(vec![uid]),
        ActionConstraint::In(uids) => Placement::Entities(uids),
    }
}
