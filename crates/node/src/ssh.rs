//! The SSH gateway of `hub serve`: the `hangar-ssh` server on its own port, its host key
//! in the hub's dir (made once, 0600), asking the hub through [`HubBackend`].

use anyhow::{Context, Result};
use hangar_hub::ssh::{SshConfig, SshListen};
use hangar_hub::{Hub, Principal};
use hangar_ssh::{Backend, SessionStream};
use hangar_types::session::SessionRequest;
use hangar_types::Name;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// The hub, as the gateway sees it.
struct HubBackend(Arc<Hub>);

#[async_trait::async_trait]
impl Backend for HubBackend {
    async fn authorize(&self, tenant: &str, instance: &str, public_key: &str) -> bool {
        self.0.ssh_authorize(tenant, instance, public_key).await
    }

    async fn open(&self, tenant: &str, instance: &str, req: &SessionRequest) -> Result<Box<dyn SessionStream>, String> {
        let (Ok(t), Ok(i)) = (tenant.parse::<Name>(), instance.parse::<Name>()) else { return Err("no such instance".into()) };
        // The key was checked against this tenant's keys: the session is the tenant's.
        match self.0.session_open(&Principal::Tenant(t.clone()), &t, &i, req).await {
            Ok(s) => Ok(Box::new(s)),
            Err(e) => Err(e.0.message),
        }
    }
}

/// The host key's file in the hub's dir.
pub fn host_key_path(hub_dir: &Path) -> std::path::PathBuf {
    hub_dir.join("ssh_host_ed25519_key")
}

/// Starts the gateway as `cfg` says; None if it is off, or on its default port and that
/// port is taken (logged).
pub async fn start(hub: &Arc<Hub>, hub_dir: &Path, api: SocketAddr, cfg: &SshConfig, shutdown: tokio::sync::watch::Receiver<bool>) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let (addr, required) = match cfg.listen {
        SshListen::Off => return Ok(None),
        SshListen::Default(port) => (SocketAddr::new(api.ip(), port), false),
        SshListen::At(a) => (a, true),
    };
    let key = hangar_ssh::host_key(&host_key_path(hub_dir))?;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if !required => {
            tracing::warn!(%addr, error = %e, "no SSH gateway: its default port is taken; give --ssh-listen ADDR:PORT");
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr} for the SSH gateway: pick another with --ssh-listen, or --ssh-listen off")),
    };
    let port = listener.local_addr()?.port();
    let public = key.public_key();
    let line = public.to_openssh().unwrap_or_default();
    hub.set_ssh_gateway(hangar_types::api::SshGateway {
        enabled: true,
        port: Some(port),
        host_key: Some(line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")),
        fingerprint: Some(public.fingerprint(russh_hash()).to_string()),
    });
    tracing::info!(%addr, port, "ssh gateway listening");
    let gw = hangar_ssh::GatewayConfig { idle_timeout: cfg.idle_timeout, max_sessions_per_tenant: cfg.max_sessions_per_tenant, ..Default::default() };
    let backend: Arc<dyn Backend> = Arc::new(HubBackend(hub.clone()));
    let mut rx = shutdown;
    Ok(Some(tokio::spawn(async move {
        hangar_ssh::serve(listener, key, backend, gw, async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await
    })))
}

fn russh_hash() -> hangar_ssh::HashAlg {
    hangar_ssh::HashAlg::Sha256
}
