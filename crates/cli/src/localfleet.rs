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
    listen: String,
    range: String,
    /// More `hangar up` arguments.
    extra: Vec<String>,
}

impl LocalFleet {
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Resident memory of the `hangar up` process (hub and agent), KiB.
    pub fn rss_kib(&self) -> u64 {
        let Some(pid) = self.child.as_ref().map(|c| c.id()) else { return 0 };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
            .unwrap_or(0)
    }

    /// Starts it and waits until its host is ready, on a cluster range of its own.
    pub async fn start(prefix: &str) -> Result<(LocalFleet, HubClient)> {
        Self::start_with(prefix, &[]).await
    }

    /// Like [`LocalFleet::start`], with more `hangar up` arguments.
    pub async fn start_with(prefix: &str, extra: &[&str]) -> Result<(LocalFleet, HubClient)> {
        let range = free_range();
        let range = range.as_str();
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        // One port for the fleet's life, so a restart keeps the clients' URL.
        let listen = format!("127.0.0.1:{}", free_port()?);
        let mut fleet = LocalFleet { dir, child: None, listen, range: range.to_string(), extra: extra.iter().map(|s| s.to_string()).collect() };
        fleet.spawn()?;
        let c = fleet.wait_ready().await?;
        Ok((fleet, c))
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("up.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .args(["up", "--listen", &self.listen, "--pool-size-mib", "8192", "--interval", "0.5", "--cluster-range", &self.range, "--data-dir"])
            .arg(self.data())
            .args(&self.extra)
            .env("HANGAR_CONFIG", self.dir.path().join("config.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start a local fleet")?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&self) -> Result<HubClient> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(cfg) = crate::config::load(&self.dir.path().join("config.json")) {
                let c = HubClient::new(&cfg.hub_url, &cfg.ca_pem, &cfg.token)?;
                if c.host_list().await.is_ok_and(|h| h.iter().any(|h| h.state == HostState::Ready)) {
                    return Ok(c);
                }
            }
            if Instant::now() > deadline {
                bail!("the local fleet did not come up: see {}", self.dir.path().join("up.log").display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// kill -9 of hub and agent (one process), then a start on the same data dir.
    pub async fn crash_and_restart(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn()?;
        self.wait_ready().await.map(|_| ())
    }

    /// CPU seconds of the `hangar up` process (user+system) and of its reaped children
    /// (runc, btrfs, nft it ran), from /proc/PID/stat.
    pub fn cpu_secs(&self) -> (f64, f64) {
        let Some(pid) = self.child.as_ref().map(|c| c.id()) else { return (0.0, 0.0) };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at field 3.
        let rest: Vec<f64> = stat.rsplit(')').next().unwrap_or("").split_whitespace().filter_map(|x| x.parse().ok()).collect();
        let tick = 100.0; // USER_HZ on Linux
        let f = |i: usize| rest.get(i).copied().unwrap_or(0.0) / tick;
        // utime, stime, cutime, cstime are fields 14-17; `rest` starts at field 4 (ppid):
        // the state letter does not parse and is dropped.
        (f(10) + f(11), f(12) + f(13))
    }

    /// Open file descriptors of the `hangar up` process.
    pub fn fds(&self) -> usize {
        let Some(pid) = self.child.as_ref().map(|c| c.id()) else { return 0 };
        std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
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


/// A fleet with the hub and the agent as separate processes, so the agent can be killed
/// and restarted on its own (heartbeat and crash measurements).
pub struct SplitFleet {
    pub dir: tempfile::TempDir,
    hub: Option<Child>,
    agent: Option<Child>,
    agent_args: Vec<String>,
}

/// A `10.X.0.0/16` no hangar bridge on this machine uses yet, X in 200..240 (below the
/// default 10.240.0.0/12, so a default fleet on the same machine never claims it), starting
/// from a place that differs per process: fleets of tools running side by side (two soak
/// runners, a smoke beside a bench) must never share a bridge.
fn free_range() -> String {
    let used: std::collections::HashSet<u8> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|n| hangar_types::net::bridge_subnet(&n))
                .filter(|s| s.octets()[0] == 10)
                .map(|s| s.octets()[1])
                .collect()
        })
        .unwrap_or_default();
    let seed = (std::process::id() as u64).wrapping_mul(2_654_435_761) ^ time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
    let start = (seed % 40) as u8;
    let octet = (0..40u8).map(|i| 200 + (start + i) % 40).find(|o| !used.contains(o)).unwrap_or(200 + start);
    format!("10.{octet}.0.0/16")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl SplitFleet {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn hangar(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new(std::env::current_exe()?).args(args).env("HANGAR_CONFIG", self.dir.path().join("config.json")).output()?)
    }

    fn spawn(&self, args: &[String], log: &str) -> Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(log))?;
        Ok(Command::new(std::env::current_exe()?)
            .args(args)
            .env("HANGAR_CONFIG", self.dir.path().join("config.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?)
    }

    pub async fn start(prefix: &str, stale_after: f64) -> Result<(SplitFleet, HubClient)> {
        let range = free_range();
        let range = range.as_str();
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let mut f = SplitFleet { dir, hub: None, agent: None, agent_args: vec![] };
        let data = f.data().display().to_string();
        let listen = format!("127.0.0.1:{}", free_port()?);
        let o = f.hangar(&["init", "--data-dir", &data, "--listen", &listen])?;
        if !o.status.success() {
            bail!("hangar init failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let hub_args: Vec<String> = ["hub", "serve", "--data-dir", &data, "--listen", &listen, "--cluster-range", range, "--stale-after", &stale_after.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        f.hub = Some(f.spawn(&hub_args, "hub.log")?);
        let cfg = crate::config::load(&f.dir.path().join("config.json"))?;
        let c = HubClient::new(&cfg.hub_url, &cfg.ca_pem, &cfg.token)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.info().await.is_err() {
            if Instant::now() > deadline {
                bail!("the hub did not come up: see {}", f.dir.path().join("hub.log").display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let add = c.host_add(&hangar_types::api::HostAdd { name: "node-a".parse()?, provider: None }).await?;
        let agent_dir = f.data().join("agent").display().to_string();
        let o = f.hangar(&["agent", "join", "--hub", &cfg.hub_url, "--token", &add.join_token, "--agent-dir", &agent_dir])?;
        if !o.status.success() {
            bail!("agent join failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        f.agent_args = ["agent", "run", "--agent-dir", &agent_dir, "--pool-size-mib", "2048", "--interval", "0.5"].iter().map(|s| s.to_string()).collect();
        f.start_agent().await?;
        wait_host(&c, HostState::Ready).await?;
        Ok((f, c))
    }

    pub fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    pub async fn start_agent(&mut self) -> Result<()> {
        self.agent = Some(self.spawn(&self.agent_args, "agent.log")?);
        Ok(())
    }
}

/// Waits until host node-a is in `state` (60 s at most).
pub async fn wait_host(c: &HubClient, state: HostState) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if c.host_get("node-a").await.is_ok_and(|h| h.state == state) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("host node-a did not become {} within 60s", state.as_str());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for SplitFleet {
    fn drop(&mut self) {
        self.kill_agent();
        if let Some(mut h) = self.hub.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        if let Ok(exe) = std::env::current_exe() {
            let _ = Command::new(exe).args(["down", "--purge", "--data-dir"]).arg(self.data()).output();
        }
    }
}
