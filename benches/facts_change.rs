//! What one live change costs inside the process, the store's commit aside: `Facts::with_changes`
//! (the admin API's in-place path) on the facts of a policy folder, one identity's status
//! flipped per change, as `PutEntity` and `warrant identity` do. Prints p50, p99 and the worst of
//! the changes. Facts of any size: point `WARRANT_BENCH_POLICIES` at a folder made by
//! `scripts/scale.py` (the bundled `policies/` otherwise).
//!
//! ```text
//! python3 scripts/scale.py /tmp/s1m --policies 10 --identities 1000000
//! WARRANT_BENCH_POLICIES=/tmp/s1m cargo bench --bench facts_change
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let dir = std::env::var_os("WARRANT_BENCH_POLICIES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies"));
    let changes: usize = std::env::var("WARRANT_BENCH_CHANGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    let loading = Instant::now();
    let policies = warrant::policy::PolicySnapshot::load(&dir).expect("a policy folder");
    let (base, _) = warrant::facts::load_entities_file(&dir).expect("its entities.json");
    let mut facts =
        warrant::facts::merged(policies.schema(), &base, std::iter::empty()).expect("facts");
    println!(
        "{}: {} entities loaded in {:.1} s",
        dir.display(),
        facts.entities().len(),
        loading.elapsed().as_secs_f64()
    );
    // Identities with a status: the ones a change flips, in turn.
    let identities: Vec<serde_json::Value> = base
        .values()
        .filter_map(|text| serde_json::from_str::<serde_json::Value>(text.get()).ok())
        .filter(|entity| entity["attrs"]["status"].is_string())
        .take(changes)
        .collect();
    assert!(!identities.is_empty(), "no identity with a status");
    let mut took = Vec::with_capacity(changes);
    for n in 0..changes {
        let mut entity = identities[n % identities.len()].clone();
        entity["attrs"]["status"] =
            serde_json::json!(if n % 2 == 0 { "suspended" } else { "active" });
        let started = Instant::now();
        facts = facts
            .with_changes(policies.schema(), std::slice::from_ref(&entity))
            .expect("a valid change")
            .expect("applied in place");
        took.push(started.elapsed());
    }
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    println!(
        "{changes} changes in place: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
