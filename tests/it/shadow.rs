//! Shadow policies against the real server: a candidate set is evaluated beside the active one,
//! never answers, and what it would have decided is recorded in the ledger and counted.

use crate::common::{Server, deploy, pipeline_read, scrape, value};
use warrant_proto as proto;

/// The bundled policies plus a forbid on every read: the rollout a team wants to try.
fn candidate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "schema.cedarschema",
        "identity.cedar",
        "approvals.cedar",
        "datasets.cedar",
        "deployments.cedar",
        "agents.cedar",
        "exports.cedar",
        "links.json",
    ] {
        std::fs::copy(
            crate::common::bundled_policies().join(name),
            dir.path().join(name),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("freeze.cedar"),
        "@id(\"freeze-reads\")\nforbid (principal, action == Action::\"read\", resource);\n",
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn the_candidate_set_judges_every_request_but_answers_none() {
    let candidate = candidate();
    let server = Server::start(&["--shadow-policies", candidate.path().to_str().unwrap()]);
    let mut client = server.client().await;

    // The active set allows the read and answers; the candidate would have denied it.
    let read = client
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.decision, proto::Decision::Allow as i32);
    let record = server.record(&read.decision_id).await;
    assert_eq!(record["decision"], "ALLOW");
    assert_eq!(record["shadow"]["decision"], "DENY");
    assert_eq!(
        record["shadow"]["reasons"],
        serde_json::json!(["freeze-reads"])
    );
    assert_ne!(record["shadow"]["policy_version"], record["policy_version"]);

    // From the cache, the candidate's verdict comes along and is counted again.
    let again = client
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.provenance.unwrap().answered_from_cache);
    assert_eq!(
        server.record(&again.decision_id).await["shadow"]["decision"],
        "DENY"
    );

    // Where both agree (an update is not a read), the record says so too.
    let update = client.check(deploy("CHG-1042")).await.unwrap().into_inner();
    let record = server.record(&update.decision_id).await;
    assert_eq!(record["shadow"]["decision"], "ALLOW");

    let metrics = scrape(&server).await;
    assert_eq!(
        value(
            &metrics,
            "warrant_shadow_decisions_total",
            &[("agreement", "disagree")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            "warrant_shadow_decisions_total",
            &[("agreement", "agree")]
        ),
        1.0
    );

    // The team drops the freeze from the candidate: reloaded with the active set, the next
    // read (even one the cache answered before) is judged by the new candidate.
    std::fs::remove_file(candidate.path().join("freeze.cedar")).unwrap();
    server
        .admin_client()
        .await
        .reload_policies(proto::ReloadPoliciesRequest {})
        .await
        .unwrap();
    let after = client
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap()
        .into_inner();
    assert!(!after.provenance.unwrap().answered_from_cache);
    assert_eq!(
        server.record(&after.decision_id).await["shadow"]["decision"],
        "ALLOW"
    );
}

#[tokio::test]
async fn without_a_candidate_records_carry_no_shadow_and_a_broken_one_stops_the_server() {
    let server = Server::start(&[]);
    let read = server
        .client()
        .await
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap()
        .into_inner();
    let record = server.record(&read.decision_id).await;
    assert!(record.get("shadow").is_none(), "{record}");

    let broken = candidate();
    std::fs::write(
        broken.path().join("freeze.cedar"),
        "forbid (principal, action, resource);\n",
    )
    .unwrap();
    let stderr = Server::start_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        crate::common::bundled_policies().to_str().unwrap(),
        "--shadow-policies",
        broken.path().to_str().unwrap(),
    ])
    .err()
    .expect("a candidate set that does not load is refused at start");
    assert!(
        stderr.contains("the shadow policies in") && stderr.contains("freeze.cedar:1:1"),
        "{stderr}"
    );
}
