//! `Engine::explain` (`warrant check --explain`): the decision, and each policy evaluated alone
//! against the same Cedar request, so an author sees which policy said what.

use super::*;

/// What one policy, evaluated alone, makes of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// Its scope matches and its conditions hold: a permit would allow, a forbid denies.
    Satisfied,
    NotSatisfied,
    /// It failed to evaluate (and so, in the whole set, makes the decision a deny).
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyExplanation {
    /// The policy's @id, or a template link's id.
    pub policy_id: String,
    /// For a template link, its template's @id.
    pub template_id: Option<String>,
    /// `permit` or `forbid`.
    pub effect: &'static str,
    pub outcome: PolicyOutcome,
}

/// A decision and every policy's own outcome.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub decision: Decision,
    /// Empty when Warrant decided before any policy ran (an unknown principal, say).
    pub policies: Vec<PolicyExplanation>,
}

impl Engine {
    /// Decides `request` afresh (never from the cache) and evaluates each policy alone against
    /// the same Cedar request, for `warrant check --explain` and the console's playground. It
    /// changes nothing: a limited approval's uses are looked at, never taken.
    pub fn explain(&self, request: &CheckRequest) -> Result<Explanation, InvalidRequest> {
        self.settings.limits.check(request)?;
        let snapshot = self.snapshot.load_full();
        let now = self.clock.now();
        let (decision, _) = self.evaluate(&snapshot, None, request, now, false, Uses::Peek)?;
        let (principal_uid, action_uid, resource_uid) = parse_names(&snapshot.policies, request)?;
        let resolved = Resolved::of(&snapshot, request, principal_uid, resource_uid)?;
        let cedar_request =
            match self.cedar_request(&snapshot, request, &resolved, action_uid.clone(), now)? {
                Err(_) => None,
                Ok(cedar_request) => {
                    let literals = &snapshot.policies.time_use().entity_literals;
                    slice(&snapshot.facts, &resolved, &action_uid, literals)
                        .ok()
                        .map(|entities| (cedar_request, entities))
                }
            };
        let policies = match cedar_request {
            None => Vec::new(),
            Some((cedar_request, entities)) => {
                // Every static policy, and the links whose scope can match the request.
                let applicable = snapshot
                    .policies
                    .applicable(
                        &resolved.principal_uid,
                        &action_uid,
                        &resolved.resource_uid,
                        entities.entities(),
                    )
                    .unwrap_or_default();
                let links = applicable.policies().filter(|p| !p.is_static());
                let each = snapshot.policies.policies().policies().chain(links);
                each.map(|policy| {
                    let mut alone = cedar_policy::PolicySet::new();
                    let added = match policy.template_id() {
                        None => alone.add(policy.clone()).map_err(|e| e.to_string()),
                        Some(template_id) => match applicable.template(template_id) {
                            None => Err(format!("no template {template_id}")),
                            Some(template) => {
                                let values = snapshot
                                    .policies
                                    .links()
                                    .get(policy.id().as_ref())
                                    .map(|link| link.slot_values())
                                    .unwrap_or_default();
                                alone
                                    .add_template(template.clone())
                                    .map_err(|e| e.to_string())
                                    .and_then(|()| {
                                        alone
                                            .link(template_id.clone(), policy.id().clone(), values)
                                            .map_err(|e| e.to_string())
                                    })
                            }
                        },
                    };
                    let response =
                        self.authorizer
                            .is_authorized(&cedar_request, &alone, entities.entities());
                    let diagnostics = response.diagnostics();
                    let outcome = match (added, diagnostics.errors().next()) {
                        (Err(error), _) => PolicyOutcome::Failed(error),
                        (Ok(()), Some(error)) => PolicyOutcome::Failed(error.to_string()),
                        (Ok(()), None) if diagnostics.reason().next().is_some() => {
                            PolicyOutcome::Satisfied
                        }
                        (Ok(()), None) => PolicyOutcome::NotSatisfied,
                    };
                    PolicyExplanation {
                        policy_id: policy.id().to_string(),
                        template_id: policy.template_id().map(ToString::to_string),
                        effect: match policy.effect() {
                            cedar_policy::Effect::Permit => "permit",
                            cedar_policy::Effect::Forbid => "forbid",
                        },
                        outcome,
                    }
                })
                .collect()
            }
        };
        Ok(Explanation { decision, policies })
    }
}
