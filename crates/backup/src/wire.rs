//! The jobs a hub hands an agent (back up, restore, check a volume against a tenant's
//! repository) and what the agent answers. A job carries the repository password and
//! the target's keys for its duration only: the agent keeps them in memory while the
//! job runs and never writes them down.

use serde::{Deserialize, Serialize};

use crate::{BackupSummary, CheckReport, Progress, Secret, TargetSpec};

/// `POST /v1/backup-jobs` on the agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The hub's operation id: names the job and its temporary snapshot.
    pub id: String,
    pub target: TargetSpec,
    /// The tenant's repository within the target.
    pub repo_path: String,
    pub password: Secret,
    /// The repository's master key, unlocked by the hub (`Repo::unlock`), so the agent
    /// skips the password's key derivation; absent for a repository not made yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<Secret>,
    pub kind: JobKind,
}

/// A host uid/gid range: `base` is root inside the sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdShift {
    pub from_base: u32,
    pub to_base: u32,
    pub size: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobKind {
    /// Back up the volume from a temporary read-only snapshot of it.
    /// `repair_index`: index the packs an interrupted backup left first (see
    /// `Repo::backup_after`); a hub that does not say so gets the safe answer, yes.
    Backup {
        volume: String,
        hostname: String,
        tags: Vec<String>,
        #[serde(default = "yes")]
        repair_index: bool,
    },
    /// Restore `snapshot` (or `path` in it) into the volume: its tree (or the directory
    /// at `path`, or the file at `path`) lands in `into` (relative to the volume's root).
    Restore { volume: String, snapshot: String, path: Option<String>, into: String, ids: Option<IdShift> },
    Check { read_data: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// Which step of a job failed, for the hub to answer with the right status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobFailure {
    /// The target failed its preflight (credentials, bucket, permissions, reachability).
    Preflight,
    WrongPassword,
    NotFound,
    TargetFull,
    Corrupted,
    Other,
}

/// `GET /v1/backup-jobs/{id}` on the agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: String,
    pub state: JobState,
    pub progress: Progress,
    pub failure: Option<JobFailure>,
    pub error: Option<String>,
    pub backup: Option<BackupSummary>,
    pub check: Option<CheckReport>,
}

fn yes() -> bool {
    true
}
