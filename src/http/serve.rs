//! The listener: accepts TCP connections and serves the router on them
//! (HTTP/1.1, and HTTP/2 with prior knowledge) under the limits of CONTRACT §6.
//!
//! A hand-written accept loop on hyper-util instead of `axum::serve`, which
//! has neither a connection limit nor timeouts:
//! - **Connection limit.** A semaphore permit is taken *before* `accept()`,
//!   so connections beyond `[server] max_connections` wait in the kernel's
//!   backlog until one closes (they are neither reset nor accepted and
//!   dropped). The limit is lowered at start to what the descriptor limit
//!   leaves after a reserve for the store and MDM connections, so idle
//!   sockets can never starve those of descriptors.
//! - **Timeouts.** One timer per connection follows its phase: waiting for a
//!   request head (from the accept, or from the first byte of the next
//!   request) must end within `header_read_timeout`; idle between requests
//!   ends after `idle_timeout`; while a request is in flight there is no
//!   deadline here. It covers HTTP/1, HTTP/2 and hyper-util's protocol
//!   sniffing alike, which hyper's own HTTP/1 header timer does not.
//! - **TLS** (`[server] tls_cert`/`tls_key`). The handshake runs in the
//!   connection's own task, never in the accept loop, so a client that
//!   stalls it holds up nobody else; it shares the request-head deadline:
//!   from the accept, handshake and first request head together must end
//!   within `header_read_timeout`. ALPN offers `h2` and `http/1.1`, the
//!   protocols served without TLS. A failed handshake is a client's problem,
//!   logged at DEBUG with the running count (a scanner must not flood the log
//!   at WARN). A client that speaks plain HTTP to the HTTPS port gets a plain
//!   `400` saying so, instead of a reset it cannot explain.

use crate::config::ServerConfig;
use crate::shutdown::CancellationToken;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

/// Descriptors kept for everything but client connections: the store's
/// connections and files, connections to MDMs, the listener, the log.
const RESERVED_DESCRIPTORS: u64 = 128;

/// How long to wait before accepting again after an error that is not the
/// client's (out of descriptors or memory): retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(250);

/// The listener's limits, from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    pub max_connections: u32,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl From<&ServerConfig> for ServeLimits {
    fn from(c: &ServerConfig) -> Self {
        ServeLimits {
            max_connections: c.max_connections,
            header_read_timeout: c.header_read_timeout,
            idle_timeout: c.idle_timeout,
        }
    }
}

/// The soft limit on open files of this process (`None`: unknown or unlimited).
/// Read from `/proc/self/limits`: no `unsafe` getrlimit call for one number.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The connections that can be served at once: the configured number, or
/// fewer when the descriptor limit would not leave enough for the rest.
pub(crate) fn usable_connections(configured: u32, open_files: Option<u64>) -> u32 {
    match open_files {
        None => configured,
        Some(limit) => {
            let usable = limit.saturating_sub(RESERVED_DESCRIPTORS).max(limit / 2);
            configured
                .min(u32::try_from(usable).unwrap_or(u32::MAX))
                .max(1)
        }
    }
}

/// The first byte of a TLS handshake record (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The body of the answer to plain HTTP on the HTTPS port.
const PLAIN_HTTP_ON_TLS_PORT: &str = "This port serves HTTPS: use https:// in the URL.\n";

/// The whole answer to plain HTTP on the HTTPS port.
fn plain_http_answer() -> String {
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_HTTP_ON_TLS_PORT}",
        PLAIN_HTTP_ON_TLS_PORT.len()
    )
}

/// How long a refused plain-HTTP client may take to read the answer and
/// close, before the socket is closed under it.
const LINGER: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` fires; then stops accepting,
/// closes idle connections at once, lets requests in flight finish, and
/// returns when every connection is closed. With `tls`, every connection is
/// HTTPS (see the module header).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let open_files = open_files_limit();
    let max = usable_connections(limits.max_connections, open_files);
    if max < limits.max_connections {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_files_limit = open_files,
            serving = max,
            "`server.max_connections` is more than the open-files limit allows: at most {max} \
             client connections are served at a time (raise the limit, e.g. LimitNOFILE= in the \
             systemd unit, or lower max_connections)"
        );
    }
    let permits = Arc::new(Semaphore::new(max as usize));
    let connections = TaskTracker::new();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let service = TowerToHyperService::new(router);
    // Failed TLS handshakes since start, for the DEBUG line of each.
    let handshake_failures = Arc::new(AtomicU64::new(0));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot accept a connection; trying again shortly");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        let accepted_at = Instant::now();
        let _ = stream.set_nodelay(true);
        let (builder, service, shutdown) = (builder.clone(), service.clone(), shutdown.clone());
        let (tls, failures) = (tls.clone(), handshake_failures.clone());
        connections.spawn(async move {
            match tls {
                None => {
                    serve_connection(stream, peer, accepted_at, &builder, service, limits, shutdown)
                        .await
                }
                Some(acceptor) => {
                    let deadline = accepted_at + limits.header_read_timeout;
                    let handshake = tokio::select! {
                        _ = shutdown.cancelled() => None,
                        done = tokio::time::timeout_at(deadline, tls_handshake(stream, &acceptor)) => {
                            match done {
                                Ok(Ok(stream)) => Some(stream),
                                Ok(Err(failure)) => {
                                    failure.log(peer, &failures);
                                    None
                                }
                                Err(_) => {
                                    Handshake::TimedOut.log(peer, &failures);
                                    None
                                }
                            }
                        }
                    };
                    if let Some(stream) = handshake {
                        serve_connection(
                            stream,
                            peer,
                            accepted_at,
                            &builder,
                            service,
                            limits,
                            shutdown,
                        )
                        .await;
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors of one client's connection attempt, not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Why a TLS connection ended before its first request.
#[derive(Debug)]
enum Handshake {
    /// Closed (or reset) before sending a byte.
    Closed,
    /// Plain HTTP to the HTTPS port: answered with a 400 saying so.
    PlainHttp,
    /// Bytes that are neither TLS nor HTTP.
    NotTls,
    /// rustls refused the handshake (no common version or cipher, a bad
    /// record, the client rejected our certificate, …).
    Failed(std::io::Error),
    /// Not complete within `header_read_timeout` of the accept.
    TimedOut,
}

impl Handshake {
    /// One DEBUG line per failure, with the running count: these are the
    /// clients' problems, and scanners must not flood the log.
    fn log(&self, peer: SocketAddr, failures: &AtomicU64) {
        let count = failures.fetch_add(1, Ordering::Relaxed) + 1;
        let reason = match self {
            Handshake::Closed => "closed by the client before the handshake".to_string(),
            Handshake::PlainHttp => {
                "plain HTTP on the HTTPS port (answered 400: use https://)".to_string()
            }
            Handshake::NotTls => "the client does not speak TLS".to_string(),
            Handshake::Failed(e) => e.to_string(),
            Handshake::TimedOut => "no complete handshake within header_read_timeout".to_string(),
        };
        tracing::debug!(%peer, reason, tls_handshake_failures = count, "TLS handshake failed; connection closed");
    }
}

/// The server side of a TLS handshake, after a look at the first byte: a
/// client that speaks plain HTTP is told to use https:// instead.
async fn tls_handshake(
    mut stream: TcpStream,
    acceptor: &TlsAcceptor,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, Handshake> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) | Err(_) => return Err(Handshake::Closed),
        Ok(_) => {}
    }
    if first[0] == TLS_HANDSHAKE_RECORD {
        return acceptor.accept(stream).await.map_err(Handshake::Failed);
    }
    // Every HTTP/1 method (and HTTP/2's preface, `PRI`) starts with a capital.
    if !first[0].is_ascii_uppercase() {
        return Err(Handshake::NotTls);
    }
    if stream
        .write_all(plain_http_answer().as_bytes())
        .await
        .is_ok()
        && stream.shutdown().await.is_ok()
    {
        // Read what the client sent until it closes: closing a socket with
        // unread data resets it, and the client would never see the answer.
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(LINGER, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
    Err(Handshake::PlainHttp)
}

/// Serves HTTP on one client connection (plain TCP, or TLS after its
/// handshake), under the timeouts of the module header, counted from
/// `accepted_at`.
#[allow(clippy::too_many_arguments)]
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    accepted_at: Instant,
    builder: &auto::Builder<TokioExecutor>,
    service: TowerToHyperService<Router>,
    limits: ServeLimits,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new(accepted_at));
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = Tracked {
        inner: service,
        activity: activity.clone(),
        peer,
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::trace!(error = %e, "Client connection ended with an error");
                }
                return;
            }
            _ = activity.expired(limits) => {
                tracing::trace!("Closing a client connection: no complete request within its timeout");
                return; // dropping the connection closes the socket
            }
            _ = shutdown.cancelled(), if !draining => {
                if !activity.in_flight() {
                    return;
                }
                // Finish the requests in flight, then close.
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// Where a connection is between requests (see the module header).
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head, since then.
    Head(Instant),
    /// This many requests in flight.
    Busy(usize),
    /// No request in flight and no byte of the next one, since then.
    Idle(Instant),
}

#[derive(Debug)]
struct Activity(Mutex<Phase>);

impl Activity {
    /// A connection waiting for its first request head since `since` (its accept).
    fn new(since: Instant) -> Self {
        Activity(Mutex::new(Phase::Head(since)))
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived: after an idle spell they start the next request head.
    fn bytes_read(&self) {
        let mut phase = self.phase();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        };
        InFlight(self.clone())
    }

    fn in_flight(&self) -> bool {
        matches!(*self.phase(), Phase::Busy(_))
    }

    /// Resolves when the connection's current phase has lasted longer than its limit.
    ///
    /// The phase moves on while this sleeps (a head arrives, a request
    /// ends), so it looks again at least every quarter of the shorter limit:
    /// a connection that went idle while a 30 s head deadline was pending
    /// is still closed about `idle_timeout` after it went idle.
    async fn expired(&self, limits: ServeLimits) {
        let step = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
            .max(std::time::Duration::from_millis(10));
        loop {
            let deadline = match *self.phase() {
                Phase::Head(since) => Some(since + limits.header_read_timeout),
                Phase::Idle(since) => Some(since + limits.idle_timeout),
                Phase::Busy(_) => None,
            };
            match deadline {
                Some(at) if at <= Instant::now() => return,
                Some(at) => tokio::time::sleep_until(at.min(Instant::now() + step)).await,
                // Look again later: a request ending moves the phase on.
                None => tokio::time::sleep(step).await,
            }
        }
    }
}

/// A request in flight on its connection, until dropped (answered or abandoned).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        *phase = match *phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        };
    }
}

/// The router, with each request counted in flight on its connection.
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
    /// The client's address, given to handlers as axum's `ConnectInfo`
    /// (the console throttles failed logins per client).
    peer: SocketAddr,
}

type BoxedResponse = Pin<
    Box<
        dyn Future<Output = Result<axum::response::Response, std::convert::Infallible>>
            + Send
            + 'static,
    >,
>;

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = BoxedResponse;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let in_flight = self.activity.request_started();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(in_flight);
            response
        })
    }
}

/// The client's socket (or its TLS stream: decrypted bytes), telling its
/// connection's [`Activity`] when bytes arrive.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_leaves_descriptors_for_the_store_and_the_mdms() {
        assert_eq!(usable_connections(1024, None), 1024, "limit unknown");
        assert_eq!(usable_connections(1024, Some(1_048_576)), 1024);
        // systemd's default soft limit.
        assert_eq!(usable_connections(1024, Some(1024)), 896);
        assert_eq!(usable_connections(1024, Some(256)), 128);
        assert_eq!(
            usable_connections(1024, Some(100)),
            50,
            "half of a tiny limit"
        );
        assert_eq!(usable_connections(2, Some(256)), 2);
        assert_eq!(usable_connections(1024, Some(0)), 1, "never zero");
    }

    #[test]
    fn the_open_files_limit_of_this_process_can_be_read() {
        if std::path::Path::new("/proc/self/limits").exists() {
            assert!(open_files_limit().is_some_and(|n| n > 0));
        }
    }
}
