//! Envoy's ext_authz v3 Check against the real server, with an `envoy-types` client sending
//! CheckRequests shaped like Envoy's: the headers map (pseudo-headers included), a path with its
//! query string, the mTLS peer's principal, context extensions, the raw `header_map` variant.

use std::collections::HashMap;
use std::path::Path;

use crate::common::Server;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, HeaderMap, HeaderValue, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::google::protobuf::value::Kind;

const DEPLOY_BOT: &str = "spiffe://prod.example.com/ns/deploy/sa/deploy-bot";

/// A server on examples/envoy/warrant.toml with `extra_toml` appended.
fn start(extra_toml: &str) -> Server {
    start_on(|example| format!("{example}\n{extra_toml}"))
}

/// A server on examples/envoy/warrant.toml as `edit` changes it.
fn start_on(edit: impl FnOnce(String) -> String) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warrant.toml");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/envoy/warrant.toml"),
    )
    .unwrap();
    std::fs::write(&config, edit(example)).unwrap();
    // The file may go once the server has read it, which it has when it is listening.
    Server::start(&["--config", config.to_str().unwrap()])
}

fn socket(ip: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..SocketAddress::default()
        })),
    })
}

/// A CheckRequest as Envoy's ext_authz filter sends it for `method path` from a client whose
/// mTLS certificate carries `peer` (empty for plain TLS / no client certificate).
pub(crate) fn envoy_check(
    method: &str,
    path: &str,
    peer: &str,
    extra_headers: &[(&str, &str)],
) -> CheckRequest {
    let mut headers: HashMap<String, String> = [
        (":authority", "payments.internal"),
        (":method", method),
        (":path", path),
        (":scheme", "https"),
        ("user-agent", "curl/8.5.0"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "5f1c2a4e-1111-4c1e-9b7a-2c0e4f1d9a01"),
        ("x-envoy-expected-rq-timeout-ms", "200"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra_headers {
        headers.insert((*k).to_owned(), (*v).to_owned());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: socket("10.1.2.3", 51234),
                principal: peer.to_owned(),
                ..Peer::default()
            }),
            destination: Some(Peer {
                address: socket("10.0.0.9", 8443),
                principal: "spiffe://prod.example.com/ns/gw/sa/ingress".to_owned(),
                ..Peer::default()
            }),
            request: Some(AttrRequest {
                time: Some(envoy_types::pb::google::protobuf::Timestamp {
                    seconds: 1_795_000_000,
                    nanos: 0,
                }),
                http: Some(HttpRequest {
                    id: "5f1c2a4e-1111-4c1e-9b7a-2c0e4f1d9a01".to_owned(),
                    method: method.to_owned(),
                    headers,
                    path: path.to_owned(),
                    host: "payments.internal".to_owned(),
                    scheme: "https".to_owned(),
                    protocol: "HTTP/2".to_owned(),
                    ..HttpRequest::default()
                }),
            }),
            context_extensions: HashMap::from([(
                "change_reason".to_owned(),
                "rollout 42".to_owned(),
            )]),
            ..AttributeContext::default()
        }),
    }
}

pub(crate) async fn ask(server: &Server, request: CheckRequest) -> CheckResponse {
    AuthorizationClient::connect(server.url())
        .await
        .unwrap()
        .check(request)
        .await
        .expect("ext_authz answers with a CheckResponse, never a gRPC error")
        .into_inner()
}

pub(crate) fn grpc_code(response: &CheckResponse) -> tonic::Code {
    tonic::Code::from(response.status.as_ref().unwrap().code)
}

/// The denied response's HTTP status, headers and JSON body.
fn denial(response: &CheckResponse) -> (i32, HashMap<String, String>, serde_json::Value) {
    match response.http_response.as_ref() {
        Some(HttpResponse::DeniedResponse(denied)) => (
            denied.status.as_ref().unwrap().code,
            denied
                .headers
                .iter()
                .map(|h| {
                    let h = h.header.as_ref().unwrap();
                    (h.key.clone(), h.value.clone())
                })
                .collect(),
            serde_json::from_str(&denied.body).unwrap(),
        ),
        other => panic!("not a denial: {other:?}"),
    }
}

fn metadata(response: &CheckResponse, key: &str) -> String {
    match &response.dynamic_metadata.as_ref().unwrap().fields[key].kind {
        Some(Kind::StringValue(text)) => text.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_approved_change_is_allowed_and_stamped_for_the_upstream() {
    let server = start("");
    let answer = ask(
        &server,
        envoy_check(
            "PUT",
            "/configs/payments-api?dry_run=1",
            DEPLOY_BOT,
            &[
                ("x-approval-id", "CHG-1042"),
                ("x-warrant-decision-id", "forged"),
            ],
        ),
    )
    .await;
    assert_eq!(grpc_code(&answer), tonic::Code::Ok);
    let Some(HttpResponse::OkResponse(ok)) = &answer.http_response else {
        panic!("{answer:?}")
    };
    let stamp = ok.headers[0].header.as_ref().unwrap();
    assert_eq!(stamp.key, "x-warrant-decision-id");
    // Replaces whatever the client sent under that name.
    assert_eq!(ok.headers[0].append_action, 2, "OVERWRITE_IF_EXISTS_OR_ADD");
    assert_eq!(metadata(&answer, "decision_id"), stamp.value);
    assert_eq!(metadata(&answer, "decision"), "allow");
    assert!(metadata(&answer, "policy_version").starts_with("sha256:"));

    // The same provenance as a native Check: the ledger has the decision, with what the gateway
    // saw in the context.
    let record = recorded(&server, &answer).await;
    assert_eq!(record["principal"]["id"], "deploy-bot");
    assert_eq!(record["resource"]["id"], "payments-api");
    assert_eq!(record["approval"]["ticket"], "CHG-1042");
    assert_eq!(record["request_id"], "5f1c2a4e-1111-4c1e-9b7a-2c0e4f1d9a01");
    assert_eq!(
        record["context"],
        serde_json::json!({
            "http": {"host": "payments.internal", "method": "PUT", "path": "/configs/payments-api",
                     "source_address": "10.1.2.3:51234"},
            "justification": "rollout 42",
        })
    );
}

#[tokio::test]
async fn a_denied_change_gets_a_403_with_the_decision_its_reasons_and_what_would_allow_it() {
    let server = start("");
    let answer = ask(
        &server,
        envoy_check("PUT", "/configs/payments-api", DEPLOY_BOT, &[]),
    )
    .await;
    assert_eq!(grpc_code(&answer), tonic::Code::PermissionDenied);
    let (status, headers, body) = denial(&answer);
    assert_eq!(status, 403);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-warrant-decision-id"], body["decision_id"]);
    assert_eq!(
        body["reasons"],
        serde_json::json!(["production-change-needs-approval"])
    );
    // The body holds the decision, its reasons, and the approval that would allow it.
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["approval_required", "decision", "decision_id", "reasons"]
    );
    assert_eq!(
        body["approval_required"]["scope"],
        serde_json::json!({"type": "Scope", "id": "prod-payments-config"})
    );
    assert_eq!(metadata(&answer, "decision"), "deny");

    // A replayed approval: the agent's approval presented by another workload.
    let replay = ask(
        &server,
        envoy_check(
            "PUT",
            "/configs/payments-api",
            "spiffe://prod.example.com/ns/data/sa/db-admin",
            &[("x-approval-id", "CHG-1042")],
        ),
    )
    .await;
    assert_eq!(
        denial(&replay).2["reasons"],
        serde_json::json!(["warrant:approval-granted-to-another-identity"])
    );
}

#[tokio::test]
async fn no_principal_is_a_401_and_an_unknown_workload_a_403() {
    let server = start("");
    let anonymous = ask(&server, envoy_check("GET", "/datasets/sales-2026", "", &[])).await;
    assert_eq!(grpc_code(&anonymous), tonic::Code::Unauthenticated);
    let (status, _, body) = denial(&anonymous);
    assert_eq!(
        (status, &body["reasons"]),
        (401, &serde_json::json!(["warrant:unauthenticated"]))
    );
    // Without a configured principal header, a header naming one is not trusted.
    let claimed = ask(
        &server,
        envoy_check(
            "GET",
            "/datasets/sales-2026",
            "",
            &[("x-warrant-principal", "ApiKey::pipeline-etl")],
        ),
    )
    .await;
    assert_eq!(denial(&claimed).0, 401);
    let stranger = ask(
        &server,
        envoy_check(
            "GET",
            "/datasets/sales-2026",
            "spiffe://elsewhere.example.com/sa/x",
            &[],
        ),
    )
    .await;
    let (status, _, body) = denial(&stranger);
    assert_eq!(
        (status, &body["reasons"]),
        (403, &serde_json::json!(["warrant:unknown-spiffe-id"]))
    );
}

#[tokio::test]
async fn a_trusted_header_names_the_principal_but_never_over_the_mtls_peer() {
    let server = start_with_principal_header();
    let answer = ask(
        &server,
        envoy_check(
            "GET",
            "/datasets/sales-2026",
            "",
            &[("x-warrant-principal", "ApiKey::pipeline-etl")],
        ),
    )
    .await;
    assert_eq!(grpc_code(&answer), tonic::Code::Ok, "{answer:?}");
    let malformed = ask(
        &server,
        envoy_check(
            "GET",
            "/datasets/sales-2026",
            "",
            &[("x-warrant-principal", "pipeline-etl")],
        ),
    )
    .await;
    assert_eq!(
        denial(&malformed).2["reasons"],
        serde_json::json!(["warrant:bad-principal-header"])
    );
    // The mTLS peer wins: the header claims the pipeline key, the certificate is the deploy bot.
    let peer_wins = ask(
        &server,
        envoy_check(
            "GET",
            "/datasets/salaries",
            DEPLOY_BOT,
            &[("x-warrant-principal", "ApiKey::pipeline-etl")],
        ),
    )
    .await;
    let record = recorded(&server, &peer_wins).await;
    assert_eq!(record["principal"]["id"], "deploy-bot");
}

/// The ledger's record of the decision an answer carries.
#[tokio::test]
async fn a_credential_in_a_header_must_name_the_principal_the_peer_is() {
    use crate::credentials::{ISSUER, Key, claims};
    let es = Key::new("k1", jsonwebtoken::Algorithm::ES256);
    let keys = tempfile::tempdir().unwrap();
    let jwks = keys.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({"keys": [es.jwk()]}).to_string()).unwrap();
    let server = start_on(|example| {
        let example = example.replace(
            "# credential_header = \"authorization\"",
            "credential_header = \"Authorization\"",
        );
        format!(
            "{example}\n[[credentials.issuers]]\nissuer = \"{ISSUER}\"\njwks_file = \"{}\"\nprincipal = \"ServiceAccount::{{sub}}\"\n",
            jwks.display()
        )
    });
    let change = |token: String| {
        envoy_check(
            "PUT",
            "/configs/payments-api",
            DEPLOY_BOT,
            &[
                ("x-approval-id", "CHG-1042"),
                ("authorization", &format!("Bearer {token}")),
            ],
        )
    };
    let allowed = ask(&server, change(es.sign(&claims("deploy-bot", 600)))).await;
    assert_eq!(metadata(&allowed, "decision"), "allow");
    let record = recorded(&server, &allowed).await;
    assert_eq!(record["credential"]["subject"], "deploy-bot");
    // The peer is deploy-bot; a token for another identity does not make it that identity.
    let other = ask(&server, change(es.sign(&claims("db-admin", 600)))).await;
    let (status, _, body) = denial(&other);
    assert_eq!(status, 403);
    assert_eq!(
        body["reasons"],
        serde_json::json!(["warrant:credential-mismatch"])
    );
    // The header is bounded as a Check's credential is (16 KiB); the refusal is on record.
    let oversized = ask(&server, change("x".repeat(20_000))).await;
    let (status, _, body) = denial(&oversized);
    assert_eq!(
        (status, body["reasons"].clone()),
        (400, serde_json::json!(["warrant:credential-malformed"]))
    );
    let record = server.record(body["decision_id"].as_str().unwrap()).await;
    assert_eq!(record["decision"], "DENY");
}

async fn recorded(server: &Server, answer: &CheckResponse) -> serde_json::Value {
    server.record(&metadata(answer, "decision_id")).await
}

fn start_with_principal_header() -> Server {
    start_on(|example| {
        example.replace(
            "# principal_header = \"x-warrant-principal\"",
            "principal_header = \"X-Warrant-Principal\"",
        )
    })
}

#[tokio::test]
async fn unmatched_routes_malformed_checks_and_unreadable_paths_are_denied() {
    let server = start("");
    let cases: Vec<(CheckRequest, i32, &str)> = vec![
        (
            envoy_check("DELETE", "/configs/payments-api", DEPLOY_BOT, &[]),
            403,
            "warrant:no-route",
        ),
        (
            envoy_check("GET", "/admin", DEPLOY_BOT, &[]),
            403,
            "warrant:no-route",
        ),
        (
            envoy_check("GET", "/datasets/sales%2", DEPLOY_BOT, &[]),
            400,
            "warrant:bad-path",
        ),
        (
            CheckRequest::default(),
            400,
            "warrant:malformed-check-request",
        ),
        (
            {
                let mut check = envoy_check("GET", "/datasets/x", DEPLOY_BOT, &[]);
                check.attributes.as_mut().unwrap().request = None;
                check
            },
            400,
            "warrant:malformed-check-request",
        ),
    ];
    for (check, status, reason) in cases {
        let answer = ask(&server, check).await;
        assert_eq!(grpc_code(&answer), tonic::Code::PermissionDenied);
        let (got, _, body) = denial(&answer);
        assert_eq!(
            (got, &body["reasons"]),
            (status, &serde_json::json!([reason]))
        );
    }
    // Encoded segments are decoded before they name the resource.
    let encoded = ask(
        &server,
        envoy_check("GET", "/datasets/sales%2D2026", DEPLOY_BOT, &[]),
    )
    .await;
    assert_eq!(
        recorded(&server, &encoded).await["resource"]["id"],
        "sales-2026"
    );
}

#[tokio::test]
async fn raw_header_maps_and_routes_the_schema_refuses() {
    let server = start(
        "[[ext_authz.routes]]\nmethod = \"GET\"\npath = \"/widgets/{name}\"\naction = \"read\"\nresource = \"Widget::{name}\"\n",
    );
    // Envoy with `encode_raw_headers: true` sends header_map with raw values instead.
    let mut check = envoy_check("PUT", "/configs/payments-api", DEPLOY_BOT, &[]);
    let http = check
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    let headers = std::mem::take(&mut http.headers);
    http.header_map = Some(HeaderMap {
        headers: headers
            .into_iter()
            .chain([("x-approval-id".to_owned(), "CHG-1042".to_owned())])
            .map(|(key, value)| HeaderValue {
                key,
                raw_value: value.into_bytes(),
                ..HeaderValue::default()
            })
            .collect(),
    });
    assert_eq!(grpc_code(&ask(&server, check).await), tonic::Code::Ok);

    // A route to a type the schema does not know can never be decided: a deny, not an error.
    let widget = ask(&server, envoy_check("GET", "/widgets/w1", DEPLOY_BOT, &[])).await;
    let (status, _, body) = denial(&widget);
    assert_eq!(
        (status, &body["reasons"]),
        (403, &serde_json::json!(["warrant:request-not-decidable"]))
    );
    // Counted as ext_authz decisions.
    let metrics = crate::common::scrape(&server).await;
    assert_eq!(
        crate::common::value(
            &metrics,
            "warrant_decisions_total",
            &[("api", "ext_authz"), ("decision", "allow")]
        ),
        1.0
    );
    assert_eq!(
        crate::common::value(
            &metrics,
            "warrant_decisions_total",
            &[("api", "ext_authz"), ("decision", "deny")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_bad_route_table_stops_the_server_naming_the_route() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warrant.toml");
    std::fs::write(
        &config,
        "[[ext_authz.routes]]\nmethod = \"GET\"\npath = \"/datasets/{name}\"\naction = \"read\"\nresource = \"Dataset::{id}\"\n",
    )
    .unwrap();
    let stderr = Server::start_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
    ])
    .err()
    .expect("the server must refuse the route table");
    assert!(
        stderr.contains("ext_authz.routes[0].resource: {id} is not captured"),
        "{stderr}"
    );
}

/// A server on the Todo example's policies, whose todos exist only in the app: the routes
/// describe each todo from the path or a header.
fn start_todo_gateway() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warrant.toml");
    std::fs::write(
        &config,
        r#"
[ext_authz]
principal_header = "x-user"

[[ext_authz.routes]]
method = "DELETE"
path = "/todos/{id}"
action = "can_delete_todo"
resource = "todo::{id}"
resource_attributes = { ownerID = "header:x-todo-owner" }

[[ext_authz.routes]]
method = "PUT"
path = "/owners/{owner}/todos/{id}"
action = "can_update_todo"
resource = "todo::{id}"
resource_attributes = { ownerID = "{owner}" }
"#,
    )
    .unwrap();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/examples/authzen-todo");
    Server::start_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        policies.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ])
    .unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"))
}

#[tokio::test]
async fn a_route_describes_a_resource_warrant_has_never_seen_from_the_path_or_a_header() {
    let server = start_todo_gateway();
    // Morty is an editor: he may change the todos he owns, and only those.
    let morty = "user::CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
    let delete = |owner: Option<&str>| {
        let mut headers = vec![("x-user", morty)];
        if let Some(owner) = owner {
            headers.push(("x-todo-owner", owner));
        }
        envoy_check("DELETE", "/todos/t-7", "", &headers)
    };
    let own = ask(&server, delete(Some("morty@the-citadel.com"))).await;
    assert_eq!(grpc_code(&own), tonic::Code::Ok, "{own:?}");
    let record = recorded(&server, &own).await;
    assert_eq!(record["resource_facts"], "described_by_caller");
    assert_eq!(
        record["resource_description"]["attributes"]["ownerID"],
        "morty@the-citadel.com"
    );
    let theirs = ask(&server, delete(Some("rick@the-citadel.com"))).await;
    assert_eq!(grpc_code(&theirs), tonic::Code::PermissionDenied);
    // No header: the todo has no owner, and is not his.
    let unowned = ask(&server, delete(None)).await;
    assert_eq!(grpc_code(&unowned), tonic::Code::PermissionDenied);

    // The owner from a capture of the path.
    let update = |owner: &str| {
        envoy_check(
            "PUT",
            &format!("/owners/{owner}/todos/t-8"),
            "",
            &[("x-user", morty)],
        )
    };
    let own = ask(&server, update("morty@the-citadel.com")).await;
    assert_eq!(grpc_code(&own), tonic::Code::Ok, "{own:?}");
    let theirs = ask(&server, update("rick@the-citadel.com")).await;
    assert_eq!(grpc_code(&theirs), tonic::Code::PermissionDenied);
}

/// A server on the MCP example's policies with examples/envoy/mcp.toml.
fn start_mcp_gateway() -> Server {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Server::start_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        root.join("policies/examples/mcp-agent").to_str().unwrap(),
        "--config",
        root.join("examples/envoy/mcp.toml").to_str().unwrap(),
    ])
    .unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"))
}

/// Envoy's CheckRequest for an MCP POST from the vendor agent, with `headers` and, when given,
/// the body as Envoy packs it (`pack_as_bytes`).
fn mcp_check(headers: &[(&str, &str)], body: Option<&str>) -> CheckRequest {
    let mut all = vec![("x-agent", "Agent::vendor-agent")];
    all.extend_from_slice(headers);
    let mut check = envoy_check("POST", "/mcp/vendors", "", &all);
    if let Some(body) = body {
        let http = check
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
            .unwrap();
        http.raw_body = body.as_bytes().to_vec();
        http.size = body.len() as i64;
    }
    check
}

fn tool_call(tool: &str, arguments: serde_json::Value) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}})
    .to_string()
}

#[tokio::test]
async fn an_mcp_endpoint_is_decided_by_the_json_rpc_method_it_carries() {
    let server = start_mcp_gateway();
    let payment = tool_call(
        "pay_invoice",
        serde_json::json!({"vendor": "acme", "amount": 1200}),
    );

    // A tool call with its body: the tool's action, its arguments in context.input.
    let with_approval = [
        ("mcp-method", "tools/call"),
        ("mcp-name", "pay_invoice"),
        ("x-approval-id", "INV-42"),
    ];
    let answer = ask(&server, mcp_check(&with_approval, Some(&payment))).await;
    assert_eq!(grpc_code(&answer), tonic::Code::Ok, "{answer:?}");
    let record = recorded(&server, &answer).await;
    assert_eq!(record["action"], "pay_invoice");
    assert_eq!(record["resource"]["id"], "pay_invoice");
    assert_eq!(
        record["context"]["input"],
        serde_json::json!({"vendor": "acme", "amount": 1200})
    );
    let answer = ask(&server, mcp_check(&[], Some(&payment))).await;
    let (status, _, body) = denial(&answer);
    assert_eq!(
        (status, body["reasons"].clone()),
        (403, serde_json::json!(["payment-needs-approval"]))
    );
    let over = tool_call(
        "pay_invoice",
        serde_json::json!({"vendor": "acme", "amount": 9000}),
    );
    let answer = ask(&server, mcp_check(&with_approval, Some(&over))).await;
    assert_eq!(
        denial(&answer).2["reasons"],
        serde_json::json!(["payment-over-approved-amount"])
    );
    let admin = tool_call("delete_vendor", serde_json::json!({"name": "acme"}));
    let answer = ask(&server, mcp_check(&[], Some(&admin))).await;
    assert_eq!(
        denial(&answer).2["reasons"],
        serde_json::json!(["outside-agent-scopes"])
    );

    // Other methods from the endpoint's table.
    let listing = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let answer = ask(&server, mcp_check(&[], Some(listing))).await;
    assert_eq!(grpc_code(&answer), tonic::Code::Ok);
    assert_eq!(recorded(&server, &answer).await["action"], "use_mcp_server");
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let answer = ask(&server, mcp_check(&[], Some(initialized))).await;
    assert_eq!(grpc_code(&answer), tonic::Code::Ok);
    // The headers alone decide nothing (require_body, the default): a `tools/list` header may
    // travel with a `tools/call` body that was not forwarded.
    for headers_only in [
        vec![("mcp-method", "tools/list")],
        vec![("mcp-method", "tools/call"), ("mcp-name", "lookup_vendor")],
    ] {
        let answer = ask(&server, mcp_check(&headers_only, None)).await;
        let (status, _, denied) = denial(&answer);
        assert_eq!(
            (status, denied["reasons"].clone()),
            (400, serde_json::json!(["warrant:mcp-malformed"])),
            "{headers_only:?}"
        );
    }
    // Headers that name another method than the body are refused.
    let answer = ask(
        &server,
        mcp_check(&[("mcp-method", "tools/list")], Some(&payment)),
    )
    .await;
    assert_eq!(
        denial(&answer).2["reasons"],
        serde_json::json!(["warrant:mcp-malformed"])
    );

    // Refused: an unmapped method, and whatever cannot be read one way; each on record.
    let reading = r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#;
    let answer = ask(&server, mcp_check(&[], Some(reading))).await;
    let (status, _, body) = denial(&answer);
    assert_eq!(
        (status, body["reasons"].clone()),
        (403, serde_json::json!(["warrant:mcp-method-not-mapped"]))
    );
    let lookup = tool_call("lookup_vendor", serde_json::json!({"name": "acme"}));
    type Headers<'a> = Vec<(&'a str, &'a str)>;
    let malformed: [(Headers, Option<&str>); 5] = [
        (
            vec![],
            Some("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}]"),
        ),
        (
            vec![],
            Some("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/ca"),
        ),
        (vec![("mcp-name", "pay_invoice")], Some(&lookup)),
        (vec![("x-envoy-auth-partial-body", "true")], Some(&lookup)),
        (vec![], None),
    ];
    for (headers, body) in malformed {
        let answer = ask(&server, mcp_check(&headers, body)).await;
        let (status, _, denied) = denial(&answer);
        assert_eq!(
            (status, denied["reasons"].clone()),
            (400, serde_json::json!(["warrant:mcp-malformed"])),
            "{headers:?} {body:?}"
        );
        let record = server.record(denied["decision_id"].as_str().unwrap()).await;
        assert_eq!(record["decision"], "DENY");
    }

    // The session's stream is an ordinary route.
    let answer = ask(
        &server,
        envoy_check(
            "GET",
            "/mcp/vendors",
            "",
            &[("x-agent", "Agent::vendor-agent")],
        ),
    )
    .await;
    assert_eq!(grpc_code(&answer), tonic::Code::Ok);
}
