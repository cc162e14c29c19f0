//! restic-format backups for hangar.
//!
//! hangar writes restic repositories (format version 2, compressed) with rustic_core, so
//! that users can read their backups with `restic` alone. Targets are a local directory
//! or an S3-compatible bucket (an OpenDAL operator with only its S3 service).
//!
//! **Everything here blocks**: rustic_core has a synchronous API and runs its own worker
//! threads. Async callers (the agent, the hub) run these calls on blocking threads
//! (`tokio::task::spawn_blocking`), never directly in an async task.
//!
//! - [`preflight`] checks a target (write, read, list, delete a probe).
//! - [`Repo`] opens or creates a repository and backs up, lists, restores, checks,
//!   forgets and purges.

mod operation;
mod preflight;
mod repo;
mod s3;
mod target;
pub mod wire;

pub use operation::{CancelToken, Progress};
pub use preflight::{PreflightError, ProbeStep, preflight};
pub use repo::{
    BackupSummary, CheckReport, FileEntry, FileKind, KeepPolicy, LsIter, Repo, RepoError,
    SnapshotInfo,
};
pub use target::{S3Options, Secret, TargetSpec, TargetSpecError};
