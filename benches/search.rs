//! What a search costs at scale, in process, against one uncached Check in the same run: a world
//! of SCALE service accounts and SCALE datasets (in scopes of 10,000 datasets each), a
//! per-identity grant template (`resource in ?resource`), `sa-0` granted one
//! scope (10,000 datasets), 50 identities granted the scope of the dataset asked about, and 50
//! actions. Reports p50, p99 and max over repeated runs of each query:
//!
//! - the first page of 100 datasets `sa-0` may read;
//! - the actions `sa-0` may take on one of its datasets (50 declared);
//! - who may read one dataset (50 of SCALE identities);
//! - one uncached Check (the baseline).
//!
//! `cargo bench --bench search` (SCALE 1,000,000: building the world takes a few minutes and some
//! GB of memory); `WARRANT_SEARCH_BENCH_SCALE=100000 cargo bench --bench search` for a quick run.

// A benchmark's set-up that fails should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warrant_domain::clock::SystemClock;
use warrant_domain::{CheckRequest, Effect, EntityRef};
use warrant_engine::engine::search::{SearchQuery, Searched};
use warrant_engine::engine::{Engine, EngineParts, EngineSettings, Snapshot};

/// Datasets under one scope.
const PER_SCOPE: usize = 10_000;
/// Identities granted the scope of the dataset a who-can asks about.
const ABLE: usize = 50;
/// Actions the schema declares beside the bundled ones (4).
const EXTRA_ACTIONS: usize = 46;

fn world(scale: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut schema = std::fs::read_to_string(bundled.join("schema.cedarschema")).unwrap();
    for n in 0..EXTRA_ACTIONS {
        writeln!(
            schema,
            "action \"act-{n}\" appliesTo {{ principal: [ServiceAccount], resource: [Dataset], \
             context: RequestContext }};"
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("schema.cedarschema"), schema).unwrap();
    std::fs::copy(
        bundled.join("identity.cedar"),
        dir.path().join("identity.cedar"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("grants.cedar"),
        "@id(\"dataset-grant\")\n\
         permit (principal == ?principal, action == Action::\"read\", resource in ?resource)\n\
         when { resource in principal.scopes };\n\
         @id(\"act-0-own-scope\")\n\
         permit (principal, action == Action::\"act-0\", resource in Scope::\"part-0\")\n\
         when { principal == ServiceAccount::\"sa-0\" };\n",
    )
    .unwrap();
    let link = |id: String, principal: String, scope: &str| {
        format!(
            "{{\"id\":\"{id}\",\"template\":\"dataset-grant\",\
             \"principal\":{{\"type\":\"ServiceAccount\",\"id\":\"{principal}\"}},\
             \"resource\":{{\"type\":\"Scope\",\"id\":\"{scope}\"}}}}"
        )
    };
    let mut links = vec![link("sa-0-part-0".into(), "sa-0".into(), "part-0")];
    links.extend((1..=ABLE).map(|n| link(format!("sa-{n}-part-1"), format!("sa-{n}"), "part-1")));
    std::fs::write(
        dir.path().join("links.json"),
        format!("[{}]", links.join(",\n")),
    )
    .unwrap();
    let mut entities = String::with_capacity(scale * 400);
    entities.push_str(
        "[{\"uid\":{\"type\":\"Human\",\"id\":\"owner\"},\"attrs\":{\"name\":\"Owner\",\
         \"email\":\"owner@example.com\"},\"parents\":[]},\n\
         {\"uid\":{\"type\":\"Scope\",\"id\":\"data\"},\"attrs\":{\"kind\":\"datasets\"},\"parents\":[]}",
    );
    for part in 0..scale.div_ceil(PER_SCOPE) {
        write!(
            entities,
            ",\n{{\"uid\":{{\"type\":\"Scope\",\"id\":\"part-{part}\"}},\"attrs\":{{\"kind\":\"datasets\"}},\
             \"parents\":[{{\"type\":\"Scope\",\"id\":\"data\"}}]}}"
        )
        .unwrap();
    }
    for i in 0..scale {
        write!(
            entities,
            ",\n{{\"uid\":{{\"type\":\"ServiceAccount\",\"id\":\"sa-{i}\"}},\"attrs\":{{\
             \"owner\":{{\"__entity\":{{\"type\":\"Human\",\"id\":\"owner\"}}}},\"status\":\"active\",\
             \"environment\":\"production\",\"privileged\":false,\
             \"scopes\":[{{\"__entity\":{{\"type\":\"Scope\",\"id\":\"data\"}}}}]}},\"parents\":[]}}\
             ,\n{{\"uid\":{{\"type\":\"Dataset\",\"id\":\"ds-{i}\"}},\"attrs\":{{}},\
             \"parents\":[{{\"type\":\"Scope\",\"id\":\"part-{}\"}}]}}",
            i / PER_SCOPE
        )
        .unwrap();
    }
    entities.push_str("\n]\n");
    std::fs::write(dir.path().join("entities.json"), entities).unwrap();
    dir
}

/// p50, p99 and max of `runs` timings of `query`.
fn timed(runs: usize, mut query: impl FnMut()) -> (Duration, Duration, Duration) {
    for _ in 0..runs.min(20) {
        query();
    }
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            query();
            started.elapsed()
        })
        .collect();
    times.sort();
    // The sample at `per_mille` thousandths of the way (rounded down).
    let at = |per_mille: usize| times[(times.len() * per_mille / 1000).min(times.len() - 1)];
    (at(500), at(990), times[times.len() - 1])
}

fn main() {
    let scale: usize = std::env::var("WARRANT_SEARCH_BENCH_SCALE")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1_000_000);
    let built = Instant::now();
    let dir = world(scale);
    let snapshot: Snapshot = warrant::server::load_snapshot(dir.path()).unwrap();
    println!(
        "world: {scale} identities, {scale} datasets, {} actions, built and loaded in {:.1} s",
        4 + EXTRA_ACTIONS,
        built.elapsed().as_secs_f64()
    );
    let engine = Engine::new(
        snapshot,
        Arc::new(SystemClock),
        EngineSettings {
            cache: None,
            ..EngineSettings::default()
        },
        EngineParts::default(),
    );
    let request = |principal: &str, action: &str, resource: &str| CheckRequest {
        principal: EntityRef::new("ServiceAccount", principal),
        action: action.to_owned(),
        resource: EntityRef::new("Dataset", resource),
        ..CheckRequest::default()
    };
    let search = |searched: Searched, template: CheckRequest, limit: usize| {
        let page = engine
            .search(&SearchQuery {
                searched,
                template,
                per_action: None,
                include_approvable: false,
                after: None,
                limit,
                max_examined: 10_000,
            })
            .unwrap();
        std::hint::black_box(page)
    };
    // What each query answers, once.
    let datasets = search(
        Searched::Resources {
            type_name: "Dataset".into(),
        },
        request("sa-0", "read", "_"),
        100,
    );
    assert_eq!(datasets.found.len(), 100);
    let actions = search(Searched::Actions, request("sa-0", "read", "ds-0"), 100);
    assert_eq!(actions.found.len(), 2, "{:?}", actions.found);
    let asked = format!("ds-{}", PER_SCOPE + 7);
    let who = search(
        Searched::Subjects {
            type_name: "ServiceAccount".into(),
        },
        request("_", "read", &asked),
        100,
    );
    assert_eq!(who.found.len(), ABLE);
    let check = request("sa-0", "read", "ds-17");
    assert_eq!(engine.check(&check).unwrap().effect, Effect::Allow);

    let runs = 300;
    let rows = [
        (
            "first page of 100 datasets sa-0 may read (grants cover 10,000)",
            timed(runs, || {
                search(
                    Searched::Resources {
                        type_name: "Dataset".into(),
                    },
                    request("sa-0", "read", "_"),
                    100,
                );
            }),
        ),
        (
            "actions sa-0 may take on ds-0 (50 declared)",
            timed(runs, || {
                search(Searched::Actions, request("sa-0", "read", "ds-0"), 100);
            }),
        ),
        (
            "who may read one dataset (50 able)",
            timed(runs, || {
                search(
                    Searched::Subjects {
                        type_name: "ServiceAccount".into(),
                    },
                    request("_", "read", &asked),
                    100,
                );
            }),
        ),
        (
            "baseline: one uncached Check",
            timed(runs * 10, || {
                std::hint::black_box(engine.check(&check).unwrap());
            }),
        ),
    ];
    println!("| query | p50 | p99 | max |\n|---|---:|---:|---:|");
    for (name, (p50, p99, max)) in rows {
        println!(
            "| {name} | {:.3} ms | {:.3} ms | {:.3} ms |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
}
