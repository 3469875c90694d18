//! How long a decision stays true (`valid_until`): the earliest of now plus the maximum age and
//! the next instant at which a time the decision could read is crossed.

use super::*;
use warrant_domain::PolicyLink;

impl Engine {
    /// Gives a verdict its id, time, validity and evidence. `read_times`: every datetime in
    /// the facts the decision read (`Facts::reached`).
    #[expect(
        clippy::too_many_arguments,
        reason = "one decision's parts, each named"
    )]
    pub(super) fn stamp(
        &self,
        snapshot: &Snapshot,
        shadow: Option<&PolicySnapshot>,
        request: &CheckRequest,
        resolved: &Resolved,
        now: UnixMillis,
        verdict: Verdict,
        read_times: &[UnixMillis],
    ) -> Decision {
        let facts = &snapshot.facts;
        let approval = resolved.approval.as_ref().map(|approval| {
            let bound = approval.subject == resolved.principal_uid;
            ApprovalEvidence {
                valid_at_decision: bound && approval.is_valid_at(now),
                replay_suspected: !bound,
                use_number: verdict.approval_use,
                budget_spent: verdict.budget.map(|(spent, _)| spent),
                budget_left: verdict.budget.map(|(_, left)| left),
                approval: Arc::clone(approval),
            }
        });
        let max_age = match verdict.effect {
            Effect::Allow => self.settings.allow_max_age_ms,
            Effect::Deny => self.settings.deny_max_age_ms,
        };
        let time_use = &snapshot.policies.time_use();
        // A shadow set's verdict is cached with the decision, so its times count too.
        let shadow_time = shadow.map(|s| s.time_use());
        let valid_until = if time_use.arithmetic || shadow_time.is_some_and(|t| t.arithmetic) {
            // The policies compute with the clock: the answer is known for this millisecond only.
            now.saturating_add_millis(1)
        } else {
            // Otherwise the answer can change only when the clock crosses a time the decision
            // could have compared it with: in the facts of the entities it could read, or in
            // the policies themselves.
            let horizon = now.saturating_add_millis(max_age);
            [read_times, time_use.datetime_literals.as_slice()]
                .into_iter()
                .chain(shadow_time.map(|t| t.datetime_literals.as_slice()))
                .filter_map(|bounds| next_change(bounds, now))
                .fold(horizon, UnixMillis::min)
                // Never past the credential's expiry.
                .min(match &resolved.credential {
                    Ok(Some(credential)) => credential.expires_at,
                    _ => horizon,
                })
        };
        let decision_id = new_decision_id(now);
        let resource_scopes = facts.scopes_of(&resolved.resource_uid);
        let policy_links = links_among(&snapshot.policies, &verdict.reasons);
        Decision {
            effect: verdict.effect,
            decision_id,
            reasons: verdict.reasons,
            errors: verdict.errors,
            provenance: Provenance {
                principal: request.principal.clone(),
                identity: resolved.identity.clone(),
                approval,
                resource: request.resource.clone(),
                resource_scopes,
                resource_facts: resolved.resource_facts,
                resource_description_ignored: resolved.description_ignored,
                decided_at: now,
                facts_version: Arc::clone(facts.version()),
                evaluation_id: decision_id,
                answered_from_cache: false,
                policy_links,
                credential: resolved.credential.clone().ok().flatten(),
            },
            valid_until,
            policy_version: Arc::clone(snapshot.policies.version()),
            request_id: request.request_id.clone(),
            shadow: None,
            approval_required: None,
        }
    }
}

/// The links among a verdict's determining policies, in the reasons' order.
fn links_among(policies: &PolicySnapshot, reasons: &[String]) -> Vec<PolicyLink> {
    reasons
        .iter()
        .filter_map(|reason| policies.links().get(reason))
        .map(|link| {
            let spec = link.spec();
            PolicyLink {
                link: spec.id,
                principal: spec.principal,
                resource: spec.resource,
                template: spec.template,
            }
        })
        .collect()
}

/// The first instant after `now` at which comparing the clock with one of `bounds` (sorted)
/// can give a different result: a bound `t` changes `<` and `>=` at `t`, and `<=`, `>` and
/// `==` at `t + 1ms`.
pub(super) fn next_change(bounds: &[UnixMillis], now: UnixMillis) -> Option<UnixMillis> {
    let first_not_past = bounds.partition_point(|bound| *bound < now);
    match bounds.get(first_not_past) {
        Some(bound) if *bound == now => Some(now.saturating_add_millis(1)),
        Some(bound) => Some(*bound),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn the_next_change_is_at_a_bound_or_just_after_one_that_is_now() {
        let bounds = [UnixMillis(10), UnixMillis(20), UnixMillis(30)];
        assert_eq!(next_change(&bounds, UnixMillis(5)), Some(UnixMillis(10)));
        // `now == 20` can flip at 21 (for `<=`, `>`, `==`).
        assert_eq!(next_change(&bounds, UnixMillis(20)), Some(UnixMillis(21)));
        assert_eq!(next_change(&bounds, UnixMillis(21)), Some(UnixMillis(30)));
        assert_eq!(next_change(&bounds, UnixMillis(31)), None);
        assert_eq!(next_change(&[], UnixMillis(0)), None);
    }
}
