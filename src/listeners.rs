//! The TCP side of every listener: a bounded number of connections (past it, new ones wait in
//! the kernel's backlog), an idle timeout, TCP_NODELAY, and accept errors (EMFILE, ...) met with
//! a backoff instead of a busy loop; with TLS (`tls`), the handshake (bounded in time, off the
//! accept loop) and, for mutual TLS, the caller's identity held to the listener's allow-list.
//! Handlers find the peer as `PeerInfo` among a request's extensions. The gRPC listeners take the accepted connections as a
//! stream; the HTTP listeners (AuthZEN, metrics) are served here with hyper, which adds a header
//! read timeout for HTTP/1 and keepalive pings for HTTP/2.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// The limits every listener holds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, at most.
    pub max_connections: usize,
    /// A connection with no bytes read or written for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/1 (AuthZEN, metrics): the time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// HTTP/2 (AuthZEN, metrics): a keepalive ping this often, and this long to answer it.
    pub http2_keepalive: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            idle_timeout: Duration::from_secs(300),
            header_read_timeout: Duration::from_secs(10),
            http2_keepalive: Duration::from_secs(60),
        }
    }
}

/// What one listener counts; read at scrape time.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    pub accepted: AtomicU64,
    pub closed: AtomicU64,
    pub idle_closed: AtomicU64,
    pub accept_errors: AtomicU64,
    /// Times the listener stopped accepting because it held `max_connections`.
    pub at_limit: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    /// Callers with a valid certificate that the allow-list does not hold.
    pub callers_refused: AtomicU64,
}

/// How a listener meets its callers: plaintext, or TLS with the certificates in force and, for
/// mutual TLS, the callers it serves.
#[derive(Clone)]
pub struct Security {
    /// The listener's name, for logs.
    pub listener: &'static str,
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    pub allowed: crate::tls::AllowedCallers,
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The identity in the caller's verified certificate (mutual TLS), if any.
    pub identity: Option<Arc<str>>,
    /// The certificate field `identity` was read from.
    pub identity_from: Option<crate::tls::IdentityField>,
}

impl PeerInfo {
    /// The caller as decisions record it.
    pub fn caller(&self) -> warrant_domain::Caller {
        warrant_domain::Caller {
            address: self.remote.map(|address| address.to_string()),
            identity: self.identity.clone(),
            identity_from: self.identity_from.map(crate::tls::IdentityField::as_str),
        }
    }
}

/// An accepted connection, plaintext or after its TLS handshake.
pub enum Stream {
    Plain(Connection),
    Tls(
        Box<tokio_rustls::server::TlsStream<Connection>>,
        Option<(Arc<str>, crate::tls::IdentityField)>,
    ),
}

impl Stream {
    pub fn peer(&self) -> PeerInfo {
        match self {
            Stream::Plain(connection) => PeerInfo {
                remote: connection.remote,
                identity: None,
                identity_from: None,
            },
            Stream::Tls(stream, identity) => PeerInfo {
                remote: stream.get_ref().0.remote,
                identity: identity.as_ref().map(|(name, _)| Arc::clone(name)),
                identity_from: identity.as_ref().map(|(_, from)| *from),
            },
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(connection) => Pin::new(connection).poll_read(cx, buf),
            Stream::Tls(stream, _) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(connection) => Pin::new(connection).poll_write(cx, data),
            Stream::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(connection) => Pin::new(connection).poll_flush(cx),
            Stream::Tls(stream, _) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(connection) => Pin::new(connection).poll_shutdown(cx),
            Stream::Tls(stream, _) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(connection) => Pin::new(connection).poll_write_vectored(cx, bufs),
            Stream::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(connection) => connection.is_write_vectored(),
            Stream::Tls(stream, _) => stream.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Stream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer()
    }
}

/// The peer of a gRPC call (`PeerInfo`, put among its extensions by the listener).
pub fn peer_of<T>(request: &tonic::Request<T>) -> PeerInfo {
    request
        .extensions()
        .get::<PeerInfo>()
        .cloned()
        .unwrap_or_default()
}

impl ListenerCounters {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.accepted
            .load(Ordering::Relaxed)
            .saturating_sub(self.closed.load(Ordering::Relaxed))
    }
}

/// An accepted connection: holds its place among `max_connections` until dropped, and fails
/// its reads once it has been idle for the idle timeout.
pub struct Connection {
    stream: TcpStream,
    remote: Option<SocketAddr>,
    _permit: OwnedSemaphorePermit,
    counters: Arc<ListenerCounters>,
    idle_timeout: Duration,
    last_active: Instant,
    idle: Pin<Box<Sleep>>,
}

impl Connection {
    fn active(&mut self) {
        self.last_active = Instant::now();
    }

    /// `Ready` once the connection has been idle for the timeout (the timer is moved on, not
    /// reset, on activity: one timer per connection, re-armed only when it fires).
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.idle.as_mut().poll(cx));
            let deadline = self.last_active + self.idle_timeout;
            if deadline <= Instant::now() {
                return Poll::Ready(());
            }
            self.idle.as_mut().reset(deadline);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.counters.closed.fetch_add(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.poll_idle(cx) {
                Poll::Ready(()) => {
                    self.counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle past the idle timeout",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.stream).poll_write(cx, data));
        if written.as_ref().is_ok_and(|n| *n > 0) {
            self.active();
        }
        Poll::Ready(written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, bufs));
        if written.as_ref().is_ok_and(|n| *n > 0) {
            self.active();
        }
        Poll::Ready(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts connections on `listener` within `limits` until `stop` is cancelled, and hands each
/// to the returned channel: at once in plaintext, after its handshake with TLS (which runs in a
/// task of its own, within `limits.header_read_timeout`, so a slow client holds up no other).
pub fn accept(
    listener: TcpListener,
    limits: ConnectionLimits,
    counters: Arc<ListenerCounters>,
    security: Security,
    stop: CancellationToken,
) -> tokio::sync::mpsc::Receiver<io::Result<Stream>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(5);
        loop {
            let permit = match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    counters.at_limit.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        permit = Arc::clone(&slots).acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => return,
                        },
                        () = stop.cancelled() => return,
                    }
                }
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stop.cancelled() => return,
                () = sender.closed() => return,
            };
            let (stream, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or memory, or an aborted handshake: try again later
                    // rather than at once, so the process does not spin.
                    counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, ?backoff, "accepting a connection failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            backoff = Duration::from_millis(5);
            let _ = stream.set_nodelay(true);
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            let connection = Connection {
                stream,
                remote: Some(remote),
                _permit: permit,
                counters: Arc::clone(&counters),
                idle_timeout: limits.idle_timeout,
                last_active: Instant::now(),
                idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            };
            let Some(tls) = &security.tls else {
                if sender.send(Ok(Stream::Plain(connection))).await.is_err() {
                    return;
                }
                continue;
            };
            let acceptor = tls.acceptor();
            let mutual = tls.mutual();
            let (sender, counters, security) =
                (sender.clone(), Arc::clone(&counters), security.clone());
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(limits.header_read_timeout, acceptor.accept(connection))
                        .await;
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        counters
                            .tls_handshake_failures
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(listener = security.listener, ?remote, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        counters
                            .tls_handshake_failures
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            listener = security.listener,
                            ?remote,
                            "TLS handshake timed out"
                        );
                        return;
                    }
                };
                let identity = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    // (The handshake refused a certificate whose names are in error.)
                    .and_then(|leaf| crate::tls::identity_of(leaf).ok().flatten())
                    .map(|(name, from)| (Arc::<str>::from(name), from));
                if mutual {
                    let admitted = identity
                        .as_ref()
                        .is_some_and(|(identity, _)| security.allowed.admits(identity));
                    if !admitted {
                        counters.callers_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(listener = security.listener, ?remote, identity = ?identity, "caller refused: its identity is not on the listener's allow-list");
                        return;
                    }
                }
                let _ = sender
                    .send(Ok(Stream::Tls(Box::new(stream), identity)))
                    .await;
            });
        }
    });
    receiver
}

/// Serves `router` over HTTP/1.1 and HTTP/2 on `listener` within `limits` until `stop` is
/// cancelled; then lets requests in flight finish for up to `grace`. Handlers see the peer as
/// axum's `ConnectInfo<SocketAddr>`.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    counters: Arc<ListenerCounters>,
    security: Security,
    stop: CancellationToken,
    grace: Duration,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let mut connections = accept(listener, limits, counters, security, stop.clone());
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive)
        .keep_alive_timeout(limits.http2_keepalive);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let connection = tokio::select! {
            connection = connections.recv() => connection,
            () = stop.cancelled() => break,
        };
        let Some(Ok(connection)) = connection else {
            break;
        };
        let peer = connection.peer();
        let address = peer
            .remote
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let router = router.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(address));
                request.extensions_mut().insert(peer.clone());
                router.clone().oneshot(request)
            },
        );
        let serving = builder
            .serve_connection_with_upgrades(TokioIo::new(connection), service)
            .into_owned();
        let serving = graceful.watch(serving);
        tokio::spawn(async move {
            // A client that goes away or idles out ends its connection; nothing to report.
            let _ = serving.await;
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after {grace:?}; stopping anyway");
    }
}

/// An accepted connection stream for tonic's `serve_with_incoming_shutdown`.
pub fn incoming(
    receiver: tokio::sync::mpsc::Receiver<io::Result<Stream>>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Stream>> {
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}
