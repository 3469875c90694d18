//! TLS and mutual TLS on the real server, with certificates made for each test (rcgen): a caller
//! with a certificate from the client CA whose identity the listener allows is served and
//! recorded by that identity; no certificate, another CA's, an identity not allowed, or
//! plaintext are refused at the handshake and counted; the HTTP listeners serve TLS too; the
//! server's certificate is replaced without a restart; plaintext beyond loopback is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::{Server, pipeline_read};
use warrant_proto as proto;

/// A certificate authority that signs the server's and the callers' certificates.
pub(crate) struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) pem: String,
}

impl Authority {
    pub(crate) fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Authority {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate and its key, PEM.
    fn sign(&self, common_name: &str, sans: Vec<SanType>) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub(crate) fn server(&self, common_name: &str) -> (String, String) {
        self.sign(
            common_name,
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
            ],
        )
    }

    fn caller(&self, spiffe_id: &str) -> (String, String) {
        self.sign("caller", vec![SanType::URI(spiffe_id.try_into().unwrap())])
    }
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const EDGE: &str = "spiffe://test.example/ns/edge/sa/envoy";
const AGENT: &str = "spiffe://test.example/ns/agents/sa/triage";

/// A server on the bundled policies with TLS on every listener and mutual TLS whose Check
/// listener serves only the edge's identities.
fn start(ca: &Authority, files: &Path) -> Server {
    let (cert, key) = ca.server("warrant-1");
    let cert = write(files, "server.pem", &cert);
    let key = write(files, "server.key", &key);
    let client_ca = write(files, "client-ca.pem", &ca.pem);
    let config = write(
        files,
        "warrant.toml",
        "[allowed_callers]\ncheck = [\"spiffe://test.example/ns/edge/*\"]\n",
    );
    // The bundled policies, with `caller` in the request context and reads only through the edge.
    let policies = files.join("policies");
    std::fs::create_dir(&policies).unwrap();
    crate::common::copy_bundled_policies(&policies);
    let schema = std::fs::read_to_string(policies.join("schema.cedarschema")).unwrap();
    let schema = schema.replace(
        "type RequestContext = {\n  now: datetime,",
        "type RequestContext = {\n  now: datetime,\n  caller?: String,",
    );
    std::fs::write(policies.join("schema.cedarschema"), schema).unwrap();
    write(
        &policies,
        "edge.cedar",
        &format!(
            "@id(\"reads-only-through-the-edge\")\nforbid (principal, action == Action::\"read\", resource)\nunless {{ context has caller && context.caller == \"{EDGE}\" }};\n"
        ),
    );
    Server::start_with(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--policies",
        policies.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-client-ca",
        client_ca.to_str().unwrap(),
        "--tls-reload-ms",
        "100",
    ])
    .unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"))
}

/// A gRPC channel over TLS, presenting `identity` if given.
async fn channel(
    address: &str,
    ca: &Authority,
    identity: Option<&(String, String)>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    tonic::transport::Channel::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn check_over(
    channel: tonic::transport::Channel,
) -> Result<proto::CheckResponse, tonic::Status> {
    proto::authorizer_client::AuthorizerClient::new(channel)
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .map(tonic::Response::into_inner)
}

/// The TLS configuration of a raw client (for the HTTP listeners and for reading the server's
/// certificate).
fn raw_client(ca: &Authority, identity: &(String, String)) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(identity.0.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// An HTTP/1.1 GET over TLS: the whole response, status line first.
async fn https_get(address: &str, path: &str, connector: &tokio_rustls::TlsConnector) -> String {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut page = String::new();
    tls.read_to_string(&mut page).await.unwrap_or_default();
    page
}

/// The common name in the certificate the server presents now.
async fn served_common_name(address: &str, connector: &tokio_rustls::TlsConnector) -> String {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
    let common_name = parsed.subject().iter_common_name().next().unwrap();
    common_name.as_str().unwrap().to_owned()
}

#[tokio::test]
async fn mutual_tls_serves_allowed_callers_records_who_they_are_and_refuses_the_rest() {
    let ca = Authority::new("warrant test CA");
    let files = tempfile::tempdir().unwrap();
    let server = start(&ca, files.path());
    let edge = ca.caller(EDGE);

    // An allowed caller is served, and its identity is on record.
    let answer = check_over(channel(&server.addr, &ca, Some(&edge)).await.unwrap())
        .await
        .unwrap();
    assert_eq!(answer.decision, proto::Decision::Allow as i32);
    let mut log = proto::decision_log_client::DecisionLogClient::with_interceptor(
        channel(&server.admin, &ca, Some(&edge)).await.unwrap(),
        warrant::cli::admin::AddToken::bearer(&server.admin_token()).unwrap(),
    );
    let record = log
        .get_decision(proto::GetDecisionRequest {
            decision_id: answer.decision_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let record: serde_json::Value = serde_json::from_str(&record.record_json).unwrap();
    assert_eq!(record["caller_identity"], EDGE);
    assert_eq!(record["caller_identity_from"], "uri_san");

    // Policies read the verified identity as `context.caller`: another allowed caller is denied
    // by the policy that wants reads through the edge; no caller can assert it.
    let canary = ca.caller("spiffe://test.example/ns/edge/sa/canary");
    let answer = check_over(channel(&server.addr, &ca, Some(&canary)).await.unwrap())
        .await
        .unwrap();
    assert_eq!(answer.reasons, ["reads-only-through-the-edge"]);
    let mut asserted = pipeline_read("Dataset::sales-2026");
    asserted.context = crate::common::context(serde_json::json!({"caller": EDGE}));
    let refused = proto::authorizer_client::AuthorizerClient::new(
        channel(&server.addr, &ca, Some(&canary)).await.unwrap(),
    )
    .check(asserted)
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().starts_with("context.caller"),
        "{}",
        refused.message()
    );

    // Refused at the handshake: no certificate, another CA's, an identity the Check listener does
    // not serve, plaintext.
    let other_ca = Authority::new("someone else's CA");
    let refused = [
        channel(&server.addr, &ca, None).await,
        channel(&server.addr, &ca, Some(&other_ca.caller(EDGE))).await,
    ];
    for attempt in refused {
        match attempt {
            Err(_) => {}
            Ok(channel) => assert!(check_over(channel).await.is_err()),
        }
    }
    let agent = ca.caller(AGENT);
    match channel(&server.addr, &ca, Some(&agent)).await {
        Err(_) => {}
        Ok(channel) => assert!(check_over(channel).await.is_err()),
    }
    let plaintext = proto::authorizer_client::AuthorizerClient::connect(server.url()).await;
    match plaintext {
        Err(_) => {}
        Ok(mut client) => assert!(
            client
                .check(pipeline_read("Dataset::sales-2026"))
                .await
                .is_err()
        ),
    }

    // The agent may still use the admin listener (no allow-list there) with the admin token.
    let admin_channel = channel(&server.admin, &ca, Some(&agent)).await.unwrap();
    let mut admin = proto::admin_client::AdminClient::with_interceptor(
        admin_channel,
        warrant::cli::admin::AddToken::bearer(&server.admin_token()).unwrap(),
    );
    let status = admin
        .status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.policy_version.starts_with("sha256:"));

    // The HTTP listeners serve TLS too: metrics over HTTPS with a client certificate.
    let connector = raw_client(&ca, &edge);
    let metrics_address = server
        .metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let page = https_get(&metrics_address, "/metrics", &connector).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page:.200}");
    let count = |name: &str| {
        page.lines()
            .find(|line| line.starts_with(&format!("{name}{{listener=\"check\"}}")))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        count("warrant_tls_handshake_failures_total") >= 2.0,
        "{page}"
    );
    // (At least once: a client may try again on a connection that was closed.)
    assert!(count("warrant_tls_callers_refused_total") >= 1.0, "{page}");

    // The server's certificate is replaced on disk: new connections get the new one, without a
    // restart, and the old connection keeps working.
    let kept = channel(&server.addr, &ca, Some(&edge)).await.unwrap();
    assert_eq!(
        served_common_name(&server.addr, &connector).await,
        "warrant-1"
    );
    let (cert, key) = ca.server("warrant-2");
    // Written aside and renamed into place, as a certificate manager does.
    write(files.path(), "server.key.new", &key);
    write(files.path(), "server.pem.new", &cert);
    std::fs::rename(
        files.path().join("server.key.new"),
        files.path().join("server.key"),
    )
    .unwrap();
    std::fs::rename(
        files.path().join("server.pem.new"),
        files.path().join("server.pem"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_common_name(&server.addr, &connector).await != "warrant-2" {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(check_over(kept).await.is_ok());
    // A broken replacement leaves the last good certificate serving.
    write(files.path(), "server.pem", "not a certificate");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        served_common_name(&server.addr, &connector).await,
        "warrant-2"
    );
    let metrics = https_get(&metrics_address, "/metrics", &connector).await;
    assert!(
        metrics.contains("warrant_tls_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("warrant_tls_reloads_total{result=\"failure\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn plaintext_beyond_loopback_needs_saying_so_and_tls_files_go_together() {
    let policies = crate::common::bundled_policies();
    let policies = policies.to_str().unwrap();
    let refused = Server::start_with(&["serve", "--listen", "0.0.0.0:0", "--policies", policies])
        .err()
        .unwrap();
    assert!(
        refused.contains("listen: 0.0.0.0:0 is not a loopback address"),
        "{refused}"
    );
    let allowed = Server::start_with(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--plaintext-beyond-loopback",
        "true",
        "--policies",
        policies,
    ]);
    assert!(allowed.is_ok());
    let half = Server::start_with(&[
        "serve",
        "--tls-cert",
        "/nonexistent.pem",
        "--policies",
        policies,
    ])
    .err()
    .unwrap();
    assert!(half.contains("tls_key: required with tls_cert"), "{half}");
}

#[tokio::test]
async fn a_spiffe_id_is_taken_only_from_a_uri_san() {
    // Certificates from the trusted client CA whose SPIFFE ID sits where a requester may choose
    // names (the common name, a DNS SAN), or that carry two, are refused at the handshake on
    // every listener; none becomes `context.caller`, and the policy keyed on it never allows.
    let ca = Authority::new("warrant test CA");
    let files = tempfile::tempdir().unwrap();
    let server = start(&ca, files.path());
    let in_common_name = ca.sign(EDGE, Vec::new());
    let in_dns_san = ca.sign("caller", vec![SanType::DnsName(EDGE.try_into().unwrap())]);
    let upper_case_scheme = ca.sign(
        "caller",
        vec![SanType::DnsName(
            "SPIFFE://test.example/ns/edge/sa/envoy".try_into().unwrap(),
        )],
    );
    let two_ids = ca.sign(
        "caller",
        vec![
            SanType::URI(EDGE.try_into().unwrap()),
            SanType::URI(AGENT.try_into().unwrap()),
        ],
    );
    // The same names beside a real SPIFFE ID: still refused.
    let beside_uri = ca.sign(
        EDGE,
        vec![SanType::URI(
            "spiffe://test.example/ns/edge/sa/canary"
                .try_into()
                .unwrap(),
        )],
    );
    for (what, identity) in [
        ("common name", &in_common_name),
        ("DNS SAN", &in_dns_san),
        ("DNS SAN, upper-case scheme", &upper_case_scheme),
        ("two URI SANs", &two_ids),
        ("common name beside a URI SAN", &beside_uri),
    ] {
        for address in [&server.addr, &server.admin] {
            if let Ok(channel) = channel(address, &ca, Some(identity)).await {
                let answer = check_over(channel).await;
                assert!(answer.is_err(), "{what} on {address}: served {answer:?}");
            }
        }
        let tcp = tokio::net::TcpStream::connect(server.authzen_addr())
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        if let Ok(mut tls) = raw_client(&ca, identity).connect(name, tcp).await {
            // (TLS 1.3: the client learns of a refused certificate on its first read.)
            let _ = tls
                .write_all(b"GET /.well-known/authzen-configuration HTTP/1.1\r\nhost: x\r\n\r\n")
                .await;
            let mut page = String::new();
            let _ = tls.read_to_string(&mut page).await;
            assert!(page.is_empty(), "{what} on AuthZEN: {page}");
        }
    }
    let metrics_address = server
        .metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let page = https_get(
        &metrics_address,
        "/metrics",
        &raw_client(&ca, &ca.caller(EDGE)),
    )
    .await;
    let failures: f64 = page
        .lines()
        .filter(|line| line.starts_with("warrant_tls_handshake_failures_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(failures >= 15.0, "{failures} handshake failures counted");
}
