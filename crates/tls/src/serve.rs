//! Serving an axum router over TLS, shared by the hub's API and the agent's endpoint.
//!
//! Each connection's verified client certificate (if any) is fingerprinted once at the
//! handshake and attached to every request on that connection as [`PeerInfo`], so
//! handlers can authorize hosts and the hub without parsing certificates.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
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

/// Serves `app` on `listener` until `shutdown` resolves. Connections still open at
/// shutdown are left to finish on their own tasks.
pub async fn serve_router(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    while let Some((tcp, addr)) = next_connection(&listener, shutdown.as_mut()).await {
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let fingerprint = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| crate::fingerprint_der(c.as_ref()));
            let info = PeerInfo { fingerprint, addr };
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info.clone());
                app.clone().oneshot(req)
            });
            if let Err(e) = auto::Builder::new(TokioExecutor::new()).serve_connection_with_upgrades(TokioIo::new(stream), svc).await {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
        });
    }
}
