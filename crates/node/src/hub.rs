//! The hub on this machine: its files under the data dir (CA, certificates, store),
//! `hangar init`, and `hub serve` wiring (API, monitor and the `local` host provider).

use crate::config::{self, ClientConfig};
use crate::providers::local::{HostNet, LocalProvider, ServeOn};
use anyhow::{bail, Context, Result};
use hangar_hub::{Hub, HubConfig, HubKeys};
use hangar_tls::{Ca, CertifiedKey};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Files of a hub under its data dir.
pub struct HubPaths {
    pub root: PathBuf,
}

impl HubPaths {
    pub fn new(data_dir: &Path) -> Self {
        HubPaths { root: data_dir.join("hub") }
    }
    fn p(&self, f: &str) -> PathBuf {
        self.root.join(f)
    }
    pub fn db(&self) -> PathBuf {
        self.p("hangar.db")
    }
    /// The data dir 0711 (hosts' and the agent's dirs below it hold sandboxes' roots
    /// and volumes: see `hangar_agent::files`), the hub's own dir 0700, its keys and
    /// store 0600; also fixes what an older hangar made with wider modes.
    pub fn secure(&self, data_dir: &Path) -> std::io::Result<()> {
        use hangar_agent::files::{ensure_dir, make_private, PRIVATE_DIR, TRAVERSE_DIR};
        ensure_dir(data_dir, TRAVERSE_DIR)?;
        ensure_dir(&self.root, PRIVATE_DIR)?;
        for f in ["ca.key", "server.key", "client.key", "secrets.key", "hosts-ca.key"] {
            make_private(&self.p(f))?;
        }
        Ok(())
    }
    /// The CA host certificates come from, made at the first start of a hub that has
    /// none (a data dir from before it existed): hosts joined earlier keep their fleet-CA
    /// certificate until they renew, which they do at once (see `hangar_tls::renewal_due`).
    pub fn hosts_ca(&self) -> Result<Ca> {
        let (cert, key) = (self.p("hosts-ca.pem"), self.p("hosts-ca.key"));
        if let (Ok(c), Ok(k)) = (std::fs::read_to_string(&cert), std::fs::read_to_string(&key)) {
            return Ok(Ca::from_pem(&c, &k)?);
        }
        let ca = Ca::generate("hangar hosts CA")?;
        // The key first: a kill between the two leaves no certificate, so the next start
        // makes a new pair instead of reading a certificate without its key.
        hangar_tls::write_private(&key, ca.key_pem())?;
        hangar_tls::write_private(&cert, ca.cert_pem())?;
        Ok(ca)
    }

    /// Made by a finished `hangar init` (a dir from before `init.partial` existed
    /// counts as finished: it has no marker).
    pub fn initialized(&self) -> bool {
        self.p("ca.pem").exists() && self.p("ca.key").exists() && self.db().exists() && !self.p("init.partial").exists()
    }

    pub fn load_keys(&self) -> Result<HubKeys> {
        let r = |f: &str| std::fs::read_to_string(self.p(f)).with_context(|| format!("cannot read {}: run `hangar init` first", self.p(f).display()));
        let ca = Ca::from_pem(&r("ca.pem")?, &r("ca.key")?)?;
        Ok(HubKeys {
            ca: Arc::new(ca),
            server: CertifiedKey { cert_pem: r("server.pem")?, key_pem: r("server.key")? },
            client: CertifiedKey { cert_pem: r("client.pem")?, key_pem: r("client.key")? },
        })
    }
}

/// Installs a new server certificate and key: together in one file first, then each in
/// its place (see [`complete_server_pair`]).
fn write_server_pair(hp: &HubPaths, server: &CertifiedKey) -> Result<()> {
    hangar_tls::write_private(&hp.p("server.next.pem"), &format!("{}\n{}", server.cert_pem, server.key_pem))?;
    complete_server_pair(hp)
}

/// Finishes installing a server pair a kill interrupted; nothing if there is none.
fn complete_server_pair(hp: &HubPaths) -> Result<()> {
    let Ok(both) = std::fs::read_to_string(hp.p("server.next.pem")) else { return Ok(()) };
    let at = both.find("-----BEGIN PRIVATE KEY-----").with_context(|| format!("{} holds no key: remove it", hp.p("server.next.pem").display()))?;
    let (cert, key) = both.split_at(at);
    hangar_tls::write_private(&hp.p("server.key"), key)?;
    hangar_tls::write_private(&hp.p("server.pem"), cert.trim_end())?;
    std::fs::remove_file(hp.p("server.next.pem"))?;
    Ok(())
}

/// Names the hub's server certificate is valid for.
fn server_names(listen: &SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

pub fn hub_url(listen: &SocketAddr) -> String {
    let ip = if listen.ip().is_unspecified() { "127.0.0.1".to_string() } else { listen.ip().to_string() };
    if ip.contains(':') { format!("https://[{ip}]:{}", listen.port()) } else { format!("https://{ip}:{}", listen.port()) }
}

/// Creates the data dir, the fleet CA, the hub's certificates, the store and an admin
/// token, and writes the client config. Idempotent: an initialized dir is left alone
/// (the client config is rewritten only when missing).
///
/// Crash-safe: `init.partial` marks a dir being initialized from the first write to the
/// last (the client config with the admin token). A kill anywhere in between leaves the
/// marker, and the next `init` (or `up`) starts over from nothing, so the outcome is
/// either no hub or a hub whose admin token is in the client config.
pub async fn init(data_dir: &Path, listen: &SocketAddr, extra_names: &[String], config_path: &Path) -> Result<bool> {
    hangar_tls::install_crypto_provider();
    let hp = HubPaths::new(data_dir);
    if hp.initialized() {
        return Ok(false);
    }
    hp.secure(data_dir).with_context(|| format!("cannot create {}", hp.root.display()))?;
    let partial = hp.p("init.partial");
    hangar_tls::write_private(&partial, "an init is under way or was interrupted: `hangar init` starts over\n")?;
    // What an interrupted init may have left: made again below.
    for f in ["hangar.db", "hangar.db-wal", "hangar.db-shm", "ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key", "hosts-ca.pem", "hosts-ca.key", "server.next.pem"] {
        match std::fs::remove_file(hp.p(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).with_context(|| format!("cannot remove {}", hp.p(f).display())),
            _ => {}
        }
    }
    let ca = Ca::generate("hangar fleet CA")?;
    let server = ca.issue_server("hangar-hub", &server_names(listen, extra_names))?;
    let client = ca.issue_client("hangar-hub")?;
    hangar_tls::write_private(&hp.p("ca.key"), ca.key_pem())?;
    hangar_tls::write_private(&hp.p("ca.pem"), ca.cert_pem())?;
    hangar_tls::write_private(&hp.p("server.key"), &server.key_pem)?;
    hangar_tls::write_private(&hp.p("server.pem"), &server.cert_pem)?;
    hangar_tls::write_private(&hp.p("client.key"), &client.key_pem)?;
    hangar_tls::write_private(&hp.p("client.pem"), &client.cert_pem)?;
    let hosts_ca = hp.hosts_ca()?;
    hangar_hub::failpoint::hit("init.after-keys");
    let store = hangar_store::open(&hp.db().to_string_lossy()).await?;
    hangar_hub::failpoint::hit("init.after-db");
    let keys = hp.load_keys()?;
    let hub = Hub::new(store, keys, HubConfig::default());
    hub.set_hosts_ca(Arc::new(hosts_ca));
    let admin = hub.token_create(&hangar_hub::Principal::Admin, hangar_types::api::TokenCreate { tenant: None, role: None, description: Some("created by hangar init".into()), ttl_secs: None }).await.map_err(|e| anyhow::anyhow!("{}", e.0.message))?;
    hangar_hub::failpoint::hit("init.after-token");
    config::save(config_path, &ClientConfig { hub_url: hub_url(listen), ca_pem: ca.cert_pem().to_string(), token: admin.token })?;
    hangar_hub::failpoint::hit("init.after-config");
    std::fs::remove_file(&partial)?;
    if let Ok(d) = std::fs::File::open(&hp.root) {
        let _ = d.sync_all();
    }
    Ok(true)
}

pub struct HubRun {
    pub hub: Arc<Hub>,
    pub addr: SocketAddr,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Opens the store and starts serving the API and the monitor in the background. With
/// `provider_agent_args` (and root), the `local` host provider is offered too: its hosts'
/// agents run with those arguments and reach the hub on the host network.
pub async fn start_hub(
    data_dir: &Path,
    listen: SocketAddr,
    cfg: HubConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
    provider_agent_args: Option<Vec<String>>,
) -> Result<HubRun> {
    hangar_tls::install_crypto_provider();
    let hp = HubPaths::new(data_dir);
    if !hp.initialized() {
        bail!("{} holds no initialized hub: run `hangar init --data-dir {}` first", data_dir.display(), data_dir.display());
    }
    let data_dir = data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_path_buf());
    let data_dir = data_dir.as_path();
    hp.secure(data_dir).with_context(|| format!("cannot set the file modes in {}", data_dir.display()))?;
    std::fs::write(hp.root.join("cluster-range"), cfg.cluster_range.to_string())?;
    let is_root = nix::unistd::geteuid().is_root();
    let host_net = HostNet::new(data_dir, &cfg.cluster_range);
    if provider_agent_args.is_some() && is_root {
        // Provider hosts reach the hub at the host network's gateway: the server
        // certificate must name it (clients pin the CA, so re-issuing is harmless).
        let names = server_names(&listen, &[host_net.gateway.to_string()]);
        let current = std::fs::read_to_string(hp.p("server.pem")).ok().and_then(|c| hangar_tls::subject_alt_names(&c).ok());
        let mut wanted = names.clone();
        wanted.sort();
        if current.is_none_or(|have| wanted.iter().any(|n| !have.contains(n))) {
            let ca = Ca::from_pem(&std::fs::read_to_string(hp.p("ca.pem"))?, &std::fs::read_to_string(hp.p("ca.key"))?)?;
            let server = ca.issue_server("hangar-hub", &names)?;
            // Key and certificate must match at every moment a kill could come: write
            // both beside, then replace the key and the certificate; a kill between
            // the two renames leaves server.next.pem, which the next start installs.
            write_server_pair(&hp, &server)?;
        }
    }
    complete_server_pair(&hp)?;
    let store = hangar_store::open(&hp.db().to_string_lossy()).await?;
    let hosts_ca = Arc::new(hp.hosts_ca()?);
    let hub = Hub::new(store, hp.load_keys()?, cfg);
    // The key secrets are sealed with: made on first use, 0600, beside the CA key.
    hub.use_secrets_key(hp.p("secrets.key"));
    hub.set_hosts_ca(hosts_ca);
    let listener = hangar_hub::server::bind(listen).await.with_context(|| format!("cannot listen on {listen}: is another hub running? pick another port with --listen"))?;
    let addr = listener.local_addr()?;
    if let (Some(agent_args), true) = (provider_agent_args, is_root) {
        let provider = Arc::new(LocalProvider::new(data_dir.to_path_buf(), host_net.clone(), addr.port(), agent_args, serve_on(&hub, shutdown.clone())));
        hub.register_provider(provider.clone());
        // The provider never reads the hub's store: it is told which of its hosts a user
        // stopped (those stay down), through the hub's own API.
        let stopped: Vec<hangar_types::Name> = match hub.host_list(&hangar_hub::Principal::Admin).await {
            Ok(hosts) => hosts.into_iter().filter(|h| h.state == hangar_types::api::HostState::Stopped).map(|h| h.name).collect(),
            // As before the split: a host whose state cannot be read is brought back.
            Err(e) => {
                tracing::error!(error = %e.0.message, "cannot list hosts; resuming every provider host");
                vec![]
            }
        };
        provider.resume(&stopped).await;
    }
    let mut rx = shutdown.clone();
    let h = hub.clone();
    let serve = tokio::spawn(async move {
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = hangar_hub::server::serve(h, listener, stop).await {
            tracing::error!(error = ?e, "hub server stopped");
        }
    });
    let monitor = tokio::spawn(hangar_hub::monitor::run(hub.clone(), Duration::from_secs(1)));
    let mut tasks = vec![serve, monitor];
    tasks.extend(crate::ssh::start(&hub, &hp.root, addr, &hub.config.ssh, shutdown.clone()).await?);
    Ok(HubRun { hub, addr, tasks })
}

/// A way for the local provider to have the hub listen on one more address (the host
/// network's gateway, once its bridge exists).
fn serve_on(hub: &Arc<Hub>, shutdown: tokio::sync::watch::Receiver<bool>) -> ServeOn {
    let weak = Arc::downgrade(hub);
    Box::new(move |addr: SocketAddr| -> Result<()> {
        let l = std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        l.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(l)?;
        let hub = weak.upgrade().context("the hub is shutting down")?;
        let mut rx = shutdown.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = hangar_hub::server::serve(hub, l, stop).await {
                tracing::error!(error = ?e, "hub server on the host network stopped");
            }
        });
        Ok(())
    })
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn termination() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
