//! Documents of the public REST API (/v1). Every request type rejects unknown fields.

use crate::generation::Generation;
use crate::ids::{HostId, InstanceId, OperationId, TenantId, TokenId};
use crate::names::Name;
use crate::state::{DesiredState, InstanceState, ObservedState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Limits a tenant may not exceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// vCPUs held by starting, running and warm instances.
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_vcpus: u32,
    /// Memory (MiB) held by starting, running and warm instances.
    #[schema(minimum = 1, maximum = 1099511627776_i64)]
    pub max_mem_mib: u64,
    /// Instances starting or running at once.
    #[schema(minimum = 0, maximum = 1000000)]
    pub max_running: u32,
    /// Instances that exist.
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_instances: u32,
    /// Disk (GiB) of all instance volumes, and of their snapshots by the bytes only
    /// they hold.
    #[schema(minimum = 1, maximum = 1073741824)]
    pub max_disk_gib: u64,
}

impl Quotas {
    /// The largest value of each quota (the schema's maximums): far above any fleet,
    /// small enough that sums of usage never overflow.
    pub const MAX: Quotas = Quotas { max_vcpus: 1_000_000, max_mem_mib: 1 << 40, max_running: 1_000_000, max_instances: 1_000_000, max_disk_gib: 1 << 30 };
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas { max_vcpus: 8, max_mem_mib: 8192, max_running: 8, max_instances: 16, max_disk_gib: 20 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantCreate {
    pub name: Name,
    #[serde(default)]
    pub quotas: Option<Quotas>,
    /// Instances of this tenant cannot reach each other (bridge port isolation); they
    /// still reach the outside world.
    #[serde(default)]
    pub isolated: bool,
    /// Prefix length of the tenant's subnet, 20 to 24 (default 24: 253 addresses; 22:
    /// 1,021; 20: 4,093).
    #[serde(default)]
    #[schema(minimum = 20, maximum = 24)]
    pub net_prefix: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tenant {
    pub id: TenantId,
    pub name: Name,
    pub quotas: Quotas,
    /// The tenant's network number: its subnet starts at the net id's /24.
    pub net_id: u32,
    /// Prefix length of its subnet (24 unless asked for a bigger one at create).
    #[serde(default = "default_net_prefix")]
    pub net_prefix: u8,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Instances cannot reach each other.
    #[serde(default)]
    pub isolated: bool,
}

fn default_net_prefix() -> u8 {
    crate::net::DEFAULT_NET_PREFIX
}

/// Current use against each quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub vcpus: u32,
    pub mem_mib: u64,
    pub running: u32,
    pub instances: u32,
    pub disk_mib: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantInfo {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub usage: Usage,
}

/// What an instance's root filesystem comes from.
///
/// `host`: the host's /usr, /bin, /lib, /lib64, /sbin read-only, zero size.
/// `NAME`: an image an admin registered (`hangar image add NAME --dir PATH` or
/// `--tar FILE`); the hub resolves it for the host ([`crate::protocol::DesiredInstance::image`]).
/// `dir:/abs/path`: a host directory as the root. Parsed only so that instances
/// created before images were registered still load; the hub refuses it in requests
/// ([`ImageRef::check_requested`]): which host directory may become a root is an
/// admin's decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ImageRef {
    Host,
    Named(Name),
    Dir(String),
}

impl ImageRef {
    /// Whether a request may name this image: `host` or a registered image's name,
    /// never a host path. The error names the `image` field and says what to do.
    pub fn check_requested(&self) -> Result<(), String> {
        match self {
            ImageRef::Dir(p) => Err(format!(
                "image: 'dir:{p}' is refused: host directories are not images; an admin registers a directory or tarball \
                 with `hangar image add NAME --dir PATH` (or `--tar FILE`), then instances name it (--image NAME)"
            )),
            _ => Ok(()),
        }
    }
}

impl std::str::FromStr for ImageRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "host" {
            return Ok(ImageRef::Host);
        }
        if let Some(p) = s.strip_prefix("dir:") {
            if p.starts_with('/') && !p.split('/').any(|c| c == "..") {
                return Ok(ImageRef::Dir(p.to_string()));
            }
            return Err(format!("image '{s}': a dir: image needs an absolute path without '..', e.g. dir:/srv/rootfs"));
        }
        s.parse::<Name>().map(ImageRef::Named).map_err(|_| format!("image '{s}' is not known: use 'host' or the name of a registered image (`hangar image list`)"))
    }
}

impl TryFrom<String> for ImageRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ImageRef> for String {
    fn from(i: ImageRef) -> String {
        match i {
            ImageRef::Host => "host".into(),
            ImageRef::Named(n) => n.to_string(),
            ImageRef::Dir(p) => format!("dir:{p}"),
        }
    }
}

/// What to run and with how much.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
// Part of the hub-agent protocol: unknown fields (a newer peer's optional ones) are ignored.
pub struct InstanceSpec {
    /// `host` or the name of a registered image.
    #[schema(value_type = String, example = "host")]
    pub image: ImageRef,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub disk_mib: u64,
    /// The workload's command line; empty means `sleep infinity`.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secrets of the tenant it sees read-only at `/run/secrets/<name>` (see
    /// [`crate::access`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Name>,
}

impl InstanceSpec {
    /// Checks the bounds a host cannot enforce meaningfully; names the field and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.vcpus == 0 || self.vcpus > 256 {
            return Err(format!("vcpus must be between 1 and 256, got {}", self.vcpus));
        }
        if self.mem_mib < 16 || self.mem_mib > 1 << 20 {
            return Err(format!("mem_mib must be between 16 and 1048576, got {}", self.mem_mib));
        }
        if self.disk_mib < 16 || self.disk_mib > 1 << 24 {
            return Err(format!("disk_mib must be between 16 and 16777216, got {}", self.disk_mib));
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(format!("env name '{k}' is invalid: names must be non-empty without '=' or NUL"));
            }
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err("command arguments must not contain NUL bytes".into());
        }
        if let Some(k) = self.env.iter().find_map(|(k, v)| v.contains('\0').then_some(k)) {
            return Err(format!("env value of '{k}' contains a NUL byte, which no environment can hold"));
        }
        crate::access::check_secret_names(&self.secrets)?;
        Ok(())
    }
}

/// A new instance. The spec fields are spelled out rather than flattened so that
/// unknown fields are rejected and every error names its field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceCreate {
    pub name: Name,
    /// `host` or the name of a registered image.
    #[schema(value_type = String, example = "host")]
    pub image: ImageRef,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub disk_mib: u64,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Start right after creation.
    #[serde(default)]
    pub start: bool,
    /// Place it on this host (which must be ready and have room) instead of letting
    /// the scheduler choose.
    #[serde(default)]
    pub host: Option<Name>,
    /// Secrets of the tenant it sees at `/run/secrets/<name>`; each must exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Name>,
}

impl PoolCreate {
    /// A pool of `spec`'s members held at `counts`.
    pub fn new(name: Name, role: Name, spec: InstanceSpec, counts: PoolCounts) -> Self {
        PoolCreate { name, role, image: spec.image, vcpus: spec.vcpus, mem_mib: spec.mem_mib, disk_mib: spec.disk_mib, command: spec.command, env: spec.env, counts, secrets: spec.secrets }
    }
}

impl InstanceCreate {
    pub fn new(name: Name, spec: InstanceSpec, start: bool) -> Self {
        InstanceCreate {
            name,
            image: spec.image,
            vcpus: spec.vcpus,
            mem_mib: spec.mem_mib,
            disk_mib: spec.disk_mib,
            command: spec.command,
            env: spec.env,
            start,
            host: None,
            secrets: spec.secrets,
        }
    }

    pub fn spec(&self) -> InstanceSpec {
        InstanceSpec {
            image: self.image.clone(),
            vcpus: self.vcpus,
            mem_mib: self.mem_mib,
            disk_mib: self.disk_mib,
            command: self.command.clone(),
            env: self.env.clone(),
            secrets: self.secrets.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Instance {
    pub id: InstanceId,
    pub tenant: Name,
    pub name: Name,
    pub spec: InstanceSpec,
    /// The host it is placed on.
    pub host: Option<Name>,
    pub state: InstanceState,
    pub desired: DesiredState,
    pub observed: ObservedState,
    /// Bumped on every change of desired state; hosts report which generation they acted on.
    #[schema(value_type = i64)]
    pub generation: Generation,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Its address on the tenant network; kept for the instance's whole life.
    #[schema(value_type = Option<String>, example = "10.240.1.2")]
    pub address: Option<std::net::Ipv4Addr>,
    /// The pool it belongs to, if a pool made it.
    #[serde(default)]
    pub pool: Option<Name>,
    /// A manual request on a pool member holds off the pool's reconciler for this
    /// instance until then, so a user's action is not undone at once.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub held_until: Option<OffsetDateTime>,
    /// The host uids and gids its sandbox runs as (see [`crate::idmap`]): allocated once
    /// at create, kept for its life. A host-side detail, not part of the API.
    #[serde(skip)]
    pub ids: Option<crate::idmap::IdRange>,
}

/// How many members of a pool should be in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolCounts {
    #[serde(default)]
    pub running: u32,
    #[serde(default)]
    pub warm: u32,
    #[serde(default)]
    pub sleeping: u32,
}

impl PoolCounts {
    pub fn total(&self) -> u32 {
        self.running.saturating_add(self.warm).saturating_add(self.sleeping)
    }
}

/// The most members one pool may hold.
pub const MAX_POOL_SIZE: u32 = 10_000;

/// A new pool: the spec of its members, their role, and (optionally) initial counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolCreate {
    pub name: Name,
    /// What the members are for, e.g. `gateway` or `worker`.
    pub role: Name,
    #[schema(value_type = String, example = "host")]
    pub image: ImageRef,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub disk_mib: u64,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub counts: PoolCounts,
    /// Secrets of the tenant every member sees at `/run/secrets/<name>`; each must
    /// exist, and cannot be deleted while the pool names it (unless forced).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Name>,
}

impl PoolCreate {
    pub fn spec(&self) -> InstanceSpec {
        InstanceSpec {
            image: self.image.clone(),
            vcpus: self.vcpus,
            mem_mib: self.mem_mib,
            disk_mib: self.disk_mib,
            command: self.command.clone(),
            env: self.env.clone(),
            secrets: self.secrets.clone(),
        }
    }
}

/// A change of a pool's desired counts; absent counts stay as they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolScale {
    pub running: Option<u32>,
    pub warm: Option<u32>,
    pub sleeping: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pool {
    pub tenant: Name,
    pub name: Name,
    pub role: Name,
    pub spec: InstanceSpec,
    /// Desired counts.
    pub counts: PoolCounts,
    /// Why the last reconcile pass could not do everything (e.g. a quota), if it could not.
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// How many members are in each state (actual, as the hub records it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolTally {
    pub running: u32,
    pub warm: u32,
    pub sleeping: u32,
    /// Starting, stopping, created, stopped: on the way somewhere.
    pub pending: u32,
    pub failed: u32,
}

impl PoolTally {
    pub fn add(&mut self, s: InstanceState) {
        match s {
            InstanceState::Running => self.running += 1,
            InstanceState::Warm => self.warm += 1,
            InstanceState::Sleeping => self.sleeping += 1,
            InstanceState::Failed => self.failed += 1,
            InstanceState::Deleted => {}
            _ => self.pending += 1,
        }
    }
}

/// A pool with its actual state: desired vs actual, in total and per host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolInfo {
    pub pool: Pool,
    pub actual: PoolTally,
    /// Per host name.
    pub hosts: BTreeMap<String, PoolTally>,
    /// Every desired count is met by confirmed members and nothing is pending.
    pub converged: bool,
    /// What the reconcile pass run by this request did (empty for reads).
    #[serde(default)]
    pub actions: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OperationStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl OperationStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, OperationStatus::Running)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::Running => "running",
            OperationStatus::Succeeded => "succeeded",
            OperationStatus::Failed => "failed",
            OperationStatus::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for OperationStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "running" => OperationStatus::Running,
            "succeeded" => OperationStatus::Succeeded,
            "failed" => OperationStatus::Failed,
            "cancelled" => OperationStatus::Cancelled,
            _ => return Err(format!("unknown operation status '{s}'")),
        })
    }
}

/// Anything slower than a moment: the API answers 202 with one of these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Operation {
    pub id: OperationId,
    /// e.g. `instance.start`.
    pub kind: String,
    pub tenant: Option<Name>,
    /// What it acts on, e.g. `acme/web`.
    pub target: String,
    pub instance_id: Option<InstanceId>,
    /// The instance state that completes it.
    pub target_state: Option<InstanceState>,
    pub status: OperationStatus,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// How far a multi-step operation got (`tenant.destroy`: its pools and instances
    /// removed); none for one-step operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<OperationProgress>,
}

impl Operation {
    /// A running operation on no one instance (a backup, a tenant destroy), made now.
    pub fn running(kind: &str, tenant: Option<Name>, target: String) -> Operation {
        let now = OffsetDateTime::now_utc();
        Operation {
            id: OperationId::new(),
            kind: kind.to_string(),
            tenant,
            target,
            instance_id: None,
            target_state: None,
            status: OperationStatus::Running,
            error: None,
            created_at: now,
            updated_at: now,
            progress: None,
        }
    }
}

/// Steps done of a multi-step operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OperationProgress {
    pub done: u32,
    pub total: u32,
    /// What is counted, e.g. `pools and instances removed`.
    pub what: String,
}

/// Who did what to which object, when, and how it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// `admin`, `tenant:acme`, `host:node-a` or `hub`.
    pub actor: String,
    pub tenant: Option<Name>,
    /// e.g. `instance/acme/web`.
    pub object: String,
    /// e.g. `instance.start`.
    pub action: String,
    /// `ok`, `accepted`, `error`.
    pub result: String,
    pub message: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    Joining,
    Ready,
    /// Keeps what it runs; gets nothing new, and pools move their members off it.
    Draining,
    /// No report within the stale threshold: its instances are `unknown`, kept.
    Stale,
    /// Silent for much longer, confirmed several times.
    Offline,
    /// Its agent and instances were stopped on purpose (`hangar host stop`).
    Stopped,
    /// Its provider no longer has it (confirmed several times after a grace window).
    Missing,
    Removed,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Joining => "joining",
            HostState::Ready => "ready",
            HostState::Draining => "draining",
            HostState::Stale => "stale",
            HostState::Offline => "offline",
            HostState::Stopped => "stopped",
            HostState::Missing => "missing",
            HostState::Removed => "removed",
        }
    }
}

impl std::str::FromStr for HostState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "joining" => HostState::Joining,
            "ready" => HostState::Ready,
            "draining" => HostState::Draining,
            "stale" => HostState::Stale,
            "offline" => HostState::Offline,
            "stopped" => HostState::Stopped,
            "missing" => HostState::Missing,
            "removed" => HostState::Removed,
            _ => return Err(format!("unknown host state '{s}'")),
        })
    }
}

/// What a host can hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
// Part of the hub-agent protocol: unknown fields (a newer peer's optional ones) are ignored.
pub struct Capacity {
    pub vcpus: u32,
    pub mem_mib: u64,
    pub disk_mib: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Host {
    pub id: HostId,
    pub name: Name,
    pub state: HostState,
    pub capacity: Capacity,
    /// The agent's mTLS endpoint for exec, logs and stats.
    pub endpoint: Option<String>,
    /// Drivers the agent has, e.g. `runtime=runc`, `volume=btrfs`.
    pub drivers: Vec<String>,
    pub agent_version: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_heartbeat: Option<OffsetDateTime>,
    pub instances: u32,
    /// Instances holding CPU and memory there (starting, running, warm).
    #[serde(default)]
    pub active: u32,
    /// The provider that made the host (`local`), or none for a host joined by hand.
    #[serde(default)]
    pub provider: Option<String>,
    /// SHA-256 fingerprint of the host's current certificate (none before it joined).
    #[serde(default)]
    pub cert_fingerprint: Option<String>,
    /// A `host rotate-cert` the agent has not completed yet (it has not used a new
    /// certificate since).
    #[serde(default)]
    pub cert_rotation_pending: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostAdd {
    pub name: Name,
    /// Have a provider make the host (`local`: a network namespace, data dir and agent
    /// process on the hub's machine). Without one, the answer is a join token for an
    /// agent started by hand.
    #[serde(default)]
    pub provider: Option<String>,
    /// Seconds the join token works (default: the hub's, one hour).
    #[serde(default)]
    #[schema(minimum = 60, maximum = 2592000)]
    pub join_ttl_secs: Option<u64>,
}

/// What a host's agent says about itself (`GET /v1/hosts/{name}/status`, read live
/// from the agent over mTLS).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    pub host: String,
    pub hostname: String,
    pub kernel: String,
    pub agent_version: String,
    pub uptime_secs: u64,
    pub load: [f64; 3],
    pub mem_total_mib: u64,
    pub mem_available_mib: u64,
    pub capacity: Capacity,
    pub drivers: Vec<String>,
    /// The desired-state generation the agent converged to last.
    #[schema(value_type = i64)]
    pub generation: Generation,
    pub instances: Vec<NodeInstance>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeInstance {
    pub id: InstanceId,
    pub tenant: Name,
    pub name: Name,
    pub desired: DesiredState,
    pub observed: ObservedState,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
}

/// Answer to `host add`: the one-time token an agent joins with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostJoinToken {
    pub host: Host,
    /// `hjt1.<secret>.<ca-sha256>`: single use; pins the hub's CA.
    pub join_token: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// The tenant the token is scoped to; absent means an admin token.
    #[serde(default)]
    pub tenant: Option<Name>,
    /// What it may do; absent: `admin` without a tenant, `tenant` with one. `viewer` is
    /// read-only, over every tenant or over its tenant.
    #[serde(default)]
    pub role: Option<TokenRole>,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub description: Option<String>,
    /// Seconds the token works; absent: until revoked.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 315360000)]
    pub ttl_secs: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenCreated {
    #[schema(value_type = String)]
    pub id: TokenId,
    pub tenant: Option<Name>,
    pub role: TokenRole,
    /// Shown once; the hub keeps only its hash.
    pub token: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// What a token may do. `admin`: everything; `tenant`: everything within its tenant;
/// `viewer`: read-only (every GET within its scope but workload files and backup keys;
/// no change, exec, session or proxy), over every tenant or over its tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    Admin,
    Tenant,
    Viewer,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::Tenant => "tenant",
            TokenRole::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for TokenRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(TokenRole::Admin),
            "tenant" => Ok(TokenRole::Tenant),
            "viewer" => Ok(TokenRole::Viewer),
            other => Err(format!("unknown token role '{other}': admin, tenant or viewer")),
        }
    }
}

/// An API token as `token list` shows it: never the secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Token {
    #[schema(value_type = String)]
    pub id: TokenId,
    /// None: admin scope.
    pub tenant: Option<Name>,
    pub role: TokenRole,
    pub description: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    #[schema(min_items = 1)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Seconds before the command is killed.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The output was longer than the host keeps ([`EXEC_OUTPUT_MAX_BYTES`] per stream)
    /// and was cut.
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceStats {
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub pids: u64,
    pub pids_limit: u64,
    pub disk_used_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceLogs {
    pub lines: Vec<String>,
    /// Where these lines end: pass it back as `after` to get the lines written since
    /// (`instance logs --follow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// More lines were asked than fit in one answer ([`LOGS_MAX_BYTES`]): the oldest
    /// were left out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HubInfo {
    pub version: String,
    pub api_version: String,
    pub protocol_version: u32,
}

/// Query of list and wait endpoints.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait for the operation to finish (max 300).
    pub timeout: Option<u64>,
}

// --- Exec and logs limits (issue 12) ---

/// What one stream (stdout or stderr) of an exec keeps; the rest is dropped and the
/// result says `truncated`.
pub const EXEC_OUTPUT_MAX_BYTES: usize = 1 << 20;
/// What one logs answer carries at most, whatever number of lines was asked.
pub const LOGS_MAX_BYTES: usize = 1 << 20;
/// The most lines one logs answer asks for.
pub const LOGS_MAX_LINES: u32 = 10_000;
/// The longest a logs call waits for new lines (`after` with `wait`).
pub const LOGS_MAX_WAIT_SECS: u64 = 30;

impl ExecRequest {
    /// Checks what no host could run: an empty command, NUL bytes (which no argv or
    /// environment can hold), bad env names, a timeout of zero or above `max_timeout_secs`.
    /// Names the field.
    pub fn validate(&self, max_timeout_secs: u64) -> Result<(), String> {
        if self.command.is_empty() {
            return Err("command is empty: give the command to run, e.g. -- sh -c 'echo hi'".into());
        }
        if let Some(i) = self.command.iter().position(|a| a.contains('\0')) {
            return Err(format!("command[{i}] contains a NUL byte, which no command line can hold"));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(format!("env name {k:?} is invalid: names must be non-empty without '=' or NUL"));
            }
            if v.contains('\0') {
                return Err(format!("env value of {k:?} contains a NUL byte, which no environment can hold"));
            }
        }
        match self.timeout_secs {
            Some(0) => Err("timeout_secs must be at least 1".into()),
            Some(t) if t > max_timeout_secs => Err(format!("timeout_secs {t} is above the limit of {max_timeout_secs} seconds")),
            _ => Ok(()),
        }
    }
}

/// The query of a logs call (hub and agent alike).
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// How many of the last lines (default 100, at most 10000).
    pub tail: Option<u32>,
    /// The same as `tail` (its older name).
    pub lines: Option<u32>,
    /// A `cursor` of an earlier answer: only the lines written after it.
    pub after: Option<String>,
    /// With `after`: seconds to wait for new lines before answering empty (at most 30).
    pub wait: Option<u64>,
}

impl LogsQuery {
    /// The number of lines asked, within bounds.
    pub fn tail_lines(&self) -> u32 {
        self.tail.or(self.lines).unwrap_or(100).clamp(1, LOGS_MAX_LINES)
    }

    /// How long to wait for new lines, within bounds.
    pub fn wait_secs(&self) -> u64 {
        self.wait.unwrap_or(0).min(LOGS_MAX_WAIT_SECS)
    }
}

#[cfg(test)]
mod exec_and_logs_tests {
    use super::*;

    fn req(command: &[&str], env: &[(&str, &str)], timeout_secs: Option<u64>) -> ExecRequest {
        ExecRequest { command: command.iter().map(|s| s.to_string()).collect(), env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), timeout_secs }
    }

    #[test]
    fn exec_requests_are_checked_naming_the_field() {
        let cases: &[(ExecRequest, Option<&str>)] = &[
            (req(&["true"], &[], None), None),
            (req(&["true"], &[("K", "v")], Some(3600)), None),
            (req(&[], &[], None), Some("command is empty")),
            (req(&["echo", "a\0b"], &[], None), Some("command[1] contains a NUL byte")),
            (req(&["true"], &[("K", "a\0")], None), Some("env value of \"K\" contains a NUL byte")),
            (req(&["true"], &[("K\0", "v")], None), Some("env name \"K\\0\" is invalid")),
            (req(&["true"], &[("A=B", "v")], None), Some("env name \"A=B\" is invalid")),
            (req(&["true"], &[], Some(0)), Some("timeout_secs must be at least 1")),
            (req(&["true"], &[], Some(1_000_000_000_000)), Some("timeout_secs 1000000000000 is above the limit of 3600 seconds")),
            (req(&["true"], &[], Some(u64::MAX)), Some("timeout_secs 18446744073709551615 is above")),
        ];
        for (r, want) in cases {
            match (r.validate(3600), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => assert!(e.starts_with(w), "{r:?}: got {e:?}, want {w:?}"),
                (got, want) => panic!("{r:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn logs_queries_stay_within_bounds() {
        let q = |tail, lines, wait| LogsQuery { tail, lines, after: None, wait };
        assert_eq!(q(None, None, None).tail_lines(), 100);
        assert_eq!(q(Some(5), Some(7), None).tail_lines(), 5);
        assert_eq!(q(None, Some(7), None).tail_lines(), 7);
        assert_eq!(q(Some(0), None, None).tail_lines(), 1);
        assert_eq!(q(Some(u32::MAX), None, None).tail_lines(), LOGS_MAX_LINES);
        assert_eq!(q(None, None, Some(u64::MAX)).wait_secs(), LOGS_MAX_WAIT_SECS);
    }
}

// ---- images (registered by admins) ----

/// What a registered image is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// A directory holding a root filesystem, used read-only.
    Dir,
    /// A tarball of a root filesystem, extracted once per host (checked by its sha256).
    Tar,
}

impl ImageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Dir => "dir",
            ImageKind::Tar => "tar",
        }
    }
}

impl std::str::FromStr for ImageKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dir" => Ok(ImageKind::Dir),
            "tar" => Ok(ImageKind::Tar),
            _ => Err(format!("unknown image kind '{s}': dir or tar")),
        }
    }
}

/// A new image (admins only). `path` is absolute and is the same on every host: the hub
/// checks it on its own machine when registering, each host when it first uses it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageCreate {
    pub name: Name,
    pub kind: ImageKind,
    /// Absolute, without `..` components; the same on every host.
    #[schema(pattern = "^(/(|\\.|\\.\\.[^/]+|\\.[^./][^/]*|[^./][^/]*))+$")]
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Image {
    pub name: Name,
    pub kind: ImageKind,
    pub path: String,
    /// Of the tarball (hex); none for a directory.
    pub sha256: Option<String>,
    /// The tarball's size, or the total size of the directory's files.
    pub size_bytes: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod image_tests {
    use super::*;

    #[test]
    fn image_refs_parse_and_only_host_and_names_may_be_requested() {
        assert_eq!("host".parse::<ImageRef>().unwrap(), ImageRef::Host);
        assert_eq!("alpine".parse::<ImageRef>().unwrap(), ImageRef::Named("alpine".parse().unwrap()));
        let dir: ImageRef = "dir:/etc".parse().unwrap();
        let e = dir.check_requested().unwrap_err();
        assert!(e.starts_with("image: ") && e.contains("hangar image add"), "{e}");
        assert!(ImageRef::Host.check_requested().is_ok());
        assert!("Not A Name".parse::<ImageRef>().unwrap_err().contains("hangar image list"));
        assert!("dir:../x".parse::<ImageRef>().is_err());
        for s in ["host", "alpine", "dir:/srv/root"] {
            assert_eq!(String::from(s.parse::<ImageRef>().unwrap()), s);
        }
    }
}

/// A snapshot of an instance's volume: read-only, on the instance's host, counted
/// against the tenant's disk quota by the bytes only it holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Snapshot {
    /// `tenant/instance`.
    pub instance: String,
    pub name: Name,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Bytes it refers to; none until its host has measured it.
    pub referenced_bytes: Option<u64>,
    /// Bytes only it holds (what deleting it frees); none until measured.
    pub exclusive_bytes: Option<u64>,
    /// Taken by the instance's snapshot schedule (and pruned by its retention).
    pub scheduled: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    /// 1-63 of a-z, 0-9 and '-', starting with a letter; not starting with `auto-` or
    /// `bk-` (hangar's own). Default: `snap-YYYYMMDD-HHMMSS` (UTC).
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRestore {
    /// Restore even if the instance runs: it is stopped, restored and started again.
    #[serde(default)]
    pub force: bool,
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SnapshotRestored {
    pub snapshot: Snapshot,
    /// The instance ran: it was stopped for the restore and started again.
    pub restarted: bool,
    /// The start that follows a forced restore, to wait on.
    pub operation: Option<Operation>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotScheduleSet {
    /// `hourly`, `daily` or `every=<n>m|h|d` (at least 1m), optionally `,keep=N`
    /// (1-1000; default 24 hourly, 7 daily, 10 otherwise); `off` clears it.
    #[schema(example = "hourly,keep=24")]
    pub schedule: String,
}

/// An instance's snapshot schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SnapshotScheduleInfo {
    /// `tenant/instance`.
    pub instance: String,
    /// In the syntax it is set with; none when off.
    pub schedule: Option<String>,
}

// ---- SSH keys (the SSH gateway) ----

/// A public key a tenant registered for `ssh TENANT.INSTANCE@HUB`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SshKey {
    #[schema(value_type = String)]
    pub tenant: Name,
    #[schema(value_type = String)]
    pub name: Name,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, ...
    pub algorithm: String,
    /// The key's type and base64 blob, as in an authorized_keys line (no comment).
    pub public_key: String,
    /// `SHA256:<base64>`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The comment of the line it was added from.
    #[serde(default)]
    pub comment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// `POST /v1/tenants/{tenant}/ssh-keys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SshKeyAdd {
    /// One OpenSSH public key line (`ssh-ed25519 AAAA... comment`), at most
    /// [`SSH_KEY_MAX_BYTES`] bytes.
    pub public_key: String,
    /// A name for it (default: `key-` and the start of its fingerprint in hex).
    #[serde(default)]
    pub name: Option<String>,
}

/// The longest public key line accepted (a 16384-bit RSA key is about 2.8 KiB).
pub const SSH_KEY_MAX_BYTES: usize = 8192;

/// `GET /v1/ssh`: the SSH gateway, as clients need it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SshGateway {
    /// Whether this hub runs a gateway.
    pub enabled: bool,
    /// Its TCP port (on the hub's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Its host key, `TYPE BASE64`, for known_hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// `SHA256:...` of the host key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}
