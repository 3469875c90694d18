//! Denials that say what approval would allow. When a request is denied, and a valid approval
//! covering it would let it through, the decision carries an `ApprovalAdvice`: the identity,
//! the action, the resource, the scope to approve and the longest validity an approval may
//! have. It is found by evaluating, not by guessing: the same request is decided again with a
//! hypothetical approval (granted to the principal, by its owner, for exactly this action, over
//! the resource's nearest scope, then the next one out, valid from now for the longest an
//! approval may last, unused, not revoked), under the same policies and facts and Warrant's
//! fail-closed rules. The hypothetical approval takes no use and is never on record as one.

use super::*;
use warrant_domain::ApprovalAdvice;

/// The id the hypothetical approval goes by (no stored approval can have it: `warrant:` ids
/// are refused on the way in).
const HYPOTHETICAL_ID: &str = "warrant:hypothetical-approval";
/// How many of the resource's scopes, nearest first, are tried.
const MOST_SCOPES: usize = 8;

impl Engine {
    /// The approval that would allow `request`, if one would; `None` when none would, or when
    /// it cannot be told (logged at debug: the deny stands either way).
    pub(super) fn approval_advice(
        &self,
        snapshot: &Snapshot,
        request: &CheckRequest,
        resolved: &Resolved,
        action_uid: &EntityUid,
        now: UnixMillis,
    ) -> Option<ApprovalAdvice> {
        // Only for a stored resource (a described one already takes the slice's one added
        // entity) and an identity with an owner (who approves for it, hypothetically).
        if resolved.described.is_some() || resolved.resource_facts != ResourceFacts::Stored {
            return None;
        }
        let owner = resolved.identity.as_ref()?.owner.as_ref()?;
        let scopes = snapshot.facts.scopes_of(&resolved.resource_uid);
        let max_validity_ms = self.settings.approval_max_validity_ms;
        let hypothetical_request = CheckRequest {
            approval_id: Some(HYPOTHETICAL_ID.to_owned()),
            ..request.clone()
        };
        for scope in scopes.iter().take(MOST_SCOPES) {
            let entity = match hypothetical_approval(
                &resolved.principal_uid,
                &owner.entity,
                action_uid,
                scope,
                now,
                max_validity_ms,
            ) {
                Ok(entity) => entity,
                Err(error) => {
                    tracing::debug!(%error, "no hypothetical approval fits the schema; no advice");
                    return None;
                }
            };
            let approval = Arc::new(Approval {
                uid: entity.uid(),
                ticket: String::new(),
                approver: owner.entity.clone(),
                subject: resolved.principal_uid.clone(),
                actions: vec![request.action.clone()],
                scope: scope.clone(),
                not_before: now,
                expires_at: UnixMillis(now.0.saturating_add(max_validity_ms)),
                revoked: false,
                playbook: None,
                max_uses: None,
                budget: None,
            });
            let hypothetical = Resolved {
                principal_uid: resolved.principal_uid.clone(),
                resource_uid: resolved.resource_uid.clone(),
                identity: resolved.identity.clone(),
                approval: Some(approval),
                described: Some(entity),
                resource_facts: ResourceFacts::Stored,
                description_ignored: false,
                credential: resolved.credential.clone(),
            };
            let Ok(Ok(cedar_request)) = self.cedar_request(
                snapshot,
                &hypothetical_request,
                &hypothetical,
                action_uid.clone(),
                now,
            ) else {
                return None;
            };
            let literals = &snapshot.policies.time_use().entity_literals;
            let entities = slice(&snapshot.facts, &hypothetical, action_uid, literals).ok()?;
            let applicable = snapshot
                .policies
                .applicable(
                    &resolved.principal_uid,
                    action_uid,
                    &resolved.resource_uid,
                    entities.entities(),
                )
                .ok()?;
            let response =
                self.authorizer
                    .is_authorized(&cedar_request, &applicable, entities.entities());
            let verdict = cedar_verdict(&response);
            if verdict.effect == Effect::Allow && verdict.errors.is_empty() {
                return Some(ApprovalAdvice {
                    identity: request.principal.clone(),
                    action: request.action.clone(),
                    resource: request.resource.clone(),
                    scope: scope.clone(),
                    max_validity_ms,
                });
            }
        }
        None
    }
}

/// The hypothetical approval as a Cedar entity: Warrant's own approval attributes, built
/// directly (parsing JSON against the schema costs more than a decision). A schema whose
/// approvals need more makes the policies that read it fail, so no advice is given.
fn hypothetical_approval(
    principal: &EntityUid,
    approver: &EntityRef,
    action_uid: &EntityUid,
    scope: &EntityRef,
    now: UnixMillis,
    max_validity_ms: i64,
) -> Result<Entity, String> {
    let uid_of = |reference: &EntityRef| -> Result<EntityUid, String> {
        Ok(EntityUid::from_type_name_and_id(
            reference
                .type_name
                .parse()
                .map_err(|error| format!("{error}"))?,
            EntityId::new(&reference.id),
        ))
    };
    let datetime = |at: UnixMillis| RestrictedExpression::new_datetime(at.to_cedar_datetime());
    let attributes = std::collections::HashMap::from([
        (
            "ticket".to_owned(),
            RestrictedExpression::new_string(String::new()),
        ),
        (
            "approver".to_owned(),
            RestrictedExpression::new_entity_uid(uid_of(approver)?),
        ),
        (
            "actions".to_owned(),
            RestrictedExpression::new_set([RestrictedExpression::new_entity_uid(
                action_uid.clone(),
            )]),
        ),
        (
            "scope".to_owned(),
            RestrictedExpression::new_entity_uid(uid_of(scope)?),
        ),
        ("not_before".to_owned(), datetime(now)),
        (
            "expires_at".to_owned(),
            datetime(UnixMillis(now.0.saturating_add(max_validity_ms))),
        ),
        ("revoked".to_owned(), RestrictedExpression::new_bool(false)),
    ]);
    let uid = EntityUid::from_type_name_and_id(
        APPROVAL_TYPE.parse().map_err(|error| format!("{error}"))?,
        EntityId::new(HYPOTHETICAL_ID),
    );
    Entity::new(
        uid,
        attributes,
        std::collections::HashSet::from([principal.clone()]),
    )
    .map_err(|error| error.to_string())
}
