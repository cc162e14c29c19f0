//! `hangar`: the hub, the agent and the operator's CLI in one binary.
//!
//! Thin by design: raw arguments become validated arguments here, and everything else
//! is a call into the library crates.

mod benchmark;
mod config;
mod local;
mod localfleet;
mod pools;
mod output;
mod provider;
mod smoke;
mod soak;

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use hangar_agent::drivers::{DriverConfig, VolumeConfig};
use hangar_agent::identity::AgentPaths;
use hangar_client::HubClient;
use hangar_types::api::*;
use hangar_types::net::DEFAULT_NET_PREFIX;
use hangar_types::{InstanceRef, Name};
use output::Out;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "hangar", version, about = "A fleet of isolated workspaces on your own Linux hosts")]
struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Hub URL (default: from the client config).
    #[arg(long, global = true, env = "HANGAR_HUB")]
    hub: Option<String>,
    /// API token (default: from the client config).
    #[arg(long, global = true, env = "HANGAR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Client config file.
    #[arg(long, global = true, env = "HANGAR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the data dir, the fleet CA, the store and an admin token.
    Init(InitArgs),
    /// Run a hub and a local agent in the foreground (a one-host fleet on SQLite).
    Up(UpArgs),
    /// Run `hangar up` in the background.
    #[command(subcommand)]
    Daemon(DaemonCmd),
    /// Stop this machine's fleet of a data dir: processes, sandboxes, volume pool.
    Down {
        #[command(flatten)]
        dir: DataDir,
        /// Also delete the data dir (all instances' data).
        #[arg(long)]
        purge: bool,
    },
    #[command(subcommand)]
    Hub(HubCmd),
    #[command(subcommand)]
    Agent(AgentCmd),
    #[command(subcommand)]
    Tenant(TenantCmd),
    #[command(subcommand)]
    Instance(InstanceCmd),
    #[command(subcommand)]
    Host(HostCmd),
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Onboarding: `hangar new sandbox NAME` makes a tenant with a gateway and a worker pool.
    #[command(subcommand)]
    New(NewCmd),
    /// A tenant's dashboard: network, pools, instances, and what to do next.
    Connect {
        tenant: String,
    },
    #[command(subcommand)]
    Token(TokenCmd),
    #[command(subcommand)]
    Net(NetCmd),
    /// The audit log: who did what, when, and how it ended.
    Events {
        /// Only this tenant's events.
        tenant: Option<String>,
        /// How many of the newest events.
        #[arg(long, default_value_t = 20)]
        last: u32,
    },
    /// Long background runs: start, status, stop, collect, band, triage.
    #[command(subcommand)]
    Soak(soak::SoakCmd),
    /// Run the whole lifecycle end to end and print a PASS/FAIL matrix.
    Smoke(smoke::SmokeArgs),
    /// Measure hangar against the raw tools underneath (own fleet; writes bench.json).
    Bench(benchmark::BenchArgs),
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Args, Clone)]
struct DataDir {
    /// Where hangar keeps its state.
    #[arg(long, env = "HANGAR_DATA_DIR", default_value = "/var/lib/hangar")]
    data_dir: PathBuf,
}

#[derive(Args, Clone)]
struct InitArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Address the hub will listen on (goes into its certificate).
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// Extra DNS names or IPs for the hub's certificate.
    #[arg(long = "san")]
    sans: Vec<String>,
}

#[derive(Copy, Clone, ValueEnum)]
enum RuntimeArg {
    Runc,
    Crun,
}

#[derive(Copy, Clone, ValueEnum, PartialEq)]
enum VolumeArg {
    Btrfs,
    Dir,
}

#[derive(Args, Clone)]
struct AgentRunArgs {
    /// OCI runtime for sandboxes.
    #[arg(long, value_enum, default_value = "runc")]
    runtime: RuntimeArg,
    /// Volume driver.
    #[arg(long, value_enum, default_value = "btrfs")]
    volumes: VolumeArg,
    /// Block device for the btrfs pool (never formatted if it holds a filesystem); default a loop file.
    #[arg(long)]
    pool_device: Option<PathBuf>,
    /// Size of the loop file backing the btrfs pool, in MiB (sparse).
    #[arg(long, default_value_t = 20480)]
    pool_size_mib: u64,
    /// Seconds between reconcile passes (also the heartbeat).
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
}

impl AgentRunArgs {
    /// The same settings as `hangar agent run` arguments (for provider hosts' agents).
    fn to_args(&self) -> Vec<String> {
        vec![
            "--runtime".to_string(),
            match self.runtime {
                RuntimeArg::Runc => "runc".into(),
                RuntimeArg::Crun => "crun".into(),
            },
            "--volumes".into(),
            if self.volumes == VolumeArg::Btrfs { "btrfs".into() } else { "dir".into() },
            "--pool-size-mib".into(),
            self.pool_size_mib.to_string(),
            "--interval".into(),
            self.interval.to_string(),
        ]
        // (A --pool-device belongs to one host: provider hosts always get loop files.)
    }

    fn to_local(&self, listen: SocketAddr, advertise: Option<String>) -> Result<local::AgentArgs> {
        if !(0.05..=60.0).contains(&self.interval) {
            bail!("--interval must be between 0.05 and 60 seconds, got {}", self.interval);
        }
        Ok(local::AgentArgs {
            drivers: DriverConfig {
                runtime: match self.runtime {
                    RuntimeArg::Runc => "runc".into(),
                    RuntimeArg::Crun => "crun".into(),
                },
                volumes: VolumeConfig {
                    driver: if self.volumes == VolumeArg::Btrfs { "btrfs".into() } else { "dir".into() },
                    device: self.pool_device.clone(),
                    loop_size_mib: self.pool_size_mib,
                },
                ..Default::default()
            },
            listen,
            advertise,
            interval: Duration::from_secs_f64(self.interval),
        })
    }
}

#[derive(Args, Clone)]
struct HubArgs {
    /// The range tenant subnets (/24 by default) are cut from.
    #[arg(long, default_value = "10.240.0.0/12")]
    cluster_range: hangar_types::net::ClusterRange,
    /// Seconds without a report after which a host is marked stale (with the monitor's
    /// 1 s tick, a dead host is stale within 15 s; a live one reports every 2 s).
    #[arg(long, default_value_t = 12.0)]
    stale_after: f64,
    /// vCPUs a host may promise per core: vCPUs are CFS quotas, not reservations, and
    /// idle workspaces cost next to nothing.
    #[arg(long, default_value_t = 256.0)]
    cpu_overcommit: f64,
}

impl HubArgs {
    fn config(&self) -> Result<hangar_hub::HubConfig> {
        if !(1.0..=3600.0).contains(&self.stale_after) {
            bail!("--stale-after must be between 1 and 3600 seconds, got {}", self.stale_after);
        }
        if !(1.0..=4096.0).contains(&self.cpu_overcommit) {
            bail!("--cpu-overcommit must be between 1 and 4096 vCPUs per core, got {}", self.cpu_overcommit);
        }
        Ok(hangar_hub::HubConfig {
            cluster_range: self.cluster_range,
            stale_after: Duration::from_secs_f64(self.stale_after),
            cpu_overcommit: self.cpu_overcommit,
            ..Default::default()
        })
    }
}

#[derive(Args, Clone)]
struct UpArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Address of the hub API.
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    #[command(flatten)]
    hub: HubArgs,
    #[command(flatten)]
    agent: AgentRunArgs,
}

#[derive(Subcommand)]
enum DaemonCmd {
    /// Start `hangar up` in the background (refuses a second copy).
    Start(UpArgs),
    /// Is it running, and does the hub answer?
    Status(DataDir),
    /// Print its log.
    Logs {
        #[command(flatten)]
        dir: DataDir,
        #[arg(long, default_value_t = 50)]
        lines: usize,
    },
    /// Stop it (instances keep running).
    Stop(DataDir),
}

#[derive(Subcommand)]
enum HubCmd {
    /// Serve the hub API (no local agent).
    Serve {
        #[command(flatten)]
        dir: DataDir,
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: SocketAddr,
        #[command(flatten)]
        hub: HubArgs,
    },
}

#[derive(Subcommand)]
enum AgentCmd {
    /// Join a hub with a one-time token from `hangar host add`.
    Join {
        #[arg(long)]
        hub: String,
        #[arg(long)]
        token: String,
        /// The agent's data dir.
        #[arg(long, default_value = "/var/lib/hangar/agent")]
        agent_dir: PathBuf,
        /// Names/IPs the hub reaches this agent at (its certificate's SANs).
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Print the desired-state document the hub holds for a host (JSON).
    Desired {
        #[arg(long)]
        host: String,
    },
    /// Converge this host to a desired-state document once, without a hub. The document
    /// is checked first (unknown fields, counts, quotas); errors name the field.
    Reconcile {
        /// The document (`-` for stdin).
        #[arg(long)]
        desired: PathBuf,
        #[arg(long, default_value = "/var/lib/hangar/agent")]
        agent_dir: PathBuf,
        #[command(flatten)]
        run: AgentRunArgs,
    },
    /// Run the agent of a joined host.
    Run {
        #[arg(long, default_value = "/var/lib/hangar/agent")]
        agent_dir: PathBuf,
        /// Address of the agent's mTLS endpoint.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Name or IP the hub should use for the endpoint.
        #[arg(long)]
        advertise: Option<String>,
        #[command(flatten)]
        run: AgentRunArgs,
    },
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Create a tenant with quotas.
    Create {
        name: String,
        #[arg(long, default_value_t = 8)]
        max_vcpus: u32,
        /// MiB.
        #[arg(long, default_value_t = 8192)]
        max_mem: u64,
        #[arg(long, default_value_t = 8)]
        max_running: u32,
        #[arg(long, default_value_t = 16)]
        max_instances: u32,
        /// GiB.
        #[arg(long, default_value_t = 20)]
        max_disk: u64,
        /// Its instances cannot reach each other (they still reach the outside).
        #[arg(long)]
        isolated: bool,
        /// Prefix length of its subnet: 24 (253 instance addresses, the default) down
        /// to 20 (4,093).
        #[arg(long)]
        net_prefix: Option<u8>,
    },
    List,
    Info { name: String },
    /// Remove a tenant that has no instances.
    Destroy { name: String },
}

#[derive(Args)]
struct WaitArgs {
    /// Return at once with the operation instead of waiting.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for the operation.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

#[derive(Subcommand)]
enum InstanceCmd {
    /// Create an instance (and its volume); `-- CMD...` is its workload.
    Create {
        /// TENANT/NAME
        instance: String,
        /// `host` or `dir:/absolute/path`.
        #[arg(long, default_value = "host")]
        image: String,
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// Memory limit in MiB.
        #[arg(long, default_value_t = 256)]
        mem: u64,
        /// Volume size in MiB.
        #[arg(long, default_value_t = 1024)]
        disk: u64,
        /// Environment variables, KEY=VALUE.
        #[arg(long = "env")]
        env: Vec<String>,
        /// Start it right away.
        #[arg(long)]
        start: bool,
        /// Place it on this host instead of letting the scheduler choose.
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
        #[arg(last = true)]
        command: Vec<String>,
    },
    Start { instance: String, #[command(flatten)] wait: WaitArgs },
    Stop { instance: String, #[command(flatten)] wait: WaitArgs },
    /// Freeze it in memory.
    Warm { instance: String, #[command(flatten)] wait: WaitArgs },
    /// Thaw a warm instance.
    Resume { instance: String, #[command(flatten)] wait: WaitArgs },
    /// Delete it and its volume.
    Delete { instance: String, #[command(flatten)] wait: WaitArgs },
    /// Run a command inside; exits with its exit code.
    Exec {
        instance: String,
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    Logs {
        instance: String,
        #[arg(long, default_value_t = 100)]
        lines: u32,
    },
    Stats { instance: String },
    Info { instance: String },
    /// Park it: processes stopped, memory released, volume and address kept.
    Sleep { instance: String, #[command(flatten)] wait: WaitArgs },
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// Only this pool's members (needs --tenant).
        #[arg(long)]
        pool: Option<String>,
    },
}

#[derive(Subcommand)]
enum HostCmd {
    /// Register a host. Without --provider, prints a one-time join token for an agent
    /// you start; with `--provider local`, the hub makes the host on its own machine
    /// (a network namespace, data dir and agent process).
    Add {
        name: String,
        #[arg(long)]
        provider: Option<String>,
    },
    List,
    Info { name: String },
    /// Live status from the host's agent: node info, stats, instances.
    Status { name: String },
    /// Place nothing new there; pools move their members elsewhere.
    Drain { name: String },
    Undrain { name: String },
    /// Stop the host's agent and instances (provider hosts); volumes, addresses and
    /// states persist.
    Stop { name: String },
    /// Start a stopped host again; returns once its agent runs (ready after its first report).
    Start { name: String },
    /// Remove a host that holds no instances (and what its provider made).
    Remove { name: String },
}

#[derive(Subcommand)]
enum PoolCmd {
    /// Create a pool of identical instances; `-- CMD...` is their workload.
    Create {
        /// TENANT/NAME
        pool: String,
        /// What the members are for, e.g. gateway or worker.
        #[arg(long, default_value = "worker")]
        role: String,
        #[arg(long, default_value = "host")]
        image: String,
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// Memory limit in MiB.
        #[arg(long, default_value_t = 256)]
        mem: u64,
        /// Volume size in MiB.
        #[arg(long, default_value_t = 1024)]
        disk: u64,
        #[arg(long = "env")]
        env: Vec<String>,
        #[command(flatten)]
        counts: CountArgs,
        #[command(flatten)]
        wait: PoolWait,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Set desired counts; unnamed counts stay as they are.
    Scale {
        pool: String,
        #[command(flatten)]
        counts: CountArgs,
        #[command(flatten)]
        wait: PoolWait,
    },
    /// Desired vs actual, in total and per host.
    Info { pool: String },
    List { tenant: String },
    /// Delete the pool and all its members.
    Delete { pool: String },
}

#[derive(Args, Clone, Copy)]
struct CountArgs {
    #[arg(long)]
    running: Option<u32>,
    #[arg(long)]
    warm: Option<u32>,
    #[arg(long)]
    sleeping: Option<u32>,
}

#[derive(Args, Clone, Copy)]
struct PoolWait {
    /// Return once the counts are stored instead of waiting until the pool converged.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for the pool to converge.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Subcommand)]
enum NewCmd {
    /// A tenant with a gateway pool (1 running) and a worker pool, built and scaled.
    Sandbox {
        name: String,
        /// Running workers.
        #[arg(long, default_value_t = 2)]
        workers: u32,
        /// Warm (frozen, instant) workers.
        #[arg(long, default_value_t = 1)]
        warm: u32,
        #[command(flatten)]
        wait: PoolWait,
    },
}

#[derive(Subcommand)]
enum NetCmd {
    /// Check every host's bridges, addresses and rules against the store, and probe
    /// isolation from inside running instances. Exits 1 when anything is off.
    Verify,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create an API token (admin, or scoped to one tenant).
    Create {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
}

fn parse_ref(s: &str) -> Result<InstanceRef> {
    s.parse::<InstanceRef>().map_err(|e| anyhow::anyhow!("instance: {e}"))
}

fn parse_name(field: &str, s: &str) -> Result<Name> {
    s.parse::<Name>().map_err(|e| anyhow::anyhow!("{field}: {e}"))
}

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
            let fresh = local::init(&a.dir.data_dir, &a.listen, &a.sans, &config_path).await?;
            out.message(&serde_json::json!({"data_dir": a.dir.data_dir, "created": fresh, "config": config_path}), &if fresh {
                format!("initialized {} (client config {})", a.dir.data_dir.display(), config_path.display())
            } else {
                format!("{} is already initialized", a.dir.data_dir.display())
            });
            Ok(0)
        }
        Cmd::Up(a) => {
            init_tracing("info");
            local::up(&a.dir.data_dir, a.listen, a.agent.to_local("127.0.0.1:0".parse()?, None)?, &config_path, a.hub.config()?, a.agent.to_args()).await?;
            Ok(0)
        }
        Cmd::Daemon(d) => output::daemon(d_to(d), &config_path, &out).await,
        Cmd::Down { dir, purge } => {
            let done = local::down(&dir.data_dir, *purge).await?;
            out.item(&done, &if done.is_empty() { "nothing was running".to_string() } else { done.join("\n") });
            Ok(0)
        }
        Cmd::Hub(HubCmd::Serve { dir, listen, hub }) => {
            init_tracing("info");
            let (tx, rx) = tokio::sync::watch::channel(false);
            let run = local::start_hub(&dir.data_dir, *listen, hub.config()?, rx, Some(AgentRunArgs::default_args())).await?;
            eprintln!("hub listening on {}", local::hub_url(&run.addr));
            local::termination().await;
            let _ = tx.send(true);
            Ok(0)
        }
        Cmd::Agent(AgentCmd::Join { hub, token, agent_dir, names }) => {
            init_tracing("warn");
            let id = hangar_agent::join::join(&AgentPaths::new(agent_dir), hub, token, names.clone()).await?;
            out.message(&serde_json::json!({"host": id.host, "host_id": id.host_id}), &format!("joined as host '{}'", id.host));
            Ok(0)
        }
        Cmd::Agent(AgentCmd::Reconcile { desired, agent_dir, run }) => {
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
            let ok = rows.iter().all(|r| {
                matches!(
                    (r.desired, r.observed),
                    (hangar_types::DesiredState::Running, hangar_types::ObservedState::Running)
                        | (hangar_types::DesiredState::Warm, hangar_types::ObservedState::Warm)
                        | (hangar_types::DesiredState::Stopped, hangar_types::ObservedState::Stopped)
                        | (hangar_types::DesiredState::Deleted, hangar_types::ObservedState::Gone)
                )
            });
            let text = rows.iter().map(|r| format!("{}/{}: desired {:?}, observed {}", r.tenant, r.name, r.desired, r.observed).to_lowercase()).collect::<Vec<_>>().join("\n");
            out.item(&serde_json::json!({"converged": ok, "instances": observed}), &format!("{text}\n{}", if ok { "converged" } else { "NOT converged: see the agent's logs" }));
            Ok(if ok { 0 } else { 1 })
        }
        Cmd::Agent(AgentCmd::Run { agent_dir, listen, advertise, run }) => {
            init_tracing("info");
            // --hub (global) overrides the URL joined at, e.g. a hub now on another port.
            let opts = local::agent_options(AgentPaths::new(agent_dir), &run.to_local(*listen, advertise.clone())?, cli.hub.clone());
            hangar_agent::daemon::run(opts, local::termination()).await?;
            Ok(0)
        }
        Cmd::Soak(s) => {
            init_tracing("warn");
            soak::cmd(s, &out).await
        }
        Cmd::Smoke(a) => {
            init_tracing("warn");
            smoke::run(a, &config_path, &out).await
        }
        Cmd::Bench(a) => {
            init_tracing("warn");
            benchmark::run(a, &out).await
        }
        Cmd::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "hangar", &mut std::io::stdout());
            Ok(0)
        }
        _ => api(&cli, &out).await,
    }
}

fn d_to(d: &DaemonCmd) -> output::DaemonAction {
    match d {
        DaemonCmd::Start(a) => output::DaemonAction::Start { data_dir: a.dir.data_dir.clone(), args: daemon_up_args(a) },
        DaemonCmd::Status(dd) => output::DaemonAction::Status(dd.data_dir.clone()),
        DaemonCmd::Logs { dir, lines } => output::DaemonAction::Logs(dir.data_dir.clone(), *lines),
        DaemonCmd::Stop(dd) => output::DaemonAction::Stop(dd.data_dir.clone()),
    }
}

/// The `hangar up` arguments a daemon is started with.
fn daemon_up_args(a: &UpArgs) -> Vec<String> {
    let mut v = vec![
        "up".to_string(),
        "--data-dir".into(),
        a.dir.data_dir.display().to_string(),
        "--listen".into(),
        a.listen.to_string(),
        "--runtime".into(),
        match a.agent.runtime {
            RuntimeArg::Runc => "runc".into(),
            RuntimeArg::Crun => "crun".into(),
        },
        "--volumes".into(),
        if a.agent.volumes == VolumeArg::Btrfs { "btrfs".into() } else { "dir".into() },
        "--pool-size-mib".into(),
        a.agent.pool_size_mib.to_string(),
        "--interval".into(),
        a.agent.interval.to_string(),
        "--cluster-range".into(),
        a.hub.cluster_range.to_string(),
        "--stale-after".into(),
        a.hub.stale_after.to_string(),
        "--cpu-overcommit".into(),
        a.hub.cpu_overcommit.to_string(),
    ];
    if let Some(d) = &a.agent.pool_device {
        v.push("--pool-device".into());
        v.push(d.display().to_string());
    }
    v
}

/// Waits for an operation unless told not to; fails if it did not succeed.
async fn finish(c: &HubClient, out: &Out, op: Operation, wait: &WaitArgs, done: impl FnOnce(&Operation) -> String) -> Result<Operation> {
    if wait.no_wait {
        out.item(&op, &format!("operation {} {} ({})", op.id, op.status.as_str(), op.kind));
        return Ok(op);
    }
    let spinner = out.spinner(&format!("{} {}", op.kind, op.target));
    let op = c.operation_wait_final(op.id, Duration::from_secs(wait.timeout)).await?;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    match op.status {
        OperationStatus::Succeeded => {
            out.item(&op, &done(&op));
            Ok(op)
        }
        OperationStatus::Running => bail!("{} {} is still running after {}s: follow it with the operation id {}", op.kind, op.target, wait.timeout, op.id),
        s => bail!("{} {} {}: {}", op.kind, op.target, s.as_str(), op.error.as_deref().unwrap_or("no reason given")),
    }
}

async fn api(cli: &Cli, out: &Out) -> Result<i32> {
    let c = client(cli)?;
    match &cli.cmd {
        Cmd::Tenant(TenantCmd::Create { name, max_vcpus, max_mem, max_running, max_instances, max_disk, isolated, net_prefix }) => {
            let req = TenantCreate {
                name: parse_name("tenant", name)?,
                quotas: Some(Quotas { max_vcpus: *max_vcpus, max_mem_mib: *max_mem, max_running: *max_running, max_instances: *max_instances, max_disk_gib: *max_disk }),
                isolated: *isolated,
                net_prefix: *net_prefix,
            };
            if let Some(p) = net_prefix {
                hangar_types::net::check_net_prefix(*p).map_err(|e| anyhow::anyhow!("--net-prefix: {e}"))?;
            }
            let t = c.tenant_create(&req).await?;
            let addresses = hangar_types::net::host_numbers(t.net_prefix).count();
            out.item(&t, &format!("tenant '{}' created (net id {}, a /{} subnet: {addresses} instance addresses)", t.name, t.net_id, t.net_prefix));
        }
        Cmd::Tenant(TenantCmd::List) => out.tenants(&c.tenant_list().await?),
        Cmd::Tenant(TenantCmd::Info { name }) => out.tenant_info(&c.tenant_info(name).await?),
        Cmd::Tenant(TenantCmd::Destroy { name }) => {
            let t = c.tenant_destroy(name).await?;
            out.item(&t, &format!("tenant '{}' destroyed", t.name));
        }
        Cmd::Instance(ic) => return instance(&c, out, ic).await,
        Cmd::Host(HostCmd::Add { name, provider: Some(p) }) => {
            let r = c.host_add(&HostAdd { name: parse_name("host", name)?, provider: Some(p.clone()) }).await?;
            let host = wait_host_ready(&c, name, Duration::from_secs(120)).await?;
            out.item(&host, &format!("host '{}' made by provider {p} and ready", r.host.name));
        }
        Cmd::Host(HostCmd::Add { name, provider: None }) => {
            let r = c.host_add(&HostAdd { name: parse_name("host", name)?, provider: None }).await?;
            out.item(&r, &format!(
                "host '{}' added. On that host run:\n  hangar agent join --hub {} --token {}\n  hangar agent run",
                r.host.name,
                c.base_url(),
                r.join_token
            ));
        }
        Cmd::Host(HostCmd::List) => out.hosts(&c.host_list().await?),
        Cmd::Host(HostCmd::Info { name }) => out.host(&c.host_get(name).await?),
        Cmd::Host(HostCmd::Status { name }) => out.node_status(&c.host_status(name).await?),
        Cmd::Host(HostCmd::Drain { name }) => {
            let h = c.host_action(name, "drain").await?;
            out.item(&h, &format!("host '{}' is draining: nothing new lands there; pools move their members off", h.name));
        }
        Cmd::Host(HostCmd::Undrain { name }) => {
            let h = c.host_action(name, "undrain").await?;
            out.item(&h, &format!("host '{}' is {}", h.name, h.state.as_str()));
        }
        Cmd::Host(HostCmd::Stop { name }) => {
            let h = c.host_action(name, "stop").await?;
            out.item(&h, &format!("host '{}' stopped: its agent and instances are down; volumes, addresses and states are kept", h.name));
        }
        Cmd::Host(HostCmd::Start { name }) => {
            c.host_action(name, "start").await?;
            let h = wait_host_ready(&c, name, Duration::from_secs(120)).await?;
            out.item(&h, &format!("host '{}' is {}", h.name, h.state.as_str()));
        }
        Cmd::Host(HostCmd::Remove { name }) => {
            let h = c.host_remove(name).await?;
            out.item(&h, &format!("host '{}' removed", h.name));
        }
        Cmd::Agent(AgentCmd::Desired { host }) => {
            let d = c.host_desired(host).await?;
            println!("{}", serde_json::to_string_pretty(&d)?);
        }
        Cmd::Pool(pc) => return pools::pool_cmd(&c, out, pc).await,
        Cmd::New(NewCmd::Sandbox { name, workers, warm, wait }) => return pools::new_sandbox(&c, out, name, *workers, *warm, wait).await,
        Cmd::Connect { tenant } => return pools::connect(&c, out, tenant).await,
        Cmd::Token(TokenCmd::Create { tenant, description }) => {
            let tenant = tenant.as_deref().map(|t| parse_name("tenant", t)).transpose()?;
            let t = c.token_create(&TokenCreate { tenant, description: description.clone() }).await?;
            out.item(&t, &t.token);
        }
        Cmd::Events { tenant, last } => out.events(&c.events(tenant.as_deref(), *last).await?),
        Cmd::Net(NetCmd::Verify) => {
            let r = c.net_verify().await?;
            out.net_verify(&r);
            return Ok(if r.ok { 0 } else { 1 });
        }
        _ => unreachable!("local commands are handled in run()"),
    }
    Ok(0)
}

async fn instance(c: &HubClient, out: &Out, cmd: &InstanceCmd) -> Result<i32> {
    match cmd {
        InstanceCmd::Create { instance, image, cpus, mem, disk, env, start, host, wait, command } => {
            let r = parse_ref(instance)?;
            let image: ImageRef = image.parse().map_err(|e: String| anyhow::anyhow!("--image: {e}"))?;
            let mut envs = BTreeMap::new();
            for kv in env {
                let (k, v) = kv.split_once('=').with_context(|| format!("--env '{kv}': write it as KEY=VALUE"))?;
                envs.insert(k.to_string(), v.to_string());
            }
            let spec = InstanceSpec { image, vcpus: *cpus, mem_mib: *mem, disk_mib: *disk, command: command.clone(), env: envs };
            spec.validate().map_err(|e| anyhow::anyhow!("{}", cli_field(&e)))?;
            let mut req = InstanceCreate::new(r.name.clone(), spec, *start);
            req.host = host.as_deref().map(|h| parse_name("--host", h)).transpose()?;
            let op = c.instance_create(r.tenant.as_str(), &req).await?;
            finish(c, out, op, wait, |_| format!("{r} {}", if *start { "running" } else { "created" })).await?;
        }
        InstanceCmd::Start { instance, wait } => action(c, out, instance, "start", wait).await?,
        InstanceCmd::Stop { instance, wait } => action(c, out, instance, "stop", wait).await?,
        InstanceCmd::Warm { instance, wait } => action(c, out, instance, "warm", wait).await?,
        InstanceCmd::Resume { instance, wait } => action(c, out, instance, "resume", wait).await?,
        InstanceCmd::Delete { instance, wait } => {
            let r = parse_ref(instance)?;
            let op = c.instance_delete(r.tenant.as_str(), r.name.as_str()).await?;
            finish(c, out, op, wait, |_| format!("{r} deleted")).await?;
        }
        InstanceCmd::Exec { instance, timeout, command } => {
            let r = parse_ref(instance)?;
            let res = c.instance_exec(r.tenant.as_str(), r.name.as_str(), &ExecRequest { command: command.clone(), env: BTreeMap::new(), timeout_secs: Some(*timeout) }).await?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&res)?);
            } else {
                use std::io::Write;
                std::io::stdout().write_all(res.stdout.as_bytes())?;
                std::io::stderr().write_all(res.stderr.as_bytes())?;
            }
            return Ok(res.exit_code);
        }
        InstanceCmd::Logs { instance, lines } => {
            let r = parse_ref(instance)?;
            let l = c.instance_logs(r.tenant.as_str(), r.name.as_str(), *lines).await?;
            out.item(&l, &l.lines.join("\n"));
        }
        InstanceCmd::Stats { instance } => {
            let r = parse_ref(instance)?;
            out.stats(&c.instance_stats(r.tenant.as_str(), r.name.as_str()).await?);
        }
        InstanceCmd::Info { instance } => {
            let r = parse_ref(instance)?;
            let i = c.instance_get(r.tenant.as_str(), r.name.as_str()).await?;
            // The subnet's size is the tenant's: the gateway and bridge follow from it.
            let prefix = if out.json { DEFAULT_NET_PREFIX } else { c.tenant_info(r.tenant.as_str()).await.map(|t| t.tenant.net_prefix).unwrap_or(DEFAULT_NET_PREFIX) };
            out.instance(&i, prefix);
        }
        InstanceCmd::List { tenant, pool: None } => out.instances(&c.instance_list(tenant.as_deref()).await?),
        InstanceCmd::List { tenant: Some(t), pool: Some(p) } => out.instances(&c.pool_members(t, p).await?),
        InstanceCmd::List { tenant: None, pool: Some(_) } => bail!("--pool needs --tenant: pools are named per tenant"),
        InstanceCmd::Sleep { instance, wait } => action(c, out, instance, "sleep", wait).await?,
    }
    Ok(0)
}

/// Maps an API field name in a validation message to the CLI flag that sets it.
fn cli_field(msg: &str) -> String {
    msg.replacen("vcpus", "--cpus", 1).replacen("mem_mib", "--mem (MiB)", 1).replacen("disk_mib", "--disk (MiB)", 1)
}

async fn action(c: &HubClient, out: &Out, instance: &str, verb: &str, wait: &WaitArgs) -> Result<()> {
    let r = parse_ref(instance)?;
    let op = c.instance_action(r.tenant.as_str(), r.name.as_str(), verb).await?;
    let op = finish(c, out, op, wait, |_| String::new()).await?;
    if !wait.no_wait && !out.json {
        let i = c.instance_get(r.tenant.as_str(), r.name.as_str()).await?;
        println!("{r} {} on host {}", i.state, i.host.as_ref().map(|h| h.as_str()).unwrap_or("-"));
    }
    let _ = op;
    Ok(())
}

impl AgentRunArgs {
    /// What `hangar hub serve` gives the agents of provider hosts.
    fn default_args() -> Vec<String> {
        AgentRunArgs { runtime: RuntimeArg::Runc, volumes: VolumeArg::Btrfs, pool_device: None, pool_size_mib: 20480, interval: 2.0 }.to_args()
    }
}

/// Waits until a host is ready (its agent reported in full).
async fn wait_host_ready(c: &HubClient, name: &str, timeout: Duration) -> Result<Host> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let h = c.host_get(name).await?;
        if h.state == HostState::Ready {
            return Ok(h);
        }
        if std::time::Instant::now() > deadline {
            bail!("host '{name}' is still {} after {}s: see `hangar host info {name}` and its agent.log", h.state.as_str(), timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
