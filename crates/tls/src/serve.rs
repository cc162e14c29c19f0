//! Serving an axum router over TLS, shared by the hub's API and the agent's endpoint.
//!
//! Each connection's verified client certificate (if any) is fingerprinted once at the
//! handshake and attached to every request on that connection as [`PeerInfo`], so
//! handlers can authorize hosts and the hub without parsing certificates.
//!
//! [`ServeLimits`] keep slow or idle clients from holding the listener: a cap on open
//! connections (below the process's file limit), a cap per source address on
//! connections that have not sent a first request yet, and deadlines for the handshake,
//! the first request's header, and idleness. A connection over a cap is closed at once,
//! so the kernel's accept queue never fills with them and clients already served
//! (agents' long-lived connections) keep going.

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Facts about the TLS connection a request came on.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// SHA-256 (hex) of the client certificate, if one was presented and verified.
    pub fingerprint: Option<String>,
    pub addr: SocketAddr,
}

/// Endpoints this very process serves, by URL. A caller in the same process (the hub
/// of `hangar up` and its own host's agent) calls the router straight, as the peer it
/// is, with no socket, TLS or HTTP framing between them; a caller elsewhere connects
/// as always.
#[derive(Clone, Default)]
pub struct LocalEndpoints(Arc<std::sync::RwLock<HashMap<String, LocalEndpoint>>>);

impl std::fmt::Debug for LocalEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.read().unwrap_or_else(|e| e.into_inner()).keys()).finish()
    }
}

/// One in-process endpoint: its router and who calls it.
#[derive(Clone)]
pub struct LocalEndpoint {
    app: axum::Router,
    caller: PeerInfo,
}

impl LocalEndpoints {
    /// Serves `app` at `url` to the one caller whose client certificate has
    /// `caller_fingerprint` (the only holder of this registry besides the server),
    /// until the returned guard is dropped.
    #[must_use = "the endpoint is served until this is dropped"]
    pub fn serve(&self, url: &str, app: axum::Router, caller_fingerprint: &str) -> LocalServed {
        let caller = PeerInfo { fingerprint: Some(caller_fingerprint.to_string()), addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
        self.0.write().unwrap_or_else(|e| e.into_inner()).insert(url.to_string(), LocalEndpoint { app, caller });
        LocalServed { endpoints: self.clone(), url: url.to_string() }
    }

    pub fn get(&self, url: &str) -> Option<LocalEndpoint> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).get(url).cloned()
    }
}

/// An endpoint served in process; served no more once dropped.
pub struct LocalServed {
    endpoints: LocalEndpoints,
    url: String,
}

impl Drop for LocalServed {
    fn drop(&mut self) {
        self.endpoints.0.write().unwrap_or_else(|e| e.into_inner()).remove(&self.url);
    }
}

impl LocalEndpoint {
    /// One request, answered by the router as if it came over a connection.
    pub async fn call(&self, mut req: axum::http::Request<axum::body::Body>) -> axum::response::Response {
        req.extensions_mut().insert(self.caller.clone());
        match self.app.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }
}

/// The next connection on `listener`, or None once `shutdown` resolves. A failed accept
/// (out of file descriptors and the like) backs off instead of spinning. Shared by every
/// listener of hangar's (API, agent endpoint, SSH gateway).
pub async fn next_connection<F: std::future::Future<Output = ()>>(listener: &TcpListener, mut shutdown: std::pin::Pin<&mut F>) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => return Some(x),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut shutdown => return None,
        }
    }
}

/// What one listener tolerates from its clients.
#[derive(Clone, Debug)]
pub struct ServeLimits {
    /// Open connections at most (also held under half the process's file limit).
    pub max_connections: usize,
    /// Connections per source address that have not sent a complete first request.
    pub max_pending_per_ip: usize,
    /// The TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// A connection's first request must arrive within this (later HTTP/1 requests'
    /// headers within 75 s, the keep-alive timeout).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 4096,
            max_pending_per_ip: 256,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// How long an HTTP/1 connection may wait for (the header of) its next request.
const KEEP_ALIVE_HEADER_TIMEOUT: Duration = Duration::from_secs(75);

/// The soft limit on open files of this process, from /proc (None if unreadable).
fn file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Serves `app` on `listener` with [`ServeLimits::default`] until `shutdown` resolves.
pub async fn serve_router(listener: TcpListener, tls: Arc<rustls::ServerConfig>, app: axum::Router, shutdown: impl std::future::Future<Output = ()>) {
    serve_router_with(listener, tls, app, ServeLimits::default(), shutdown).await
}

/// Counts of connections per source address still waiting for their first request.
#[derive(Default)]
struct Pending(Mutex<HashMap<IpAddr, usize>>);

/// One slot in [`Pending`], given back on drop (or once a first request arrived).
struct PendingSlot {
    pending: Arc<Pending>,
    ip: IpAddr,
}

impl Pending {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PendingSlot> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = g.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PendingSlot { pending: self.clone(), ip })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut g = self.pending.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = g.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                g.remove(&self.ip);
            }
        }
    }
}

/// Gives back a connection slot on drop.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `app` on `listener` until `shutdown` resolves. Connections still open at
/// shutdown are left to finish on their own tasks.
pub async fn serve_router_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let max_connections = match file_limit() {
        Some(files) => limits.max_connections.min(files / 2).max(16),
        None => limits.max_connections,
    };
    let open = Arc::new(AtomicUsize::new(0));
    let pending = Arc::new(Pending::default());
    let started = Instant::now();
    tokio::pin!(shutdown);
    while let Some((tcp, addr)) = next_connection(&listener, shutdown.as_mut()).await {
        if open.fetch_add(1, Ordering::Relaxed) >= max_connections {
            open.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(%addr, max_connections, "connection refused: too many open");
            continue;
        }
        let slot = Open(open.clone());
        let Some(first) = pending.take(addr.ip(), limits.max_pending_per_ip) else {
            tracing::debug!(%addr, "connection refused: too many from this address without a request");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let stream = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(crate::stream::buffered(tcp))).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let fingerprint = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| crate::fingerprint_der(c.as_ref()));
            let info = PeerInfo { fingerprint, addr };
            // Requests in flight, and when the last one started or ended (ms since `started`).
            let in_flight = Arc::new(AtomicUsize::new(0));
            let last = Arc::new(AtomicU64::new(started.elapsed().as_millis() as u64));
            let first = Arc::new(Mutex::new(Some(first)));
            let svc = {
                let (in_flight, last, first) = (in_flight.clone(), last.clone(), first.clone());
                hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    first.lock().unwrap_or_else(|e| e.into_inner()).take();
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    req.extensions_mut().insert(info.clone());
                    let (in_flight, last) = (in_flight.clone(), last.clone());
                    // (HTTP/2 has no connection header: a stream's unread body ends that stream only.)
                    let http1 = req.version() < hyper::Version::HTTP_2;
                    let (req, body_read) = track_body(req);
                    let call = app.clone().oneshot(req);
                    async move {
                        let mut r = call.await;
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                        last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                        // A body the handler left unread makes hyper close the connection
                        // after this response; saying so keeps a client from sending its
                        // next request on a connection that is going away (it would see
                        // a bare EOF, schemathesis's "connection dropped").
                        if let Ok(resp) = &mut r
                            && http1
                            && !body_read.load(Ordering::Relaxed)
                        {
                            resp.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
                        }
                        r
                    }
                })
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // hyper's header timer also runs while a keep-alive connection waits for its
            // next request, so it doubles as HTTP/1's keep-alive timeout: long enough
            // that clients reusing a pooled connection rarely race its close. The first
            // request's deadline (`header_read_timeout`) is the watchdog's below.
            builder.http1().timer(TokioTimer::new()).header_read_timeout(KEEP_ALIVE_HEADER_TIMEOUT.max(limits.header_read_timeout));
            builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30))).keep_alive_timeout(Duration::from_secs(20));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let accepted_at = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1).min(limits.header_read_timeout));
            loop {
                tokio::select! {
                    r = &mut conn => {
                        if let Err(e) = r {
                            tracing::debug!(%addr, error = %e, "connection ended with an error");
                        }
                        return;
                    }
                    _ = tick.tick() => {
                        let waiting_first = first.lock().unwrap_or_else(|e| e.into_inner()).is_some();
                        if waiting_first && accepted_at.elapsed() > limits.header_read_timeout {
                            tracing::debug!(%addr, "closing a connection that sent no request in time");
                            return;
                        }
                        let idle_ms = (started.elapsed().as_millis() as u64).saturating_sub(last.load(Ordering::Relaxed));
                        if in_flight.load(Ordering::Relaxed) == 0 && Duration::from_millis(idle_ms) > limits.idle_timeout {
                            tracing::debug!(%addr, "closing an idle connection");
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// Marks in the returned flag when the request's body has been read to its end (at
/// once for a request without one).
fn track_body(req: hyper::Request<hyper::body::Incoming>) -> (hyper::Request<TrackedBody>, Arc<std::sync::atomic::AtomicBool>) {
    use hyper::body::Body as _;
    let read = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let req = req.map(|inner| {
        if inner.is_end_stream() {
            read.store(true, Ordering::Relaxed);
        }
        TrackedBody { inner, read: read.clone() }
    });
    (req, read)
}

/// A request body that sets its flag once it has yielded its last frame.
struct TrackedBody {
    inner: hyper::body::Incoming,
    read: Arc<std::sync::atomic::AtomicBool>,
}

impl hyper::body::Body for TrackedBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
