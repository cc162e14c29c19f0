//! The `local` host provider: more hosts on the hub's own machine, each a network
//! namespace with its own address, data dir and `hangar agent` process.
//!
//! Layout, under the hub's data dir:
//! - `hosts/<name>/agent/`: the host's agent dir (identity, runtime root, volume pool);
//! - `hosts/<name>/index`: its number on the host network (address `.index`);
//! - `hosts/<name>/agent.pid`, `agent.log`.
//!
//! Networking: the first /24 of the cluster range (never a tenant's) is the fleet's host
//! network. A bridge `hgp<subnet hex>` in the hub's namespace holds `.1`, where the hub
//! also listens; each host namespace `hgn-<fleet tag>-<name>` gets a veth into it with
//! `.index` and a default route via `.1`. The namespace's own tenant bridges, sandboxes
//! and nftables table live inside it, so hosts are as separate as machines on a LAN.
//! Set-up spawns `ip`: it runs once per host, far from any hot path.
//!
//! The hub's machine is the host namespaces' router to the outside world, so a
//! sandbox's traffic (masqueraded by its host to the host's address) could reach any
//! service of the hub's machine. A table `inet hangar_hostnet_<tag>` in the hub's
//! namespace lets in from the host network only the hub's API on `.1` and replies;
//! the rest is dropped (routed traffic to the outside world passes: it is forwarded).

use crate::proc::PidFile;
use anyhow::{bail, Context, Result};
use hangar_agent::identity::AgentPaths;
use hangar_hub::hosts::{HostProvider, ProvidedHost};
use hangar_types::net::ClusterRange;
use hangar_types::Name;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The fleet's host network: derived from the data dir and cluster range alone, so every
/// part of hangar (hub, provider, `down`) computes the same names.
#[derive(Clone, Debug)]
pub struct HostNet {
    pub gateway: Ipv4Addr,
    pub bridge: String,
    /// 8 hex digits from the data dir: keeps two fleets' namespaces and links apart.
    pub tag: String,
}

impl HostNet {
    pub fn new(data_dir: &Path, range: &ClusterRange) -> HostNet {
        let subnet = range.subnet(0);
        let o = subnet.octets();
        let tag = short_hash(&data_dir.to_string_lossy());
        HostNet { gateway: range.gateway(0), bridge: format!("hgp{:02x}{:02x}{:02x}", o[0], o[1], o[2]), tag }
    }

    pub fn address(&self, index: u8) -> Ipv4Addr {
        let g = u32::from(self.gateway);
        Ipv4Addr::from(g - 1 + index as u32)
    }

    pub fn netns(&self, host: &str) -> String {
        format!("hgn-{}-{host}", self.tag)
    }

    /// Names of the uplink veth: (hub's side, host's side); 11 characters each.
    pub fn uplink(&self, host: &str) -> (String, String) {
        let h = short_hash(&format!("{}/{host}", self.tag));
        (format!("hgu{h}"), format!("hgi{h}"))
    }

    /// The hub namespace's table that guards it from the host network.
    pub fn guard_table(&self) -> String {
        format!("hangar_hostnet_{}", self.tag)
    }

    /// The guard's rules (nft syntax, replacing the table): from the host network only
    /// the hub's API at the gateway, and replies to what the hub's machine opened (the
    /// hub's calls to agents).
    pub fn guard_rules(&self, hub_port: u16) -> String {
        let (t, b, gw) = (self.guard_table(), &self.bridge, self.gateway);
        format!(
            "table inet {t} {{}}\ndelete table inet {t}\ntable inet {t} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
             iifname \"{b}\" ct state established,related accept\n    iifname \"{b}\" ip daddr {gw} tcp dport {hub_port} accept\n    iifname \"{b}\" drop\n  }}\n}}\n"
        )
    }

    /// Removes the host network from the hub's namespace: its bridge and guard table.
    pub fn remove(&self) {
        if link_exists(&self.bridge) {
            let _ = ip(&["link", "del", &self.bridge]);
        }
        let _ = Command::new("nft").args(["delete", "table", "inet", &self.guard_table()]).stderr(Stdio::null()).status();
    }
}

/// Runs `nft -f -` with `script`.
fn nft(script: &str) -> Result<()> {
    use std::io::Write;
    let mut c = Command::new("nft").args(["-f", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().context("cannot run nft (install nftables)")?;
    c.stdin.take().context("nft stdin")?.write_all(script.as_bytes())?;
    let out = c.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn short_hash(s: &str) -> String {
    // FNV-1a: stable across builds and platforms; not a security boundary.
    let mut h: u32 = 0x811c9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    format!("{h:08x}")
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Makes the hub listen on one more address.
pub type ServeOn = Box<dyn Fn(std::net::SocketAddr) -> Result<()> + Send + Sync>;

/// The `local` provider. It knows the hub only through two narrow things it is given:
/// `serve_on` (have the hub listen on the host network's gateway) and, at start, the
/// names of the hosts a user stopped ([`LocalProvider::resume`]); it never reads the
/// hub's store.
pub struct LocalProvider {
    data_dir: PathBuf,
    net: HostNet,
    hub_port: u16,
    /// `hangar agent run` arguments besides dir and listen (runtime, volumes, interval).
    agent_args: Vec<String>,
    serve_on: ServeOn,
    /// Whether the hub already listens on the gateway.
    serving: std::sync::atomic::AtomicBool,
}

impl LocalProvider {
    pub fn new(data_dir: PathBuf, net: HostNet, hub_port: u16, agent_args: Vec<String>, serve_on: ServeOn) -> LocalProvider {
        LocalProvider { data_dir, net, hub_port, agent_args, serve_on, serving: std::sync::atomic::AtomicBool::new(false) }
    }

    /// At hub start: the hosts this provider made come back (bridge, listener, agents),
    /// except `stopped`, the ones a user stopped.
    pub async fn resume(&self, stopped: &[Name]) {
        let dirs = self.dirs();
        if dirs.is_empty() {
            return;
        }
        if let Err(e) = self.ensure_bridge() {
            tracing::error!(error = %e, "cannot set up the host network; provider hosts cannot reach the hub");
            return;
        }
        for h in dirs {
            let Ok(name) = h.parse::<Name>() else { continue };
            if !stopped.contains(&name) && self.agent_dir(&h).join("identity.json").exists() {
                // An agent still talking to this hub's previous address is restarted.
                if let Some(pid) = self.agent_pid(&h)
                    && !crate::proc::is(pid, |a| a.iter().any(|x| x.contains(&self.hub_url()))) {
                        let _ = self.stop_agent(&h).await;
                    }
                if let Err(e) = self.ensure_netns(&h).and_then(|_| self.spawn_agent(&h)) {
                    tracing::error!(host = %h, error = %e, "cannot restart a provider host's agent");
                }
            }
        }
    }

    fn host_dir(&self, host: &str) -> PathBuf {
        self.data_dir.join("hosts").join(host)
    }

    fn index(&self, host: &str) -> Result<u8> {
        let p = self.host_dir(host).join("index");
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?.trim().parse().context("corrupt host index")
    }

    /// The smallest number in 2..=254 no other host of this fleet has.
    fn next_index(&self) -> Result<u8> {
        let used: Vec<u8> = self.dirs().iter().filter_map(|h| self.index(h).ok()).collect();
        (2..=254u8).find(|i| !used.contains(i)).context("the host network is full (253 hosts)")
    }

    fn dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.data_dir.join("hosts"))
            .map(|rd| rd.flatten().filter(|e| e.path().is_dir()).filter_map(|e| e.file_name().to_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// The bridge in the hub's namespace, holding the gateway address.
    pub fn ensure_bridge(&self) -> Result<()> {
        let b = &self.net.bridge;
        if !link_exists(b) {
            ip(&["link", "add", b, "type", "bridge"])?;
        }
        let has = Command::new("ip").args(["-4", "-o", "addr", "show", "dev", b]).output().map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {}/", self.net.gateway))).unwrap_or(false);
        if !has {
            ip(&["addr", "add", &format!("{}/24", self.net.gateway), "dev", b])?;
        }
        ip(&["link", "set", b, "up"])?;
        nft(&self.net.guard_rules(self.hub_port)).context("cannot guard the hub's machine from the host network")?;
        if !self.serving.swap(true, std::sync::atomic::Ordering::SeqCst)
            && let Err(e) = (self.serve_on)(std::net::SocketAddr::new(self.net.gateway.into(), self.hub_port)) {
                self.serving.store(false, std::sync::atomic::Ordering::SeqCst);
                return Err(e);
            }
        Ok(())
    }

    /// The host's namespace, uplink and address (idempotent: after a reboot it is re-made).
    fn ensure_netns(&self, host: &str) -> Result<()> {
        self.ensure_bridge()?;
        let ns = self.net.netns(host);
        if !Path::new("/run/netns").join(&ns).exists() {
            ip(&["netns", "add", &ns])?;
        }
        let (outer, inner) = self.net.uplink(host);
        if !link_exists(&outer) {
            ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns])?;
        }
        ip(&["link", "set", &outer, "master", &self.net.bridge, "up"])?;
        let addr = self.net.address(self.index(host)?);
        let _ = ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &inner]);
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "link", "set", &inner, "up"])?;
        let _ = ip(&["-n", &ns, "route", "replace", "default", "via", &self.net.gateway.to_string()]);
        Ok(())
    }

    /// Runs `hangar ARGS` inside the host's namespace (`nsenter --net`: only the network
    /// namespace changes, never the mount namespace, so /run/netns stays shared), in a
    /// process group of its own so the hub's terminal signals do not reach it.
    fn command_in(&self, host: &str, args: &[String]) -> Result<Command> {
        use std::os::unix::process::CommandExt;
        let ns_path = Path::new("/run/netns").join(self.net.netns(host));
        if !ns_path.exists() {
            bail!("{} is missing", ns_path.display());
        }
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", ns_path.display())).arg("--").arg(crate::proc::own_exe()?).args(args).stdin(Stdio::null()).process_group(0);
        Ok(c)
    }

    fn hub_url(&self) -> String {
        format!("https://{}:{}", self.net.gateway, self.hub_port)
    }

    fn agent_dir(&self, host: &str) -> PathBuf {
        self.host_dir(host).join("agent")
    }

    fn pid_file(&self, host: &str) -> PidFile {
        PidFile::new(self.host_dir(host).join("agent.pid"))
    }

    /// Whether a command line is the agent of `host`'s (it names the agent dir).
    fn is_agent(&self, host: &str) -> impl Fn(&[String]) -> bool + use<> {
        let dir = self.agent_dir(host).to_string_lossy().into_owned();
        move |a: &[String]| a.iter().any(|x| x.contains(&dir))
    }

    /// The PID of the host's agent, if it runs (verified by its command line).
    fn agent_pid(&self, host: &str) -> Option<u32> {
        self.pid_file(host).live(self.is_agent(host))
    }

    /// Starts the agent and checks it is still alive a moment later (a bad binary or
    /// a broken dir fails here, with the log's last lines, not silently).
    async fn spawn_agent_checked(&self, host: &str) -> Result<()> {
        self.spawn_agent(host)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if self.agent_pid(host).is_none() {
            let log = std::fs::read_to_string(self.host_dir(host).join("agent.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            bail!("the agent exited at once: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "));
        }
        Ok(())
    }

    fn spawn_agent(&self, host: &str) -> Result<()> {
        if self.agent_pid(host).is_some() {
            return Ok(());
        }
        let addr = self.net.address(self.index(host)?);
        let mut args: Vec<String> =
            vec!["agent".into(), "run".into(), "--hub".into(), self.hub_url(), "--agent-dir".into(), self.agent_dir(host).display().to_string(), "--listen".into(), format!("{addr}:0")];
        args.extend(self.agent_args.iter().cloned());
        let log = crate::daemon::private_log(&self.host_dir(host).join("agent.log"))?;
        let mut c = self.command_in(host, &args)?;
        c.stdout(log.try_clone()?).stderr(log);
        let child = c.spawn().context("cannot start the host's agent")?;
        self.pid_file(host).write(child.id())?;
        // The child is reaped by a thread so it never lingers as a zombie.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(())
    }

    async fn stop_agent(&self, host: &str) -> Result<()> {
        let Some(pid) = self.agent_pid(host) else { return Ok(()) };
        if !crate::proc::stop(pid, self.is_agent(host), Duration::from_secs(10)).await {
            bail!("the agent (pid {pid}) did not stop");
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl HostProvider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn create(&self, host: &Name, join_token: &str) -> Result<()> {
        let h = host.as_str();
        if self.host_dir(h).exists() {
            bail!("{} already exists: remove the host first", self.host_dir(h).display());
        }
        std::fs::create_dir_all(self.host_dir(h))?;
        let index = self.next_index()?;
        std::fs::write(self.host_dir(h).join("index"), index.to_string())?;
        self.ensure_netns(h)?;
        let hub = self.hub_url();
        let addr = self.net.address(index).to_string();
        let args: Vec<String> = ["agent", "join", "--hub", &hub, "--token", join_token, "--name", &addr, "--agent-dir"]
            .iter()
            .map(|s| s.to_string())
            .chain([self.agent_dir(h).display().to_string()])
            .collect();
        let mut c = self.command_in(h, &args)?;
        let out = tokio::task::spawn_blocking(move || c.output()).await?.context("cannot run `hangar agent join`")?;
        if !out.status.success() {
            bail!("the agent could not join: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        self.spawn_agent_checked(h).await
    }

    async fn start(&self, host: &Name) -> Result<()> {
        let h = host.as_str();
        if !self.agent_dir(h).exists() {
            bail!("{} is missing: the host was never made here", self.agent_dir(h).display());
        }
        self.ensure_netns(h)?;
        self.spawn_agent_checked(h).await
    }

    async fn stop(&self, host: &Name) -> Result<()> {
        self.stop_agent(host.as_str()).await?;
        let r = hangar_agent::teardown(&AgentPaths::new(self.agent_dir(host.as_str())), hangar_agent::Teardown::Sandboxes).await;
        if !r.errors.is_empty() {
            bail!("cannot stop every sandbox: {}", r.errors.join("; "));
        }
        Ok(())
    }

    async fn remove(&self, host: &Name) -> Result<()> {
        let h = host.as_str();
        self.stop_agent(h).await?;
        let errors = remove_host_dir(&self.net, &self.host_dir(h), h, true).await;
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ProvidedHost>> {
        Ok(self
            .dirs()
            .into_iter()
            .filter_map(|h| {
                let name: Name = h.parse().ok()?;
                let made = self.agent_dir(&h).join("identity.json").exists() || self.agent_dir(&h).exists();
                made.then(|| ProvidedHost { running: self.agent_pid(&h).is_some(), name })
            })
            .collect())
    }
}

/// Tears one provider host down: its sandboxes, their namespaces, its volume pool, its
/// namespace (which takes its bridges, links and nftables table along) and, with
/// `purge`, its dir (identity and volumes).
/// Best effort; returns what failed. The agent must be stopped already.
pub async fn remove_host_dir(net: &HostNet, dir: &Path, host: &str, purge: bool) -> Vec<String> {
    let mut errors = vec![];
    // The host's bridges and nftables table live in its namespace and go with it.
    let r = hangar_agent::teardown(&AgentPaths::new(dir.join("agent")), hangar_agent::Teardown::Everything(hangar_agent::drivers::HostNetwork::Separate)).await;
    errors.extend(r.errors);
    let ns = net.netns(host);
    if Path::new("/run/netns").join(&ns).exists()
        && let Err(e) = ip(&["netns", "del", &ns]) {
            errors.push(format!("namespace {ns}: {e}"));
        }
    let (outer, _) = net.uplink(host);
    if link_exists(&outer) {
        let _ = ip(&["link", "del", &outer]);
    }
    if errors.is_empty() && purge
        && let Err(e) = std::fs::remove_dir_all(dir) {
            errors.push(format!("{}: {e}", dir.display()));
        }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_network_names_fit_the_kernel_and_differ_per_fleet() {
        let r: ClusterRange = "10.120.0.0/16".parse().unwrap();
        let a = HostNet::new(Path::new("/tmp/a"), &r);
        let b = HostNet::new(Path::new("/tmp/b"), &r);
        assert_eq!(a.gateway, Ipv4Addr::new(10, 120, 0, 1));
        assert_eq!(a.address(2), Ipv4Addr::new(10, 120, 0, 2));
        assert_eq!(a.bridge, "hgp0a7800");
        assert_ne!(a.netns("node-b"), b.netns("node-b"));
        let (o, i) = a.uplink("node-b");
        assert!(o.len() <= 15 && i.len() <= 15);
        assert_ne!(a.uplink("node-b"), b.uplink("node-b"));
        // Never a tenant's bridge name, so no agent's cleanup ever takes it.
        assert!(hangar_types::net::bridge_subnet(&a.bridge).is_none());
    }
}
