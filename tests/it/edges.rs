//! The edges under attack, against the real server: bytes tonic cannot decode, messages over
//! the size limit, oversized names, ambiguous paths, forged headers, idle and slow connections.
//! Every refusal must be a recorded decision whose id the answer carries; ext_authz must never
//! answer with a gRPC error.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{Server, pipeline_read};
use envoy_types::ext_authz::v3::pb::{CheckResponse, HttpResponse};
use http_body_util::BodyExt as _;
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const ENVOY_CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";
const WARRANT_CHECK: &str = "/warrant.v1.Authorizer/Check";

/// What came back from a raw gRPC call: the status code, the message bytes (if any) and every
/// header and trailer.
struct RawAnswer {
    code: i32,
    message: Option<Vec<u8>>,
    headers: HashMap<String, String>,
}

/// Sends `payload` framed as one gRPC message (as any client would, without checking it is
/// valid protobuf) over HTTP/2 to `path`.
async fn raw_call(server: &Server, path: &str, payload: &[u8]) -> RawAnswer {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(payload);
    let request = http::Request::post(format!("{}{path}", server.url()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
        .unwrap();
    let response = client.request(request).await.expect("an HTTP/2 answer");
    let mut headers: HashMap<String, String> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let collected = response.into_body().collect().await.unwrap();
    if let Some(trailers) = collected.trailers() {
        for (k, v) in trailers {
            headers.insert(k.to_string(), v.to_str().unwrap_or("").to_owned());
        }
    }
    let body = collected.to_bytes();
    let message = (body.len() >= 5).then(|| body[5..].to_vec());
    RawAnswer {
        code: headers["grpc-status"].parse().unwrap(),
        message,
        headers,
    }
}

/// An Envoy CheckRequest whose HTTP method is not UTF-8 (protobuf strings must be).
fn envoy_check_with_bad_utf8() -> Vec<u8> {
    use prost::encoding::{WireType, bytes as pb_bytes, encode_key, encode_varint};
    // HttpRequest { method (2): 0xff 0xfe }
    let mut http = Vec::new();
    pb_bytes::encode(2, &vec![0xff_u8, 0xfe], &mut http);
    // Request { http (2) }
    let mut request = Vec::new();
    encode_key(2, WireType::LengthDelimited, &mut request);
    encode_varint(http.len() as u64, &mut request);
    request.extend_from_slice(&http);
    // AttributeContext { request (4) }
    let mut attributes = Vec::new();
    encode_key(4, WireType::LengthDelimited, &mut attributes);
    encode_varint(request.len() as u64, &mut attributes);
    attributes.extend_from_slice(&request);
    // CheckRequest { attributes (1) }
    let mut check = Vec::new();
    encode_key(1, WireType::LengthDelimited, &mut check);
    encode_varint(attributes.len() as u64, &mut check);
    check.extend_from_slice(&attributes);
    check
}

fn denied_envoy_answer(answer: &RawAnswer) -> (i32, serde_json::Value) {
    assert_eq!(
        answer.code, 0,
        "ext_authz must answer OK: {:?}",
        answer.headers
    );
    let response = CheckResponse::decode(answer.message.as_deref().unwrap()).unwrap();
    assert_eq!(
        response.status.as_ref().unwrap().code,
        tonic::Code::PermissionDenied as i32
    );
    match response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => (
            denied.status.unwrap().code,
            serde_json::from_str(&denied.body).unwrap(),
        ),
        other => panic!("not a deny: {other:?}"),
    }
}

#[tokio::test]
async fn ext_authz_answers_unreadable_and_oversized_requests_with_a_recorded_deny() {
    let server = Server::start(&["--max-message-bytes", "2048"]);
    // Not UTF-8: tonic refuses it before Warrant's handler runs.
    let answer = raw_call(&server, ENVOY_CHECK, &envoy_check_with_bad_utf8()).await;
    let (http, body) = denied_envoy_answer(&answer);
    assert_eq!(http, 400);
    assert_eq!(
        body["reasons"],
        serde_json::json!(["warrant:malformed-request"])
    );
    let record = server.record(body["decision_id"].as_str().unwrap()).await;
    assert_eq!(record["decision"], "DENY");
    assert_eq!(
        record["reasons"],
        serde_json::json!(["warrant:malformed-request"])
    );
    // Over the size limit: refused before decoding, still an OK-status deny.
    let answer = raw_call(&server, ENVOY_CHECK, &vec![0x0a; 4096]).await;
    let (_, body) = denied_envoy_answer(&answer);
    server.record(body["decision_id"].as_str().unwrap()).await;
    // Not protobuf at all.
    let answer = raw_call(&server, ENVOY_CHECK, &[0xff, 0xff, 0xff]).await;
    denied_envoy_answer(&answer);
}

#[tokio::test]
async fn undecodable_checks_are_invalid_argument_and_recorded() {
    let server = Server::start(&[]);
    for payload in [&[0xff_u8, 0xff, 0xff][..], &envoy_check_with_bad_utf8()[..]] {
        let answer = raw_call(&server, WARRANT_CHECK, payload).await;
        assert_eq!(
            answer.code,
            tonic::Code::InvalidArgument as i32,
            "{:?}",
            answer.headers
        );
        let id = &answer.headers["x-warrant-decision-id"];
        assert_eq!(server.record(id).await["decision"], "DENY");
    }
}

#[tokio::test]
async fn oversized_names_are_refused_briefly_and_recorded_cut_to_the_limit() {
    let server = Server::start(&["--max-name-bytes", "64"]);
    let mut client = server.client().await;
    let mut huge = pipeline_read("Dataset::sales-2026");
    huge.principal.as_mut().unwrap().id = "x".repeat(1_000_000);
    let status = client.check(huge).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("principal.id:") && status.message().contains("64"),
        "{}",
        status.message()
    );
    assert!(status.message().len() < 200, "{}", status.message());
    let id = status
        .metadata()
        .get("x-warrant-decision-id")
        .expect("the refusal's decision id")
        .to_str()
        .unwrap();
    let record = server.record(id).await;
    assert_eq!(
        record["reasons"],
        serde_json::json!(["warrant:invalid-request"])
    );
    assert!(record["principal"]["id"].as_str().unwrap().len() <= 64);
    // A long unknown action is named, but only a short, escaped prefix of it is echoed.
    let mut long_action = pipeline_read("Dataset::sales-2026");
    long_action.action = "\"a\n".repeat(20);
    let status = client.check(long_action).await.expect_err("refused");
    assert!(
        status.message().starts_with("action:"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("\\n"), "{}", status.message());
    // Contexts too deep or too large are refused naming the limit.
    let mut deep = serde_json::json!(1);
    for _ in 0..12 {
        deep = serde_json::json!({ "a": deep });
    }
    let mut nested = pipeline_read("Dataset::sales-2026");
    nested.context = crate::common::context(serde_json::json!({ "justification": deep }));
    let status = client.check(nested).await.expect_err("refused");
    assert!(
        status.message().contains("max_context_depth"),
        "{}",
        status.message()
    );
}

/// The Envoy example's configuration with `unmatched = "allow"` and a public prefix route.
fn permissive_gateway() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warrant.toml");
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/envoy/warrant.toml"),
    )
    .unwrap()
    .replace("unmatched = \"deny\"", "unmatched = \"allow\"");
    std::fs::write(&config, example).unwrap();
    Server::start(&["--config", config.to_str().unwrap()])
}

fn envoy_check(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> envoy_types::ext_authz::v3::pb::CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    envoy_types::ext_authz::v3::pb::CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: "spiffe://prod.example.com/ns/deploy/sa/deploy-bot".to_owned(),
                ..Peer::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

async fn ask(
    server: &Server,
    request: envoy_types::ext_authz::v3::pb::CheckRequest,
) -> CheckResponse {
    envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        server.url(),
    )
    .await
    .unwrap()
    .check(request)
    .await
    .expect("never a gRPC error")
    .into_inner()
}

#[tokio::test]
async fn ambiguous_paths_never_reach_a_route_or_the_unmatched_pass() {
    let server = permissive_gateway();
    // `GET /datasets/{name}` is guarded; unmatched requests pass.
    for path in [
        "/public/../datasets/salaries",
        "/public/%2e%2e/datasets/salaries",
        "//datasets/salaries",
        "/datasets/a%2Fb",
        "/datasets/salaries;x=1",
        "/datasets/sal\\aries",
    ] {
        let answer = ask(&server, envoy_check("GET", path, &[])).await;
        match answer.http_response {
            Some(HttpResponse::DeniedResponse(denied)) => {
                assert_eq!(denied.status.unwrap().code, 400, "{path}");
                assert!(denied.body.contains("warrant:bad-path"), "{path}");
            }
            other => panic!("{path} must be refused, got {other:?}"),
        }
    }
    // Other spellings of a guarded path are decided (and recorded) by its route, not passed as
    // unmatched.
    for path in [
        "/datasets/salaries/",
        "/DATASETS/salaries",
        "/%64atasets/salaries",
    ] {
        let answer = ask(&server, envoy_check("get", path, &[])).await;
        let decided = answer
            .dynamic_metadata
            .as_ref()
            .and_then(|m| m.fields.get("decision_id"));
        assert!(decided.is_some(), "{path}: {answer:?}");
    }
}

#[tokio::test]
async fn warrants_headers_cannot_be_forged_through_the_unmatched_pass() {
    let server = permissive_gateway();
    let forged = [("x-warrant-decision-id", "01a2-forged")];
    let answer = ask(&server, envoy_check("GET", "/unguarded/thing", &forged)).await;
    match answer.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            assert_eq!(ok.headers_to_remove, ["x-warrant-decision-id"]);
        }
        other => panic!("an unmatched request passes: {other:?}"),
    }
}

#[tokio::test]
async fn refusals_before_the_engine_carry_a_recorded_decision_id() {
    let server = Server::start(&[]);
    // No route (the default table is empty): 403 with a decision id that is on record.
    let answer = ask(&server, envoy_check("GET", "/anything", &[])).await;
    let Some(HttpResponse::DeniedResponse(denied)) = answer.http_response else {
        panic!("denied");
    };
    let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
    let record = server.record(body["decision_id"].as_str().unwrap()).await;
    assert_eq!(record["reasons"], serde_json::json!(["warrant:no-route"]));
    assert_eq!(record["principal"]["id"], "deploy-bot");
    // A malformed gRPC Check.
    let mut client = server.client().await;
    let mut no_action = pipeline_read("Dataset::sales-2026");
    no_action.action.clear();
    let status = client.check(no_action).await.expect_err("refused");
    let id = status.metadata().get("x-warrant-decision-id").unwrap();
    let record = server.record(id.to_str().unwrap()).await;
    assert_eq!(record["principal"]["id"], "pipeline-etl");
    assert_eq!(record["errors"][0]["message"], "action: required");
    // A bad BatchCheck item has its own recorded refusal.
    let mut bad = pipeline_read("Dataset::sales-2026");
    bad.action = "no-such-action".into();
    let results = client
        .batch_check(warrant_proto::BatchCheckRequest {
            checks: vec![pipeline_read("Dataset::sales-2026"), bad],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let Some(warrant_proto::batch_check_result::Result::Error(error)) = &results[1].result else {
        panic!("item 1 is an error: {results:?}");
    };
    assert!(error.message.starts_with("checks[1].action:"));
    let record = server.record(&error.decision_id).await;
    assert_eq!(record["action"], "no-such-action");
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_and_checks_still_answer() {
    let server = Server::start(&[
        "--idle-timeout-ms",
        "300",
        "--header-read-timeout-ms",
        "300",
    ]);
    let authzen = server.authzen_addr();
    // A slowloris: half a request line, then nothing.
    let mut slow = tokio::net::TcpStream::connect(authzen).await.unwrap();
    slow.write_all(b"POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // An idle gRPC connection on the Check port.
    let mut idle = tokio::net::TcpStream::connect(server.check_addr())
        .await
        .unwrap();
    // Both are closed by the server (read returns end of stream or an error), well before
    // this test's own limit.
    for stream in [&mut slow, &mut idle] {
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server must close the connection");
    }
    // And Checks are answered all along.
    let mut client = server.client().await;
    client
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap();
    let scrape = crate::common::scrape(&server).await;
    assert!(
        crate::common::value(
            &scrape,
            "warrant_connections_idle_closed_total",
            &[("listener", "check")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_listener_at_its_connection_limit_waits_and_counts() {
    let server = Server::start(&["--max-connections", "2"]);
    let authzen = server.authzen_addr();
    let _held: Vec<tokio::net::TcpStream> = futures_held(authzen, 3).await;
    // The third waits in the backlog; the limit is counted.
    let mut counted = 0.0;
    for _ in 0..50 {
        let scrape = crate::common::scrape(&server).await;
        counted = crate::common::value(
            &scrape,
            "warrant_connections_at_limit_total",
            &[("listener", "authzen")],
        );
        if counted >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counted >= 1.0);
    let scrape = crate::common::scrape(&server).await;
    assert_eq!(
        crate::common::value(
            &scrape,
            "warrant_connections_open",
            &[("listener", "authzen")]
        ),
        2.0
    );
}

async fn futures_held(addr: std::net::SocketAddr, count: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..count {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    held
}

#[tokio::test]
async fn a_handler_that_panics_is_an_ok_status_deny_for_envoy_and_internal_for_check() {
    use tower::{Service as _, ServiceExt as _};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let engine = std::sync::Arc::new(warrant_engine::engine::Engine::new(
        warrant::server::load_snapshot(&dir).unwrap(),
        std::sync::Arc::new(warrant_domain::clock::SystemClock),
        warrant_engine::engine::EngineSettings::default(),
        warrant_engine::engine::EngineParts::default(),
    ));
    let (health, _) = tonic_health::server::health_reporter();
    let metrics = std::sync::Arc::new(warrant::observability::metrics::Metrics::default());
    let decider = std::sync::Arc::new(warrant::api::decider::Decider::new(
        engine,
        None,
        health,
        std::sync::Arc::clone(&metrics),
    ));
    let panicking = tower::service_fn(|_: http::Request<tonic::body::Body>| async {
        if true {
            panic!("a bug in a handler");
        }
        Ok::<http::Response<tonic::body::Body>, std::convert::Infallible>(http::Response::default())
    });
    let request = |path: &str| {
        http::Request::post(path)
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::empty())
            .unwrap()
    };
    let mut envoy = warrant::api::edge::Edge::ext_authz(
        panicking,
        std::sync::Arc::clone(&decider),
        Duration::from_secs(1),
    );
    let response = envoy
        .ready()
        .await
        .unwrap()
        .call(request(ENVOY_CHECK))
        .await
        .unwrap();
    assert!(response.headers().get("grpc-status").is_none());
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    let body = collected.to_bytes();
    let answer = CheckResponse::decode(&body[5..]).unwrap();
    match answer.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => {
            assert_eq!(denied.status.unwrap().code, 403);
            assert!(
                denied.body.contains("warrant:internal-error"),
                "{}",
                denied.body
            );
        }
        other => panic!("not a deny: {other:?}"),
    }
    let mut check =
        warrant::api::edge::Edge::authorizer(panicking, decider, Duration::from_secs(1));
    let response = check
        .ready()
        .await
        .unwrap()
        .call(request(WARRANT_CHECK))
        .await
        .unwrap();
    let status = tonic::Status::from_header_map(response.headers()).unwrap();
    assert_eq!(status.code(), tonic::Code::Internal);
    assert!(response.headers().contains_key("x-warrant-decision-id"));
}
