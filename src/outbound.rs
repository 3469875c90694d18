//! Warrant's own outbound HTTP requests (fetching an issuer's JWKS, calling a webhook): a small
//! blocking HTTP/1.1 client over rustls, for a few requests a minute, not for the decision path.
//! HTTPS verifies the server against the configured CA certificates or the system's; plain HTTP
//! is allowed only to a loopback address. A URL may also refuse local targets (`refusing_local`:
//! the webhook's default): every address its host resolves to is checked when it is sent to, and
//! a loopback, link-local (169.254.0.0/16, where cloud metadata services answer; fe80::/10) or
//! unspecified one is refused, so a host name cannot be pointed there later. Every request is
//! bounded: 3 s from connecting to the last byte, at most 1 MiB back, one request per connection.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

/// The most an answer may weigh.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// How long one request may take, connection to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// A URL Warrant sends requests to, with the TLS client configuration for it (`None`: plain
/// HTTP, which only a loopback address may use).
pub struct Url {
    url: String,
    host: String,
    port: u16,
    path: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether loopback, link-local and unspecified addresses are refused.
    refuse_local: bool,
}

/// Whether `ip` is this machine or its link: loopback, link-local, unspecified (also as an
/// IPv4-mapped IPv6 address).
fn is_local(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_local(IpAddr::V4(v4)),
            None => v6.is_loopback() || v6.is_unicast_link_local() || v6.is_unspecified(),
        },
    }
}

impl Url {
    /// An `https://` URL, trusting the CA certificates in `ca` (PEM) or else the system's; or an
    /// `http://` one to a loopback address (127.0.0.1, ::1, localhost).
    pub fn new(url: &str, ca: Option<&Path>) -> Result<Url, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|error| format!("{url:?} is not a URL: {error}"))?;
        let plain = match uri.scheme_str() {
            Some("https") => false,
            Some("http") => true,
            _ => {
                return Err(format!(
                    "{url:?}: only https:// (or http:// to loopback) URLs"
                ));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("{url:?} names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if plain { 80 } else { 443 });
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        if plain {
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(format!("{url:?}: plain http:// only to a loopback address"));
            }
            return Ok(Url {
                url: url.to_owned(),
                host,
                port,
                path,
                tls: None,
                refuse_local: false,
            });
        }
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
            return Err("no CA certificate to verify the server with".to_owned());
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Url {
            url: url.to_owned(),
            port,
            path,
            host,
            tls: Some(Arc::new(tls)),
            refuse_local: false,
        })
    }

    /// The same URL, refusing to send to a loopback, link-local or unspecified address. An
    /// error now if its host is one (or is `localhost`, or resolves only to such addresses);
    /// each send checks the addresses again.
    pub fn refusing_local(self) -> Result<Url, String> {
        let url = Url {
            refuse_local: true,
            ..self
        };
        if url.host.eq_ignore_ascii_case("localhost") {
            return Err(format!("{:?}: a loopback host is refused", url.url));
        }
        if let Ok(ip) = url.host.parse::<std::net::IpAddr>()
            && is_local(ip)
        {
            return Err(format!(
                "{:?}: {ip} is a loopback or link-local address, refused",
                url.url
            ));
        }
        Ok(url)
    }

    /// The address to connect to: the first the host resolves to that is allowed.
    fn address(&self) -> Result<std::net::SocketAddr, String> {
        let mut resolved = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|error| format!("cannot resolve {}: {error}", self.host))?
            .peekable();
        if resolved.peek().is_none() {
            return Err(format!("{} resolves to no address", self.host));
        }
        resolved
            .find(|address| !(self.refuse_local && is_local(address.ip())))
            .ok_or_else(|| {
                format!(
                    "{} resolves only to loopback or link-local addresses, which are refused",
                    self.host
                )
            })
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// Sends `method` with `body` (JSON) and returns the answer's body if its status is 2xx:
    /// HTTP/1.1, over TLS unless plain loopback, bounded in size and time.
    pub fn send(&self, method: &str, body: Option<&[u8]>) -> Result<Vec<u8>, String> {
        self.send_with(method, &[], body.map(|body| ("application/json", body)))
    }

    /// `send` with more headers (`Authorization`, say) and a body of a given content type.
    pub fn send_with(
        &self,
        method: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + FETCH_TIMEOUT;
        let left = || {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| "timed out".to_owned())
        };
        let address = self.address()?;
        let tcp = TcpStream::connect_timeout(&address, left()?)
            .map_err(|error| format!("cannot connect to {address}: {error}"))?;
        let mut stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|error| format!("{}: {error}", self.host))?;
                let connection = rustls::ClientConnection::new(Arc::clone(tls), name)
                    .map_err(|error| error.to_string())?;
                Box::new(rustls::StreamOwned::new(connection, tcp))
            }
        };
        let host = format!("{}:{}", self.host, self.port);
        stream.socket().set_write_timeout(Some(left()?)).ok();
        let mut request = format!(
            "{method} {} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: warrant\r\n",
            self.path
        )
        .into_bytes();
        for (name, value) in headers {
            if name.contains(['\r', '\n', ':']) || value.contains(['\r', '\n']) {
                return Err(format!("a header that cannot be sent: {name}"));
            }
            request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if let Some((content_type, body)) = body {
            request.extend_from_slice(
                format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body.map(|(_, body)| body).unwrap_or_default());
        stream
            .write_all(&request)
            .map_err(|error| format!("cannot send the request: {error}"))?;
        let mut received = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            stream.socket().set_read_timeout(Some(left()?)).ok();
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

/// A connection, plain or TLS, and the socket under it (for its timeouts).
trait Stream: Read + Write {
    fn socket(&self) -> &TcpStream;
}

impl Stream for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Stream for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

/// The body of a complete HTTP/1.1 answer, if its status is 2xx.
fn http_body(received: &[u8]) -> Result<Vec<u8>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(received) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Err("the answer ended in its head".to_owned()),
        Err(error) => return Err(format!("not an HTTP answer: {error}")),
    };
    if !response.code.is_some_and(|code| (200..300).contains(&code)) {
        // What the server said of it (an OAuth error, say), cut short.
        let said = String::from_utf8_lossy(&received[head..]);
        let said: String = said.chars().take(200).collect();
        return Err(format!("answered with status {:?}: {said}", response.code));
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
    fn plain_http_goes_only_to_loopback() {
        assert!(Url::new("http://127.0.0.1:8080/hook", None).is_ok());
        assert!(Url::new("http://localhost/hook", None).is_ok());
        assert!(Url::new("http://chat.example.com/hook", None).is_err());
        assert!(Url::new("ftp://127.0.0.1/x", None).is_err());
    }

    #[test]
    fn a_url_refusing_local_targets_refuses_loopback_and_link_local_hosts() {
        let url = |host: &str| Url {
            url: format!("https://{host}/hook"),
            host: host.to_owned(),
            port: 443,
            path: "/hook".to_owned(),
            tls: None,
            refuse_local: false,
        };
        for host in [
            "169.254.169.254",
            "127.0.0.1",
            "127.8.9.10",
            "localhost",
            "LocalHost",
            "::1",
            "fe80::1",
            "::ffff:169.254.169.254",
            "0.0.0.0",
            "::",
        ] {
            assert!(url(host).refusing_local().is_err(), "{host}");
        }
        for host in ["10.0.0.5", "192.168.1.2", "chat.example.com", "2001:db8::1"] {
            assert!(url(host).refusing_local().is_ok(), "{host}");
        }
        // A host name is checked on each send, by the addresses it resolves to then.
        let mut named = url("127.0.0.1");
        named.refuse_local = true;
        assert!(named.address().unwrap_err().contains("refused"));
        named.refuse_local = false;
        assert!(named.address().is_ok());
    }
}
