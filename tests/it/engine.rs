//! The engine in-process, with an injected clock: fail-closed evaluation errors, the edges of an
//! approval's window, how long an answer stays valid, and random requests that must never panic
//! nor allow what the facts forbid.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use warrant::server::load_snapshot;
use warrant_domain::clock::{ManualClock, UnixMillis};
use warrant_domain::{CheckRequest, ContextValue, Effect, EntityRef, Reason};
use warrant_engine::engine::{Engine, EngineSettings};

fn at(text: &str) -> UnixMillis {
    UnixMillis::parse_cedar_datetime(text).unwrap()
}

fn bundled_engine(now: &str) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(at(now)));
    let snapshot = load_snapshot(&crate::common::bundled_policies()).unwrap();
    let engine = Engine::new(
        snapshot,
        clock.clone(),
        EngineSettings::default(),
        warrant_engine::engine::EngineParts::default(),
    );
    (engine, clock)
}

fn ask(
    principal: (&str, &str),
    action: &str,
    resource: (&str, &str),
    approval: Option<&str>,
) -> CheckRequest {
    CheckRequest {
        principal: EntityRef::new(principal.0, principal.1),
        action: action.to_owned(),
        resource: EntityRef::new(resource.0, resource.1),
        context: BTreeMap::new(),
        approval_id: approval.map(str::to_owned),
        request_id: None,
        resource_description: None,
        caller_identity: None,
        credential: None,
    }
}

fn deploy(approval: &str) -> CheckRequest {
    ask(
        ("ServiceAccount", "deploy-bot"),
        "update",
        ("Config", "payments-api"),
        Some(approval),
    )
}

#[test]
fn an_approval_is_valid_from_not_before_until_just_before_expires_at() {
    // CHG-2001 is valid from 2099-01-01 to 2099-02-01.
    let (engine, clock) = bundled_engine("2098-12-31T23:59:59.999Z");
    let early = engine.check(&deploy("CHG-2001")).unwrap();
    assert_eq!(early.effect, Effect::Deny);
    assert_eq!(early.reasons, ["approval-not-yet-valid"]);
    // A deny that will become an allow holds only until then.
    assert_eq!(early.valid_until, at("2099-01-01T00:00:00Z"));

    clock.set(at("2099-01-01T00:00:00Z"));
    let first = engine.check(&deploy("CHG-2001")).unwrap();
    assert_eq!(first.effect, Effect::Allow, "{:?}", first.reasons);

    clock.set(at("2099-01-31T23:59:30Z"));
    let last = engine.check(&deploy("CHG-2001")).unwrap();
    assert_eq!(last.effect, Effect::Allow);
    // Never past the approval's expiry, even though the maximum age is a minute.
    assert_eq!(last.valid_until, at("2099-02-01T00:00:00Z"));

    clock.set(at("2099-02-01T00:00:00Z"));
    let expired = engine.check(&deploy("CHG-2001")).unwrap();
    assert_eq!(expired.effect, Effect::Deny);
    assert_eq!(expired.reasons, ["approval-expired"]);
}

#[test]
fn an_answer_is_valid_for_the_configured_maximum_age_at_most() {
    let clock = Arc::new(ManualClock::new(at("2026-11-27T12:00:00Z")));
    let snapshot = load_snapshot(&crate::common::bundled_policies()).unwrap();
    let engine = Engine::new(
        snapshot,
        clock,
        EngineSettings {
            allow_max_age_ms: 5_000,
            deny_max_age_ms: 2_000,
            cache: None,
            ..EngineSettings::default()
        },
        warrant_engine::engine::EngineParts::default(),
    );
    let answer = engine.check(&deploy("CHG-1042")).unwrap();
    assert_eq!(answer.effect, Effect::Allow);
    assert_eq!(answer.valid_until, at("2026-11-27T12:00:05Z"));
    let denied = engine.check(&deploy("CHG-1001")).unwrap();
    assert_eq!(denied.effect, Effect::Deny);
    assert_eq!(denied.valid_until, at("2026-11-27T12:00:02Z"));
    assert_eq!(answer.provenance.decided_at, at("2026-11-27T12:00:00Z"));
}

#[test]
fn a_credential_expiry_bounds_the_answer() {
    // pipeline-etl's key expires 2099-01-01.
    let (engine, _) = bundled_engine("2098-12-31T23:59:50Z");
    let answer = engine
        .check(&ask(
            ("ApiKey", "pipeline-etl"),
            "read",
            ("Dataset", "sales-2026"),
            None,
        ))
        .unwrap();
    assert_eq!(answer.effect, Effect::Allow);
    assert_eq!(answer.valid_until, at("2099-01-01T00:00:00Z"));
}

/// A policy directory whose forbid fails to evaluate for large amounts (integer overflow).
fn overflowing_policies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("schema.cedarschema"),
        r#"entity Bot = { owner?: Bot, status: String };
entity Vault;
action "withdraw" appliesTo { principal: [Bot], resource: [Vault], context: { now: datetime, amount: Long } };
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policies.cedar"),
        r#"@id("bots-withdraw")
permit (principal, action, resource);

@id("no-large-withdrawals")
forbid (principal, action, resource) when { context.amount * 1000 > 1000000 };
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("entities.json"),
        r#"[{"uid":{"type":"Bot","id":"b"},"attrs":{"status":"active"},"parents":[]},
            {"uid":{"type":"Vault","id":"v"},"attrs":{},"parents":[]}]"#,
    )
    .unwrap();
    dir
}

#[test]
fn a_forbid_that_errors_makes_a_deny_not_a_skipped_rule() {
    let dir = overflowing_policies();
    let clock = Arc::new(ManualClock::new(at("2026-11-27T12:00:00Z")));
    let engine = Engine::new(
        load_snapshot(dir.path()).unwrap(),
        clock,
        EngineSettings::default(),
        warrant_engine::engine::EngineParts::default(),
    );
    let withdraw = |amount: i64| CheckRequest {
        context: BTreeMap::from([("amount".to_owned(), ContextValue::Long(amount))]),
        ..ask(("Bot", "b"), "withdraw", ("Vault", "v"), None)
    };
    assert_eq!(engine.check(&withdraw(10)).unwrap().effect, Effect::Allow);
    assert_eq!(
        engine.check(&withdraw(5_000)).unwrap().reasons,
        ["no-large-withdrawals"]
    );

    // i64::MAX * 1000 overflows: Cedar skips the forbid and would allow. Warrant denies.
    let answer = engine.check(&withdraw(i64::MAX)).unwrap();
    assert_eq!(answer.effect, Effect::Deny);
    assert_eq!(answer.errors.len(), 1);
    assert_eq!(answer.errors[0].policy_id, "no-large-withdrawals");
    assert!(
        answer.errors[0].message.contains("overflow"),
        "{}",
        answer.errors[0].message
    );
    assert!(
        answer
            .reasons
            .contains(&Reason::EvaluationError.as_str().to_owned())
    );
}

// Random requests: drawn from the names the bundled facts know, plus names they do not.

fn entity_type() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "ServiceAccount",
        "Agent",
        "ApiKey",
        "Config",
        "Dataset",
        "Tool",
        "Database",
        "Approval",
        "Human",
        "Scope",
        "Robot",
        "",
        "Bad Type",
        "A::B",
    ])
    .prop_map(str::to_owned)
}

fn entity_id() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "deploy-bot",
            "legacy-cron",
            "old-deployer",
            "db-admin",
            "reporting",
            "pipeline-etl",
            "pipeline-expired",
            "procurement-agent",
            "payments-api",
            "search-api",
            "payments-api-staging",
            "sales-2026",
            "salaries",
            "vendor-portal",
            "payments-transfer",
            "customers-prod",
            "production",
            "alice",
        ])
        .prop_map(str::to_owned),
        ".{0,12}",
    ]
}

fn context_value() -> impl Strategy<Value = ContextValue> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(ContextValue::Bool),
        any::<i64>().prop_map(ContextValue::Long),
        (0i64..10_000).prop_map(ContextValue::Long),
        ".{0,8}".prop_map(ContextValue::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(ContextValue::Set),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..3).prop_map(ContextValue::Record),
        ]
    })
}

fn context() -> impl Strategy<Value = BTreeMap<String, ContextValue>> {
    let key = prop::sample::select(vec![
        "vendor",
        "amount",
        "justification",
        "now",
        "approval",
        "extra",
    ]);
    prop::collection::btree_map(key.prop_map(str::to_owned), context_value(), 0..4)
}

fn check_request() -> impl Strategy<Value = CheckRequest> {
    (
        (entity_type(), entity_id()),
        prop::sample::select(vec![
            "update",
            "read",
            "submit_vendor_request",
            "export",
            "delete",
            "",
        ]),
        (entity_type(), entity_id()),
        context(),
        prop::option::of(prop::sample::select(vec![
            "CHG-1042", "CHG-0990", "CHG-2001", "CHG-1001", "CHG-1043", "TASK-77", "INC-311",
            "CHG-1500", "nope", "",
        ])),
    )
        .prop_map(
            |((pt, pi), action, (rt, ri), context, approval)| CheckRequest {
                principal: EntityRef::new(pt, pi),
                action: action.to_owned(),
                resource: EntityRef::new(rt, ri),
                context,
                approval_id: approval.map(str::to_owned),
                request_id: None,
                resource_description: None,
                caller_identity: None,
                credential: None,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_never_panic_and_never_allow_what_the_facts_forbid(
        request in check_request(),
        now in 1_700_000_000_000i64..4_200_000_000_000,
    ) {
        static ENGINE: std::sync::OnceLock<(Engine, Arc<ManualClock>)> = std::sync::OnceLock::new();
        let (engine, clock) = ENGINE.get_or_init(|| bundled_engine("2026-11-27T12:00:00Z"));
        clock.set(UnixMillis(now));
        let presented = request.approval_id.clone();
        match engine.check(&request) {
            Err(invalid) => prop_assert!(!invalid.field.is_empty() && !invalid.message.is_empty()),
            Ok(decision) => {
                prop_assert!(!decision.reasons.is_empty());
                prop_assert!(decision.valid_until > decision.provenance.decided_at);
                if decision.effect == Effect::Allow {
                    prop_assert!(decision.errors.is_empty());
                    let identity = decision.provenance.identity.as_ref().expect("known identity");
                    prop_assert!(identity.owner.is_some());
                    prop_assert_eq!(identity.status.as_deref(), Some("active"));
                    if presented.is_some() {
                        let approval = decision.provenance.approval.as_ref().expect("approval");
                        prop_assert!(approval.valid_at_decision);
                        prop_assert!(decision.valid_until <= approval.approval.expires_at);
                    }
                }
            }
        }
    }
}

/// One admin-style change to the bundled facts, as the admin API would write it.
#[derive(Debug, Clone)]
pub(crate) enum FactChange {
    Status(usize, usize),
    Owner(usize, usize),
    Revoke(usize, bool),
    Grant(usize, usize, i64),
    NewIdentity(usize, usize),
    /// A dataset put (new, or again with the same parent).
    PutDataset(usize, usize),
    /// An existing scope's attributes.
    ScopeKind(usize, usize),
    /// A scope with entities below it moved under another root, or made a root.
    MoveScope(usize, usize),
}

pub(crate) const IDENTITIES: [(&str, &str); 4] = [
    ("ServiceAccount", "deploy-bot"),
    ("ServiceAccount", "db-admin"),
    ("ApiKey", "pipeline-etl"),
    ("Agent", "procurement-agent"),
];
const HUMANS: [&str; 3] = ["alice", "bob", "carol"];
const STATUSES: [&str; 3] = ["active", "suspended", "retired"];
pub(crate) const APPROVALS: [&str; 4] = ["CHG-1042", "CHG-1043", "TASK-77", "INC-311"];

pub(crate) fn fact_change() -> impl Strategy<Value = FactChange> {
    prop_oneof![
        (0..4usize, 0..3usize).prop_map(|(i, s)| FactChange::Status(i, s)),
        (0..4usize, 0..3usize).prop_map(|(i, h)| FactChange::Owner(i, h)),
        (0..4usize, any::<bool>()).prop_map(|(a, r)| FactChange::Revoke(a, r)),
        (0..4usize, 0..6usize, 1..5_000i64).prop_map(|(i, n, h)| FactChange::Grant(i, n, h)),
        (0..3usize, 0..4usize).prop_map(|(h, n)| FactChange::NewIdentity(h, n)),
        (0..3usize, 0..3usize).prop_map(|(n, s)| FactChange::PutDataset(n, s)),
        (0..3usize, 0..3usize).prop_map(|(n, k)| FactChange::ScopeKind(n, k)),
        (0..3usize, 0..3usize).prop_map(|(n, p)| FactChange::MoveScope(n, p)),
    ]
}

/// The entity JSON a change writes, from the current form of the entity it changes.
pub(crate) fn apply(
    change: &FactChange,
    current: &BTreeMap<String, serde_json::Value>,
) -> serde_json::Value {
    use serde_json::json;
    let key = |t: &str, id: &str| format!("{t}::\"{id}\"");
    let entity = |t: &str, id: &str| json!({"__entity": {"type": t, "id": id}});
    match change {
        FactChange::Status(i, s) => {
            let (t, id) = IDENTITIES[*i];
            let mut e = current[&key(t, id)].clone();
            e["attrs"]["status"] = json!(STATUSES[*s]);
            e
        }
        FactChange::Owner(i, h) => {
            let (t, id) = IDENTITIES[*i];
            let mut e = current[&key(t, id)].clone();
            e["attrs"]["owner"] = entity("Human", HUMANS[*h]);
            e
        }
        FactChange::Revoke(a, revoked) => {
            let mut e = current[&key("Approval", APPROVALS[*a])].clone();
            e["attrs"]["revoked"] = json!(revoked);
            e
        }
        FactChange::Grant(i, n, hours) => {
            let (t, id) = IDENTITIES[*i];
            let at = |h: i64| {
                json!({"__extn": {"fn": "datetime",
                    "arg": UnixMillis(1_790_000_000_000 + h * 3_600_000).to_cedar_datetime()}})
            };
            json!({
                "uid": {"type": "Approval", "id": format!("live-{n}")},
                "attrs": {
                    "ticket": format!("CHG-L{n}"), "approver": entity("Human", "alice"),
                    "actions": [entity("Action", "update"), entity("Action", "read")],
                    "scope": entity("Scope", "production"), "not_before": at(0),
                    "expires_at": at(*hours), "revoked": false,
                },
                "parents": [{"type": t, "id": id}],
            })
        }
        FactChange::PutDataset(n, s) => {
            let scope = ["sales-datasets", "hr-datasets", "production"][*s];
            json!({
                "uid": {"type": "Dataset", "id": format!("live-ds-{n}")},
                "attrs": {},
                "parents": [{"type": "Scope", "id": scope}],
            })
        }
        FactChange::ScopeKind(n, k) => {
            let id = ["sales-datasets", "staging", "production"][*n];
            let mut e = current[&key("Scope", id)].clone();
            e["attrs"]["kind"] = json!(["datasets", "environment", "other"][*k]);
            e
        }
        FactChange::MoveScope(n, p) => {
            let id = ["sales-datasets", "hr-datasets", "prod-payments-config"][*n];
            let mut e = current[&key("Scope", id)].clone();
            e["parents"] = match ["production", "staging", ""][*p] {
                "" => json!([]),
                parent => json!([{"type": "Scope", "id": parent}]),
            };
            e
        }
        FactChange::NewIdentity(h, n) => json!({
            "uid": {"type": "Agent", "id": format!("agent-{n}")},
            "attrs": {
                "owner": entity("Human", HUMANS[*h]), "status": "active",
                "environment": "production", "scopes": [entity("Scope", "production")],
                "spiffe_id": format!("spiffe://test/agent-{n}"),
            },
            "parents": [],
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// Facts changed one change at a time in their store (the admin API's path: each change
    /// keeps every row's ancestors closed, moves included) equal facts built afresh from the
    /// file with the same changes, in everything a decision reads.
    #[test]
    fn facts_changed_in_the_store_equal_facts_built_afresh(
        changes in proptest::collection::vec(fact_change(), 1..12)
    ) {
        let dir = crate::common::bundled_policies();
        let policies = warrant_policy::PolicySnapshot::load(&dir).unwrap();
        let (base, _) = warrant_facts::load_entities_file(&dir).unwrap();
        let mut overlay: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        let mut facts = warrant_store::facts::merged(policies.schema(), &base, std::iter::empty()).unwrap();
        let base_values: BTreeMap<String, serde_json::Value> = base
            .iter()
            .map(|(key, text)| (key.clone(), serde_json::from_str(text.get()).unwrap()))
            .collect();
        for change in &changes {
            let mut current = base_values.clone();
            current.extend(overlay.clone());
            let written = apply(change, &current);
            let uid = cedar_policy::EntityUid::from_json(written["uid"].clone()).unwrap();
            overlay.insert(uid.to_string(), written.clone());
            facts = facts
                .with_changes(policies.schema(), std::slice::from_ref(&written), &[])
                .unwrap();
            let fresh = warrant_store::facts::merged(
                policies.schema(),
                &base,
                overlay.iter().map(|(k, v)| (k.as_str(), Some(v))),
            )
            .unwrap();
            prop_assert_eq!(facts.identities(), fresh.identities());
            prop_assert_eq!(facts.approvals(), fresh.approvals());
            prop_assert_eq!(facts.entity_count(), fresh.entity_count());
            let all = fresh.to_cedar().unwrap();
            for entity in all.iter() {
                let uid = entity.uid();
                let (Some(mine), Some(theirs)) = (facts.entity(&uid), fresh.entity(&uid)) else {
                    // (The schema's actions are in neither store.)
                    prop_assert!(!facts.contains(&uid) || uid.type_name().basename() == "Action");
                    continue;
                };
                prop_assert_eq!(
                    mine.as_entity().to_json_value().unwrap(),
                    theirs.as_entity().to_json_value().unwrap()
                );
                let ancestors = |e: &warrant_facts::StoredEntity| {
                    let mut all: Vec<String> = e.entity.ancestors().map(ToString::to_string).collect();
                    all.sort();
                    all
                };
                prop_assert_eq!(ancestors(&mine), ancestors(&theirs));
                prop_assert_eq!(&mine.ancestors, &theirs.ancestors, "{} scope order", uid);
                prop_assert_eq!(facts.scopes_of(&uid), fresh.scopes_of(&uid));
                prop_assert_eq!(facts.reached([&uid], None).unwrap().datetimes, fresh.reached([&uid], None).unwrap().datetimes);
            }
            for spiffe in ["spiffe://test/agent-0", "spiffe://test/agent-1", "spiffe://test/agent-2", "spiffe://test/agent-3"] {
                prop_assert_eq!(facts.identity_by_spiffe_id(spiffe), fresh.identity_by_spiffe_id(spiffe));
            }
        }
    }
}

/// A world for the slice property: users in nested groups with managers, folders in folders,
/// documents in folders with owners, reviewers and a record that names a folder.
const SLICE_SCHEMA: &str = r#"
entity Group in [Group];
entity User in [Group] = { manager?: User, level: Long };
entity Folder in [Folder] = { owner: User };
entity Doc in [Folder] = { owner: User, reviewers: Set<User>, meta: { folder: Folder } };
action "read" appliesTo { principal: [User], resource: [Doc, Folder], context: { now: datetime } };
"#;

/// Policies that read through every kind of path a slice must keep: attributes of attributes,
/// sets of entities, records, ancestors of referred entities, and entities named by literals.
const SLICE_POLICIES: &str = r#"
@id("owner") permit (principal, action, resource) when { resource.owner == principal };
@id("manager-of-owner") permit (principal, action, resource)
  when { resource.owner has manager && resource.owner.manager == principal };
@id("grand-manager") permit (principal, action, resource)
  when { principal has manager && principal.manager has manager
         && principal.manager.manager.level > 7 && resource in Folder::"f0" };
@id("reviewer") permit (principal, action, resource is Doc) when { resource.reviewers.contains(principal) };
@id("folder-owner-group") permit (principal, action, resource is Doc)
  when { resource.meta.folder.owner in Group::"g1" && principal in Group::"g0" };
@id("named-user") forbid (principal, action, resource)
  when { User::"u0".level > 8 && principal in Group::"g2" };
@id("owner-level") forbid (principal, action, resource is Doc)
  when { resource.meta.folder.owner.level > principal.level + 5 };
"#;

#[derive(Debug, Clone)]
pub(crate) struct SliceWorld {
    /// Per user: manager, level, groups.
    users: Vec<(Option<usize>, i64, Vec<usize>)>,
    /// Per group: parent groups (only later ones, so no cycles).
    groups: Vec<Vec<usize>>,
    /// Per folder: parent folders (later ones) and owner.
    folders: Vec<(Vec<usize>, usize)>,
    /// Per doc: folders, owner, reviewers, meta folder.
    docs: Vec<(Vec<usize>, usize, Vec<usize>, usize)>,
}

pub(crate) fn slice_world() -> impl Strategy<Value = SliceWorld> {
    let subset = |n: usize| proptest::collection::vec(0..n, 0..3);
    (
        proptest::collection::vec((prop::option::of(0..6usize), 0..10i64, subset(4)), 6),
        proptest::collection::vec(subset(4), 4),
        proptest::collection::vec((subset(4), 0..6usize), 4),
        proptest::collection::vec((subset(4), 0..6usize, subset(6), 0..4usize), 5),
    )
        .prop_map(|(users, groups, folders, docs)| {
            let later = |i: usize, parents: Vec<usize>| -> Vec<usize> {
                parents.into_iter().filter(|p| *p > i).collect()
            };
            SliceWorld {
                groups: groups
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| later(i, p))
                    .collect(),
                folders: folders
                    .into_iter()
                    .enumerate()
                    .map(|(i, (p, owner))| (later(i, p), owner))
                    .collect(),
                users,
                docs,
            }
        })
}

pub(crate) fn slice_world_json(world: &SliceWorld) -> serde_json::Value {
    use serde_json::json;
    let r = |t: &str, i: usize, prefix: &str| json!({"type": t, "id": format!("{prefix}{i}")});
    let e = |t: &str, i: usize, prefix: &str| json!({"__entity": r(t, i, prefix)});
    let mut all = Vec::new();
    for (i, parents) in world.groups.iter().enumerate() {
        let parents: Vec<_> = parents.iter().map(|p| r("Group", *p, "g")).collect();
        all.push(json!({"uid": r("Group", i, "g"), "attrs": {}, "parents": parents}));
    }
    for (i, (manager, level, groups)) in world.users.iter().enumerate() {
        let mut attrs = json!({"level": level});
        if let Some(m) = manager {
            attrs["manager"] = e("User", *m, "u");
        }
        let parents: Vec<_> = groups.iter().map(|g| r("Group", *g, "g")).collect();
        all.push(json!({"uid": r("User", i, "u"), "attrs": attrs, "parents": parents}));
    }
    for (i, (parents, owner)) in world.folders.iter().enumerate() {
        let parents: Vec<_> = parents.iter().map(|p| r("Folder", *p, "f")).collect();
        all.push(
            json!({"uid": r("Folder", i, "f"), "attrs": {"owner": e("User", *owner, "u")},
            "parents": parents}),
        );
    }
    for (i, (folders, owner, reviewers, meta)) in world.docs.iter().enumerate() {
        let parents: Vec<_> = folders.iter().map(|p| r("Folder", *p, "f")).collect();
        let reviewers: Vec<_> = reviewers.iter().map(|u| e("User", *u, "u")).collect();
        all.push(json!({"uid": r("Doc", i, "d"), "attrs": {
            "owner": e("User", *owner, "u"), "reviewers": reviewers,
            "meta": {"folder": e("Folder", *meta, "f")}}, "parents": parents}));
    }
    serde_json::Value::Array(all)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A decision over the slice a request can reach equals the decision over the whole facts:
    /// the same effect, the same determining policies, the same errors.
    #[test]
    fn a_decision_over_a_slice_equals_one_over_the_whole_facts(world in slice_world()) {
        use cedar_policy::{Authorizer, Context, EntityUid, Request};
        static POLICIES: std::sync::OnceLock<warrant_policy::PolicySnapshot> =
            std::sync::OnceLock::new();
        let policies = POLICIES.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("schema.cedarschema"), SLICE_SCHEMA).unwrap();
            std::fs::write(dir.path().join("world.cedar"), SLICE_POLICIES).unwrap();
            warrant_policy::PolicySnapshot::load(dir.path()).unwrap()
        });
        let facts = warrant_store::facts::from_json(
            &slice_world_json(&world).to_string(),
            policies.schema(),
        )
        .unwrap();
        let action: EntityUid = r#"Action::"read""#.parse().unwrap();
        let literals = &policies.time_use().entity_literals;
        prop_assert!(literals.len() >= 4, "the policies name entities: {literals:?}");
        let resources = (0..5)
            .map(|i| format!(r#"Doc::"d{i}""#))
            .chain((0..4).map(|i| format!(r#"Folder::"f{i}""#)));
        for resource in resources {
            let resource: EntityUid = resource.parse().unwrap();
            for user in 0..6 {
                let principal: EntityUid = format!(r#"User::"u{user}""#).parse().unwrap();
                let context = Context::from_pairs([(
                    "now".to_owned(),
                    cedar_policy::RestrictedExpression::new_datetime("2026-11-29"),
                )])
                .unwrap();
                let request = Request::new(
                    principal.clone(), action.clone(), resource.clone(), context,
                    Some(policies.schema()),
                )
                .unwrap();
                let whole = Authorizer::new().is_authorized(&request, policies.policies(), &facts.to_cedar().unwrap());
                let roots = [&principal, &action, &resource].into_iter().chain(literals);
                let slice = facts.slice(roots, None).unwrap();
                prop_assert!((slice.len() as u64) < facts.entity_count());
                let sliced = Authorizer::new().is_authorized(&request, policies.policies(), slice.entities());
                prop_assert_eq!(whole.decision(), sliced.decision(), "{} on {}", principal, resource);
                let reasons = |r: &cedar_policy::Response| {
                    let mut v: Vec<String> = r.diagnostics().reason().map(ToString::to_string).collect();
                    v.sort();
                    v
                };
                prop_assert_eq!(reasons(&whole), reasons(&sliced));
                prop_assert_eq!(
                    whole.diagnostics().errors().count(),
                    sliced.diagnostics().errors().count()
                );
            }
        }
    }
}

#[test]
fn a_denial_names_the_approval_that_would_allow_it_at_any_millisecond() {
    // The hypothetical approval's window starts at `now`, whatever its milliseconds (Cedar reads
    // exactly three fractional digits, or none).
    for now in [
        "2026-11-27T12:00:00Z",
        "2026-11-27T12:00:00.120Z",
        "2026-11-27T12:00:00.100Z",
        "2026-11-27T12:00:00.007Z",
        "2026-11-27T12:00:00.999Z",
    ] {
        let (engine, _) = bundled_engine(now);
        let mut unapproved = deploy("");
        unapproved.approval_id = None;
        let denied = engine.check(&unapproved).unwrap();
        assert_eq!(denied.effect, Effect::Deny);
        let advice = denied
            .approval_required
            .unwrap_or_else(|| panic!("no advice at {now}: {:?}", denied.reasons));
        assert_eq!(advice.scope.id, "prod-payments-config");
        // Presenting an approval that is not valid yet is advised the same way.
        let early = engine.check(&deploy("CHG-2001")).unwrap();
        assert_eq!(early.reasons, ["approval-not-yet-valid"]);
        assert!(early.approval_required.is_some());
    }
}

/// One change that adds a scope under an existing one and a dataset under the new scope: the
/// dataset's ancestors run through both (the new scope's, within the change, and its parent's,
/// in the facts), as in facts built afresh.
#[test]
fn a_change_adding_a_scope_and_a_dataset_under_it_closes_ancestors_through_both() {
    let dir = crate::common::bundled_policies();
    let policies = warrant_policy::PolicySnapshot::load(&dir).unwrap();
    let (base, _) = warrant_facts::load_entities_file(&dir).unwrap();
    let facts = warrant_store::facts::merged(policies.schema(), &base, std::iter::empty()).unwrap();
    let changes = [
        serde_json::json!({"uid": {"type": "Dataset", "id": "team-x-events"}, "attrs": {},
               "parents": [{"type": "Scope", "id": "team-x"}]}),
        serde_json::json!({"uid": {"type": "Scope", "id": "team-x"}, "attrs": {"kind": "dataset-family"},
               "parents": [{"type": "Scope", "id": "sales-datasets"}]}),
    ];
    let updated = facts
        .with_changes(policies.schema(), &changes, &[])
        .unwrap();
    let fresh = warrant_store::facts::merged(
        policies.schema(),
        &base,
        changes
            .iter()
            .map(|change| (change["uid"]["id"].as_str().unwrap(), Some(change))),
    );
    let fresh = match fresh {
        Ok(fresh) => fresh,
        Err(error) => panic!("{error}"),
    };
    let dataset = cedar_policy::EntityUid::from_json(changes[0]["uid"].clone()).unwrap();
    let ancestors = |facts: &warrant_facts::Facts| {
        let mut all: Vec<String> = facts
            .entity(&dataset)
            .unwrap()
            .entity
            .ancestors()
            .map(ToString::to_string)
            .collect();
        all.sort();
        all
    };
    assert_eq!(
        ancestors(&updated),
        [
            r#"Scope::"production""#,
            r#"Scope::"sales-datasets""#,
            r#"Scope::"team-x""#
        ]
    );
    assert_eq!(ancestors(&updated), ancestors(&fresh));
    assert_eq!(updated.scopes_of(&dataset), fresh.scopes_of(&dataset));
}
