//! A fuzz target for the three decoders, run for a fixed number of cases in CI: arbitrary bytes
//! and mutations of well-formed requests go through the native gRPC Check, Envoy's ext_authz
//! and AuthZEN exactly as the services take them. Nothing may panic, and no answer may allow a
//! principal the facts do not know. (`PROPTEST_CASES` runs more.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{Authorization as _, HttpResponse};
use proptest::prelude::*;
use prost::Message as _;
use tower::ServiceExt as _;
use warrant::api::authzen::{self, AuthZen};
use warrant::api::decider::Decider;
use warrant::api::envoy::{ExtAuthz, ExtAuthzService, ExtAuthzSettings};
use warrant::observability::metrics::Metrics;
use warrant_domain::clock::SystemClock;
use warrant_domain::{Effect, EntityRef};
use warrant_engine::engine::{Engine, EngineSettings};
use warrant_proto as proto;
use warrant_proto::convert::check_request_from_proto;

/// Principals the fuzzer names: known ones, unknown ones, and near misses.
const PRINCIPALS: [(&str, &str); 6] = [
    ("ApiKey", "pipeline-etl"),
    ("ServiceAccount", "deploy-bot"),
    ("ApiKey", "pipeline-etl2"),
    ("ServiceAccount", "ghost"),
    ("Human", "alice"),
    ("ApiKey", ""),
];

struct Target {
    /// Allows seen per decoder: the well-formed mutations must reach the engine, or the
    /// target proves nothing.
    allows: [std::cell::Cell<u32>; 3],
    engine: Arc<Engine>,
    decider: Arc<Decider>,
    ext_authz: ExtAuthzService,
    authzen: axum::Router,
    runtime: tokio::runtime::Runtime,
}

impl Target {
    fn new() -> Target {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let snapshot = warrant::server::load_snapshot(&dir).unwrap();
        let engine = Arc::new(Engine::new(
            snapshot,
            Arc::new(SystemClock),
            EngineSettings::default(),
            warrant_engine::engine::EngineParts::default(),
        ));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (health, _) = runtime.block_on(async { tonic_health::server::health_reporter() });
        let decider = Arc::new(Decider::new(
            Arc::clone(&engine),
            None,
            health,
            Arc::new(Metrics::default()),
        ));
        let routes: ExtAuthzSettings = toml::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("examples/envoy/warrant.toml"),
            )
            .unwrap(),
        )
        .map(|file: BTreeMap<String, ExtAuthzSettings>| file["ext_authz"].clone())
        .unwrap();
        let ext_authz = ExtAuthzService::new(
            Arc::clone(&decider),
            Arc::new(ExtAuthz::new(&routes).unwrap()),
        );
        let authzen = authzen::router(
            Arc::new(AuthZen::new(
                Arc::clone(&decider),
                Arc::new(warrant::api::search::Searcher::new(
                    Arc::clone(&decider),
                    warrant::api::page_token::PageTokens::with_key([3; 32]),
                    Default::default(),
                )),
                None,
                None,
                20,
                Default::default(),
                None,
            )),
            1 << 20,
        );
        Target {
            allows: Default::default(),
            engine,
            decider,
            ext_authz,
            authzen,
            runtime,
        }
    }

    fn known(&self, principal: &EntityRef) -> bool {
        let snapshot = self.engine.snapshot();
        let Ok(uid) = format!(
            "{}::{}",
            principal.type_name,
            serde_json::to_string(&principal.id).unwrap()
        )
        .parse::<cedar_policy::EntityUid>() else {
            return false;
        };
        snapshot.facts.contains(&uid)
    }

    /// The native Check: decode, convert, decide.
    fn grpc(&self, bytes: &[u8]) {
        let Ok(request) = proto::CheckRequest::decode(bytes) else {
            return;
        };
        let Ok(request) = check_request_from_proto(request) else {
            return;
        };
        if let Ok(decision) = self
            .decider
            .decide(warrant::observability::metrics::Api::Check, &request)
            && decision.effect == Effect::Allow
        {
            assert!(self.known(&request.principal), "allowed {request:?}");
            self.allows[0].set(self.allows[0].get() + 1);
        }
    }

    /// Envoy's Check: decode, then the service's own handling, which must answer every time.
    fn ext_authz(&self, bytes: &[u8]) {
        let Ok(request) = envoy_types::ext_authz::v3::pb::CheckRequest::decode(bytes) else {
            return;
        };
        let peer = request
            .attributes
            .as_ref()
            .and_then(|a| a.source.as_ref())
            .map(|s| s.principal.clone())
            .unwrap_or_default();
        let answer = self
            .runtime
            .block_on(self.ext_authz.check(tonic::Request::new(request)))
            .expect("ext_authz never answers with a gRPC error")
            .into_inner();
        if let Some(HttpResponse::OkResponse(_)) = answer.http_response
            && answer.dynamic_metadata.is_some()
        {
            let snapshot = self.engine.snapshot();
            assert!(
                snapshot.facts.identity_by_spiffe_id(&peer).is_some(),
                "allowed an unknown peer {peer:?}"
            );
            self.allows[1].set(self.allows[1].get() + 1);
        }
    }

    /// AuthZEN: the HTTP handler on the body as sent.
    fn authzen(&self, body: Vec<u8>) {
        let mut request = http::Request::post(authzen::EVALUATION_PATH)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.clone()))
            .unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(SocketAddr::from((
                [127, 0, 0, 1],
                1,
            ))));
        let response = self
            .runtime
            .block_on(self.authzen.clone().oneshot(request))
            .unwrap();
        let status = response.status();
        let bytes = self
            .runtime
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .unwrap();
        assert!(status.is_success() || status.is_client_error(), "{status}");
        let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return;
        };
        if answer["decision"] == true {
            let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let principal = EntityRef::new(
                sent["subject"]["type"].as_str().unwrap_or_default(),
                sent["subject"]["id"].as_str().unwrap_or_default(),
            );
            assert!(self.known(&principal), "allowed {principal:?}");
            self.allows[2].set(self.allows[2].get() + 1);
        }
    }
}

fn valid_check(principal: usize, action: &str, resource: &str) -> Vec<u8> {
    let (type_name, id) = PRINCIPALS[principal];
    let (resource_type, resource_id) = resource.split_once("::").unwrap();
    proto::CheckRequest {
        principal: Some(proto::EntityRef {
            r#type: type_name.into(),
            id: id.into(),
        }),
        action: action.into(),
        resource: Some(proto::EntityRef {
            r#type: resource_type.into(),
            id: resource_id.into(),
        }),
        ..proto::CheckRequest::default()
    }
    .encode_to_vec()
}

fn valid_envoy(peer: &str, method: &str, path: &str) -> Vec<u8> {
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    envoy_types::ext_authz::v3::pb::CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: peer.into(),
                ..Peer::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
    .encode_to_vec()
}

/// Bytes that are sometimes anything and usually a well-formed request with a few bytes
/// flipped, cut or inserted.
fn mutated(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let edits =
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..4);
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..256),
        4 => (valid, edits).prop_map(|(mut bytes, edits)| {
            for (at, byte, kind) in edits {
                if bytes.is_empty() {
                    break;
                }
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] ^= byte,
                    1 => bytes.truncate(i),
                    _ => bytes.insert(i, byte),
                }
            }
            bytes
        }),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_500)
}

#[test]
fn no_decoder_panics_or_allows_a_principal_the_facts_do_not_know() {
    let target = Target::new();
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let grpc = mutated(
        (
            0..PRINCIPALS.len(),
            prop::sample::select(vec!["read", "update", "export", "x"]),
            prop::sample::select(vec![
                "Dataset::sales-2026",
                "Config::payments-api",
                "Tool::vendor-portal",
            ]),
        )
            .prop_map(|(p, a, r)| valid_check(p, a, r)),
    );
    proptest!(config.clone(), |(bytes in grpc)| target.grpc(&bytes));
    let envoy = mutated(
        (
            prop::sample::select(vec![
                "spiffe://prod.example.com/ns/deploy/sa/deploy-bot",
                "spiffe://prod.example.com/ns/deploy/sa/ghost",
                "",
            ]),
            prop::sample::select(vec!["GET", "PUT", "get"]),
            prop::sample::select(vec![
                "/datasets/sales-2026",
                "/configs/payments-api",
                "/datasets/../configs/payments-api",
                "/%64atasets/x",
            ]),
        )
            .prop_map(|(peer, method, path)| valid_envoy(peer, method, path)),
    );
    proptest!(config.clone(), |(bytes in envoy)| target.ext_authz(&bytes));
    let authzen = mutated(
        (
            0..PRINCIPALS.len(),
            prop::sample::select(vec!["read", "update"]),
        )
            .prop_map(|(p, a)| {
                let (type_name, id) = PRINCIPALS[p];
                serde_json::json!({
                    "subject": {"type": type_name, "id": id, "properties": {"roles": [null, 1]}},
                    "action": {"name": a},
                    "resource": {"type": "Dataset", "id": "sales-2026"},
                    "context": {"justification": "fuzz", "n": 9007199254740993_i64},
                })
                .to_string()
                .into_bytes()
            }),
    );
    proptest!(config, |(body in authzen)| target.authzen(body));
    let allows = target.allows.each_ref().map(std::cell::Cell::get);
    println!("allows (grpc, ext_authz, authzen): {allows:?}");
    assert!(allows.iter().all(|n| *n > 0), "{allows:?}");
}
