//! The AuthZEN Authorization API against the real server over HTTP (hyper's client, HTTP/1.1
//! and HTTP/2): the working group's 25 API-gateway interop cases, the three evaluation semantics
//! with defaults and overrides, the metadata document, errors, request ids, the bearer token,
//! caller-asserted attributes, and the ledger.

use std::path::PathBuf;

use crate::common::Server;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const RICK: &str = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
const MORTY: &str = "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
const JERRY: &str = "CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";

fn gateway_policies() -> PathBuf {
    crate::common::bundled_policies().join("examples/authzen-gateway")
}

fn start_gateway(extra: &[&str]) -> Server {
    let policies = gateway_policies();
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        policies.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start_with(&args).unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"))
}

/// An HTTP exchange: (status, x-request-id, body).
pub(crate) struct Answer {
    pub(crate) status: u16,
    request_id: Option<String>,
    pub(crate) content_type: String,
    pub(crate) body: String,
    /// `x-warrant-decision-id`: a refusal's record.
    pub(crate) decision_id: Option<String>,
    pub(crate) location: Option<String>,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub(crate) async fn call(
    server: &Server,
    http2: bool,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", server.authzen));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let request_id = header("x-request-id");
    let content_type = header("content-type").unwrap_or_default();
    let decision_id = header("x-warrant-decision-id");
    let location = header("location");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        request_id,
        content_type,
        decision_id,
        location,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

pub(crate) async fn evaluate(server: &Server, path: &str, body: &Value) -> Answer {
    call(
        server,
        false,
        "POST",
        path,
        &[("content-type", "application/json")],
        &body.to_string(),
    )
    .await
}

fn ask(subject: &str, method: &str, route: &str) -> Value {
    json!({
        "subject": {"type": "identity", "id": subject},
        "action": {"name": method},
        "resource": {"type": "route", "id": route},
    })
}

#[tokio::test]
async fn every_interop_case_of_the_api_gateway_scenario_matches() {
    let server = start_gateway(&[]);
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/authzen/decisions.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let cases = cases["evaluation"].as_array().unwrap();
    assert_eq!(cases.len(), 25);
    let mut mismatches = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        // Alternate HTTP/1.1 and HTTP/2 (prior knowledge), as gateways use either.
        let answer = call(
            &server,
            i % 2 == 1,
            "POST",
            "/access/v1/evaluation",
            &[("content-type", "application/json")],
            &case["request"].to_string(),
        )
        .await;
        assert_eq!(answer.status, 200, "case {i}: {}", answer.body);
        assert_eq!(answer.content_type, "application/json");
        let decision = answer.json();
        if decision["decision"] != case["expected"] {
            mismatches.push((i, case["request"].clone(), decision));
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

#[tokio::test]
async fn a_deny_is_200_false_with_the_decision_id_and_reasons_and_lands_in_the_ledger() {
    let server = start_gateway(&[]);
    let answer = call(
        &server,
        false,
        "POST",
        "/access/v1/evaluation",
        &[("x-request-id", "bfe9eb29-ab87")],
        &ask(JERRY, "DELETE", "/todos/{todoId}").to_string(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.request_id.as_deref(), Some("bfe9eb29-ab87"));
    let body = answer.json();
    assert_eq!(body["decision"], false);
    assert_eq!(
        body["context"]["reasons"],
        json!(["warrant:no-permitting-policy"])
    );
    let decision_id = body["context"]["decision_id"].as_str().unwrap().to_owned();
    let record = server
        .decision_log_client()
        .await
        .get_decision(warrant_proto::GetDecisionRequest { decision_id })
        .await
        .unwrap()
        .into_inner();
    let record: Value = serde_json::from_str(&record.record_json).unwrap();
    assert_eq!(
        record["principal"],
        json!({"type": "identity", "id": JERRY})
    );
    assert_eq!(record["request_id"], "bfe9eb29-ab87");
    assert_eq!(record["decision"], "DENY");

    let allowed = evaluate(
        &server,
        "/access/v1/evaluation",
        &ask(MORTY, "PUT", "/todos/{todoId}"),
    )
    .await;
    assert_eq!(
        allowed.json()["context"]["reasons"],
        json!(["update-todo-needs-editor-or-evil-genius"])
    );
    let metrics = crate::common::scrape(&server).await;
    assert_eq!(
        crate::common::value(
            &metrics,
            "warrant_decisions_total",
            &[("api", "authzen"), ("decision", "deny")]
        ),
        1.0
    );
}

#[tokio::test]
async fn evaluations_apply_defaults_overrides_and_the_three_semantics() {
    let server = start_gateway(&[]);
    // Defaults for subject and action; the third item overrides the action.
    let batch = |semantic: Option<&str>| {
        let mut body = json!({
            "subject": {"type": "identity", "id": MORTY},
            "action": {"name": "GET"},
            "evaluations": [
                {"resource": {"type": "route", "id": "/todos"}},
                {"action": {"name": "DELETE"}, "subject": {"type": "identity", "id": JERRY},
                 "resource": {"type": "route", "id": "/todos/{todoId}"}},
                {"action": {"name": "POST"}, "resource": {"type": "route", "id": "/todos"}},
            ],
        });
        if let Some(semantic) = semantic {
            body["options"] = json!({"evaluations_semantic": semantic});
        }
        body
    };
    let decisions = |answer: Answer| -> Vec<Value> {
        assert_eq!(answer.status, 200, "{}", answer.body);
        let body = answer.json();
        assert!(body.get("decision").is_none());
        body["evaluations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["decision"].clone())
            .collect()
    };
    let all = decisions(evaluate(&server, "/access/v1/evaluations", &batch(None)).await);
    assert_eq!(all, [true, false, true]);
    let all = decisions(
        evaluate(
            &server,
            "/access/v1/evaluations",
            &batch(Some("execute_all")),
        )
        .await,
    );
    assert_eq!(all, [true, false, true]);
    let until_deny = decisions(
        evaluate(
            &server,
            "/access/v1/evaluations",
            &batch(Some("deny_on_first_deny")),
        )
        .await,
    );
    assert_eq!(until_deny, [true, false]);
    let until_permit = decisions(
        evaluate(
            &server,
            "/access/v1/evaluations",
            &batch(Some("permit_on_first_permit")),
        )
        .await,
    );
    assert_eq!(until_permit, [true]);

    // No evaluations: a single evaluation, answered as one.
    let single = evaluate(
        &server,
        "/access/v1/evaluations",
        &ask(RICK, "DELETE", "/todos/{todoId}"),
    )
    .await;
    assert_eq!(single.json()["decision"], true);

    // A bad item is a false decision with its error; the others are still decided.
    let mixed = evaluate(
        &server,
        "/access/v1/evaluations",
        &json!({
            "subject": {"type": "identity", "id": RICK},
            "evaluations": [
                {"action": {"name": "GET"}, "resource": {"type": "route", "id": "/todos"}},
                {"action": {"name": "PATCH"}, "resource": {"type": "route", "id": "/todos"}},
                {"resource": {"type": "route", "id": "/todos"}},
            ],
        }),
    )
    .await
    .json();
    let items = mixed["evaluations"].as_array().unwrap();
    assert_eq!(items[0]["decision"], true);
    assert_eq!(items[1]["decision"], false);
    assert_eq!(items[1]["context"]["error"]["status"], 400);
    assert!(
        items[1]["context"]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("evaluations[1].action.name: ")
    );
    // The refused item is a recorded decision too.
    assert!(items[1]["context"]["decision_id"].as_str().is_some());
    assert_eq!(
        items[2]["context"]["error"]["message"],
        "evaluations[2].action: required (in the evaluation or as a top-level default)"
    );
    // Under deny_on_first_deny an error stops the batch like a deny.
    let stopped = evaluate(
        &server,
        "/access/v1/evaluations",
        &json!({
            "subject": {"type": "identity", "id": RICK},
            "options": {"evaluations_semantic": "deny_on_first_deny"},
            "evaluations": [
                {"action": {"name": "PATCH"}, "resource": {"type": "route", "id": "/todos"}},
                {"action": {"name": "GET"}, "resource": {"type": "route", "id": "/todos"}},
            ],
        }),
    )
    .await
    .json();
    assert_eq!(stopped["evaluations"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_requests_are_400_naming_the_field_and_unknown_fields_are_ignored() {
    let server = start_gateway(&[]);
    let cases = [
        (
            json!({"action": {"name": "GET"}, "resource": {"type": "route", "id": "/todos"}}),
            "subject: required",
        ),
        (
            json!({"subject": {"type": "identity"}, "action": {"name": "GET"}, "resource": {"type": "route", "id": "/todos"}}),
            "subject.id: required",
        ),
        (
            json!({"subject": {"type": "identity", "id": RICK}, "action": {}, "resource": {"type": "route", "id": "/todos"}}),
            "action.name: required",
        ),
        (
            json!({"subject": {"type": "identity", "id": RICK}, "action": {"name": "GET"}, "resource": {"type": 7, "id": "/todos"}}),
            "resource.type: must be a string",
        ),
        (
            json!({"subject": {"type": "user", "id": RICK}, "action": {"name": "GET"}, "resource": {"type": "route", "id": "/todos"}}),
            "subject.type: the schema declares no principal type \"user\"",
        ),
        (
            json!({"subject": {"type": "identity", "id": RICK}, "action": {"name": "GET"}, "resource": {"type": "route", "id": "/todos"}, "context": []}),
            "context: must be an object",
        ),
        (json!([1, 2]), "body: must be a JSON object"),
    ];
    for (body, expected) in cases {
        let answer = evaluate(&server, "/access/v1/evaluation", &body).await;
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        assert!(
            answer.body.starts_with(expected),
            "{body}: {:?} vs {expected:?}",
            answer.body
        );
    }
    let bad_json = call(
        &server,
        false,
        "POST",
        "/access/v1/evaluation",
        &[],
        "{not json",
    )
    .await;
    assert_eq!(bad_json.status, 400);
    assert!(bad_json.body.starts_with("body: not JSON"));
    let bad_semantic = evaluate(
        &server,
        "/access/v1/evaluations",
        &json!({"options": {"evaluations_semantic": "majority"}, "evaluations": [ask(RICK, "GET", "/todos")]}),
    )
    .await;
    assert_eq!(bad_semantic.status, 400);
    assert!(
        bad_semantic
            .body
            .starts_with("options.evaluations_semantic")
    );

    // Unknown fields anywhere are ignored, and caller-asserted context and properties the
    // schema does not declare never reach Cedar (nor can they set `now`).
    let mut generous = ask(MORTY, "POST", "/todos");
    generous["subject"]["properties"] = json!({"roles": ["admin"], "department": "sales"});
    generous["context"] =
        json!({"now": "1985-10-26T01:22:00Z", "ip": "10.0.0.1", "headers": {"x": "y"}});
    generous["extension"] = json!({"anything": true});
    let answer = evaluate(&server, "/access/v1/evaluation", &generous).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["decision"], true);
    // Jerry claiming the admin role in his properties is still a viewer: facts come from Warrant.
    let mut claims = ask(JERRY, "POST", "/todos");
    claims["subject"]["properties"] = json!({"roles": ["admin"]});
    assert_eq!(
        evaluate(&server, "/access/v1/evaluation", &claims)
            .await
            .json()["decision"],
        false
    );
}

#[tokio::test]
async fn the_metadata_document_and_the_bearer_token() {
    let server = Server::start_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        gateway_policies().to_str().unwrap(),
        "--authzen-base-url",
        "https://pdp.example.com/",
    ])
    .unwrap();
    let metadata = call(
        &server,
        true,
        "GET",
        "/.well-known/authzen-configuration",
        &[],
        "",
    )
    .await;
    assert_eq!(metadata.status, 200);
    assert_eq!(metadata.content_type, "application/json");
    assert_eq!(
        metadata.json(),
        json!({
            "policy_decision_point": "https://pdp.example.com",
            "access_evaluation_endpoint": "https://pdp.example.com/access/v1/evaluation",
            "access_evaluations_endpoint": "https://pdp.example.com/access/v1/evaluations",
            "search_subject_endpoint": "https://pdp.example.com/access/v1/search/subject",
            "search_resource_endpoint": "https://pdp.example.com/access/v1/search/resource",
            "search_action_endpoint": "https://pdp.example.com/access/v1/search/action",
            "decision_advice_supported": ["approval_required"],
            "access_request_endpoint": "https://pdp.example.com/access/v1/requests",
            "capabilities": ["urn:openid:authzen:capability:access-request"],
        })
    );
    drop(server);

    // With a token configured (by environment variable), calls without it are 401.
    let policies = gateway_policies();
    let server = crate::common::Server::start_with_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policies",
            policies.to_str().unwrap(),
        ],
        &[("WARRANT_AUTHZEN_TOKEN", "interop-token-0123456789")],
    )
    .unwrap();
    let body = ask(RICK, "GET", "/todos").to_string();
    let missing = call(
        &server,
        false,
        "POST",
        "/access/v1/evaluation",
        &[("x-request-id", "r-9")],
        &body,
    )
    .await;
    assert_eq!(
        (missing.status, missing.request_id.as_deref()),
        (401, Some("r-9"))
    );
    let wrong = call(
        &server,
        false,
        "POST",
        "/access/v1/evaluation",
        &[("authorization", "Bearer nope")],
        &body,
    )
    .await;
    assert_eq!(wrong.status, 401);
    let right = call(
        &server,
        false,
        "POST",
        "/access/v1/evaluation",
        &[("authorization", "Bearer interop-token-0123456789")],
        &body,
    )
    .await;
    assert_eq!(
        (right.status, right.json()["decision"].clone()),
        (200, json!(true))
    );
}

#[tokio::test]
async fn declared_context_attributes_and_the_approval_reach_the_decision() {
    // On the bundled policies: an agent's vendor request needs its task approval and the
    // amount, both of which an AuthZEN caller passes in `context`.
    let server = Server::start(&[]);
    let vendor = |amount: Value| {
        json!({
            "subject": {"type": "Agent", "id": "procurement-agent", "properties": {"team": "buying"}},
            "action": {"name": "submit_vendor_request"},
            "resource": {"type": "Tool", "id": "vendor-portal"},
            "context": {"approval_id": "TASK-77", "vendor": "Acme", "amount": amount, "colour": "red"},
        })
    };
    let allowed = evaluate(&server, "/access/v1/evaluation", &vendor(json!(1200))).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    let body = allowed.json();
    assert_eq!(body["decision"], true, "{body}");
    let record = server
        .decision_log_client()
        .await
        .get_decision(warrant_proto::GetDecisionRequest {
            decision_id: body["context"]["decision_id"].as_str().unwrap().to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let record: Value = serde_json::from_str(&record.record_json).unwrap();
    assert_eq!(record["approval"]["ticket"], "TASK-77");
    // Only what the action's context declares: `colour` and the subject's properties are not.
    assert_eq!(record["context"], json!({"amount": 1200, "vendor": "Acme"}));

    let over_limit = evaluate(&server, "/access/v1/evaluation", &vendor(json!(999_999))).await;
    assert_eq!(over_limit.json()["decision"], false);
    let fractional = evaluate(&server, "/access/v1/evaluation", &vendor(json!(1.5))).await;
    assert_eq!(fractional.status, 400);
    assert!(
        fractional
            .body
            .starts_with("context.amount: 1.5 is not an integer"),
        "{}",
        fractional.body
    );
}

#[tokio::test]
async fn nulls_and_undeclared_attributes_are_ignored_misfits_named_and_refusals_recorded() {
    let server = Server::start(&[]);
    let vendor = |context: Value| {
        json!({
            "subject": {"type": "Agent", "id": "procurement-agent"},
            "action": {"name": "submit_vendor_request"},
            "resource": {"type": "Tool", "id": "vendor-portal"},
            "context": context,
        })
    };
    // A null and an attribute nested under a declared record that the schema does not declare
    // are left out, not refused.
    let tolerant = evaluate(
        &server,
        "/access/v1/evaluation",
        &vendor(json!({
            "approval_id": "TASK-77", "vendor": "Acme", "amount": 1200, "justification": null,
            "http": {"method": "POST", "path": "/v", "host": "h", "source_address": "a", "tls": {"v": 1}},
        })),
    )
    .await;
    assert_eq!(tolerant.status, 200, "{}", tolerant.body);
    let body = tolerant.json();
    assert_eq!(body["decision"], true, "{body}");
    let kept = server
        .record(body["context"]["decision_id"].as_str().unwrap())
        .await;
    assert_eq!(
        kept["context"],
        json!({"amount": 1200, "http": {"host": "h", "method": "POST", "path": "/v", "source_address": "a"}, "vendor": "Acme"})
    );
    // 64-bit integers keep their value, on record too.
    let big = evaluate(
        &server,
        "/access/v1/evaluation",
        &vendor(json!({"approval_id": "TASK-77", "vendor": "Acme", "amount": 9_007_199_254_740_993_i64})),
    )
    .await;
    let body = big.json();
    let kept = server
        .record(body["context"]["decision_id"].as_str().unwrap())
        .await;
    assert_eq!(kept["context"]["amount"], json!(9_007_199_254_740_993_i64));
    // A value of the wrong kind is named by its key, and the refusal is on record.
    for (context, expected) in [
        (
            json!({"vendor": "Acme", "amount": "lots"}),
            "context.amount: expected a Long, got a String",
        ),
        (
            json!({"vendor": "Acme"}),
            "context.amount: required by the schema",
        ),
    ] {
        let refused = evaluate(&server, "/access/v1/evaluation", &vendor(context)).await;
        assert_eq!(refused.status, 400);
        assert!(refused.body.starts_with(expected), "{}", refused.body);
        let id = refused.decision_id.clone().expect("the refusal's id");
        let kept = server.record(&id).await;
        assert_eq!(kept["reasons"], json!(["warrant:invalid-request"]));
        assert_eq!(kept["principal"]["id"], "procurement-agent");
    }
    // A body that is not JSON is refused and recorded as well.
    let garbage = call(
        &server,
        false,
        "POST",
        "/access/v1/evaluation",
        &[("content-type", "application/json")],
        "{not json",
    )
    .await;
    assert_eq!(garbage.status, 400);
    let kept = server.record(garbage.decision_id.as_deref().unwrap()).await;
    assert_eq!(kept["decision"], "DENY");
}

/// The working group's Todo interop scenario, all 43 cases, compared as its runner compares them:
/// `/evaluation`'s `decision` with the expected boolean, `/evaluations`' whole `evaluations`
/// array with the expected array. Todos are described by the caller (their `ownerID`); users
/// read by email are too.
#[tokio::test]
async fn the_todo_interop_scenario_passes_in_full_as_its_runner_compares() {
    let policies = crate::common::bundled_policies().join("examples/authzen-todo");
    let server = Server::start_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        policies.to_str().unwrap(),
        "--authzen-answer-context",
        "decision_only",
    ])
    .unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"));
    let cases: Value =
        serde_json::from_str(include_str!("../fixtures/authzen/todo-decisions.json")).unwrap();
    let mut passed = 0;
    let mut failed = Vec::new();
    for (endpoint, key) in [("evaluation", "evaluation"), ("evaluations", "evaluations")] {
        for case in cases[key].as_array().unwrap() {
            let answer = call(
                &server,
                false,
                "POST",
                &format!("/access/v1/{endpoint}"),
                &[("content-type", "application/json")],
                &case["request"].to_string(),
            )
            .await;
            let body = answer.json();
            let got = if endpoint == "evaluation" {
                body["decision"].clone()
            } else {
                body["evaluations"].clone()
            };
            // The decision ids stay reachable: one per answer, in the header.
            let ids = answer.decision_id.clone().unwrap_or_default();
            let expected_ids = got.as_array().map_or(1, Vec::len);
            assert_eq!(ids.split(',').count(), expected_ids, "{ids}");
            if got == case["expected"] {
                passed += 1;
            } else {
                failed.push(format!("{} -> {got}", case["request"]));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{passed} passed; failed:\n{}",
        failed.join("\n")
    );
    assert_eq!(passed, 43);
    // A described todo's decision is on record with the caller's description.
    let answer = call(
        &server,
        false,
        "POST",
        "/access/v1/evaluation",
        &[("content-type", "application/json")],
        &json!({
            "subject": {"type": "user", "id": MORTY},
            "action": {"name": "can_update_todo"},
            "resource": {"type": "todo", "id": "t-9",
                         "properties": {"ownerID": "morty@the-citadel.com", "color": "red"}},
        })
        .to_string(),
    )
    .await;
    assert_eq!(answer.json(), json!({"decision": true}));
    let record = server.record(&answer.decision_id.unwrap()).await;
    assert_eq!(record["resource_facts"], "described_by_caller");
    assert_eq!(
        record["resource_description"],
        json!({"attributes": {"color": "red", "ownerID": "morty@the-citadel.com"},
               "ignored": false, "parents": []})
    );
    assert!(record["caller"].as_str().unwrap().starts_with("127.0.0.1:"));
}
