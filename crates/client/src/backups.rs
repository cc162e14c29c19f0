//! Backup calls: the API of targets, backups, restores and purges (users), and the
//! agent's backup jobs (the hub).

use crate::{q, AgentClient, HubClient, Result};
use hangar_backup::wire::{JobRequest, JobStatus};
use hangar_backup::FileEntry;
use hangar_types::api::Operation;
use hangar_types::backups::*;
use hangar_types::OperationId;
use std::time::Duration;

/// A file index can be large (100,000 entries are ~15 MB of JSON).
const MAX_INDEX_BODY: usize = 512 << 20;

impl HubClient {
    pub async fn backup_target_add(&self, req: &BackupTargetAdd) -> Result<BackupTarget> {
        // The preflight writes, reads, lists and deletes a probe: give it time.
        self.t.call(reqwest::Method::POST, "/v1/backup-targets", Some(req), Some(Duration::from_secs(120))).await
    }
    pub async fn backup_target_list(&self) -> Result<Vec<BackupTarget>> {
        self.t.get("/v1/backup-targets").await
    }
    pub async fn backup_target_remove(&self, name: &str) -> Result<BackupTarget> {
        self.t.delete(&format!("/v1/backup-targets/{name}")).await
    }
    pub async fn backup_target_check(&self, name: &str) -> Result<BackupTarget> {
        self.t.call::<(), _>(reqwest::Method::POST, &format!("/v1/backup-targets/{name}/check"), None, Some(Duration::from_secs(120))).await
    }
    pub async fn backup_target_set(&self, tenant: &str, req: &BackupTargetSet) -> Result<BackupSettings> {
        self.t.call(reqwest::Method::PUT, &format!("/v1/tenants/{tenant}/backup-target"), Some(req), None).await
    }
    pub async fn backup_policy_set(&self, tenant: &str, req: &BackupPolicy) -> Result<BackupSettings> {
        self.t.call(reqwest::Method::PUT, &format!("/v1/tenants/{tenant}/backup-policy"), Some(req), None).await
    }
    pub async fn backup_settings(&self, tenant: &str) -> Result<BackupSettings> {
        self.t.get(&format!("/v1/tenants/{tenant}/backup-settings")).await
    }
    pub async fn backup_key(&self, tenant: &str) -> Result<BackupKey> {
        self.t.get(&format!("/v1/tenants/{tenant}/backup-key")).await
    }
    pub async fn backup_create(&self, tenant: &str, instance: &str) -> Result<Operation> {
        self.t.call::<(), _>(reqwest::Method::POST, &format!("/v1/tenants/{tenant}/instances/{instance}/backups"), None, None).await
    }
    pub async fn backup_list(&self, tenant: &str, instance: &str) -> Result<Vec<Backup>> {
        self.t.get(&format!("/v1/tenants/{tenant}/instances/{instance}/backups")).await
    }
    pub async fn backup_files(&self, tenant: &str, instance: &str, backup: &str, path: &str) -> Result<Vec<BackupFile>> {
        self.t.get(&format!("/v1/tenants/{tenant}/instances/{instance}/backups/{backup}/files?path={}", q(path))).await
    }
    pub async fn backup_find(&self, tenant: &str, instance: &str, name: &str) -> Result<Vec<BackupFound>> {
        self.t.get(&format!("/v1/tenants/{tenant}/instances/{instance}/backup-files?name={}", q(name))).await
    }
    pub async fn backup_restore(&self, tenant: &str, instance: &str, req: &BackupRestore) -> Result<Operation> {
        self.t.post(&format!("/v1/tenants/{tenant}/instances/{instance}/backups/restore"), req).await
    }
    pub async fn backup_check(&self, tenant: &str, instance: &str, req: &BackupCheck) -> Result<Operation> {
        self.t.post(&format!("/v1/tenants/{tenant}/instances/{instance}/backups/check"), req).await
    }
    pub async fn backup_purge_schedule(&self, tenant: &str, instance: &str) -> Result<BackupPurge> {
        self.t.call::<(), _>(reqwest::Method::POST, &format!("/v1/tenants/{tenant}/instances/{instance}/backups/purge"), None, None).await
    }
    pub async fn backup_purge_list(&self) -> Result<Vec<BackupPurge>> {
        self.t.get("/v1/backup-purges").await
    }
    pub async fn backup_purge_cancel(&self, tenant: &str, instance: &str) -> Result<BackupPurge> {
        self.t.delete(&format!("/v1/tenants/{tenant}/backup-purges/{instance}")).await
    }
    pub async fn backup_progress(&self, id: OperationId) -> Result<BackupProgress> {
        self.t.get(&format!("/v1/backup-operations/{id}")).await
    }
    pub async fn backup_cancel(&self, id: OperationId) -> Result<BackupProgress> {
        self.t.call::<(), _>(reqwest::Method::POST, &format!("/v1/backup-operations/{id}/cancel"), None, None).await
    }
}

impl AgentClient {
    pub async fn backup_job_start(&self, req: &JobRequest) -> Result<JobStatus> {
        self.t.call(reqwest::Method::POST, "/v1/backup-jobs", Some(req), Some(Duration::from_secs(30))).await
    }
    pub async fn backup_job(&self, id: &str) -> Result<JobStatus> {
        self.t.call::<(), _>(reqwest::Method::GET, &format!("/v1/backup-jobs/{id}"), None, Some(Duration::from_secs(20))).await
    }
    /// The job's status once it ends, or after `wait` (a long-poll; at most 10 s).
    pub async fn backup_job_wait(&self, id: &str, wait: Duration) -> Result<JobStatus> {
        self.t.call::<(), _>(reqwest::Method::GET, &format!("/v1/backup-jobs/{id}?wait_ms={}", wait.as_millis()), None, Some(Duration::from_secs(20) + wait)).await
    }
    pub async fn backup_job_files(&self, id: &str) -> Result<Vec<FileEntry>> {
        self.t.call_capped::<(), _>(reqwest::Method::GET, &format!("/v1/backup-jobs/{id}/files"), None, Some(Duration::from_secs(300)), MAX_INDEX_BODY).await
    }
    pub async fn backup_job_cancel(&self, id: &str) -> Result<JobStatus> {
        self.t.call::<(), _>(reqwest::Method::POST, &format!("/v1/backup-jobs/{id}/cancel"), None, Some(Duration::from_secs(20))).await
    }
    pub async fn backup_job_forget(&self, id: &str) -> Result<JobStatus> {
        self.t.call::<(), _>(reqwest::Method::DELETE, &format!("/v1/backup-jobs/{id}"), None, Some(Duration::from_secs(20))).await
    }
}
