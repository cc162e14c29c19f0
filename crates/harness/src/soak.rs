//! `hangar soak`: long background runs that find what breaks after hours.
//!
//! A run lives in a directory (`<base>/<run_id>/`) holding `state.json` (state, rounds,
//! errors, the runner's PID), `rounds.tsv` (one line per round: scenario, result, time,
//! the fleet process's RSS and open fds) and the fleet's logs. `<base>/current` names the
//! latest run. The runner stops on its own at its deadline, on `soak stop` (SIGTERM), or
//! when a round of its fleet cannot be brought back; every object it makes is removed
//! with its fleet.

use crate::fleet::{Fleet, FleetOptions};
use crate::Report;
use anyhow::{anyhow, bail, Context, Result};
use hangar_client::HubClient;
use hangar_types::api::*;
use hangar_types::{InstanceState, ObservedState, SandboxId, VolumeId};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const SCENARIOS: [&str; 6] = ["lifecycle", "churn", "integrity", "concurrency", "restart", "transfer"];

#[derive(Serialize, Deserialize, Clone, Debug)]
struct State {
    run_id: String,
    state: String,
    scenarios: Vec<String>,
    pid: u32,
    rounds: u64,
    errors: u64,
    started_at: String,
    updated_at: String,
    deadline_secs: u64,
    last_error: Option<String>,
    /// Data dir of the runner's fleet, so a dead runner's fleet can be cleaned up.
    #[serde(default)]
    fleet_dir: Option<PathBuf>,
}

impl State {
    /// A run just begun: no rounds yet.
    fn new(run_id: String, scenarios: &[String], pid: u32, deadline_secs: u64) -> State {
        State {
            run_id,
            state: "running".into(),
            scenarios: scenarios.to_vec(),
            pid,
            rounds: 0,
            errors: 0,
            started_at: now(),
            updated_at: now(),
            deadline_secs,
            last_error: None,
            fleet_dir: None,
        }
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn check_scenarios(s: &[String]) -> Result<()> {
    if s.is_empty() {
        bail!("--scenario: give at least one of {}", SCENARIOS.join(", "));
    }
    if let Some(bad) = s.iter().find(|x| !SCENARIOS.contains(&x.as_str())) {
        bail!("--scenario: unknown scenario '{bad}': choose from {}", SCENARIOS.join(", "));
    }
    Ok(())
}

fn read_state(dir: &Path) -> Result<State> {
    let p = dir.join("state.json");
    serde_json::from_str(&std::fs::read_to_string(&p).with_context(|| format!("no run state at {}", p.display()))?).with_context(|| format!("{} is not a soak state file", p.display()))
}

fn write_state(dir: &Path, s: &State) -> Result<()> {
    let tmp = dir.join(".state.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(s)?)?;
    std::fs::rename(tmp, dir.join("state.json"))?;
    Ok(())
}

/// Whether a command line is the runner of the run in `dir`: a `hangar soak run` whose
/// arguments name `dir`.
fn is_runner(dir: &Path) -> impl Fn(&[String]) -> bool + '_ {
    move |args: &[String]| args.iter().any(|a| a == "soak") && args.iter().any(|a| a == "run") && args.iter().any(|a| Path::new(a) == dir)
}

fn runner_alive(pid: u32, dir: &Path) -> bool {
    hangar_node::proc::is(pid, is_runner(dir))
}

fn current(base: &Path) -> Result<PathBuf> {
    let p = base.join("current");
    let dir = std::fs::read_to_string(&p).with_context(|| format!("no soak run in {}: start one with `hangar soak start SECS`", base.display()))?;
    Ok(PathBuf::from(dir.trim()))
}

/// The latest run's state; a run whose runner died is marked failed on the spot (and
/// its fleet removed with `bin`).
fn current_state(base: &Path, bin: &Path) -> Result<(PathBuf, State)> {
    let dir = current(base)?;
    let mut s = read_state(&dir)?;
    if s.state == "running" && !runner_alive(s.pid, &dir) {
        s.state = "failed".into();
        s.last_error = Some("the runner died without finishing (killed?); its fleet was removed".into());
        if let Some(f) = &s.fleet_dir {
            crate::fleet::down(bin, f);
            // The fleet's temp dir (logs, config) goes too, once its data is gone.
            if let Some(parent) = f.parent().filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("hangar-soak-")) && !f.exists()) {
                let _ = std::fs::remove_dir_all(parent);
            }
        }
        s.updated_at = now();
        write_state(&dir, &s)?;
    }
    Ok((dir, s))
}

/// Soak runs kept under `base`, run with the `hangar` binary `bin`.
pub struct Soak {
    pub bin: PathBuf,
    pub base: PathBuf,
}

impl Soak {
    /// Starts a run in the background for `secs` seconds (`hangar soak run` in a session
    /// of its own).
    pub async fn start(&self, secs: u64, scenario: &[String]) -> Result<Report> {
        let (bin, base) = (&self.bin, &self.base);
        check_scenarios(scenario)?;
        if let Ok((dir, s)) = current_state(base, bin)
            && s.state == "running" {
                bail!("soak run {} is still running (pid {}) in {}: stop it with `hangar soak stop`", s.run_id, s.pid, dir.display());
            }
        let run_id = format!("soak-{}", time::OffsetDateTime::now_utc().unix_timestamp());
        let dir = std::path::absolute(base.join(&run_id))?;
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("runner.log"))?;
        let child = std::process::Command::new("setsid")
            .arg(bin)
            .args(["soak", "run", "--secs", &secs.to_string(), "--scenario", &scenario.join(","), "--dir"])
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start the soak runner (is setsid installed?)")?;
        let st = State::new(run_id.clone(), scenario, child.id(), secs);
        write_state(&dir, &st)?;
        std::fs::write(base.join("current"), dir.display().to_string())?;
        let text = format!("soak run {run_id} started (pid {}), {secs}s of {}; see `hangar soak status`", child.id(), scenario.join(","));
        Ok(Report::item(serde_json::to_value(&st)?, text, 0))
    }

    /// State of the latest run: running, completed, failed or stopped.
    pub fn status(&self) -> Result<Report> {
        let (dir, s) = current_state(&self.base, &self.bin)?;
        let text = format!(
            "{}: {} ({} rounds, {} errors){} in {}",
            s.run_id,
            s.state,
            s.rounds,
            s.errors,
            s.last_error.as_ref().map(|e| format!(", last error: {e}")).unwrap_or_default(),
            dir.display()
        );
        Ok(Report::item(serde_json::to_value(&s)?, text, if s.state == "failed" { 1 } else { 0 }))
    }

    /// Stops the latest run (only the runner it started, verified by its command line).
    pub async fn stop(&self) -> Result<Report> {
        let (dir, s) = current_state(&self.base, &self.bin)?;
        if s.state != "running" {
            let text = format!("{} is not running ({})", s.run_id, s.state);
            return Ok(Report::item(serde_json::to_value(&s)?, text, 0));
        }
        // Only our own runner: the PID must still be a `soak run` of this directory.
        if !runner_alive(s.pid, &dir) {
            bail!("pid {} is no longer the runner of {}", s.pid, dir.display());
        }
        // The runner removes its fleet on SIGTERM: that takes a while.
        hangar_node::proc::stop(s.pid, is_runner(&dir), Duration::from_secs(60)).await;
        let mut s = read_state(&dir)?;
        if s.state == "running" {
            s.state = "stopped".into();
            s.updated_at = now();
            write_state(&dir, &s)?;
        }
        let text = format!("{} stopped after {} rounds", s.run_id, s.rounds);
        Ok(Report::item(serde_json::to_value(&s)?, text, 0))
    }

    /// A tarball of the latest run: state, rounds.tsv, logs.
    pub fn collect(&self) -> Result<Report> {
        let (dir, s) = current_state(&self.base, &self.bin)?;
        let tar = self.base.join(format!("{}.tar.gz", s.run_id));
        let st = std::process::Command::new("tar")
            .arg("-czf")
            .arg(&tar)
            .arg("-C")
            .arg(dir.parent().unwrap_or(Path::new(".")))
            .arg(dir.file_name().unwrap_or_default())
            .status()?;
        if !st.success() {
            bail!("tar failed");
        }
        Ok(Report::item(serde_json::json!({"tarball": tar}), tar.display().to_string(), 0))
    }

    /// Every scenario in sequence in the foreground, `secs` each; writes results.tsv and
    /// status.tsv.
    pub async fn band(&self, secs: u64) -> Result<Report> {
        let dir = std::path::absolute(self.base.join(format!("band-{}", time::OffsetDateTime::now_utc().unix_timestamp())))?;
        std::fs::create_dir_all(&dir)?;
        let mut results = String::from("scenario\trounds\terrors\tresult\n");
        let mut status = String::from("scenario\tstate\tlast_error\n");
        let mut failed = false;
        for sc in SCENARIOS {
            eprintln!("band: {sc} for {secs}s");
            let sub = dir.join(sc);
            std::fs::create_dir_all(&sub)?;
            let st = run_loop(&self.bin, &sub, secs, &[sc.to_string()]).await;
            let s = read_state(&sub).unwrap_or_else(|_| State {
                state: "failed".into(),
                errors: 1,
                last_error: st.as_ref().err().map(|e| format!("{e:#}")),
                ..State::new(sc.into(), &[], 0, secs)
            });
            let ok = st.is_ok() && s.errors == 0 && s.rounds > 0;
            failed |= !ok;
            results.push_str(&format!("{sc}\t{}\t{}\t{}\n", s.rounds, s.errors, if ok { "PASS" } else { "FAIL" }));
            status.push_str(&format!("{sc}\t{}\t{}\n", s.state, s.last_error.clone().unwrap_or_default().replace(['\t', '\n'], " ")));
        }
        std::fs::write(dir.join("results.tsv"), &results)?;
        std::fs::write(dir.join("status.tsv"), &status)?;
        Ok(Report::text(format!("{results}band results in {}", dir.display()), if failed { 1 } else { 0 }))
    }

    /// The runner itself (what `start` launches): rounds in `dir` until the deadline.
    pub async fn run(&self, dir: &Path, secs: u64, scenario: &[String]) -> Result<()> {
        check_scenarios(scenario)?;
        run_loop(&self.bin, dir, secs, scenario).await
    }
}

/// The runner: a fleet of its own, rounds until the deadline or SIGTERM.
async fn run_loop(bin: &Path, dir: &Path, secs: u64, scenarios: &[String]) -> Result<()> {
    let mut st = read_state(dir).unwrap_or_else(|_| State::new(dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), scenarios, std::process::id(), secs));
    st.pid = std::process::id();
    st.state = "running".into();
    write_state(dir, &st)?;
    let started = async {
        let f = Fleet::start(FleetOptions::new(bin, "hangar-soak-")).await?;
        let c = f.client()?;
        anyhow::Ok((f, c))
    };
    let (mut fleet, mut c) = match started.await {
        Ok(x) => x,
        Err(e) => {
            // A failed startup marks the run failed at once.
            st.state = "failed".into();
            st.last_error = Some(format!("fleet startup: {e:#}"));
            write_state(dir, &st)?;
            return Err(e);
        }
    };
    st.fleet_dir = Some(fleet.data_dir());
    write_state(dir, &st)?;
    c.tenant_create(&TenantCreate {
        name: "soak".parse()?,
        quotas: Some(Quotas { max_vcpus: 10_000, max_mem_mib: 1_000_000, max_running: 64, max_instances: 64, max_disk_gib: 1_000 }),
        isolated: false,
        net_prefix: None,
    })
    .await?;
    let mut tsv = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("rounds.tsv"))?;
    writeln!(tsv, "round\ttime\tscenario\tresult\tms\trss_kib\tfds\terror")?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut rng_state = std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut watch = Watch::default();
    let mut stopped = false;
    // Rounds are bounded in count as well as in time.
    for round in 0..1_000_000u64 {
        if Instant::now() >= deadline {
            break;
        }
        let sc = scenarios[(round as usize) % scenarios.len()].as_str();
        let t = Instant::now();
        let r = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(300), one_round(&mut fleet, &mut c, sc, round, &mut rng_state, &mut watch)) => r.unwrap_or_else(|_| Err(anyhow!("round timed out after 300s"))),
            _ = term.recv() => { stopped = true; Ok(()) }
        };
        if stopped {
            break;
        }
        let (rss, fds) = (fleet.rss_kib(), fleet.fds());
        let err = r.as_ref().err().map(|e| format!("{e:#}").replace(['\t', '\n'], " "));
        writeln!(tsv, "{round}\t{}\t{sc}\t{}\t{}\t{rss}\t{fds}\t{}", now(), if err.is_none() { "ok" } else { "error" }, t.elapsed().as_millis(), err.clone().unwrap_or_default())?;
        st.rounds += 1;
        if let Some(e) = err {
            st.errors += 1;
            st.last_error = Some(e);
        }
        st.updated_at = now();
        write_state(dir, &st)?;
    }
    let _ = std::fs::copy(fleet.log_path(), dir.join("fleet.log"));
    drop(fleet);
    st.state = if stopped { "stopped" } else if st.errors > 0 { "failed" } else { "completed" }.into();
    st.updated_at = now();
    write_state(dir, &st)?;
    Ok(())
}

fn next_rand(s: &mut u64) -> u64 {
    // xorshift64: reproducible from the PID, no dependency for a dice roll.
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

async fn wait_op(c: &HubClient, op: Operation) -> Result<()> {
    let op = c.operation_wait_final(op.id, Duration::from_secs(120)).await?;
    if op.status != OperationStatus::Succeeded {
        bail!("{} {} {}: {}", op.kind, op.target, op.status.as_str(), op.error.unwrap_or_default());
    }
    Ok(())
}

fn spec() -> InstanceSpec {
    InstanceSpec { image: ImageRef::Host, vcpus: 1, mem_mib: 64, disk_mib: 64, command: vec![], env: Default::default(), secrets: vec![] }
}

/// What the integrity scenario carries from round to round.
#[derive(Default)]
struct Watch {
    /// Hub+agent RSS (KiB) and open fds at the first integrity round.
    baseline: Option<(u64, usize)>,
    /// Sandbox ids of every instance seen so far.
    seen: HashSet<SandboxId>,
    /// The transfer scenario's hosts, instances and checksum, once made.
    tx: Option<crate::soak_transfer::TxState>,
}

/// What a host still holds for instances the store no longer has: sandboxes, volumes
/// and network namespaces of the fleet's agent, and cgroups, namespaces or veths of
/// instances that were deleted (other fleets on the machine are never looked at).
async fn orphans(data: &Path, known: &HashSet<SandboxId>, deleted: &HashSet<SandboxId>) -> Result<Vec<String>> {
    let paths = hangar_agent::identity::AgentPaths::new(data.join("agent"));
    let deleted: Vec<SandboxId> = deleted.iter().cloned().collect();
    let inv = hangar_agent::inventory(&paths, &deleted).await?;
    let known_volumes: HashSet<VolumeId> = known.iter().map(VolumeId::from).collect();
    let mut found = unknown(inv.sandboxes, known, "sandbox");
    found.extend(unknown(inv.volumes, &known_volumes, "volume"));
    found.extend(unknown(inv.namespaces, known, "namespace of"));
    found.extend(inv.cgroups.into_iter().map(|sid| format!("cgroup hangar/{sid}")));
    found.extend(inv.veths.into_iter().map(|veth| format!("veth {veth}")));
    Ok(found)
}

/// `what <id>` for each id of `list` that is not `known`.
fn unknown<T: Eq + std::hash::Hash + std::fmt::Display>(list: Vec<T>, known: &HashSet<T>, what: &str) -> Vec<String> {
    list.into_iter().filter(|id| !known.contains(id)).map(|id| format!("{what} {id}")).collect()
}

async fn one_round(fleet: &mut Fleet, c: &mut HubClient, sc: &str, round: u64, rng: &mut u64, watch: &mut Watch) -> Result<()> {
    const MAX_POPULATION: usize = 8;
    match sc {
        "lifecycle" => {
            let n = format!("life{round}");
            wait_op(c, c.instance_create("soak", &InstanceCreate::new(n.parse()?, spec(), true)).await?).await?;
            let r = c.instance_exec("soak", &n, &ExecRequest { command: vec!["true".into()], env: Default::default(), timeout_secs: Some(30) }).await?;
            if r.exit_code != 0 {
                bail!("exec in {n} exited {}", r.exit_code);
            }
            for verb in ["warm", "resume", "stop"] {
                wait_op(c, c.instance_action("soak", &n, verb).await?).await?;
            }
            wait_op(c, c.instance_delete("soak", &n).await?).await
        }
        "churn" => {
            let list = c.instance_list(Some("soak")).await?;
            let pick = |rng: &mut u64| list.get(next_rand(rng) as usize % list.len().max(1)).cloned();
            match next_rand(rng) % 5 {
                0 | 1 if list.len() < MAX_POPULATION => {
                    wait_op(c, c.instance_create("soak", &InstanceCreate::new(format!("ch{round}").parse()?, spec(), next_rand(rng).is_multiple_of(2))).await?).await
                }
                2 => match pick(rng) {
                    Some(i) if matches!(i.state, InstanceState::Created | InstanceState::Stopped) => wait_op(c, c.instance_action("soak", i.name.as_str(), "start").await?).await,
                    Some(i) if i.state == InstanceState::Running => wait_op(c, c.instance_action("soak", i.name.as_str(), "warm").await?).await,
                    Some(i) if i.state == InstanceState::Warm => wait_op(c, c.instance_action("soak", i.name.as_str(), "resume").await?).await,
                    _ => Ok(()),
                },
                3 => match pick(rng) {
                    Some(i) if matches!(i.state, InstanceState::Running | InstanceState::Warm) => wait_op(c, c.instance_action("soak", i.name.as_str(), "stop").await?).await,
                    _ => Ok(()),
                },
                _ => match pick(rng) {
                    // Cleanup keeps the population bounded.
                    Some(i) if i.state != InstanceState::Deleted => wait_op(c, c.instance_delete("soak", i.name.as_str()).await?).await,
                    _ => Ok(()),
                },
            }
        }
        "integrity" => {
            if c.instance_list(Some("soak")).await?.len() < 2 {
                for k in 0..2 {
                    let _ = wait_op(c, c.instance_create("soak", &InstanceCreate::new(format!("in{round}x{k}").parse()?, spec(), true)).await?).await;
                }
            }
            let list = c.instance_list(None).await?;
            let mut ids = HashSet::new();
            let mut addrs = HashSet::new();
            for i in &list {
                if !ids.insert(i.id) {
                    bail!("duplicate instance id {}", i.id);
                }
                if let Some(a) = i.address
                    && !addrs.insert((i.tenant.clone(), a)) {
                        bail!("duplicate address {a} in tenant {}", i.tenant);
                    }
                // Settled states must be confirmed by the host.
                let settled_ok = match i.state {
                    InstanceState::Running => i.observed == ObservedState::Running,
                    InstanceState::Warm => i.observed == ObservedState::Warm,
                    InstanceState::Stopped | InstanceState::Created | InstanceState::Sleeping => i.observed == ObservedState::Stopped,
                    _ => true,
                };
                let age = (time::OffsetDateTime::now_utc() - i.updated_at).whole_seconds();
                if !settled_ok && age > 30 {
                    bail!("{}/{} is {} but observed {} for {age}s", i.tenant, i.name, i.state, i.observed);
                }
            }
            let v = c.net_verify().await?;
            if !v.ok {
                let bad: Vec<String> = v.checks.iter().filter(|x| !x.ok).map(|x| format!("{}: {}", x.check, x.detail)).collect();
                bail!("net verify: {}", bad.join("; "));
            }
            // Nothing of a deleted instance, and nothing the store does not know, is
            // left on the host.
            let known: HashSet<SandboxId> = list.iter().map(|i| i.id.sandbox_id()).collect();
            let deleted: HashSet<SandboxId> = watch.seen.difference(&known).cloned().collect();
            let left = orphans(&fleet.data_dir(), &known, &deleted).await?;
            if !left.is_empty() {
                bail!("orphans on the host: {}", left.join(", "));
            }
            watch.seen.extend(known);
            // Unbounded growth of the hub+agent process fails the run.
            let now = (fleet.rss_kib(), fleet.fds());
            match &watch.baseline {
                None => watch.baseline = Some(now),
                Some((rss0, fd0)) => {
                    if now.0 > (*rss0).max(20_000) * 4 {
                        bail!("hub+agent RSS grew from {} to {} KiB", rss0, now.0);
                    }
                    if now.1 > (*fd0).max(32) * 4 {
                        bail!("hub+agent open fds grew from {fd0} to {}", now.1);
                    }
                }
            }
            Ok(())
        }
        "concurrency" => {
            let mut set = tokio::task::JoinSet::new();
            for k in 0..6 {
                let c = c.clone();
                set.spawn(async move {
                    let n = format!("cc{round}x{k}");
                    wait_op(&c, c.instance_create("soak", &InstanceCreate::new(n.parse()?, spec(), true)).await?).await?;
                    wait_op(&c, c.instance_delete("soak", &n).await?).await
                });
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
            Ok(())
        }
        "restart" => {
            // kill -9 of hub and agent right after a request; nothing may be lost or
            // duplicated, and the request must still complete.
            let n = format!("rs{round}");
            let before = c.instance_list(Some("soak")).await?.len();
            let op = c.instance_create("soak", &InstanceCreate::new(n.parse()?, spec(), true)).await?;
            fleet.crash_and_restart().await?;
            let done = c.operation_wait_final(op.id, Duration::from_secs(120)).await?;
            let i = c.instance_get("soak", &n).await?;
            if done.status != OperationStatus::Succeeded && i.state != InstanceState::Running {
                bail!("after a crash {n} is {} (operation {})", i.state, done.status.as_str());
            }
            let after = c.instance_list(Some("soak")).await?;
            if after.len() != before + 1 {
                bail!("{} instances before, {} after one create and a crash", before, after.len());
            }
            // The operation may have been cut short by the crash; converge before deleting.
            for _ in 0..100 {
                if c.instance_get("soak", &n).await?.observed == ObservedState::Running {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            wait_op(c, c.instance_delete("soak", &n).await?).await
        }
        // Moves and cross-host copies with agents killed (soak_transfer.rs).
        "transfer" => crate::soak_transfer::round(fleet, c, &mut watch.tx, &mut || next_rand(rng)).await,
        _ => unreachable!("checked up front"),
    }
}

/// Summarizes a run directory or a `soak collect` tarball (its rounds.tsv): failures by
/// kind, first occurrence, rates.
pub fn triage(path: &Path) -> Result<Report> {
    let text = if path.is_dir() {
        let direct = path.join("rounds.tsv");
        if direct.exists() {
            std::fs::read_to_string(direct)?
        } else {
            // A band: every scenario's rounds.
            let mut all = String::new();
            for e in std::fs::read_dir(path)?.flatten() {
                if let Ok(t) = std::fs::read_to_string(e.path().join("rounds.tsv")) {
                    all.push_str(&t);
                }
            }
            all
        }
    } else {
        let o = std::process::Command::new("tar").arg("-xzOf").arg(path).arg("--wildcards").arg("*/rounds.tsv").output()?;
        if !o.status.success() {
            bail!("{} is neither a run directory nor a soak tarball", path.display());
        }
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let mut total = 0u64;
    let mut errors: std::collections::BTreeMap<String, (u64, String)> = Default::default();
    for line in text.lines().filter(|l| !l.starts_with("round\t") && !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 8 {
            continue;
        }
        total += 1;
        if f[3] == "error" {
            // The kind: the error with digits blanked, so one failure mode is one row.
            let kind: String = f[7].chars().map(|ch| if ch.is_ascii_digit() { '#' } else { ch }).take(120).collect();
            let e = errors.entry(format!("{}: {kind}", f[2])).or_insert((0, f[1].to_string()));
            e.0 += 1;
        }
    }
    let failed: u64 = errors.values().map(|(n, _)| n).sum();
    let summary = serde_json::json!({
        "rounds": total,
        "failed_rounds": failed,
        "failure_rate": if total > 0 { failed as f64 / total as f64 } else { 0.0 },
        "kinds": errors.iter().map(|(k, (n, first))| serde_json::json!({"kind": k, "count": n, "first": first})).collect::<Vec<_>>(),
    });
    let mut text = format!("{total} rounds, {failed} failed ({:.2}%)\n", if total > 0 { 100.0 * failed as f64 / total as f64 } else { 0.0 });
    for (k, (n, first)) in &errors {
        text.push_str(&format!("  {n} x {k} (first {first})\n"));
    }
    Ok(Report::item(summary, text.trim_end().to_string(), if failed > 0 { 1 } else { 0 }))
}
