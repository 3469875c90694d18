//! Search against Check: a differential property test over random worlds (the bundled facts
//! changed as the admin API would change them: owners, statuses, revocations, grants, limited
//! approvals with uses taken, new identities and datasets, scopes moved; random template links;
//! random clocks) and random searches of all three kinds, with and without an approval, with
//! and without approvable results, paged in small pages. Every page put together must be exactly
//! the candidates for which one Check each, with the same inputs at the same moment, allows (or,
//! asked for, carries approval advice).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use warrant_domain::clock::{ManualClock, UnixMillis};
use warrant_domain::ports::{Take, UseCounter};
use warrant_domain::{CheckRequest, ContextValue, Effect, EntityRef};
use warrant_engine::engine::search::{SearchQuery, Searched};
use warrant_engine::engine::{Engine, EngineParts, EngineSettings, Snapshot};

use crate::engine::{APPROVALS, FactChange, IDENTITIES, apply, fact_change};

const ACTIONS: [&str; 4] = ["update", "read", "submit_vendor_request", "export"];
const RESOURCE_TYPES: [&str; 4] = ["Config", "Dataset", "Tool", "Database"];
const PRINCIPAL_TYPES: [&str; 3] = ["ServiceAccount", "ApiKey", "Agent"];
const SCOPES: [&str; 4] = ["sales-datasets", "hr-datasets", "production", "staging"];

/// A world: changes to the bundled facts, links of the dataset grant, limited approvals (each
/// granted to an identity, with its uses and how many are taken) and when it is.
#[derive(Debug, Clone)]
struct World {
    changes: Vec<FactChange>,
    links: Vec<(usize, usize)>,
    limited: Vec<(usize, u64, u64)>,
    now_hours: i64,
}

fn world() -> impl Strategy<Value = World> {
    (
        proptest::collection::vec(fact_change(), 0..8),
        proptest::collection::vec((0..4usize, 0..4usize), 0..4),
        proptest::collection::vec((0..4usize, 1..3u64, 0..3u64), 0..3),
        prop_oneof![Just(-24i64), Just(1), Just(100), Just(2_000), Just(700_000)],
    )
        .prop_map(|(changes, links, limited, now_hours)| World {
            changes,
            links,
            limited,
            now_hours,
        })
}

/// One search: what is searched, the request the candidates fill in, and how it is paged.
#[derive(Debug, Clone)]
struct Search {
    searched: Searched,
    template: CheckRequest,
    include_approvable: bool,
    limit: usize,
    max_examined: usize,
}

fn principal() -> impl Strategy<Value = EntityRef> {
    let principals = IDENTITIES
        .iter()
        .map(|(t, id)| EntityRef::new(*t, *id))
        .chain((0..2).map(|n| EntityRef::new("Agent", format!("agent-{n}"))))
        .chain([EntityRef::new("ApiKey", "nobody")]);
    prop::sample::select(principals.collect::<Vec<_>>())
}

fn resource() -> impl Strategy<Value = EntityRef> {
    let resources = [
        ("Config", "payments-api"),
        ("Dataset", "sales-2026"),
        ("Dataset", "live-ds-0"),
        ("Tool", "vendor-portal"),
        ("Database", "customers-prod"),
        ("Dataset", "missing"),
    ];
    prop::sample::select(resources.map(|(t, id)| EntityRef::new(t, id)).to_vec())
}

/// A request as the bundled scenarios make them (most allow something for some candidates), or
/// any principal, action and resource.
fn template() -> impl Strategy<Value = (EntityRef, &'static str, EntityRef, Option<String>, bool)> {
    let scenario = prop::sample::select(vec![
        (
            ("ServiceAccount", "deploy-bot"),
            "update",
            ("Config", "payments-api"),
            Some("CHG-1042"),
            false,
        ),
        (
            ("ServiceAccount", "deploy-bot"),
            "update",
            ("Config", "payments-api"),
            Some("limited-0"),
            false,
        ),
        (
            ("ApiKey", "pipeline-etl"),
            "read",
            ("Dataset", "sales-2026"),
            None,
            false,
        ),
        (
            ("ServiceAccount", "deploy-bot"),
            "read",
            ("Dataset", "live-ds-0"),
            None,
            false,
        ),
        (
            ("Agent", "procurement-agent"),
            "submit_vendor_request",
            ("Tool", "vendor-portal"),
            Some("TASK-77"),
            true,
        ),
        (
            ("Agent", "procurement-agent"),
            "submit_vendor_request",
            ("Tool", "vendor-portal"),
            None,
            true,
        ),
        (
            ("ServiceAccount", "db-admin"),
            "export",
            ("Database", "customers-prod"),
            Some("INC-311"),
            false,
        ),
        (
            ("ServiceAccount", "db-admin"),
            "export",
            ("Database", "customers-prod"),
            None,
            false,
        ),
    ])
    .prop_map(|((pt, pid), action, (rt, rid), approval, vendor)| {
        (
            EntityRef::new(pt, pid),
            action,
            EntityRef::new(rt, rid),
            approval.map(str::to_owned),
            vendor,
        )
    });
    let approval = prop_oneof![
        Just(None),
        prop::sample::select(APPROVALS.to_vec()).prop_map(|a| Some(a.to_owned())),
        (0..6usize).prop_map(|n| Some(format!("live-{n}"))),
        (0..3usize).prop_map(|n| Some(format!("limited-{n}"))),
    ];
    let any = (
        principal(),
        prop::sample::select(ACTIONS.to_vec()),
        resource(),
        approval,
        any::<bool>(),
    );
    prop_oneof![3 => scenario, 1 => any]
}

fn search() -> impl Strategy<Value = Search> {
    (
        template(),
        0..4usize,
        prop::sample::select(PRINCIPAL_TYPES.to_vec()),
        prop::sample::select(RESOURCE_TYPES.to_vec()),
        0..2_000i64,
        any::<bool>(),
        1..4usize,
        1..6usize,
    )
        .prop_map(
            |(
                (principal, action, resource, approval_id, vendor),
                kind,
                any_principal_type,
                any_resource_type,
                amount,
                include_approvable,
                limit,
                max_examined,
            )| {
                // Most searches look for the template's own types; some for any type.
                let searched = match kind {
                    0 => Searched::Subjects {
                        type_name: principal.type_name.clone(),
                    },
                    1 => Searched::Resources {
                        type_name: resource.type_name.clone(),
                    },
                    2 => Searched::Actions,
                    _ if amount % 2 == 0 => Searched::Subjects {
                        type_name: any_principal_type.to_owned(),
                    },
                    _ => Searched::Resources {
                        type_name: any_resource_type.to_owned(),
                    },
                };
                let context = if vendor {
                    BTreeMap::from([
                        ("vendor".to_owned(), ContextValue::String("acme".to_owned())),
                        ("amount".to_owned(), ContextValue::Long(amount)),
                    ])
                } else {
                    BTreeMap::new()
                };
                Search {
                    searched,
                    template: CheckRequest {
                        principal,
                        action: action.to_owned(),
                        resource,
                        context,
                        approval_id,
                        ..CheckRequest::default()
                    },
                    include_approvable,
                    limit,
                    max_examined,
                }
            },
        )
}

/// The bundled policies with `links` of the dataset grant, and the bundled facts changed by the
/// world's changes and limited approvals; uses counted in a real live store.
fn engine_for(world: &World) -> (Engine, Arc<warrant_store::LiveStore>, tempfile::TempDir) {
    let dir = crate::common::bundled_policies_copy();
    let links: Vec<serde_json::Value> = world
        .links
        .iter()
        .enumerate()
        .map(|(n, (identity, scope))| {
            let (t, id) = IDENTITIES[*identity];
            serde_json::json!({
                "id": format!("random-link-{n}"),
                "template": "dataset-read-grant",
                "principal": {"type": t, "id": id},
                "resource": {"type": "Scope", "id": SCOPES[*scope]},
            })
        })
        .collect();
    std::fs::write(
        dir.path().join("links.json"),
        serde_json::to_vec(&links).unwrap(),
    )
    .unwrap();
    let policies = warrant_policy::PolicySnapshot::load(dir.path()).unwrap();
    let (base, _) = warrant_facts::load_entities_file(dir.path()).unwrap();
    let mut current: BTreeMap<String, serde_json::Value> = base
        .iter()
        .map(|(key, text)| (key.clone(), serde_json::from_str(text.get()).unwrap()))
        .collect();
    let mut overlay: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut written: Vec<serde_json::Value> = world
        .changes
        .iter()
        .map(|change| {
            let entity = apply(change, &current);
            let uid = cedar_policy::EntityUid::from_json(entity["uid"].clone()).unwrap();
            current.insert(uid.to_string(), entity.clone());
            entity
        })
        .collect();
    let at = |h: i64| {
        serde_json::json!({"__extn": {"fn": "datetime",
            "arg": UnixMillis(1_790_000_000_000 + h * 3_600_000).to_cedar_datetime()}})
    };
    for (n, (identity, max_uses, _)) in world.limited.iter().enumerate() {
        let (t, id) = IDENTITIES[*identity];
        written.push(serde_json::json!({
            "uid": {"type": "Approval", "id": format!("limited-{n}")},
            "attrs": {
                "ticket": format!("CHG-M{n}"), "approver": {"__entity": {"type": "Human", "id": "alice"}},
                "actions": [{"__entity": {"type": "Action", "id": "read"}}, {"__entity": {"type": "Action", "id": "update"}}],
                "scope": {"__entity": {"type": "Scope", "id": "production"}},
                "not_before": at(-48), "expires_at": at(5_000), "revoked": false,
                "max_uses": max_uses,
            },
            "parents": [{"type": t, "id": id}],
        }));
    }
    for entity in written {
        let uid = cedar_policy::EntityUid::from_json(entity["uid"].clone()).unwrap();
        overlay.insert(uid.to_string(), entity);
    }
    let facts = warrant_store::facts::merged(
        policies.schema(),
        &base,
        overlay.iter().map(|(k, v)| (k.as_str(), Some(v))),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(warrant_store::LiveStore::open(data.path()).unwrap());
    for (n, (_, max_uses, taken)) in world.limited.iter().enumerate() {
        for _ in 0..*taken {
            let take = Take {
                max_uses: Some(*max_uses),
                spend: None,
            };
            store.take(&format!("limited-{n}"), take).unwrap();
        }
    }
    let clock = Arc::new(ManualClock::new(UnixMillis(
        1_790_000_000_000 + world.now_hours * 3_600_000,
    )));
    let engine = Engine::new(
        Snapshot {
            policies: Arc::new(policies),
            facts: Arc::new(facts),
        },
        clock,
        EngineSettings::default(),
        EngineParts {
            uses: Some(Arc::clone(&store) as Arc<dyn UseCounter>),
            ..EngineParts::default()
        },
    );
    (engine, store, data)
}

/// Every page of `search`, put together: (id, approvable), and how many pages it took.
fn all_pages(engine: &Engine, search: &Search) -> (Vec<(String, bool)>, usize) {
    try_all_pages(engine, search).unwrap()
}

/// Every page of `search`, or why it is refused.
fn try_all_pages(
    engine: &Engine,
    search: &Search,
) -> Result<(Vec<(String, bool)>, usize), warrant_engine::engine::search::SearchError> {
    let mut found = Vec::new();
    let mut after = None;
    for pages in 1.. {
        let page = engine.search(&SearchQuery {
            searched: search.searched.clone(),
            template: search.template.clone(),
            per_action: None,
            include_approvable: search.include_approvable,
            after: after.take(),
            limit: search.limit,
            max_examined: search.max_examined,
        })?;
        assert!(page.found.len() <= search.limit);
        assert!(page.examined <= search.max_examined);
        found.extend(page.found.into_iter().map(|f| (f.id, f.approvable)));
        match page.resume_after {
            Some(resume) => after = Some(resume),
            None => return Ok((found, pages)),
        }
        assert!(pages < 10_000, "a search that never ends");
    }
    unreachable!()
}

/// What one Check per candidate says: the candidates allowed (or approvable, asked for), in
/// candidate order. Each use a Check takes is given back, so every Check sees the same counts.
fn by_check(engine: &Engine, search: &Search) -> Vec<(String, bool)> {
    let snapshot = engine.snapshot();
    let candidates: Vec<CheckRequest> = match &search.searched {
        Searched::Subjects { type_name } | Searched::Resources { type_name } => {
            let uids = snapshot
                .facts
                .reader()
                .uids_after(&[warrant_facts::type_prefix(type_name)], None, usize::MAX)
                .unwrap();
            uids.into_iter()
                .map(|uid| {
                    let entity = EntityRef::new(type_name.clone(), uid.id().unescaped());
                    let mut request = search.template.clone();
                    match search.searched {
                        Searched::Subjects { .. } => request.principal = entity,
                        _ => request.resource = entity,
                    }
                    request
                })
                .collect()
        }
        Searched::Actions => {
            let names: BTreeSet<&String> = snapshot.policies.actions().keys().collect();
            names
                .into_iter()
                .map(|name| CheckRequest {
                    action: name.clone(),
                    ..search.template.clone()
                })
                .collect()
        }
    };
    let mut allowed = Vec::new();
    for request in candidates {
        let id = match search.searched {
            Searched::Subjects { .. } => request.principal.id.clone(),
            Searched::Resources { .. } => request.resource.id.clone(),
            Searched::Actions => request.action.clone(),
        };
        let Ok(decision) = engine.check(&request) else {
            continue;
        };
        engine.release_use(&decision);
        if decision.effect == Effect::Allow {
            allowed.push((id, false));
        } else if search.include_approvable && decision.approval_required.is_some() {
            allowed.push((id, true));
        }
    }
    allowed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_search_answers_exactly_what_one_check_per_candidate_allows(
        world in world(),
        searches in proptest::collection::vec(search(), 1..8),
    ) {
        let (engine, _store, _data) = engine_for(&world);
        for search in &searches {
            let expected = by_check(&engine, search);
            match try_all_pages(&engine, search) {
                Ok((found, _)) => prop_assert_eq!(&found, &expected, "{:?}", search),
                // A search refused as malformed: no Check of it allows anything either.
                Err(_) => prop_assert!(expected.is_empty(), "{:?} {:?}", search, expected),
            }
        }
    }
}

#[test]
fn a_resource_search_finds_what_the_links_grant_and_pages_without_repeats() {
    let world = World {
        changes: Vec::new(),
        links: vec![(2, 2)],
        limited: Vec::new(),
        now_hours: 1,
    };
    let (engine, _store, _data) = engine_for(&world);
    let search = Search {
        searched: Searched::Resources {
            type_name: "Dataset".to_owned(),
        },
        template: CheckRequest {
            principal: EntityRef::new("ApiKey", "pipeline-etl"),
            action: "read".to_owned(),
            resource: EntityRef::new("Dataset", "ignored"),
            ..CheckRequest::default()
        },
        include_approvable: false,
        limit: 1,
        max_examined: 1,
    };
    let (found, pages) = all_pages(&engine, &search);
    // Not vacuous: the grant allows something, and pages of one item took several calls.
    assert!(!found.is_empty(), "{found:?}");
    assert!(pages > found.len().min(1));
    let ids: BTreeSet<&String> = found.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), found.len(), "no result twice: {found:?}");
    assert_eq!(found, by_check(&engine, &search));
}

#[test]
fn a_search_takes_no_use_of_a_limited_approval() {
    let world = World {
        changes: Vec::new(),
        links: Vec::new(),
        limited: vec![(0, 1, 0)],
        now_hours: 1,
    };
    let (engine, store, _data) = engine_for(&world);
    let template = CheckRequest {
        principal: EntityRef::new("ServiceAccount", "deploy-bot"),
        action: "update".to_owned(),
        resource: EntityRef::new("Config", "ignored"),
        approval_id: Some("limited-0".to_owned()),
        ..CheckRequest::default()
    };
    let search = Search {
        searched: Searched::Resources {
            type_name: "Config".to_owned(),
        },
        template,
        include_approvable: false,
        limit: 10,
        max_examined: 100,
    };
    let (first, _) = all_pages(&engine, &search);
    let (again, _) = all_pages(&engine, &search);
    assert!(!first.is_empty(), "the limited approval allows something");
    assert_eq!(first, again);
    assert_eq!(store.uses("limited-0").unwrap(), 0);
}

#[test]
fn a_malformed_search_names_the_field() {
    let (engine, _store, _data) = engine_for(&World {
        changes: Vec::new(),
        links: Vec::new(),
        limited: Vec::new(),
        now_hours: 1,
    });
    let query = |searched: Searched, template: CheckRequest, limit: usize| SearchQuery {
        searched,
        template,
        per_action: None,
        include_approvable: false,
        after: None,
        limit,
        max_examined: 10,
    };
    let template = CheckRequest {
        principal: EntityRef::new("ApiKey", "pipeline-etl"),
        action: "read".to_owned(),
        resource: EntityRef::new("Dataset", "x"),
        ..CheckRequest::default()
    };
    let refused = |query: SearchQuery| match engine.search(&query) {
        Err(warrant_engine::engine::search::SearchError::Invalid(invalid)) => invalid.field,
        other => panic!("not refused: {other:?}"),
    };
    let resources = |t: &str| Searched::Resources {
        type_name: t.to_owned(),
    };
    assert_eq!(
        refused(query(resources("Nope"), template.clone(), 5)),
        "resource.type"
    );
    assert_eq!(
        refused(query(resources(""), template.clone(), 5)),
        "resource.type"
    );
    assert_eq!(
        refused(query(resources("Dataset"), template.clone(), 0)),
        "page.limit"
    );
    let subjects = Searched::Subjects {
        type_name: "Nope".to_owned(),
    };
    assert_eq!(
        refused(query(subjects, template.clone(), 5)),
        "principal.type"
    );
    let unknown_action = CheckRequest {
        action: "fly".to_owned(),
        ..template.clone()
    };
    assert_eq!(
        refused(query(resources("Dataset"), unknown_action, 5)),
        "action"
    );
    let reserved = CheckRequest {
        context: BTreeMap::from([("now".to_owned(), ContextValue::Long(1))]),
        ..template
    };
    assert_eq!(
        refused(query(resources("Dataset"), reserved, 5)),
        "context.now"
    );
}

/// The Todo scenario's users, by their ids in `policies/examples/authzen-todo`.
const TODO_USERS: [&str; 5] = [
    "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
    "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
    "CiRmZDI2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
    "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
    "CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A resource the facts do not hold, of a `@described_by_caller` type, described in the
    /// request: who may act on it and what they may do, exactly as Check decides each.
    #[test]
    fn a_search_over_a_described_resource_answers_what_check_allows(
        owner in prop::sample::select(vec![
            "rick@the-citadel.com", "morty@the-citadel.com", "summer@the-smiths.com",
            "beth@the-smiths.com", "nobody@example.com",
        ]),
        user in prop::sample::select(TODO_USERS.to_vec()),
        action in prop::sample::select(vec![
            "can_read_todos", "can_create_todo", "can_update_todo", "can_delete_todo",
        ]),
        subjects in any::<bool>(),
        include_approvable in any::<bool>(),
        limit in 1..4usize,
    ) {
        let dir = crate::common::bundled_policies().join("examples/authzen-todo");
        let snapshot = warrant::server::load_snapshot(&dir).unwrap();
        let engine = Engine::new(
            snapshot,
            Arc::new(ManualClock::new(UnixMillis(1_790_000_000_000))),
            EngineSettings::default(),
            EngineParts::default(),
        );
        let search = Search {
            searched: if subjects {
                Searched::Subjects { type_name: "user".to_owned() }
            } else {
                Searched::Actions
            },
            template: CheckRequest {
                principal: EntityRef::new("user", user),
                action: action.to_owned(),
                resource: EntityRef::new("todo", "todo-1"),
                resource_description: Some(warrant_domain::ResourceDescription {
                    attributes: BTreeMap::from([(
                        "ownerID".to_owned(),
                        ContextValue::String(owner.to_owned()),
                    )]),
                    parents: Vec::new(),
                }),
                ..CheckRequest::default()
            },
            include_approvable,
            limit,
            max_examined: 2,
        };
        let (found, _) = all_pages(&engine, &search);
        prop_assert_eq!(&found, &by_check(&engine, &search), "{:?}", search);
    }
}
