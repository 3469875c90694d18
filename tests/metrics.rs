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
        2.0
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
        5.0
    );
    // Two distinct questions were evaluated, the other seven answered from the cache; the
    // malformed one looked in the cache too (it is refused after the lookup).
    assert_eq!(value(&after, "warrant_cache_misses_total", &[]), 3.0);
    assert_eq!(value(&after, "warrant_cache_hits_total", &[]), 7.0);
    assert_eq!(value(&after, "warrant_ledger_records_total", &[]), 9.0);
    assert_eq!(value(&after, "warrant_ledger_failed", &[]), 0.0);
}
