//! The policy index against the whole set: a differential property test over random policy sets
//! (every kind of scope constraint, conditions that hold, fail or error), random hierarchies and
//! every request over them. Evaluating only the policies the index selects must give the same
//! decision, the same determining policies and the same erroring policies as evaluating all.

use cedar_policy::{Authorizer, Context, EntityUid, PolicySet, Request, Schema};
use proptest::prelude::*;

use crate::engine::{slice_world, slice_world_json};

const SCHEMA: &str = r#"
entity Group in [Group];
entity User in [Group] = { manager?: User, level: Long };
entity Folder in [Folder] = { owner: User };
entity Doc in [Folder] = { owner: User, reviewers: Set<User>, meta: { folder: Folder } };
action "all";
action "read", "write" in ["all"]
  appliesTo { principal: [User], resource: [Doc, Folder], context: { now: datetime } };
"#;

fn principal_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("principal".to_owned()),
        (0..7usize).prop_map(|i| format!("principal == User::\"u{i}\"")),
        (0..7usize).prop_map(|i| format!("principal in User::\"u{i}\"")),
        (0..4usize).prop_map(|i| format!("principal in Group::\"g{i}\"")),
        Just("principal is User".to_owned()),
        (0..4usize).prop_map(|i| format!("principal is User in Group::\"g{i}\"")),
        (0..4usize).prop_map(|i| format!("principal == Group::\"g{i}\"")),
    ]
}

fn action_scope() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "action",
        "action == Action::\"read\"",
        "action == Action::\"write\"",
        "action in [Action::\"read\", Action::\"write\"]",
        "action in Action::\"all\"",
        "action in [Action::\"all\"]",
    ])
    .prop_map(str::to_owned)
}

fn resource_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("resource".to_owned()),
        (0..6usize).prop_map(|i| format!("resource == Doc::\"d{i}\"")),
        (0..5usize).prop_map(|i| format!("resource in Folder::\"f{i}\"")),
        (0..5usize).prop_map(|i| format!("resource == Folder::\"f{i}\"")),
        Just("resource is Doc".to_owned()),
        Just("resource is Folder".to_owned()),
        (0..5usize).prop_map(|i| format!("resource is Doc in Folder::\"f{i}\"")),
    ]
}

/// A condition that holds for some requests, and one that errors for some (a user without a
/// manager).
fn condition() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (0..10i64).prop_map(|n| format!(" when {{ principal.level > {n} }}")),
        (0..10i64).prop_map(|n| format!(" when {{ principal.manager.level > {n} }}")),
        Just(" when { resource.owner == principal }".to_owned()),
        Just(" unless { resource.owner == principal }".to_owned()),
    ]
}

fn policy_set() -> impl Strategy<Value = String> {
    let policy = (
        any::<bool>(),
        principal_scope(),
        action_scope(),
        resource_scope(),
        condition(),
    )
        .prop_map(|(permit, p, a, r, c)| {
            let effect = if permit { "permit" } else { "forbid" };
            format!("{effect} ({p}, {a}, {r}){c};")
        });
    proptest::collection::vec(policy, 1..40).prop_map(|policies| policies.join("\n"))
}

fn schema() -> &'static Schema {
    static SCHEMA_PARSED: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA_PARSED.get_or_init(|| Schema::from_cedarschema_str(SCHEMA).unwrap().0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_policies_the_index_selects_decide_as_the_whole_set(
        world in slice_world(),
        text in policy_set(),
    ) {
        let policies: PolicySet = text.parse().unwrap();
        let index = warrant::policy::PolicyIndex::new(&policies);
        let facts = warrant::facts::Facts::from_json(&slice_world_json(&world).to_string(), schema()).unwrap();
        let entities = facts.entities();
        let context = Context::from_pairs([(
            "now".to_owned(),
            cedar_policy::RestrictedExpression::new_datetime("2026-11-29"),
        )])
        .unwrap();
        let outcome = |response: &cedar_policy::Response| {
            let mut reasons: Vec<String> = response.diagnostics().reason().map(ToString::to_string).collect();
            reasons.sort();
            let mut errors: Vec<String> = response
                .diagnostics()
                .errors()
                .map(|e| {
                    let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
                    e.policy_id().to_string()
                })
                .collect();
            errors.sort();
            (response.decision(), reasons, errors)
        };
        let mut left_out = 0;
        let principals = (0..7).map(|i| format!("User::\"u{i}\""));
        for principal in principals {
            let principal: EntityUid = principal.parse().unwrap();
            for action in ["read", "write"] {
                let action: EntityUid = format!("Action::\"{action}\"").parse().unwrap();
                let resources = (0..6).map(|i| format!("Doc::\"d{i}\"")).chain((0..5).map(|i| format!("Folder::\"f{i}\"")));
                for resource in resources {
                    let resource: EntityUid = resource.parse().unwrap();
                    let request = Request::new(principal.clone(), action.clone(), resource.clone(), context.clone(), None).unwrap();
                    let whole = Authorizer::new().is_authorized(&request, &policies, entities);
                    let selected = index.select(&principal, &action, &resource, entities);
                    left_out += policies.policies().count() - selected.len();
                    // The selection alone, however large...
                    let all: Vec<&cedar_policy::Policy> = policies.policies().collect();
                    let only = PolicySet::from_policies(selected.iter().map(|at| all[*at].clone())).unwrap();
                    let indexed = Authorizer::new().is_authorized(&request, &only, entities);
                    prop_assert_eq!(
                        outcome(&whole), outcome(&indexed),
                        "{} {} {}\n{}", principal, action, resource, text
                    );
                    // ...and what the engine evaluates (the whole set when the selection is most
                    // of it).
                    let applicable = index.applicable(&policies, &principal, &action, &resource, entities);
                    let evaluated = Authorizer::new().is_authorized(&request, &applicable, entities);
                    prop_assert_eq!(outcome(&whole), outcome(&evaluated));
                }
            }
        }
        // (The index does leave policies out: the comparison is not vacuous.)
        if text.lines().count() > 10 {
            prop_assert!(left_out > 0);
        }
    }
}
