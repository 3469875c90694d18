//! The bundled scenarios, every denial reason, BatchCheck and bad input, against the real server
//! over gRPC.

use crate::common::{Server, context, deploy, entity, pipeline_read, request};
use tonic::Code;
use warrant_proto as proto;
use warrant_proto::Decision;

fn millis(at: &Option<prost_types::Timestamp>) -> i64 {
    let at = at.as_ref().expect("timestamp");
    at.seconds * 1000 + i64::from(at.nanos) / 1_000_000
}

async fn check(server: &Server, request: proto::CheckRequest) -> proto::CheckResponse {
    server
        .client()
        .await
        .check(request)
        .await
        .expect("check")
        .into_inner()
}

#[tokio::test]
async fn scenario_allows_carry_their_evidence() {
    let server = Server::start(&[]);

    // 1. Deployment agent updates a production config under a valid ticketed approval.
    let mut deploy = deploy("CHG-1042");
    deploy.request_id = "req-1".into();
    let answer = check(&server, deploy).await;
    assert_eq!(answer.decision(), Decision::Allow, "{answer:?}");
    assert_eq!(
        answer.reasons,
        ["deploy-agent-updates-config-under-approval"]
    );
    assert!(answer.errors.is_empty());
    assert_eq!(answer.request_id, "req-1");
    assert!(answer.policy_version.starts_with("sha256:"));
    assert_eq!(
        uuid::Uuid::parse_str(&answer.decision_id)
            .unwrap()
            .get_version_num(),
        7
    );
    let provenance = answer.provenance.as_ref().unwrap();
    let owner = provenance.owner.as_ref().unwrap();
    assert_eq!(
        (
            owner.entity.as_ref().unwrap().id.as_str(),
            owner.name.as_str()
        ),
        ("alice", "Alice Martin")
    );
    assert_eq!(provenance.principal_status, "active");
    let approval = provenance.approval.as_ref().unwrap();
    assert_eq!(approval.ticket, "CHG-1042");
    assert_eq!(approval.approver, entity("Human", "bob"));
    assert_eq!(approval.subject, entity("ServiceAccount", "deploy-bot"));
    assert_eq!(approval.scope, entity("Scope", "prod-payments-config"));
    assert!(approval.valid_at_decision && !approval.replay_suspected);
    let scopes: Vec<_> = provenance
        .resource_scopes
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(scopes, ["prod-payments-config", "production"]);
    let decided = millis(&provenance.decided_at);
    let until = millis(&answer.valid_until);
    assert!(until > decided && until <= decided + 60_000);
    assert!(until <= millis(&approval.expires_at));

    // 2. A pipeline's API key reads a dataset in its scope.
    let answer = check(&server, pipeline_read("Dataset::sales-2026")).await;
    assert_eq!(answer.decision(), Decision::Allow, "{answer:?}");
    assert_eq!(answer.reasons, ["pipeline-etl-reads-sales"]);
    assert_eq!(
        answer.provenance.unwrap().owner.unwrap().name,
        "Dave Schmidt"
    );

    // 3. An AI agent submits a vendor request within its task approval; its supervisor is named.
    let mut vendor = request(
        "Agent::procurement-agent",
        "submit_vendor_request",
        "Tool::vendor-portal",
        "TASK-77",
    );
    vendor.context = context(serde_json::json!({"vendor": "Acme", "amount": 1200}));
    let answer = check(&server, vendor).await;
    assert_eq!(answer.decision(), Decision::Allow, "{answer:?}");
    assert_eq!(answer.reasons, ["agent-submits-vendor-request-within-task"]);
    assert_eq!(
        answer.provenance.unwrap().owner.unwrap().entity,
        entity("Human", "carol")
    );

    // 4. A privileged account exports a database under an incident-playbook approval.
    let answer = check(
        &server,
        request(
            "ServiceAccount::db-admin",
            "export",
            "Database::customers-prod",
            "INC-311",
        ),
    )
    .await;
    assert_eq!(answer.decision(), Decision::Allow, "{answer:?}");
    let approval = answer.provenance.unwrap().approval.unwrap();
    assert_eq!(
        approval.playbook,
        "IR-PB-07 customer data breach containment"
    );
    assert_eq!(approval.approver, entity("Human", "erin"));

    // Staging needs no ticket.
    let answer = check(
        &server,
        request(
            "ServiceAccount::deploy-bot",
            "update",
            "Config::payments-api-staging",
            "",
        ),
    )
    .await;
    assert_eq!(answer.decision(), Decision::Allow, "{answer:?}");
}

#[tokio::test]
async fn every_denial_has_its_own_reason() {
    let server = Server::start(&[]);
    let vendor = |approval: &str, tool: &str, amount: i64| {
        let mut r = request(
            "Agent::procurement-agent",
            "submit_vendor_request",
            tool,
            approval,
        );
        r.context = context(serde_json::json!({"vendor": "Acme", "amount": amount}));
        r
    };
    let cases: Vec<(&str, proto::CheckRequest, Vec<&str>)> = vec![
        (
            "no owner",
            request(
                "ServiceAccount::legacy-cron",
                "update",
                "Config::payments-api-staging",
                "",
            ),
            vec!["identity-has-no-owner"],
        ),
        (
            "suspended",
            request(
                "ServiceAccount::old-deployer",
                "update",
                "Config::payments-api-staging",
                "",
            ),
            vec!["identity-not-active"],
        ),
        (
            "expired approval",
            deploy("CHG-0990"),
            vec!["approval-expired"],
        ),
        (
            "approval not yet valid",
            deploy("CHG-2001"),
            vec!["approval-not-yet-valid"],
        ),
        (
            "revoked approval",
            deploy("CHG-1001"),
            vec!["approval-revoked"],
        ),
        (
            "replayed approval",
            request(
                "ServiceAccount::db-admin",
                "update",
                "Config::payments-api",
                "CHG-1042",
            ),
            vec!["warrant:approval-granted-to-another-identity"],
        ),
        (
            "outside approval scope",
            request(
                "ServiceAccount::deploy-bot",
                "update",
                "Config::search-api",
                "CHG-1042",
            ),
            vec!["resource-outside-approval-scope"],
        ),
        (
            "action not covered",
            deploy("CHG-1043"),
            vec!["approval-does-not-cover-action"],
        ),
        (
            "production without approval",
            deploy(""),
            vec!["production-change-needs-approval"],
        ),
        (
            "dataset outside key scope",
            pipeline_read("Dataset::salaries"),
            vec!["dataset-outside-identity-scopes"],
        ),
        (
            "expired credential",
            request(
                "ApiKey::pipeline-expired",
                "read",
                "Dataset::sales-2026",
                "",
            ),
            vec!["credential-expired"],
        ),
        (
            "over the task's amount",
            vendor("TASK-77", "Tool::vendor-portal", 9000),
            vec!["vendor-request-over-approved-amount"],
        ),
        (
            "vendor request without task approval",
            vendor("", "Tool::vendor-portal", 100),
            vec!["vendor-request-needs-task-approval"],
        ),
        (
            "tool outside the task",
            vendor("TASK-77", "Tool::payments-transfer", 100),
            vec![
                "resource-outside-approval-scope",
                "tool-outside-agent-scopes",
            ],
        ),
        (
            "export without playbook",
            request(
                "ServiceAccount::db-admin",
                "export",
                "Database::customers-prod",
                "CHG-1500",
            ),
            vec!["export-needs-incident-playbook-approval"],
        ),
        (
            "export by unprivileged account",
            request(
                "ServiceAccount::reporting",
                "export",
                "Database::customers-prod",
                "",
            ),
            vec![
                "export-needs-incident-playbook-approval",
                "export-needs-privileged-identity",
            ],
        ),
        (
            "unknown principal",
            request(
                "ServiceAccount::ghost",
                "update",
                "Config::payments-api",
                "",
            ),
            vec!["warrant:unknown-principal"],
        ),
        (
            "unknown resource",
            request("ServiceAccount::deploy-bot", "update", "Config::nope", ""),
            vec!["warrant:unknown-resource"],
        ),
        (
            "unknown approval",
            deploy("CHG-404"),
            vec!["warrant:unknown-approval"],
        ),
        (
            "action not applicable",
            request("ApiKey::pipeline-etl", "update", "Config::payments-api", ""),
            vec!["warrant:action-not-applicable"],
        ),
        (
            "no permit",
            request(
                "Agent::procurement-agent",
                "update",
                "Config::payments-api-staging",
                "",
            ),
            vec!["warrant:no-permitting-policy"],
        ),
    ];
    for (name, request, reasons) in cases {
        let answer = check(&server, request).await;
        assert_eq!(answer.decision(), Decision::Deny, "{name}: {answer:?}");
        assert_eq!(answer.reasons, reasons, "{name}");
        assert!(answer.errors.is_empty(), "{name}: {:?}", answer.errors);
        assert!(!answer.decision_id.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn a_replayed_approval_names_both_identities() {
    let server = Server::start(&[]);
    let answer = check(
        &server,
        request(
            "ServiceAccount::db-admin",
            "update",
            "Config::payments-api",
            "CHG-1042",
        ),
    )
    .await;
    let provenance = answer.provenance.unwrap();
    assert_eq!(provenance.principal, entity("ServiceAccount", "db-admin"));
    let approval = provenance.approval.unwrap();
    assert_eq!(approval.subject, entity("ServiceAccount", "deploy-bot"));
    assert!(approval.replay_suspected);
    assert!(!approval.valid_at_decision);
}

#[tokio::test]
async fn decision_ids_are_unique() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        let answer = client
            .check(pipeline_read("Dataset::sales-2026"))
            .await
            .unwrap()
            .into_inner();
        assert!(seen.insert(answer.decision_id));
    }
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let valid = || pipeline_read("Dataset::sales-2026");
    let with_context = |json| {
        let mut r = valid();
        r.context = context(json);
        r
    };
    let cases: Vec<(proto::CheckRequest, &str)> = vec![
        (
            proto::CheckRequest {
                principal: None,
                ..valid()
            },
            "principal: required",
        ),
        (
            proto::CheckRequest {
                resource: None,
                ..valid()
            },
            "resource: required",
        ),
        (
            proto::CheckRequest {
                action: String::new(),
                ..valid()
            },
            "action: required",
        ),
        (
            proto::CheckRequest {
                principal: entity("", "x"),
                ..valid()
            },
            "principal.type: required",
        ),
        (
            proto::CheckRequest {
                principal: entity("ApiKey", ""),
                ..valid()
            },
            "principal.id: required",
        ),
        (
            proto::CheckRequest {
                resource: entity("Dataset", ""),
                ..valid()
            },
            "resource.id: required",
        ),
        (
            proto::CheckRequest {
                principal: entity("Robot", "r2"),
                ..valid()
            },
            "principal.type:",
        ),
        (
            proto::CheckRequest {
                resource: entity("Approval", "CHG-1042"),
                ..valid()
            },
            "resource.type:",
        ),
        (
            proto::CheckRequest {
                action: "delete".into(),
                ..valid()
            },
            "action:",
        ),
        (
            with_context(serde_json::json!({"now": "2020-01-01"})),
            "context.now:",
        ),
        (
            with_context(serde_json::json!({"approval": "CHG-1042"})),
            "context.approval:",
        ),
        (
            with_context(serde_json::json!({"justification": 7})),
            "context.justification: expected a String, got a Long",
        ),
        (
            with_context(serde_json::json!({"surprise": true})),
            "context.surprise: the schema does not declare it",
        ),
        (
            with_context(serde_json::json!({"justification": 1.5})),
            "context.justification:",
        ),
        (
            with_context(serde_json::json!({"justification": null})),
            "context.justification:",
        ),
        (
            with_context(serde_json::json!({"nested": {"list": [1, 2.5]}})),
            "context.nested.list[1]:",
        ),
    ];
    for (request, field) in cases {
        let status = client.check(request.clone()).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "expected {field:?}, got {:?}",
            status.message()
        );
    }
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let server = Server::start(&["--max-message-bytes", "2048"]);
    let mut client = server.client().await;
    let mut big = pipeline_read("Dataset::sales-2026");
    big.context = context(serde_json::json!({"justification": "x".repeat(4096)}));
    let status = client.check(big).await.expect_err("too big");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    // The server is still there for the next caller.
    let answer = client
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap();
    assert_eq!(answer.into_inner().decision(), Decision::Allow);
}

#[tokio::test]
async fn batch_check_answers_in_order_and_isolates_bad_items() {
    let server = Server::start(&["--batch-max-items", "3"]);
    let mut client = server.client().await;
    let batch = proto::BatchCheckRequest {
        checks: vec![
            pipeline_read("Dataset::sales-2026"),
            pipeline_read("Dataset::salaries"),
            proto::CheckRequest {
                action: "delete".into(),
                ..pipeline_read("Dataset::sales-2026")
            },
        ],
    };
    let results = client
        .batch_check(batch)
        .await
        .unwrap()
        .into_inner()
        .results;
    use proto::batch_check_result::Result as Item;
    assert_eq!(results.len(), 3);
    match &results[0].result {
        Some(Item::Response(r)) => assert_eq!(r.decision(), Decision::Allow),
        other => panic!("item 0: {other:?}"),
    }
    match &results[1].result {
        Some(Item::Response(r)) => assert_eq!(r.reasons, ["dataset-outside-identity-scopes"]),
        other => panic!("item 1: {other:?}"),
    }
    match &results[2].result {
        Some(Item::Error(e)) => {
            assert_eq!(e.code, Code::InvalidArgument as i32);
            assert!(e.message.starts_with("checks[2].action:"), "{}", e.message);
        }
        other => panic!("item 2: {other:?}"),
    }

    let too_many = proto::BatchCheckRequest {
        checks: vec![pipeline_read("Dataset::sales-2026"); 4],
    };
    let status = client
        .batch_check(too_many)
        .await
        .expect_err("over the maximum");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("4 items") && status.message().contains("3"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn reflection_lists_exactly_what_the_check_port_serves_in_v1_and_v1alpha() {
    let server = Server::start(&[]);
    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let expected = [
        "envoy.service.auth.v3.Authorization",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "warrant.v1.Authorizer",
    ];
    let v1 = {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(channel.clone());
        let ask = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([ask]))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("unexpected {answer:?}");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        names
    };
    let v1alpha = {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(channel);
        let ask = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([ask]))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("unexpected {answer:?}");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        names
    };
    assert_eq!(v1, expected);
    assert_eq!(v1alpha, expected);
}

#[test]
fn an_invalid_policy_stops_the_server_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = crate::common::bundled_policies();
    for file in ["schema.cedarschema", "entities.json", "identity.cedar"] {
        std::fs::copy(bundled.join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(
        dir.path().join("broken.cedar"),
        "@id(\"typo\")\npermit(principal, action, resource)\nwhen { principal.stauts == \"active\" };\n",
    )
    .unwrap();
    let stderr = crate::common::Server::start_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        dir.path().to_str().unwrap(),
    ])
    .err()
    .expect("the server must refuse to start");
    assert!(stderr.contains("broken.cedar:3:"), "{stderr}");
    assert!(stderr.contains("typo"), "{stderr}");
}

#[test]
fn the_check_command_prints_json_and_exits_by_decision() {
    let server = Server::start(&[]);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_warrant"))
            .arg("check")
            .args(["--server", &server.url()])
            .args(args)
            .output()
            .unwrap()
    };
    let allowed = run(&[
        "--principal",
        "ServiceAccount::deploy-bot",
        "--action",
        "update",
        "--resource",
        "Config::payments-api",
        "--approval",
        "CHG-1042",
    ]);
    assert!(allowed.status.success(), "{allowed:?}");
    let json: serde_json::Value = serde_json::from_slice(&allowed.stdout).unwrap();
    assert_eq!(json["decision"], "DECISION_ALLOW");
    assert_eq!(json["provenance"]["owner"]["name"], "Alice Martin");
    let denied = run(&[
        "--principal",
        "ApiKey::pipeline-etl",
        "--action",
        "read",
        "--resource",
        "Dataset::salaries",
    ]);
    assert_eq!(denied.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&denied.stdout).unwrap();
    assert_eq!(json["reasons"][0], "dataset-outside-identity-scopes");
}

#[tokio::test]
async fn settings_come_from_the_config_file_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warrant.toml");
    let policies = crate::common::bundled_policies();
    std::fs::write(
        &config,
        format!(
            "policies = {:?}\nbatch_max_items = 2\nlisten = \"127.0.0.1:0\"\n",
            policies.to_str().unwrap()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let batch = |n| proto::BatchCheckRequest {
        checks: vec![pipeline_read("Dataset::sales-2026"); n],
    };

    let from_file = Server::start_with(&["serve", "--config", config]).unwrap();
    let mut client = from_file.client().await;
    assert_eq!(
        client
            .batch_check(batch(2))
            .await
            .unwrap()
            .into_inner()
            .results
            .len(),
        2
    );
    assert_eq!(
        client.batch_check(batch(3)).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let overridden =
        Server::start_with(&["serve", "--config", config, "--batch-max-items", "3"]).unwrap();
    let mut client = overridden.client().await;
    assert_eq!(
        client
            .batch_check(batch(3))
            .await
            .unwrap()
            .into_inner()
            .results
            .len(),
        3
    );

    std::fs::write(dir.path().join("bad.toml"), "batch_max = 2\n").unwrap();
    let bad = dir.path().join("bad.toml");
    let stderr = Server::start_with(&["serve", "--config", bad.to_str().unwrap()])
        .err()
        .unwrap();
    assert!(stderr.contains("batch_max"), "{stderr}");
}

#[tokio::test]
async fn a_repeated_check_is_answered_from_the_cache_unless_it_is_off() {
    let ask = || deploy("CHG-1042");
    let server = Server::start(&[]);
    let first = check(&server, ask()).await;
    let second = check(&server, ask()).await;
    let (p1, p2) = (first.provenance.unwrap(), second.provenance.unwrap());
    assert!(!p1.answered_from_cache);
    assert_eq!(p1.evaluation_id, first.decision_id);
    assert!(p2.answered_from_cache);
    assert_eq!(p2.evaluation_id, first.decision_id);
    assert_ne!(second.decision_id, first.decision_id);
    assert_eq!(second.valid_until, first.valid_until);
    assert_eq!(second.reasons, first.reasons);

    let uncached = Server::start(&["--no-cache"]);
    check(&uncached, ask()).await;
    let again = check(&uncached, ask()).await;
    assert!(!again.provenance.unwrap().answered_from_cache);
}

/// Resources the caller describes, over gRPC: a todo Warrant has never been told about is
/// decided on the attributes the request carries (undeclared ones ignored); attributes that do
/// not fit the schema are refused naming the field; a type not marked `@described_by_caller`
/// stays unknown; a resource the facts hold is decided on the stored facts, the description
/// ignored and marked so in the provenance and the record.
#[tokio::test]
async fn resources_described_by_the_caller() {
    const MORTY: &str = "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
    let todo_policies = crate::common::bundled_policies().join("examples/authzen-todo");
    let todo = Server::start_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        todo_policies.to_str().unwrap(),
    ])
    .unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"));
    let update = |owner: serde_json::Value| proto::CheckRequest {
        resource_attributes: context(serde_json::json!({"ownerID": owner, "color": "red"})),
        ..request(
            &format!("user::{MORTY}"),
            "can_update_todo",
            "todo::t-1",
            "",
        )
    };
    // Morty is an editor: his own todo, yes; Rick's, no.
    let own = check(&todo, update(serde_json::json!("morty@the-citadel.com"))).await;
    assert_eq!(own.decision(), Decision::Allow, "{:?}", own.reasons);
    let provenance = own.provenance.clone().unwrap();
    assert_eq!(provenance.resource_facts, "described_by_caller");
    assert!(!provenance.resource_description_ignored);
    let record = todo.record(&own.decision_id).await;
    assert_eq!(record["resource_facts"], "described_by_caller");
    assert_eq!(
        record["resource_description"]["attributes"]["ownerID"],
        "morty@the-citadel.com"
    );
    let other = check(&todo, update(serde_json::json!("rick@the-citadel.com"))).await;
    assert_eq!(other.decision(), Decision::Deny);
    assert_eq!(other.reasons, ["warrant:no-permitting-policy"]);
    // An attribute of the wrong type is refused, naming it.
    let mut client = todo.client().await;
    let status = client
        .check(update(serde_json::json!(7)))
        .await
        .expect_err("a number is not a String");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("resource_attributes:"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("ownerID"), "{}", status.message());
    // A principal is never described: an unknown user is unknown whatever the request says.
    let stranger = proto::CheckRequest {
        resource_attributes: context(serde_json::json!({"ownerID": "x"})),
        ..request("user::stranger", "can_update_todo", "todo::t-1", "")
    };
    let answer = check(&todo, stranger).await;
    assert_eq!(answer.reasons, ["warrant:unknown-principal"]);

    // The bundled policies mark no type: an unknown dataset stays unknown, and a known one is
    // decided on its stored facts, the description ignored.
    let bundled = Server::start(&[]);
    let unknown = proto::CheckRequest {
        resource_attributes: context(serde_json::json!({"classification": "public"})),
        ..pipeline_read("Dataset::never-heard-of")
    };
    let answer = check(&bundled, unknown).await;
    assert_eq!(answer.decision(), Decision::Deny);
    assert_eq!(answer.reasons, ["warrant:unknown-resource"]);
    assert_eq!(answer.provenance.unwrap().resource_facts, "unknown");
    let known = proto::CheckRequest {
        resource_attributes: context(serde_json::json!({"classification": "restricted"})),
        ..pipeline_read("Dataset::sales-2026")
    };
    let plain = check(&bundled, pipeline_read("Dataset::sales-2026")).await;
    let answer = check(&bundled, known).await;
    assert_eq!(answer.decision(), plain.decision());
    assert_eq!(answer.reasons, plain.reasons);
    let provenance = answer.provenance.unwrap();
    assert_eq!(provenance.resource_facts, "stored");
    assert!(provenance.resource_description_ignored);
    let record = bundled.record(&answer.decision_id).await;
    assert_eq!(record["resource_description"]["ignored"], true);
    assert_eq!(record["resource_facts"], "stored");
}
