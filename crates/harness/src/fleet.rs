//! Throwaway fleets on this machine, driving the real `hangar` binary (its path is a
//! parameter: the tools pass their own executable, the integration tests
//! `env!("CARGO_BIN_EXE_hangar")`).
//!
//! - [`Fleet`]: `hangar up` (hub and agent in one process) in a temp dir, on a free port
//!   and a cluster range of its own; dropping it kills the process and runs
//!   `hangar down --purge`, which removes its sandboxes, networks, mounts and loop device.
//! - [`SplitFleet`]: hub and agent as separate processes, so the agent can be killed and
//!   restarted on its own.

use anyhow::{bail, Context, Result};
use hangar_client::HubClient;
use hangar_types::api::HostState;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How to start a [`Fleet`].
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// The `hangar` binary.
    pub bin: PathBuf,
    /// Prefix of the temp dir's name (tells fleets of different tools apart).
    pub prefix: String,
    /// Size of the agent's loop-file volume pool.
    pub pool_size_mib: u64,
    /// More `hangar up` arguments.
    pub up_args: Vec<String>,
    /// More environment for the `hangar up` process.
    pub env: Vec<(String, String)>,
}

impl FleetOptions {
    pub fn new(bin: impl Into<PathBuf>, prefix: &str) -> FleetOptions {
        FleetOptions { bin: bin.into(), prefix: prefix.into(), pool_size_mib: 8192, up_args: vec![], env: vec![] }
    }
}

/// A fleet of a tool's or a test's own: `hangar up` in a temp dir, removed on drop.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    /// The fleet's cluster range is `10.<range_octet>.0.0/16`.
    pub range_octet: u8,
    /// More environment for the CLI commands run with [`Fleet::try_run`] (e.g. a token).
    pub extra_env: Vec<(String, String)>,
    opts: FleetOptions,
    /// One port for the fleet's life, so a restart keeps the clients' URL.
    listen: String,
    /// The SSH gateway's port, also kept across restarts (so is its host key).
    pub ssh_port: u16,
    child: Option<Child>,
}

impl Fleet {
    /// Starts it and waits until its host is ready.
    pub async fn start(opts: FleetOptions) -> Result<Fleet> {
        // A port that was free when picked can be taken by another test's process
        // before `hangar up` binds it: such a start is tried again, on new ports and in
        // a new directory (the failed one is torn down as the fleet is dropped).
        let mut attempts = 0;
        loop {
            attempts += 1;
            let dir = tempfile::Builder::new().prefix(&opts.prefix).tempdir()?;
            let listen = format!("127.0.0.1:{}", free_port()?);
            let ssh_port = free_port()?;
            let mut f = Fleet { dir, range_octet: free_range_octet(), extra_env: vec![], opts: opts.clone(), listen, ssh_port, child: None };
            f.spawn()?;
            match f.wait_ready().await {
                Ok(()) => return Ok(f),
                Err(e) if attempts < 3 && f.log().contains("Address already in use") => eprintln!("fleet: starting again on other ports: {e:#}"),
                Err(e) => return Err(e),
            }
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The client config `hangar up` wrote (admin token, CA, URL).
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    /// A client of the fleet's hub with the admin token.
    pub fn client(&self) -> Result<HubClient> {
        let cfg = hangar_node::config::load(&self.config())?;
        Ok(HubClient::new(&cfg.hub_url, &cfg.ca_pem, &cfg.token)?)
    }

    /// The log of the `hangar up` process.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("up.log")
    }

    /// Starts `hangar up` (after [`Fleet::kill9`], on the same data dir and port).
    pub fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let child = Command::new(&self.opts.bin)
            .args(["up", "--listen", &self.listen, "--pool-size-mib", &self.opts.pool_size_mib.to_string(), "--interval", "0.5", "--cluster-range"])
            .arg(format!("10.{}.0.0/16", self.range_octet))
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--ssh-listen")
            .arg(format!("127.0.0.1:{}", self.ssh_port))
            .args(&self.opts.up_args)
            .env("HANGAR_CONFIG", self.config())
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start a local fleet with {}", self.opts.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the API answers and a host is ready (90 s at most; at once an error
    /// when `hangar up` has ended).
    pub async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(c) = self.client()
                && c.host_list().await.is_ok_and(|h| h.iter().any(|h| h.state == HostState::Ready)) {
                    return Ok(());
                }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("the local fleet's `hangar up` ended ({status}): see {}; its log ends:\n{}", self.log_path().display(), tail(&self.log(), 40));
            }
            if Instant::now() > deadline {
                bail!("the local fleet did not come up within 90s: see {}; its log ends:\n{}", self.log_path().display(), tail(&self.log(), 40));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Replaces the extra environment of the `hangar up` processes started from now on
    /// (e.g. a test's failpoint for the next restart).
    pub fn set_env(&mut self, env: Vec<(String, String)>) {
        self.opts.env = env;
    }

    /// kill -9 of hub and agent (one process).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// kill -9 of hub and agent, then a start on the same data dir, until ready.
    pub async fn crash_and_restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()?;
        self.wait_ready().await
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Resident memory of the `hangar up` process (hub and agent), KiB.
    pub fn rss_kib(&self) -> u64 {
        let Some(pid) = self.pid() else { return 0 };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
            .unwrap_or(0)
    }

    /// CPU seconds of the `hangar up` process (user+system) and of its reaped children
    /// (runc, btrfs, nft it ran), from /proc/PID/stat.
    pub fn cpu_secs(&self) -> (f64, f64) {
        let Some(pid) = self.pid() else { return (0.0, 0.0) };
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
        let Some(pid) = self.pid() else { return 0 };
        std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
    }

    /// Runs `hangar ARGS` against this fleet (its client config; no token or hub from
    /// the environment unless [`Fleet::extra_env`] sets them).
    pub fn try_run(&self, args: &[&str]) -> Output {
        let mut c = Command::new(&self.opts.bin);
        c.args(args).env("HANGAR_CONFIG", self.config()).env_remove("HANGAR_TOKEN").env_remove("HANGAR_HUB");
        c.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        c.output().expect("run hangar")
    }

    /// For tests: runs a CLI command that must succeed; returns stdout (panics with the
    /// fleet's log otherwise).
    pub fn run(&self, args: &[&str]) -> String {
        let o = self.try_run(args);
        assert!(
            o.status.success(),
            "hangar {args:?} failed ({}):\nstdout: {}\nstderr: {}\nlog:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            tail(&self.log(), 40)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// For tests: [`Fleet::run`] with `--json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let s = self.run(&a);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("hangar {args:?} printed no JSON ({e}): {s}"))
    }

    /// For tests: runs a CLI command that must fail; returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let o = self.try_run(args);
        assert!(!o.status.success(), "hangar {args:?} should fail but printed: {}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// Leaves the fleet running, its dir in place (`smoke --keep`): nothing is killed
    /// or removed; `hangar down --purge --data-dir DIR` removes it later.
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill9();
        down(&self.opts.bin, &self.data_dir());
    }
}

/// Removes everything a data dir's fleet made, whatever state it is in
/// (`hangar down --purge`); a failure is reported on stderr.
pub fn down(bin: &Path, data_dir: &Path) {
    match Command::new(bin).args(["down", "--purge", "--data-dir"]).arg(data_dir).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!("hangar down failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => eprintln!("cannot run hangar down: {e}"),
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let l: Vec<&str> = s.lines().collect();
    l[l.len().saturating_sub(n)..].join("\n")
}

/// X of a `10.X.0.0/16` no hangar bridge on this machine uses yet, X in 100..240 (below
/// the default 10.240.0.0/12, so a default fleet on the same machine never claims it).
/// Fleets side by side (two soak runners, tests in parallel) must never share a bridge:
/// the search starts at a place that differs per process and per call.
fn free_range_octet() -> u8 {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
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
    let start = ((seed % 140) + 37 * CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) % 140;
    (0..140u64).map(|i| 100 + ((start + i) % 140) as u8).find(|o| !used.contains(o)).unwrap_or(100 + start as u8)
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A fleet with the hub and the agent as separate processes, so the agent can be killed
/// and restarted on its own (heartbeat and crash measurements).
pub struct SplitFleet {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    hub: Option<Child>,
    agent: Option<Child>,
    agent_args: Vec<String>,
}

impl SplitFleet {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn hangar(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new(&self.bin).args(args).env("HANGAR_CONFIG", self.dir.path().join("config.json")).output()?)
    }

    fn spawn(&self, args: &[String], log: &str) -> Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(log))?;
        Ok(Command::new(&self.bin)
            .args(args)
            .env("HANGAR_CONFIG", self.dir.path().join("config.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?)
    }

    pub async fn start(bin: &Path, prefix: &str, stale_after: f64) -> Result<(SplitFleet, HubClient)> {
        let range = format!("10.{}.0.0/16", free_range_octet());
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let mut f = SplitFleet { dir, bin: bin.to_path_buf(), hub: None, agent: None, agent_args: vec![] };
        let data = f.data().display().to_string();
        let listen = format!("127.0.0.1:{}", free_port()?);
        let o = f.hangar(&["init", "--data-dir", &data, "--listen", &listen])?;
        if !o.status.success() {
            bail!("hangar init failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        // The SSH gateway on a port of its own choosing (`GET /v1/ssh` says which).
        let hub_args: Vec<String> = ["hub", "serve", "--data-dir", &data, "--listen", &listen, "--cluster-range", &range, "--stale-after", &stale_after.to_string(), "--ssh-listen", "127.0.0.1:0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        f.hub = Some(f.spawn(&hub_args, "hub.log")?);
        let cfg = hangar_node::config::load(&f.dir.path().join("config.json"))?;
        let c = HubClient::new(&cfg.hub_url, &cfg.ca_pem, &cfg.token)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.info().await.is_err() {
            if Instant::now() > deadline {
                bail!("the hub did not come up: see {}", f.dir.path().join("hub.log").display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let add = c.host_add(&hangar_types::api::HostAdd { name: "node-a".parse()?, provider: None, join_ttl_secs: None }).await?;
        let agent_dir = f.data().join("agent").display().to_string();
        let o = f.hangar(&["agent", "join", "--hub", &cfg.hub_url, "--token", &add.join_token, "--agent-dir", &agent_dir])?;
        if !o.status.success() {
            bail!("agent join failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        f.agent_args = ["agent", "run", "--agent-dir", &agent_dir, "--pool-size-mib", "2048", "--interval", "0.5"].iter().map(|s| s.to_string()).collect();
        f.start_agent().await?;
        wait_host(&c, "node-a", HostState::Ready, Duration::from_secs(60)).await?;
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

impl Drop for SplitFleet {
    fn drop(&mut self) {
        self.kill_agent();
        if let Some(mut h) = self.hub.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        down(&self.bin, &self.data());
    }
}

/// Waits until `host` is in `state`; returns how long that took.
pub async fn wait_host(c: &HubClient, host: &str, state: HostState, within: Duration) -> Result<Duration> {
    let t = Instant::now();
    loop {
        let h = c.host_get(host).await;
        if h.as_ref().is_ok_and(|h| h.state == state) {
            return Ok(t.elapsed());
        }
        if t.elapsed() > within {
            let now = h.map(|h| h.state.as_str().to_string()).unwrap_or_else(|e| format!("unknown ({e})"));
            bail!("host {host} is {now} after {}s, expected {}", within.as_secs(), state.as_str());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
