//! API documents of backups: targets, a tenant's backup settings, recorded backups and
//! their file index, restores, purges. The hub-agent job protocol is in
//! `hangar_backup::wire` (it carries the target's secrets, which never appear here).

use crate::api::Operation;
use crate::ids::InstanceId;
use crate::names::Name;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `POST /v1/backup-targets`. The S3 keys travel in this (TLS) body, read from files by
/// the CLI: never in argv.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupTargetAdd {
    pub name: Name,
    /// `dir:/absolute/path` or `s3://bucket/prefix`.
    #[schema(example = "s3://backups/hangar")]
    pub location: String,
    /// S3 only: `http(s)://host[:port]` of the S3 API.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub access_key: Option<String>,
    #[serde(default)]
    pub secret_key: Option<String>,
}

/// Never shows the secret key.
impl std::fmt::Debug for BackupTargetAdd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupTargetAdd").field("name", &self.name).field("location", &self.location).field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

/// A target as the API shows it: never its keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupTarget {
    pub name: Name,
    /// `dir:/srv/backups` or `s3://bucket/prefix at http://endpoint`.
    pub location: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// How often scheduled backups run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupSchedule {
    Hourly,
    Daily,
    Weekly,
}

impl BackupSchedule {
    pub fn every(self) -> time::Duration {
        match self {
            BackupSchedule::Hourly => time::Duration::hours(1),
            BackupSchedule::Daily => time::Duration::days(1),
            BackupSchedule::Weekly => time::Duration::weeks(1),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BackupSchedule::Hourly => "hourly",
            BackupSchedule::Daily => "daily",
            BackupSchedule::Weekly => "weekly",
        }
    }
}

impl std::str::FromStr for BackupSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hourly" => Ok(BackupSchedule::Hourly),
            "daily" => Ok(BackupSchedule::Daily),
            "weekly" => Ok(BackupSchedule::Weekly),
            _ => Err(format!("unknown schedule '{s}': use hourly, daily or weekly")),
        }
    }
}

/// The most backups one keep-* rule may keep (a count, not a size: 100,000 daily
/// backups are 273 years of them).
pub const KEEP_MAX: u32 = 100_000;

/// Which backups retention keeps, per instance (restic's keep-* rules).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupPolicy {
    #[serde(default)]
    pub keep_last: Option<u32>,
    #[serde(default)]
    pub keep_daily: Option<u32>,
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    #[serde(default)]
    pub keep_monthly: Option<u32>,
    /// Back up every instance of the tenant this often (none: only on request).
    #[serde(default)]
    pub schedule: Option<BackupSchedule>,
}

impl BackupPolicy {
    pub fn keeps_something(&self) -> bool {
        self.keep_last.is_some() || self.keep_daily.is_some() || self.keep_weekly.is_some() || self.keep_monthly.is_some()
    }
}

/// A tenant's backup settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupSettings {
    /// The target its backups go to; none: backups are off.
    pub target: Option<Name>,
    pub policy: BackupPolicy,
}

/// `PUT /v1/tenants/{tenant}/backup-target`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupTargetSet {
    /// None turns backups off for the tenant (recorded backups stay).
    pub target: Option<Name>,
}

/// One recorded backup (a restic snapshot) of an instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Backup {
    /// The restic snapshot id (hex); any unique prefix names it.
    pub id: String,
    pub tenant: Name,
    pub instance: Name,
    pub instance_id: InstanceId,
    pub target: Name,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Size of all files in it.
    pub bytes: u64,
    pub files: u64,
    pub dirs: u64,
    /// What it added to the repository after deduplication and compression.
    pub added_bytes: u64,
    /// The first host uid of the instance's id range when it was backed up (restores
    /// shift ownership from it to the destination's range).
    #[serde(skip)]
    pub id_base: Option<u32>,
}

/// The kind of an entry in a backup's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupFileKind {
    File,
    Dir,
    Symlink,
    Other,
}

impl BackupFileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupFileKind::File => "file",
            BackupFileKind::Dir => "dir",
            BackupFileKind::Symlink => "symlink",
            BackupFileKind::Other => "other",
        }
    }
}

impl std::str::FromStr for BackupFileKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "file" => BackupFileKind::File,
            "dir" => BackupFileKind::Dir,
            "symlink" => BackupFileKind::Symlink,
            "other" => BackupFileKind::Other,
            _ => return Err(format!("unknown file kind '{s}'")),
        })
    }
}

/// One entry of a backup's index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupFile {
    /// Relative to the volume's root, `/`-separated.
    pub path: String,
    pub size: u64,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub mtime: Option<OffsetDateTime>,
    pub kind: BackupFileKind,
}

/// A match of `backup find`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupFound {
    pub backup: String,
    #[serde(with = "time::serde::rfc3339")]
    pub backup_time: OffsetDateTime,
    pub file: BackupFile,
}

/// `POST .../backups/restore`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRestore {
    /// A backup id or a unique prefix of it.
    pub backup: String,
    /// Only this file or directory (relative to the volume's root).
    #[serde(default)]
    pub path: Option<String>,
    /// Restore into a new instance of this name (same tenant, same spec), made stopped.
    #[serde(default)]
    pub as_instance: Option<Name>,
    /// Restore into the instance even though it runs.
    #[serde(default)]
    pub force: bool,
}

/// `POST .../backups/check`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupCheck {
    /// Also read every pack and verify its data (reads the whole repository).
    #[serde(default)]
    pub read_data: bool,
}

/// A backup, restore or check operation with its progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupProgress {
    pub operation: Operation,
    pub files: u64,
    pub bytes: u64,
    pub total_bytes: Option<u64>,
    /// Bytes per second since the operation began.
    pub rate: u64,
    /// Whether a cancel was asked for.
    pub cancelling: bool,
}

/// The repository of a tenant's backups, as `restic -r` takes it, and its password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupKey {
    pub tenant: Name,
    pub target: Name,
    pub repository: String,
    pub password: String,
    /// S3 targets: what restic needs in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
}

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupKey").field("tenant", &self.tenant).field("repository", &self.repository).finish_non_exhaustive()
    }
}

/// The backups of a hard-deleted instance, due for removal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupPurge {
    pub tenant: Name,
    pub instance: Name,
    pub instance_id: InstanceId,
    pub target: Name,
    #[serde(with = "time::serde::rfc3339")]
    pub due_at: OffsetDateTime,
}

/// Largest number of matches `backup find` answers.
pub const FIND_LIMIT: u32 = 1000;
