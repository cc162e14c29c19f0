//! `hangar smoke`: the whole lifecycle, end to end, on a fleet, as a PASS/FAIL matrix.
//!
//! By default it starts a local fleet of its own and removes it afterwards; `--hub`
//! points it at an existing fleet. Every object it makes carries the run tag in its
//! name (`smk<tag>-...`), so `--cleanup` (and every run's final scenario) can remove a
//! run's leftovers by tag, even after the harness itself was killed.

use crate::localfleet::LocalFleet;
use crate::output::Out;
use anyhow::{anyhow, bail, Context, Result};
use hangar_client::HubClient;
use hangar_types::api::*;
use hangar_types::ObservedState;
use serde::Serialize;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct SmokeArgs {
    /// Run against this hub instead of a local fleet of its own.
    #[arg(long)]
    hub: Option<String>,
    /// File holding an admin token for --hub.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// File holding the hub's CA certificate for --hub (default: the client config's).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Comma-separated subset of the scenarios (see --list).
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<String>,
    /// Print the scenarios and their steps, run nothing.
    #[arg(long)]
    list: bool,
    /// Keep the fleet and the objects made (for debugging).
    #[arg(long)]
    keep: bool,
    /// Run the remaining scenarios after one fails.
    #[arg(long)]
    continue_on_failure: bool,
    /// Where each run's JSON results go (`<results>/<run_tag>/`).
    #[arg(long, default_value = "smoke-results")]
    results: PathBuf,
    /// Remove the objects of an earlier run by its tag, then exit.
    #[arg(long)]
    cleanup: Option<String>,
}

const SCENARIOS: [(&str, &[&str]); 5] = [
    ("fleet", &["host ready", "tenant create"]),
    ("lifecycle", &["instance create", "instance start", "sentinel write", "exec", "warm", "resume", "stop", "start again", "sentinel survives", "logs", "stats"]),
    ("network", &["instances on two tenants", "same-tenant reach", "cross-tenant isolation", "net verify"]),
    ("security", &["tenant token scoped", "bad input refused"]),
    ("cleanup", &["delete instances", "destroy tenants"]),
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
}

impl Run {
    fn tenant(&self, n: &str) -> String {
        format!("{}-{n}", self.tag)
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
    let spec = InstanceSpec { image: ImageRef::Host, vcpus: 1, mem_mib: 64, disk_mib: 64, command: vec![], env: Default::default() };
    wait_op(c, c.instance_create(tenant, &InstanceCreate::new(name.parse()?, spec, start)).await?).await
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

/// Removes every tenant (and its instances) whose name carries `tag`.
async fn cleanup_tag(c: &HubClient, tag: &str) -> Result<usize> {
    let mut n = 0;
    for t in c.tenant_list().await?.into_iter().filter(|t| t.name.as_str().starts_with(&format!("{tag}-"))) {
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
    Ok(n)
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
            r.step("tenant create", async {
                for t in [&a, &b] {
                    c.tenant_create(&TenantCreate { name: t.parse()?, quotas: None, isolated: false }).await?;
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
                create(&c, &a, "n1", true).await?;
                create(&c, &a, "n2", true).await?;
                create(&c, &b, "n3", true).await
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
                let tok = c.token_create(&TokenCreate { tenant: Some(a.parse()?), description: Some("smoke".into()) }).await?;
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
        }
        "cleanup" => {
            r.step("delete instances", async {
                for (t, n) in [(&a, "life"), (&a, "n1"), (&a, "n2"), (&b, "n3")] {
                    if c.instance_get(t, n).await.is_ok() {
                        wait_op(&c, c.instance_delete(t, n).await?).await?;
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

pub async fn run(a: &SmokeArgs, config: &std::path::Path, out: &Out) -> Result<i32> {
    if a.list {
        for (s, steps) in SCENARIOS {
            println!("{s}: {}", steps.join(", "));
        }
        return Ok(0);
    }
    let names: Vec<&str> = SCENARIOS.iter().map(|(n, _)| *n).collect();
    let chosen: Vec<&str> = if a.scenario.is_empty() { names.clone() } else { a.scenario.iter().map(String::as_str).collect() };
    if let Some(bad) = chosen.iter().find(|s| !names.contains(s)) {
        bail!("--scenario: unknown scenario '{bad}': choose from {}", names.join(", "));
    }
    // An existing fleet, or one of our own.
    let (fleet, c) = match &a.hub {
        Some(url) => {
            let token = match &a.token_file {
                Some(p) => std::fs::read_to_string(p).with_context(|| format!("--token-file {}", p.display()))?.trim().to_string(),
                None => crate::config::load(config)?.token,
            };
            let ca = match &a.ca_file {
                Some(p) => std::fs::read_to_string(p).with_context(|| format!("--ca-file {}", p.display()))?,
                None => crate::config::load(config).context("--hub needs --ca-file or a client config holding the hub's CA")?.ca_pem,
            };
            let c = HubClient::new(url, &ca, &token)?;
            c.host_list().await.with_context(|| format!("the hub at {url} does not answer an admin call: check the URL and the token"))?;
            (None, c)
        }
        None => {
            let (f, c) = LocalFleet::start("hangar-smoke-").await?;
            (Some(f), c)
        }
    };
    if let Some(tag) = &a.cleanup {
        let n = cleanup_tag(&c, tag).await?;
        out.item(&serde_json::json!({"removed_tenants": n}), &format!("removed {n} tenant(s) of run {tag}"));
        return Ok(0);
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
        let mut r = Run { c: c.clone(), tag: tag.clone(), steps: vec![], failed: false };
        scenario(&mut r, s).await;
        any_failed |= r.failed;
        std::fs::write(dir.join(format!("{s}.json")), serde_json::to_string_pretty(&serde_json::json!({"scenario": s, "run_tag": tag, "steps": r.steps}))?)?;
        results.push((s.to_string(), r.steps));
    }
    if !a.keep && !chosen.contains(&"cleanup") {
        let _ = cleanup_tag(&c, &tag).await;
    }
    let pass = results.iter().flat_map(|(_, s)| s).filter(|s| s.status == "PASS").count();
    let fail = results.iter().flat_map(|(_, s)| s).filter(|s| s.status == "FAIL").count();
    let summary = serde_json::json!({
        "run_tag": tag,
        "ok": fail == 0,
        "passed": pass,
        "failed": fail,
        "scenarios": results.iter().map(|(n, s)| serde_json::json!({"scenario": n, "steps": s})).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    if a.keep {
        if let Some(f) = fleet {
            eprintln!("keeping the fleet in {} (remove it with `hangar down --purge --data-dir {}`)", f.dir.path().display(), f.data().display());
            std::mem::forget(f);
        }
    } else {
        drop(fleet);
    }
    if out.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY).set_header(vec!["SCENARIO", "STEP", "RESULT", "MS", "ERROR"]);
        for (n, steps) in &results {
            for s in steps {
                t.add_row(vec![n.clone(), s.name.clone(), s.status.to_string(), s.duration_ms.to_string(), s.error.clone().unwrap_or_default()]);
            }
        }
        println!("{t}");
        println!("smoke {tag}: {pass} passed, {fail} failed (results in {})", dir.display());
    }
    Ok(if fail == 0 { 0 } else { 1 })
}

/// Six hex digits from the clock and the process id: short, unique enough per machine.
fn uuid_like() -> String {
    let n = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64 ^ ((std::process::id() as u64) << 20);
    format!("{:06x}", n & 0xff_ffff)
}
