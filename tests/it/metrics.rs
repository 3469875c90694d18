//! The metrics endpoint, scraped during a run and read with a Prometheus text-format parser: the
//! counters move as the requests did.

use crate::common::{Server, pipeline_read, request, scrape, value};

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
        .batch_check(warrant_proto::BatchCheckRequest {
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
    let base = crate::common::metrics_base(&server);
    assert_eq!(
        crate::common::http_get(&format!("{base}/healthz")).await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        crate::common::http_get(&format!("{base}/readyz")).await,
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
        .status(warrant_proto::StatusRequest {})
        .await
        .unwrap();
    // The access review's gauges come with its first count, made once the server has read its
    // ledger's usage summary.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let exported: std::collections::BTreeSet<String> = loop {
        let exported: std::collections::BTreeSet<String> = scrape(&server)
            .await
            .samples
            .into_iter()
            .map(|s| s.metric)
            .collect();
        if exported.contains("warrant_review_findings") || std::time::Instant::now() > deadline {
            break exported;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
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

/// The policy folder with one more policy that fails at run time (an overflow) on vendor
/// requests: every such decision is a deny with an evaluation error.
fn policies_with_an_erroring_policy() -> tempfile::TempDir {
    let dir = crate::common::bundled_policies_copy();
    std::fs::write(
        dir.path().join("overflow.cedar"),
        "@id(\"overflows\")\nforbid (principal, action == Action::\"submit_vendor_request\", resource)\nwhen { context.amount * 4611686018427387904 > 0 };\n",
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn known_traffic_is_counted_exactly_timeouts_and_refusals_included() {
    let policies = policies_with_an_erroring_policy();
    let server = Server::start_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        policies.path().to_str().unwrap(),
        "--request-timeout-ms",
        "300",
        "--ledger-segment-bytes",
        "1",
    ])
    .unwrap();
    // Every series a rule reads exists at zero before the first request.
    let fresh = scrape(&server).await;
    for (name, labels) in [
        (
            "warrant_grpc_responses_total",
            vec![("api", "check"), ("code", "DeadlineExceeded")],
        ),
        (
            "warrant_refusals_total",
            vec![("api", "ext_authz"), ("reason", "warrant:no-route")],
        ),
        ("warrant_evaluation_errors_total", vec![]),
        (
            "warrant_admin_calls_total",
            vec![("method", "GrantApproval"), ("code", "Ok")],
        ),
    ] {
        assert_eq!(value(&fresh, name, &labels), 0.0, "{name} {labels:?}");
    }

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
    let mut vendor = request(
        "Agent::procurement-agent",
        "submit_vendor_request",
        "Tool::vendor-portal",
        "TASK-77",
    );
    vendor.context = crate::common::context(serde_json::json!({"vendor": "Acme", "amount": 1200}));
    let errored = client.check(vendor).await.unwrap().into_inner();
    assert_eq!(errored.errors.len(), 1, "{errored:?}");
    client
        .check(request(
            "ApiKey::pipeline-etl",
            "delete",
            "Dataset::salaries",
            "",
        ))
        .await
        .unwrap_err();
    // ext_authz with no route table: every request is refused (answered OK to Envoy).
    let mut envoy = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        server.url(),
    )
    .await
    .unwrap();
    for _ in 0..2 {
        envoy
            .check(envoy_types::ext_authz::v3::pb::CheckRequest::default())
            .await
            .unwrap();
    }

    let after = scrape(&server).await;
    let check = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels);
    assert_eq!(
        check(
            "warrant_decisions_total",
            &[("api", "check"), ("decision", "allow")]
        ),
        3.0
    );
    // Two by policy, one evaluation error, one refusal.
    assert_eq!(
        check(
            "warrant_decisions_total",
            &[("api", "check"), ("decision", "deny")]
        ),
        4.0
    );
    assert_eq!(check("warrant_evaluation_errors_total", &[]), 1.0);
    assert_eq!(
        check(
            "warrant_refusals_total",
            &[("api", "check"), ("reason", "warrant:invalid-request")]
        ),
        1.0
    );
    assert_eq!(
        check(
            "warrant_refusals_total",
            &[
                ("api", "ext_authz"),
                ("reason", "warrant:malformed-check-request")
            ]
        ),
        2.0
    );
    assert_eq!(
        check(
            "warrant_grpc_responses_total",
            &[("api", "check"), ("code", "Ok")]
        ),
        6.0
    );
    assert_eq!(
        check(
            "warrant_grpc_responses_total",
            &[("api", "check"), ("code", "InvalidArgument")]
        ),
        1.0
    );
    assert_eq!(
        check(
            "warrant_grpc_responses_total",
            &[("api", "ext_authz"), ("code", "Ok")]
        ),
        2.0
    );
    assert_eq!(
        check(
            "warrant_request_duration_seconds_count",
            &[("api", "check")]
        ),
        7.0
    );
    assert_eq!(check("warrant_in_flight_calls", &[("api", "check")]), 0.0);
    assert!(check("warrant_request_duration_seconds_sum", &[("api", "check")]) > 0.0);

    // A ledger that hangs (the next segment is a FIFO nobody reads): the Check is answered at
    // the time limit, DEADLINE_EXCEEDED, and counted so.
    #[expect(clippy::cast_possible_truncation, reason = "a counter read as f64")]
    let next = check("warrant_ledger_records_total", &[]) as u64 + 1;
    let fifo = server
        .ledger_dir()
        .join("ledger")
        .join(format!("segment-{next:020}.jsonl"));
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let status = client
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .expect_err("the ledger never answers");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    let stuck = scrape(&server).await;
    assert_eq!(
        value(
            &stuck,
            "warrant_grpc_responses_total",
            &[("api", "check"), ("code", "DeadlineExceeded")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &stuck,
            "warrant_refusals_total",
            &[("api", "check"), ("reason", "warrant:timed-out")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &stuck,
            "warrant_request_duration_seconds_count",
            &[("api", "check")]
        ),
        8.0
    );
    // Its latency is in the histogram: past the 250 ms bucket.
    assert!(
        value(
            &stuck,
            "warrant_request_duration_seconds_sum",
            &[("api", "check")]
        ) >= 0.3
    );
    drop(server);
}

#[tokio::test]
async fn promtool_finds_the_exposition_well_formed() {
    let server = Server::start(&[]);
    server
        .client()
        .await
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap();
    let (code, text) =
        crate::common::http_get(&format!("{}/metrics", crate::common::metrics_base(&server))).await;
    assert_eq!(code, 200);
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut promtool) = promtool else {
        assert!(
            std::env::var_os("WARRANT_REQUIRE_PROMTOOL").is_none(),
            "promtool is required (scripts/test installs Debian's prometheus)"
        );
        eprintln!("skipped: no promtool here");
        return;
    };
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let findings = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{findings}");
    assert!(findings.trim().is_empty(), "{findings}");
}
