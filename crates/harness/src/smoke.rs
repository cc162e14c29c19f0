//! `hangar smoke`: the whole lifecycle, end to end, on a fleet, as a PASS/FAIL matrix.
//!
//! By default it starts a local fleet of its own and removes it afterwards; `--hub`
//! points it at an existing fleet. Every object it makes carries the run tag in its
//! name (`smk<tag>-...`), so `--cleanup` (and every run's final scenario) can remove a
//! run's leftovers by tag, even after the harness itself was killed.

use crate::fleet::{wait_host, Fleet, FleetOptions};
use crate::Report;
use anyhow::{anyhow, bail, Context, Result};
use hangar_client::HubClient;
use hangar_types::api::*;
use hangar_types::ObservedState;
use serde::Serialize;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What `hangar smoke` runs and against what.
#[derive(Clone, Debug, Default)]
pub struct SmokeOptions {
    /// The `hangar` binary (for a fleet of its own).
    pub bin: PathBuf,
    /// Run against this hub instead of a local fleet of its own.
    pub hub: Option<String>,
    /// File holding an admin token for `hub`.
    pub token_file: Option<PathBuf>,
    /// File holding the hub's CA certificate for `hub` (default: the client config's).
    pub ca_file: Option<PathBuf>,
    /// A subset of the scenarios (all when empty).
    pub scenarios: Vec<String>,
    /// Print the scenarios and their steps, run nothing.
    pub list: bool,
    /// Keep the fleet and the objects made (for debugging).
    pub keep: bool,
    /// Run the remaining scenarios after one fails.
    pub continue_on_failure: bool,
    /// Where each run's JSON results go (`<results>/<run_tag>/`).
    pub results: PathBuf,
    /// Remove the objects of an earlier run by this tag, then stop.
    pub cleanup: Option<String>,
}

const SCENARIOS: [(&str, &[&str]); 11] = [
    ("fleet", &["host ready", "hosts join", "tenant create"]),
    ("lifecycle", &["instance create", "instance start", "sentinel write", "exec", "warm", "resume", "stop", "start again", "sentinel survives", "snapshot", "logs", "stats"]),
    ("network", &["instances on two tenants", "same-tenant reach", "cross-tenant isolation", "wide subnet wired", "cross-host reach", "net verify"]),
    ("security", &["tenant token scoped", "bad input refused", "sandbox for the network probes", "sandbox cannot reach the hub API", "sandbox cannot reach a host underlay address", "host shadow unreadable", "uid mapped", "unshare refused", "namespaces kept across a restart", "dir image refused for a tenant", "data files are private", "log capped", "exec timeout capped", "token revoke", "tenant destroy --force"]),
    ("pools", &["pool create", "scale up across hosts", "scale down newest first", "pool delete"]),
    ("hosts", &["members spread over hosts", "host stop keeps state", "host start persistence", "killed agent goes stale", "restarted agent adopts"]),
    ("access", &["secret set", "secret visible and read-only", "proxy denied without a token", "proxy allowed with a token", "access instance deleted", "ssh key add", "instance ssh --check", "ssh exec", "ssh instance delete"]),
    ("backup", &["backup target add", "backup sentinel", "backup create", "backup found in index", "restore into a new instance", "hard delete schedules a purge", "purge cancelled", "backup cleanup"]),
    ("copy", &["copy upload", "copy across hosts", "copy download", "copy compare"]),
    ("move", &["move sentinel", "move to the second host", "same address and id", "sentinel moved", "source holds nothing", "copy after move", "copy back", "move compare"]),
    ("cleanup", &["delete instances", "remove hosts", "destroy tenants"]),
];

#[derive(Serialize, Clone, Debug)]
struct Step {
    name: String,
    status: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    started_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    finished_at: time::OffsetDateTime,
    duration_ms: u64,
    error: Option<String>,
}

struct Run {
    c: HubClient,
    tag: String,
    steps: Vec<Step>,
    failed: bool,
    /// The data dir of the harness's own fleet (None with --hub): lets steps that kill
    /// an agent find its PID.
    own_fleet: Option<PathBuf>,
    /// The `hangar` binary and a client config for it (with a fleet of its own), for
    /// steps that run the CLI.
    cli: Option<(PathBuf, PathBuf)>,
}

impl Run {
    fn tenant(&self, n: &str) -> String {
        format!("{}-{n}", self.tag)
    }

    fn host(&self, n: u8) -> String {
        format!("{}-h{n}", self.tag)
    }

    /// Records a step that cannot run here (e.g. it must kill a process of our own fleet).
    fn skip(&mut self, name: &str, why: &str) {
        let at = time::OffsetDateTime::now_utc();
        eprintln!("  SKIP {name}: {why}");
        self.steps.push(Step { name: name.into(), status: "SKIP", started_at: at, finished_at: at, duration_ms: 0, error: Some(why.into()) });
    }

    /// Runs one step unless an earlier one of this scenario failed (then it is skipped).
    async fn step<F: Future<Output = Result<()>>>(&mut self, name: &str, f: F) {
        let started_at = time::OffsetDateTime::now_utc();
        if self.failed {
            self.steps.push(Step { name: name.into(), status: "SKIP", started_at, finished_at: started_at, duration_ms: 0, error: None });
            return;
        }
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(180), f).await.unwrap_or_else(|_| Err(anyhow!("timed out after 180s")));
        let finished_at = time::OffsetDateTime::now_utc();
        let (status, error) = match r {
            Ok(()) => ("PASS", None),
            Err(e) => {
                self.failed = true;
                ("FAIL", Some(format!("{e:#}")))
            }
        };
        eprintln!("  {status} {name}{}", error.as_ref().map(|e| format!(": {e}")).unwrap_or_default());
        self.steps.push(Step { name: name.into(), status, started_at, finished_at, duration_ms: t.elapsed().as_millis() as u64, error });
    }
}

async fn wait_op(c: &HubClient, op: Operation) -> Result<()> {
    let op = c.operation_wait_final(op.id, Duration::from_secs(120)).await?;
    if op.status != OperationStatus::Succeeded {
        bail!("{} {} {}: {}", op.kind, op.target, op.status.as_str(), op.error.unwrap_or_default());
    }
    Ok(())
}

async fn create(c: &HubClient, tenant: &str, name: &str, start: bool) -> Result<()> {
    create_on(c, tenant, name, start, None).await
}

/// Creates an instance, pinned to `host` if given.
async fn create_on(c: &HubClient, tenant: &str, name: &str, start: bool, host: Option<&str>) -> Result<()> {
    let spec = InstanceSpec { image: ImageRef::Host, vcpus: 1, mem_mib: 64, disk_mib: 64, command: vec![], env: Default::default(), secrets: vec![] };
    let mut req = InstanceCreate::new(name.parse()?, spec, start);
    req.host = host.map(|h| h.parse()).transpose()?;
    wait_op(c, c.instance_create(tenant, &req).await?).await
}

async fn action(c: &HubClient, tenant: &str, name: &str, verb: &str) -> Result<()> {
    wait_op(c, c.instance_action(tenant, name, verb).await?).await
}

async fn exec(c: &HubClient, tenant: &str, name: &str, cmd: &str) -> Result<ExecResult> {
    Ok(c.instance_exec(tenant, name, &ExecRequest { command: vec!["sh".into(), "-c".into(), cmd.into()], env: Default::default(), timeout_secs: Some(30) }).await?)
}

async fn expect_state(c: &HubClient, tenant: &str, name: &str, observed: ObservedState) -> Result<()> {
    let i = c.instance_get(tenant, name).await?;
    if i.observed != observed {
        bail!("{tenant}/{name} is observed {}, expected {observed}", i.observed);
    }
    Ok(())
}

async fn ping(c: &HubClient, tenant: &str, name: &str, to: std::net::Ipv4Addr) -> Result<bool> {
    let r = exec(c, tenant, name, &format!("ping -c1 -W1 {to} >/dev/null 2>&1")).await?;
    Ok(r.exit_code == 0)
}

async fn address(c: &HubClient, tenant: &str, name: &str) -> Result<std::net::Ipv4Addr> {
    c.instance_get(tenant, name).await?.address.ok_or_else(|| anyhow!("{tenant}/{name} has no address"))
}

/// Removes every tenant (its pools and instances) and host whose name carries `tag`.
async fn cleanup_tag(c: &HubClient, tag: &str) -> Result<usize> {
    let mut n = 0;
    for t in c.tenant_list().await?.into_iter().filter(|t| t.name.as_str().starts_with(&format!("{tag}-"))) {
        for p in c.pool_list(t.name.as_str()).await? {
            c.pool_delete(t.name.as_str(), p.pool.name.as_str()).await?;
        }
        let mut ops = vec![];
        for i in c.instance_list(Some(t.name.as_str())).await? {
            if i.state != hangar_types::InstanceState::Deleted {
                ops.push(c.instance_delete(t.name.as_str(), i.name.as_str()).await?);
            }
        }
        for op in ops {
            c.operation_wait_final(op.id, Duration::from_secs(120)).await?;
        }
        for _ in 0..200 {
            if c.instance_list(Some(t.name.as_str())).await?.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c.tenant_destroy(t.name.as_str()).await?;
        n += 1;
    }
    for h in c.host_list().await?.into_iter().filter(|h| h.name.as_str().starts_with(&format!("{tag}-"))) {
        if h.state == HostState::Stopped {
            c.host_action(h.name.as_str(), "start").await?;
        }
        c.host_remove(h.name.as_str()).await?;
        n += 1;
    }
    Ok(n)
}

async fn wait_pool(c: &HubClient, tenant: &str, pool: &str) -> Result<PoolInfo> {
    Ok(hangar_client::onboarding::wait_converged(c, tenant, pool, Duration::from_secs(120)).await?)
}

fn pool_req(name: &str, counts: PoolCounts) -> Result<PoolCreate> {
    Ok(PoolCreate::new(name.parse()?, "worker".parse()?, InstanceSpec { image: ImageRef::Host, vcpus: 1, mem_mib: 64, disk_mib: 64, command: vec![], env: Default::default(), secrets: vec![] }, counts))
}

/// A running member of `pool` on a host made by a provider (one we can stop and kill).
async fn member_on_provider_host(c: &HubClient, tenant: &str, pool: &str) -> Result<(String, String)> {
    let hosts = c.host_list().await?;
    for m in c.pool_members(tenant, pool).await? {
        let Some(h) = &m.host else { continue };
        if m.state == hangar_types::InstanceState::Running && hosts.iter().any(|x| &x.name == h && x.provider.is_some()) {
            return Ok((m.name.to_string(), h.to_string()));
        }
    }
    bail!("no running member of {tenant}/{pool} is on a provider-made host")
}

async fn scenario(r: &mut Run, name: &str) {
    let c = r.c.clone();
    let (a, b) = (r.tenant("a"), r.tenant("b"));
    match name {
        "fleet" => {
            r.step("host ready", async {
                let hosts = c.host_list().await?;
                if !hosts.iter().any(|h| h.state == HostState::Ready) {
                    bail!("no ready host among {}", hosts.len());
                }
                Ok(())
            })
            .await;
            let own = r.own_fleet.is_some();
            let (h1, h2) = (r.host(1), r.host(2));
            r.step("hosts join", async {
                if own {
                    // Two more hosts on this machine, as network namespaces.
                    for h in [&h1, &h2] {
                        c.host_add(&HostAdd { name: h.parse()?, provider: Some("local".into()), join_ttl_secs: None }).await?;
                        wait_host(&c, h, HostState::Ready, Duration::from_secs(60)).await?;
                    }
                }
                let ready = c.host_list().await?.into_iter().filter(|h| h.state == HostState::Ready).count();
                if ready < 2 {
                    bail!("{ready} ready host(s): the pool and host scenarios need at least two");
                }
                Ok(())
            })
            .await;
            r.step("tenant create", async {
                // The second tenant gets a /23, so the network scenario checks a subnet
                // wider than the default /24 too.
                // Quotas above the defaults: every scenario's instances live in these two
                // tenants until cleanup.
                let quotas = Quotas { max_vcpus: 64, max_mem_mib: 65536, max_running: 32, max_instances: 64, max_disk_gib: 100 };
                for (t, net_prefix) in [(&a, None), (&b, Some(23))] {
                    c.tenant_create(&TenantCreate { name: t.parse()?, quotas: Some(quotas), isolated: false, net_prefix }).await?;
                }
                Ok(())
            })
            .await;
        }
        "lifecycle" => {
            r.step("instance create", create(&c, &a, "life", false)).await;
            r.step("instance start", async {
                action(&c, &a, "life", "start").await?;
                expect_state(&c, &a, "life", ObservedState::Running).await
            })
            .await;
            r.step("sentinel write", async {
                let res = exec(&c, &a, "life", "echo sentinel > /home/sentinel").await?;
                if res.exit_code != 0 {
                    bail!("exit {}: {}", res.exit_code, res.stderr);
                }
                Ok(())
            })
            .await;
            r.step("exec", async {
                let res = exec(&c, &a, "life", "cat /home/sentinel; exit 3").await?;
                if (res.exit_code, res.stdout.as_str()) != (3, "sentinel\n") {
                    bail!("got exit {} and {:?}", res.exit_code, res.stdout);
                }
                Ok(())
            })
            .await;
            r.step("warm", async {
                action(&c, &a, "life", "warm").await?;
                expect_state(&c, &a, "life", ObservedState::Warm).await
            })
            .await;
            r.step("resume", async {
                action(&c, &a, "life", "resume").await?;
                expect_state(&c, &a, "life", ObservedState::Running).await
            })
            .await;
            r.step("stop", async {
                action(&c, &a, "life", "stop").await?;
                expect_state(&c, &a, "life", ObservedState::Stopped).await
            })
            .await;
            r.step("start again", action(&c, &a, "life", "start")).await;
            r.step("sentinel survives", async {
                let res = exec(&c, &a, "life", "cat /home/sentinel").await?;
                if res.stdout != "sentinel\n" {
                    bail!("the sentinel is gone after stop/start: {:?}", res.stdout);
                }
                Ok(())
            })
            .await;
            // Snapshots: take one, change the data, restore it (the instance runs: --force
            // stops, restores, starts), read the old data back.
            r.step("snapshot", async {
                c.snapshot_create(&a, "life", &SnapshotCreate { name: Some("smoke".into()) }).await?;
                if !c.snapshot_list(&a, "life").await?.iter().any(|s| s.name.as_str() == "smoke") {
                    bail!("snapshot 'smoke' is not listed");
                }
                exec(&c, &a, "life", "echo changed > /home/sentinel").await?;
                let res = c.snapshot_restore(&a, "life", "smoke", &SnapshotRestore { force: true }).await?;
                let start = res.operation.ok_or_else(|| anyhow::anyhow!("a forced restore of a running instance gave no start to wait on"))?;
                wait_op(&c, start).await?;
                let back = exec(&c, &a, "life", "cat /home/sentinel").await?;
                if back.stdout != "sentinel\n" {
                    bail!("after the restore the sentinel reads {:?}", back.stdout);
                }
                c.snapshot_delete(&a, "life", "smoke").await?;
                Ok(())
            })
            .await;
            r.step("logs", async {
                c.instance_logs(&a, "life", 10).await?;
                Ok(())
            })
            .await;
            r.step("stats", async {
                let s = c.instance_stats(&a, "life").await?;
                if s.memory_bytes == 0 || s.pids == 0 {
                    bail!("empty stats: {s:?}");
                }
                Ok(())
            })
            .await;
        }
        "network" => {
            r.step("instances on two tenants", async {
                // On one host first; "cross-host reach" below spans hosts.
                let hosts = c.host_list().await?;
                let h = hosts.iter().find(|h| h.state == HostState::Ready).map(|h| h.name.to_string()).ok_or_else(|| anyhow!("no ready host"))?;
                create_on(&c, &a, "n1", true, Some(&h)).await?;
                create_on(&c, &a, "n2", true, Some(&h)).await?;
                create_on(&c, &b, "n3", true, Some(&h)).await
            })
            .await;
            r.step("same-tenant reach", async {
                let to = address(&c, &a, "n2").await?;
                if !ping(&c, &a, "n1", to).await? {
                    bail!("{a}/n1 cannot reach {a}/n2 at {to}");
                }
                Ok(())
            })
            .await;
            r.step("cross-tenant isolation", async {
                let to = address(&c, &b, "n3").await?;
                if ping(&c, &a, "n1", to).await? {
                    bail!("{a}/n1 reaches {b}/n3 at {to}");
                }
                let back = address(&c, &a, "n1").await?;
                if ping(&c, &b, "n3", back).await? {
                    bail!("{b}/n3 reaches {a}/n1 at {back}");
                }
                Ok(())
            })
            .await;
            r.step("wide subnet wired", async {
                let at = address(&c, &b, "n3").await?;
                let res = exec(&c, &b, "n3", "ip -4 -o addr show eth0").await?;
                if res.exit_code != 0 || !res.stdout.contains(&format!("{at}/23")) {
                    bail!("{b}/n3's eth0 is not {at}/23: exit {}, {:?} {:?}", res.exit_code, res.stdout, res.stderr);
                }
                Ok(())
            })
            .await;
            r.step("cross-host reach", async {
                // Two hosts that can carry overlay traffic (a routable agent endpoint):
                // the tenant's instances on them reach each other over its VXLAN.
                let hosts = c.host_list().await?;
                let overlay: Vec<String> = hosts
                    .iter()
                    .filter(|h| h.state == HostState::Ready && h.endpoint.as_deref().and_then(hangar_types::net::underlay_of).is_some())
                    .map(|h| h.name.to_string())
                    .collect();
                if overlay.len() < 2 {
                    bail!("{} ready host(s) with a routable agent endpoint; cross-host reach needs two", overlay.len());
                }
                create_on(&c, &a, "x1", true, Some(&overlay[0])).await?;
                create_on(&c, &a, "x2", true, Some(&overlay[1])).await?;
                let to = address(&c, &a, "x2").await?;
                // The other hosts learn of the new peer with their next desired document.
                let deadline = Instant::now() + Duration::from_secs(30);
                while !ping(&c, &a, "x1", to).await? {
                    if Instant::now() > deadline {
                        bail!("{a}/x1 on {} cannot reach {a}/x2 on {} at {to}", overlay[0], overlay[1]);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                let other = address(&c, &b, "n3").await?;
                if ping(&c, &a, "x1", other).await? {
                    bail!("{a}/x1 reaches {b}/n3 at {other} across hosts");
                }
                // Give their quota back to the scenarios that follow.
                for x in ["x1", "x2"] {
                    wait_op(&c, c.instance_delete(&a, x).await?).await?;
                }
                Ok(())
            })
            .await;
            r.step("net verify", async {
                let v = c.net_verify().await?;
                if !v.ok {
                    let bad: Vec<String> = v.checks.iter().filter(|c| !c.ok).map(|c| format!("{} {}: {}", c.host, c.check, c.detail)).collect();
                    bail!("{}", bad.join("; "));
                }
                Ok(())
            })
            .await;
        }
        "security" => {
            r.step("tenant token scoped", async {
                let tok = c.token_create(&TokenCreate { tenant: Some(a.parse()?), role: None, description: Some("smoke".into()), ttl_secs: None }).await?;
                let scoped = c.with_token(&tok.token);
                match scoped.tenant_info(&b).await {
                    Err(e) if e.code() == Some(hangar_types::ErrorCode::NotFound) => {}
                    other => bail!("a token of {a} looking at {b} got {other:?}, expected not found"),
                }
                if scoped.tenant_list().await?.len() != 1 {
                    bail!("a tenant token lists other tenants");
                }
                Ok(())
            })
            .await;
            r.step("bad input refused", async {
                let (st, v) = c.raw("POST", &format!("/v1/tenants/{a}/instances"), Some(&serde_json::json!({"name": "x", "image": "host", "vcpus": 0, "mem_mib": 64, "disk_mib": 64}))).await?;
                if st != 400 || v["code"] != "invalid_argument" {
                    bail!("zero vCPUs got {st} {v}");
                }
                Ok(())
            })
            .await;
            // ---- the fleet's machinery, out of a sandbox's reach (issue 12, network)
            r.step("sandbox for the network probes", async {
                // On a provider-made host if there is one: its hub is a route away.
                let hosts = c.host_list().await?;
                let ready = |h: &&Host| h.state == HostState::Ready;
                let h = hosts.iter().filter(ready).find(|h| h.provider.is_some()).or_else(|| hosts.iter().find(ready)).ok_or_else(|| anyhow!("no ready host"))?;
                create_on(&c, &a, "sec1", true, Some(h.name.as_str())).await
            })
            .await;
            r.step("sandbox cannot reach the hub API", async {
                let port = c.base_url().rsplit_once(':').and_then(|(_, p)| p.trim_end_matches('/').parse::<u16>().ok()).ok_or_else(|| anyhow!("no port in {}", c.base_url()))?;
                // Where hosts reach the hub: its URL unless loopback, and the gateway of
                // each host network (the `local` provider's hub listens on its .1).
                let mut targets: Vec<std::net::Ipv4Addr> = hangar_types::net::underlay_of(c.base_url()).into_iter().collect();
                for h in c.host_list().await? {
                    if let Some(ip) = h.endpoint.as_deref().and_then(hangar_types::net::underlay_of) {
                        let o = ip.octets();
                        targets.push(std::net::Ipv4Addr::new(o[0], o[1], o[2], 1));
                    }
                }
                targets.sort();
                targets.dedup();
                for ip in targets {
                    let res = exec(&c, &a, "sec1", &format!("timeout 2 bash -c 'exec 3<>/dev/tcp/{ip}/{port}' 2>/dev/null")).await?;
                    if res.exit_code == 0 {
                        bail!("{a}/sec1 connects to the hub's API at {ip}:{port}");
                    }
                }
                Ok(())
            })
            .await;
            r.step("sandbox cannot reach a host underlay address", async {
                for h in c.host_list().await? {
                    if let Some(ip) = h.endpoint.as_deref().and_then(hangar_types::net::underlay_of)
                        && ping(&c, &a, "sec1", ip).await? {
                            bail!("{a}/sec1 reaches host {}'s underlay address {ip}", h.name);
                        }
                }
                wait_op(&c, c.instance_delete(&a, "sec1").await?).await
            })
            .await;
            // Inside a sandbox (`sec`, made by the first of these steps if missing).
            r.step("host shadow unreadable", async {
                if c.instance_get(&a, "sec").await.is_err() {
                    create(&c, &a, "sec", true).await?;
                }
                let res = exec(&c, &a, "sec", "test -e /etc/shadow || test -e /etc/ssl/private || ls /etc/ssh/ssh_host_* 2>/dev/null").await?;
                if res.exit_code == 0 {
                    bail!("the host's /etc secrets are visible: {}", res.stdout);
                }
                Ok(())
            })
            .await;
            r.step("uid mapped", async {
                let res = exec(&c, &a, "sec", "cat /proc/self/uid_map").await?;
                let map: Vec<u64> = res.stdout.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                if map.len() != 3 || map[0] != 0 || map[1] < u64::from(hangar_types::idmap::DEFAULT_FIRST_ID) {
                    bail!("root inside is not an unprivileged host uid: uid_map {:?}", res.stdout.trim());
                }
                Ok(())
            })
            .await;
            r.step("unshare refused", async {
                let res = exec(&c, &a, "sec", "unshare -U true").await?;
                if res.exit_code == 0 {
                    bail!("unshare -U succeeded inside a sandbox");
                }
                Ok(())
            })
            .await;
            // The sandbox joins a user namespace and a network namespace it owns, pinned
            // for the instance (the start path makes neither): a restart finds the same.
            r.step("namespaces kept across a restart", async {
                let ns = "readlink /proc/self/ns/user /proc/self/ns/net";
                let before = exec(&c, &a, "sec", ns).await?.stdout;
                action(&c, &a, "sec", "stop").await?;
                action(&c, &a, "sec", "start").await?;
                let after = exec(&c, &a, "sec", ns).await?.stdout;
                if before.lines().count() != 2 || before != after {
                    bail!("the sandbox's namespaces changed across a restart: {before:?} -> {after:?}");
                }
                Ok(())
            })
            .await;
            // Volumes, files and images (issue 12).
            r.step("dir image refused for a tenant", async {
                let tok = c.token_create(&TokenCreate { tenant: Some(a.parse()?), role: None, description: Some("smoke images".into()), ttl_secs: None }).await?;
                let body = serde_json::json!({"name": "evil", "image": "dir:/etc", "vcpus": 1, "mem_mib": 64, "disk_mib": 64});
                let (st, v) = c.with_token(&tok.token).raw("POST", &format!("/v1/tenants/{a}/instances"), Some(&body)).await?;
                if st != 400 || !v["message"].as_str().is_some_and(|m| m.starts_with("image:")) {
                    bail!("a tenant's dir:/etc image got {st} {v}, expected 400 naming `image`");
                }
                Ok(())
            })
            .await;
            match r.own_fleet.clone() {
                Some(dir) => {
                    r.step("data files are private", async move {
                        use std::os::unix::fs::PermissionsExt;
                        let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
                        if mode(&dir)? & 0o066 != 0 {
                            bail!("{} is {:o}: others may list it", dir.display(), mode(&dir)?);
                        }
                        for f in [dir.join("hub/hangar.db"), dir.join("hub/ca.key"), dir.join("agent/desired.json"), dir.join("agent/host.key")] {
                            if f.exists() && mode(&f)? != 0o600 {
                                bail!("{} is {:o}, not 0600", f.display(), mode(&f)?);
                            }
                        }
                        Ok(())
                    })
                    .await
                }
                None => r.skip("data files are private", "needs the harness's own fleet (run without --hub)"),
            }
            // Logs and exec against a hostile workload (issue 12).
            let own_fleet = r.own_fleet.clone();
            r.step("log capped", async {
                let flood = "yes | head -c 40000000; echo flood-done; exec sleep infinity";
                let spec = InstanceSpec { image: ImageRef::Host, vcpus: 1, mem_mib: 64, disk_mib: 64, command: vec!["sh".into(), "-c".into(), flood.into()], env: Default::default(), secrets: vec![] };
                wait_op(&c, c.instance_create(&a, &InstanceCreate::new("sec-logs".parse()?, spec, true)).await?).await?;
                let deadline = Instant::now() + Duration::from_secs(30);
                while c.instance_logs(&a, "sec-logs", 1).await?.lines != ["flood-done"] {
                    if Instant::now() > deadline {
                        bail!("40 MB of output did not reach the log within 30 s");
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                // On our own fleet the files can be seen: at most 3 x 8 MiB (the defaults).
                if let Some(data) = &own_fleet {
                    let sandbox = c.instance_get(&a, "sec-logs").await?.id.sandbox_id().to_string();
                    let total: u64 = std::fs::read_dir(data.join("agent/logs"))?
                        .flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{sandbox}.log")))
                        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                        .sum();
                    if total > 3 * (8 << 20) {
                        bail!("40 MB of output left {total} bytes of log on the host");
                    }
                }
                Ok(())
            })
            .await;
            r.step("exec timeout capped", async {
                let req = ExecRequest { command: vec!["true".into()], env: Default::default(), timeout_secs: Some(1_000_000_000_000) };
                match c.instance_exec(&a, "sec-logs", &req).await {
                    Err(e) if e.code() == Some(hangar_types::ErrorCode::InvalidArgument) && e.to_string().contains("timeout_secs") => {}
                    other => bail!("an exec with timeout_secs 10^12 got {other:?}, expected invalid_argument naming timeout_secs"),
                }
                wait_op(&c, c.instance_delete(&a, "sec-logs").await?).await
            })
            .await;
            // ---- control plane safety (issue 13): revocation at once, destroy --force
            r.step("token revoke", async {
                let tok = c.token_create(&TokenCreate { tenant: Some(a.parse()?), role: None, description: Some("smoke revoke".into()), ttl_secs: Some(600) }).await?;
                let scoped = c.with_token(&tok.token);
                scoped.tenant_info(&a).await?;
                c.token_revoke(tok.id.as_str()).await?;
                match scoped.tenant_info(&a).await {
                    Err(e) if e.code() == Some(hangar_types::ErrorCode::Unauthenticated) => Ok(()),
                    other => bail!("a revoked token got {other:?}, expected unauthenticated at once"),
                }
            })
            .await;
            let doomed = r.tenant("d");
            r.step("tenant destroy --force", async {
                c.tenant_create(&TenantCreate { name: doomed.parse()?, quotas: None, isolated: false, net_prefix: None }).await?;
                create(&c, &doomed, "doomed", true).await?;
                c.tenant_destroy_force(&doomed, Duration::from_secs(120)).await?;
                if c.tenant_info(&doomed).await.is_ok() || c.instance_list(None).await?.iter().any(|i| i.tenant.as_str() == doomed) {
                    bail!("tenant {doomed} or one of its instances is still there after destroy --force");
                }
                Ok(())
            })
            .await;
        }
        "pools" => {
            r.step("pool create", async {
                c.pool_create(&a, &pool_req("work", PoolCounts { running: 2, warm: 0, sleeping: 0 })?).await?;
                wait_pool(&c, &a, "work").await?;
                Ok(())
            })
            .await;
            r.step("scale up across hosts", async {
                c.pool_scale(&a, "work", &PoolScale { running: Some(3), warm: Some(1), sleeping: Some(1) }).await?;
                let p = wait_pool(&c, &a, "work").await?;
                let (x, y, z) = (p.actual.running, p.actual.warm, p.actual.sleeping);
                if (x, y, z) != (3, 1, 1) {
                    bail!("running {x}, warm {y}, sleeping {z}");
                }
                if p.hosts.len() < 2 {
                    bail!("all members on one host: {:?}", p.hosts.keys().collect::<Vec<_>>());
                }
                Ok(())
            })
            .await;
            r.step("scale down newest first", async {
                let mut before = c.pool_members(&a, "work").await?;
                before.sort_by_key(|m| m.created_at);
                c.pool_scale(&a, "work", &PoolScale { running: Some(1), warm: Some(0), sleeping: Some(0) }).await?;
                wait_pool(&c, &a, "work").await?;
                let after = c.pool_members(&a, "work").await?;
                if after.len() != 1 || after[0].id != before[0].id {
                    bail!("kept {:?}, expected the oldest {}", after.iter().map(|m| m.name.to_string()).collect::<Vec<_>>(), before[0].name);
                }
                Ok(())
            })
            .await;
            r.step("pool delete", async {
                c.pool_delete(&a, "work").await?;
                for _ in 0..600 {
                    if c.pool_members(&a, "work").await?.is_empty() {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                bail!("members still there 60s after the pool was deleted")
            })
            .await;
        }
        "hosts" => {
            let n_hosts = c.host_list().await.map(|h| h.iter().filter(|h| h.state == HostState::Ready).count() as u32).unwrap_or(1);
            r.step("members spread over hosts", async {
                // As many members as ready hosts: spread places them on at least two.
                c.pool_create(&a, &pool_req("spread", PoolCounts { running: n_hosts, warm: 0, sleeping: 0 })?).await?;
                let p = wait_pool(&c, &a, "spread").await?;
                if n_hosts >= 2 && p.hosts.len() < 2 {
                    bail!("{n_hosts} members all on one host");
                }
                Ok(())
            })
            .await;
            let picked = member_on_provider_host(&c, &a, "spread").await.ok();
            let Some((member, host)) = picked else {
                for s in ["host stop keeps state", "host start persistence", "killed agent goes stale", "restarted agent adopts"] {
                    r.skip(s, "no running member on a provider-made host (add one with `hangar host add NAME --provider local`)");
                }
                return;
            };
            r.step("host stop keeps state", async {
                let res = exec(&c, &a, &member, "echo kept > /home/sentinel").await?;
                if res.exit_code != 0 {
                    bail!("sentinel write: exit {}", res.exit_code);
                }
                let before = c.pool_members(&a, "spread").await?;
                c.host_action(&host, "stop").await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                let during = c.pool_members(&a, "spread").await?;
                if during.len() != before.len() {
                    bail!("{} members while {host} was stopped, {} before: replaced or lost", during.len(), before.len());
                }
                let i = c.instance_get(&a, &member).await?;
                if i.state != hangar_types::InstanceState::Running || i.observed != ObservedState::Unknown {
                    bail!("{member} is {} (observed {}), expected running (observed unknown)", i.state, i.observed);
                }
                Ok(())
            })
            .await;
            r.step("host start persistence", async {
                c.host_action(&host, "start").await?;
                wait_host(&c, &host, HostState::Ready, Duration::from_secs(60)).await?;
                wait_pool(&c, &a, "spread").await?;
                let res = exec(&c, &a, &member, "cat /home/sentinel; echo alive > /tmp/alive").await?;
                if res.stdout != "kept\n" {
                    bail!("the sentinel is gone after host stop/start: {:?}", res.stdout);
                }
                Ok(())
            })
            .await;
            let Some(data) = r.own_fleet.clone() else {
                r.skip("killed agent goes stale", "needs the harness's own fleet (it kills an agent process)");
                r.skip("restarted agent adopts", "needs the harness's own fleet");
                return;
            };
            r.step("killed agent goes stale", async {
                let pid_file = hangar_node::proc::PidFile::new(data.join("hosts").join(&host).join("agent.pid"));
                let Some(pid) = pid_file.live(hangar_node::proc::is_hangar) else {
                    bail!("the agent of {host} does not run (no live pid in {})", pid_file.0.display());
                };
                hangar_node::proc::signal(pid, nix::sys::signal::Signal::SIGKILL);
                let took = wait_host(&c, &host, HostState::Stale, Duration::from_secs(30)).await?;
                if took > Duration::from_secs(15) {
                    bail!("stale only after {}s (target 15 s)", took.as_secs());
                }
                let i = c.instance_get(&a, &member).await?;
                if i.observed != ObservedState::Unknown {
                    bail!("{member} is observed {} on a stale host, expected unknown", i.observed);
                }
                Ok(())
            })
            .await;
            r.step("restarted agent adopts", async {
                let before = c.pool_members(&a, "spread").await?;
                c.host_action(&host, "start").await?;
                wait_host(&c, &host, HostState::Ready, Duration::from_secs(60)).await?;
                wait_pool(&c, &a, "spread").await?;
                let after = c.pool_members(&a, "spread").await?;
                if after.iter().map(|m| m.id).collect::<Vec<_>>() != before.iter().map(|m| m.id).collect::<Vec<_>>() {
                    bail!("members changed across the agent restart");
                }
                // /tmp is the sandbox's tmpfs: it survives only if the sandbox never restarted.
                let res = exec(&c, &a, &member, "cat /tmp/alive").await?;
                if res.stdout != "alive\n" {
                    bail!("the sandbox was restarted, not adopted");
                }
                Ok(())
            })
            .await;
        }
        // Secrets and the HTTP proxy (issue 16, web part): an instance naming a secret
        // and serving /home with python's http.server on port 8080.
        "access" => {
            let value = format!("smoke-{}", uuid_like());
            let b64 = |v: &str| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(v)
            };
            r.step("secret set", async {
                c.secret_set(&a, "smoke-secret", &hangar_types::access::SecretSet { value_b64: b64(&value) }).await?;
                Ok(())
            })
            .await;
            r.step("secret visible and read-only", async {
                let spec = InstanceSpec {
                    image: ImageRef::Host,
                    vcpus: 1,
                    mem_mib: 64,
                    disk_mib: 64,
                    command: ["python3", "-m", "http.server", "8080", "--directory", "/home"].map(String::from).to_vec(),
                    env: Default::default(),
                    secrets: vec!["smoke-secret".parse()?],
                };
                wait_op(&c, c.instance_create(&a, &InstanceCreate::new("acc".parse()?, spec, true)).await?).await?;
                let got = exec(&c, &a, "acc", "cat /run/secrets/smoke-secret").await?;
                if got.stdout != value {
                    bail!("/run/secrets/smoke-secret holds {:?}", got.stdout);
                }
                if exec(&c, &a, "acc", "echo x > /run/secrets/smoke-secret").await?.exit_code == 0 {
                    bail!("the sandbox could write its secret");
                }
                Ok(())
            })
            .await;
            let path = format!("/proxy/{a}/acc/8080/ok.json");
            r.step("proxy denied without a token", async {
                exec(&c, &a, "acc", "echo '{\"ok\": true}' > /home/ok.json").await?;
                let (status, body) = c.with_token("").raw("GET", &path, None).await?;
                if status != 401 {
                    bail!("GET {path} without a token answered {status}: {body}");
                }
                Ok(())
            })
            .await;
            r.step("proxy allowed with a token", async {
                let t = c.proxy_token_create(&a, "acc", &hangar_types::access::ProxyTokenCreate { port: 8080, ttl_secs: Some(300) }).await?;
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let (status, body) = c.with_token(&t.token).raw("GET", &path, None).await?;
                    if status == 200 && body["ok"] == true {
                        return Ok(());
                    }
                    // 502 until the server in the sandbox listens.
                    if status != 502 || Instant::now() > deadline {
                        bail!("GET {path} with a proxy token answered {status}: {body}");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await;
            r.step("access instance deleted", async {
                wait_op(&c, c.instance_delete(&a, "acc").await?).await?;
                c.secret_delete(&a, "smoke-secret", false).await?;
                Ok(())
            })
            .await;

            // ---- SSH gateway (issue 16): a key, `instance ssh --check`, an exec with its
            // exit status through plain OpenSSH.
            let keys = match tempfile::tempdir() {
                Ok(d) => d,
                Err(e) => {
                    r.step("ssh key add", async { Err::<(), _>(anyhow!("no temp dir for the key: {e}")) }).await;
                    return;
                }
            };
            let key = keys.path().join("id_smoke");
            r.step("ssh key add", async {
                if c.tenant_info(&a).await.is_err() {
                    c.tenant_create(&TenantCreate { name: a.parse()?, quotas: None, isolated: false, net_prefix: None }).await?;
                }
                create(&c, &a, "sshbox", true).await?;
                let o = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).output().context("ssh-keygen (openssh-client)")?;
                if !o.status.success() {
                    bail!("ssh-keygen: {}", String::from_utf8_lossy(&o.stderr));
                }
                let public_key = std::fs::read_to_string(key.with_extension("pub"))?;
                c.ssh_key_add(&a, &SshKeyAdd { public_key, name: Some("smoke".into()) }).await?;
                Ok(())
            })
            .await;
            match r.cli.clone() {
                Some((bin, config)) => {
                    r.step("instance ssh --check", async {
                        let o = std::process::Command::new(&bin)
                            .args(["instance", "ssh", &format!("{a}/sshbox"), "--check", "-i"])
                            .arg(&key)
                            .env("HANGAR_CONFIG", &config)
                            .env_remove("HANGAR_TOKEN")
                            .env_remove("HANGAR_HUB")
                            .output()?;
                        if !o.status.success() {
                            bail!("{}", String::from_utf8_lossy(&o.stderr).trim());
                        }
                        Ok(())
                    })
                    .await
                }
                None => r.skip("instance ssh --check", "runs the CLI with the client config of a fleet of its own"),
            }
            r.step("ssh exec", async {
                let g = c.ssh_gateway().await?;
                let (Some(port), Some(host_key)) = (g.port, g.host_key) else { bail!("the hub runs no SSH gateway") };
                let host = c.base_url().split("://").nth(1).and_then(|r| r.rsplit_once(':')).map(|(h, _)| h.to_string()).unwrap_or_default();
                let known = keys.path().join("known_hosts");
                std::fs::write(&known, format!("[{host}]:{port} {host_key}\n"))?;
                let o = std::process::Command::new("ssh")
                    .args(["-p", &port.to_string(), "-i"])
                    .arg(&key)
                    .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null", "-o"])
                    .arg(format!("UserKnownHostsFile={}", known.display()))
                    .arg(format!("{a}.sshbox@{host}"))
                    .args(["--", "echo through-ssh; exit 7"])
                    .stdin(std::process::Stdio::null())
                    .output()
                    .context("ssh (openssh-client)")?;
                if o.status.code() != Some(7) || String::from_utf8_lossy(&o.stdout) != "through-ssh\n" {
                    bail!("ssh exec: exit {:?}, stdout {:?}, stderr {:?}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
                }
                Ok(())
            })
            .await;
            r.step("ssh instance delete", async {
                if c.instance_get(&a, "sshbox").await.is_ok() {
                    wait_op(&c, c.instance_delete(&a, "sshbox").await?).await?;
                }
                Ok(())
            })
            .await;
        }
        "backup" => backup_scenario(r).await,
        "copy" => copy_scenario(r).await,
        "move" => move_scenario(r).await,
        "cleanup" => {
            r.step("delete instances", async {
                for p in ["work", "spread"] {
                    if c.pool_info(&a, p).await.is_ok() {
                        c.pool_delete(&a, p).await?;
                    }
                }
                for (t, n) in [(&a, "life"), (&a, "n1"), (&a, "n2"), (&b, "n3"), (&a, "sec"), (&a, "cp1"), (&a, "cp2"), (&a, "mv1"), (&a, "mvpeer")] {
                    if c.instance_get(t, n).await.is_ok() {
                        wait_op(&c, c.instance_delete(t, n).await?).await?;
                    }
                }
                Ok(())
            })
            .await;
            let (h1, h2) = (r.host(1), r.host(2));
            r.step("remove hosts", async {
                for t in [&a, &b] {
                    for _ in 0..600 {
                        if c.instance_list(Some(t)).await.map(|l| l.is_empty()).unwrap_or(true) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                for h in [&h1, &h2] {
                    if c.host_get(h).await.is_ok() {
                        c.host_remove(h).await?;
                    }
                }
                Ok(())
            })
            .await;
            let tag = r.tag.clone();
            r.step("destroy tenants", async {
                cleanup_tag(&c, &tag).await?;
                Ok(())
            })
            .await;
        }
        _ => unreachable!("scenario names are checked up front"),
    }
}

/// Follows a backup operation to its end; fails unless it succeeded.
async fn wait_backup_op(c: &HubClient, op: Operation) -> Result<()> {
    for _ in 0..1200 {
        let p = c.backup_progress(op.id).await?;
        if p.operation.status.is_final() {
            if p.operation.status != OperationStatus::Succeeded {
                bail!("{} {} {}: {}", op.kind, op.target, p.operation.status.as_str(), p.operation.error.unwrap_or_default());
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("{} {} still running after 300s", op.kind, op.target)
}

/// Backups to a directory target under the fleet's data dir: sentinel, backup, the
/// index, a restore into a new instance, a hard delete's purge and its cancel.
/// The files of a tar stream, by path (what a download brought back).
#[derive(Default)]
struct Collected(std::collections::BTreeMap<PathBuf, (hangar_agent::copy::Meta, Vec<u8>)>);

impl hangar_agent::copy::Sink for Collected {
    fn dir(&mut self, _: &std::path::Path, _: &hangar_agent::copy::Meta) -> Result<(), hangar_agent::copy::CopyError> {
        Ok(())
    }
    fn file(&mut self, path: &std::path::Path, meta: &hangar_agent::copy::Meta, size: u64, data: hangar_agent::copy::Data<'_>) -> Result<(), hangar_agent::copy::CopyError> {
        let mut v = Vec::with_capacity(size as usize);
        if let hangar_agent::copy::Data::Stream(r) = data {
            std::io::Read::read_to_end(&mut std::io::Read::take(r, size), &mut v).map_err(|e| hangar_agent::copy::CopyError::Io(e.to_string()))?;
        }
        self.0.insert(path.to_path_buf(), (*meta, v));
        Ok(())
    }
    fn symlink(&mut self, _: &std::path::Path, _: &hangar_agent::copy::Meta, _: &std::path::Path) -> Result<(), hangar_agent::copy::CopyError> {
        Ok(())
    }
}

/// `hangar cp` through the API: a file uploaded into an instance on one host, copied
/// to an instance on another (a host-to-host transfer), downloaded from there, and
/// compared byte for byte with its mode and mtime.
async fn copy_scenario(r: &mut Run) {
    use hangar_agent::copy::{Data, Meta, Sink, TarSink};
    use hangar_types::files::{CopyEnd, CopyRequest, CopyVia, FilesQuery};
    let c = r.c.clone();
    let a = r.tenant("a");
    let data: Vec<u8> = (0..(4u32 << 20) + 7).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let meta = Meta { mode: 0o640, uid: 0, gid: 0, mtime: 1_000_000_000, mtime_nsec: 0 };
    let hosts: Vec<String> = match c.host_list().await {
        Ok(h) => h.iter().filter(|h| h.state == HostState::Ready && h.endpoint.as_deref().and_then(hangar_types::net::underlay_of).is_some()).map(|h| h.name.to_string()).collect(),
        Err(_) => vec![],
    };
    r.step("copy upload", async {
        if hosts.len() < 2 {
            bail!("{} ready host(s) with a routable agent endpoint; a copy across hosts needs two", hosts.len());
        }
        create_on(&c, &a, "cp1", true, Some(&hosts[0])).await?;
        create_on(&c, &a, "cp2", true, Some(&hosts[1])).await?;
        let mut tar = vec![];
        let mut t = TarSink::new(&mut tar);
        t.file(std::path::Path::new("smoke.bin"), &meta, data.len() as u64, Data::Stream(&mut &data[..]))?;
        t.finish()?;
        let stream: hangar_client::files::ByteStream = Box::pin(futures_util_once(tar));
        let w = c.files_upload(&a, "cp1", &FilesQuery { path: "/home/".into(), recursive: false }, stream).await?;
        if w.bytes != data.len() as u64 {
            bail!("the upload wrote {} bytes of {}", w.bytes, data.len());
        }
        Ok(())
    })
    .await;
    r.step("copy across hosts", async {
        let res = exec(&c, &a, "cp2", "mkdir -p /home/in").await?;
        if res.exit_code != 0 {
            bail!("mkdir: {}", res.stderr);
        }
        let end = |i: &str, p: &str| -> Result<CopyEnd> { Ok(CopyEnd { tenant: a.parse()?, instance: i.parse()?, path: p.into() }) };
        let done = c.files_copy(&CopyRequest { from: end("cp1", "/home/smoke.bin")?, to: end("cp2", "/home/in/")?, recursive: false }).await?;
        if done.via != CopyVia::Transfer || done.written.bytes != data.len() as u64 {
            bail!("the copy went {:?} with {} bytes", done.via, done.written.bytes);
        }
        Ok(())
    })
    .await;
    let mut got = Collected::default();
    r.step("copy download", async {
        let stream = c.files_download(&a, "cp2", &FilesQuery { path: "/home/in/smoke.bin".into(), recursive: false }).await?;
        let reader = hangar_client::files::ChannelReader::spawn(stream);
        got = tokio::task::spawn_blocking(move || {
            let mut got = Collected::default();
            hangar_agent::copy::untar(reader, false, &mut got).map(|_| got)
        })
        .await??;
        Ok(())
    })
    .await;
    r.step("copy compare", async {
        let Some((m, bytes)) = got.0.get(std::path::Path::new("smoke.bin")) else { bail!("the download holds {:?}", got.0.keys().collect::<Vec<_>>()) };
        if *bytes != data {
            bail!("the downloaded file differs from the uploaded one ({} bytes, {} expected)", bytes.len(), data.len());
        }
        if (m.mode, m.mtime, m.uid) != (0o640, 1_000_000_000, 0) {
            bail!("mode, mtime or owner changed on the way: {m:?}");
        }
        for i in ["cp1", "cp2"] {
            wait_op(&c, c.instance_delete(&a, i).await?).await?;
        }
        Ok(())
    })
    .await;
}

/// Follows the newest move of `tenant/name` to its end (what `instance move --wait`
/// does); fails if its reported bytes ever go down or it does not end `done`.
async fn wait_move(c: &HubClient, tenant: &str, name: &str) -> Result<hangar_types::moves::MoveStatus> {
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut last = 0u64;
    loop {
        let m = c.instance_move_status(tenant, name).await?;
        if m.bytes < last {
            bail!("the move's progress went back from {last} to {} bytes", m.bytes);
        }
        last = m.bytes;
        if m.phase.is_final() {
            if m.phase != hangar_types::moves::MovePhase::Done {
                bail!("the move ended {}: {}", m.phase, m.error.unwrap_or_default());
            }
            return Ok(m);
        }
        if Instant::now() > deadline {
            bail!("the move is still {} after 150 s ({last} bytes sent)", m.phase);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `hangar instance move` and `hangar cp` after it: a sentinel written on one host,
/// the instance moved to another with the same id and address, the sentinel intact,
/// nothing of it left on the source; then a file copied from the moved instance to
/// one on the first host (a cross-host copy after the move) and back, compared.
async fn move_scenario(r: &mut Run) {
    use hangar_types::files::{CopyEnd, CopyRequest, CopyVia};
    let c = r.c.clone();
    let a = r.tenant("a");
    // Hosts that can take part in a host-to-host transfer (a routable agent endpoint);
    // with the harness's own fleet, the two it added.
    let mut hosts: Vec<String> = match c.host_list().await {
        Ok(h) => h.iter().filter(|h| h.state == HostState::Ready && h.endpoint.as_deref().and_then(hangar_types::net::underlay_of).is_some()).map(|h| h.name.to_string()).collect(),
        Err(_) => vec![],
    };
    let own = [r.host(1), r.host(2)];
    if own.iter().all(|h| hosts.contains(h)) {
        hosts = own.to_vec();
    }
    let sum = "sha256sum /home/mv-sentinel.bin | cut -d' ' -f1";
    let mut before: Option<Instance> = None;
    let mut sha = String::new();
    r.step("move sentinel", async {
        if hosts.len() < 2 {
            bail!("{} ready host(s) with a routable agent endpoint; a move needs two", hosts.len());
        }
        create_on(&c, &a, "mv1", true, Some(&hosts[0])).await?;
        create_on(&c, &a, "mvpeer", true, Some(&hosts[0])).await?;
        let res = exec(&c, &a, "mv1", &format!("head -c 4194304 /dev/urandom > /home/mv-sentinel.bin && echo moved > /home/mv-hello.txt && sync && {sum}")).await?;
        if res.exit_code != 0 || res.stdout.trim().len() != 64 {
            bail!("sentinel write: exit {}: {} {}", res.exit_code, res.stdout, res.stderr);
        }
        sha = res.stdout.trim().to_string();
        before = Some(c.instance_get(&a, "mv1").await?);
        Ok(())
    })
    .await;
    r.step("move to the second host", async {
        let req = hangar_types::moves::InstanceMove::to(hosts[1].parse()?);
        c.instance_move(&a, "mv1", &req).await?;
        let m = wait_move(&c, &a, "mv1").await?;
        let down = m.downtime_ms.ok_or_else(|| anyhow!("the move reports no downtime"))?;
        eprintln!("    moved {a}/mv1 from {} to {}: {} bytes sent, {down} ms down", m.source, m.target, m.bytes);
        Ok(())
    })
    .await;
    r.step("same address and id", async {
        let b = before.as_ref().ok_or_else(|| anyhow!("no record from before the move"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let i = loop {
            let i = c.instance_get(&a, "mv1").await?;
            if i.observed == ObservedState::Running || Instant::now() > deadline {
                break i;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if i.host.as_ref().map(|h| h.as_str()) != Some(hosts[1].as_str()) {
            bail!("mv1 is on host {:?}, expected {}", i.host, hosts[1]);
        }
        if (i.id, i.address) != (b.id, b.address) {
            bail!("id or address changed: {} {:?} -> {} {:?}", b.id, b.address, i.id, i.address);
        }
        if (i.state, i.observed) != (hangar_types::InstanceState::Running, ObservedState::Running) {
            bail!("mv1 is {} (observed {}) on the target, expected running", i.state, i.observed);
        }
        Ok(())
    })
    .await;
    r.step("sentinel moved", async {
        let res = exec(&c, &a, "mv1", &format!("{sum}; cat /home/mv-hello.txt")).await?;
        if res.stdout != format!("{sha}\nmoved\n") {
            bail!("after the move the sentinel reads {:?}, expected {sha} and moved", res.stdout);
        }
        Ok(())
    })
    .await;
    let own_fleet = r.own_fleet.clone();
    r.step("source holds nothing", async {
        let b = before.as_ref().ok_or_else(|| anyhow!("no record from before the move"))?;
        let sb = b.id.sandbox_id().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut left = vec![];
            if c.host_status(&hosts[0]).await?.instances.iter().any(|i| i.id == b.id) {
                left.push(format!("host {} still reports the instance", hosts[0]));
            }
            // On the harness's own fleet the hosts' pools can be looked at.
            if let Some(data) = &own_fleet {
                let pool = |h: &str| data.join("hosts").join(h).join("agent/storage/pool");
                for d in ["volumes", "snapshots", "transfers"] {
                    let p = pool(&hosts[0]).join(d).join(&sb);
                    if p.exists() {
                        left.push(p.display().to_string());
                    }
                }
                let staged = pool(&hosts[1]).join("transfers").join(&sb);
                if staged.exists() {
                    left.push(format!("staging on the target: {}", staged.display()));
                }
            }
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("30 s after the move: {}", left.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    let end = |i: &str, p: &str| -> Result<CopyEnd> { Ok(CopyEnd { tenant: a.parse()?, instance: i.parse()?, path: p.into() }) };
    let copy = |from: Result<CopyEnd>, to: Result<CopyEnd>| {
        let c = c.clone();
        async move {
            let done = c.files_copy(&CopyRequest { from: from?, to: to?, recursive: false }).await?;
            if done.via != CopyVia::Transfer || done.written.bytes != 4 << 20 {
                bail!("the copy went {:?} with {} bytes, expected a transfer of {}", done.via, done.written.bytes, 4 << 20);
            }
            anyhow::Ok(())
        }
    };
    // The moved instance (second host) to one on the first host, and back.
    r.step("copy after move", copy(end("mv1", "/home/mv-sentinel.bin"), end("mvpeer", "/home/"))).await;
    r.step("copy back", copy(end("mvpeer", "/home/mv-sentinel.bin"), end("mv1", "/home/back.bin"))).await;
    r.step("move compare", async {
        let peer = exec(&c, &a, "mvpeer", sum).await?.stdout;
        let back = exec(&c, &a, "mv1", "sha256sum /home/back.bin | cut -d' ' -f1").await?.stdout;
        if peer.trim() != sha || back.trim() != sha {
            bail!("checksums differ: sentinel {sha}, on the first host {}, copied back {}", peer.trim(), back.trim());
        }
        for i in ["mv1", "mvpeer"] {
            wait_op(&c, c.instance_delete(&a, i).await?).await?;
        }
        Ok(())
    })
    .await;
}

/// A stream of one chunk.
fn futures_util_once(b: Vec<u8>) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    futures_util::stream::once(async move { Ok(bytes::Bytes::from(b)) })
}

async fn backup_scenario(r: &mut Run) {
    use hangar_types::backups::{BackupRestore, BackupTargetAdd, BackupTargetSet};
    let Some(data) = r.own_fleet.clone() else {
        for s in SCENARIOS.iter().find(|(n, _)| *n == "backup").map(|(_, s)| *s).unwrap_or_default() {
            r.skip(s, "needs the harness's own fleet (a directory target on this machine)");
        }
        return;
    };
    let c = r.c.clone();
    let a = r.tenant("a");
    let target = format!("{}-bk", r.tag);
    let dir = data.join("smoke-backups");
    r.step("backup target add", async {
        std::fs::create_dir_all(&dir)?;
        let req = BackupTargetAdd { name: target.parse()?, location: format!("dir:{}", dir.display()), endpoint: None, region: None, access_key: None, secret_key: None };
        c.backup_target_add(&req).await?;
        c.backup_target_set(&a, &BackupTargetSet { target: Some(target.parse()?) }).await?;
        Ok(())
    })
    .await;
    r.step("backup sentinel", async {
        create(&c, &a, "bk", true).await?;
        let res = exec(&c, &a, "bk", "mkdir -p /home/docs && echo backed-up > /home/docs/bk-sentinel.txt").await?;
        if res.exit_code != 0 {
            bail!("sentinel write: exit {}: {}", res.exit_code, res.stderr);
        }
        Ok(())
    })
    .await;
    r.step("backup create", async { wait_backup_op(&c, c.backup_create(&a, "bk").await?).await }).await;
    r.step("backup found in index", async {
        let found = c.backup_find(&a, "bk", "bk-sentinel*").await?;
        if found.len() != 1 || found[0].file.path != "docs/bk-sentinel.txt" {
            bail!("the index has {found:?} for bk-sentinel*");
        }
        Ok(())
    })
    .await;
    r.step("restore into a new instance", async {
        let backup = c.backup_list(&a, "bk").await?.pop().ok_or_else(|| anyhow!("no backup listed"))?;
        let req = BackupRestore { backup: backup.id, path: None, as_instance: Some("bkr".parse()?), force: false };
        wait_backup_op(&c, c.backup_restore(&a, "bk", &req).await?).await?;
        action(&c, &a, "bkr", "start").await?;
        let res = exec(&c, &a, "bkr", "cat /home/docs/bk-sentinel.txt").await?;
        if res.stdout != "backed-up\n" {
            bail!("the restored instance holds {:?}", res.stdout);
        }
        Ok(())
    })
    .await;
    r.step("hard delete schedules a purge", async {
        c.backup_purge_schedule(&a, "bk").await?;
        wait_op(&c, c.instance_delete(&a, "bk").await?).await?;
        if !c.backup_purge_list().await?.iter().any(|p| p.tenant.as_str() == a && p.instance.as_str() == "bk") {
            bail!("no purge of {a}/bk is listed");
        }
        Ok(())
    })
    .await;
    r.step("purge cancelled", async {
        c.backup_purge_cancel(&a, "bk").await?;
        if c.backup_purge_list().await?.iter().any(|p| p.tenant.as_str() == a) {
            bail!("the purge is still listed after its cancel");
        }
        if c.backup_list(&a, "bk").await?.is_empty() {
            bail!("the backups of {a}/bk are gone");
        }
        Ok(())
    })
    .await;
    // Runs even after a failure: the target and instances must not outlive the run.
    let failed = std::mem::replace(&mut r.failed, false);
    r.step("backup cleanup", async {
        for n in ["bk", "bkr"] {
            if c.instance_get(&a, n).await.is_ok() {
                wait_op(&c, c.instance_delete(&a, n).await?).await?;
            }
        }
        let _ = c.backup_purge_cancel(&a, "bk").await;
        c.backup_target_set(&a, &BackupTargetSet { target: None }).await?;
        c.backup_target_remove(&target).await?;
        Ok(())
    })
    .await;
    r.failed |= failed;
}

/// Runs the chosen scenarios (on a fleet of its own unless `hub` is given); the report
/// is the PASS/FAIL matrix. `config`: the client config holding defaults for `hub`.
pub async fn run(a: &SmokeOptions, config: &std::path::Path) -> Result<Report> {
    if a.list {
        let text = SCENARIOS.iter().map(|(s, steps)| format!("{s}: {}", steps.join(", "))).collect::<Vec<_>>().join("\n");
        return Ok(Report::text(text, 0));
    }
    let names: Vec<&str> = SCENARIOS.iter().map(|(n, _)| *n).collect();
    let chosen: Vec<&str> = if a.scenarios.is_empty() { names.clone() } else { a.scenarios.iter().map(String::as_str).collect() };
    if let Some(bad) = chosen.iter().find(|s| !names.contains(s)) {
        bail!("--scenario: unknown scenario '{bad}': choose from {}", names.join(", "));
    }
    // An existing fleet, or one of our own.
    let (fleet, c) = match &a.hub {
        Some(url) => {
            let token = match &a.token_file {
                Some(p) => std::fs::read_to_string(p).with_context(|| format!("--token-file {}", p.display()))?.trim().to_string(),
                None => hangar_node::config::load(config)?.token,
            };
            let ca = match &a.ca_file {
                Some(p) => std::fs::read_to_string(p).with_context(|| format!("--ca-file {}", p.display()))?,
                None => hangar_node::config::load(config).context("--hub needs --ca-file or a client config holding the hub's CA")?.ca_pem,
            };
            let c = HubClient::new(url, &ca, &token)?;
            c.host_list().await.with_context(|| format!("the hub at {url} does not answer an admin call: check the URL and the token"))?;
            (None, c)
        }
        None => {
            let f = Fleet::start(FleetOptions::new(&a.bin, "hangar-smoke-")).await?;
            let c = f.client()?;
            (Some(f), c)
        }
    };
    if let Some(tag) = &a.cleanup {
        let n = cleanup_tag(&c, tag).await?;
        return Ok(Report::item(serde_json::json!({"removed_tenants": n}), format!("removed {n} tenant(s) of run {tag}"), 0));
    }
    let tag = format!("smk{}", &uuid_like());
    let dir = a.results.join(&tag);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!("smoke run {tag}");
    let mut results: Vec<(String, Vec<Step>)> = vec![];
    let mut any_failed = false;
    for s in &chosen {
        // Cleanup always runs (unless --keep), even after a failure.
        if any_failed && !a.continue_on_failure && *s != "cleanup" {
            continue;
        }
        if *s == "cleanup" && a.keep {
            continue;
        }
        eprintln!("{s}:");
        let cli = fleet.as_ref().map(|f| (a.bin.clone(), f.config()));
        let mut r = Run { c: c.clone(), tag: tag.clone(), steps: vec![], failed: false, own_fleet: fleet.as_ref().map(|f| f.data_dir()), cli };
        scenario(&mut r, s).await;
        any_failed |= r.failed;
        std::fs::write(dir.join(format!("{s}.json")), serde_json::to_string_pretty(&serde_json::json!({"scenario": s, "run_tag": tag, "steps": r.steps}))?)?;
        results.push((s.to_string(), r.steps));
    }
    if !a.keep && !chosen.contains(&"cleanup") {
        let _ = cleanup_tag(&c, &tag).await;
    }
    let pass = results.iter().flat_map(|(_, s)| s).filter(|s| s.status == "PASS").count();
    let skipped = results.iter().flat_map(|(_, s)| s).filter(|s| s.status == "SKIP").count();
    let fail = results.iter().flat_map(|(_, s)| s).filter(|s| s.status == "FAIL").count();
    let summary = serde_json::json!({
        "run_tag": tag,
        "ok": fail == 0,
        "passed": pass,
        "failed": fail,
        "skipped": skipped,
        "scenarios": results.iter().map(|(n, s)| serde_json::json!({"scenario": n, "steps": s})).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    if a.keep {
        if let Some(f) = fleet {
            eprintln!("keeping the fleet in {} (remove it with `hangar down --purge --data-dir {}`)", f.dir.path().display(), f.data_dir().display());
            f.keep();
        }
    } else {
        drop(fleet);
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY).set_header(vec!["SCENARIO", "STEP", "RESULT", "MS", "ERROR"]);
    for (n, steps) in &results {
        for s in steps {
            t.add_row(vec![n.clone(), s.name.clone(), s.status.to_string(), s.duration_ms.to_string(), s.error.clone().unwrap_or_default()]);
        }
    }
    let text = format!("{t}\nsmoke {tag}: {pass} passed, {fail} failed, {skipped} skipped (results in {})", dir.display());
    Ok(Report::item(summary, text, if fail == 0 { 0 } else { 1 }))
}

/// Six hex digits from the clock and the process id: short, unique enough per machine.
fn uuid_like() -> String {
    let n = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64 ^ ((std::process::id() as u64) << 20);
    format!("{:06x}", n & 0xff_ffff)
}
