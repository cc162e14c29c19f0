//! What the store keeps about backups: targets (sealed by the hub), each tenant's
//! settings and sealed repository password, every recorded backup with its file index,
//! the progress of running backup operations, and purges scheduled by hard deletes.

use crate::Result;
use async_trait::async_trait;
use hangar_types::backups::{Backup, BackupFile, BackupFound, BackupPolicy, BackupPurge};
use hangar_types::{InstanceId, Name, OperationId};
use time::OffsetDateTime;

/// A backup target as stored: `sealed_spec` holds its keys, encrypted by the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupTargetRecord {
    pub name: Name,
    pub location: String,
    pub sealed_spec: String,
    pub created_at: OffsetDateTime,
}

/// A tenant's backup settings as stored (defaults if never set).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupSettingsRecord {
    pub target: Option<Name>,
    pub sealed_password: Option<String>,
    pub policy: BackupPolicy,
    /// When the schedule last started a backup of the tenant.
    pub last_run_at: Option<OffsetDateTime>,
}

/// Progress of a running backup operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupProgressRecord {
    pub files: u64,
    pub bytes: u64,
    pub total_bytes: Option<u64>,
    pub cancel_requested: bool,
    /// When the runner last wrote it (read only: writes set it to now).
    pub updated_at: Option<OffsetDateTime>,
}

#[async_trait]
pub trait BackupStore: Send + Sync {
    /// AlreadyExists if the name is taken.
    async fn insert_backup_target(&self, target: &BackupTargetRecord) -> Result<()>;
    async fn get_backup_target(&self, name: &Name) -> Result<Option<BackupTargetRecord>>;
    /// By name.
    async fn list_backup_targets(&self) -> Result<Vec<BackupTargetRecord>>;
    async fn delete_backup_target(&self, name: &Name) -> Result<bool>;
    /// Tenants whose settings name the target, by name.
    async fn backup_target_users(&self, name: &Name) -> Result<Vec<Name>>;

    /// Defaults when the tenant has none.
    async fn get_backup_settings(&self, tenant: &Name) -> Result<BackupSettingsRecord>;
    /// Every tenant with settings, by name.
    async fn list_backup_settings(&self) -> Result<Vec<(Name, BackupSettingsRecord)>>;
    async fn set_backup_target(&self, tenant: &Name, target: Option<&Name>) -> Result<()>;
    async fn set_backup_policy(&self, tenant: &Name, policy: &BackupPolicy) -> Result<()>;
    /// Stores `sealed` as the tenant's password unless it has one; returns the one
    /// stored, so concurrent first backups agree on one password.
    async fn init_backup_password(&self, tenant: &Name, sealed: &str) -> Result<String>;
    /// Sets `last_run_at` to `at` only if it is still `expected` (compare-and-swap, so one
    /// hub starts a scheduled run); whether it did.
    async fn mark_backup_run(&self, tenant: &Name, expected: Option<OffsetDateTime>, at: OffsetDateTime) -> Result<bool>;

    /// Records a backup and its whole index in one transaction: nothing half-recorded.
    /// AlreadyExists if the id is taken.
    async fn insert_backup(&self, backup: &Backup, files: &[BackupFile]) -> Result<()>;
    /// Of one instance (by name), oldest first.
    async fn list_backups(&self, tenant: &Name, instance: &Name) -> Result<Vec<Backup>>;
    /// Of one instance (by id), oldest first.
    async fn list_backups_of(&self, instance_id: InstanceId) -> Result<Vec<Backup>>;
    /// The backups of the instance whose id starts with `prefix`.
    async fn find_backups(&self, tenant: &Name, instance: &Name, prefix: &str) -> Result<Vec<Backup>>;
    /// Removes the backups and their index; how many backups went.
    async fn delete_backups(&self, ids: &[String]) -> Result<u64>;
    /// The entries directly in directory `dir` ('' for the root) of a backup, by name.
    async fn list_backup_files(&self, backup_id: &str, dir: &str) -> Result<Vec<BackupFile>>;
    async fn get_backup_file(&self, backup_id: &str, path: &str) -> Result<Option<BackupFile>>;
    /// Entries whose name matches `glob` (`*`, `?`, `[..]`) in any backup of the
    /// instance, newest backup first, at most `limit`.
    async fn find_backup_files(&self, tenant: &Name, instance: &Name, glob: &str, limit: u32) -> Result<Vec<BackupFound>>;

    /// Writes the progress of an operation (keeps a cancel request).
    async fn set_backup_progress(&self, op: OperationId, progress: &BackupProgressRecord) -> Result<()>;
    /// Asks the operation's runner to cancel it; false if it has no progress row.
    async fn request_backup_cancel(&self, op: OperationId) -> Result<bool>;
    async fn get_backup_progress(&self, op: OperationId) -> Result<Option<BackupProgressRecord>>;

    /// AlreadyExists if the instance already has one.
    async fn schedule_backup_purge(&self, purge: &BackupPurge) -> Result<()>;
    /// By due time.
    async fn list_backup_purges(&self) -> Result<Vec<BackupPurge>>;
    /// Removes the purge of an instance (cancel, or taken to run it); the one removed.
    async fn take_backup_purge(&self, tenant: &Name, instance: &Name) -> Result<Option<BackupPurge>>;
}
