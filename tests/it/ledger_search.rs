//! The decision log's search index against a plain scan: over random ledgers spread across many
//! segments, every filter, page direction, bound and limit answers exactly what filtering every
//! record would; an index file that is damaged or missing is built again with the same answers;
//! and pages taken while records are still being written see them.

use proptest::prelude::*;
use warrant_ledger::{Filter, Ledger, LedgerMode, LedgerSettings, Order, Record, StoredRecord};

const PRINCIPALS: [&str; 4] = ["Agent::a", "Agent::b", "ApiKey::k", "Human::h"];
const ACTIONS: [&str; 3] = ["read", "update", "view_decisions"];
const RESOURCES: [&str; 3] = ["Dataset::d1", "Dataset::d2", "Config::c"];
const REASONS: [&str; 4] = ["p-allow", "p-forbid", "warrant:approval-expired", "p-other"];

/// Which principal, action, resource, outcome, reason, approval and shadow disagreement.
type RecordChoice = (usize, usize, usize, bool, usize, Option<usize>, bool);
/// The same for a filter, each part optional, and the earliest second.
type FilterChoice = (
    Option<usize>,
    Option<usize>,
    Option<usize>,
    Option<bool>,
    Option<usize>,
    Option<usize>,
    bool,
    Option<usize>,
);

/// A record as `Record::of` would write it, from a few choices.
fn record(i: usize, choice: RecordChoice) -> Record {
    let (p, a, r, allow, why, approval, shadow_differs) = choice;
    let entity = |text: &str| {
        let (t, id) = text.split_once("::").unwrap();
        serde_json::json!({"type": t, "id": id})
    };
    let decision = if allow { "ALLOW" } else { "DENY" };
    let other = if allow { "DENY" } else { "ALLOW" };
    serde_json::from_value(serde_json::json!({
        "action": ACTIONS[a],
        "answered_from_cache": false,
        "approval": null,
        "approval_presented": approval.map(|n| format!("CHG-{n}")),
        "caller": null,
        "context": {},
        "decision": decision,
        "decision_id": uuid::Uuid::now_v7().to_string(),
        "errors": [],
        "evaluation_id": format!("e{i}"),
        "facts_version": "f",
        "owner": null,
        "policy_version": "v",
        "principal": entity(PRINCIPALS[p]),
        "principal_status": null,
        "reasons": [REASONS[why]],
        "request_id": null,
        "resource": entity(RESOURCES[r]),
        "resource_scopes": [],
        "shadow": shadow_differs.then(|| serde_json::json!({
            "decision": other, "error_count": 0, "policy_version": "s", "reasons": []
        })),
        "time": format!("2026-12-06T10:{:02}:{:02}.000Z", (i / 60) % 60, i % 60),
        "trace_id": null,
        "valid_until": "2026-12-06T11:00:00.000Z",
    }))
    .unwrap()
}

fn settings(dir: &std::path::Path) -> LedgerSettings {
    LedgerSettings {
        dir: dir.to_path_buf(),
        mode: LedgerMode::Durable,
        checkpoint_records: 50,
        checkpoint_interval: std::time::Duration::from_secs(60),
        // A few dozen records a segment: a search crosses many.
        segment_bytes: 16 * 1024,
        queue: 1000,
        mask_keys: Vec::new(),
        replica: None,
        signing_key: None,
        retention: None,
        index_cache_bytes: 64 * 1024,
        usage_max_entries: 1000,
    }
}

/// What a scan of `all` (in sequence order) answers.
fn scanned(all: &[StoredRecord], filter: &Filter, order: Order, limit: usize) -> Vec<u64> {
    let mut matching: Vec<u64> = all
        .iter()
        .filter(|s| filter.matches(&s.record))
        .filter(|s| match order {
            Order::NewestFirst { before } => before.is_none_or(|b| s.seq < b),
            Order::OldestFirst { after } => s.seq > after,
        })
        .map(|s| s.seq)
        .collect();
    if matches!(order, Order::NewestFirst { .. }) {
        matching.reverse();
    }
    matching.truncate(limit);
    matching
}

fn filter_of(choice: FilterChoice) -> Filter {
    let (p, a, r, allow, why, approval, shadow, since) = choice;
    Filter {
        principal: p.map(|p| warrant_domain::EntityRef::parse(PRINCIPALS[p]).unwrap()),
        action: a.map(|a| ACTIONS[a].to_owned()),
        resource: r.map(|r| warrant_domain::EntityRef::parse(RESOURCES[r]).unwrap()),
        decision: allow.map(|allow| if allow { "allow" } else { "DENY" }.to_owned()),
        reason: why.map(|why| REASONS[why].to_owned()),
        approval: approval.map(|n| format!("CHG-{n}")),
        since: since.map(|s| {
            warrant_domain::clock::UnixMillis::parse_rfc3339(&format!(
                "2026-12-06T10:00:{s:02}.000Z"
            ))
            .unwrap()
        }),
        until: None,
        shadow_disagreed: shadow,
    }
}

fn record_choice() -> impl Strategy<Value = RecordChoice> {
    (
        0..4usize,
        0..3usize,
        0..3usize,
        any::<bool>(),
        0..4usize,
        proptest::option::of(0..3usize),
        proptest::bool::weighted(0.1),
    )
}

fn filter_choice() -> impl Strategy<Value = FilterChoice> {
    (
        proptest::option::of(0..4usize),
        proptest::option::of(0..3usize),
        proptest::option::of(0..3usize),
        proptest::option::of(any::<bool>()),
        proptest::option::weighted(0.3, 0..4usize),
        proptest::option::weighted(0.3, 0..3usize),
        proptest::bool::weighted(0.1),
        proptest::option::weighted(0.2, 0..60usize),
    )
}

/// The buckets `Ledger::activity(until, 60_000, 60)` should give, counted by a scan.
fn ledger_activity_buckets(all: &[StoredRecord], until: i64) -> Vec<(i64, u64, u64)> {
    let since = until - 3_600_000;
    let mut buckets: Vec<(i64, u64, u64)> = (0..60).map(|i| (since + i * 60_000, 0, 0)).collect();
    for stored in all {
        let time = warrant_domain::clock::UnixMillis::parse_rfc3339(&stored.record.time).unwrap();
        let bucket = &mut buckets[usize::try_from((time.0 - since) / 60_000).unwrap()];
        if stored.record.decision == "ALLOW" {
            bucket.1 += 1;
        } else {
            bucket.2 += 1;
        }
    }
    buckets
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_index_answers_what_a_scan_answers(
        records in proptest::collection::vec(record_choice(), 1..300),
        filters in proptest::collection::vec((filter_choice(), any::<bool>(), 0..320u64, 1..40usize), 8),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&settings(dir.path())).unwrap();
        let written: Vec<Record> = records.iter().enumerate().map(|(i, c)| record(i, *c)).collect();
        // In a few appends, so some pages are taken with part of it written.
        let (first, rest) = written.split_at(written.len() / 2);
        runtime.block_on(ledger.append(first)).unwrap();
        let all = |ledger: &Ledger| {
            ledger.find(&Filter::default(), Order::OldestFirst { after: 0 }, usize::MAX).unwrap()
        };
        let half = all(&ledger);
        prop_assert_eq!(half.len(), first.len());
        runtime.block_on(ledger.append(rest)).unwrap();
        let everything = all(&ledger);
        prop_assert_eq!(everything.len(), written.len());
        for (choice, newest, bound, limit) in &filters {
            let filter = filter_of(*choice);
            let order = if *newest {
                Order::NewestFirst { before: Some(*bound).filter(|b| *b > 0) }
            } else {
                Order::OldestFirst { after: *bound }
            };
            let found: Vec<u64> = ledger
                .find(&filter, order, *limit)
                .unwrap()
            .iter()
            .map(|s| s.seq)
            .collect();
            prop_assert_eq!(&found, &scanned(&everything, &filter, order, *limit), "{:?} {:?}", filter, order);
        }
        // The pictures' counts: by minute and outcome, and denials by reason, as a scan counts.
        let until = warrant_domain::clock::UnixMillis::parse_rfc3339("2026-12-06T11:00:00.000Z").unwrap();
        let activity = ledger.activity(until, 60_000, 60).unwrap();
        let mut by_minute = vec![(0u64, 0u64); 60];
        let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
        for stored in &everything {
            let time = warrant_domain::clock::UnixMillis::parse_rfc3339(&stored.record.time).unwrap();
            let minute = usize::try_from((time.0 - (until.0 - 3_600_000)) / 60_000).unwrap();
            if stored.record.decision == "ALLOW" {
                by_minute[minute].0 += 1;
            } else {
                by_minute[minute].1 += 1;
                for reason in &stored.record.reasons {
                    *reasons.entry(reason.clone()).or_default() += 1;
                }
            }
        }
        let counted: Vec<(u64, u64)> = activity.buckets.iter().map(|(_, a, d)| (*a, *d)).collect();
        prop_assert_eq!(counted, by_minute);
        let named: std::collections::BTreeMap<String, u64> = activity.deny_reasons.into_iter().collect();
        prop_assert_eq!(named, reasons);

        // Damaged and missing index files are built again, with the same answers.
        drop(ledger);
        let mut damaged = 0;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "terms") {
                if damaged % 2 == 0 {
                    std::fs::write(&path, b"WTRM\x01garbage").unwrap();
                } else {
                    std::fs::remove_file(&path).unwrap();
                }
                damaged += 1;
            }
        }
        let reopened = Ledger::open(&settings(dir.path())).unwrap();
        prop_assert_eq!(
            reopened.activity(until, 60_000, 60).unwrap().buckets,
            ledger_activity_buckets(&everything, until.0)
        );
        for (choice, _, _, limit) in &filters {
            let filter = filter_of(*choice);
            let found: Vec<u64> = reopened.find(&filter, Order::NewestFirst { before: None }, *limit).unwrap().iter().map(|s| s.seq).collect();
            prop_assert_eq!(&found, &scanned(&everything, &filter, Order::NewestFirst { before: None }, *limit));
        }
    }
}
