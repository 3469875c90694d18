//! What the facts store costs inside the process: the first import of a policy folder's
//! `entities.json` into a fresh data folder, opening that data folder again (what a restart
//! pays), and live changes through the control plane, each committed durably and in force for
//! the next decision: an identity's status flipped (as `UpdateIdentity` and `warrant identity`
//! do) and a resource put (`PutEntity`). With `WARRANT_BENCH_MOVE=1`, also a scope moved under
//! another, which rewrites the ancestors of everything below it. Prints p50, p99 and the worst.
//! Facts of any size: point `WARRANT_BENCH_POLICIES` at a folder made by `scripts/scale.py`
//! (the bundled `policies/` otherwise).
//!
//! ```text
//! python3 scripts/scale.py /tmp/s1m --policies 10 --identities 1000000
//! WARRANT_BENCH_POLICIES=/tmp/s1m cargo bench --bench facts_change
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warrant_control::entities::{ChangeReason, EntitySpec};
use warrant_control::identities::IdentityUpdate;
use warrant_control::{Control, Rules};
use warrant_domain::EntityRef;
use warrant_engine::engine::EngineSettings;
use warrant_store::LiveStore;

/// The server's allocator, so that the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn open(policies: &Path, data: &Path) -> Control {
    Control::open(
        policies,
        Arc::new(LiveStore::open(data).expect("a data folder")),
        Arc::new(warrant_domain::clock::SystemClock),
        EngineSettings::default(),
        Rules::default(),
        None,
        None,
    )
    .expect("the policy folder and its facts")
}

#[expect(clippy::cast_possible_truncation, reason = "a quantile's index")]
fn report(what: &str, mut took: Vec<Duration>) {
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    println!(
        "{} {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        took.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

fn main() {
    let dir = std::env::var_os("WARRANT_BENCH_POLICIES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies"));
    let changes: usize = std::env::var("WARRANT_BENCH_CHANGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    let data = tempfile::tempdir().expect("a temporary data folder");
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        // The import's own account of its phases; not a line per change.
        let only_the_import = tracing_subscriber::filter::Targets::new()
            .with_target("warrant_control", tracing::Level::INFO)
            .with_target("warrant_control::identities", tracing::Level::WARN)
            .with_target("warrant_control::entities", tracing::Level::WARN);
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .with(only_the_import)
            .init();
    }

    let started = Instant::now();
    let control = open(&dir, data.path());
    let facts = Arc::clone(&control.engine().snapshot().facts);
    println!(
        "{}: {} entities imported into a new store in {:.1} s",
        dir.display(),
        facts.entity_count(),
        started.elapsed().as_secs_f64()
    );
    drop(facts);
    drop(control);

    let started = Instant::now();
    let control = open(&dir, data.path());
    println!(
        "the same data folder opened again in {:.2} s; RSS {} MiB",
        started.elapsed().as_secs_f64(),
        rss_mib()
    );

    // Identities with a status: the ones a change flips, in turn.
    let facts = Arc::clone(&control.engine().snapshot().facts);
    let identities: Vec<EntityRef> = ["ServiceAccount", "ApiKey", "Agent"]
        .into_iter()
        .flat_map(|type_name| {
            let prefix = [warrant_facts::type_prefix(type_name)];
            facts.reader().uids_after(&prefix, None, changes).unwrap()
        })
        .filter(|uid| facts.identity(uid).is_some_and(|i| i.status.is_some()))
        .map(|uid| EntityRef::from_uid(&uid))
        .take(changes)
        .collect();
    drop(facts);
    assert!(!identities.is_empty(), "no identity with a status");
    let mut took = Vec::with_capacity(changes);
    for n in 0..changes {
        let update = IdentityUpdate {
            status: Some(if n % 2 == 0 { "suspended" } else { "active" }.to_owned()),
            ..IdentityUpdate::default()
        };
        let started = Instant::now();
        control
            .update_identity(&identities[n % identities.len()], update)
            .expect("a valid change");
        took.push(started.elapsed());
    }
    report("identity status flips", took);

    let scope = control
        .engine()
        .snapshot()
        .facts
        .reader()
        .uids_after(&[warrant_facts::type_prefix("Scope")], None, 1)
        .expect("the scopes")
        .into_iter()
        .next()
        .map(|uid| EntityRef::from_uid(&uid))
        .expect("a scope");
    let mut took = Vec::with_capacity(changes);
    for n in 0..changes {
        let spec = EntitySpec {
            entity: Some(EntityRef::new("Dataset", format!("bench-{}", n % 100))),
            parents: vec![scope.clone()],
            ..EntitySpec::default()
        };
        let started = Instant::now();
        control
            .put_entity(spec, ChangeReason::default())
            .expect("a valid entity");
        took.push(started.elapsed());
    }
    report("resources put", took);

    if std::env::var("WARRANT_BENCH_MOVE").is_ok_and(|v| v == "1") {
        let above = EntityRef::new("Scope", "bench-above");
        control
            .put_entity(
                EntitySpec {
                    entity: Some(above.clone()),
                    attributes: serde_json::json!({"kind": "bench"})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                    ..EntitySpec::default()
                },
                ChangeReason::default(),
            )
            .expect("a new scope");
        let current = control.entity(&scope).expect("the scope");
        let started = Instant::now();
        control
            .put_entity(
                EntitySpec {
                    entity: Some(scope.clone()),
                    attributes: current.attributes,
                    parents: vec![above],
                    tags: current.tags,
                },
                ChangeReason::default(),
            )
            .expect("the scope moved");
        println!(
            "{scope} moved under a new scope (every entity below it rewritten) in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
}
