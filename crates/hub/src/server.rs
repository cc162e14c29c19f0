//! Serves the router over TLS. Client certificates are optional at the TLS layer (users
//! come with bearer tokens); when one is presented and verifies against the fleet CA,
//! its fingerprint rides along with every request of that connection as [`ConnInfo`].

use crate::http::{router, ConnInfo};
use crate::Hub;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Binds the API listener; separate from [`serve`] so callers learn the port before serving.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `shutdown` resolves. Connections in flight are dropped at shutdown.
pub async fn serve(hub: Arc<Hub>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    hangar_tls::install_crypto_provider();
    let k = &hub.keys;
    let tls = hangar_tls::server_config(&k.server.cert_pem, &k.server.key_pem, Some(k.ca.cert_pem()), false)?;
    let acceptor = TlsAcceptor::from(tls);
    let app = router(hub.clone());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let peer_fingerprint = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| hangar_tls::fingerprint_der(c.as_ref()));
            let info = ConnInfo { peer_fingerprint, peer_addr: Some(peer) };
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info.clone());
                app.clone().oneshot(req)
            });
            if let Err(e) = auto::Builder::new(TokioExecutor::new()).serve_connection_with_upgrades(TokioIo::new(tls), svc).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
