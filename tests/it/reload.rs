//! Policy hot reload against the real server: a valid change is picked up without a restart, an
//! invalid one is refused while the last good set keeps answering, and Checks that run during
//! reloads never see an error or a mix of two sets.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{Server, pipeline_read, scrape, value};
use warrant_proto as proto;

const FREEZE: &str =
    "@id(\"freeze-reads\")\nforbid (principal, action == Action::\"read\", resource);\n";

fn start_on(policies: &Path) -> Server {
    Server::start_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        policies.to_str().unwrap(),
    ])
    .unwrap()
}

async fn read_sales(server: &Server) -> proto::CheckResponse {
    server
        .client()
        .await
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap()
        .into_inner()
}

/// Polls until `done` holds of the answer (the watcher waits for the folder to be quiet).
async fn eventually(
    server: &Server,
    done: impl Fn(&proto::CheckResponse) -> bool,
) -> proto::CheckResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = read_sales(server).await;
        if done(&answer) || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn allowed(answer: &proto::CheckResponse) -> bool {
    answer.decision == proto::Decision::Allow as i32
}

#[tokio::test]
async fn the_watcher_picks_up_a_valid_change_and_refuses_a_broken_one() {
    let policies = crate::common::bundled_policies_copy();
    let server = start_on(policies.path());
    let mut admin = server.admin_client().await;
    let before = read_sales(&server).await;
    assert!(allowed(&before), "{:?}", before.reasons);

    // A new forbid, written into the folder: in force without a restart.
    std::fs::write(policies.path().join("freeze.cedar"), FREEZE).unwrap();
    let frozen = eventually(&server, |a| !allowed(a)).await;
    assert_eq!(frozen.reasons, ["freeze-reads"]);
    assert_ne!(frozen.policy_version, before.policy_version);

    // A broken file: refused whole; the frozen set keeps answering.
    std::fs::write(
        policies.path().join("broken.cedar"),
        "permit (principal, action, resource) when { nonsense };\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = admin
            .status(proto::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if !status.last_reload_error.is_empty() || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.last_reload_error.contains("broken.cedar"),
        "{status:?}"
    );
    assert_eq!(status.policy_version, frozen.policy_version);
    let still = read_sales(&server).await;
    assert_eq!(
        (still.reasons.clone(), still.policy_version.clone()),
        (frozen.reasons.clone(), frozen.policy_version.clone())
    );
    let metrics = scrape(&server).await;
    assert!(
        value(
            &metrics,
            "warrant_policy_reloads_total",
            &[("result", "failure")]
        ) >= 1.0
    );
    assert_eq!(value(&metrics, "warrant_policy_reload_failing", &[]), 1.0);
    // ReloadPolicies says why, and changes nothing.
    let refused = admin
        .reload_policies(proto::ReloadPoliciesRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("broken.cedar"),
        "{}",
        refused.message()
    );

    // Fixed: both files go, the original set is back and the error is cleared.
    std::fs::remove_file(policies.path().join("broken.cedar")).unwrap();
    std::fs::remove_file(policies.path().join("freeze.cedar")).unwrap();
    let thawed = eventually(&server, allowed).await;
    assert!(allowed(&thawed));
    assert_eq!(thawed.policy_version, before.policy_version);
    let status = admin
        .status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.last_reload_error.is_empty(), "{status:?}");
    assert_eq!(
        value(&scrape(&server).await, "warrant_policy_reload_failing", &[]),
        0.0
    );
}

#[tokio::test]
async fn a_reload_that_breaks_live_facts_is_refused() {
    // The live changes must fit the new schema too, or the reload is refused whole.
    let policies = crate::common::bundled_policies_copy();
    let server = start_on(policies.path());
    let mut admin = server.admin_client().await;
    let now = warrant_domain::clock::Clock::now(&warrant_domain::clock::SystemClock).0 / 1000;
    admin
        .grant_approval(proto::GrantApprovalRequest {
            approval: Some(proto::ApprovalSpec {
                id: "once".into(),
                ticket: "CHG-9".into(),
                approver: crate::common::entity("Human", "alice"),
                requester: crate::common::entity("Human", "bob"),
                subject: crate::common::entity("ServiceAccount", "deploy-bot"),
                actions: vec!["update".into()],
                scope: crate::common::entity("Scope", "production"),
                expires_at: Some(prost_types::Timestamp {
                    seconds: now + 3600,
                    nanos: 0,
                }),
                max_uses: 1,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let before = read_sales(&server).await.policy_version;
    // A schema without `max_uses`: the file's approvals fit it, the live single-use one does not.
    let schema_path = policies.path().join("schema.cedarschema");
    let schema = std::fs::read_to_string(&schema_path).unwrap();
    let narrowed = schema.replacen("  max_uses?: Long,\n", "", 1);
    assert_ne!(narrowed, schema);
    std::fs::write(&schema_path, narrowed).unwrap();
    let refused = admin
        .reload_policies(proto::ReloadPoliciesRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("once"), "{}", refused.message());
    let answer = read_sales(&server).await;
    assert!(allowed(&answer));
    assert_eq!(answer.policy_version, before);
}

#[tokio::test]
async fn checks_during_reloads_see_one_whole_set_or_the_other() {
    let policies = crate::common::bundled_policies_copy();
    let server = start_on(policies.path());
    let mut admin = server.admin_client().await;
    let open_version = read_sales(&server).await.policy_version;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut checkers = Vec::new();
    for _ in 0..4 {
        let mut client = server.client().await;
        let stop = std::sync::Arc::clone(&stop);
        checkers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Any error here fails the test: a reload must never surface as one.
                let answer = client
                    .check(pipeline_read("Dataset::sales-2026"))
                    .await
                    .expect("a Check during a reload")
                    .into_inner();
                seen.push((
                    answer.policy_version,
                    answer.decision,
                    answer.reasons,
                    answer.errors.len(),
                ));
            }
            seen
        }));
    }
    let freeze = policies.path().join("freeze.cedar");
    let mut frozen_version = String::new();
    for round in 0..20 {
        if round % 2 == 0 {
            // As a deploy does it: written aside, then renamed into place (a file rewritten in
            // place can be read half written by anyone, the folder watcher included).
            let staged = policies.path().join(".freeze.cedar.tmp");
            std::fs::write(&staged, FREEZE).unwrap();
            std::fs::rename(&staged, &freeze).unwrap();
        } else {
            std::fs::remove_file(&freeze).unwrap();
        }
        // The watcher may get there first; either way this reload leaves the folder's set on.
        let status = admin
            .reload_policies(proto::ReloadPoliciesRequest {})
            .await
            .unwrap()
            .into_inner();
        if round % 2 == 0 {
            frozen_version = status.policy_version;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen_versions = std::collections::BTreeSet::new();
    let mut total = 0;
    for checker in checkers {
        for (version, decision, reasons, errors) in checker.await.unwrap() {
            total += 1;
            assert_eq!(errors, 0);
            if version == open_version {
                assert_eq!(decision, proto::Decision::Allow as i32, "{reasons:?}");
            } else {
                assert_eq!(version, frozen_version);
                assert_eq!(
                    (decision, reasons),
                    (
                        proto::Decision::Deny as i32,
                        vec!["freeze-reads".to_owned()]
                    )
                );
            }
            seen_versions.insert(version);
        }
    }
    assert!(total > 0);
    assert!(seen_versions.len() <= 2);
}

#[tokio::test]
async fn a_policy_file_caught_mid_rewrite_is_never_served() {
    let policies = crate::common::bundled_policies_copy();
    let server = start_on(policies.path());
    let suspended = || {
        crate::common::request(
            "ServiceAccount::old-deployer",
            "update",
            "Config::payments-api-staging",
            "",
        )
    };
    let mut client = server.client().await;
    let before = client.check(suspended()).await.unwrap().into_inner();
    assert_eq!(before.reasons, ["identity-not-active"]);
    // Rewrite identity.cedar in place: truncated at open, written 1.5 s later, then closed.
    let path = policies.path().join("identity.cedar");
    let text = std::fs::read_to_string(&path).unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&path).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        file.write_all(format!("{text}\n// reviewed\n").as_bytes())
            .unwrap();
    });
    // During the window the half-written (empty) file is never loaded: the old set answers.
    let window = Instant::now() + Duration::from_millis(1300);
    while Instant::now() < window {
        let answer = client.check(suspended()).await.unwrap().into_inner();
        assert_eq!(answer.reasons, ["identity-not-active"]);
        assert_eq!(answer.policy_version, before.policy_version);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.join().unwrap();
    // Once the file is closed, the whole new set is loaded.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = client.check(suspended()).await.unwrap().into_inner();
        assert_eq!(answer.reasons, ["identity-not-active"]);
        if answer.policy_version != before.policy_version {
            break;
        }
        assert!(Instant::now() < deadline, "the rewrite was never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
