//! Serves the hub's router over TLS. Client certificates are optional at the TLS layer
//! (users come with bearer tokens); a verified one identifies a host.

use crate::api::router;
use crate::Hub;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Binds the API listener; separate from [`serve`] so callers learn the port first.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `shutdown` resolves.
pub async fn serve(hub: Arc<Hub>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    hangar_tls::install_crypto_provider();
    if let Err(e) = hub.reannounce_hosts().await {
        tracing::warn!(error = %e.0.message, "cannot re-announce the hosts' generations at start");
    }
    if let Err(e) = hub.resume_tenant_destroys().await {
        tracing::warn!(error = %e.0.message, "cannot resume the tenant destroys under way");
    }
    let k = &hub.keys;
    // Host certificates come from the hosts' CA; hosts joined before it existed hold
    // one from the fleet CA until they renew. Either way a certificate identifies a
    // host only by the fingerprint the store holds for it.
    let client_roots = format!("{}\n{}", hub.hosts_ca().cert_pem(), k.ca.cert_pem());
    let tls = hangar_tls::server_config(&k.server.cert_pem, &k.server.key_pem, Some(&client_roots), false)?;
    hangar_tls::serve::serve_router(listener, tls, router(hub.clone()), shutdown).await;
    Ok(())
}
