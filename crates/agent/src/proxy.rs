//! The agent's half of the HTTP proxy: `/v1/sandboxes/{id}/proxy/{port}/...` on the
//! mTLS endpoint, for the hub only, forwarded over TCP to the sandbox's address on its
//! tenant bridge ([`hangar_tls::forward`]: HTTP/1.1, streaming, upgrades).
//!
//! The agent connects from the host side, where the bridge holds the gateway; the
//! sandbox's answers come back as replies, which is all the agent's nftables input
//! chain lets in from tenant bridges (`drivers::network::nft`): a sandbox still cannot
//! open a connection to the host. Only addresses of this host's sandboxes desired
//! running are reachable here, never an address the caller names.
//!
//! Connections to a sandbox's port that the workload keeps alive are kept idle for
//! the next request to the same sandbox and port ([`hangar_tls::forward::Pool`]), so a
//! request pays no TCP handshake; upgrades always get a connection of their own.

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Json, Router};
use hangar_tls::serve::PeerInfo;
use hangar_types::protocol::DesiredDoc;
use hangar_types::{ApiError, DesiredState, ErrorCode, SandboxId};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How long a sandbox's port has to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The addresses of this host's sandboxes that are desired running, from the last
/// document converged to.
#[derive(Default)]
pub struct ProxyTargets {
    by_sandbox: RwLock<HashMap<SandboxId, Ipv4Addr>>,
}

impl ProxyTargets {
    pub fn update(&self, doc: &DesiredDoc) {
        let map = doc
            .instances
            .iter()
            .filter(|d| d.desired == DesiredState::Running)
            .filter_map(|d| Some((d.id.sandbox_id(), d.network.as_ref()?.address)))
            .collect();
        *self.by_sandbox.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    fn get(&self, id: &SandboxId) -> Option<Ipv4Addr> {
        self.by_sandbox.read().unwrap_or_else(|e| e.into_inner()).get(id).copied()
    }
}

#[derive(Clone)]
struct ProxyState {
    targets: Arc<ProxyTargets>,
    hub_fingerprint: String,
    /// Idle connections by sandbox, address and port.
    pool: Arc<hangar_tls::forward::Pool>,
}

fn refuse(status: StatusCode, code: ErrorCode, message: String) -> Response {
    (status, Json(ApiError::new(code, message))).into_response()
}

pub fn router(targets: Arc<ProxyTargets>, hub_fingerprint: String) -> Router {
    Router::new()
        .route("/v1/sandboxes/{id}/proxy/{port}/", any(proxy))
        .route("/v1/sandboxes/{id}/proxy/{port}/{*rest}", any(proxy))
        .with_state(ProxyState { targets, hub_fingerprint, pool: Default::default() })
}

async fn proxy(State(st): State<ProxyState>, Extension(peer): Extension<PeerInfo>, Path(p): Path<HashMap<String, String>>, mut req: Request) -> Response {
    let (id, port) = (p.get("id").map(String::as_str).unwrap_or_default(), p.get("port").map(String::as_str).unwrap_or_default());
    if peer.fingerprint.as_deref() != Some(st.hub_fingerprint.as_str()) {
        return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, "only the hub may call this endpoint".into());
    }
    let Ok(sid) = id.parse::<SandboxId>() else {
        return refuse(StatusCode::BAD_REQUEST, ErrorCode::InvalidArgument, format!("'{id}' is not a sandbox id"));
    };
    let Some(port) = port.parse::<u16>().ok().filter(|p| *p > 0) else {
        return refuse(StatusCode::BAD_REQUEST, ErrorCode::InvalidArgument, format!("port: '{port}' is not a port (1-65535)"));
    };
    let Some(addr) = st.targets.get(&sid) else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, format!("sandbox {sid} is not running on this host with an address"));
    };
    // The rest as it came, still percent-encoded.
    let rest = hangar_tls::forward::path_after(req.uri().path(), 5).to_string();
    let path = format!("/{rest}{}", req.uri().query().map(|q| format!("?{q}")).unwrap_or_default());
    match path.parse::<Uri>() {
        Ok(u) => *req.uri_mut() = u,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, ErrorCode::InvalidArgument, format!("path: {e}")),
    }
    let upgrade = hangar_tls::forward::is_upgrade(req.headers());
    hangar_tls::forward::strip_hop_by_hop(req.headers_mut(), upgrade);
    let key = format!("{sid}/{addr}:{port}");
    let pooled = if upgrade { None } else { st.pool.take(&key) };
    let fresh = pooled.is_none();
    let mut sender = match pooled {
        Some(s) => s,
        None => match connect(addr, port).await {
            Ok(s) => s,
            Err(r) => return r,
        },
    };
    let failed = |e: hangar_tls::forward::ForwardError| refuse(StatusCode::BAD_GATEWAY, ErrorCode::Unavailable, format!("port {port} of the instance ({addr}:{port}) did not answer over HTTP/1.1: {e}"));
    let resp = match hangar_tls::forward::send_on(&mut sender, req).await {
        Ok(r) => r,
        // A kept connection the workload closed meanwhile: the request was not sent, so
        // it goes again on a new one.
        Err((_, Some(req))) if !fresh => {
            sender = match connect(addr, port).await {
                Ok(s) => s,
                Err(r) => return r,
            };
            match hangar_tls::forward::send_on(&mut sender, req).await {
                Ok(r) => r,
                Err((e, _)) => return failed(e),
            }
        }
        Err((e, _)) => return failed(e),
    };
    if !upgrade {
        st.pool.put(&key, sender);
    }
    resp
}

/// A new HTTP/1.1 connection to a sandbox's port, or the 502 that says why not.
async fn connect(addr: Ipv4Addr, port: u16) -> Result<hangar_tls::forward::Sender, Response> {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((addr, port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(refuse(StatusCode::BAD_GATEWAY, ErrorCode::Unavailable, format!("nothing answers on port {port} of the instance ({addr}:{port}): {e}"))),
        Err(_) => return Err(refuse(StatusCode::BAD_GATEWAY, ErrorCode::Unavailable, format!("port {port} of the instance ({addr}:{port}) did not accept a connection within {}s", CONNECT_TIMEOUT.as_secs()))),
    };
    let _ = tcp.set_nodelay(true);
    hangar_tls::forward::handshake(tcp)
        .await
        .map_err(|e| refuse(StatusCode::BAD_GATEWAY, ErrorCode::Unavailable, format!("port {port} of the instance ({addr}:{port}) did not answer over HTTP/1.1: {e}")))
}
