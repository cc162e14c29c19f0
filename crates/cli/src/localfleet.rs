//! A throwaway local fleet for `hangar bench` and `hangar smoke`: `hangar up` on a free
//! port in a temp dir, with a cluster range of the caller's choosing; dropping it runs
//! `hangar down --purge`, which removes its sandboxes, networks, mounts and loop device.

use anyhow::{bail, Context, Result};
use hangar_client::HubClient;
use hangar_types::api::HostState;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A fleet of a tool's own: `hangar up` in a temp dir, removed with `hangar down`.
pub struct LocalFleet {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl LocalFleet {
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts it and waits until its host is ready; `range` is its cluster range.
    pub async fn start(prefix: &str, range: &str) -> Result<(LocalFleet, HubClient)> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let exe = std::env::current_exe()?;
        let log = std::fs::File::create(dir.path().join("up.log"))?;
        let child = Command::new(&exe)
            .args(["up", "--listen", "127.0.0.1:0", "--pool-size-mib", "8192", "--interval", "0.5", "--cluster-range", range, "--data-dir"])
            .arg(dir.path().join("data"))
            .env("HANGAR_CONFIG", dir.path().join("config.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start a local fleet")?;
        let fleet = LocalFleet { dir, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(cfg) = crate::config::load(&fleet.dir.path().join("config.json")) {
                if !cfg.hub_url.ends_with(":0") {
                    let c = HubClient::new(&cfg.hub_url, &cfg.ca_pem, &cfg.token)?;
                    if c.host_list().await.is_ok_and(|h| h.iter().any(|h| h.state == HostState::Ready)) {
                        return Ok((fleet, c));
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("the local fleet did not come up: see {}", fleet.dir.path().join("up.log").display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LocalFleet {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(exe) = std::env::current_exe() {
            let _ = Command::new(exe).args(["down", "--purge", "--data-dir"]).arg(self.data()).output();
        }
    }
}

