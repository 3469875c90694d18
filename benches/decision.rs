//! One in-process decision through Warrant's engine against raw Cedar evaluation of the same
//! request on the same policies and entities. The engine's overhead is the difference: resolving
//! facts, building and validating the Cedar request, fail-closed checks, provenance, decision id.

// A benchmark's set-up that fails should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{Authorizer, Context, EntityUid, Request, RestrictedExpression};
use criterion::{Criterion, criterion_group, criterion_main};
use warrant::server::load_snapshot;
use warrant_domain::clock::{Clock, SystemClock};
use warrant_domain::{CheckRequest, ContextValue, Effect, EntityRef};
use warrant_engine::engine::{Engine, EngineSettings};

struct Case {
    name: &'static str,
    /// What the bundled policies decide.
    expect: Effect,
    request: CheckRequest,
    cedar_context: Vec<(String, RestrictedExpression)>,
}

fn uid(text: &str) -> EntityUid {
    EntityUid::from_str(text).unwrap()
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "deploy-with-approval",
            expect: Effect::Allow,
            request: CheckRequest {
                principal: EntityRef::new("ServiceAccount", "deploy-bot"),
                action: "update".into(),
                resource: EntityRef::new("Config", "payments-api"),
                context: BTreeMap::new(),
                approval_id: Some("CHG-1042".into()),
                request_id: None,
                resource_description: None,
                caller_identity: None,
                credential: None,
            },
            cedar_context: vec![(
                "approval".into(),
                RestrictedExpression::new_entity_uid(uid(r#"Approval::"CHG-1042""#)),
            )],
        },
        Case {
            name: "agent-vendor-request",
            expect: Effect::Allow,
            request: CheckRequest {
                principal: EntityRef::new("Agent", "procurement-agent"),
                action: "submit_vendor_request".into(),
                resource: EntityRef::new("Tool", "vendor-portal"),
                context: BTreeMap::from([
                    ("vendor".to_owned(), ContextValue::String("Acme".into())),
                    ("amount".to_owned(), ContextValue::Long(1200)),
                ]),
                approval_id: Some("TASK-77".into()),
                request_id: None,
                resource_description: None,
                caller_identity: None,
                credential: None,
            },
            cedar_context: vec![
                (
                    "approval".into(),
                    RestrictedExpression::new_entity_uid(uid(r#"Approval::"TASK-77""#)),
                ),
                (
                    "vendor".into(),
                    RestrictedExpression::new_string("Acme".into()),
                ),
                ("amount".into(), RestrictedExpression::new_long(1200)),
            ],
        },
        // A deny that an approval would lift: the engine decides it again under a hypothetical
        // approval to say which (`approval_required`).
        Case {
            name: "deploy-without-approval",
            expect: Effect::Deny,
            request: CheckRequest {
                principal: EntityRef::new("ServiceAccount", "deploy-bot"),
                action: "update".into(),
                resource: EntityRef::new("Config", "payments-api"),
                context: BTreeMap::new(),
                approval_id: None,
                request_id: None,
                resource_description: None,
                caller_identity: None,
                credential: None,
            },
            cedar_context: vec![],
        },
        Case {
            name: "api-key-read",
            expect: Effect::Allow,
            request: CheckRequest {
                principal: EntityRef::new("ApiKey", "pipeline-etl"),
                action: "read".into(),
                resource: EntityRef::new("Dataset", "sales-2026"),
                context: BTreeMap::new(),
                approval_id: None,
                request_id: None,
                resource_description: None,
                caller_identity: None,
                credential: None,
            },
            cedar_context: vec![],
        },
    ]
}

fn decision(c: &mut Criterion) {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let fresh = EngineSettings {
        cache: None,
        ..EngineSettings::default()
    };
    let engine = Engine::new(
        load_snapshot(&policies).unwrap(),
        Arc::new(SystemClock),
        fresh,
        warrant_engine::engine::EngineParts::default(),
    );
    let cached = Engine::new(
        load_snapshot(&policies).unwrap(),
        Arc::new(SystemClock),
        EngineSettings::default(),
        warrant_engine::engine::EngineParts::default(),
    );
    // The same engine with a shadow set (the bundled policies again): the cost of shadow mode.
    let shadowed = Engine::new(
        load_snapshot(&policies).unwrap(),
        Arc::new(SystemClock),
        fresh,
        warrant_engine::engine::EngineParts::default(),
    );
    shadowed.set_shadow(Some(Arc::new(
        warrant_policy::PolicySnapshot::load(&policies).unwrap(),
    )));
    let snapshot = engine.snapshot();
    let authorizer = Authorizer::new();
    for case in cases() {
        let r = &case.request;
        let mut context = case.cedar_context.clone();
        context.push((
            "now".into(),
            RestrictedExpression::new_datetime(SystemClock.now().to_cedar_datetime()),
        ));
        let raw_request = Request::new(
            uid(&format!(
                "{}::\"{}\"",
                r.principal.type_name, r.principal.id
            )),
            uid(&format!("Action::\"{}\"", r.action)),
            uid(&format!("{}::\"{}\"", r.resource.type_name, r.resource.id)),
            Context::from_pairs(context).unwrap(),
            Some(snapshot.policies.schema()),
        )
        .unwrap();
        // Raw Cedar reads the whole facts as one `Entities` (built once here).
        let whole = snapshot.facts.to_cedar().expect("the whole facts");
        // Raw Cedar evaluates the same policies: the static ones and the template links that
        // can apply (`applicable`, computed once here, as the engine does per request).
        let raw_policies = snapshot
            .policies
            .applicable(
                raw_request.principal().unwrap(),
                raw_request.action().unwrap(),
                raw_request.resource().unwrap(),
                &whole,
            )
            .unwrap()
            .into_owned();
        // Both paths must give the same answer, or the comparison means nothing.
        let raw = authorizer.is_authorized(&raw_request, &raw_policies, &whole);
        let ours = engine.check(&case.request).unwrap();
        assert_eq!(
            raw.decision() == cedar_policy::Decision::Allow,
            ours.effect == Effect::Allow
        );
        assert_eq!(
            ours.effect, case.expect,
            "{}: {:?}",
            case.name, ours.reasons
        );
        // A deny an approval would lift says which; its cost is in `warrant-engine`.
        assert_eq!(
            ours.approval_required.is_some(),
            case.expect == Effect::Deny,
            "{}",
            case.name
        );

        let mut group = c.benchmark_group(case.name);
        group.bench_function("raw-cedar", |b| {
            b.iter(|| authorizer.is_authorized(black_box(&raw_request), &raw_policies, &whole))
        });
        // What a fresh decision adds to gather the entities it can read (`Facts::slice`).
        let mut roots = vec![
            raw_request.principal().unwrap().clone(),
            raw_request.action().unwrap().clone(),
            raw_request.resource().unwrap().clone(),
        ];
        if let Some(id) = &r.approval_id {
            roots.push(uid(&format!("Approval::\"{id}\"")));
        }
        roots.extend(snapshot.policies.time_use().entity_literals.iter().cloned());
        eprintln!(
            "{}: a slice of {} entities of {}; {} of {} policies can apply",
            case.name,
            snapshot.facts.slice(roots.iter(), None).unwrap().len(),
            snapshot.facts.entity_count(),
            snapshot
                .policies
                .index()
                .select(&roots[0], &roots[1], &roots[2], &whole)
                .len(),
            snapshot.policies.policy_count(),
        );
        group.bench_function("facts-slice", |b| {
            b.iter(|| snapshot.facts.slice(black_box(roots.iter()), None).unwrap())
        });
        // What a cache miss adds to remember what the decision read (`Facts::reads`).
        group.bench_function("facts-reads", |b| {
            b.iter(|| {
                snapshot
                    .facts
                    .reached(black_box(roots.iter()), None)
                    .unwrap()
            })
        });
        group.bench_function("warrant-engine", |b| {
            b.iter(|| engine.check(black_box(&case.request)).unwrap())
        });
        group.bench_function("warrant-engine-with-shadow", |b| {
            b.iter(|| shadowed.check(black_box(&case.request)).unwrap())
        });
        // A cache hit: the same request again, within its validity.
        group.bench_function("warrant-cache-hit", |b| {
            b.iter(|| cached.check(black_box(&case.request)).unwrap())
        });
        // (Also when a filter skipped the benchmark above: the first check fills the cache.)
        cached.check(&case.request).unwrap();
        assert!(
            cached
                .check(&case.request)
                .unwrap()
                .provenance
                .answered_from_cache
        );
        group.finish();
    }
}

criterion_group!(benches, decision);
criterion_main!(benches);
