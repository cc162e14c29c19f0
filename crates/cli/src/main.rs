//! `hangar`: the hub, the agent and the operator's CLI in one binary.
//!
//! Thin by design: raw arguments become validated arguments (args.rs), the work is a
//! call into the library crates (node: this machine; client: the hub API; harness: the
//! test tools; agent), and the result is shown (output.rs).

mod access;
mod api;
mod args;
mod backups;
mod copy;
mod moves;
mod output;
mod pools;
mod snapshots;
mod sessions;
mod ssh;

use anyhow::{Context, Result};
use args::*;
use clap::{CommandFactory, Parser};
use hangar_agent::identity::AgentPaths;
use hangar_client::HubClient;
use hangar_harness::soak::Soak;
use hangar_node::{config, daemon, hub, up};
use output::Out;
use std::path::Path;
use std::time::Duration;

fn main() {
    let cli = Cli::parse();
    let json = cli.json;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({"error": format!("{e:#}")}));
            }
            eprintln!("error: {e:#}");
            1
        }
    };
    rt.shutdown_timeout(Duration::from_millis(500));
    std::process::exit(code);
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HANGAR_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init();
}

fn client(cli: &Cli) -> Result<HubClient> {
    let path = cli.config.clone().unwrap_or_else(config::default_path);
    let cfg = config::load(&path);
    let (url, ca, token) = match (&cli.hub, &cli.token, cfg) {
        (h, t, Ok(c)) => (h.clone().unwrap_or(c.hub_url), c.ca_pem, t.clone().unwrap_or(c.token)),
        (_, _, Err(e)) => return Err(e),
    };
    Ok(HubClient::new(&url, &ca, &token)?)
}

async fn run(cli: Cli) -> Result<i32> {
    let out = Out { json: cli.json };
    let config_path = cli.config.clone().unwrap_or_else(config::default_path);
    match &cli.cmd {
        Cmd::Init(a) => {
            init_tracing("warn");
            let fresh = hub::init(&a.dir.data_dir, &a.listen, &a.sans, &config_path).await?;
            out.message(&serde_json::json!({"data_dir": a.dir.data_dir, "created": fresh, "config": config_path}), &if fresh {
                format!("initialized {} (client config {})", a.dir.data_dir.display(), config_path.display())
            } else {
                format!("{} is already initialized", a.dir.data_dir.display())
            });
            Ok(0)
        }
        Cmd::Up(a) => {
            init_tracing("info");
            up::up(&a.dir.data_dir, a.listen, a.agent.to_local("127.0.0.1:0".parse()?, None)?, &config_path, a.hub.config()?, a.agent.to_args()).await?;
            Ok(0)
        }
        Cmd::Daemon(d) => daemon_cmd(d, &config_path, &out).await,
        Cmd::Down { dir, purge } => {
            let done = hangar_node::down::down(&dir.data_dir, *purge).await?;
            out.item(&done, &if done.is_empty() { "nothing was running".to_string() } else { done.join("\n") });
            Ok(0)
        }
        Cmd::Hub(HubCmd::Serve { dir, listen, hub }) => {
            init_tracing("info");
            let (tx, rx) = tokio::sync::watch::channel(false);
            let run = hub::start_hub(&dir.data_dir, *listen, hub.config()?, rx, Some(AgentRunArgs::default_args())).await?;
            eprintln!("hub listening on {}", hub::hub_url(&run.addr));
            hub::termination().await;
            let _ = tx.send(true);
            Ok(0)
        }
        Cmd::Agent(AgentCmd::Join { hub, token, dir, agent_dir, names }) => {
            init_tracing("warn");
            let id = hangar_agent::join::join(&AgentPaths::new(args::agent_dir(dir, agent_dir)), hub, token, names.clone()).await?;
            out.message(&serde_json::json!({"host": id.host, "host_id": id.host_id}), &format!("joined as host '{}'", id.host));
            Ok(0)
        }
        Cmd::Agent(AgentCmd::Reconcile { desired, dir, agent_dir, run }) => {
            let agent_dir = &args::agent_dir(dir, agent_dir);
            init_tracing("warn");
            let text = if desired.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(desired).with_context(|| format!("--desired: cannot read {}", desired.display()))?
            };
            let doc = hangar_types::protocol::DesiredDoc::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", desired.display()))?;
            let a = run.to_local("127.0.0.1:0".parse()?, None)?;
            let observed = hangar_agent::daemon::reconcile_once(&AgentPaths::new(agent_dir), &a.drivers, &doc, 20).await?;
            let rows = hangar_agent::daemon::node_instances(&doc, &observed);
            let ok = rows.iter().all(|r| r.desired.is_met_by(r.observed));
            let text = rows.iter().map(|r| format!("{}/{}: desired {:?}, observed {}", r.tenant, r.name, r.desired, r.observed).to_lowercase()).collect::<Vec<_>>().join("\n");
            out.item(&serde_json::json!({"converged": ok, "instances": observed}), &format!("{text}\n{}", if ok { "converged" } else { "NOT converged: see the agent's logs" }));
            Ok(if ok { 0 } else { 1 })
        }
        Cmd::Agent(AgentCmd::Run { dir, agent_dir, listen, advertise, run }) => {
            init_tracing("info");
            let agent_dir = &args::agent_dir(dir, agent_dir);
            // --hub (global) overrides the URL joined at, e.g. a hub now on another port.
            let opts = up::agent_options(AgentPaths::new(agent_dir), &run.to_local(*listen, advertise.clone())?, cli.hub.clone());
            hangar_agent::daemon::run(opts, hub::termination()).await?;
            Ok(0)
        }
        Cmd::Soak(s) => {
            init_tracing("warn");
            soak_cmd(s, &out).await
        }
        Cmd::Smoke(a) => {
            init_tracing("warn");
            Ok(out.report(&hangar_harness::smoke::run(&a.options(own_exe()?), &config_path).await?))
        }
        Cmd::Bench(a) => {
            init_tracing("warn");
            Ok(out.report(&hangar_harness::bench::run(&a.options(own_exe()?)).await?))
        }
        Cmd::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "hangar", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Instance(InstanceCmd::Proxy { instance, port, ttl, command }) => {
            let ca = config::load(&config_path)?.ca_pem;
            access::proxy_cmd(&client(&cli)?, &ca, &out, instance, *port, ttl, command).await
        }
        cmd => api::api(&client(&cli)?, cmd, &out).await,
    }
}

/// This binary, for the tools that run it (fleets, the soak runner).
fn own_exe() -> Result<std::path::PathBuf> {
    hangar_node::proc::own_exe().context("cannot find the hangar binary")
}

async fn soak_cmd(c: &SoakCmd, out: &Out) -> Result<i32> {
    let soak = |base: &Base| -> Result<Soak> { Ok(Soak { bin: own_exe()?, base: base.base.clone() }) };
    let report = match c {
        SoakCmd::Start { secs, scenario, base } => soak(base)?.start(*secs, scenario).await?,
        SoakCmd::Status(base) => soak(base)?.status()?,
        SoakCmd::Stop(base) => soak(base)?.stop().await?,
        SoakCmd::Collect(base) => soak(base)?.collect()?,
        SoakCmd::Band { secs, base } => soak(base)?.band(*secs).await?,
        SoakCmd::Triage { path } => hangar_harness::soak::triage(path)?,
        SoakCmd::Run { dir, secs, scenario } => {
            Soak { bin: own_exe()?, base: dir.clone() }.run(dir, *secs, scenario).await?;
            return Ok(0);
        }
    };
    Ok(out.report(&report))
}

async fn daemon_cmd(d: &DaemonCmd, config_path: &Path, out: &Out) -> Result<i32> {
    match d {
        DaemonCmd::Start(a) => {
            let s = daemon::start(&a.dir.data_dir, &daemon_up_args(a), config_path).await?;
            out.item(&serde_json::json!({"pid": s.pid, "hub": s.hub_url}), &format!("hangar started (pid {}), hub {}", s.pid, s.hub_url));
            Ok(0)
        }
        DaemonCmd::Status(dd) => {
            let s = daemon::status(&dd.data_dir, config_path).await;
            let state = match s.pid {
                Some(_) if s.hub_answers => "running",
                Some(_) => "starting or unhealthy",
                None => "stopped",
            };
            out.item(&serde_json::json!({"state": state, "pid": s.pid, "hub_answers": s.hub_answers}), &format!("hangar daemon: {state}{}", s.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()));
            Ok(if s.pid.is_some() { 0 } else { 3 })
        }
        DaemonCmd::Logs { dir, lines } => {
            for l in daemon::log_tail(&dir.data_dir, *lines)? {
                println!("{l}");
            }
            Ok(0)
        }
        DaemonCmd::Stop(dd) => {
            match daemon::stop(&dd.data_dir).await {
                Some(pid) => out.item(&serde_json::json!({"stopped": true, "pid": pid}), &format!("hangar daemon stopped (pid {pid}); instances keep running")),
                None => out.item(&serde_json::json!({"stopped": false}), "hangar daemon is not running"),
            }
            Ok(0)
        }
    }
}
