//! The decision cache against fresh evaluation. A differential property test drives an engine
//! with the cache and one without through the same random steps (checks, clock moves, approvals
//! granted and revoked, identities suspended or retired, a scope moved, policies replaced), each
//! change applied as the control plane applies it (in place where it can, else rebuilt as the
//! successor of the facts before, so that cached decisions that read nothing it changed keep
//! answering), and requires the same answer after every step. Then the specific edges, one test
//! each.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};
use warrant_domain::clock::{Clock, ManualClock, UnixMillis};
use warrant_domain::{CheckRequest, ContextValue, Decision, Effect, EntityRef, InvalidRequest};
use warrant_engine::cache::CacheSettings;
use warrant_engine::engine::{Engine, EngineSettings, Snapshot};
use warrant_facts::Facts;
use warrant_policy::PolicySnapshot;

const T0: &str = "2030-01-01T00:00:00Z";

fn t0() -> UnixMillis {
    UnixMillis::parse_cedar_datetime(T0).unwrap()
}

fn datetime(at: UnixMillis) -> Value {
    json!({"__extn": {"fn": "datetime", "arg": at.to_cedar_datetime()}})
}

fn uid(type_name: &str, id: &str) -> Value {
    json!({"type": type_name, "id": id})
}

#[derive(Debug, Clone)]
struct ApprovalState {
    subject: &'static str,
    scope: &'static str,
    not_before_ms: i64,
    expires_after_ms: i64,
    revoked: bool,
}

/// The facts the random steps change.
#[derive(Debug, Clone)]
struct World {
    bot1_active: bool,
    bot2_owned: bool,
    bot2_exists: bool,
    /// The scope `prod-a` (which holds `cfg-a`) lies in: `production` or `staging`.
    prod_a_in: &'static str,
    key_expires_ms: i64,
    approvals: BTreeMap<&'static str, ApprovalState>,
}

impl World {
    fn new() -> Self {
        World {
            bot1_active: true,
            bot2_owned: true,
            bot2_exists: true,
            prod_a_in: "production",
            key_expires_ms: 30_000,
            approvals: BTreeMap::new(),
        }
    }

    fn entities_json(&self) -> String {
        let t0 = t0();
        let entity = |t: &str, id: &str, attrs: Value, parents: Vec<Value>| json!({"uid": uid(t, id), "attrs": attrs, "parents": parents});
        let scope =
            |id: &str, parents: Vec<Value>| entity("Scope", id, json!({"kind": "test"}), parents);
        let mut all = vec![
            entity(
                "Human",
                "alice",
                json!({"name": "Alice", "email": "a@example.com"}),
                vec![],
            ),
            scope("production", vec![]),
            scope("staging", vec![]),
            scope("prod-a", vec![uid("Scope", self.prod_a_in)]),
            scope("sales", vec![uid("Scope", "production")]),
            scope("tools", vec![]),
            entity("Config", "cfg-a", json!({}), vec![uid("Scope", "prod-a")]),
            entity(
                "Config",
                "cfg-b",
                json!({}),
                vec![uid("Scope", "production")],
            ),
            entity("Config", "cfg-s", json!({}), vec![uid("Scope", "staging")]),
            entity("Dataset", "ds-1", json!({}), vec![uid("Scope", "sales")]),
            entity("Tool", "portal", json!({}), vec![uid("Scope", "tools")]),
        ];
        let account = |id: &str, status: &str, owned: bool| {
            let mut attrs = json!({"status": status, "environment": "production", "privileged": false,
                "scopes": [uid("Scope", "production")]});
            if owned {
                attrs["owner"] = uid("Human", "alice");
            }
            entity("ServiceAccount", id, attrs, vec![])
        };
        all.push(account(
            "bot-1",
            if self.bot1_active {
                "active"
            } else {
                "suspended"
            },
            true,
        ));
        if self.bot2_exists {
            all.push(account("bot-2", "active", self.bot2_owned));
        }
        all.push(entity(
            "ApiKey",
            "key-1",
            json!({"owner": uid("Human", "alice"), "status": "active",
            "environment": "production", "scopes": [uid("Scope", "sales")],
            "expires_at": datetime(t0.saturating_add_millis(self.key_expires_ms))}),
            vec![],
        ));
        all.push(entity(
            "Agent",
            "agent-1",
            json!({"owner": uid("Human", "alice"), "status": "active",
            "environment": "production", "scopes": [uid("Scope", "tools")]}),
            vec![],
        ));
        for (id, approval) in &self.approvals {
            let (subject_type, action) = match approval.subject {
                "agent-1" => ("Agent", "submit_vendor_request"),
                _ => ("ServiceAccount", "update"),
            };
            let not_before = t0.saturating_add_millis(approval.not_before_ms);
            all.push(entity("Approval", id, json!({
                "ticket": id, "approver": uid("Human", "alice"),
                "actions": [uid("Action", action)], "scope": uid("Scope", approval.scope),
                "not_before": datetime(not_before),
                "expires_at": datetime(not_before.saturating_add_millis(approval.expires_after_ms)),
                "revoked": approval.revoked, "max_amount": 5000,
            }), vec![uid(subject_type, approval.subject)]));
        }
        serde_json::to_string(&all).unwrap()
    }
}

/// The bundled policies, and three variants: a change freeze on production, and freezes that
/// end or start at a fixed time (datetime literals in a policy).
fn policy_variants() -> Vec<Arc<PolicySnapshot>> {
    let bundled = crate::common::bundled_policies();
    let variant = |extra: &str| {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&bundled).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        std::fs::write(dir.path().join("extra.cedar"), extra).unwrap();
        Arc::new(PolicySnapshot::load(dir.path()).unwrap())
    };
    vec![
        Arc::new(PolicySnapshot::load(&bundled).unwrap()),
        variant(
            "@id(\"change-freeze\")\nforbid (principal, action == Action::\"update\", resource in Scope::\"production\");",
        ),
        variant(
            "@id(\"freeze-until-one-minute\")\nforbid (principal, action == Action::\"update\", resource)\nwhen { context.now < datetime(\"2030-01-01T00:01:00Z\") };",
        ),
        variant(
            "@id(\"freeze-from-half-a-minute\")\nforbid (principal, action == Action::\"update\", resource)\nwhen { context.now >= datetime(\"2030-01-01T00:00:30Z\") };",
        ),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Check(usize),
    Advance(i64),
    Grant(&'static str, ApprovalState),
    Revoke(&'static str),
    Suspend(bool),
    Own(bool),
    KeyExpiry(i64),
    Policies(usize),
    Retire(bool),
    MoveProdA(&'static str),
}

fn requests() -> Vec<CheckRequest> {
    let ask =
        |p: (&str, &str), action: &str, r: (&str, &str), approval: Option<&str>| CheckRequest {
            principal: EntityRef::new(p.0, p.1),
            action: action.to_owned(),
            resource: EntityRef::new(r.0, r.1),
            context: BTreeMap::new(),
            approval_id: approval.map(str::to_owned),
            request_id: None,
            resource_description: None,
            caller_identity: None,
            credential: None,
        };
    let bot1 = ("ServiceAccount", "bot-1");
    let vendor = |amount: i64| CheckRequest {
        context: BTreeMap::from([
            ("vendor".to_owned(), ContextValue::String("Acme".into())),
            ("amount".to_owned(), ContextValue::Long(amount)),
        ]),
        ..ask(
            ("Agent", "agent-1"),
            "submit_vendor_request",
            ("Tool", "portal"),
            Some("T1"),
        )
    };
    vec![
        ask(bot1, "update", ("Config", "cfg-a"), Some("A1")),
        ask(bot1, "update", ("Config", "cfg-a"), Some("A2")),
        ask(bot1, "update", ("Config", "cfg-a"), Some("A3")),
        ask(bot1, "update", ("Config", "cfg-a"), None),
        ask(bot1, "update", ("Config", "cfg-b"), Some("A1")),
        ask(bot1, "update", ("Config", "cfg-s"), None),
        ask(
            ("ServiceAccount", "bot-2"),
            "update",
            ("Config", "cfg-a"),
            Some("A1"),
        ),
        ask(
            ("ServiceAccount", "bot-2"),
            "update",
            ("Config", "cfg-s"),
            None,
        ),
        ask(("ApiKey", "key-1"), "read", ("Dataset", "ds-1"), None),
        vendor(100),
        vendor(9000),
        CheckRequest {
            context: BTreeMap::from([("now".to_owned(), ContextValue::Long(0))]),
            ..ask(bot1, "update", ("Config", "cfg-s"), None)
        },
    ]
}

fn offset() -> impl Strategy<Value = i64> {
    prop::sample::select(vec![-60_000i64, 0, 1, 1_000, 2_000, 5_000, 60_000, 120_000])
}

fn step(request_count: usize) -> impl Strategy<Value = Step> {
    let approval = (
        prop::sample::select(vec!["bot-1", "bot-2"]),
        prop::sample::select(vec!["prod-a", "production"]),
        offset(),
        prop::sample::select(vec![1i64, 999, 1_000, 10_000, 90_000]),
    )
        .prop_map(
            |(subject, scope, not_before_ms, expires_after_ms)| ApprovalState {
                subject,
                scope,
                not_before_ms,
                expires_after_ms,
                revoked: false,
            },
        );
    let task = (offset(), prop::sample::select(vec![1_000i64, 60_000])).prop_map(|(nb, len)| {
        ApprovalState {
            subject: "agent-1",
            scope: "tools",
            not_before_ms: nb,
            expires_after_ms: len,
            revoked: false,
        }
    });
    prop_oneof![
        // Most checks present an approval: that is where time matters most.
        5 => (0..3usize).prop_map(Step::Check),
        6 => (0..request_count).prop_map(Step::Check),
        4 => prop::sample::select(vec![1i64, 500, 999, 1_000, 4_000, 10_000, 59_999, 61_000])
            .prop_map(Step::Advance),
        3 => (prop::sample::select(vec!["A1", "A2", "A3"]), approval).prop_map(|(id, a)| Step::Grant(id, a)),
        1 => task.prop_map(|a| Step::Grant("T1", a)),
        1 => prop::sample::select(vec!["A1", "A2", "A3", "T1"]).prop_map(Step::Revoke),
        1 => any::<bool>().prop_map(Step::Suspend),
        1 => any::<bool>().prop_map(Step::Own),
        1 => offset().prop_map(Step::KeyExpiry),
        1 => (0usize..4).prop_map(Step::Policies),
        1 => any::<bool>().prop_map(Step::Retire),
        1 => prop::sample::select(vec!["production", "staging"]).prop_map(Step::MoveProdA),
    ]
}

/// What must be equal between a cached and a fresh answer.
fn essence(
    answer: &Result<Decision, InvalidRequest>,
) -> Result<(Effect, Vec<String>, usize, Option<bool>), String> {
    match answer {
        Ok(d) => Ok((
            d.effect,
            d.reasons.clone(),
            d.errors.len(),
            d.provenance.approval.as_ref().map(|a| a.valid_at_decision),
        )),
        Err(invalid) => Err(invalid.field.clone()),
    }
}

struct Pair {
    clock: Arc<ManualClock>,
    cached: Engine,
    fresh: Engine,
}

impl Pair {
    fn new(policies: Arc<PolicySnapshot>, world: &World) -> Pair {
        let clock = Arc::new(ManualClock::new(t0()));
        let snapshot = snapshot(policies, world);
        let settings = EngineSettings {
            allow_max_age_ms: 60_000,
            deny_max_age_ms: 10_000,
            cache: Some(CacheSettings::default()),
            ..EngineSettings::default()
        };
        Pair {
            cached: Engine::new(
                snapshot.clone(),
                clock.clone(),
                settings,
                warrant_engine::engine::EngineParts::default(),
            ),
            fresh: Engine::new(
                snapshot,
                clock.clone(),
                EngineSettings {
                    cache: None,
                    ..settings
                },
                warrant_engine::engine::EngineParts::default(),
            ),
            clock,
        }
    }

    fn replace(&self, snapshot: Snapshot) {
        self.cached.replace_snapshot(snapshot.clone());
        self.fresh.replace_snapshot(snapshot);
    }
}

/// The facts of `world` as the change that follows `previous` (the facts of `before`), made
/// the way the control plane makes them: one change to the store, of the entities that changed
/// or went.
fn successor(previous: &Facts, policies: &PolicySnapshot, before: &World, world: &World) -> Facts {
    let by_uid = |w: &World| -> BTreeMap<String, Value> {
        serde_json::from_str::<Vec<Value>>(&w.entities_json())
            .unwrap()
            .into_iter()
            .map(|e| (e["uid"].to_string(), e))
            .collect()
    };
    let (old, new) = (by_uid(before), by_uid(world));
    let changed: Vec<Value> = new
        .iter()
        .filter(|(key, entity)| old.get(*key) != Some(entity))
        .map(|(_, entity)| entity.clone())
        .collect();
    let removed: Vec<cedar_policy::EntityUid> = old
        .iter()
        .filter(|(key, _)| !new.contains_key(*key))
        .map(|(_, entity)| cedar_policy::EntityUid::from_json(entity["uid"].clone()).unwrap())
        .collect();
    previous
        .with_changes(policies.schema(), &changed, &removed)
        .unwrap()
}

fn snapshot(policies: Arc<PolicySnapshot>, world: &World) -> Snapshot {
    let facts = warrant_store::facts::from_json(&world.entities_json(), policies.schema()).unwrap();
    Snapshot {
        policies,
        facts: Arc::new(facts),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 800, ..ProptestConfig::default() })]

    #[test]
    fn cached_answers_equal_fresh_evaluation(
        first_policies in 0usize..4,
        steps in prop::collection::vec(step(requests().len()), 1..80),
    ) {
        static VARIANTS: std::sync::OnceLock<Vec<Arc<PolicySnapshot>>> = std::sync::OnceLock::new();
        let variants = VARIANTS.get_or_init(policy_variants);
        let requests = requests();
        let mut world = World::new();
        let mut policies = Arc::clone(&variants[first_policies]);
        let pair = Pair::new(Arc::clone(&policies), &world);
        for step in steps {
            let before = world.clone();
            match step {
                Step::Check(index) => {
                    let now = pair.clock.now();
                    let cached = pair.cached.check(&requests[index].clone());
                    let fresh = pair.fresh.check(&requests[index].clone());
                    prop_assert_eq!(essence(&cached), essence(&fresh), "request {} at {:?}", index, now);
                    if let (Ok(cached), Ok(fresh)) = (&cached, &fresh) {
                        prop_assert!(cached.valid_until > now);
                        prop_assert!(cached.valid_until <= fresh.valid_until);
                    }
                    continue;
                }
                Step::Advance(ms) => {
                    pair.clock.advance_millis(ms);
                    continue;
                }
                Step::Grant(id, mut approval) => {
                    // Windows are drawn relative to the moment of the grant.
                    approval.not_before_ms += pair.clock.now().0 - t0().0;
                    world.approvals.insert(id, approval);
                }
                Step::Revoke(id) => {
                    if let Some(approval) = world.approvals.get_mut(id) {
                        approval.revoked = true;
                    }
                }
                Step::Suspend(suspended) => world.bot1_active = !suspended,
                Step::Own(owned) => world.bot2_owned = owned,
                Step::KeyExpiry(ms) => world.key_expires_ms = (pair.clock.now().0 - t0().0) + ms,
                Step::Policies(index) => policies = Arc::clone(&variants[index]),
                Step::Retire(retired) => world.bot2_exists = !retired,
                Step::MoveProdA(scope) => world.prod_a_in = scope,
            }
            let previous = pair.cached.snapshot();
            let facts = successor(&previous.facts, &policies, &before, &world);
            pair.replace(Snapshot { policies: Arc::clone(&policies), facts: Arc::new(facts) });
        }
    }
}

// The edges, one by one.

fn vendor_request(amount: i64) -> CheckRequest {
    requests()
        .into_iter()
        .find(|r| r.context.get("amount") == Some(&ContextValue::Long(amount)))
        .unwrap()
}

fn bot1_update_with(approval: &str) -> CheckRequest {
    requests()[0].clone().with_approval(approval)
}

trait WithApproval {
    fn with_approval(self, approval: &str) -> Self;
}

impl WithApproval for CheckRequest {
    fn with_approval(mut self, approval: &str) -> Self {
        self.approval_id = Some(approval.to_owned());
        self
    }
}

fn world_with(id: &'static str, approval: ApprovalState) -> World {
    let mut world = World::new();
    world.approvals.insert(id, approval);
    world
}

fn a1(not_before_ms: i64, expires_after_ms: i64) -> ApprovalState {
    ApprovalState {
        subject: "bot-1",
        scope: "prod-a",
        not_before_ms,
        expires_after_ms,
        revoked: false,
    }
}

fn bundled() -> Arc<PolicySnapshot> {
    Arc::new(PolicySnapshot::load(&crate::common::bundled_policies()).unwrap())
}

#[test]
fn an_approval_that_expires_between_two_identical_checks() {
    let pair = Pair::new(bundled(), &world_with("A1", a1(-1_000, 6_000)));
    let first = pair.cached.check(&bot1_update_with("A1")).unwrap();
    assert_eq!(first.effect, Effect::Allow);
    assert_eq!(first.valid_until, t0().saturating_add_millis(5_000));
    pair.clock.advance_millis(4_999);
    let hit = pair.cached.check(&bot1_update_with("A1")).unwrap();
    assert!(hit.provenance.answered_from_cache);
    assert_eq!(hit.effect, Effect::Allow);
    pair.clock.advance_millis(1);
    let after = pair.cached.check(&bot1_update_with("A1")).unwrap();
    assert_eq!(after.effect, Effect::Deny);
    assert_eq!(after.reasons, ["approval-expired"]);
    assert!(!after.provenance.answered_from_cache);
}

#[test]
fn an_approval_that_becomes_valid() {
    let pair = Pair::new(bundled(), &world_with("A1", a1(3_000, 60_000)));
    let early = pair.cached.check(&bot1_update_with("A1")).unwrap();
    assert_eq!(early.reasons, ["approval-not-yet-valid"]);
    assert_eq!(early.valid_until, t0().saturating_add_millis(3_000));
    pair.clock.advance_millis(2_999);
    assert!(
        pair.cached
            .check(&bot1_update_with("A1"))
            .unwrap()
            .provenance
            .answered_from_cache
    );
    pair.clock.advance_millis(1);
    let valid = pair.cached.check(&bot1_update_with("A1")).unwrap();
    assert_eq!(valid.effect, Effect::Allow);
    assert!(!valid.provenance.answered_from_cache);
}

#[test]
fn a_policy_reload_that_turns_allow_into_deny() {
    let world = world_with("A1", a1(0, 60_000));
    let variants = policy_variants();
    let pair = Pair::new(Arc::clone(&variants[0]), &world);
    assert_eq!(
        pair.cached.check(&bot1_update_with("A1")).unwrap().effect,
        Effect::Allow
    );
    assert!(
        pair.cached
            .check(&bot1_update_with("A1"))
            .unwrap()
            .provenance
            .answered_from_cache
    );
    pair.replace(snapshot(Arc::clone(&variants[1]), &world));
    let after = pair.cached.check(&bot1_update_with("A1")).unwrap();
    assert_eq!(after.effect, Effect::Deny);
    assert_eq!(after.reasons, ["change-freeze"]);
}

#[test]
fn a_revocation_applies_to_the_very_next_check() {
    let mut world = world_with("A1", a1(0, 60_000));
    let pair = Pair::new(bundled(), &world);
    assert_eq!(
        pair.cached.check(&bot1_update_with("A1")).unwrap().effect,
        Effect::Allow
    );
    world.approvals.get_mut("A1").unwrap().revoked = true;
    pair.replace(snapshot(bundled(), &world));
    assert_eq!(
        pair.cached.check(&bot1_update_with("A1")).unwrap().reasons,
        ["approval-revoked"]
    );
}

#[test]
fn two_requests_that_differ_only_in_context() {
    let pair = Pair::new(
        bundled(),
        &world_with(
            "T1",
            ApprovalState {
                subject: "agent-1",
                scope: "tools",
                not_before_ms: 0,
                expires_after_ms: 60_000,
                revoked: false,
            },
        ),
    );
    for _ in 0..2 {
        assert_eq!(
            pair.cached.check(&vendor_request(100)).unwrap().effect,
            Effect::Allow
        );
        assert_eq!(
            pair.cached.check(&vendor_request(9000)).unwrap().reasons,
            ["vendor-request-over-approved-amount"]
        );
    }
}

#[test]
fn a_time_literal_in_a_policy_bounds_the_entry() {
    let world = world_with("A1", a1(-1_000, 600_000));
    let pair = Pair::new(Arc::clone(&policy_variants()[2]), &world);
    let frozen = pair.cached.check(&bot1_update_with("A1")).unwrap();
    assert_eq!(frozen.reasons, ["freeze-until-one-minute"]);
    assert_eq!(
        frozen.valid_until,
        t0().saturating_add_millis(10_000),
        "deny max age"
    );
    pair.clock.advance_millis(55_000);
    let frozen = pair.cached.check(&bot1_update_with("A1")).unwrap();
    assert_eq!(
        frozen.valid_until,
        UnixMillis::parse_cedar_datetime("2030-01-01T00:01:00Z").unwrap()
    );
    pair.clock.advance_millis(5_000);
    assert_eq!(
        pair.cached.check(&bot1_update_with("A1")).unwrap().effect,
        Effect::Allow
    );
}

#[test]
fn a_hit_is_a_new_decision_that_names_the_evaluation_it_reused() {
    // An approval that began at exactly this millisecond bounds nothing useful (a policy could
    // test `now == not_before`), so this one began a second ago.
    let pair = Pair::new(bundled(), &world_with("A1", a1(-1_000, 60_000)));
    let first = pair.cached.check(&bot1_update_with("A1")).unwrap();
    assert!(!first.provenance.answered_from_cache);
    assert_eq!(first.provenance.evaluation_id, first.decision_id);
    pair.clock.advance_millis(10);
    let mut again = bot1_update_with("A1");
    again.request_id = Some("second".into());
    let hit = pair.cached.check(&again).unwrap();
    assert!(hit.provenance.answered_from_cache);
    assert_ne!(hit.decision_id, first.decision_id);
    assert_eq!(hit.provenance.evaluation_id, first.decision_id);
    assert_eq!(hit.provenance.decided_at, t0().saturating_add_millis(10));
    assert_eq!(hit.valid_until, first.valid_until);
    assert_eq!(hit.request_id.as_deref(), Some("second"));
    let counters = pair.cached.cache().unwrap().counters();
    assert_eq!(counters.hits.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn decisions_with_evaluation_errors_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("schema.cedarschema"), "entity Bot = { n: Long };\nentity Vault;\naction \"open\" appliesTo { principal: [Bot], resource: [Vault], context: { now: datetime } };").unwrap();
    std::fs::write(dir.path().join("p.cedar"), "@id(\"open\")\npermit (principal, action, resource);\n@id(\"overflow\")\nforbid (principal, action, resource) when { principal.n * 2 > 0 };").unwrap();
    std::fs::write(dir.path().join("entities.json"), r#"[{"uid":{"type":"Bot","id":"b"},"attrs":{"n":9223372036854775807},"parents":[]},{"uid":{"type":"Vault","id":"v"},"attrs":{},"parents":[]}]"#).unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    let engine = Engine::new(
        warrant::server::load_snapshot(dir.path()).unwrap(),
        clock,
        EngineSettings::default(),
        warrant_engine::engine::EngineParts::default(),
    );
    let open = CheckRequest {
        principal: EntityRef::new("Bot", "b"),
        action: "open".into(),
        resource: EntityRef::new("Vault", "v"),
        context: BTreeMap::new(),
        approval_id: None,
        request_id: None,
        resource_description: None,
        caller_identity: None,
        credential: None,
    };
    for _ in 0..2 {
        let answer = engine.check(&open.clone()).unwrap();
        assert_eq!(answer.effect, Effect::Deny);
        assert_eq!(answer.errors.len(), 1);
        assert!(!answer.provenance.answered_from_cache);
    }
}

#[test]
fn a_full_cache_evicts_and_counts_it() {
    let clock = Arc::new(ManualClock::new(t0()));
    let settings = EngineSettings {
        cache: Some(CacheSettings {
            max_entries: 8,
            max_bytes: 1024 * 1024,
        }),
        ..EngineSettings::default()
    };
    let policies = bundled();
    let engine = Engine::new(
        snapshot(policies, &World::new()),
        clock,
        settings,
        warrant_engine::engine::EngineParts::default(),
    );
    let mut answers = HashMap::new();
    for n in 0..200 {
        let mut request = vendor_request(100);
        request.approval_id = None;
        request
            .context
            .insert("amount".into(), ContextValue::Long(n));
        answers.insert(n, engine.check(&request).unwrap().effect);
    }
    let cache = engine.cache().unwrap();
    assert!(cache.entry_count() <= 8, "{}", cache.entry_count());
    assert!(
        cache
            .counters()
            .evictions
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(answers.values().all(|effect| *effect == Effect::Deny));
}

#[test]
fn a_freeze_that_starts_at_a_fixed_time_ends_cached_allows() {
    let pair = Pair::new(Arc::clone(&policy_variants()[3]), &World::new());
    let staging = requests()[5].clone();
    let before = pair.cached.check(&staging.clone()).unwrap();
    assert_eq!(before.effect, Effect::Allow);
    assert_eq!(
        before.valid_until,
        UnixMillis::parse_cedar_datetime("2030-01-01T00:00:30Z").unwrap()
    );
    pair.clock.advance_millis(30_000);
    assert_eq!(
        pair.cached.check(&staging).unwrap().reasons,
        ["freeze-from-half-a-minute"]
    );
}
