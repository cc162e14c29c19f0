//! Running hangar on this machine: `init`, `hub serve`, `agent run`, `up` (hub and a
//! local agent in one process) and `daemon` (the same in the background).

use crate::config::{self, ClientConfig};
use anyhow::{bail, Context, Result};
use hangar_agent::daemon::AgentOptions;
use hangar_agent::drivers::DriverConfig;
use hangar_agent::identity::AgentPaths;
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
    pub fn initialized(&self) -> bool {
        self.p("ca.pem").exists() && self.p("ca.key").exists() && self.db().exists()
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
pub async fn init(data_dir: &Path, listen: &SocketAddr, extra_names: &[String], config_path: &Path) -> Result<bool> {
    hangar_tls::install_crypto_provider();
    let hp = HubPaths::new(data_dir);
    if hp.initialized() {
        return Ok(false);
    }
    std::fs::create_dir_all(&hp.root).with_context(|| format!("cannot create {}", hp.root.display()))?;
    let ca = Ca::generate("hangar fleet CA")?;
    let server = ca.issue_server("hangar-hub", &server_names(listen, extra_names))?;
    let client = ca.issue_client("hangar-hub")?;
    std::fs::write(hp.p("ca.pem"), ca.cert_pem())?;
    hangar_tls::write_private(&hp.p("ca.key"), ca.key_pem())?;
    std::fs::write(hp.p("server.pem"), &server.cert_pem)?;
    hangar_tls::write_private(&hp.p("server.key"), &server.key_pem)?;
    std::fs::write(hp.p("client.pem"), &client.cert_pem)?;
    hangar_tls::write_private(&hp.p("client.key"), &client.key_pem)?;
    let store = hangar_store::open(&hp.db().to_string_lossy()).await?;
    let keys = hp.load_keys()?;
    let hub = Hub::new(store, keys, HubConfig::default());
    let admin = hub.token_create(&hangar_hub::Principal::Admin, hangar_types::api::TokenCreate { tenant: None, description: Some("created by hangar init".into()) }).await.map_err(|e| anyhow::anyhow!("{}", e.0.message))?;
    config::save(config_path, &ClientConfig { hub_url: hub_url(listen), ca_pem: ca.cert_pem().to_string(), token: admin.token })?;
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
    std::fs::write(hp.root.join("cluster-range"), cfg.cluster_range.to_string())?;
    let is_root = nix::unistd::geteuid().is_root();
    let host_net = crate::provider::HostNet::new(data_dir, &cfg.cluster_range);
    if provider_agent_args.is_some() && is_root {
        // Provider hosts reach the hub at the host network's gateway: the server
        // certificate must name it (clients pin the CA, so re-issuing is harmless).
        let ca = Ca::from_pem(&std::fs::read_to_string(hp.p("ca.pem"))?, &std::fs::read_to_string(hp.p("ca.key"))?)?;
        let server = ca.issue_server("hangar-hub", &server_names(&listen, &[host_net.gateway.to_string()]))?;
        std::fs::write(hp.p("server.pem"), &server.cert_pem)?;
        hangar_tls::write_private(&hp.p("server.key"), &server.key_pem)?;
    }
    let store = hangar_store::open(&hp.db().to_string_lossy()).await?;
    let hub = Hub::new(store, hp.load_keys()?, cfg);
    let listener = hangar_hub::server::bind(listen).await.with_context(|| format!("cannot listen on {listen}: is another hub running? pick another port with --listen"))?;
    let addr = listener.local_addr()?;
    if let (Some(agent_args), true) = (provider_agent_args, is_root) {
        let provider = Arc::new(crate::provider::LocalProvider {
            data_dir: data_dir.to_path_buf(),
            net: host_net.clone(),
            hub_port: addr.port(),
            agent_args,
            serve_on: serve_on(&hub, shutdown.clone()),
            serving: std::sync::atomic::AtomicBool::new(false),
        });
        hub.register_provider(provider.clone());
        provider.resume(&hub).await;
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
    Ok(HubRun { hub, addr, tasks: vec![serve, monitor] })
}

/// A way for the local provider to have the hub listen on one more address (the host
/// network's gateway, once its bridge exists).
fn serve_on(hub: &Arc<Hub>, shutdown: tokio::sync::watch::Receiver<bool>) -> crate::provider::ServeOn {
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

pub struct AgentArgs {
    pub drivers: DriverConfig,
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub interval: Duration,
}

pub fn agent_options(paths: AgentPaths, a: &AgentArgs, hub_url: Option<String>) -> AgentOptions {
    AgentOptions { paths, drivers: a.drivers.clone(), listen: a.listen, advertise: a.advertise.clone(), interval: a.interval, hub_url }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn termination() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// `hangar up`: hub and a local agent in one process, on SQLite.
pub async fn up(data_dir: &Path, listen: SocketAddr, agent: AgentArgs, config_path: &Path, hub_cfg: HubConfig, provider_agent_args: Vec<String>) -> Result<()> {
    let fresh = init(data_dir, &listen, &[], config_path).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = start_hub(data_dir, listen, hub_cfg, stop_rx.clone(), Some(provider_agent_args)).await?;
    let url = hub_url(&run.addr);
    // The client config follows the port actually bound (--listen :0 picks a free one).
    let mut cfg = config::load(config_path).ok();
    if let Some(c) = cfg.as_mut() {
        if c.hub_url != url {
            c.hub_url = url.clone();
            config::save(config_path, c)?;
        }
    }
    let paths = AgentPaths::new(data_dir.join("agent"));
    if !paths.is_joined() {
        let name: hangar_types::Name = "local".parse()?;
        let (_, token) = run.hub.host_add_record(name).await.map_err(|e| anyhow::anyhow!("{}", e.0.message))?;
        hangar_agent::join::join(&paths, &url, &token, vec!["127.0.0.1".into(), "localhost".into()]).await?;
    }
    eprintln!(
        "hangar is up{}: hub {url}, local agent in {} (client config {})",
        if fresh { " (new data dir)" } else { "" },
        paths.root.display(),
        config_path.display()
    );
    let mut agent_stop = stop_rx.clone();
    let mut agent_task = tokio::spawn(hangar_agent::daemon::run(agent_options(paths, &agent, Some(url.clone())), async move {
        let _ = agent_stop.wait_for(|s| *s).await;
    }));
    tokio::select! {
        _ = termination() => {}
        r = &mut agent_task => {
            let _ = stop_tx.send(true);
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.context("the local agent stopped")),
                Err(e) => Err(anyhow::anyhow!("the local agent crashed: {e}")),
            };
        }
    }
    eprintln!("hangar: shutting down (instances keep running)");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), agent_task).await;
    for t in run.tasks {
        t.abort();
    }
    Ok(())
}

/// Where hangar keeps its state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/hangar";

/// PIDs of `hangar` processes (other than this one) whose arguments name `dir`.
fn processes_using(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    let needle = dir.to_string_lossy().to_string();
    let Ok(rd) = std::fs::read_dir("/proc") else { return vec![] };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let args: Vec<String> = raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            if !args.first().is_some_and(|a0| a0.ends_with("hangar")) {
                return false;
            }
            // Started with this data dir, or with none at all while it is the default one.
            let names_it = args.iter().skip(1).any(|a| a.starts_with(&needle));
            let runs_fleet = args.get(1).is_some_and(|c| matches!(c.as_str(), "up" | "hub" | "agent"));
            let default_dir = !args.iter().any(|a| a.starts_with("--data-dir") || a.starts_with("--agent-dir")) && dir == Path::new(DEFAULT_DATA_DIR);
            names_it || (runs_fleet && default_dir)
        })
        .collect()
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill").args([sig, &pid.to_string()]).stderr(std::process::Stdio::null()).status();
}

/// `hangar down`: stops everything a data dir's fleet runs on this machine: its
/// `hangar` processes, its sandboxes (and their cgroups), its volume pool mount and
/// loop device. With `purge`, removes the data dir too.
pub async fn down(data_dir: &Path, purge: bool) -> Result<Vec<String>> {
    let mut done = vec![];
    let data_dir = data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_path_buf());
    let pids = processes_using(&data_dir);
    for pid in &pids {
        signal(*pid, "-TERM");
    }
    for _ in 0..50 {
        if processes_using(&data_dir).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pid in processes_using(&data_dir) {
        signal(pid, "-KILL");
    }
    if !pids.is_empty() {
        done.push(format!("stopped {} hangar process(es)", pids.len()));
    }
    // Best effort: every step runs even when an earlier one failed, so one stuck object
    // does not leave the rest behind; the errors are reported together at the end.
    let mut errors: Vec<String> = vec![];
    // Hosts made by the local provider first: their agents were stopped above.
    let hosts_dir = data_dir.join("hosts");
    if let Ok(rd) = std::fs::read_dir(&hosts_dir) {
        let range = read_cluster_range(&data_dir);
        let net = crate::provider::HostNet::new(&data_dir, &range);
        for e in rd.flatten().filter(|e| e.path().is_dir()) {
            let host = e.file_name().to_string_lossy().into_owned();
            let errs = crate::provider::remove_host_dir(&net, &e.path(), &host, purge).await;
            if errs.is_empty() {
                done.push(format!("stopped host {host}"));
            }
            errors.extend(errs.into_iter().map(|x| format!("host {host}: {x}")));
        }
        if std::path::Path::new("/sys/class/net").join(&net.bridge).exists() {
            let _ = std::process::Command::new("ip").args(["link", "del", &net.bridge]).status();
        }
    }
    let paths = AgentPaths::new(data_dir.join("agent"));
    remove_agent_state(&paths, true, &mut done, &mut errors).await;
    // The shared parent cgroups go too once no sandbox of any fleet uses them
    // (rmdir of a non-empty cgroup fails, which is what keeps others' safe).
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for c in rd.flatten() {
            let _ = std::fs::remove_dir(c.path().join("hangar"));
        }
    }
    if !errors.is_empty() {
        bail!("some things could not be removed (the rest was; the data dir was kept):\n  {}", errors.join("\n  "));
    }
    // Never delete through a mount: a pool still mounted below the data dir (busy, lazily
    // detached) would have its volumes deleted with it.
    let prefix = format!("{}/", data_dir.display());
    let mounted: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    if purge && !mounted.is_empty() {
        bail!("not removing {}: still mounted below it: {}", data_dir.display(), mounted.join(", "));
    }
    if purge && data_dir.exists() {
        std::fs::remove_dir_all(&data_dir).with_context(|| format!("cannot remove {}", data_dir.display()))?;
        done.push(format!("removed {}", data_dir.display()));
    }
    Ok(done)
}

/// Removes what one agent left on this machine: its sandboxes (and their cgroups), their
/// network namespaces, its volume pool mount and loop device, and, when the agent ran in
/// this namespace (`own_netns`), its tenant bridges and nftables table.
pub async fn remove_agent_state(paths: &AgentPaths, own_netns: bool, done: &mut Vec<String>, errors: &mut Vec<String>) {
    let place = if own_netns { hangar_agent::drivers::HostNetwork::Shared } else { hangar_agent::drivers::HostNetwork::Separate };
    let r = hangar_agent::teardown(paths, hangar_agent::Teardown::Everything(place)).await;
    done.extend(r.done);
    errors.extend(r.errors);
}

/// The cluster range a data dir's hub was started with, as its local agent last saw it.
fn read_cluster_range(data_dir: &Path) -> hangar_types::net::ClusterRange {
    std::fs::read_to_string(HubPaths::new(data_dir).root.join("cluster-range")).ok().and_then(|r| r.trim().parse().ok()).unwrap_or_default()
}
