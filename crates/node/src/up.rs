//! `hangar up` (a hub and a local agent in one process, on SQLite) and the options of
//! `hangar agent run`.

use crate::config;
use crate::hub::{hub_url, init, start_hub, termination};
use anyhow::Result;
use hangar_agent::daemon::AgentOptions;
use hangar_agent::drivers::DriverConfig;
use hangar_agent::identity::AgentPaths;
use hangar_hub::HubConfig;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub struct AgentArgs {
    pub drivers: DriverConfig,
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub interval: Duration,
    /// What one exec may ask of this host (timeout, concurrency).
    pub exec: hangar_agent::endpoint::ExecLimits,
}

pub fn agent_options(paths: AgentPaths, a: &AgentArgs, hub_url: Option<String>) -> AgentOptions {
    AgentOptions { paths, drivers: a.drivers.clone(), listen: a.listen, advertise: a.advertise.clone(), interval: a.interval, hub_url, exec: a.exec, local_endpoints: None }
}

/// `hangar up`: hub and a local agent in one process, on SQLite.
pub async fn up(data_dir: &Path, listen: SocketAddr, agent: AgentArgs, config_path: &Path, hub_cfg: HubConfig, provider_agent_args: Vec<String>) -> Result<()> {
    let fresh = init(data_dir, &listen, &[], config_path).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = start_hub(data_dir, listen, hub_cfg, stop_rx.clone(), Some(provider_agent_args)).await?;
    let url = hub_url(&run.addr);
    // The client config follows the port actually bound (--listen :0 picks a free one).
    let mut cfg = config::load(config_path).ok();
    if let Some(c) = cfg.as_mut()
        && c.hub_url != url {
            c.hub_url = url.clone();
            config::save(config_path, c)?;
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
    // The hub reaches this agent's endpoint in process (see hangar_tls::serve::LocalEndpoints).
    let opts = AgentOptions { local_endpoints: Some(run.hub.local_endpoints()), ..agent_options(paths, &agent, Some(url.clone())) };
    let mut agent_task = tokio::spawn(hangar_agent::daemon::run(opts, async move {
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
