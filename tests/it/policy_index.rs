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

/// The decision, the determining policies and the erroring policies, sorted.
fn outcome(
    response: &cedar_policy::Response,
) -> (cedar_policy::Decision, Vec<String>, Vec<String>) {
    let mut reasons: Vec<String> = response
        .diagnostics()
        .reason()
        .map(ToString::to_string)
        .collect();
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
}

/// Every request over the world: each user, each action, each document and folder, with the
/// context Warrant would give it.
fn every_request() -> Vec<(EntityUid, EntityUid, EntityUid, Request)> {
    let context = Context::from_pairs([(
        "now".to_owned(),
        cedar_policy::RestrictedExpression::new_datetime("2026-11-29"),
    )])
    .unwrap();
    let mut requests = Vec::new();
    for principal in (0..7).map(|i| format!("User::\"u{i}\"")) {
        let principal: EntityUid = principal.parse().unwrap();
        for action in ["read", "write"] {
            let action: EntityUid = format!("Action::\"{action}\"").parse().unwrap();
            let documents = (0..6).map(|i| format!("Doc::\"d{i}\""));
            let folders = (0..5).map(|i| format!("Folder::\"f{i}\""));
            for resource in documents.chain(folders) {
                let resource: EntityUid = resource.parse().unwrap();
                let request = Request::new(
                    principal.clone(),
                    action.clone(),
                    resource.clone(),
                    context.clone(),
                    None,
                )
                .unwrap();
                requests.push((principal.clone(), action.clone(), resource, request));
            }
        }
    }
    requests
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
        let index = warrant_policy::PolicyIndex::new(&policies);
        let facts = warrant_store::facts::from_json(&slice_world_json(&world).to_string(), schema()).unwrap();
        let entities = &facts.to_cedar().unwrap();
        let mut left_out = 0;
        for (principal, action, resource, request) in every_request() {
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
            // ...and what the engine evaluates (the whole set when the selection is most of it).
            let applicable = index.applicable(&policies, &principal, &action, &resource, entities);
            let evaluated = Authorizer::new().is_authorized(&request, &applicable, entities);
            prop_assert_eq!(outcome(&whole), outcome(&evaluated));
        }
        // (The index does leave policies out: the comparison is not vacuous.)
        if text.lines().count() > 10 {
            prop_assert!(left_out > 0);
        }
    }
}

/// Conditions that pass strict validation (the policies load through `PolicySnapshot`): one
/// holds for some requests, and one errors for some (an integer overflow past level 1).
fn valid_condition() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (0..10i64).prop_map(|n| format!(" when {{ principal.level > {n} }}")),
        Just(" when { principal.level * 4611686018427387904 > 0 }".to_owned()),
        Just(" when { resource.owner == principal }".to_owned()),
        Just(" unless { resource.owner == principal }".to_owned()),
    ]
}

/// A template: slots where a static policy names an entity, any constraint elsewhere.
fn template() -> impl Strategy<Value = (String, bool, bool)> {
    let principal = prop_oneof![
        Just(("principal == ?principal".to_owned(), true)),
        Just(("principal in ?principal".to_owned(), true)),
        Just(("principal is User in ?principal".to_owned(), true)),
        principal_scope().prop_map(|scope| (scope, false)),
    ];
    let resource = prop_oneof![
        Just(("resource == ?resource".to_owned(), true)),
        Just(("resource in ?resource".to_owned(), true)),
        Just(("resource is Doc in ?resource".to_owned(), true)),
        resource_scope().prop_map(|scope| (scope, false)),
    ];
    (
        any::<bool>(),
        principal,
        action_scope(),
        resource,
        valid_condition(),
    )
        .prop_filter("a template has a slot", |(_, p, _, r, _)| p.1 || r.1)
        .prop_map(|(permit, (p, p_slot), a, (r, r_slot), c)| {
            let effect = if permit { "permit" } else { "forbid" };
            (format!("{effect} ({p}, {a}, {r}){c};"), p_slot, r_slot)
        })
}

/// A link as Cedar takes it: link id, template id, and the slot values as `Type::"id"`.
type CedarLink = (String, String, Option<String>, Option<String>);

/// Static policies, templates, and links of those templates to random entities of the world:
/// the policy text, the links as `links.json` holds them, and the same links for Cedar.
fn templates_and_links() -> impl Strategy<Value = (String, serde_json::Value, Vec<CedarLink>)> {
    let statics = proptest::collection::vec(
        (
            any::<bool>(),
            principal_scope(),
            action_scope(),
            resource_scope(),
            valid_condition(),
        ),
        0..10,
    );
    let templates = proptest::collection::vec(template(), 1..5);
    let picks = proptest::collection::vec(
        (any::<prop::sample::Index>(), 0..11usize, 0..11usize),
        0..30,
    );
    (statics, templates, picks).prop_map(|(statics, templates, picks)| {
        let mut text = String::new();
        for (i, (permit, p, a, r, c)) in statics.into_iter().enumerate() {
            let effect = if permit { "permit" } else { "forbid" };
            text.push_str(&format!("@id(\"p{i}\")\n{effect} ({p}, {a}, {r}){c};\n"));
        }
        for (i, (template, _, _)) in templates.iter().enumerate() {
            text.push_str(&format!("@id(\"t{i}\")\n{template}\n"));
        }
        let mut links = Vec::new();
        let mut json = Vec::new();
        for (n, (which, p, r)) in picks.into_iter().enumerate() {
            let t = which.index(templates.len());
            let (template, p_slot, r_slot) = &templates[t];
            // Values of types the template's scope admits: a user or a group for `in`, a user
            // for `==`; a document or a folder.
            let principal = p_slot.then(|| {
                match (
                    p % 11,
                    template.contains("principal in ?principal")
                        || template.contains("is User in ?principal"),
                ) {
                    (g @ 7.., true) => ("Group", format!("g{}", g - 7)),
                    (u, _) => ("User", format!("u{}", u % 7)),
                }
            });
            let resource = r_slot.then(|| match r % 11 {
                d @ ..6 if !template.contains("is Doc in ?resource") => ("Doc", format!("d{d}")),
                f => ("Folder", format!("f{}", f % 5)),
            });
            let id = format!("l{n}");
            let mut link = serde_json::json!({"id": id, "template": format!("t{t}")});
            if let Some((ty, entity)) = &principal {
                link["principal"] = serde_json::json!({"type": ty, "id": entity});
            }
            if let Some((ty, entity)) = &resource {
                link["resource"] = serde_json::json!({"type": ty, "id": entity});
            }
            json.push(link);
            links.push((
                id,
                format!("t{t}"),
                principal.map(|(ty, e)| format!("{ty}::\"{e}\"")),
                resource.map(|(ty, e)| format!("{ty}::\"{e}\"")),
            ));
        }
        (text, serde_json::Value::Array(json), links)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// With templates and links: what the snapshot evaluates for a request (the static policies
    /// the index selects and the links whose scope can match) decides as Cedar over every policy
    /// and every link.
    #[test]
    fn the_links_a_request_selects_decide_as_every_link(
        world in slice_world(),
        (text, links_json, links) in templates_and_links(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        // Warrant's loader wants `now` in every action's context, the group's too.
        let schema_text = SCHEMA.replace(
            "action \"all\";",
            "action \"all\" appliesTo { principal: [User], resource: [Doc, Folder], context: { now: datetime } };",
        );
        std::fs::write(dir.path().join(warrant_policy::SCHEMA_FILE), schema_text).unwrap();
        std::fs::write(dir.path().join("p.cedar"), &text).unwrap();
        let mut snapshot = warrant_policy::PolicySnapshot::load(dir.path()).unwrap();
        // Links a template's scope makes impossible are refused; the others are added.
        let mut whole = snapshot.policies().clone();
        let specs: Vec<warrant_policy::LinkSpec> = serde_json::from_value(links_json.clone()).unwrap();
        for (spec, (id, template, principal, resource)) in specs.into_iter().zip(&links) {
            let Ok(link) = snapshot.check_link(spec, warrant_policy::LinkOrigin::Live) else {
                continue;
            };
            snapshot = snapshot.with_link(link);
            let mut values = std::collections::HashMap::new();
            if let Some(p) = principal {
                values.insert(cedar_policy::SlotId::principal(), p.parse().unwrap());
            }
            if let Some(r) = resource {
                values.insert(cedar_policy::SlotId::resource(), r.parse().unwrap());
            }
            whole.link(cedar_policy::PolicyId::new(template), cedar_policy::PolicyId::new(id), values).unwrap();
        }
        let facts = warrant_store::facts::from_json(&slice_world_json(&world).to_string(), schema()).unwrap();
        let entities = &facts.to_cedar().unwrap();
        for (principal, action, resource, request) in every_request() {
            let expected = Authorizer::new().is_authorized(&request, &whole, entities);
            let applicable = snapshot.applicable(&principal, &action, &resource, entities).unwrap();
            let evaluated = Authorizer::new().is_authorized(&request, &applicable, entities);
            prop_assert_eq!(
                outcome(&expected), outcome(&evaluated),
                "{} {} {}\n{}\n{}", principal, action, resource, text, links_json
            );
        }
    }
}
