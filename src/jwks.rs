//! An issuer's public keys, from a JWKS (JSON Web Key Set): a file, or a document fetched over
//! HTTPS. The keys are held by `kid` between reads. A token whose `kid` is not held makes the
//! keys read again (a rotation), at most once a second, and only by one caller at a time: the
//! others answer from the keys held. Fetched keys are also fetched again every refresh interval
//! by a thread of their own, so a key the issuer withdrew stops verifying within that interval.
//! A fetch that fails keeps the keys held. Symmetric keys in a set are ignored: a public key set
//! with a shared secret in it is a mistake or an attack.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

/// Keys by `kid` (a key without one under "").
pub type KeysByKid = HashMap<String, Arc<DecodingKey>>;

/// The most a JWKS document may weigh.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// How long one fetch may take, connection to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// How soon after one read an unknown `kid` may cause another.
const REREAD_AFTER: Duration = Duration::from_secs(1);

/// Where the keys come from.
pub enum JwksSource {
    File(PathBuf),
    Https(HttpsSource),
}

/// A JWKS URL and the TLS client configuration that fetches it.
pub struct HttpsSource {
    url: String,
    host: String,
    port: u16,
    path: String,
    tls: Arc<rustls::ClientConfig>,
}

impl HttpsSource {
    /// An `https://` URL, trusting the CA certificates in `ca` (PEM) or else the system's.
    pub fn new(url: &str, ca: Option<&Path>) -> Result<HttpsSource, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|error| format!("{url:?} is not a URL: {error}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("{url:?}: only https:// URLs are fetched"));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("{url:?} names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
                for certificate in CertificateDer::pem_slice_iter(&bytes) {
                    let certificate = certificate.map_err(|error| {
                        format!("{}: not PEM certificates: {error}", path.display())
                    })?;
                    roots
                        .add(certificate)
                        .map_err(|error| format!("{}: {error}", path.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for certificate in found.certs {
                    // A system certificate rustls cannot use is skipped, as every client does.
                    let _ = roots.add(certificate);
                }
            }
        }
        if roots.is_empty() {
            return Err("no CA certificate to verify the JWKS server with".to_owned());
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(HttpsSource {
            url: url.to_owned(),
            port: uri.port_u16().unwrap_or(443),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            host,
            tls: Arc::new(tls),
        })
    }

    /// GETs the document: HTTP/1.1 over TLS, bounded in size and time.
    fn fetch(&self) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + FETCH_TIMEOUT;
        let left = || {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| "timed out".to_owned())
        };
        let address = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|error| format!("cannot resolve {}: {error}", self.host))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", self.host))?;
        let tcp = TcpStream::connect_timeout(&address, left()?)
            .map_err(|error| format!("cannot connect to {address}: {error}"))?;
        let name = ServerName::try_from(self.host.clone())
            .map_err(|error| format!("{}: {error}", self.host))?;
        let connection = rustls::ClientConnection::new(Arc::clone(&self.tls), name)
            .map_err(|error| error.to_string())?;
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        let host = if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        stream.sock.set_write_timeout(Some(left()?)).ok();
        stream
            .write_all(
                format!(
                    "GET {} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: warrant\r\n\r\n",
                    self.path
                )
                .as_bytes(),
            )
            .map_err(|error| format!("cannot send the request: {error}"))?;
        let mut received = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            stream.sock.set_read_timeout(Some(left()?)).ok();
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    received.extend_from_slice(&chunk[..n]);
                    if received.len() > MAX_DOCUMENT_BYTES + 16 * 1024 {
                        return Err(format!("more than {MAX_DOCUMENT_BYTES} bytes"));
                    }
                }
                // A server that closes without TLS close_notify after the whole body.
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(error) => return Err(format!("cannot read the answer: {error}")),
            }
        }
        http_body(&received)
    }
}

/// The body of a complete HTTP/1.1 answer, if its status is 200.
fn http_body(received: &[u8]) -> Result<Vec<u8>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(received) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Err("the answer ended in its head".to_owned()),
        Err(error) => return Err(format!("not an HTTP answer: {error}")),
    };
    if response.code != Some(200) {
        return Err(format!("answered with status {:?}", response.code));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &received[head..];
    if header("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        return dechunk(rest);
    }
    match header("content-length") {
        Some(length) => {
            let length: usize = length
                .parse()
                .map_err(|_| format!("content-length {length:?}"))?;
            rest.get(..length)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| "the answer ended before its content-length".to_owned())
        }
        None => Ok(rest.to_vec()),
    }
}

/// A chunked body, put back together.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| "a chunk without its size line".to_owned())?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| "the answer ended in a chunk".to_owned())?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).unwrap_or(&[]);
    }
}

impl JwksSource {
    fn describe(&self) -> String {
        match self {
            JwksSource::File(path) => path.display().to_string(),
            JwksSource::Https(https) => https.url.clone(),
        }
    }

    /// Reads the set's asymmetric keys.
    fn read(&self) -> Result<KeysByKid, String> {
        let bytes = match self {
            JwksSource::File(path) => std::fs::read(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?,
            JwksSource::Https(https) => https
                .fetch()
                .map_err(|error| format!("{}: {error}", https.url))?,
        };
        keys_of(&bytes).map_err(|error| format!("{}: {error}", self.describe()))
    }
}

/// A JWKS document's asymmetric keys by `kid`.
pub fn keys_of(document: &[u8]) -> Result<KeysByKid, String> {
    let set: JwkSet =
        serde_json::from_slice(document).map_err(|error| format!("not a JWKS: {error}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            continue;
        }
        let key =
            DecodingKey::from_jwk(jwk).map_err(|error| format!("a key cannot be read: {error}"))?;
        keys.insert(jwk.common.key_id.clone().unwrap_or_default(), Arc::new(key));
    }
    Ok(keys)
}

/// One issuer's keys, as last read.
pub struct IssuerKeys {
    issuer: String,
    source: JwksSource,
    keys: ArcSwap<KeysByKid>,
    /// When the keys were last read (or a read was tried).
    last_read: Mutex<Option<Instant>>,
    /// A read is under way: other callers do not wait for it.
    reading: AtomicBool,
    pub reads: AtomicU64,
    pub read_failures: AtomicU64,
}

impl IssuerKeys {
    /// Reads the keys once. A file that cannot be read is an error. A URL that cannot be
    /// fetched is logged and counted, and the issuer starts with no keys: its tokens are denied
    /// (`warrant:credential-unknown-key`) until a fetch succeeds, and the rest of Warrant serves.
    pub fn load(issuer: &str, source: JwksSource) -> Result<Arc<IssuerKeys>, String> {
        let keys = IssuerKeys {
            issuer: issuer.to_owned(),
            source,
            keys: ArcSwap::from_pointee(HashMap::new()),
            last_read: Mutex::new(None),
            reading: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            read_failures: AtomicU64::new(0),
        };
        *keys.lock_last_read() = Some(Instant::now());
        match keys.source.read() {
            Ok(read) => {
                keys.reads.fetch_add(1, Ordering::Relaxed);
                keys.keys.store(Arc::new(read));
            }
            Err(message) => match keys.source {
                JwksSource::File(_) => return Err(message),
                JwksSource::Https(_) => {
                    keys.read_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(issuer, %message, "cannot fetch the issuer's keys; its tokens are denied until a fetch succeeds");
                }
            },
        }
        Ok(Arc::new(keys))
    }

    /// Fetches the keys again every `every`, on a thread that ends with the keys.
    pub fn refresh_every(self: &Arc<Self>, every: Duration) {
        let keys: Weak<IssuerKeys> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("warrant-jwks".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let Some(keys) = keys.upgrade() else { return };
                    keys.read_again();
                }
            });
        if let Err(error) = spawned {
            tracing::error!(issuer = %self.issuer, %error, "cannot start refreshing the issuer's keys");
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn lock_last_read(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.last_read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key for `kid`: from the keys held, else from the set read again (a rotation), if it
    /// was not read within the last second and no one else is reading it.
    pub fn key(&self, kid: Option<&str>) -> Option<Arc<DecodingKey>> {
        let kid = kid.unwrap_or("");
        if let Some(key) = self.keys.load().get(kid) {
            return Some(Arc::clone(key));
        }
        let due = self
            .lock_last_read()
            .is_none_or(|at| at.elapsed() >= REREAD_AFTER);
        if due {
            self.read_again();
        }
        self.keys.load().get(kid).cloned()
    }

    /// Reads the set again unless a read is under way; a failure keeps the keys held.
    fn read_again(&self) {
        if self.reading.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.lock_last_read() = Some(Instant::now());
        match self.source.read() {
            Ok(read) => {
                self.reads.fetch_add(1, Ordering::Relaxed);
                self.keys.store(Arc::new(read));
            }
            Err(message) => {
                self.read_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(issuer = %self.issuer, %message, "cannot read the issuer's keys again; keeping the ones held");
            }
        }
        self.reading.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_come_out_of_every_framing() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(http_body(plain).unwrap(), b"hello");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n";
        assert_eq!(http_body(chunked).unwrap(), b"hello");
        let until_close = b"HTTP/1.1 200 OK\r\n\r\nhello";
        assert_eq!(http_body(until_close).unwrap(), b"hello");
        let missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(http_body(missing).unwrap_err().contains("404"));
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello";
        assert!(http_body(short).is_err());
        assert!(http_body(b"HTTP/1.1 200 OK\r\nContent-").is_err());
    }

    #[test]
    fn only_https_urls_are_fetched() {
        assert!(HttpsSource::new("http://idp.example/jwks", None).is_err());
        assert!(HttpsSource::new("not a url", None).is_err());
    }
}
