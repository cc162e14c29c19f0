//! The agent daemon: the reconcile loop (which doubles as the heartbeat), the desired
//! state long-poll, and the mTLS endpoint the hub calls for exec, logs and stats.
//!
//! When the hub is unreachable the loop keeps converging to the last document it has
//! (kept on disk), so running instances keep running.

use crate::drivers::volume::VolumeDriver;
use crate::drivers::{self, DriverConfig};
use crate::endpoint;
use crate::identity::AgentPaths;
use crate::reconcile::Reconciler;
use anyhow::{Context, Result};
use hangar_client::HostClient;
use hangar_types::api::Capacity;
use hangar_types::protocol::{AgentReport, DesiredDoc, PROTOCOL_VERSION};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub paths: AgentPaths,
    pub drivers: DriverConfig,
    /// Where the mTLS endpoint listens.
    pub listen: SocketAddr,
    /// The host name or IP the hub reaches the endpoint at (default: the listen IP).
    pub advertise: Option<String>,
    /// Reconcile and heartbeat interval.
    pub interval: Duration,
    /// The hub's URL, when it differs from the one joined at (e.g. `hangar up` on a
    /// port picked anew at each start).
    pub hub_url: Option<String>,
    /// What one exec may ask (timeout, concurrency).
    pub exec: endpoint::ExecLimits,
    /// Set when the hub runs in this process (`hangar up`): the endpoint is also
    /// served there, straight to the hub (the proxy's bytes then skip a TLS leg).
    pub local_endpoints: Option<hangar_tls::serve::LocalEndpoints>,
}

/// What this host offers, reported with every heartbeat.
async fn capacity(volumes: &dyn VolumeDriver) -> Capacity {
    let vcpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let mem_mib = crate::host::meminfo_mib("MemTotal:");
    // Any volume's path: its parent is the filesystem volumes live on.
    let probe: hangar_types::VolumeId = "capacity-probe".parse().expect("a valid volume id");
    let disk_mib = tokio::process::Command::new("df")
        .args(["-B1M", "--output=size"])
        .arg(volumes.path(&probe).parent().unwrap_or(std::path::Path::new("/")))
        .output()
        .await
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0);
    Capacity { vcpus, mem_mib, disk_mib }
}

/// Runs the agent until `shutdown` resolves. Sandboxes keep running after it returns.
pub async fn run(opts: AgentOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    hangar_tls::install_crypto_provider();
    let paths = opts.paths.clone();
    let _lock = paths.lock()?;
    let (identity, ca_pem, cert_pem, key_pem) = paths.load()?;
    let hub_url = opts.hub_url.clone().unwrap_or_else(|| identity.hub_url.clone());
    let hub = HostClient::new(&hub_url, &ca_pem, &cert_pem, &key_pem)?;
    // Renewed host certificates replace the client and the endpoint's certificate in place.
    let (hub_tx, hub_rx) = watch::channel(hub.clone());
    let endpoint_cert = hangar_tls::SwappableCert::new(&cert_pem, &key_pem)?;
    let opened = drivers::open(&paths, &identity.host_id.short(), &opts.drivers).await?;
    let drivers = opened.describe();
    let drivers::Drivers { runtime, volumes, network } = opened;
    network.guard_hub(hub_addresses(&hub_url).await);
    let reconciler = Reconciler::new(paths.clone(), runtime.clone(), volumes.clone(), network.clone());
    let snapshots = crate::snapshots::Snapshots::new(volumes.clone(), runtime.clone());

    let listener = tokio::net::TcpListener::bind(opts.listen).await.with_context(|| format!("cannot listen on {}", opts.listen))?;
    let local = listener.local_addr()?;
    let advertise = opts.advertise.clone().unwrap_or_else(|| local.ip().to_string());
    let endpoint_url = format!("https://{}:{}", if advertise.contains(':') { format!("[{advertise}]") } else { advertise }, local.port());
    // Host-to-host transfers (crate::transfer): the endpoint also lets in the source
    // hosts of the transfers it expects, by fingerprint.
    let transfers = crate::transfer::Transfers::new(volumes.clone(), paths.clone(), identity.hub_client_fingerprint.clone());
    transfers.sweep().await;
    let tls = hangar_tls::server_config_swappable_with_peers(endpoint_cert.clone(), &ca_pem, transfers.peer_pins())?;
    let cap = capacity(volumes.as_ref()).await;
    let last_pass = Arc::new(std::sync::Mutex::new(endpoint::LastPass { host: identity.host.to_string(), capacity: cap, drivers: drivers.clone(), ..Default::default() }));
    // Secrets and the proxy (crate::secrets, crate::proxy): fed from each document.
    let secrets = crate::secrets::Secrets::new(&paths);
    let proxy_targets = Arc::new(crate::proxy::ProxyTargets::default());
    let proxy = crate::proxy::router(proxy_targets.clone(), identity.hub_client_fingerprint.clone());
    let app = endpoint::router(endpoint::EndpointState {
        paths: paths.clone(),
        runtime: runtime.clone(),
        volumes: volumes.clone(),
        network: network.clone(),
        hub_fingerprint: identity.hub_client_fingerprint.clone(),
        last_pass: last_pass.clone(),
        logs: opts.drivers.logs,
        exec: opts.exec,
        execs_running: Default::default(),
        snapshots: snapshots.clone(),
    })
    .merge(proxy)
    .merge(crate::transfer::router(transfers));
    let _served_locally = opts.local_endpoints.as_ref().map(|l| l.serve(&endpoint_url, app.clone(), &identity.hub_client_fingerprint));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut endpoint_stop = stop_rx.clone();
    let server = tokio::spawn(hangar_tls::serve::serve_router(listener, tls, app, async move {
        let _ = endpoint_stop.wait_for(|s| *s).await;
    }));

    // The last document survives restarts so a hub outage changes nothing here.
    let cached: Option<DesiredDoc> = paths.last_desired().and_then(Result::ok);
    let (doc_tx, mut doc_rx) = watch::channel(cached);
    let poller = {
        let hub_rx = hub_rx.clone();
        let paths = paths.clone();
        let doc_tx = doc_tx.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let after = doc_tx.borrow().as_ref().map(|d| d.generation);
                let hub = hub_rx.borrow().clone();
                let r = tokio::select! {
                    r = hub.desired(after, Duration::from_secs(25)) => r,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match r {
                    Ok(doc) => {
                        backoff = Duration::from_millis(200);
                        if after.is_none_or(|after| doc.generation > after) {
                            if let Ok(s) = serde_json::to_string(&doc) {
                                // Atomically (a kill mid-write must not leave a torn
                                // document) and 0600: it holds tenants' env and commands.
                                if let Err(e) = crate::files::write_private(&paths.desired(), s.as_bytes()) {
                                    tracing::warn!(error = %e, "cannot keep the desired document on disk");
                                }
                            }
                            doc_tx.send_replace(Some(doc));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot fetch desired state; keeping the last one");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
    };

    tracing::info!(host = %identity.host, endpoint = %endpoint_url, "agent running");
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut renewal = Renewal { paths: paths.clone(), hub_url: hub_url.clone(), ca_pem: ca_pem.clone(), cert_pem, endpoint: endpoint_cert, retry_at: None };
    let mut hub = hub;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = doc_rx.changed() => { if r.is_err() { break; } }
            _ = &mut shutdown => break,
        }
        let doc = doc_rx.borrow_and_update().clone();
        if let Some(d) = &doc {
            // Before anything starts: a sandbox mounts its secrets when it is made.
            secrets.sync(&hub, d).await;
            proxy_targets.update(d);
        }
        let mut observed = match &doc {
            Some(d) => reconciler.converge(d).await,
            None => vec![],
        };
        // Scheduled snapshots, then every instance's snapshots into the report.
        if let Some(d) = &doc {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.as_secs() as i64).unwrap_or(0);
            snapshots.schedule_pass(&hub, d, now).await;
            if let Some(mut held) = snapshots.observed().await {
                for o in observed.iter_mut().filter(|o| d.instances.iter().any(|i| i.id == o.id && i.desired != hangar_types::DesiredState::Deleted)) {
                    o.snapshots = Some(held.remove(&hangar_types::VolumeId::from(&o.id.sandbox_id())).unwrap_or_default());
                }
            }
        }
        if let Some(d) = &doc {
            let mut lp = last_pass.lock().unwrap_or_else(|e| e.into_inner());
            lp.generation = d.generation;
            lp.instances = node_instances(d, &observed);
        }
        let report = AgentReport {
            schema_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            capacity: cap,
            endpoint: endpoint_url.clone(),
            drivers: drivers.clone(),
            instances: observed,
        };
        if let Err(e) = hub.report(&report).await {
            tracing::warn!(error = %e, "cannot report to the hub; will retry");
        }
        let rotate = doc.as_ref().and_then(|d| d.rotate_cert.as_deref());
        if let Some(renewed) = renewal.check(&hub, rotate).await {
            hub = renewed;
            hub_tx.send_replace(hub.clone());
        }
        if let Some(d) = &doc {
            reconciler.sync_network(d).await;
        }
    }
    let _ = stop_tx.send(true);
    poller.abort();
    let _ = server.await;
    Ok(())
}

/// Renews the host certificate when less than a third of its lifetime is left (or it
/// was made by an older hub), or at once when the hub's document asks to replace this
/// very certificate (`host rotate-cert`), over mTLS with the current one.
struct Renewal {
    paths: AgentPaths,
    hub_url: String,
    ca_pem: String,
    cert_pem: String,
    endpoint: Arc<hangar_tls::SwappableCert>,
    /// After a failure, when to try again.
    retry_at: Option<tokio::time::Instant>,
}

impl Renewal {
    /// A client with the renewed certificate, if one was installed now.
    async fn check(&mut self, hub: &HostClient, rotate: Option<&str>) -> Option<HostClient> {
        if self.retry_at.is_some_and(|t| tokio::time::Instant::now() < t) {
            return None;
        }
        // Asked to replace the certificate it holds: once renewed, the document's
        // fingerprint no longer matches, so one request makes one renewal.
        let asked = rotate.is_some_and(|fp| hangar_tls::fingerprint_pem(&self.cert_pem).is_ok_and(|mine| mine == fp));
        match hangar_tls::renewal_due(&self.cert_pem, std::time::SystemTime::now()) {
            Ok(true) => {}
            Ok(false) if asked => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the host certificate's validity");
                return None;
            }
        }
        match self.renew(hub).await {
            Ok(client) => {
                self.retry_at = None;
                tracing::info!("host certificate renewed");
                Some(client)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the host certificate; will retry");
                self.retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                None
            }
        }
    }

    async fn renew(&mut self, hub: &HostClient) -> Result<HostClient> {
        let (csr_pem, key_pem) = hangar_tls::generate_csr("hangar-agent")?;
        let resp = hub.renew(&hangar_types::protocol::RenewRequest { csr_pem }).await?;
        self.paths.install_renewal(&resp.cert_pem, &key_pem)?;
        self.endpoint.replace(&resp.cert_pem, &key_pem)?;
        self.cert_pem = resp.cert_pem;
        Ok(HostClient::new(&self.hub_url, &self.ca_pem, &self.cert_pem, &key_pem)?)
    }
}

/// The instances of a document with what a pass observed, for the status endpoint.
pub fn node_instances(doc: &DesiredDoc, observed: &[hangar_types::protocol::ObservedInstance]) -> Vec<hangar_types::api::NodeInstance> {
    doc.instances
        .iter()
        .map(|d| hangar_types::api::NodeInstance {
            id: d.id,
            tenant: d.tenant.clone(),
            name: d.name.clone(),
            desired: d.desired,
            observed: observed.iter().find(|o| o.id == d.id).map(|o| o.state).unwrap_or(hangar_types::ObservedState::Unknown),
            memory_bytes: None,
            pids: None,
        })
        .collect()
}

/// The IPv4 addresses of the hub's URL (a literal, or what its name resolves to now),
/// which the network driver keeps sandboxes from: a hub outside the cluster range is
/// otherwise the outside world to them. None on a URL that does not resolve (the agent
/// cannot reach that hub either).
async fn hub_addresses(hub_url: &str) -> Vec<std::net::Ipv4Addr> {
    let rest = hub_url.split_once("://").map_or(hub_url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !authority.ends_with(']') { authority.to_string() } else { format!("{authority}:443") };
    match tokio::net::lookup_host(authority.as_str()).await {
        Ok(addrs) => addrs.filter_map(|a| match a.ip() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
        .collect(),
        Err(e) => {
            tracing::warn!(hub = %hub_url, error = %e, "cannot resolve the hub's address to keep sandboxes from it");
            vec![]
        }
    }
}

/// One-shot convergence to a document from a file, without a hub: `hangar agent
/// reconcile`. Holds the agent dir's lock, so it never races a running agent. Passes
/// until every instance is as desired (at most `passes`), then syncs the network.
pub async fn reconcile_once(paths: &AgentPaths, drivers: &DriverConfig, doc: &DesiredDoc, passes: u32) -> Result<Vec<hangar_types::protocol::ObservedInstance>> {
    let _lock = paths.lock()?;
    let owner = paths.load().map(|(id, ..)| id.host_id.short()).unwrap_or_else(|_| doc.host_id.short());
    let drivers::Drivers { runtime, volumes, network } = drivers::open(paths, &owner, drivers).await?;
    let reconciler = Reconciler::new(paths.clone(), runtime, volumes, network);
    // What `hangar down` reads to find this host's networks.
    crate::files::write_private(&paths.desired(), serde_json::to_string(doc)?.as_bytes())?;
    let mut observed = vec![];
    for _ in 0..passes.max(1) {
        observed = reconciler.converge(doc).await;
        let done = doc.instances.iter().all(|d| observed.iter().find(|o| o.id == d.id).is_some_and(|o| d.desired.is_met_by(o.state)));
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reconciler.sync_network(doc).await;
    Ok(observed)
}
