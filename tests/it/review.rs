//! Access reviews against a world with one planted finding of each kind the issue names: an
//! identity whose owner has left, a key unused for 100 days (its last decision written into
//! the ledger 100 days ago, before the server starts), an approval used 0 of 50 times, a
//! template link never exercised, and an approval replayed by another identity. Every other
//! identity acts and is attested by its owner through `warrant review attest`, so the review
//! must find exactly the planted five, through the CLI (`warrant review --out`), the metrics,
//! and again after a restart (the usage summary survives it).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::json;
use warrant_domain::clock::{Clock as _, SystemClock, UnixMillis};
use warrant_ledger::{Ledger, LedgerMode, LedgerSettings, Record};

use crate::common::{self, Server};

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    SystemClock.now().0
}

fn at(offset_days: i64) -> String {
    UnixMillis(now_ms() + offset_days * DAY_MS).to_cedar_datetime()
}

fn human(id: &str, status: &str) -> serde_json::Value {
    json!({"uid": {"type": "Human", "id": id},
           "attrs": {"name": id, "email": format!("{id}@example.com"), "status": status},
           "parents": []})
}

fn api_key(id: &str, owner: &str) -> serde_json::Value {
    json!({"uid": {"type": "ApiKey", "id": id},
           "attrs": {"owner": {"type": "Human", "id": owner}, "status": "active",
                     "environment": "production", "scopes": [{"type": "Scope", "id": "production"}]},
           "parents": []})
}

fn account(type_name: &str, id: &str, owner: &str) -> serde_json::Value {
    let mut attrs = json!({"owner": {"type": "Human", "id": owner}, "status": "active",
                           "environment": "production",
                           "scopes": [{"type": "Scope", "id": "production"}]});
    if type_name == "ServiceAccount" {
        attrs["privileged"] = json!(false);
    }
    json!({"uid": {"type": type_name, "id": id}, "attrs": attrs, "parents": []})
}

fn approval(
    id: &str,
    subject: (&str, &str),
    max_uses: Option<u64>,
    started_days_ago: i64,
) -> serde_json::Value {
    let mut attrs = json!({
        "ticket": format!("CHG-{id}"),
        "approver": {"type": "Human", "id": "bob"},
        "actions": [{"type": "Action", "id": "update"}],
        "scope": {"type": "Scope", "id": "production"},
        "not_before": {"__extn": {"fn": "datetime", "arg": at(-started_days_ago)}},
        "expires_at": {"__extn": {"fn": "datetime", "arg": at(30)}},
        "revoked": false,
    });
    if let Some(max) = max_uses {
        attrs["max_uses"] = json!(max);
    }
    json!({"uid": {"type": "Approval", "id": id}, "attrs": attrs,
           "parents": [{"type": subject.0, "id": subject.1}]})
}

/// The planted world's policy folder: the bundled policies with these facts and links.
fn planted_policies(dir: &Path) {
    common::copy_bundled_policies(dir);
    let entities = json!([
        human("alice", "active"),
        human("bob", "active"),
        human("carol", "active"),
        // Rita has left: what she owns is reported.
        human("rita", "left"),
        {"uid": {"type": "Scope", "id": "production"}, "attrs": {"kind": "environment"}, "parents": []},
        {"uid": {"type": "Scope", "id": "sales"}, "attrs": {"kind": "datasets"}, "parents": [{"type": "Scope", "id": "production"}]},
        {"uid": {"type": "Scope", "id": "finance"}, "attrs": {"kind": "datasets"}, "parents": [{"type": "Scope", "id": "production"}]},
        {"uid": {"type": "Dataset", "id": "sales-2026"}, "attrs": {}, "parents": [{"type": "Scope", "id": "sales"}]},
        {"uid": {"type": "Config", "id": "payments"}, "attrs": {}, "parents": [{"type": "Scope", "id": "production"}]},
        api_key("etl", "alice"),
        // Unused for 100 days: its one decision is that old.
        api_key("old-key", "alice"),
        // Acts, but its link (to finance) is never exercised.
        api_key("reader", "bob"),
        account("ServiceAccount", "deployer", "bob"),
        account("ServiceAccount", "orphan", "rita"),
        account("Agent", "sneaky", "carol"),
        // Used: presented (by the wrong identity) a day after it started.
        approval("apr-deploy", ("ServiceAccount", "deployer"), None, 1),
        // Never used, 0 of 50, for 30 days.
        approval("apr-idle", ("ServiceAccount", "deployer"), Some(50), 30),
    ]);
    std::fs::write(dir.join("entities.json"), entities.to_string()).unwrap();
    let links = json!([
        {"id": "etl-reads-sales", "template": "dataset-read-grant",
         "principal": {"type": "ApiKey", "id": "etl"}, "resource": {"type": "Scope", "id": "sales"}},
        {"id": "reader-reads-finance", "template": "dataset-read-grant",
         "principal": {"type": "ApiKey", "id": "reader"}, "resource": {"type": "Scope", "id": "finance"}},
    ]);
    std::fs::write(dir.join("links.json"), links.to_string()).unwrap();
    std::fs::write(dir.join("review.toml"), "[review]\ninterval_seconds = 1\n").unwrap();
}

/// Writes old-key's one decision, 100 days ago, into the ledger of `data`.
async fn write_old_decision(data: &Path) {
    let ledger = small_ledger(&data.join("ledger"));
    let record: Record = serde_json::from_value(json!({
        "action": "read", "answered_from_cache": false, "approval": null,
        "approval_presented": null, "caller": null, "context": {}, "decision": "DENY",
        "decision_id": uuid::Uuid::now_v7().to_string(), "errors": [], "evaluation_id": "e",
        "facts_version": "f",
        "owner": {"email": null, "entity": {"type": "Human", "id": "alice"}, "name": null},
        "policy_version": "v", "principal": {"type": "ApiKey", "id": "old-key"},
        "principal_status": "active", "reasons": ["warrant:no-permitting-policy"],
        "request_id": null, "resource": {"type": "Dataset", "id": "sales-2026"},
        "resource_scopes": [], "time": UnixMillis(now_ms() - 100 * DAY_MS).to_rfc3339(),
        "trace_id": null, "valid_until": UnixMillis(now_ms() - 100 * DAY_MS).to_rfc3339(),
    }))
    .unwrap();
    ledger.append(&[record]).await.unwrap();
    ledger.seal().await.unwrap();
    ledger.save_usage();
}

fn warrant(server: &Server, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_warrant"))
        .args(args)
        .args(["--admin", &format!("http://{}", server.admin)])
        .args(["--data-dir", server.data.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.is_empty() || output.status.code() == Some(2),
        "{args:?}: {stderr}"
    );
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// `warrant review --out`: the findings as (kind, subject), from findings.json, and the
/// report's text.
fn review(server: &Server, out: &Path) -> (BTreeSet<(String, String)>, String) {
    let (code, _) = warrant(server, &["review", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0);
    let findings: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("findings.json")).unwrap()).unwrap();
    let csv = std::fs::read_to_string(out.join("findings.csv")).unwrap();
    assert_eq!(csv.lines().count(), findings.len() + 1, "{csv}");
    let found = findings
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (
        found,
        std::fs::read_to_string(out.join("report.html")).unwrap(),
    )
}

fn planted() -> BTreeSet<(String, String)> {
    [
        ("owner-left", "ServiceAccount::orphan"),
        ("dormant", "ApiKey::old-key"),
        ("approval-unused", "apr-idle"),
        ("link-unused", "reader-reads-finance"),
        ("replay-suspected", "Agent::sneaky"),
    ]
    .into_iter()
    .map(|(k, s)| (k.to_owned(), s.to_owned()))
    .collect()
}

#[tokio::test]
async fn a_world_with_planted_findings_yields_exactly_those() {
    let policies = tempfile::tempdir().unwrap();
    planted_policies(policies.path());
    let data = tempfile::tempdir().unwrap();
    write_old_decision(data.path()).await;
    let policies_dir = policies.path().to_str().unwrap().to_owned();
    let config = policies.path().join("review.toml");
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        &policies_dir,
        "--config",
        config.to_str().unwrap(),
    ];
    let server = Server::start_in(data, &args).unwrap_or_else(|e| panic!("{e}"));
    let mut client = server.client().await;
    for (principal, action, resource, approval, expect) in [
        ("ApiKey::etl", "read", "Dataset::sales-2026", "", 1),
        // Seen, denied: its link is to finance.
        ("ApiKey::reader", "read", "Dataset::sales-2026", "", 2),
        (
            "ServiceAccount::orphan",
            "update",
            "Config::payments",
            "",
            2,
        ),
        (
            "ServiceAccount::deployer",
            "update",
            "Config::payments",
            "",
            2,
        ),
        // An approval granted to another identity, presented: a replay.
        (
            "Agent::sneaky",
            "update",
            "Config::payments",
            "apr-deploy",
            2,
        ),
    ] {
        let answer = client
            .check(common::request(principal, action, resource, approval))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.decision, expect,
            "{principal} {action} {resource}: {answer:?}"
        );
    }
    // Every owner still here attests what they own; rita has left and cannot.
    for (identity, owner) in [
        ("ApiKey::etl", "alice"),
        ("ApiKey::old-key", "alice"),
        ("ApiKey::reader", "bob"),
        ("ServiceAccount::deployer", "bob"),
        ("Agent::sneaky", "carol"),
    ] {
        let (code, out) = warrant(
            &server,
            &[
                "review",
                "attest",
                identity,
                "--as",
                &format!("Human::{owner}"),
                "--confirm",
            ],
        );
        assert_eq!(code, 0, "{identity}: {out}");
        assert!(out.contains("\"confirmed\""), "{out}");
    }
    // Someone else's attestation is refused, on record.
    let (code, out) = warrant(
        &server,
        &[
            "review",
            "attest",
            "ApiKey::etl",
            "--as",
            "Human::carol",
            "--confirm",
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("\"refused\""), "{out}");

    let out = tempfile::tempdir().unwrap();
    let (found, report) = review(&server, out.path());
    assert_eq!(found, planted());
    assert!(
        report.contains("<svg"),
        "the report draws its pictures inline"
    );
    assert!(
        !report.contains("<script") && !report.contains("http://") && !report.contains("https://"),
        "the report needs nothing outside itself"
    );
    assert!(report.contains("warrant policy unlink reader-reads-finance"));

    // The metrics count the same, by kind.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let scrape = common::scrape(&server).await;
        if !scrape
            .samples
            .iter()
            .any(|s| s.metric == "warrant_review_findings")
        {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        let counted: Vec<f64> = planted()
            .iter()
            .map(|(kind, _)| common::value(&scrape, "warrant_review_findings", &[("kind", kind)]))
            .collect();
        let ownerless = common::value(&scrape, "warrant_review_findings", &[("kind", "ownerless")]);
        if counted.iter().all(|n| *n == 1.0) && ownerless == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics never counted the findings: {counted:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Bob revokes the idle approval in the review: it is revoked, and no longer a finding.
    let (code, out) = warrant(
        &server,
        &[
            "review",
            "attest",
            "apr-idle",
            "--as",
            "Human::bob",
            "--revoke",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"approval revoked\""), "{out}");
    let second = tempfile::tempdir().unwrap();
    let (found, _) = review(&server, second.path());
    let mut expected = planted();
    expected.remove(&("approval-unused".to_owned(), "apr-idle".to_owned()));
    assert_eq!(found, expected);

    // The usage summary and the attestations survive a restart.
    let data = server.terminate();
    let server = Server::start_in(data, &args).unwrap_or_else(|e| panic!("{e}"));
    let again = tempfile::tempdir().unwrap();
    let (found, _) = review(&server, again.path());
    assert_eq!(found, expected);
}

fn small_ledger(dir: &Path) -> Ledger {
    Ledger::open(&LedgerSettings {
        dir: dir.to_path_buf(),
        mode: LedgerMode::Durable,
        checkpoint_records: 10,
        checkpoint_interval: std::time::Duration::from_secs(5),
        segment_bytes: 8 * 1024,
        queue: 100,
        mask_keys: Vec::new(),
        replica: None,
        signing_key: None,
        retention: None,
        index_cache_bytes: 1 << 20,
        usage_max_entries: 1000,
    })
    .unwrap()
}

/// Decisions folded in, and identities held, once the summary has been read.
fn usage_of(ledger: &Ledger) -> (u64, usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(held) = ledger.usage(|u| (u.decisions, u.identities.len())) {
            return held;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the usage summary was never read"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test]
async fn the_usage_summary_outlives_archived_segments_and_is_rebuilt_from_what_remains() {
    let dir = tempfile::tempdir().unwrap();
    let ledger_dir = dir.path().join("ledger");
    let ledger = small_ledger(&ledger_dir);
    let start = now_ms() - 50 * DAY_MS;
    for i in 0..200i64 {
        let record: Record = serde_json::from_value(json!({
            "action": "read", "answered_from_cache": false, "approval": null,
            "approval_presented": null, "caller": null, "context": {}, "decision": "ALLOW",
            "decision_id": uuid::Uuid::now_v7().to_string(), "errors": [], "evaluation_id": "e",
            "facts_version": "f", "owner": null, "policy_version": "v",
            "principal": {"type": "ApiKey", "id": format!("key-{}", i % 20)},
            "principal_status": "active", "reasons": ["some-link"], "request_id": null,
            "resource": {"type": "Dataset", "id": "d"}, "resource_scopes": [],
            "time": UnixMillis(start + i * 60_000).to_rfc3339(), "trace_id": null,
            "valid_until": UnixMillis(start + i * 60_000).to_rfc3339(),
        }))
        .unwrap();
        ledger.append(&[record]).await.unwrap();
    }
    ledger.seal().await.unwrap();
    assert_eq!(usage_of(&ledger), (200, 20));
    ledger.save_usage();
    drop(ledger);
    // The writer ends on its own thread once the ledger is dropped.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let key = warrant_ledger::load_or_create_signing_key(&ledger_dir.join("ledger-signing.key"))
        .unwrap()
        .verifying_key();
    let archived = warrant_ledger::archive(
        &ledger_dir,
        &key,
        warrant_ledger::Cut {
            before: None,
            max_bytes: Some(16 * 1024),
        },
        &dir.path().join("archive"),
    )
    .unwrap();
    assert!(archived.is_some(), "segments were archived");

    // Archived records stay summarised: the summary is kept apart from the segments.
    let ledger = small_ledger(&ledger_dir);
    assert_eq!(usage_of(&ledger), (200, 20));
    let archived_summary = ledger.usage(|u| u.clone()).unwrap();
    drop(ledger);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Lost, it is built again from the records that remain (fewer: the rest were archived).
    std::fs::remove_file(ledger_dir.join("usage.summary")).unwrap();
    let ledger = small_ledger(&ledger_dir);
    let (decisions, _) = usage_of(&ledger);
    assert!(decisions > 0 && decisions < 200, "{decisions}");
    let rebuilt = ledger.usage(|u| u.clone()).unwrap();
    assert_eq!(rebuilt.covers, archived_summary.covers);
}
