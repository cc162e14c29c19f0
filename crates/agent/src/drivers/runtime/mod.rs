//! Sandbox runtimes behind one narrow trait. `oci::OciRuntime` drives runc or crun with an
//! OCI bundle built by [`bundle`]; a new runtime (e.g. a VM monitor) is a new file that
//! implements [`Runtime`] and one line in [`RUNTIMES`].

pub mod bundle;
pub mod logs;
mod oci;
pub mod seccomp;

use crate::identity::AgentPaths;
pub use logs::LogLimits;
use hangar_types::api::{ExecRequest, ExecResult, ImageRef, InstanceStats};
use hangar_types::SandboxId;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One runtime driver an agent can be started with.
pub struct RuntimeDriverInfo {
    /// What `--runtime` takes and reports show (`runtime=<name>`).
    pub name: &'static str,
    /// The driver over an agent dir's runtime state, keeping workload logs within the
    /// limits. Makes nothing on disk, so teardown and inventory can open it too.
    pub open: fn(&AgentPaths, LogLimits) -> Arc<dyn Runtime>,
}

/// Whether this host mounts the cgroup v2 unified hierarchy at /sys/fs/cgroup.
fn unified_cgroups() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Every runtime driver, the default first.
pub static RUNTIMES: &[RuntimeDriverInfo] = &[
    RuntimeDriverInfo { name: "runc", open: oci::open_runc },
    RuntimeDriverInfo { name: "crun", open: oci::open_crun },
];

/// Where a sandbox's memory cgroup is (every runtime puts sandboxes under `/hangar/<id>`,
/// see [`bundle`]): the unified hierarchy's, or cgroup v1's memory controller's.
pub fn memory_cgroup(id: &SandboxId) -> PathBuf {
    if unified_cgroups() {
        PathBuf::from(format!("/sys/fs/cgroup/hangar/{id}"))
    } else {
        PathBuf::from(format!("/sys/fs/cgroup/memory/hangar/{id}"))
    }
}

/// What a sandbox is, as the runtime reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxStatus {
    Created,
    Running,
    Paused,
    Stopped,
}

/// Everything needed to start one sandbox.
#[derive(Clone, Debug)]
pub struct SandboxSpec {
    /// Container id (and cgroup, bundle and log name).
    pub id: SandboxId,
    pub image: ImageRef,
    /// The instance's volume, bind-mounted read-write at /home.
    pub home_dir: PathBuf,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub pids_limit: u64,
    /// Empty means `sleep infinity`.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub hostname: String,
    /// The workload's stdout and stderr are appended here (capped and rotated, see
    /// [`logs`]).
    pub log_path: PathBuf,
    /// The host ids root and every other id inside map to (its user namespace).
    pub ids: hangar_types::idmap::IdRange,
    /// Mounted read-only at /run/secrets when the instance names secrets
    /// (`crate::secrets`).
    pub secrets_dir: Option<PathBuf>,
    /// Pinned namespaces to join (mapped to `ids`, made by the network driver off the
    /// start path); None makes new user and network namespaces (loopback only).
    pub join: Option<JoinNamespaces>,
}

/// A user namespace and a network namespace it owns, bind-mounted at these paths, that
/// a sandbox joins instead of making its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinNamespaces {
    pub user: PathBuf,
    pub net: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no sandbox '{0}'")]
    NotFound(String),
    #[error("{runtime} {action} {id} failed: {stderr}")]
    Command { runtime: &'static str, action: &'static str, id: String, stderr: String },
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare the bundle of {id}: {detail}")]
    Bundle { id: String, detail: String },
    #[error("command in {id} did not finish within {secs}s and was killed")]
    ExecTimeout { id: String, secs: u64 },
    #[error("unexpected answer from {runtime} {action}: {detail}")]
    Parse { runtime: &'static str, action: &'static str, detail: String },
}

#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    fn name(&self) -> &'static str;
    /// Builds the bundle and starts the sandbox detached (one `run -d`), in the
    /// namespaces of [`SandboxSpec::join`] when given. A running sandbox with this id is
    /// left alone; a stopped one is replaced.
    async fn start(&self, spec: &SandboxSpec) -> Result<(), RuntimeError>;
    /// None when the runtime knows no sandbox with this id.
    async fn status(&self, id: &SandboxId) -> Result<Option<SandboxStatus>, RuntimeError>;
    /// Every sandbox in this runtime's state root (entries that are no sandbox id,
    /// which hangar never makes, are skipped with a warning).
    async fn list(&self) -> Result<Vec<(SandboxId, SandboxStatus)>, RuntimeError>;
    /// Freezes it (cgroup freezer).
    async fn pause(&self, id: &SandboxId) -> Result<(), RuntimeError>;
    async fn resume(&self, id: &SandboxId) -> Result<(), RuntimeError>;
    /// SIGTERM, up to `grace`, SIGKILL, then deletes the sandbox and its bundle. Ok if absent.
    async fn stop(&self, id: &SandboxId, grace: Duration) -> Result<(), RuntimeError>;
    async fn exec(&self, id: &SandboxId, req: &ExecRequest) -> Result<ExecResult, RuntimeError>;
    async fn stats(&self, id: &SandboxId) -> Result<InstanceStats, RuntimeError>;
    /// Starts an interactive session's process in a running sandbox: its command and env
    /// through a private process file like [`Runtime::exec`], with a PTY (whose master
    /// end is returned) when `req.tty`, else with piped stdin, stdout and stderr.
    async fn session(&self, id: &SandboxId, req: &hangar_types::session::SessionRequest) -> Result<SessionProcess, RuntimeError>;
}

/// A session's process as [`Runtime::session`] started it. The runtime helper (`runc
/// exec`) waits for the process and exits with its status.
pub struct SessionProcess {
    pub child: tokio::process::Child,
    /// The PTY's master end, with a terminal.
    pub pty: Option<std::os::fd::OwnedFd>,
    /// Kills the process itself (killing the runtime helper would leave it running);
    /// its files go when this is dropped.
    pub files: Box<dyn SessionFiles>,
}

pub trait SessionFiles: Send + Sync {
    fn kill_process(&self);
}
