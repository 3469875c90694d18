//! Verified credentials against the real server: JWTs signed in the test (ES256, EdDSA) with keys
//! in a JWKS file the configuration names. A valid token for the named principal is recorded by
//! its issuer, subject and hash (never the token); each way a token can be wrong is a deny with
//! its own reason; a principal type that requires a credential is denied without one; a key
//! added to the file is used without a restart; a cached answer never outlives its token.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;

use crate::common::{Server, request};
use warrant_proto as proto;

pub(crate) const ISSUER: &str = "https://issuer.test";

pub(crate) struct Key {
    pair: KeyPair,
    kid: &'static str,
    algorithm: Algorithm,
}

impl Key {
    pub(crate) fn new(kid: &'static str, algorithm: Algorithm) -> Key {
        let scheme = match algorithm {
            Algorithm::EdDSA => &rcgen::PKCS_ED25519,
            _ => &rcgen::PKCS_ECDSA_P256_SHA256,
        };
        Key {
            pair: KeyPair::generate_for(scheme).unwrap(),
            kid,
            algorithm,
        }
    }

    pub(crate) fn jwk(&self) -> serde_json::Value {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let raw = self.pair.public_key_raw();
        match self.algorithm {
            Algorithm::EdDSA => serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": b64(raw), "kid": self.kid, "alg": "EdDSA",
            }),
            _ => serde_json::json!({
                "kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
                "kid": self.kid, "alg": "ES256",
            }),
        }
    }

    pub(crate) fn sign(&self, claims: &serde_json::Value) -> String {
        let pem = self.pair.serialize_pem();
        let key = match self.algorithm {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        };
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.to_owned());
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

fn now_seconds() -> i64 {
    use warrant_domain::clock::Clock as _;
    warrant_domain::clock::SystemClock.now().0 / 1000
}

pub(crate) fn claims(sub: &str, exp_in: i64) -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER, "sub": sub, "aud": "warrant", "exp": now_seconds() + exp_in,
        "jti": format!("jti-{sub}-{exp_in}"),
    })
}

/// A JWKS file with `key` and a configuration with one issuer of it (`before` goes first in the
/// file, `issuer_extra` into the issuer's table): the folder, the JWKS and the configuration.
fn issuer_files(
    key: &Key,
    before: &str,
    issuer_extra: &str,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let files = tempfile::tempdir().unwrap();
    let jwks = files.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({"keys": [key.jwk()]}).to_string()).unwrap();
    let config = files.path().join("warrant.toml");
    std::fs::write(
        &config,
        format!(
            "{before}\n[[credentials.issuers]]\nissuer = \"{ISSUER}\"\njwks_file = \"{}\"\nprincipal = \"ApiKey::{{sub}}\"\n{issuer_extra}",
            jwks.display()
        ),
    )
    .unwrap();
    (files, jwks, config)
}

fn read_with(token: &str) -> proto::CheckRequest {
    let mut check = request("ApiKey::pipeline-etl", "read", "Dataset::sales-2026", "");
    check.credential = token.to_owned();
    check
}

type Client = proto::authorizer_client::AuthorizerClient<tonic::transport::Channel>;

/// pipeline-etl reads sales-2026 with `token`.
async fn read_under(client: &mut Client, token: &str) -> proto::CheckResponse {
    client.check(read_with(token)).await.unwrap().into_inner()
}

fn assert_allowed(answer: &proto::CheckResponse) {
    assert_eq!(
        answer.decision,
        proto::Decision::Allow as i32,
        "{:?}",
        answer.reasons
    );
}

#[tokio::test]
async fn credentials_are_verified_at_decision_time_and_each_failure_has_its_reason() {
    let es = Key::new("k1", Algorithm::ES256);
    let (_files, jwks, config) = issuer_files(
        &es,
        "[credentials]\nrequired_for = [\"Agent\"]\n",
        "audiences = [\"warrant\"]\nalgorithms = [\"ES256\", \"EdDSA\"]\nclock_skew_seconds = 5\n",
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let mut client = server.client().await;

    // A valid token for the principal the request names.
    let token = es.sign(&claims("pipeline-etl", 600));
    let answer = read_under(&mut client, &token).await;
    assert_allowed(&answer);
    let record = server.record(&answer.decision_id).await;
    let credential = &record["credential"];
    assert_eq!(credential["issuer"], ISSUER);
    assert_eq!(credential["subject"], "pipeline-etl");
    assert_eq!(credential["key_id"], "k1");
    assert_eq!(credential["jti"], "jti-pipeline-etl-600");
    assert!(
        credential["token_sha256"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(
        !record.to_string().contains(&token),
        "the token itself is on record"
    );
    // Cached for the same token, never past its expiry.
    let again = read_under(&mut client, &token).await;
    assert!(again.provenance.unwrap().answered_from_cache);
    let until = answer.valid_until.unwrap().seconds;
    assert!(until <= now_seconds() + 600, "valid until {until}");
    let short = es.sign(&claims("pipeline-etl", 10));
    let answer = read_under(&mut client, &short).await;
    assert!(answer.valid_until.unwrap().seconds <= now_seconds() + 10);

    // Each way a token can be wrong, with its reason.
    let other_key = Key::new("k1", Algorithm::ES256);
    let hmac = jsonwebtoken::encode(
        &Header {
            kid: Some("k1".to_owned()),
            ..Header::new(Algorithm::HS256)
        },
        &claims("pipeline-etl", 600),
        &EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    let mut unknown_issuer = claims("pipeline-etl", 600);
    unknown_issuer["iss"] = "https://elsewhere.test".into();
    let mut wrong_audience = claims("pipeline-etl", 600);
    wrong_audience["aud"] = "someone-else".into();
    let mut not_yet = claims("pipeline-etl", 600);
    not_yet["nbf"] = (now_seconds() + 300).into();
    let unknown_kid = Key {
        kid: "k9",
        ..Key::new("k9", Algorithm::ES256)
    };
    let cases = [
        (
            es.sign(&claims("pipeline-expired", 600)),
            "warrant:credential-mismatch",
        ),
        (
            es.sign(&claims("pipeline-etl", -600)),
            "warrant:credential-expired",
        ),
        (es.sign(&not_yet), "warrant:credential-not-yet-valid"),
        (
            es.sign(&wrong_audience),
            "warrant:credential-wrong-audience",
        ),
        (
            es.sign(&unknown_issuer),
            "warrant:credential-unknown-issuer",
        ),
        (
            unknown_kid.sign(&claims("pipeline-etl", 600)),
            "warrant:credential-unknown-key",
        ),
        (
            other_key.sign(&claims("pipeline-etl", 600)),
            "warrant:credential-bad-signature",
        ),
        (hmac, "warrant:credential-algorithm-refused"),
        ("not.a.jwt".to_owned(), "warrant:credential-malformed"),
    ];
    for (token, reason) in cases {
        let answer = read_under(&mut client, &token).await;
        assert_eq!(answer.decision, proto::Decision::Deny as i32);
        assert_eq!(answer.reasons, [reason]);
        let record = server.record(&answer.decision_id).await;
        assert!(record["credential"].is_null());
    }

    // AuthZEN evaluations carry the token in their context.
    let evaluation = |token: &str| {
        serde_json::json!({
            "subject": {"type": "ApiKey", "id": "pipeline-etl"},
            "action": {"name": "read"},
            "resource": {"type": "Dataset", "id": "sales-2026"},
            "context": {"credential": token},
        })
    };
    let answer = crate::authzen::evaluate(
        &server,
        "/access/v1/evaluation",
        &evaluation(&es.sign(&claims("pipeline-etl", 600))),
    )
    .await;
    assert_eq!(answer.status, 200);
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["decision"], true, "{body}");
    let answer = crate::authzen::evaluate(
        &server,
        "/access/v1/evaluation",
        &evaluation(&es.sign(&claims("pipeline-expired", 600))),
    )
    .await;
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["decision"], false);
    assert_eq!(
        body["context"]["reasons"],
        serde_json::json!(["warrant:credential-mismatch"])
    );

    // A principal type that requires a credential is denied without one.
    let agent = request(
        "Agent::procurement-agent",
        "submit_vendor_request",
        "Tool::vendor-portal",
        "TASK-77",
    );
    let answer = client.check(agent).await.unwrap().into_inner();
    assert_eq!(answer.reasons, ["warrant:credential-required"]);

    // A key added to the file (a rotation) is used without a restart: the file is read again for
    // an unknown key id, at most once a second.
    let ed = Key::new("k2", Algorithm::EdDSA);
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [es.jwk(), ed.jwk()]}).to_string(),
    )
    .unwrap();
    let rotated = ed.sign(&claims("pipeline-etl", 600));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let answer = read_under(&mut client, &rotated).await;
        if answer.decision == proto::Decision::Allow as i32 {
            break;
        }
        assert_eq!(answer.reasons, ["warrant:credential-unknown-key"]);
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was never used"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // The token is a bounded field.
    let oversized = "x".repeat(20_000);
    let refused = client.check(read_with(&oversized)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().starts_with("credential: 20000 bytes"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn a_single_use_token_is_accepted_once_even_across_a_restart() {
    let es = Key::new("k1", Algorithm::ES256);
    let (_files, _jwks, config) = issuer_files(&es, "", "single_use = true\n");
    let start = |data: Option<tempfile::TempDir>| {
        let policies = crate::common::bundled_policies();
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policies",
            policies.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ];
        match data {
            Some(data) => Server::start_in(data, &args).unwrap(),
            None => Server::start_with(&args).unwrap(),
        }
    };
    let server = start(None);
    let token = es.sign(&claims("pipeline-etl", 600));
    let first = read_under(&mut server.client().await, &token).await;
    assert_allowed(&first);
    assert!(!first.provenance.unwrap().answered_from_cache);
    let again = read_under(&mut server.client().await, &token).await;
    assert_eq!(again.reasons, ["warrant:credential-replayed"]);
    let mut no_jti = claims("pipeline-etl", 600);
    no_jti.as_object_mut().unwrap().remove("jti");
    let answer = read_under(&mut server.client().await, &es.sign(&no_jti)).await;
    assert_eq!(answer.reasons, ["warrant:credential-malformed"]);

    // Remembered durably: a restarted server refuses it too, and takes a new one.
    let server = start(Some(server.terminate()));
    let replayed = read_under(&mut server.client().await, &token).await;
    assert_eq!(replayed.reasons, ["warrant:credential-replayed"]);
    let fresh = es.sign(&claims("pipeline-etl", 601));
    let answer = read_under(&mut server.client().await, &fresh).await;
    assert_eq!(answer.decision, proto::Decision::Allow as i32);
}

#[tokio::test]
async fn policies_read_the_verified_claims_and_no_caller_can_assert_them() {
    let es = Key::new("k1", Algorithm::ES256);
    let (files, _jwks, config) = issuer_files(&es, "", "");
    // The bundled policies, with the verified claims in the request context and dataset reads
    // only under a token with the datasets:read scope.
    let policies = files.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    crate::common::copy_bundled_policies(&policies);
    let schema = std::fs::read_to_string(policies.join("schema.cedarschema")).unwrap();
    std::fs::write(
        policies.join("schema.cedarschema"),
        schema.replace(
            "type RequestContext = {\n  now: datetime,",
            "type RequestContext = {\n  now: datetime,\n  credential?: { issuer: String, subject: String, scopes: Set<String>, actor?: String, actors?: Set<String> },",
        ),
    )
    .unwrap();
    std::fs::write(
        policies.join("scopes.cedar"),
        "@id(\"dataset-reads-need-the-scope\")\nforbid (principal, action == Action::\"read\", resource)\nunless { context has credential && context.credential.scopes.contains(\"datasets:read\") };\n@id(\"no-reads-through-the-intern-agent\")\nforbid (principal, action == Action::\"read\", resource)\nwhen { context has credential && context.credential has actors && context.credential.actors.contains(\"intern-agent\") };\n",
    )
    .unwrap();
    let server = Server::start_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        policies.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ])
    .unwrap();
    let mut client = server.client().await;
    let mut scoped = claims("pipeline-etl", 600);
    scoped["scope"] = "openid datasets:read".into();
    let answer = read_under(&mut client, &es.sign(&scoped)).await;
    assert_allowed(&answer);
    let unscoped = read_under(&mut client, &es.sign(&claims("pipeline-etl", 600))).await;
    assert_eq!(unscoped.reasons, ["dataset-reads-need-the-scope"]);
    // A delegation chain (RFC 8693 `act`): the current actor first, on record in order, and
    // readable by policies wherever it is in the chain.
    let mut delegated = scoped.clone();
    delegated["act"] = serde_json::json!({"sub": "triage-agent", "act": {"sub": "orchestrator"}});
    let answer = read_under(&mut client, &es.sign(&delegated)).await;
    assert_allowed(&answer);
    let record = server.record(&answer.decision_id).await;
    assert_eq!(
        record["credential"]["actors"],
        serde_json::json!(["triage-agent", "orchestrator"])
    );
    delegated["act"]["act"]["act"] = serde_json::json!({"sub": "intern-agent"});
    let answer = read_under(&mut client, &es.sign(&delegated)).await;
    assert_eq!(answer.reasons, ["no-reads-through-the-intern-agent"]);
    delegated["act"] = serde_json::json!({"client_id": "no-subject"});
    let answer = read_under(&mut client, &es.sign(&delegated)).await;
    assert_eq!(answer.reasons, ["warrant:credential-malformed"]);
    let mut asserted = read_with(&es.sign(&claims("pipeline-etl", 600)));
    asserted.context = crate::common::context(
        serde_json::json!({"credential": {"issuer": ISSUER, "subject": "pipeline-etl", "scopes": ["datasets:read"]}}),
    );
    let refused = client.check(asserted).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().starts_with("context.credential"),
        "{}",
        refused.message()
    );
}

/// A JWKS served over HTTPS by the test: the document can be replaced, and the server can
/// answer 503 (an outage). Counts the fetches.
struct JwksServer {
    address: std::net::SocketAddr,
    document: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    /// Serves on a runtime of its own, so that a test blocked starting Warrant (which fetches
    /// the keys as it starts) does not block it.
    fn start(ca: &crate::tls::Authority) -> JwksServer {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (cert, key) = ca.server("jwks");
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap(),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let document = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (served, counted) = (document.clone(), fetches.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        std::thread::spawn(move || {
            runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, served, counted) =
                    (acceptor.clone(), served.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && tls.read(&mut byte).await.unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let answer = match served.lock().unwrap().clone() {
                        // Chunked, as many servers send a document of unknown length.
                        Some(body) => format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                            body.len()
                        ),
                        None => "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_owned(),
                    };
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        })
        });
        JwksServer {
            address,
            document,
            fetches,
        }
    }

    fn serve(&self, keys: &[&Key]) {
        let keys: Vec<_> = keys.iter().map(|key| key.jwk()).collect();
        *self.document.lock().unwrap() = Some(serde_json::json!({ "keys": keys }).to_string());
    }

    fn fail(&self) {
        *self.document.lock().unwrap() = None;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn keys_fetched_over_https_rotate_and_outlive_an_outage_of_their_server() {
    let ca = crate::tls::Authority::new("jwks test CA");
    let elsewhere = crate::tls::Authority::new("another CA");
    let jwks = JwksServer::start(&ca);
    let (k1, k2) = (
        Key::new("k1", Algorithm::ES256),
        Key::new("k2", Algorithm::EdDSA),
    );
    jwks.serve(&[&k1]);
    let files = tempfile::tempdir().unwrap();
    let ca_file = crate::tls::write(files.path(), "ca.pem", &ca.pem);
    let other_ca = crate::tls::write(files.path(), "other.pem", &elsewhere.pem);
    // The second issuer trusts another CA: its fetch fails, it starts without keys, and the
    // server serves all the same.
    let config = crate::tls::write(
        files.path(),
        "warrant.toml",
        &format!(
            "[[credentials.issuers]]\nissuer = \"{ISSUER}\"\njwks_url = \"https://127.0.0.1:{port}/keys\"\njwks_ca = \"{ca}\"\njwks_refresh_seconds = 3600\nprincipal = \"ApiKey::{{sub}}\"\n\n[[credentials.issuers]]\nissuer = \"https://untrusted.test\"\njwks_url = \"https://127.0.0.1:{port}/keys\"\njwks_ca = \"{other}\"\njwks_refresh_seconds = 1\nprincipal = \"ApiKey::{{sub}}\"\n",
            port = jwks.address.port(),
            ca = ca_file.display(),
            other = other_ca.display(),
        ),
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let mut client = server.client().await;
    let first = k1.sign(&claims("pipeline-etl", 600));
    let answer = read_under(&mut client, &first).await;
    assert_allowed(&answer);
    let mut untrusted = claims("pipeline-etl", 600);
    untrusted["iss"] = "https://untrusted.test".into();
    let answer = read_under(&mut client, &k1.sign(&untrusted)).await;
    assert_eq!(answer.reasons, ["warrant:credential-unknown-key"]);
    let scrape = crate::common::scrape(&server).await;
    let reads = |scrape: &prometheus_parse::Scrape, issuer: &str, result: &str| {
        crate::common::value(
            scrape,
            "warrant_jwks_reads_total",
            &[("issuer", issuer), ("result", result)],
        )
    };
    assert!(reads(&scrape, ISSUER, "success") >= 1.0);
    assert!(reads(&scrape, "https://untrusted.test", "failure") >= 1.0);
    assert_eq!(reads(&scrape, "https://untrusted.test", "success"), 0.0);

    // A rotation: k2 replaces k1 at the issuer. A token under k2 is verified at once (its
    // unknown key id makes the keys fetched again); a new token under the withdrawn k1 is not.
    jwks.serve(&[&k2]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let answer = read_under(&mut client, &k2.sign(&claims("pipeline-etl", 600))).await;
    assert_allowed(&answer);
    let answer = read_under(&mut client, &k1.sign(&claims("pipeline-etl", 599))).await;
    assert_eq!(answer.reasons, ["warrant:credential-unknown-key"]);
    // Nor does the token k1 signed before, verified (and its decision cached) then.
    let answer = read_under(&mut client, &first).await;
    assert_eq!(answer.reasons, ["warrant:credential-unknown-key"]);

    // Keys are fetched again on their own, every second for the untrusted issuer (each time
    // failing its certificate check).
    let before = reads(
        &crate::common::scrape(&server).await,
        "https://untrusted.test",
        "failure",
    );
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let after = reads(
        &crate::common::scrape(&server).await,
        "https://untrusted.test",
        "failure",
    );
    assert!(
        after >= before + 1.0,
        "not fetched again: {before} then {after}"
    );

    // An outage: the keys held keep verifying, and the failures are counted.
    jwks.fail();
    let fetches = jwks.fetches();
    let k3 = Key::new("k3", Algorithm::ES256);
    let answer = read_under(&mut client, &k3.sign(&claims("pipeline-etl", 600))).await;
    assert_eq!(answer.reasons, ["warrant:credential-unknown-key"]);
    assert!(
        jwks.fetches() > fetches,
        "an unknown key id fetched nothing"
    );
    let answer = read_under(&mut client, &k2.sign(&claims("pipeline-etl", 598))).await;
    assert_allowed(&answer);
    let scrape = crate::common::scrape(&server).await;
    assert!(reads(&scrape, ISSUER, "failure") >= 1.0);
}

#[tokio::test]
async fn an_approval_request_needs_the_credential_a_check_would() {
    let es = Key::new("k1", Algorithm::ES256);
    let (_files, _jwks, config) =
        issuer_files(&es, "[credentials]\nrequired_for = [\"ApiKey\"]\n", "");
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let mut client = server.client().await;
    let ask = |credential: &str| proto::RequestApprovalRequest {
        identity: crate::common::entity("ApiKey", "pipeline-etl"),
        action: "read".to_owned(),
        resource: crate::common::entity("Dataset", "sales-2026"),
        justification: "quarter close".to_owned(),
        duration_seconds: 600,
        credential: credential.to_owned(),
        ..proto::RequestApprovalRequest::default()
    };
    let refused = client.request_approval(ask("")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(refused.message(), "warrant:credential-required");
    let someone_else = es.sign(&claims("pipeline-expired", 600));
    let refused = client
        .request_approval(ask(&someone_else))
        .await
        .unwrap_err();
    assert_eq!(refused.message(), "warrant:credential-mismatch");
    let filed = client
        .request_approval(ask(&es.sign(&claims("pipeline-etl", 600))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filed.state, "pending");
}

/// Waits up to 5 s for `check` to give `reason` for the token.
async fn until_refused(client: &mut Client, token: &str, reason: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let answer = read_under(client, token).await;
        if answer.reasons == [reason] {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {:?}, not {reason}",
            answer.reasons
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_key_withdrawn_from_a_jwks_file_stops_its_tokens_cached_or_new() {
    // Watched: the file is polled, and a key that leaves it stops verifying, also for a token
    // verified (and a decision cached) before; a key replaced under the same kid too.
    let k1 = Key::new("k1", Algorithm::ES256);
    let k2 = Key::new("k2", Algorithm::EdDSA);
    let (_files, jwks, config) = issuer_files(&k1, "[credentials]\njwks_file_poll_ms = 100\n", "");
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [k1.jwk(), k2.jwk()]}).to_string(),
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let mut client = server.client().await;
    let seen = k1.sign(&claims("pipeline-etl", 600));
    assert_allowed(&read_under(&mut client, &seen).await);
    let again = read_under(&mut client, &seen).await;
    assert!(again.provenance.unwrap().answered_from_cache);
    let unseen = k1.sign(&claims("pipeline-etl", 599));
    let under_k2 = k2.sign(&claims("pipeline-etl", 600));
    assert_allowed(&read_under(&mut client, &under_k2).await);

    std::fs::write(&jwks, serde_json::json!({"keys": [k2.jwk()]}).to_string()).unwrap();
    until_refused(&mut client, &seen, "warrant:credential-unknown-key").await;
    let answer = read_under(&mut client, &unseen).await;
    assert_eq!(answer.reasons, ["warrant:credential-unknown-key"]);
    assert_allowed(&read_under(&mut client, &under_k2).await);

    // Another key under k2's kid: what the old k2 signed no longer verifies.
    let impostor = Key::new("k2", Algorithm::EdDSA);
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [impostor.jwk()]}).to_string(),
    )
    .unwrap();
    until_refused(&mut client, &under_k2, "warrant:credential-bad-signature").await;
    assert_allowed(&read_under(&mut client, &impostor.sign(&claims("pipeline-etl", 600))).await);
    let scrape = crate::common::scrape(&server).await;
    assert_eq!(
        crate::common::value(
            &scrape,
            "warrant_jwks_key_set_changes_total",
            &[("issuer", ISSUER)]
        ),
        2.0
    );
    drop(server);

    // Not polled (once an hour): `warrant reload` reads the keys again at once.
    let (_files, jwks, config) =
        issuer_files(&k1, "[credentials]\njwks_file_poll_ms = 3600000\n", "");
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let mut client = server.client().await;
    assert_allowed(&read_under(&mut client, &seen).await);
    std::fs::write(&jwks, serde_json::json!({"keys": [k2.jwk()]}).to_string()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_allowed(&read_under(&mut client, &seen).await);
    server
        .admin_client()
        .await
        .reload_policies(proto::ReloadPoliciesRequest {})
        .await
        .unwrap();
    let answer = read_under(&mut client, &seen).await;
    assert_eq!(answer.reasons, ["warrant:credential-unknown-key"]);
}

#[tokio::test]
async fn a_subject_is_put_into_the_principal_template_never_parsed() {
    let key = Key::new("k1", Algorithm::ES256);
    let (_files, _jwks, config) = issuer_files(&key, "", "");
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let mut client = server.client().await;
    // `"pipeline-etl"` with its quotes is another subject than pipeline-etl.
    for subject in [
        "\"pipeline-etl\"",
        "x::pipeline-etl",
        "ApiKey::\"pipeline-etl\"",
    ] {
        let token = key.sign(&claims(subject, 600));
        let answer = read_under(&mut client, &token).await;
        assert_eq!(
            answer.reasons,
            ["warrant:credential-mismatch"],
            "subject {subject}"
        );
    }
    assert_allowed(&read_under(&mut client, &key.sign(&claims("pipeline-etl", 600))).await);
}
