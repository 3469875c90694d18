//! Template links through the admin API: linking a template to the entities of a grant,
//! unlinking it, and listing the links in force. A link is checked against its template and the
//! schema (`PolicySnapshot::check_link`) and against the facts (every entity in a slot is
//! known, unless its type is described by callers), is durable in the live store before it is
//! acknowledged, and is in force for the next decision. Links from the policy folder's
//! `links.json` are changed by editing that file; the admin API lists them but leaves them be.

use super::*;
use crate::entities::ChangeReason;
use warrant_policy::{Link, LinkOrigin, LinkProblem, LinkSpec};

/// A link, where it comes from, and what the admin API recorded of it.
#[derive(Debug, Clone)]
pub struct LinkView {
    pub spec: LinkSpec,
    pub origin: LinkOrigin,
    pub meta: ChangeMeta,
}

/// One page of links.
#[derive(Debug, Clone)]
pub struct LinkPage {
    pub links: Vec<LinkView>,
    /// The last link id on this page when more follow.
    pub next_after: Option<String>,
}

impl Control {
    /// Links a template: the grant is in force for the next decision once this returns.
    pub fn link_policy(
        &self,
        spec: LinkSpec,
        reason: ChangeReason,
    ) -> Result<LinkView, ControlError> {
        let (mut state, publishing) = self.changing()?;
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let id = spec.id.clone();
        let link = state
            .policies
            .check_link(spec, LinkOrigin::Live)
            .map_err(|problem| match problem.field {
                "id" if state.policies.links().get(&id).is_some() => {
                    ControlError::AlreadyExists(format!("a link {id:?} exists already"))
                }
                _ => link_invalid(problem),
            })?;
        if let Some(problem) = state
            .policies
            .unknown_link_entity(&link, &|uid| facts.contains(uid))
        {
            return Err(link_invalid(problem));
        }
        let now = self.clock.now();
        let meta = ChangeMeta {
            granted_at: Some(now.0),
            ..reason.meta(&facts, &state.policies, now)?
        };
        let spec = link.spec();
        let stored = LiveLink {
            template: spec.template.clone(),
            principal: spec.principal.clone(),
            resource: spec.resource.clone(),
            meta: meta.clone(),
        };
        let published = self.end_change(
            publishing,
            vec![warrant_fleet::ChangeOp::Link {
                id: id.clone(),
                link: stored.clone(),
            }],
        )?;
        self.apply_link(&mut state, &id, Some(stored))?;
        self.record_applied(published)?;
        tracing::info!(link = %spec.id, template = %spec.template, principal = ?spec.principal, resource = ?spec.resource, "template linked");
        Ok(LinkView {
            spec,
            origin: LinkOrigin::Live,
            meta,
        })
    }

    /// Removes a live link: it no longer applies from the next decision on.
    pub fn unlink_policy(&self, id: &str) -> Result<LinkView, ControlError> {
        let (mut state, publishing) = self.changing()?;
        let Some(link) = state.policies.links().get(id).cloned() else {
            return Err(ControlError::NotFound(format!("no link {id:?}")));
        };
        if link.origin == LinkOrigin::File {
            return Err(invalid(
                "link_id",
                format!(
                    "{id:?} is in the policy folder's {}: remove it there",
                    warrant_policy::LINKS_FILE
                ),
            ));
        }
        let meta = state
            .live_links
            .get(id)
            .map(|stored| stored.meta.clone())
            .unwrap_or_default();
        let published = self.end_change(
            publishing,
            vec![warrant_fleet::ChangeOp::Unlink { id: id.to_owned() }],
        )?;
        self.apply_link(&mut state, id, None)?;
        self.record_applied(published)?;
        tracing::info!(link = id, template = %link.template(), "template unlinked");
        Ok(LinkView {
            spec: link.spec(),
            origin: link.origin,
            meta,
        })
    }

    /// Puts a live link in force (`Some`) or out of it (`None`): durable in the live store,
    /// then swapped into the active and the shadow policies. Applying the same twice is
    /// harmless (a replica may apply a change it already holds).
    pub(super) fn apply_link(
        &self,
        state: &mut State,
        id: &str,
        stored: Option<LiveLink>,
    ) -> Result<(), ControlError> {
        let without = state
            .policies
            .without_link(id)
            .map(|(policies, _)| policies);
        let base = without.unwrap_or_else(|| (*state.policies).clone());
        let candidate = self
            .engine
            .shadow()
            .map(|candidate| match candidate.without_link(id) {
                Some((without, _)) => without,
                None => (*candidate).clone(),
            });
        let Some(stored) = stored else {
            self.store.remove_link(id)?;
            state.live_links.remove(id);
            self.swap_policies(state, Arc::new(base));
            if let Some(candidate) = candidate {
                self.engine.set_shadow(Some(Arc::new(candidate)));
            }
            return Ok(());
        };
        let spec = LinkSpec {
            id: id.to_owned(),
            template: stored.template.clone(),
            principal: stored.principal.clone(),
            resource: stored.resource.clone(),
        };
        let link = base
            .check_link(spec.clone(), LinkOrigin::Live)
            .map_err(link_invalid)?;
        self.store.put_link(id, &stored)?;
        self.swap_policies(state, Arc::new(base.with_link(link)));
        if let Some(candidate) = candidate
            && let Ok(link) = candidate.check_link(spec, LinkOrigin::Live)
        {
            self.engine
                .set_shadow(Some(Arc::new(candidate.with_link(link))));
        }
        state.live_links.insert(id.to_owned(), stored);
        Ok(())
    }

    /// The links in force, in id order, after `after` (exclusive), of `template` if given: at
    /// most `limit`.
    pub fn policy_links(
        &self,
        template: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> LinkPage {
        let state = self.state();
        let links = state.policies.links();
        let mut page: Vec<LinkView> = links
            .iter_after(after.unwrap_or(""))
            .filter(|link| template.is_none_or(|t| link.template() == t))
            .take(limit.saturating_add(1))
            .map(|link| self.link_view(&state, link))
            .collect();
        let next_after = match page.len() > limit {
            true => {
                page.truncate(limit);
                page.last().map(|view| view.spec.id.clone())
            }
            false => None,
        };
        LinkPage {
            links: page,
            next_after,
        }
    }

    /// One link.
    pub fn policy_link(&self, id: &str) -> Result<LinkView, ControlError> {
        let state = self.state();
        match state.policies.links().get(id) {
            Some(link) => Ok(self.link_view(&state, link)),
            None => Err(ControlError::NotFound(format!("no link {id:?}"))),
        }
    }

    fn link_view(&self, state: &State, link: &Link) -> LinkView {
        LinkView {
            spec: link.spec(),
            origin: link.origin,
            meta: state
                .live_links
                .get(link.id())
                .map(|stored| stored.meta.clone())
                .unwrap_or_default(),
        }
    }

    /// Makes `policies` the active policies (with the current facts).
    fn swap_policies(&self, state: &mut State, policies: Arc<PolicySnapshot>) {
        self.engine.replace_snapshot(Snapshot {
            policies: Arc::clone(&policies),
            facts: Arc::clone(&self.engine.snapshot().facts),
        });
        state.policies = policies;
    }
}

fn link_invalid(problem: LinkProblem) -> ControlError {
    invalid(format!("link.{}", problem.field), problem.message)
}

/// The folder's policies with the live links, all of which must still fit, and every link's
/// entities `known` (held in the facts).
pub(super) fn with_live_links(
    folder: &PolicySnapshot,
    live: &BTreeMap<String, LiveLink>,
    known: &dyn Fn(&EntityUid) -> bool,
) -> Result<PolicySnapshot, String> {
    let (policies, refused) = folder.with_live_links(live_specs(live));
    let mut problems: Vec<String> = refused
        .into_iter()
        .map(|(id, problem)| format!("live link {id:?}: {problem}"))
        .collect();
    for link in policies.links().iter() {
        if let Some(problem) = policies.unknown_link_entity(link, known) {
            problems.push(format!("link {:?}: {problem}", link.id()));
        }
    }
    match problems.is_empty() {
        true => Ok(policies),
        false => Err(problems.join("; ")),
    }
}

/// The shadow policies with the live links whose templates they hold; the others are left out
/// (and said so once).
pub(super) fn shadow_with_live_links(
    candidate: PolicySnapshot,
    live: &BTreeMap<String, LiveLink>,
) -> PolicySnapshot {
    let (candidate, refused) = candidate.with_live_links(live_specs(live));
    if !refused.is_empty() {
        tracing::warn!(
            left_out = refused.len(),
            first = %refused[0].1,
            "live links that do not fit the shadow policies are left out of their verdicts"
        );
    }
    candidate
}

fn live_specs(live: &BTreeMap<String, LiveLink>) -> impl Iterator<Item = LinkSpec> + '_ {
    live.iter().map(|(id, stored)| LinkSpec {
        id: id.clone(),
        template: stored.template.clone(),
        principal: stored.principal.clone(),
        resource: stored.resource.clone(),
    })
}
