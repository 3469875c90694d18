//! TLS for the listeners (rustls, ring): the server's certificate and key, and with a client CA,
//! mutual TLS that requires a certificate from every caller. TLS 1.2 and 1.3 only, with rustls'
//! default (modern, AEAD-only) cipher suites. The files are read again whenever their contents
//! change (certificates are short-lived: SPIFFE SVIDs rotate hourly); a set that fails to load
//! leaves the last good one serving. The caller's identity is read from its certificate: the
//! SPIFFE ID in its one `spiffe://` URI SAN, else the first DNS SAN, else the subject's common
//! name. A `spiffe://` identity comes only from a URI SAN: a certificate that carries one in a
//! DNS SAN or its common name, or carries two SPIFFE IDs, is refused at the handshake, so no
//! other field can pass for a SPIFFE ID on an allow-list or in a policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Where the server's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct TlsFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates, PEM: with them every caller must present a certificate they issued.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The TLS configuration in force, reloaded when its files change.
pub struct ServerTls {
    files: TlsFiles,
    config: ArcSwap<ServerConfig>,
    /// SHA-256 of the files' contents when `config` was built.
    loaded_from: std::sync::Mutex<[u8; 32]>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl ServerTls {
    /// Loads the files; an error names the file.
    pub fn load(files: TlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        let (config, digest) = build(&files)?;
        Ok(Arc::new(ServerTls {
            files,
            config: ArcSwap::from_pointee(config),
            loaded_from: std::sync::Mutex::new(digest),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }))
    }

    /// Whether callers must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    /// Reads the files again and, if their contents changed, swaps in the configuration they
    /// make. `Ok(false)` when nothing changed; on an error the configuration in force stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let digest = digest_of(&self.files)?;
        let mut loaded_from = self
            .loaded_from
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *loaded_from == digest {
            return Ok(false);
        }
        let (config, digest) = build(&self.files)?;
        self.config.store(Arc::new(config));
        *loaded_from = digest;
        Ok(true)
    }

    /// Checks the files every `every` until `stop`, reloading them when they change.
    pub fn watch(self: &Arc<Self>, every: Duration, stop: tokio_util::sync::CancellationToken) {
        let tls = Arc::clone(self);
        crate::watch::poll("TLS files", every, stop, move || {
            match tls.reload_if_changed() {
                Ok(true) => {
                    tls.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(cert = %tls.files.cert.display(), "TLS certificates reloaded");
                }
                Ok(false) => {}
                Err(error) => {
                    tls.reload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%error, "TLS reload failed; the last good certificates keep serving");
                }
            }
        });
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_path_buf(),
        message: error.to_string(),
    })
}

fn digest_of(files: &TlsFiles) -> Result<[u8; 32], TlsError> {
    let mut hasher = Sha256::new();
    for path in [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let bytes = read(path)?;
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hasher.finalize().into())
}

fn certificates(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |message: String| TlsError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(format!("not PEM certificates: {error}")))?;
    if certs.is_empty() {
        return Err(invalid("holds no PEM certificate".to_owned()));
    }
    Ok(certs)
}

/// The configuration the files make, and the digest of what was read.
fn build(files: &TlsFiles) -> Result<(ServerConfig, [u8; 32]), TlsError> {
    let digest = digest_of(files)?;
    let chain = certificates(&files.cert, &read(&files.cert)?)?;
    let key =
        PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|error| TlsError::Invalid {
            path: files.key.clone(),
            message: format!("not a PEM private key: {error}"),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(path, &read(path)?)? {
                roots.add(ca).map_err(|error| TlsError::Invalid {
                    path: path.clone(),
                    message: format!("not a usable CA certificate: {error}"),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|error| TlsError::Invalid {
                path: path.clone(),
                message: error.to_string(),
            })?;
            builder.with_client_cert_verifier(Arc::new(NamedClientVerifier(verifier)))
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|error| TlsError::Invalid {
            path: files.key.clone(),
            message: format!("does not go with {}: {error}", files.cert.display()),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, digest))
}

/// Which field of a certificate a caller's identity was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityField {
    /// A `spiffe://` URI subject alternative name.
    UriSan,
    /// A DNS subject alternative name.
    DnsSan,
    /// The subject's common name.
    CommonName,
}

impl IdentityField {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityField::UriSan => "uri_san",
            IdentityField::DnsSan => "dns_san",
            IdentityField::CommonName => "common_name",
        }
    }
}

/// Why a certificate's names cannot stand for a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the certificate cannot be read")]
    Unreadable,
    #[error("its {} holds a SPIFFE ID, which only a URI SAN may carry", .0.as_str())]
    SpiffeOutsideUri(IdentityField),
    #[error("it carries more than one SPIFFE ID")]
    SeveralSpiffeIds,
}

/// The scheme of a SPIFFE ID, matched without regard to case (URI schemes are case-blind).
fn is_spiffe(name: &str) -> bool {
    name.get(..9)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("spiffe://"))
}

/// A caller's identity from its certificate and the field it came from: the SPIFFE ID in its
/// URI SAN, else the first DNS SAN, else the subject's common name (`Ok(None)`: none of them).
/// A `spiffe://` value anywhere but a URI SAN, or two SPIFFE IDs, is an error: the handshake
/// refuses such a certificate.
pub fn identity_of(
    certificate: &CertificateDer<'_>,
) -> Result<Option<(String, IdentityField)>, NameError> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref())
        .map_err(|_| NameError::Unreadable)?;
    let names: Vec<GeneralName<'_>> = parsed
        .subject_alternative_name()
        .map_err(|_| NameError::Unreadable)?
        .map(|san| san.value.general_names.clone())
        .unwrap_or_default();
    let mut spiffe_ids = names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) if is_spiffe(uri) => Some(uri.to_string()),
        _ => None,
    });
    let spiffe = spiffe_ids.next();
    if spiffe_ids.next().is_some() {
        return Err(NameError::SeveralSpiffeIds);
    }
    let dns_names: Vec<&str> = names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        })
        .collect();
    if dns_names.iter().any(|dns| is_spiffe(dns)) {
        return Err(NameError::SpiffeOutsideUri(IdentityField::DnsSan));
    }
    let dns = dns_names.first().map(|dns| (*dns).to_owned());
    let mut common_names = Vec::new();
    for cn in parsed.subject().iter_common_name() {
        // A common name that is not text cannot be compared with an allow-list; it is skipped.
        if let Ok(text) = cn.as_str() {
            if is_spiffe(text) {
                return Err(NameError::SpiffeOutsideUri(IdentityField::CommonName));
            }
            common_names.push(text.to_owned());
        }
    }
    Ok(spiffe
        .map(|id| (id, IdentityField::UriSan))
        .or(dns.map(|dns| (dns, IdentityField::DnsSan)))
        .or(common_names
            .into_iter()
            .next()
            .map(|cn| (cn, IdentityField::CommonName))))
}

/// The client CA's verifier, and then Warrant's rule on names: a certificate whose names could
/// pass for a SPIFFE ID they are not (`identity_of`'s errors) fails the handshake.
#[derive(Debug)]
struct NamedClientVerifier(Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl rustls::server::danger::ClientCertVerifier for NamedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        match identity_of(end_entity) {
            Ok(_) => Ok(verified),
            Err(error) => {
                tracing::warn!(%error, "a client certificate refused");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Which callers a listener serves when callers present certificates: an identity listed, or
/// one that starts with an entry ending in `*`. Empty: any caller the client CA vouches for.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct AllowedCallers(pub Vec<String>);

impl AllowedCallers {
    pub fn admits(&self, identity: &str) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|allowed| match allowed.strip_suffix('*') {
                    Some(prefix) => identity.starts_with(prefix),
                    None => identity == allowed,
                })
    }
}

/// A connected gRPC channel to `address`, over TLS when it is `https://`: trusting the CA
/// certificates in `ca` (PEM) or else the system's, and presenting `identity` (certificate and
/// key, PEM) for mutual TLS. (The shell's clients, and a replica's console asking the others.)
pub async fn client_channel(
    address: &str,
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
    server_name: Option<&str>,
) -> anyhow::Result<tonic::transport::Channel> {
    use anyhow::Context as _;
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |path: &Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut endpoint = tonic::transport::Channel::from_shared(address.to_owned())
        .with_context(|| format!("not an address: {address}"))?;
    if address.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = server_name {
            tls = tls.domain_name(name);
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {address}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allow_list_takes_exact_identities_and_prefixes() {
        let allowed = AllowedCallers(vec![
            "spiffe://prod.example.com/ns/edge/sa/envoy".to_owned(),
            "spiffe://prod.example.com/ns/agents/*".to_owned(),
        ]);
        assert!(allowed.admits("spiffe://prod.example.com/ns/edge/sa/envoy"));
        assert!(allowed.admits("spiffe://prod.example.com/ns/agents/sa/triage"));
        assert!(!allowed.admits("spiffe://prod.example.com/ns/edge/sa/envoy2"));
        assert!(!allowed.admits("spiffe://evil.example.com/ns/agents/sa/x"));
        assert!(AllowedCallers::default().admits("anyone"));
    }
}
