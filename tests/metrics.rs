//! The metrics endpoint, scraped during a run and read with a Prometheus text-format parser: the
//! counters move as the requests did.

mod common;

use common::{Server, pipeline_read, request, scrape, value};

#[tokio::test]
async fn counters_move_as_the_requests_did() {
    let server = Server::start(&[]);
    let before = scrape(&server).await;
    assert_eq!(
        value(
            &before,
            "warrant_decisions_total",
            &[("api", "check"), ("decision", "allow")]
        ),
        0.0
    );

    let mut client = server.client().await;
    for _ in 0..3 {
        client
            .check(pipeline_read("Dataset::sales-2026"))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        client
            .check(pipeline_read("Dataset::salaries"))
            .await
            .unwrap();
    }
    client
        .check(request(
            "ApiKey::pipeline-etl",
            "delete",
            "Dataset::salaries",
            "",
        ))
        .await
        .unwrap_err();
    client
        .batch_check(warrant::proto::BatchCheckRequest {
            checks: vec![pipeline_read("Dataset::sales-2026"); 4],
        })
        .await
        .unwrap();

    let after = scrape(&server).await;
    assert_eq!(
        value(
            &after,
            "warrant_decisions_total",
            &[("api", "check"), ("decision", "allow")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &after,
            "warrant_decisions_total",
            &[("api", "check"), ("decision", "deny")]
        ),
        // Two denied by policy, and the malformed one: every refusal is a recorded deny.
        3.0
    );
    assert_eq!(
        value(
            &after,
            "warrant_refusals_total",
            &[("api", "check"), ("reason", "warrant:invalid-request")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "warrant_decisions_total",
            &[("api", "batch_check"), ("decision", "allow")]
        ),
        4.0
    );
    assert_eq!(
        value(
            &after,
            "warrant_invalid_requests_total",
            &[("api", "check")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "warrant_request_duration_seconds_count",
            &[("api", "check")]
        ),
        // Every call, the refused one included.
        6.0
    );
    // Two distinct questions were evaluated, the other seven answered from the cache; the
    // malformed one looked in the cache too (it is refused after the lookup).
    assert_eq!(value(&after, "warrant_cache_misses_total", &[]), 3.0);
    assert_eq!(value(&after, "warrant_cache_hits_total", &[]), 7.0);
    assert_eq!(value(&after, "warrant_ledger_records_total", &[]), 10.0);
    assert_eq!(value(&after, "warrant_ledger_failed", &[]), 0.0);
    // One append per call: six Checks (one refused) and one batch.
    assert_eq!(
        value(&after, "warrant_ledger_append_duration_seconds_count", &[]),
        7.0
    );
    assert_eq!(
        value(
            &after,
            "warrant_grpc_responses_total",
            &[("api", "check"), ("code", "Ok")]
        ),
        5.0
    );
    assert_eq!(
        value(
            &after,
            "warrant_grpc_responses_total",
            &[("api", "check"), ("code", "InvalidArgument")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "warrant_grpc_responses_total",
            &[("api", "batch_check"), ("code", "Ok")]
        ),
        1.0
    );
    assert_eq!(value(&after, "warrant_evaluation_errors_total", &[]), 0.0);
    assert_eq!(value(&after, "warrant_policy_reload_failing", &[]), 0.0);
    assert_eq!(
        value(
            &after,
            "warrant_policy_reloads_total",
            &[("result", "failure")]
        ),
        0.0
    );
}

#[tokio::test]
async fn liveness_and_readiness_over_http() {
    let server = Server::start(&[]);
    let base = common::metrics_base(&server);
    assert_eq!(
        common::http_get(&format!("{base}/healthz")).await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        common::http_get(&format!("{base}/readyz")).await,
        (200, "ready\n".to_owned())
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let server = Server::start(&[]);
    // One decision and one admin call, so that every family has a sample.
    server
        .client()
        .await
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap();
    server
        .admin_client()
        .await
        .status(warrant::proto::StatusRequest {})
        .await
        .unwrap();
    let exported: std::collections::BTreeSet<String> = scrape(&server)
        .await
        .samples
        .into_iter()
        .map(|s| s.metric)
        .collect();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grafana");
    let mut used = std::collections::BTreeSet::new();
    for file in ["dashboard.json", "alerts.yaml"] {
        let text = std::fs::read_to_string(examples.join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("warrant_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            used.insert(name);
        }
    }
    assert!(used.len() >= 15, "{used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| {
            // prometheus-parse folds histograms into one sample named without `_bucket`.
            let base = name.trim_end_matches("_bucket");
            !exported.contains(*name) && !exported.contains(base)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?}; exported: {exported:?}"
    );
}
