//! Search over the wire, against the real server: the AuthZEN working group's search interop
//! cases (198, compared as its harness compares them) over HTTP, paging with tokens bound to
//! their query, malformed searches refused naming the field (and on record), and the same
//! searches over gRPC.

use std::path::PathBuf;

use serde_json::{Value, json};
use warrant_proto as proto;

use crate::authzen::{Answer, evaluate};
use crate::common::{Server, entity};

fn start_search_scenario() -> Server {
    let policies = crate::common::bundled_policies().join("examples/authzen-search");
    Server::start_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        policies.to_str().unwrap(),
    ])
    .unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"))
}

/// The results as the harness compares them: sorted by type and id, or by name.
fn sorted(results: &Value) -> Vec<Value> {
    let mut results = results.as_array().cloned().unwrap_or_default();
    results.sort_by_key(|result| {
        (
            result["type"].as_str().unwrap_or_default().to_owned(),
            result["id"].as_str().unwrap_or_default().to_owned(),
            result["name"].as_str().unwrap_or_default().to_owned(),
        )
    });
    results
}

#[tokio::test]
async fn every_case_of_the_search_interop_scenario_matches() {
    let server = start_search_scenario();
    let mut mismatches = Vec::new();
    let mut cases = 0;
    for endpoint in ["subject", "resource", "action"] {
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/authzen/search/{endpoint}.json"));
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        for case in fixture["evaluation"].as_array().unwrap() {
            cases += 1;
            let answer = evaluate(
                &server,
                &format!("/access/v1/search/{endpoint}"),
                &case["request"],
            )
            .await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            let body = answer.json();
            if sorted(&body["results"]) != sorted(&case["expected"]["results"]) {
                mismatches.push(format!(
                    "{endpoint} {}: {}",
                    case["request"], body["results"]
                ));
            }
            // Every result fits on the default page.
            assert_eq!(body["page"]["next_token"], "");
        }
    }
    assert_eq!(cases, 198);
    assert!(
        mismatches.is_empty(),
        "{} of 198 differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

fn alice_views(page: Value) -> Value {
    json!({
        "subject": {"type": "user", "id": "alice"},
        "action": {"name": "view"},
        "resource": {"type": "record", "id": "ignored"},
        "page": page,
    })
}

#[tokio::test]
async fn pages_follow_their_tokens_to_the_end_and_a_token_serves_only_its_own_query() {
    let server = start_search_scenario();
    let path = "/access/v1/search/resource";
    let mut ids = Vec::new();
    let mut page = json!({"limit": 7});
    let mut pages = 0;
    loop {
        let answer = evaluate(&server, path, &alice_views(page.clone())).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let body = answer.json();
        pages += 1;
        let results = body["results"].as_array().unwrap();
        assert!(results.len() <= 7);
        assert_eq!(body["page"]["count"], results.len());
        ids.extend(results.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        let next = body["page"]["next_token"].as_str().unwrap();
        if next.is_empty() {
            break;
        }
        page = json!({"limit": 7, "token": next});
    }
    // Every record is a candidate: the scenario's permits compare attributes (said so).
    let first = evaluate(&server, path, &alice_views(json!({"limit": 7})))
        .await
        .json();
    assert_eq!(
        first["context"]["candidates"],
        "every record: a permit that can match constrains the resource by type or not at all"
    );
    // Alice is a manager: she views all twenty records, in a stable order, none twice.
    assert_eq!(pages, 3);
    let mut expected: Vec<String> = (101..=120).map(|n| n.to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected);

    let first = evaluate(&server, path, &alice_views(json!({"limit": 7})))
        .await
        .json();
    let token = first["page"]["next_token"].as_str().unwrap().to_owned();
    // The same token with another action, another limit or as another user: refused.
    for other in [
        json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "edit"},
               "resource": {"type": "record"}, "page": {"limit": 7, "token": token}}),
        alice_views(json!({"limit": 8, "token": token})),
        json!({"subject": {"type": "user", "id": "bob"}, "action": {"name": "view"},
               "resource": {"type": "record"}, "page": {"limit": 7, "token": token}}),
    ] {
        let refused = evaluate(&server, path, &other).await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert!(refused.body.starts_with("page.token: "), "{}", refused.body);
    }
    // The id of the searched entity is ignored: the token still serves the query without it.
    let mut without_id = alice_views(json!({"limit": 7, "token": token}));
    without_id["resource"] = json!({"type": "record"});
    assert_eq!(evaluate(&server, path, &without_id).await.status, 200);
}

#[tokio::test]
async fn malformed_searches_are_400_naming_the_field_and_on_record() {
    let server = start_search_scenario();
    let cases: [(&str, Value, &str); 9] = [
        (
            "resource",
            json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {}}),
            "resource.type: required",
        ),
        (
            "resource",
            json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {"type": "spaceship"}}),
            "resource.type: ",
        ),
        (
            "subject",
            json!({"subject": {"type": "robot"}, "action": {"name": "view"}, "resource": {"type": "record", "id": "101"}}),
            "subject.type: ",
        ),
        (
            "subject",
            json!({"action": {"name": "view"}, "resource": {"type": "record", "id": "101"}}),
            "subject: required",
        ),
        (
            "resource",
            json!({"subject": {"type": "user", "id": "alice"}, "resource": {"type": "record"}}),
            "action: required",
        ),
        ("resource", alice_views(json!({"limit": 0})), "page.limit: "),
        (
            "resource",
            alice_views(json!({"limit": 1_000_000_000u64})),
            "page.limit: ",
        ),
        (
            "resource",
            alice_views(json!({"token": "not-a-token"})),
            "page.token: ",
        ),
        (
            "action",
            json!({"subject": {"type": "user", "id": "alice"}, "resource": {"type": "record"}}),
            "resource.id: required",
        ),
    ];
    for (endpoint, body, message) in cases {
        let answer: Answer =
            evaluate(&server, &format!("/access/v1/search/{endpoint}"), &body).await;
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        assert!(answer.body.starts_with(message), "{body}: {}", answer.body);
        // Refused, and that refusal is a record like any other.
        let decision_id = answer.decision_id.clone().expect("a refusal's record");
        let record = server.record(&decision_id).await;
        assert_eq!(record["decision"], "DENY");
        assert_eq!(record["reasons"], json!(["warrant:invalid-request"]));
    }
    // An unknown subject or resource is no error: nobody and nothing to answer.
    let unknown = evaluate(
        &server,
        "/access/v1/search/resource",
        &json!({"subject": {"type": "user", "id": "zed"}, "action": {"name": "view"}, "resource": {"type": "record"}}),
    )
    .await;
    assert_eq!(unknown.status, 200, "{}", unknown.body);
    assert_eq!(unknown.json()["results"], json!([]));
    let unknown = evaluate(
        &server,
        "/access/v1/search/subject",
        &json!({"subject": {"type": "user"}, "action": {"name": "view"}, "resource": {"type": "record", "id": "999"}}),
    )
    .await;
    let unknown = unknown.json();
    assert_eq!(unknown["page"], json!({"next_token": "", "count": 0}));
    assert_eq!(unknown["results"], json!([]));
}

#[tokio::test]
async fn each_search_page_is_on_record_and_the_ledger_verifies() {
    let server = start_search_scenario();
    let answer = evaluate(
        &server,
        "/access/v1/search/subject",
        &json!({"subject": {"type": "user"}, "action": {"name": "delete"},
                "resource": {"type": "record", "id": "104"}, "page": {"limit": 5}}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let search_id = answer.json()["context"]["search_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut client = server.client().await;
    let page = client
        .search_actions(proto::SearchRequest {
            request: Some(proto::CheckRequest {
                principal: entity("user", "dan"),
                resource: entity("record", "104"),
                ..proto::CheckRequest::default()
            }),
            ..proto::SearchRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.results.len(), 3);
    drop(client);
    let data = server.terminate();
    let (ok, text) = crate::ledger::log(data.path(), &["show", &search_id, "--output", "json"]);
    assert!(ok, "{text}");
    let entry: Value = serde_json::from_str(&text).unwrap();
    let search = &entry["entry"]["search"];
    assert_eq!(search["searched"], "subject");
    assert_eq!(search["searched_type"], "user");
    assert_eq!(search["action"], "delete");
    assert_eq!(search["resource"], json!({"type": "record", "id": "104"}));
    assert_eq!(search["results"], 1);
    assert_eq!(search["examined"], 6);
    assert_eq!(search["transport"], "authzen");
    assert_eq!(search["more"], false);
    let (ok, text) = crate::ledger::log(data.path(), &["show", &page.search_id]);
    assert!(ok, "{text}");
    assert!(
        text.contains("what user::dan may do to record::104 (over grpc)"),
        "{text}"
    );
    assert!(text.contains("3 result(s) from 3 candidate(s)"), "{text}");
    let (ok, text) = crate::ledger::log(data.path(), &["verify"]);
    assert!(ok, "{text}");
}

#[tokio::test]
async fn the_bundled_world_over_grpc_pages_and_refuses_as_check_does() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let search = |principal: Option<proto::EntityRef>,
                  action: &str,
                  resource: Option<proto::EntityRef>,
                  size: u32,
                  token: String| {
        proto::SearchRequest {
            request: Some(proto::CheckRequest {
                principal,
                action: action.to_owned(),
                resource,
                ..proto::CheckRequest::default()
            }),
            include_approvable: false,
            page_size: size,
            page_token: token,
        }
    };
    // What pipeline-etl may read: the sales dataset its link grants, one page at a time.
    let mut found = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .search_resources(search(
                entity("ApiKey", "pipeline-etl"),
                "read",
                entity("Dataset", ""),
                1,
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.results.len() <= 1);
        assert!(page.searched_at.is_some() && !page.policy_version.is_empty());
        found.extend(page.results.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(found, ["sales-2026"]);
    // Found by walking down from what pipeline-etl's grants name, not by reading every dataset.
    let page = client
        .search_resources(search(
            entity("ApiKey", "pipeline-etl"),
            "read",
            entity("Dataset", ""),
            0,
            String::new(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        page.candidates
            .contains("at or below Scope::\"sales-datasets\""),
        "{}",
        page.candidates
    );
    // Each result is what Check allows.
    let check = client
        .check(crate::common::pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(check.decision, proto::Decision::Allow as i32);

    // Who may update the payments config with CHG-1042: deploy-bot, to whom it was granted.
    let mut who = search(
        entity("ServiceAccount", ""),
        "update",
        entity("Config", "payments-api"),
        0,
        String::new(),
    );
    who.request.as_mut().unwrap().approval_id = "CHG-1042".to_owned();
    let subjects = client.search_subjects(who).await.unwrap().into_inner();
    assert_eq!(
        subjects
            .results
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["deploy-bot"]
    );

    // What deploy-bot may do to the config without an approval: nothing; with approvable
    // results, the update an approval would allow.
    let mut what = search(
        entity("ServiceAccount", "deploy-bot"),
        "",
        entity("Config", "payments-api"),
        0,
        String::new(),
    );
    let actions = client
        .search_actions(what.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(actions.results.is_empty(), "{:?}", actions.results);
    what.include_approvable = true;
    let actions = client.search_actions(what).await.unwrap().into_inner();
    assert_eq!(
        actions.results,
        [proto::SearchResult {
            id: "update".to_owned(),
            approvable: true
        }]
    );

    // A credential that does not verify denies every Check it comes with: nothing is found,
    // and the answer says why.
    let mut presented = search(
        entity("ApiKey", "pipeline-etl"),
        "read",
        entity("Dataset", ""),
        0,
        String::new(),
    );
    presented.request.as_mut().unwrap().credential = "not.a.jwt".to_owned();
    let page = client
        .search_resources(presented)
        .await
        .unwrap()
        .into_inner();
    assert!(page.results.is_empty());
    assert!(
        page.candidates
            .starts_with("none: the credential presented does not verify"),
        "{}",
        page.candidates
    );
    // Malformed: INVALID_ARGUMENT naming the field.
    for (request, field) in [
        (
            search(
                entity("ApiKey", "pipeline-etl"),
                "read",
                entity("", ""),
                0,
                String::new(),
            ),
            "request.resource.type",
        ),
        (
            search(
                entity("ApiKey", "pipeline-etl"),
                "read",
                entity("Nope", ""),
                0,
                String::new(),
            ),
            "request.resource.type",
        ),
        (
            search(
                entity("ApiKey", "pipeline-etl"),
                "fly",
                entity("Dataset", ""),
                0,
                String::new(),
            ),
            "request.action",
        ),
        (
            search(
                entity("ApiKey", "pipeline-etl"),
                "read",
                entity("Dataset", ""),
                5_000,
                String::new(),
            ),
            "page_size",
        ),
        (
            search(
                entity("ApiKey", "pipeline-etl"),
                "read",
                entity("Dataset", ""),
                0,
                "forged".to_owned(),
            ),
            "page_token",
        ),
    ] {
        let refused = client.search_resources(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().starts_with(&format!("{field}: ")),
            "{}",
            refused.message()
        );
    }
    // Counted.
    let scrape = crate::common::scrape(&server).await;
    let ok = crate::common::value(
        &scrape,
        "warrant_searches_total",
        &[
            ("kind", "resource"),
            ("transport", "grpc"),
            ("outcome", "ok"),
        ],
    );
    assert!(ok >= 1.0, "{ok}");
}

#[tokio::test]
async fn the_shell_prints_one_json_line_per_result_across_pages() {
    let server = start_search_scenario();
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_warrant"))
            .arg("search")
            .args(args)
            .args(["--server", &server.url()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .collect::<Vec<_>>()
    };
    // Who may delete record 104: its owner, dan.
    assert_eq!(
        run(&[
            "subjects",
            "--type",
            "user",
            "--action",
            "delete",
            "--resource",
            "record::104"
        ]),
        [json!({"type": "user", "id": "dan"})]
    );
    // What bob may edit: the four records he owns.
    let edits = run(&[
        "resources",
        "--principal",
        "user::bob",
        "--action",
        "edit",
        "--type",
        "record",
    ]);
    let ids: Vec<&str> = edits
        .iter()
        .map(|line| line["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["102", "108", "114", "120"]);
    // What erin may do to record 105 (hers), and --limit.
    assert_eq!(
        run(&[
            "actions",
            "--principal",
            "user::erin",
            "--resource",
            "record::105"
        ])
        .len(),
        3
    );
    assert_eq!(
        run(&[
            "actions",
            "--principal",
            "user::erin",
            "--resource",
            "record::105",
            "--limit",
            "1"
        ]),
        [json!({"name": "delete"})]
    );
}

#[tokio::test]
async fn searches_beyond_the_in_flight_bound_wait_their_turn_and_all_answer() {
    let policies = crate::common::bundled_policies().join("examples/authzen-search");
    let server = Server::start_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        policies.to_str().unwrap(),
        "--search-max-in-flight",
        "1",
    ])
    .unwrap();
    let asks = (0..8).map(|n| {
        let server = &server;
        async move {
            let mut client = server.client().await;
            client
                .search_resources(proto::SearchRequest {
                    request: Some(proto::CheckRequest {
                        principal: entity("user", ["alice", "bob", "carol", "dan"][n % 4]),
                        action: "view".to_owned(),
                        resource: entity("record", ""),
                        ..proto::CheckRequest::default()
                    }),
                    ..proto::SearchRequest::default()
                })
                .await
                .map(|page| page.into_inner().results.len())
        }
    });
    let answered = futures_util::future::join_all(asks).await;
    assert!(
        answered.iter().all(|a| a.as_ref().is_ok_and(|n| *n > 0)),
        "{answered:?}"
    );
    let scrape = crate::common::scrape(&server).await;
    assert_eq!(
        crate::common::value(&scrape, "warrant_searches_waiting", &[]),
        0.0
    );
    let ok = crate::common::value(
        &scrape,
        "warrant_searches_total",
        &[
            ("kind", "resource"),
            ("transport", "grpc"),
            ("outcome", "ok"),
        ],
    );
    assert_eq!(ok, 8.0);
}
