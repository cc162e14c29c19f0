//! `hangar bench`: hangar measured against the raw tool underneath, in the same run, on
//! a fleet of its own. Absolute times on a shared machine are context; ratios are the
//! figure. Every sample is checked to be real (the instance is observed running) before
//! it counts.

use crate::fleet::{wait_host, Fleet, FleetOptions, SplitFleet};
use crate::Report;
use anyhow::{bail, Context, Result};
use hangar_client::HubClient;
use hangar_types::api::*;
use hangar_types::{InstanceState, ObservedState};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What `hangar bench` measures and how much.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The `hangar` binary its fleets run.
    pub bin: PathBuf,
    /// A subset of `ALL` (all when empty).
    pub only: Vec<String>,
    /// Samples for start and resume.
    pub runs: usize,
    /// Instances in the burst.
    pub burst: usize,
    /// kill -9 / stale detection rounds (each takes the stale threshold, 12 s).
    pub heartbeat_runs: usize,
    /// Seconds of load for the api benchmark.
    pub api_secs: u64,
    /// Running instances the reconcile benchmark scales a pool to.
    pub reconcile_size: u32,
    /// Where to write the results.
    pub out: PathBuf,
    /// Requests for the proxy's latency, and MiB of its download.
    pub proxy_requests: usize,
    pub proxy_mib: u64,
    /// MiB of the tree the backup benchmark backs up.
    pub backup_mib: u64,
    /// MiB of the file the copy benchmark copies across hosts.
    pub copy_mib: u64,
    /// MiB of the workspace the move benchmark moves between hosts.
    pub move_mib: u64,
}

const ALL: &[&str] = &[
    "start",
    "resume",
    "burst",
    "api",
    "reconcile",
    "heartbeat",
    "snapshot",
    "proxy",
    "ssh",
    "backup",
    "copy",
    "move",
];

/// Names for several benchmarks at once (`--only access`: the issue's name for both
/// ways into a workspace).
const GROUPS: &[(&str, &[&str])] = &[("access", &["proxy", "ssh"])];

/// The benchmarks one `--only` name stands for.
fn expand(name: &str) -> Vec<&str> {
    GROUPS.iter().find(|(g, _)| *g == name).map(|(_, members)| members.to_vec()).unwrap_or_else(|| vec![name])
}

#[derive(Serialize, Clone, Debug)]
struct Row {
    bench: String,
    metric: String,
    hangar: f64,
    raw: Option<f64>,
    ratio: Option<f64>,
    unit: String,
    target: String,
    met: Option<bool>,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v
}

fn spec(command: &[&str]) -> InstanceSpec {
    InstanceSpec { image: ImageRef::Host, vcpus: 1, mem_mib: 64, disk_mib: 64, command: command.iter().map(|s| s.to_string()).collect(), env: Default::default(), secrets: vec![] }
}

/// Creates and starts one instance through the hub; the time until it is confirmed running.
async fn create_running(c: &HubClient, name: &str) -> Result<Duration> {
    let t = Instant::now();
    let op = c.instance_create("bench", &InstanceCreate::new(name.parse()?, spec(&[]), true)).await?;
    let op = c.operation_wait_final(op.id, Duration::from_secs(120)).await?;
    let took = t.elapsed();
    if op.status != OperationStatus::Succeeded {
        bail!("start of {name} {}: {}", op.status.as_str(), op.error.unwrap_or_default());
    }
    let i = c.instance_get("bench", name).await?;
    if i.state != InstanceState::Running || i.observed != ObservedState::Running {
        bail!("{name} is {} / {} after its start succeeded", i.state, i.observed);
    }
    Ok(took)
}

async fn delete(c: &HubClient, name: &str) -> Result<()> {
    let op = c.instance_delete("bench", name).await?;
    c.operation_wait_final(op.id, Duration::from_secs(120)).await?;
    Ok(())
}

fn runc(root: &Path, args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new("runc").arg("--root").arg(root).args(args).stdin(Stdio::null()).output()?)
}

/// The raw baseline: the very bundle hangar would write, started with `runc run -d` by
/// hand, timed until `runc state` says running.
fn raw_runc_start(dir: &Path, n: usize) -> Result<Vec<f64>> {
    let root = dir.join("rawrunc");
    let mut out = vec![];
    for i in 0..n {
        let id = format!("rawbench{i}");
        let bundle = raw_bundle(dir, &id, 64)?;
        let t = Instant::now();
        let o = Command::new("runc").arg("--root").arg(&root).args(["run", "-d", "--bundle"]).arg(&bundle).arg(&id).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
        if !o.success() {
            bail!("raw runc run failed");
        }
        loop {
            let st = runc(&root, &["state", &id])?;
            if String::from_utf8_lossy(&st.stdout).contains("\"running\"") {
                break;
            }
        }
        out.push(ms(t.elapsed()));
        runc(&root, &["delete", "--force", &id])?;
    }
    Ok(out)
}

/// Writes the bundle hangar would write for sandbox `id` under `dir`.
fn raw_bundle(dir: &Path, id: &str, mem_mib: u64) -> Result<PathBuf> {
    let bundle = dir.join("bundles").join(id);
    let home = dir.join("homes").join(id);
    std::fs::create_dir_all(&bundle)?;
    std::fs::create_dir_all(&home)?;
    let s = hangar_agent::drivers::runtime::SandboxSpec {
        id: id.parse()?,
        image: ImageRef::Host,
        home_dir: home,
        vcpus: 1,
        mem_mib,
        pids_limit: 1024,
        command: vec![],
        env: Default::default(),
        hostname: id.to_string(),
        log_path: dir.join(format!("{id}.log")),
        // The raw runtime's sandboxes share one range: they only run `true`.
        ids: hangar_types::idmap::IdRange::at(hangar_types::idmap::DEFAULT_FIRST_ID),
        secrets_dir: None,
        // What plain runc does: a new user and network namespace of its own.
        join: None,
    };
    hangar_agent::drivers::runtime::bundle::write(&bundle, &s)?;
    Ok(bundle)
}

/// The raw baseline of `reconcile`: `n` sandboxes started with `runc run -d` by hand,
/// `parallel` at a time (the agent's own parallelism), then removed. Returns the wall time.
fn raw_runc_many(dir: &Path, n: usize, parallel: usize) -> Result<Duration> {
    let root = dir.join("rawmany");
    let mut bundles = vec![];
    for i in 0..n {
        let id = format!("rawmany{i}");
        bundles.push((id.clone(), raw_bundle(dir, &id, 16)?));
    }
    let t = Instant::now();
    let chunks: Vec<Vec<(String, PathBuf)>> = bundles.chunks(n.div_ceil(parallel.max(1)).max(1)).map(|c| c.to_vec()).collect();
    let failed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for chunk in &chunks {
            let (root, failed) = (&root, &failed);
            sc.spawn(move || {
                for (id, bundle) in chunk {
                    let ok = Command::new("runc").arg("--root").arg(root).args(["run", "-d", "--bundle"]).arg(bundle).arg(id).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false);
                    if !ok {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let took = t.elapsed();
    for (id, _) in &bundles {
        let _ = runc(&root, &["delete", "--force", id]);
    }
    let f = failed.load(std::sync::atomic::Ordering::Relaxed);
    if f > 0 {
        bail!("{f} of {n} raw runc runs failed");
    }
    Ok(took)
}

/// Keeps a failed benchmark's error for the report; the next benchmark still runs.
fn record(failed: &mut Vec<(&'static str, String)>, bench: &'static str, r: Result<()>) {
    if let Err(e) = r {
        failed.push((bench, format!("{e:#}")));
    }
}

/// Runs the benchmarks on fleets of its own, writes `a.out` and reports the table.
pub async fn run(a: &BenchOptions) -> Result<Report> {
    let which: Vec<&str> = if a.only.is_empty() { ALL.to_vec() } else { a.only.iter().flat_map(|w| expand(w)).collect() };
    if let Some(bad) = which.iter().find(|w| !ALL.contains(w)) {
        bail!("--only: unknown benchmark '{bad}': choose from {} (or {})", ALL.join(", "), GROUPS.iter().map(|(g, _)| *g).collect::<Vec<_>>().join(", "));
    }
    if a.runs == 0 || a.burst == 0 {
        bail!("--runs and --burst must be at least 1");
    }
    let started_at = time::OffsetDateTime::now_utc();
    // 1,000 one-vCPU instances on 2 cores need more than the default 256 per core.
    let mut opts = FleetOptions::new(&a.bin, "hangar-bench-");
    opts.up_args = vec!["--cpu-overcommit".into(), "1024".into()];
    let fleet = Fleet::start(opts).await?;
    let c = fleet.client()?;
    c.tenant_create(&TenantCreate {
        name: "bench".parse()?,
        quotas: Some(Quotas { max_vcpus: 100_000, max_mem_mib: 10_000_000, max_running: 5000, max_instances: 5000, max_disk_gib: 100_000 }),
        isolated: false,
        // A /20 (4,093 addresses): the reconcile benchmark runs 1,000 in one pool.
        net_prefix: Some(20),
    })
    .await?;
    let mut rows = vec![];
    // A benchmark that fails is reported and the others still run: one broken part
    // must not throw away half an hour of measurements.
    let mut failed: Vec<(&'static str, String)> = vec![];
    let row = |bench: &str, metric: &str, hangar: f64, raw: Option<f64>, unit: &str, target: &str, met: Option<bool>| Row {
        bench: bench.into(),
        metric: metric.into(),
        hangar,
        raw,
        ratio: raw.map(|r| hangar / r),
        unit: unit.into(),
        target: target.into(),
        met,
    };
    if which.contains(&"start") {
        let r: Result<()> = async {
            eprintln!("bench start: {} runs through the hub, {} raw runc runs", a.runs, a.runs);
            let mut samples = vec![];
            for i in 0..a.runs {
                samples.push(ms(create_running(&c, &format!("s{i}")).await?));
            }
            for i in 0..a.runs {
                delete(&c, &format!("s{i}")).await?;
            }
            let h = sorted(samples);
            let r = sorted(raw_runc_start(fleet.dir.path(), a.runs)?);
            let ratio = pct(&h, 0.5) / pct(&r, 0.5);
            rows.push(row("start", "p50 create-to-running", pct(&h, 0.5), Some(pct(&r, 0.5)), "ms", "ratio <= 1.3", Some(ratio <= 1.3)));
            rows.push(row("start", "p90", pct(&h, 0.9), Some(pct(&r, 0.9)), "ms", "", None));
            rows.push(row("start", "p99", pct(&h, 0.99), Some(pct(&r, 0.99)), "ms", "", None));
            Ok(())
        }
        .await;
        record(&mut failed, "start", r);
    }
    if which.contains(&"resume") {
        let r: Result<()> = async {
            eprintln!("bench resume: {} warm/resume cycles", a.runs);
            create_running(&c, "r0").await?;
            let mut samples = vec![];
            for _ in 0..a.runs {
                let op = c.instance_action("bench", "r0", "warm").await?;
                c.operation_wait_final(op.id, Duration::from_secs(60)).await?;
                let t = Instant::now();
                let op = c.instance_action("bench", "r0", "resume").await?;
                let op = c.operation_wait_final(op.id, Duration::from_secs(60)).await?;
                if op.status != OperationStatus::Succeeded {
                    bail!("resume failed: {:?}", op.error);
                }
                samples.push(ms(t.elapsed()));
            }
            // Raw: runc resume of a paused sandbox of the same runtime root.
            let root = fleet.data_dir().join("agent/runtime");
            let sid = c.instance_get("bench", "r0").await?.id.sandbox_id();
            let mut raw = vec![];
            for _ in 0..a.runs {
                runc(&root, &["pause", sid.as_str()])?;
                let t = Instant::now();
                runc(&root, &["resume", sid.as_str()])?;
                raw.push(ms(t.elapsed()));
            }
            // Sleeping -> running: the processes were stopped, so waking is a start (volume,
            // namespace and address kept).
            let mut woke = vec![];
            for _ in 0..a.runs.min(10) {
                let op = c.instance_action("bench", "r0", "sleep").await?;
                c.operation_wait_final(op.id, Duration::from_secs(60)).await?;
                let t = Instant::now();
                let op = c.instance_action("bench", "r0", "start").await?;
                let op = c.operation_wait_final(op.id, Duration::from_secs(60)).await?;
                if op.status != OperationStatus::Succeeded {
                    bail!("wake failed: {:?}", op.error);
                }
                woke.push(ms(t.elapsed()));
            }
            delete(&c, "r0").await?;
            let (h, r) = (sorted(samples), sorted(raw));
            rows.push(row("resume", "p50 warm->running", pct(&h, 0.5), Some(pct(&r, 0.5)), "ms", "<= 10 ms", Some(pct(&h, 0.5) <= 10.0)));
            rows.push(row("resume", "p99", pct(&h, 0.99), Some(pct(&r, 0.99)), "ms", "", None));
            let w = sorted(woke);
            rows.push(row("resume", "p50 sleeping->running", pct(&w, 0.5), None, "ms", "", None));
            rows.push(row("resume", "p99 sleeping->running", pct(&w, 0.99), None, "ms", "", None));
            Ok(())
        }
        .await;
        record(&mut failed, "resume", r);
    }
    if which.contains(&"burst") {
        let r: Result<()> = async {
            eprintln!("bench burst: {} instances at once", a.burst);
            let mem_before = mem_available_kib();
            let rss_before = fleet.rss_kib();
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for i in 0..a.burst {
                let c = c.clone();
                set.spawn(async move { create_running(&c, &format!("b{i}")).await });
            }
            let mut lat = vec![];
            while let Some(r) = set.join_next().await {
                lat.push(ms(r??));
            }
            let wall = t.elapsed().as_secs_f64();
            let running = c.instance_list(Some("bench")).await?.iter().filter(|i| i.observed == ObservedState::Running).count();
            if running < a.burst {
                bail!("only {running} of {} burst instances run", a.burst);
            }
            let l = sorted(lat);
            let rate = a.burst as f64 / wall;
            rows.push(row("burst", "instances per second", rate, None, "/s", ">= 20/s", Some(rate >= 20.0)));
            rows.push(row("burst", "p99 create-to-running", pct(&l, 0.99), None, "ms", "", None));
            // Density: what the host lost per idle instance (the workload, `sleep`, is ~0.5
            // MiB of its own), and how much the hub+agent process grew.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let per = (mem_before.saturating_sub(mem_available_kib())) as f64 / 1024.0 / a.burst as f64;
            rows.push(row("density", "host memory per idle running instance", per, None, "MiB", "<= 1 MiB beyond the workload", Some(per <= 1.5)));
            let grew = (fleet.rss_kib().saturating_sub(rss_before)) as f64 / 1024.0 / a.burst as f64;
            rows.push(row("density", "hub+agent RSS growth per instance", grew, None, "MiB", "", None));
            // No host went stale while the machine was busy with the burst.
            let stale = c.events(None, 10_000).await?.iter().filter(|e| e.action == "host.state" && e.message.as_deref().is_some_and(|m| m.contains("-> stale"))).count();
            rows.push(row("heartbeat", "false stale marks during the burst", stale as f64, None, "", "0", Some(stale == 0)));
            let mut set = tokio::task::JoinSet::new();
            for i in 0..a.burst {
                let c = c.clone();
                set.spawn(async move { delete(&c, &format!("b{i}")).await });
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
            Ok(())
        }
        .await;
        record(&mut failed, "burst", r);
    }
    if which.contains(&"api") {
        let r: Result<()> = async {
            eprintln!("bench api: 100 clients for {}s", a.api_secs);
            create_running(&c, "api0").await?;
            // A read-only token per client, as 100 users would have: one shared token
            // would measure the hub's per-token rate (200 a second), not its API, and
            // leave the bench's own token over its rate for the next call.
            let mut tokens = vec![];
            for k in 0..100 {
                let req = TokenCreate { tenant: Some("bench".parse()?), role: Some(TokenRole::Viewer), description: Some(format!("bench api client {k}")), ttl_secs: Some(3600) };
                tokens.push(c.token_create(&req).await?);
            }
            let stop = Instant::now() + Duration::from_secs(a.api_secs);
            let mut set = tokio::task::JoinSet::new();
            for (k, t) in tokens.iter().enumerate() {
                let c = c.with_token(&t.token);
                set.spawn(async move {
                    let (mut lat, mut failed) = (vec![], None);
                    while Instant::now() < stop {
                        let t = Instant::now();
                        let r = if k % 2 == 0 { c.instance_get("bench", "api0").await.map(|_| ()) } else { c.instance_list(Some("bench")).await.map(|_| ()) };
                        match r {
                            Ok(()) => lat.push(ms(t.elapsed())),
                            Err(e) => failed = Some(e.to_string()),
                        }
                    }
                    (lat, failed)
                });
            }
            let mut lat = vec![];
            while let Some(r) = set.join_next().await {
                let (l, failed) = r?;
                // A refused request is not a fast one: say so rather than count around it.
                if let Some(e) = failed {
                    bail!("a client's request failed under load: {e}");
                }
                lat.extend(l);
            }
            let l = sorted(lat);
            let rps = l.len() as f64 / a.api_secs as f64;
            rows.push(row("api", "requests per second (get+list)", rps, None, "/s", ">= 5000/s", Some(rps >= 5000.0)));
            rows.push(row("api", "p99 latency", pct(&l, 0.99), None, "ms", "< 20 ms", Some(pct(&l, 0.99) < 20.0)));
            for t in &tokens {
                c.token_revoke(t.id.as_str()).await?;
            }
            delete(&c, "api0").await?;
            Ok(())
        }
        .await;
        record(&mut failed, "api", r);
    }
    if which.contains(&"reconcile") {
        let r: Result<()> = async {
            let n = a.reconcile_size;
            eprintln!("bench reconcile: a pool from 0 to {n} running on one host, then {n} raw runc runs");
            let req = PoolCreate {
                name: "rec".parse()?,
                role: "worker".parse()?,
                image: ImageRef::Host,
                vcpus: 1,
                mem_mib: 16,
                disk_mib: 16,
                command: vec![],
                env: Default::default(),
                counts: PoolCounts::default(),
                secrets: vec![],
            };
            c.pool_create("bench", &req).await?;
            let cpu0 = fleet.cpu_secs();
            let t = Instant::now();
            c.pool_scale("bench", "rec", &PoolScale { running: Some(n), warm: None, sleeping: None }).await?;
            let p = hangar_client::onboarding::wait_converged(&c, "bench", "rec", Duration::from_secs(3600)).await?;
            let took = t.elapsed();
            let cpu1 = fleet.cpu_secs();
            let running = c.pool_members("bench", "rec").await?.iter().filter(|m| m.observed == ObservedState::Running).count();
            if running != n as usize || p.actual.running != n {
                bail!("the pool converged with {running} of {n} members observed running");
            }
            c.pool_delete("bench", "rec").await?;
            let deadline = Instant::now() + Duration::from_secs(1800);
            while !c.pool_members("bench", "rec").await?.is_empty() {
                if Instant::now() > deadline {
                    bail!("the reconcile pool's members were not deleted in 30 min");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let raw = raw_runc_many(fleet.dir.path(), n as usize, 8)?;
            rows.push(row("reconcile", &format!("0 -> {n} running: converge time"), took.as_secs_f64(), Some(raw.as_secs_f64()), "s", "", None));
            rows.push(row("reconcile", "hub+agent CPU seconds", cpu1.0 - cpu0.0, None, "s", "", None));
            rows.push(row("reconcile", "runtime (runc, btrfs, nft) CPU seconds", cpu1.1 - cpu0.1, None, "s", "", None));
            Ok(())
        }
        .await;
        record(&mut failed, "reconcile", r);
    }
    if which.contains(&"heartbeat") {
        let r: Result<()> = async {
            eprintln!("bench heartbeat: {} rounds of kill -9 until stale (default threshold)", a.heartbeat_runs);
            let stale_after = hangar_hub::HubConfig::default().stale_after.as_secs_f64();
            let (mut split, sc) = SplitFleet::start(&a.bin, "hangar-bench-hb-", stale_after).await?;
            let mut samples = vec![];
            for _ in 0..a.heartbeat_runs {
                split.kill_agent();
                let t = Instant::now();
                wait_host(&sc, "node-a", HostState::Stale, Duration::from_secs(60)).await?;
                samples.push(t.elapsed().as_secs_f64());
                split.start_agent().await?;
                wait_host(&sc, "node-a", HostState::Ready, Duration::from_secs(60)).await?;
            }
            let s = sorted(samples);
            rows.push(row("heartbeat", "kill -9 to stale, max", s[s.len() - 1], None, "s", "<= 15 s", Some(s[s.len() - 1] <= 15.0)));
            rows.push(row("heartbeat", "kill -9 to stale, p50", pct(&s, 0.5), None, "s", "", None));
            Ok(())
        }
        .await;
        record(&mut failed, "heartbeat", r);
    }
    if which.contains(&"snapshot") {
        let r: Result<()> = async {
            eprintln!("bench snapshot: {} snapshots through the hub, {} raw `btrfs subvolume snapshot -r`, of a 100 MiB, 800-file volume", a.runs, a.runs);
            let mut s = spec(&["sleep", "infinity"]);
            s.disk_mib = 512;
            let op = c.instance_create("bench", &InstanceCreate::new("snap0".parse()?, s, true)).await?;
            if c.operation_wait_final(op.id, Duration::from_secs(120)).await?.status != OperationStatus::Succeeded {
                bail!("the snapshot bench's instance did not start");
            }
            let fill = "i=0; while [ $i -lt 800 ]; do head -c 131072 /dev/urandom > /home/f$i; i=$((i+1)); done; sync";
            let res = c.instance_exec("bench", "snap0", &ExecRequest { command: vec!["sh".into(), "-c".into(), fill.into()], env: Default::default(), timeout_secs: Some(300) }).await?;
            if res.exit_code != 0 {
                bail!("filling the volume failed: {}", res.stderr);
            }
            let mut h = vec![];
            for i in 0..a.runs {
                let name = format!("b{i}");
                let t = Instant::now();
                let snap = c.snapshot_create("bench", "snap0", &SnapshotCreate { name: Some(name.clone()) }).await?;
                h.push(ms(t.elapsed()));
                if snap.name.as_str() != name {
                    bail!("asked for snapshot {name}, got {}", snap.name);
                }
                c.snapshot_delete("bench", "snap0", &name).await?;
            }
            // Raw: the same volume, snapshotted by hand into the same pool.
            let pool = fleet.data_dir().join("agent/storage/pool");
            let vol = pool.join("volumes").join(c.instance_get("bench", "snap0").await?.id.sandbox_id().as_str());
            let mut raw = vec![];
            for i in 0..a.runs {
                let dst = pool.join(format!("raw-bench-{i}"));
                let t = Instant::now();
                let ok = Command::new("btrfs").args(["subvolume", "snapshot", "-r"]).arg(&vol).arg(&dst).stdout(Stdio::null()).status()?.success();
                raw.push(ms(t.elapsed()));
                Command::new("btrfs").args(["subvolume", "delete"]).arg(&dst).stdout(Stdio::null()).status()?;
                if !ok {
                    bail!("raw btrfs snapshot failed");
                }
            }
            delete(&c, "snap0").await?;
            let (h, r) = (sorted(h), sorted(raw));
            rows.push(row("snapshot", "p50 create (hub API to the host and back)", pct(&h, 0.5), Some(pct(&r, 0.5)), "ms", "", None));
            rows.push(row("snapshot", "p99 create", pct(&h, 0.99), Some(pct(&r, 0.99)), "ms", "", None));
            Ok(())
        }
        .await;
        record(&mut failed, "snapshot", r);
    }
    if which.contains(&"proxy") {
        let r: Result<()> = async {
            eprintln!("bench proxy: {} requests and a {} MiB download, through the hub and straight to the sandbox", a.proxy_requests, a.proxy_mib);
            let b = proxy_bench(&c, fleet.dir.path(), a.proxy_requests, a.proxy_mib).await?;
            let (p, d) = (sorted(b.latencies_ms), sorted(b.direct_latencies_ms));
            let added = pct(&p, 0.5) - pct(&d, 0.5);
            rows.push(row("proxy", "request latency p50", pct(&p, 0.5), Some(pct(&d, 0.5)), "ms", "adds < 2 ms", Some(added < 2.0)));
            rows.push(row("proxy", "request latency p99", pct(&p, 0.99), Some(pct(&d, 0.99)), "ms", "", None));
            let direct = b.direct_mib_per_s;
            let keep = b.h2_mib_per_s / direct;
            rows.push(row("proxy", &format!("{} MiB download (HTTP/2 to the hub)", a.proxy_mib), b.h2_mib_per_s, Some(direct), "MiB/s", ">= 80% of direct", Some(keep >= 0.8)));
            let keep = b.h1_mib_per_s / direct;
            rows.push(row("proxy", &format!("{} MiB download (curl --http1.1)", a.proxy_mib), b.h1_mib_per_s, Some(direct), "MiB/s", ">= 80% of direct", Some(keep >= 0.8)));
            // The peer in the same run: hangar's proxy next to nginx in the same place.
            rows.push(row("proxy", "download vs nginx TLS proxy (HTTP/2)", b.h2_mib_per_s, Some(b.nginx_h2_mib_per_s), "MiB/s", "", None));
            rows.push(row("proxy", "download vs nginx TLS proxy (HTTP/1.1)", b.h1_mib_per_s, Some(b.nginx_h1_mib_per_s), "MiB/s", "", None));
            Ok(())
        }
        .await;
        record(&mut failed, "proxy", r);
    }
    if which.contains(&"ssh") {
        let r: Result<()> = async {
            eprintln!("bench ssh: {} sessions through the gateway and {} to OpenSSH's sshd, alternating", a.runs, a.runs);
            create_running(&c, "ssh0").await?;
            let b = crate::bench_ssh::run(&c, &fleet, "bench", "ssh0", a.runs).await?;
            delete(&c, "ssh0").await?;
            let (g, d) = (sorted(b.gateway), sorted(b.sshd));
            let ratio = pct(&g, 0.5) / pct(&d, 0.5);
            rows.push(row("ssh", "p50 session setup to first byte", pct(&g, 0.5), Some(pct(&d, 0.5)), "ms", "ratio <= 1.5", Some(ratio <= 1.5)));
            rows.push(row("ssh", "p90", pct(&g, 0.9), Some(pct(&d, 0.9)), "ms", "", None));
            Ok(())
        }
        .await;
        record(&mut failed, "ssh", r);
    }
    if which.contains(&"backup") {
        let r: Result<()> = async {
            eprintln!("bench backup: a {} MiB tree, hangar and restic to directory targets", a.backup_mib);
            let work = fleet.dir.path().join("bench-backup");
            for s in crate::bench_backup::run(&c, &fleet.data_dir(), &work, a.backup_mib).await? {
                let mibps = |secs: f64| s.bytes as f64 / 1048576.0 / secs;
                let target = if s.metric == "first backup" { "hangar >= 1.5x restic" } else { "hangar >= restic" };
                let need = if s.metric == "first backup" { 1.5 } else { 1.0 };
                let (h, r) = (mibps(s.hangar_secs), mibps(s.restic_secs));
                rows.push(row("backup", s.metric, h, Some(r), "MiB/s", target, Some(h >= need * r)));
                eprintln!("bench backup: {}: hangar {:.2} s, restic {:.2} s", s.metric, s.hangar_secs, s.restic_secs);
            }
            // Where each job's time went (the agent's and the hub's timing lines).
            for line in fleet.log().lines().filter(|l| l.contains("backup job timings") || l.contains("backup index recorded")) {
                eprintln!("bench backup: {line}");
            }
            Ok(())
        }
        .await;
        record(&mut failed, "backup", r);
    }
    if which.contains(&"copy") {
        let r: Result<()> = async {
            eprintln!("bench copy: a {} MiB file across two hosts, hangar cp next to a plain TCP stream", a.copy_mib);
            let s = crate::bench_copy::run(&c, &fleet, "bench", a.copy_mib).await?;
            let mibps = |secs: f64| s.bytes as f64 / 1048576.0 / secs;
            let (h, r) = (mibps(s.hangar_secs), mibps(s.raw_secs));
            rows.push(row("copy", "file across hosts", h, Some(r), "MiB/s", "hangar >= raw / 1.2", Some(h * 1.2 >= r)));
            rows.push(row("copy", "vs the peer: cat | ssh (AES-GCM)", h, Some(mibps(s.ssh_secs)), "MiB/s", "", None));
            Ok(())
        }
        .await;
        record(&mut failed, "copy", r);
    }
    if which.contains(&"move") {
        let r: Result<()> = async {
            eprintln!("bench move: a {} MiB workspace moved between two hosts, next to btrfs send | receive over TCP", a.move_mib);
            let s = crate::bench_move::run(&c, &fleet, "bench", a.move_mib).await?;
            let ratio = s.move_secs / s.raw_secs;
            rows.push(row("move", &format!("{} MiB: request to done", s.bytes >> 20), s.move_secs, Some(s.raw_secs), "s", "ratio <= 1.2", Some(ratio <= 1.2)));
            rows.push(row("move", "request to running on the target", s.started_secs, Some(s.raw_secs), "s", "", None));
            rows.push(row("move", "vs the peer: btrfs send | ssh | btrfs receive", s.move_secs, Some(s.ssh_secs), "s", "", None));
            let changed = if s.delta_in_first_pass { "10 MiB changed since the first pass" } else { "10 MiB NOT written during the first pass" };
            rows.push(row("move", &format!("downtime, {changed}"), s.downtime_ms as f64, None, "ms", "< 2000 ms", Some(s.downtime_ms < 2000)));
            let mib = |b: u64| b as f64 / 1048576.0;
            rows.push(row("move", "sent: first pass", mib(s.first_pass_bytes), None, "MiB", "", None));
            rows.push(row("move", "sent: final pass", mib(s.sent_bytes.saturating_sub(s.first_pass_bytes)), None, "MiB", "", None));
            // Where the time goes: each phase's length as the polls saw it.
            for (i, (p, at)) in s.phases.iter().enumerate() {
                let until = s.phases.get(i + 1).map(|n| n.1).unwrap_or(s.move_secs);
                rows.push(row("move", &format!("phase {p}"), until - at, None, "s", "", None));
            }
            for line in fleet.log().lines().filter(|l| l.contains("move phase")) {
                eprintln!("bench move: {line}");
            }
            Ok(())
        }
        .await;
        record(&mut failed, "move", r);
    }
    let machine = serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpu": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    });
    let doc = serde_json::json!({
        "machine": machine,
        "started_at": started_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "results": rows,
        "failed": failed.iter().map(|(b, e)| serde_json::json!({"bench": b, "error": e})).collect::<Vec<_>>(),
    });
    std::fs::write(&a.out, serde_json::to_string_pretty(&doc)?).with_context(|| format!("cannot write {}", a.out.display()))?;
    drop(fleet);
    for (b, e) in &failed {
        eprintln!("bench {b} FAILED: {e}");
    }
    Ok(Report::item(doc, table(&rows), if failed.is_empty() { 0 } else { 1 }))
}

/// What the proxy bench measured: small requests through the hub (HTTP/2, curl's
/// choice by ALPN) and straight to the sandbox; downloads (median MiB/s of
/// [`PROXY_DOWNLOADS`], taken in turns) through the hub by HTTP/2 and by HTTP/1.1, and
/// straight.
struct ProxyBench {
    latencies_ms: Vec<f64>,
    direct_latencies_ms: Vec<f64>,
    h2_mib_per_s: f64,
    h1_mib_per_s: f64,
    direct_mib_per_s: f64,
    /// The peer, nginx as a TLS reverse proxy to the same server: by HTTP/2 and HTTP/1.1.
    nginx_h2_mib_per_s: f64,
    nginx_h1_mib_per_s: f64,
}

/// Downloads per way, taken in turns so that a burst of load elsewhere on the machine
/// falls on all three ways alike.
const PROXY_DOWNLOADS: usize = 3;

/// curl with `extra` and `args`, its output discarded and its `-w` report returned.
fn curl_w(extra: &[String], args: Vec<String>) -> Result<String> {
    let o = Command::new("curl").args(["-sf", "-o", "/dev/null"]).args(extra).args(&args).output().context("cannot run curl")?;
    if !o.status.success() {
        bail!("curl {} failed: {}", args.last().map(String::as_str).unwrap_or(""), String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `requests` GETs of a small file on one kept-alive connection: each transfer's total
/// time; `extra`: curl's other arguments.
fn curl_latencies(base: &str, extra: &[String], requests: usize) -> Result<Vec<f64>> {
    let mut args = vec!["-w".to_string(), "%{time_total}\\n".into()];
    args.extend((0..requests).map(|_| format!("{base}small")));
    let latencies_ms: Vec<f64> = curl_w(extra, args)?.lines().filter_map(|l| l.trim().parse::<f64>().ok()).map(|s| s * 1000.0).collect();
    if latencies_ms.len() != requests {
        bail!("curl timed {} of {requests} requests to {base}", latencies_ms.len());
    }
    Ok(latencies_ms)
}

/// One download of the `mib` MiB file, in MiB/s.
fn curl_download(base: &str, extra: &[String], mib: u64) -> Result<f64> {
    let out = curl_w(extra, vec!["-w".into(), "%{time_total} %{size_download}".into(), format!("{base}blob")])?;
    let mut it = out.split_whitespace().filter_map(|x| x.parse::<f64>().ok());
    let (secs, bytes) = (it.next().unwrap_or(0.0), it.next().unwrap_or(0.0));
    if bytes as u64 != mib << 20 || secs <= 0.0 {
        bail!("the download from {base} got {bytes} bytes of {} in {secs}s", mib << 20);
    }
    Ok(bytes / (1 << 20) as f64 / secs)
}

/// An instance serving /home with python's http.server; the same curl through the hub's
/// proxy (HTTPS, a proxy token; HTTP/2 as curl picks by ALPN, and `--http1.1`) and
/// straight to the sandbox's address (what a process on the host would do).
async fn proxy_bench(c: &HubClient, dir: &Path, requests: usize, mib: u64) -> Result<ProxyBench> {
    let mut spec = spec(&["python3", "-m", "http.server", "8080", "--directory", "/home"]);
    // Room for the download's file (the volume's quota is the disk size).
    spec.disk_mib = spec.disk_mib.max(mib + 64);
    let op = c.instance_create("bench", &InstanceCreate::new("px".parse()?, spec, true)).await?;
    c.operation_wait_final(op.id, Duration::from_secs(120)).await?;
    let ex = |cmd: String| ExecRequest { command: vec!["sh".into(), "-c".into(), cmd], env: Default::default(), timeout_secs: Some(300) };
    let made = c.instance_exec("bench", "px", &ex(format!("echo ok > /home/small && head -c {} /dev/urandom > /home/blob", mib << 20))).await?;
    if made.exit_code != 0 {
        bail!("cannot write the files to serve: {}", made.stderr);
    }
    let addr = c.instance_get("bench", "px").await?.address.context("the instance has no address")?;
    let t = c.proxy_token_create("bench", "px", &hangar_types::access::ProxyTokenCreate { port: 8080, ttl_secs: Some(3600) }).await?;
    // The token goes to curl in a private file, not its command line.
    let header = dir.join("proxy-bench-header");
    std::fs::write(&header, format!("Authorization: Bearer {}\n", t.token))?;
    std::fs::set_permissions(&header, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let direct_base = format!("http://{addr}:8080/");
    let proxied_base = format!("{}{}", c.base_url(), t.path);
    let h2_args = vec!["-k".to_string(), "-H".into(), format!("@{}", header.display())];
    let mut h1_args = h2_args.clone();
    h1_args.push("--http1.1".into());
    let nginx = crate::bench_nginx::start(dir, &format!("{addr}:8080"))?;
    let nginx_base = format!("https://127.0.0.1:{}/", nginx.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl_latencies(&direct_base, &[], 1).is_err() {
        if Instant::now() > deadline {
            bail!("the server in the sandbox never answered at {direct_base}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let b = tokio::task::spawn_blocking(move || -> Result<ProxyBench> {
        let latencies_ms = curl_latencies(&proxied_base, &h2_args, requests)?;
        let direct_latencies_ms = curl_latencies(&direct_base, &[], requests)?;
        let (mut h2, mut h1, mut direct, mut nginx_h2, mut nginx_h1) = (vec![], vec![], vec![], vec![], vec![]);
        let (k, k1) = (vec!["-k".to_string()], vec!["-k".to_string(), "--http1.1".into()]);
        for _ in 0..PROXY_DOWNLOADS {
            h2.push(curl_download(&proxied_base, &h2_args, mib)?);
            h1.push(curl_download(&proxied_base, &h1_args, mib)?);
            direct.push(curl_download(&direct_base, &[], mib)?);
            nginx_h2.push(curl_download(&nginx_base, &k, mib)?);
            nginx_h1.push(curl_download(&nginx_base, &k1, mib)?);
        }
        let median = |v: Vec<f64>| pct(&sorted(v), 0.5);
        Ok(ProxyBench {
            latencies_ms,
            direct_latencies_ms,
            h2_mib_per_s: median(h2),
            h1_mib_per_s: median(h1),
            direct_mib_per_s: median(direct),
            nginx_h2_mib_per_s: median(nginx_h2),
            nginx_h1_mib_per_s: median(nginx_h1),
        })
    })
    .await??;
    drop(nginx);
    let _ = std::fs::remove_file(&header);
    delete(c, "px").await?;
    Ok(b)
}

/// The results as a table: hangar, the raw tool, their ratio and the target.
fn table(rows: &[Row]) -> String {
    {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY).set_header(vec!["BENCH", "METRIC", "HANGAR", "RAW", "RATIO", "TARGET", "MET"]);
        let f = |v: f64| if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") };
        for r in rows {
            t.add_row(vec![
                r.bench.clone(),
                r.metric.clone(),
                format!("{} {}", f(r.hangar), r.unit),
                r.raw.map(|v| format!("{} {}", f(v), r.unit)).unwrap_or_else(|| "-".into()),
                r.ratio.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into()),
                r.target.clone(),
                r.met.map(|m| if m { "yes" } else { "no" }.to_string()).unwrap_or_default(),
            ]);
        }
        t.to_string()
    }
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}
