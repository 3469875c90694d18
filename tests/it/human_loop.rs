//! A human in the loop, on the real server: a denial says what approval would allow (found by
//! deciding again under a hypothetical one), the identity files a request for exactly that,
//! watches it, a human approves it on the admin API, the watcher sees it at once, and the next
//! Check under the new approval is allowed, once. Separation of duties, a request decided twice,
//! an expired request, the bound on pending requests, and a restart in the middle.

use futures_util::StreamExt as _;

use crate::common::{Server, deploy, pipeline_read};
use warrant_proto as proto;

fn entity(type_name: &str, id: &str) -> Option<proto::EntityRef> {
    crate::common::entity(type_name, id)
}

/// What deploy-bot asks for after its denied change.
fn ask_for(advice: &proto::ApprovalRequired, decision_id: &str) -> proto::RequestApprovalRequest {
    proto::RequestApprovalRequest {
        identity: advice.identity.clone(),
        action: advice.action.clone(),
        resource: advice.resource.clone(),
        scope: advice.scope.clone(),
        justification: "roll out the payments fix".to_owned(),
        ticket: "CHG-9001".to_owned(),
        duration_seconds: 1800,
        on_behalf_of: entity("Human", "bob"),
        decision_id: decision_id.to_owned(),
        credential: String::new(),
    }
}

fn decide(id: &str, approver: &str, approve: bool) -> proto::DecideApprovalRequestRequest {
    proto::DecideApprovalRequestRequest {
        id: id.to_owned(),
        approver: entity("Human", approver),
        approve,
        duration_seconds: 0,
        max_uses: 1,
        reason: if approve {
            String::new()
        } else {
            "not during the freeze".to_owned()
        },
        ..proto::DecideApprovalRequestRequest::default()
    }
}

#[tokio::test]
async fn a_denied_agent_asks_a_human_approves_and_the_agent_proceeds_once() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let mut admin = server.admin_client().await;

    // Denied, with the approval that would allow it.
    let denied = client.check(deploy("")).await.unwrap().into_inner();
    assert_eq!(denied.decision, proto::Decision::Deny as i32);
    let advice = denied
        .approval_required
        .clone()
        .unwrap_or_else(|| panic!("no approval advice: {:?}", denied.reasons));
    assert_eq!(advice.identity, entity("ServiceAccount", "deploy-bot"));
    assert_eq!(advice.action, "update");
    assert_eq!(advice.resource, entity("Config", "payments-api"));
    assert_eq!(advice.scope, entity("Scope", "prod-payments-config"));
    assert_eq!(advice.max_validity_seconds, 720 * 3600);
    let record = server.record(&denied.decision_id).await;
    assert_eq!(
        record["approval_required"]["scope"],
        serde_json::json!({"type": "Scope", "id": "prod-payments-config"})
    );
    // AuthZEN says it as advice in the decision's context.
    let evaluation = deploy_evaluation();
    let answer = crate::authzen::evaluate(&server, "/access/v1/evaluation", &evaluation).await;
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["decision"], false);
    assert_eq!(body["context"]["advice"][0]["id"], "approval_required");
    assert_eq!(
        body["context"]["advice"][0]["attributes"]["action"],
        "update"
    );
    // No advice where no approval would help: a dataset outside the key's scopes.
    let outside = client
        .check(pipeline_read("Dataset::salaries"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outside.decision, proto::Decision::Deny as i32);
    assert_eq!(outside.approval_required, None);

    // The request, and a watcher.
    let filed = client
        .request_approval(ask_for(&advice, &denied.decision_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filed.state, "pending");
    assert_eq!(filed.decision_id, denied.decision_id);
    let mut watch = client
        .watch_approval_request(proto::GetApprovalRequestRequest {
            id: filed.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.state, "pending");
    let pending = admin
        .list_approval_requests(proto::ListApprovalRequestsRequest {
            state: "pending".to_owned(),
            identity: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.requests.len(), 1);
    let scrape = crate::common::scrape(&server).await;
    assert_eq!(
        crate::common::value(
            &scrape,
            "warrant_approval_requests",
            &[("state", "pending")]
        ),
        1.0
    );

    // Separation of duties: not the human the agent acts for, not a non-human.
    let refused = admin
        .decide_approval_request(decide(&filed.id, "bob", true))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused
            .message()
            .starts_with("approver: separation of duties"),
        "{}",
        refused.message()
    );
    let mut by_a_bot = decide(&filed.id, "bob", true);
    by_a_bot.approver = entity("ServiceAccount", "deploy-bot");
    let refused = admin.decide_approval_request(by_a_bot).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // Approved by another human: the watcher hears it, and the stream ends.
    let approved = admin
        .decide_approval_request(decide(&filed.id, "carol", true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.state, "approved");
    assert!(!approved.approval_id.is_empty());
    let heard = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
        .await
        .expect("the watcher hears the decision")
        .unwrap()
        .unwrap();
    assert_eq!(heard.approval_id, approved.approval_id);
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .is_none()
    );
    let again = admin
        .decide_approval_request(decide(&filed.id, "dave", false))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);

    // The agent proceeds, once (max_uses 1), then is denied again.
    let allowed = client
        .check(deploy(&approved.approval_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        allowed.decision,
        proto::Decision::Allow as i32,
        "{:?}",
        allowed.reasons
    );
    let record = server.record(&allowed.decision_id).await;
    assert_eq!(record["approval"]["approver"]["id"], "carol");
    let exhausted = client
        .check(deploy(&approved.approval_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(exhausted.reasons, ["warrant:approval-uses-exhausted"]);

    // A rejection says why.
    let second = client
        .request_approval(ask_for(&advice, ""))
        .await
        .unwrap()
        .into_inner();
    let rejected = admin
        .decide_approval_request(decide(&second.id, "carol", false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (rejected.state.as_str(), rejected.reason.as_str()),
        ("rejected", "not during the freeze")
    );

    // Bad requests name their field.
    let mut unknown = ask_for(&advice, "");
    unknown.resource = entity("Config", "nope");
    let refused = client.request_approval(unknown).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().starts_with("resource:"),
        "{}",
        refused.message()
    );
    let mut forever = ask_for(&advice, "");
    forever.duration_seconds = 10 * 365 * 86_400;
    let refused = client.request_approval(forever).await.unwrap_err();
    assert!(
        refused.message().starts_with("duration:"),
        "{}",
        refused.message()
    );

    // On record, linked by ids: the last denial's story is the whole loop, in order.
    let data = server.kill();
    let (ok, text) = crate::ledger::log(data.path(), &["verify"]);
    assert!(ok, "{text}");
    let (ok, text) = crate::ledger::log(
        data.path(),
        &["show", &exhausted.decision_id, "--output", "json"],
    );
    assert!(ok, "{text}");
    let shown: serde_json::Value = serde_json::from_str(&text).unwrap();
    let story: Vec<(String, String)> = shown["story"]
        .as_array()
        .unwrap()
        .iter()
        .map(
            |entry| match (&entry["record"], &entry["approval_request"]) {
                (serde_json::Value::Null, step) => (
                    step["event"].as_str().unwrap().to_owned(),
                    step["id"].as_str().unwrap().to_owned(),
                ),
                (record, _) => (
                    record["decision"].as_str().unwrap().to_owned(),
                    record["decision_id"].as_str().unwrap().to_owned(),
                ),
            },
        )
        .collect();
    let expected = [
        ("DENY", denied.decision_id.as_str()),
        ("filed", filed.id.as_str()),
        ("approved", filed.id.as_str()),
        ("ALLOW", allowed.decision_id.as_str()),
        ("DENY", exhausted.decision_id.as_str()),
    ];
    assert_eq!(
        story,
        expected.map(|(what, id)| (what.to_owned(), id.to_owned())),
        "{text}"
    );
    let approved_step = &shown["story"][2]["approval_request"];
    assert_eq!(approved_step["decided_by"]["id"], "carol");
    assert_eq!(approved_step["approval_id"], approved.approval_id.as_str());
    assert_eq!(approved_step["approval_max_uses"], 1);
    assert_eq!(
        shown["story"][1]["approval_request"]["justification"],
        "roll out the payments fix"
    );
    let (_, text) = crate::ledger::log(data.path(), &["show", &exhausted.decision_id]);
    assert!(
        text.contains("story      ")
            && text.contains(&format!(
                "by Human::carol (named by the admin caller): approval {}",
                approved.approval_id
            ))
            && text.contains("(use 1 of "),
        "{text}"
    );
    // The rejected request's story: filed, then rejected, by whom and why; unlinked to the rest.
    let (ok, text) = crate::ledger::log(data.path(), &["show", &second.id]);
    assert!(ok, "{text}");
    assert!(
        text.contains("request    ") && text.contains("FILED"),
        "{text}"
    );
    assert!(
        text.contains("rejected")
            && text.contains("Human::carol (named by the admin caller): not during the freeze"),
        "{text}"
    );
    assert!(!text.contains(&denied.decision_id), "{text}");
    // A shipper sees the steps too.
    let (ok, text) = crate::ledger::log(data.path(), &["export"]);
    assert!(ok, "{text}");
    let steps = text
        .lines()
        .filter(|line| line.starts_with("{\"approval_request\":"))
        .count();
    assert_eq!(steps, 4, "filed + approved, filed + rejected: {text}");
}

#[tokio::test]
async fn requests_expire_are_bounded_and_survive_a_restart() {
    let args = [
        "--approval-request-ttl-seconds",
        "8",
        "--approval-requests-max-pending",
        "1",
    ];
    let server = Server::start(&args);
    let mut client = server.client().await;
    let denied = client.check(deploy("")).await.unwrap().into_inner();
    let advice = denied
        .approval_required
        .unwrap_or_else(|| panic!("no approval advice: {:?}", denied.reasons));
    let filed = client
        .request_approval(ask_for(&advice, ""))
        .await
        .unwrap()
        .into_inner();
    // One pending per identity here.
    let refused = client
        .request_approval(ask_for(&advice, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);

    // A restart keeps it, pending.
    let data = server.terminate();
    let server = Server::restart_in(data);
    let mut client = server.client().await;
    let kept = client
        .get_approval_request(proto::GetApprovalRequestRequest {
            id: filed.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.state, "pending");

    // Undecided, it expires; a watcher hears that, and it can no longer be approved.
    let mut watch = client
        .watch_approval_request(proto::GetApprovalRequestRequest {
            id: filed.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = watch.next().await.unwrap().unwrap();
    while last.state == "pending" {
        last = tokio::time::timeout(std::time::Duration::from_secs(20), watch.next())
            .await
            .expect("the watcher hears the expiry")
            .unwrap()
            .unwrap();
    }
    assert_eq!(last.state, "expired");
    let refused = server
        .admin_client()
        .await
        .decide_approval_request(decide(&filed.id, "carol", true))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    // Expired, it no longer counts against the bound.
    let again = client
        .request_approval(ask_for(&advice, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.state, "pending");
}

#[tokio::test]
async fn a_budget_is_spent_exactly_under_concurrent_allows() {
    let server = Server::start(&[]);
    let expires = warrant_proto::convert::timestamp(warrant_domain::clock::UnixMillis(
        warrant_domain::clock::Clock::now(&warrant_domain::clock::SystemClock).0 + 3_600_000,
    ));
    let granted = server
        .admin_client()
        .await
        .grant_approval(proto::GrantApprovalRequest {
            approval: Some(proto::ApprovalSpec {
                id: "TASK-BUDGET".to_owned(),
                ticket: "TASK-BUDGET".to_owned(),
                approver: entity("Human", "dave"),
                requester: entity("Human", "bob"),
                subject: entity("Agent", "procurement-agent"),
                actions: vec!["submit_vendor_request".to_owned()],
                scope: entity("Scope", "procurement-tools"),
                expires_at: Some(expires),
                attributes: crate::common::context(
                    serde_json::json!({"budget_total": 5000, "budget_attribute": "amount"}),
                ),
                ..proto::ApprovalSpec::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.budget_spent, 0);

    // 200 Checks at once, asking for 10 to 70 each: 8,000 in all against a budget of 5,000.
    let client = server.client().await;
    let amount = |i: i64| (i % 7 + 1) * 10;
    let checks = (0..200).map(|i| {
        let mut client = client.clone();
        async move {
            let mut check = crate::common::request(
                "Agent::procurement-agent",
                "submit_vendor_request",
                "Tool::vendor-portal",
                "TASK-BUDGET",
            );
            check.context =
                crate::common::context(serde_json::json!({"vendor": "Acme", "amount": amount(i)}));
            (i, client.check(check).await.unwrap().into_inner())
        }
    });
    let answers = futures_util::future::join_all(checks).await;
    let mut allowed_sum = 0;
    for (i, answer) in &answers {
        if answer.decision == proto::Decision::Allow as i32 {
            allowed_sum += amount(*i);
            let evidence = answer
                .provenance
                .as_ref()
                .unwrap()
                .approval
                .clone()
                .unwrap();
            assert_eq!(evidence.budget_spent, amount(*i) as u64);
            assert!(!answer.provenance.as_ref().unwrap().answered_from_cache);
        } else {
            assert_eq!(answer.reasons, ["warrant:approval-budget-exhausted"]);
        }
    }
    assert!(
        allowed_sum <= 5000,
        "allowed {allowed_sum} of a 5,000 budget"
    );
    assert!(allowed_sum > 5000 - 70, "only {allowed_sum} allowed");
    let spent = server
        .admin_client()
        .await
        .get_approval(proto::GetApprovalRequest {
            id: "TASK-BUDGET".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spent.budget_spent, allowed_sum as u64);

    // Without the attribute it spends, an allow under a budget is refused.
    let mut no_amount = crate::common::request(
        "Agent::procurement-agent",
        "submit_vendor_request",
        "Tool::vendor-portal",
        "TASK-BUDGET",
    );
    no_amount.context = crate::common::context(serde_json::json!({"vendor": "Acme", "amount": -5}));
    let answer = client.clone().check(no_amount).await.unwrap().into_inner();
    assert_eq!(answer.reasons, ["warrant:approval-budget-amount-missing"]);
}

/// A webhook receiver on 127.0.0.1 (plain HTTP): answers the first POST with 503, the rest with
/// 204, and keeps every body it received.
fn webhook_receiver() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = received.clone();
    std::thread::spawn(move || {
        for (n, connection) in listener.incoming().enumerate() {
            let Ok(mut connection) = connection else {
                return;
            };
            let mut reader = BufReader::new(connection.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let status = if n == 0 {
                "503 Service Unavailable"
            } else {
                kept.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                "204 No Content"
            };
            let _ = connection.write_all(format!("HTTP/1.1 {status}\r\n\r\n").as_bytes());
        }
    });
    (address, received)
}

#[tokio::test]
async fn a_webhook_hears_of_each_request_and_its_decision_even_after_a_failure() {
    let (address, received) = webhook_receiver();
    let url = format!("http://{address}/warrant");
    // Loopback and link-local targets (a cloud's metadata service) are refused unless allowed.
    let files = tempfile::tempdir().unwrap();
    let ca = crate::tls::write(
        files.path(),
        "ca.pem",
        &crate::tls::Authority::new("webhook CA").pem,
    );
    for refused in [
        url.as_str(),
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/x",
    ] {
        let stderr = Server::start_with(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--approval-request-webhook",
            refused,
            "--approval-request-webhook-ca",
            ca.to_str().unwrap(),
        ])
        .err()
        .unwrap_or_else(|| panic!("{refused} was accepted"));
        assert!(
            stderr.contains("approval_request_webhook")
                && stderr.contains("approval_request_webhook_allow_local"),
            "{stderr}"
        );
    }
    let server = Server::start(&[
        "--approval-request-webhook",
        &url,
        "--approval-request-webhook-allow-local",
        "true",
    ]);
    let mut client = server.client().await;
    let denied = client.check(deploy("")).await.unwrap().into_inner();
    let advice = denied.approval_required.unwrap();
    let filed = client
        .request_approval(ask_for(&advice, &denied.decision_id))
        .await
        .unwrap()
        .into_inner();
    server
        .admin_client()
        .await
        .decide_approval_request(decide(&filed.id, "carol", false))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while received.lock().unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the webhook heard {:?}",
            received.lock().unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let heard = received.lock().unwrap().clone();
    assert_eq!(heard[0]["event"], "approval_requested");
    assert_eq!(heard[0]["request"]["id"], filed.id.as_str());
    assert_eq!(
        heard[0]["request"]["decision_id"],
        denied.decision_id.as_str()
    );
    assert_eq!(heard[1]["event"], "approval_request_decided");
    assert_eq!(heard[1]["request"]["state"], "rejected");
    let scrape = crate::common::scrape(&server).await;
    assert_eq!(
        crate::common::value(
            &scrape,
            "warrant_webhook_notifications_total",
            &[("result", "delivered")]
        ),
        2.0
    );
}

/// deploy-bot's change to the payments config, as an AuthZEN evaluation.
fn deploy_evaluation() -> serde_json::Value {
    serde_json::json!({
        "subject": {"type": "ServiceAccount", "id": "deploy-bot"},
        "action": {"name": "update"},
        "resource": {"type": "Config", "id": "payments-api"},
    })
}

/// A POST to the AuthZEN listener with extra headers.
async fn post(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> crate::authzen::Answer {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    crate::authzen::call(server, false, "POST", path, &all, &body.to_string()).await
}

async fn get(server: &Server, path: &str) -> crate::authzen::Answer {
    crate::authzen::call(server, false, "GET", path, &[], "").await
}

/// The task path of a status endpoint URL.
fn task_path(status_endpoint: &str) -> String {
    let start = status_endpoint.find("/access/").unwrap();
    status_endpoint[start..].to_owned()
}

#[tokio::test]
async fn an_authzen_pep_requests_access_by_the_profile_and_evaluates_again() {
    let server = Server::start(&[]);
    let metadata = get(&server, "/.well-known/authzen-configuration")
        .await
        .json();
    assert!(
        metadata["access_request_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/access/v1/requests"),
        "{metadata}"
    );
    assert_eq!(
        metadata["capabilities"],
        serde_json::json!(["urn:openid:authzen:capability:access-request"])
    );

    // A requestable denial: bound by its evaluation id, with a deadline.
    let evaluation = deploy_evaluation();
    let denied = post(&server, "/access/v1/evaluation", &[], &evaluation)
        .await
        .json();
    assert_eq!(denied["decision"], false);
    let context = &denied["context"];
    assert_eq!(context["evaluation_id"], context["decision_id"]);
    assert_eq!(context["reason"], "approval_required");
    let expires_at = context["access_request"]["expires_at"].as_str().unwrap();
    assert!(expires_at > context["evaluated_at"].as_str().unwrap());
    // No requestable denial where no approval would help.
    let outside = post(
        &server,
        "/access/v1/evaluation",
        &[],
        &serde_json::json!({
            "subject": {"type": "ApiKey", "id": "etl-pipeline-key"},
            "action": {"name": "read"},
            "resource": {"type": "Dataset", "id": "salaries"},
        }),
    )
    .await
    .json();
    assert_eq!(outside["decision"], false);
    assert!(
        outside["context"].get("access_request").is_none(),
        "{outside}"
    );

    let until = warrant_domain::clock::UnixMillis(
        warrant_domain::clock::Clock::now(&warrant_domain::clock::SystemClock).0 + 1_800_000,
    )
    .to_rfc3339();
    let submission = |justification: &str| {
        let mut body = evaluation.clone();
        body["context"] = serde_json::json!({
            "justification": justification,
            "ticket": "CHG-4242",
            "on_behalf_of": {"type": "Human", "id": "bob"},
        });
        body["requested_access"] = serde_json::json!({"requested_until": until});
        body["denial"] = serde_json::json!({
            "evaluation_id": context["evaluation_id"],
            "expires_at": expires_at,
            "reason": "approval_required",
        });
        body
    };
    // Refusals, in the profile's problem types.
    let problem = |answer: &crate::authzen::Answer| {
        assert_eq!(
            answer.content_type, "application/problem+json",
            "{}",
            answer.body
        );
        let body = answer.json();
        assert_eq!(body["status"], answer.status, "{body}");
        (
            body["type"].as_str().unwrap().to_owned(),
            body["detail"].as_str().unwrap().to_owned(),
        )
    };
    let mut swapped = submission("roll out the fix");
    swapped["resource"]["id"] = serde_json::json!("checkout-api");
    let refused = post(&server, "/access/v1/requests", &[], &swapped).await;
    assert_eq!(refused.status, 400);
    let (kind, detail) = problem(&refused);
    assert_eq!(
        kind,
        "urn:openid:authzen:access-request:error:invalid_denial_binding"
    );
    assert!(detail.starts_with("resource:"), "{detail}");
    let mut unknown = submission("roll out the fix");
    unknown["denial"]["evaluation_id"] = serde_json::json!("01a2-not-an-evaluation");
    let (kind, _) = problem(&post(&server, "/access/v1/requests", &[], &unknown).await);
    assert_eq!(
        kind,
        "urn:openid:authzen:access-request:error:invalid_denial_binding"
    );
    let mut not_a_denial = submission("roll out the fix");
    not_a_denial["denial"]["evaluation_id"] = outside["context"]["decision_id"].clone();
    not_a_denial["subject"] = serde_json::json!({"type": "ApiKey", "id": "etl-pipeline-key"});
    let (kind, _) = problem(&post(&server, "/access/v1/requests", &[], &not_a_denial).await);
    assert_eq!(
        kind,
        "urn:openid:authzen:access-request:error:not_requestable"
    );
    let unjustified = post(&server, "/access/v1/requests", &[], &submission("")).await;
    assert_eq!(unjustified.status, 400);
    let (kind, detail) = problem(&unjustified);
    assert_eq!(kind, "about:blank");
    assert!(detail.starts_with("context.justification:"), "{detail}");

    // Filed: a task, idempotent under its key, refused when the key is reused for another ask.
    let key = [("idempotency-key", "7b8d0f0d-65a1-4af1-9fd3-a684f08a5d13")];
    let filed = post(
        &server,
        "/access/v1/requests",
        &key,
        &submission("roll out the fix"),
    )
    .await;
    assert_eq!(filed.status, 202, "{}", filed.body);
    let task = filed.json()["task"].clone();
    assert_eq!(task["status"], "pending");
    assert_eq!(filed.location.as_deref(), task["status_endpoint"].as_str());
    let again = post(
        &server,
        "/access/v1/requests",
        &key,
        &submission("roll out the fix"),
    )
    .await;
    assert_eq!(again.json()["task"]["id"], task["id"]);
    let other = post(
        &server,
        "/access/v1/requests",
        &key,
        &submission("something else"),
    )
    .await;
    assert_eq!(other.status, 409);
    assert_eq!(
        problem(&other).0,
        "urn:openid:authzen:access-request:error:duplicate_request"
    );
    let path = task_path(task["status_endpoint"].as_str().unwrap());
    assert_eq!(
        get(&server, &path).await.json()["task"]["status"],
        "pending"
    );
    let missing = get(&server, "/access/v1/requests/req-nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        problem(&missing).0,
        "urn:openid:authzen:access-request:error:unknown_task"
    );

    // It is the same request a human decides on the admin API: bob asked, carol approves.
    let mut admin = server.admin_client().await;
    let id = task["id"].as_str().unwrap();
    let pending = server
        .client()
        .await
        .get_approval_request(proto::GetApprovalRequestRequest { id: id.to_owned() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.on_behalf_of, entity("Human", "bob"));
    assert_eq!(
        pending.decision_id,
        context["decision_id"].as_str().unwrap()
    );
    admin
        .decide_approval_request(decide(id, "carol", true))
        .await
        .unwrap();
    let done = get(&server, &path).await.json();
    assert_eq!(done["task"]["status"], "approved", "{done}");
    assert_eq!(done["result"]["mode"], "reevaluate");
    let approval = done["result"]["approval"].clone();
    assert!(approval["approved_until"].as_str().is_some(), "{done}");

    // Evaluated again with the approval result at context.approval: allowed, once.
    let mut again = evaluation.clone();
    again["context"] = serde_json::json!({"approval": approval});
    let allowed = post(&server, "/access/v1/evaluation", &[], &again)
        .await
        .json();
    assert_eq!(allowed["decision"], true, "{allowed}");
    assert_eq!(allowed["context"]["approval"]["id"], approval["id"]);
    assert_eq!(
        allowed["context"]["approval"]["approved_until"],
        approval["approved_until"]
    );
    let spent = post(&server, "/access/v1/evaluation", &[], &again)
        .await
        .json();
    assert_eq!(spent["decision"], false);
    assert_eq!(spent["context"]["reason"], "approval_expired", "{spent}");
    assert_eq!(spent["context"]["next_action"], "request");
    assert!(spent["context"]["access_request"]["expires_at"].is_string());
    // An approval id that is not one Warrant granted is unverifiable.
    again["context"]["approval"]["id"] = serde_json::json!("apr-forged");
    let forged = post(&server, "/access/v1/evaluation", &[], &again)
        .await
        .json();
    assert_eq!(
        forged["context"]["reason"], "approval_unverifiable",
        "{forged}"
    );

    let scrape = crate::common::scrape(&server).await;
    let calls = |endpoint: &str, status: &str| {
        crate::common::value(
            &scrape,
            "warrant_access_request_calls_total",
            &[("endpoint", endpoint), ("status", status)],
        )
    };
    assert_eq!(calls("submit", "202"), 2.0);
    assert_eq!(calls("submit", "409"), 1.0);
    assert_eq!(calls("status", "404"), 1.0);
}

#[tokio::test]
async fn a_stale_denial_is_not_requestable() {
    let server = Server::start(&["--authzen-access-request-window-seconds", "1"]);
    let evaluation = deploy_evaluation();
    let denied = post(&server, "/access/v1/evaluation", &[], &evaluation)
        .await
        .json();
    let mut submission = evaluation.clone();
    submission["context"] = serde_json::json!({"justification": "roll out the fix"});
    submission["denial"] = serde_json::json!({
        "evaluation_id": denied["context"]["evaluation_id"],
        "expires_at": denied["context"]["access_request"]["expires_at"],
    });
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let late = post(&server, "/access/v1/requests", &[], &submission).await;
    assert_eq!(late.status, 410, "{}", late.body);
    assert_eq!(
        late.json()["type"],
        "urn:openid:authzen:access-request:error:expired_denial"
    );
}

#[tokio::test]
async fn an_approver_proves_who_they_are_with_their_own_credential() {
    use crate::credentials::Key;
    let key = Key::new("sso-1", jsonwebtoken::Algorithm::ES256);
    let files = tempfile::tempdir().unwrap();
    let jwks = crate::tls::write(
        files.path(),
        "jwks.json",
        &serde_json::json!({"keys": [key.jwk()]}).to_string(),
    );
    let config = crate::tls::write(
        files.path(),
        "warrant.toml",
        &format!(
            "require_authenticated_approver = true\n\
             [[credentials.issuers]]\nissuer = \"https://sso.test\"\njwks_file = \"{jwks}\"\nprincipal = \"Human::{{sub}}\"\n\
             [[credentials.issuers]]\nissuer = \"https://machines.test\"\njwks_file = \"{jwks}\"\nprincipal = \"ApiKey::{{sub}}\"\n",
            jwks = jwks.display()
        ),
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let mut admin = server.admin_client().await;
    let now = warrant_domain::clock::Clock::now(&warrant_domain::clock::SystemClock).0 / 1000;
    let token = |issuer: &str, sub: &str| {
        key.sign(&serde_json::json!({"iss": issuer, "sub": sub, "exp": now + 600}))
    };
    let grant = |approver: Option<&str>, credential: String| proto::GrantApprovalRequest {
        approval: Some(proto::ApprovalSpec {
            ticket: "CHG-4242".to_owned(),
            approver: approver.and_then(|a| entity("Human", a)),
            requester: entity("Human", "bob"),
            subject: entity("ServiceAccount", "deploy-bot"),
            actions: vec!["update".to_owned()],
            scope: entity("Scope", "prod-payments-config"),
            expires_at: Some(prost_types::Timestamp {
                seconds: now + 3600,
                nanos: 0,
            }),
            ..Default::default()
        }),
        approver_credential: credential,
    };

    // Named only: the admin caller's word is not enough here.
    let refused = admin
        .grant_approval(grant(Some("carol"), String::new()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("require_authenticated_approver"),
        "{}",
        refused.message()
    );
    // A credential that is someone else's, a machine's, or does not verify.
    let refused = admin
        .grant_approval(grant(Some("carol"), token("https://sso.test", "dave")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused
            .message()
            .starts_with("approval.approver: Human::\"carol\" is named"),
        "{}",
        refused.message()
    );
    let refused = admin
        .grant_approval(grant(None, token("https://machines.test", "pipeline-etl")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused
            .message()
            .starts_with("approver_credential: names ApiKey"),
        "{}",
        refused.message()
    );
    let forged = Key::new("sso-1", jsonwebtoken::Algorithm::ES256)
        .sign(&serde_json::json!({"iss": "https://sso.test", "sub": "dave", "exp": now + 600}));
    let refused = admin.grant_approval(grant(None, forged)).await.unwrap_err();
    assert_eq!(refused.message(), "warrant:credential-bad-signature");

    // Proven: the credential's Human approves, and the record says how Warrant knows.
    let granted = admin
        .grant_approval(grant(None, token("https://sso.test", "dave")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.approval.unwrap().approver, entity("Human", "dave"));
    assert!(granted.approver_credential_sha256.starts_with("sha256:"));

    // A request decided by a proven approver, on the request, the approval and the ledger.
    let mut client = server.client().await;
    let denied = client.check(deploy("")).await.unwrap().into_inner();
    let advice = denied.approval_required.clone().unwrap();
    let filed = client
        .request_approval(ask_for(&advice, &denied.decision_id))
        .await
        .unwrap()
        .into_inner();
    let decided = admin
        .decide_approval_request(proto::DecideApprovalRequestRequest {
            approver: None,
            approver_credential: token("https://sso.test", "carol"),
            ..decide(&filed.id, "carol", true)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decided.decided_by, entity("Human", "carol"));
    assert!(decided.decided_by_credential_sha256.starts_with("sha256:"));
    let approval = admin
        .get_approval(proto::GetApprovalRequest {
            id: decided.approval_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        approval.approver_credential_sha256,
        decided.decided_by_credential_sha256
    );
    let (ok, out, err) = crate::admin::shell(&server, &["log", "show", &filed.id]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&decided.decided_by_credential_sha256),
        "the ledger's step does not name the credential: {out}"
    );

    // An import's approvals are the file's word: refused here, unless the import is unchecked.
    let mut imported = serde_json::json!({
        "uid": {"type": "Approval", "id": "from-a-file"},
        "attrs": {
            "ticket": "CHG-4244", "approver": {"type": "Human", "id": "dave"},
            "actions": [{"type": "Action", "id": "update"}],
            "scope": {"type": "Scope", "id": "prod-payments-config"},
            "not_before": {"__extn": {"fn": "datetime", "arg": "2026-01-01T00:00:00Z"}},
            "expires_at": {"__extn": {"fn": "datetime", "arg": "2026-01-02T00:00:00Z"}},
            "revoked": false,
        },
        "parents": [{"type": "ServiceAccount", "id": "deploy-bot"}],
    });
    let file = crate::tls::write(files.path(), "approval.json", &format!("[{imported}]"));
    let (ok, _, err) = crate::admin::shell(
        &server,
        &[
            "facts",
            "import",
            file.to_str().unwrap(),
            "--requester",
            "Human::bob",
        ],
    );
    assert!(
        !ok && err.contains("require_authenticated_approver"),
        "{err}"
    );
    imported["uid"]["id"] = "unchecked-from-a-file".into();
    let file = crate::tls::write(files.path(), "approval.json", &format!("[{imported}]"));
    let (ok, _, err) = crate::admin::shell(
        &server,
        &["facts", "import", file.to_str().unwrap(), "--unchecked"],
    );
    assert!(ok, "{err}");

    // The shell reads the credential from a file, never from its command line.
    let credential = crate::tls::write(files.path(), "me.jwt", &token("https://sso.test", "erin"));
    let (ok, out, err) = crate::admin::shell(
        &server,
        &[
            "approval",
            "grant",
            "--ticket",
            "CHG-4243",
            "--requester",
            "Human::bob",
            "--subject",
            "ServiceAccount::deploy-bot",
            "--action",
            "update",
            "--scope",
            "Scope::prod-payments-config",
            "--for",
            "1h",
            "--approver-credential-file",
            credential.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let printed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        printed["approver"],
        serde_json::json!({"type": "Human", "id": "erin"})
    );
    assert!(
        printed["approver_credential_sha256"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}
