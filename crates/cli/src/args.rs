//! The command line: every command, flag and default, and the checks that turn raw
//! arguments into the library crates' types.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use clap::builder::PossibleValuesParser;
use hangar_agent::drivers::{self, DriverConfig, VolumeConfig};
use hangar_harness::bench::BenchOptions;
use hangar_harness::smoke::SmokeOptions;
use hangar_node::up::AgentArgs;
use hangar_types::{InstanceRef, Name};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "hangar", version, about = "A fleet of isolated workspaces on your own Linux hosts")]
pub struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Hub URL (default: from the client config).
    #[arg(long, global = true, env = "HANGAR_HUB")]
    pub hub: Option<String>,
    /// API token (default: from the client config).
    #[arg(long, global = true, env = "HANGAR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Client config file.
    #[arg(long, global = true, env = "HANGAR_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
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
    /// Images instances may use (admins register them; tenants name them with --image).
    #[command(subcommand)]
    Image(ImageCmd),
    /// Read-only snapshots of an instance's volume: create, list, restore, delete.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// A tenant's secrets: set, list, delete (values are never printed).
    #[command(subcommand)]
    Secret(SecretCmd),
    /// restic-format backups of instances: targets, backups, the file index, restores.
    #[command(subcommand)]
    Backup(crate::backups::BackupCmd),
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
    Soak(SoakCmd),
    /// Run the whole lifecycle end to end and print a PASS/FAIL matrix.
    Smoke(SmokeArgs),
    /// Measure hangar against the raw tools underneath (own fleet; writes bench.json).
    Bench(BenchArgs),
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// Public keys a tenant's users log in with through the SSH gateway.
    #[command(subcommand)]
    SshKey(SshKeyCmd),
    /// The hub's SSH gateway.
    #[command(subcommand)]
    Ssh(SshCmd),
    /// Copy files to, from and between instances: each of SRC and DST is
    /// TENANT/INSTANCE:/home/PATH (the instance's volume) or a local path.
    Cp {
        /// Copy directories (and merge into existing ones).
        #[arg(short = 'r', long)]
        recursive: bool,
        src: String,
        dst: String,
    },
}

#[derive(Subcommand)]
pub enum SshKeyCmd {
    /// Register a public key (an OpenSSH .pub file, or - for stdin).
    Add {
        #[arg(long)]
        tenant: String,
        /// The .pub file.
        file: PathBuf,
        /// A name for it (default: from its fingerprint).
        #[arg(long)]
        name: Option<String>,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    Remove {
        #[arg(long)]
        tenant: String,
        name: String,
    },
}

#[derive(Subcommand)]
pub enum SshCmd {
    /// The gateway's known_hosts line (append it to ~/.ssh/known_hosts).
    KnownHosts,
}

#[derive(Args, Clone)]
pub struct DataDir {
    /// Where hangar keeps its state.
    #[arg(long, env = "HANGAR_DATA_DIR", default_value = "/var/lib/hangar")]
    pub data_dir: PathBuf,
}

#[derive(Args, Clone)]
pub struct InitArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Address the hub will listen on (goes into its certificate).
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
    /// Extra DNS names or IPs for the hub's certificate.
    #[arg(long = "san")]
    pub sans: Vec<String>,
}

#[derive(Args, Clone)]
pub struct AgentRunArgs {
    /// OCI runtime for sandboxes (a driver of the agent's registry).
    #[arg(long, default_value = drivers::RUNTIMES[0].name, value_parser = PossibleValuesParser::new(drivers::runtime_names()))]
    pub runtime: String,
    /// Volume driver (a driver of the agent's registry).
    #[arg(long, default_value = drivers::VOLUMES[0].name, value_parser = PossibleValuesParser::new(drivers::volume_names()))]
    pub volumes: String,
    /// Block device for the btrfs pool (never formatted if it holds a filesystem); default a loop file.
    #[arg(long)]
    pub pool_device: Option<PathBuf>,
    /// Size of the loop file backing the btrfs pool, in MiB (sparse).
    #[arg(long, default_value_t = 20480)]
    pub pool_size_mib: u64,
    /// Seconds between reconcile passes (also the heartbeat).
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// Size of one workload log file before it is rotated, in MiB.
    #[arg(long, default_value_t = 8)]
    pub log_max_mib: u64,
    /// Log files kept per instance, the live one included.
    #[arg(long, default_value_t = 3)]
    pub log_files: u32,
    /// The longest `timeout_secs` an exec may ask, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub exec_timeout_max_secs: u64,
    /// Execs running at once in one instance; one more is refused (429).
    #[arg(long, default_value_t = 8)]
    pub exec_max_concurrent: usize,
}

impl AgentRunArgs {
    /// What `hangar hub serve` gives the agents of provider hosts.
    pub fn default_args() -> Vec<String> {
        let d = DriverConfig::default();
        let e = hangar_agent::endpoint::ExecLimits::default();
        AgentRunArgs {
            runtime: d.runtime,
            volumes: d.volumes.driver,
            pool_device: None,
            pool_size_mib: d.volumes.loop_size_mib,
            interval: 2.0,
            log_max_mib: d.logs.max_bytes >> 20,
            log_files: d.logs.files,
            exec_timeout_max_secs: e.timeout_max_secs,
            exec_max_concurrent: e.max_concurrent,
        }
        .to_args()
    }

    /// The same settings as `hangar agent run` arguments (for provider hosts' agents).
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--runtime".to_string(),
            self.runtime.clone(),
            "--volumes".into(),
            self.volumes.clone(),
            "--pool-size-mib".into(),
            self.pool_size_mib.to_string(),
            "--interval".into(),
            self.interval.to_string(),
            "--log-max-mib".into(),
            self.log_max_mib.to_string(),
            "--log-files".into(),
            self.log_files.to_string(),
            "--exec-timeout-max-secs".into(),
            self.exec_timeout_max_secs.to_string(),
            "--exec-max-concurrent".into(),
            self.exec_max_concurrent.to_string(),
        ]
        // (A --pool-device belongs to one host: provider hosts always get loop files.)
    }

    pub fn to_local(&self, listen: SocketAddr, advertise: Option<String>) -> Result<AgentArgs> {
        if !(0.05..=60.0).contains(&self.interval) {
            bail!("--interval must be between 0.05 and 60 seconds, got {}", self.interval);
        }
        if !(1..=1 << 20).contains(&self.log_max_mib) || !(1..=100).contains(&self.log_files) {
            bail!("--log-max-mib must be between 1 and 1048576 and --log-files between 1 and 100, got {} and {}", self.log_max_mib, self.log_files);
        }
        if self.exec_timeout_max_secs == 0 || self.exec_max_concurrent == 0 {
            bail!("--exec-timeout-max-secs and --exec-max-concurrent must be at least 1");
        }
        Ok(AgentArgs {
            drivers: DriverConfig {
                runtime: self.runtime.clone(),
                volumes: VolumeConfig { driver: self.volumes.clone(), device: self.pool_device.clone(), loop_size_mib: self.pool_size_mib },
                logs: hangar_agent::drivers::runtime::LogLimits { max_bytes: self.log_max_mib << 20, files: self.log_files },
                ..DriverConfig::default()
            },
            listen,
            advertise,
            interval: Duration::from_secs_f64(self.interval),
            exec: hangar_agent::endpoint::ExecLimits { timeout_max_secs: self.exec_timeout_max_secs, max_concurrent: self.exec_max_concurrent },
        })
    }
}

#[derive(Args, Clone)]
pub struct HubArgs {
    /// The range tenant subnets (/24 by default) are cut from.
    #[arg(long, default_value = "10.240.0.0/12")]
    pub cluster_range: hangar_types::net::ClusterRange,
    /// Seconds without a report after which a host is marked stale (with the monitor's
    /// 1 s tick, a dead host is stale within 15 s; a live one reports every 2 s).
    #[arg(long, default_value_t = 12.0)]
    pub stale_after: f64,
    /// vCPUs a host may promise per core: vCPUs are CFS quotas, not reservations, and
    /// idle workspaces cost next to nothing.
    #[arg(long, default_value_t = 256.0)]
    pub cpu_overcommit: f64,
    #[command(flatten)]
    pub ssh: SshGatewayArgs,
    /// Seconds from `instance delete --hard` to the purge of the instance's backups.
    #[arg(long, env = "HANGAR_BACKUP_PURGE_DELAY", default_value_t = 7 * 24 * 3600)]
    pub backup_purge_delay: u64,
    /// How long host certificates are valid (`7d`, `12h`; at least 10s); agents renew
    /// them at a third left.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub host_cert_lifetime: Duration,
}

/// The SSH gateway `hub serve` and `up` start.
#[derive(Args, Clone)]
pub struct SshGatewayArgs {
    /// Where the SSH gateway listens: ADDR:PORT, or `off`. Unset: port 2222 on the API's
    /// address, skipped with a warning if that port is taken.
    #[arg(long)]
    pub ssh_listen: Option<String>,
    /// Seconds without traffic after which an SSH connection is closed.
    #[arg(long, default_value_t = 3600)]
    pub ssh_idle_timeout: u64,
    /// SSH sessions open at once per tenant; one more is refused.
    #[arg(long, default_value_t = 32)]
    pub ssh_max_sessions: usize,
}

impl SshGatewayArgs {
    pub fn config(&self) -> Result<hangar_hub::ssh::SshConfig> {
        use hangar_hub::ssh::SshListen;
        let listen = match self.ssh_listen.as_deref() {
            None => SshListen::Default(2222),
            Some("off") => SshListen::Off,
            Some(a) => SshListen::At(a.parse().map_err(|e| anyhow::anyhow!("--ssh-listen {a:?}: {e}; give ADDR:PORT (e.g. 0.0.0.0:2222) or off"))?),
        };
        if self.ssh_idle_timeout == 0 || self.ssh_max_sessions == 0 {
            bail!("--ssh-idle-timeout and --ssh-max-sessions must be at least 1");
        }
        Ok(hangar_hub::ssh::SshConfig { listen, idle_timeout: Duration::from_secs(self.ssh_idle_timeout), max_sessions_per_tenant: self.ssh_max_sessions })
    }
}

impl HubArgs {
    pub fn config(&self) -> Result<hangar_hub::HubConfig> {
        if !(1.0..=3600.0).contains(&self.stale_after) {
            bail!("--stale-after must be between 1 and 3600 seconds, got {}", self.stale_after);
        }
        if !(1.0..=4096.0).contains(&self.cpu_overcommit) {
            bail!("--cpu-overcommit must be between 1 and 4096 vCPUs per core, got {}", self.cpu_overcommit);
        }
        if self.host_cert_lifetime < Duration::from_secs(10) {
            bail!("--host-cert-lifetime must be at least 10s");
        }
        Ok(hangar_hub::HubConfig {
            cluster_range: self.cluster_range,
            stale_after: Duration::from_secs_f64(self.stale_after),
            cpu_overcommit: self.cpu_overcommit,
            ssh: self.ssh.config()?,
            backup_purge_delay: Duration::from_secs(self.backup_purge_delay),
            host_cert_lifetime: self.host_cert_lifetime,
            ..Default::default()
        })
    }
}

#[derive(Args, Clone)]
pub struct UpArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Address of the hub API.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(flatten)]
    pub agent: AgentRunArgs,
}

#[derive(Subcommand)]
pub enum DaemonCmd {
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
pub enum HubCmd {
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
pub enum AgentCmd {
    /// Join a hub with a one-time token from `hangar host add`.
    Join {
        #[arg(long)]
        hub: String,
        #[arg(long)]
        token: String,
        #[command(flatten)]
        dir: DataDir,
        /// The agent's own dir (default: `agent` under the data dir, as `hangar up` keeps it).
        #[arg(long)]
        agent_dir: Option<PathBuf>,
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
        #[command(flatten)]
        dir: DataDir,
        /// The agent's own dir (default: `agent` under the data dir). Refused while an
        /// agent runs on it.
        #[arg(long)]
        agent_dir: Option<PathBuf>,
        #[command(flatten)]
        run: AgentRunArgs,
    },
    /// Run the agent of a joined host.
    Run {
        #[command(flatten)]
        dir: DataDir,
        /// The agent's own dir (default: `agent` under the data dir).
        #[arg(long)]
        agent_dir: Option<PathBuf>,
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
pub enum TenantCmd {
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
    /// Remove a tenant that has no instances; with --force, delete its pools and
    /// instances first (volumes, addresses, network), waiting for the hosts.
    Destroy {
        name: String,
        /// Delete its pools and instances first (one operation, with progress; it goes
        /// on if the hub restarts).
        #[arg(long)]
        force: bool,
        /// With --force: return the operation at once instead of following its progress.
        #[arg(long)]
        no_wait: bool,
    },
    /// Change a tenant's settings.
    Update {
        name: String,
        /// Where its backups go (a name from `hangar backup target list`); `none` turns
        /// backups off.
        #[arg(long)]
        backup_target: Option<String>,
    },
}

#[derive(Args)]
pub struct WaitArgs {
    /// Return at once with the operation instead of waiting.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for the operation.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// What an instance runs, for `instance create` and `pool create` alike.
#[derive(Args)]
pub struct SpecArgs {
    /// `host` or the name of a registered image (`hangar image list`).
    #[arg(long, default_value = "host")]
    pub image: String,
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Memory limit in MiB.
    #[arg(long, default_value_t = 256)]
    pub mem: u64,
    /// Volume size in MiB.
    #[arg(long, default_value_t = 1024)]
    pub disk: u64,
    /// Environment variables, KEY=VALUE.
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// The workload, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

impl SpecArgs {
    /// The validated spec; errors name the flag.
    pub fn spec(&self) -> Result<hangar_types::api::InstanceSpec> {
        let spec = hangar_types::api::InstanceSpec { image: parse_image(&self.image)?, vcpus: self.cpus, mem_mib: self.mem, disk_mib: self.disk, command: self.command.clone(), env: parse_env(&self.env)?, secrets: vec![] };
        spec.validate().map_err(|e| anyhow::anyhow!("{}", cli_field(&e)))?;
        Ok(spec)
    }
}

#[derive(Subcommand)]
pub enum InstanceCmd {
    /// Create an instance (and its volume); `-- CMD...` is its workload.
    Create {
        /// TENANT/NAME
        instance: String,
        #[command(flatten)]
        spec: SpecArgs,
        /// Start it right away.
        #[arg(long)]
        start: bool,
        /// Place it on this host instead of letting the scheduler choose.
        #[arg(long)]
        host: Option<String>,
        /// A secret of the tenant to see read-only at /run/secrets/NAME (repeat for more).
        #[arg(long = "secret", value_name = "NAME")]
        secrets: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    Start { instance: String, #[command(flatten)] wait: WaitArgs },
    Stop { instance: String, #[command(flatten)] wait: WaitArgs },
    /// Freeze it in memory.
    Warm { instance: String, #[command(flatten)] wait: WaitArgs },
    /// Thaw a warm instance.
    Resume { instance: String, #[command(flatten)] wait: WaitArgs },
    /// Delete it and its volume.
    Delete {
        instance: String,
        /// Also purge its backups, after the hub's purge delay (7 days unless set);
        /// `hangar backup purge cancel` keeps them.
        #[arg(long)]
        hard: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Run a command inside; exits with its exit code.
    Exec {
        instance: String,
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Keep stdin open and stream it to the command (a session through the hub;
        /// --timeout does not apply).
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Run it with a terminal (a PTY): raw mode here, resizes sent along.
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The last lines of its workload's output (stdout and stderr).
    Logs {
        instance: String,
        /// How many of the last lines.
        #[arg(long, visible_alias = "lines", default_value_t = 100)]
        tail: u32,
        /// Then keep printing new lines as they are written (until interrupted).
        #[arg(long, short = 'f')]
        follow: bool,
    },
    Stats { instance: String },
    /// Move it to another host (admin): its volume is sent while it runs, then it stops,
    /// the difference goes, and it starts there in the state it had, same address.
    Move {
        instance: String,
        /// The host to move it to.
        #[arg(long, value_name = "HOST")]
        to: String,
        /// How the volume travels: `transfer` (host to host) or `backup` (through the
        /// tenant's backup target, for hosts that cannot reach each other).
        #[arg(long, value_name = "WAY", default_value = "transfer", value_parser = parse_via)]
        via: hangar_types::moves::MoveVia,
        /// Follow the move to its end, printing each phase, the bytes sent and the downtime.
        #[arg(long)]
        wait: bool,
        /// Keep the source host's copy this long after the move (like 1h; at most 7d).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        keep_source: Option<Duration>,
    },
    /// Log in through the SSH gateway with the system's `ssh` (right user, port and host
    /// key); `-- CMD` runs a command instead of a shell.
    Ssh {
        instance: String,
        /// Check the way in end to end and say what is wrong (exit 1), instead of logging in.
        #[arg(long)]
        check: bool,
        /// The private key to offer (ssh -i).
        #[arg(long, short = 'i')]
        identity: Option<PathBuf>,
        #[arg(last = true)]
        command: Vec<String>,
    },
    Info { instance: String },
    /// A token for the hub's HTTP proxy to one port of the instance
    /// (`proxy-token TENANT/NAME --port P [--ttl 1h]`), or `list` / `revoke` them.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    ProxyToken {
        #[command(subcommand)]
        cmd: Option<ProxyTokenCmd>,
        /// TENANT/NAME
        #[arg(required = true)]
        instance: Option<String>,
        /// The port inside the instance.
        #[arg(long, required = true)]
        port: Option<u16>,
        /// How long it is valid: 90s, 30m, 1h, 7d (default 1h, at most 30d).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Reach a port of the instance through the hub's proxy: runs `-- CMD...` with
    /// arguments that start with `/` made into the proxied URL and the token passed
    /// (curl gets the header and CA from private files), or prints the URL and a token.
    Proxy {
        instance: String,
        port: u16,
        /// The token's lifetime (default 5m).
        #[arg(long, default_value = "5m")]
        ttl: String,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Park it: processes stopped, memory released, volume and address kept.
    Sleep { instance: String, #[command(flatten)] wait: WaitArgs },
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// Only this pool's members (needs --tenant).
        #[arg(long)]
        pool: Option<String>,
    },
    /// Change an instance's settings.
    Update {
        /// TENANT/NAME
        instance: String,
        /// Scheduled snapshots taken and pruned by its host: "hourly,keep=24", "daily",
        /// "every=15m,keep=4" (at least 1m), or "off".
        #[arg(long)]
        snapshot_schedule: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// A read-only snapshot of the instance's volume, taken at once.
    Create {
        /// TENANT/NAME
        instance: String,
        /// Its name (default snap-YYYYMMDD-HHMMSS, UTC).
        #[arg(long)]
        name: Option<String>,
    },
    /// The instance's snapshots, oldest first.
    List {
        /// TENANT/NAME
        instance: String,
    },
    /// Replace the instance's volume by a snapshot (the instance must be stopped).
    Restore {
        /// TENANT/NAME
        instance: String,
        snapshot: String,
        /// Restore a running instance: stop it, restore, start it again.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    Delete {
        /// TENANT/NAME
        instance: String,
        snapshot: String,
    },
}

#[derive(Subcommand)]
pub enum HostCmd {
    /// Register a host. Without --provider, prints a one-time join token for an agent
    /// you start; with `--provider local`, the hub makes the host on its own machine
    /// (a network namespace, data dir and agent process).
    Add {
        name: String,
        #[arg(long)]
        provider: Option<String>,
        /// How long the join token works (`10m`, `1h`, `2d`; 1 minute to 30 days); default 1h.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    List,
    Info { name: String },
    /// Live status from the host's agent: node info, stats, instances.
    Status { name: String },
    /// Place nothing new there; pools move their members elsewhere.
    Drain { name: String },
    Undrain { name: String },
    /// Move every instance off the host (admin): drains it, then moves each instance in
    /// its state to the host the placement picks, a few at once; prints each outcome.
    Evacuate {
        name: String,
        /// How many instances move at once (1 to 16).
        #[arg(long, default_value_t = 2)]
        parallel: u32,
        /// Follow it to its end and print where each instance went (exit 1 if any stayed).
        #[arg(long)]
        wait: bool,
    },
    /// Stop the host's agent and instances (provider hosts); volumes, addresses and
    /// states persist.
    Stop { name: String },
    /// Start a stopped host again; returns once its agent runs (ready after its first report).
    Start { name: String },
    /// Remove a host that holds no instances (and what its provider made).
    Remove { name: String },
    /// Have the host's agent renew its certificate now; waits until the new one is in
    /// use (from then on the old one is refused).
    RotateCert {
        name: String,
        /// Return once asked, without waiting for the agent.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Subcommand)]
pub enum PoolCmd {
    /// Create a pool of identical instances; `-- CMD...` is their workload.
    Create {
        /// TENANT/NAME
        pool: String,
        /// What the members are for, e.g. gateway or worker.
        #[arg(long, default_value = "worker")]
        role: String,
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        counts: CountArgs,
        /// A secret of the tenant every member sees read-only at /run/secrets/NAME
        /// (repeat for more).
        #[arg(long = "secret", value_name = "NAME")]
        secrets: Vec<String>,
        #[command(flatten)]
        wait: PoolWait,
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
pub struct CountArgs {
    #[arg(long)]
    pub running: Option<u32>,
    #[arg(long)]
    pub warm: Option<u32>,
    #[arg(long)]
    pub sleeping: Option<u32>,
}

#[derive(Args, Clone, Copy)]
pub struct PoolWait {
    /// Return once the counts are stored instead of waiting until the pool converged.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for the pool to converge.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Subcommand)]
pub enum NewCmd {
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
pub enum NetCmd {
    /// Check every host's bridges, addresses and rules against the store, and probe
    /// isolation from inside running instances. Exits 1 when anything is off.
    Verify,
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create an API token (admin, or scoped to one tenant).
    Create {
        #[arg(long)]
        tenant: Option<String>,
        /// admin, tenant or viewer (read-only, over every tenant or over --tenant);
        /// default: admin without --tenant, tenant with it.
        #[arg(long)]
        role: Option<hangar_types::api::TokenRole>,
        #[arg(long)]
        description: Option<String>,
        /// How long the token works (`90s`, `15m`, `12h`, `30d`); default: until revoked.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Every token: id, scope, expiry, last use (never the secret).
    List,
    /// Revoke a token: refused at once on every hub.
    Revoke { id: String },
}

/// `transfer` or `backup` (`instance move --via`).
fn parse_via(s: &str) -> Result<hangar_types::moves::MoveVia, String> {
    hangar_types::moves::MoveVia::parse(s).ok_or_else(|| format!("'{s}': write transfer or backup"))
}

/// `90s`, `15m`, `12h`, `30d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.find(|c: char| !c.is_ascii_digit()).map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: u64 = n.parse().map_err(|_| format!("'{s}': write a number and a unit, like 30d, 12h, 15m or 90s"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("'{s}': the unit must be s, m, h or d")),
    };
    n.checked_mul(mult).filter(|s| *s > 0).map(Duration::from_secs).ok_or_else(|| format!("'{s}': must be more than zero and less than forever"))
}

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Create or replace TENANT/NAME from a file (`-` reads stdin); at most 64 KiB.
    Set {
        secret: String,
        #[arg(long, value_name = "FILE")]
        from_file: PathBuf,
    },
    /// The tenant's secrets: sizes, versions, the instances that name them.
    List { tenant: String },
    /// Delete TENANT/NAME; refused while instances name it, unless --force.
    Delete {
        secret: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum ProxyTokenCmd {
    /// The instance's proxy tokens (never their secrets).
    List { instance: String },
    /// Revoke one by id: refused from the next request on.
    Revoke { instance: String, id: String },
}

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Register a root filesystem: a directory (used read-only) or a tarball (extracted
    /// once per host, checked by its sha256). The path must be the same on every host.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["dir", "tar"])))]
    Add {
        name: String,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        tar: Option<PathBuf>,
    },
    List,
    /// Unregister an image no instance or pool uses.
    Remove { name: String },
}

/// `--image`: `host` or the name of a registered image.
pub fn parse_image(s: &str) -> Result<hangar_types::api::ImageRef> {
    s.parse().map_err(|e: String| anyhow::anyhow!("--image: {e}"))
}

/// `--env KEY=VALUE` flags as a map.
pub fn parse_env(kvs: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    kvs.iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').with_context(|| format!("--env '{kv}': write it as KEY=VALUE"))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `TENANT/NAME` of an instance or a pool (`what`), or an error naming it.
pub fn parse_ref(what: &str, s: &str) -> Result<InstanceRef> {
    s.parse::<InstanceRef>().map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

pub fn parse_name(field: &str, s: &str) -> Result<Name> {
    s.parse::<Name>().map_err(|e| anyhow::anyhow!("{field}: {e}"))
}


/// The agent dir of an agent command: `--agent-dir`, else `agent` under the data dir
/// (`--data-dir`, `HANGAR_DATA_DIR`), where `hangar up` keeps its agent.
pub fn agent_dir(dir: &DataDir, agent_dir: &Option<PathBuf>) -> PathBuf {
    agent_dir.clone().unwrap_or_else(|| dir.data_dir.join("agent"))
}

/// The `hangar up` arguments a daemon is started with.
pub fn daemon_up_args(a: &UpArgs) -> Vec<String> {
    let mut v = vec!["up".to_string(), "--data-dir".into(), a.dir.data_dir.display().to_string(), "--listen".into(), a.listen.to_string()];
    v.extend(a.agent.to_args());
    v.extend(["--cluster-range".into(), a.hub.cluster_range.to_string(), "--stale-after".into(), a.hub.stale_after.to_string(), "--cpu-overcommit".into(), a.hub.cpu_overcommit.to_string()]);
    v.extend(["--backup-purge-delay".into(), a.hub.backup_purge_delay.to_string()]);
    v.extend(["--host-cert-lifetime".into(), format!("{}s", a.hub.host_cert_lifetime.as_secs())]);
    if let Some(d) = &a.agent.pool_device {
        v.extend(["--pool-device".into(), d.display().to_string()]);
    }
    if let Some(l) = &a.hub.ssh.ssh_listen {
        v.extend(["--ssh-listen".into(), l.clone()]);
    }
    v.extend(["--ssh-idle-timeout".into(), a.hub.ssh.ssh_idle_timeout.to_string(), "--ssh-max-sessions".into(), a.hub.ssh.ssh_max_sessions.to_string()]);
    v
}

/// Maps an API field name in a validation message to the CLI flag that sets it.
pub fn cli_field(msg: &str) -> String {
    msg.replacen("vcpus", "--cpus", 1).replacen("mem_mib", "--mem (MiB)", 1).replacen("disk_mib", "--disk (MiB)", 1)
}

#[derive(Subcommand, Clone)]
pub enum SoakCmd {
    /// Start a run in the background for SECS seconds.
    Start {
        secs: u64,
        /// Comma-separated scenarios run in turn each round.
        #[arg(long, value_delimiter = ',', default_value = "churn")]
        scenario: Vec<String>,
        #[command(flatten)]
        base: Base,
    },
    /// State of the latest run: running, completed, failed or stopped.
    Status(Base),
    /// Stop the latest run (only the runner it started, verified by its command line).
    Stop(Base),
    /// A tarball of the latest run: state, rounds.tsv, logs.
    Collect(Base),
    /// Every scenario in sequence in the foreground; writes results.tsv and status.tsv.
    Band {
        /// Seconds per scenario.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        #[command(flatten)]
        base: Base,
    },
    /// Summarize a run directory or tarball: failures by kind, first occurrence, rates.
    Triage { path: PathBuf },
    /// The runner itself (what `start` launches).
    #[command(hide = true)]
    Run {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        secs: u64,
        #[arg(long, value_delimiter = ',')]
        scenario: Vec<String>,
    },
}

#[derive(Args, Clone)]
pub struct Base {
    /// Where runs are kept.
    #[arg(long, default_value = "soak-runs")]
    pub base: PathBuf,
}

#[derive(Args, Clone)]
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

impl SmokeArgs {
    pub fn options(&self, bin: PathBuf) -> SmokeOptions {
        let a = self.clone();
        SmokeOptions { bin, hub: a.hub, token_file: a.token_file, ca_file: a.ca_file, scenarios: a.scenario, list: a.list, keep: a.keep, continue_on_failure: a.continue_on_failure, results: a.results, cleanup: a.cleanup }
    }
}

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Comma-separated subset of: start, resume, burst (with density), api, reconcile, heartbeat,
    /// snapshot, proxy, ssh, backup, copy, move; `access` is proxy and ssh.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Samples for start and resume.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Instances in the burst.
    #[arg(long, default_value_t = 100)]
    burst: usize,
    /// kill -9 / stale detection rounds (each takes the stale threshold, 12 s).
    #[arg(long, default_value_t = 3)]
    heartbeat_runs: usize,
    /// Seconds of load for the api benchmark.
    #[arg(long, default_value_t = 5)]
    api_secs: u64,
    /// Running instances the reconcile benchmark scales a pool to.
    #[arg(long, default_value_t = 1000)]
    reconcile_size: u32,
    /// Requests timed by the proxy benchmark.
    #[arg(long, default_value_t = 200)]
    proxy_requests: usize,
    /// MiB of the proxy benchmark's download.
    #[arg(long, default_value_t = 100)]
    proxy_mib: u64,
    /// Where to write the results.
    #[arg(long, default_value = "bench.json")]
    out: PathBuf,
    /// MiB of the tree the backup benchmark generates.
    #[arg(long, default_value_t = 1024)]
    backup_mib: u64,
    /// MiB of the file the copy benchmark copies across hosts.
    #[arg(long, default_value_t = 1024)]
    copy_mib: u64,
    /// MiB of the workspace the move benchmark moves between hosts.
    #[arg(long, default_value_t = 1024)]
    move_mib: u64,
}

impl BenchArgs {
    pub fn options(&self, bin: PathBuf) -> BenchOptions {
        let a = self.clone();
        BenchOptions { bin, only: a.only, runs: a.runs, burst: a.burst, heartbeat_runs: a.heartbeat_runs, api_secs: a.api_secs, reconcile_size: a.reconcile_size, out: a.out, proxy_requests: a.proxy_requests, proxy_mib: a.proxy_mib, backup_mib: a.backup_mib, copy_mib: a.copy_mib, move_mib: a.move_mib }
    }
}
