//! Backups: targets, each tenant's repository (one per tenant and target, under
//! `tenants/<tenant>`), backup / restore / check operations run as jobs on the
//! instance's host, the file index of every backup, retention on a schedule and the
//! delayed purge of hard-deleted instances.
//!
//! Secrets (a target's S3 keys, a tenant's repository password) are sealed with
//! AES-256-GCM under the hub's `secrets.key` (the one sealing, in `secrets`) before they
//! reach the store, and leave the hub only in the body of an mTLS call to an agent for one job, or
//! to an admin asking for `backup key`. They are in no event, log or operation.

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::Hub;
use hangar_backup::wire::{IdShift, JobFailure, JobKind, JobRequest, JobState, JobStatus};
use hangar_backup::{FileKind, KeepPolicy, PreflightError, Repo, RepoError, S3Options, Secret, TargetSpec};
use hangar_client::{AgentClient, ClientError};
use hangar_store::{BackupProgressRecord, BackupTargetRecord};
use hangar_types::api::{Instance, InstanceCreate, Operation, OperationStatus};
use hangar_types::backups::*;
use hangar_types::{ErrorCode, InstanceState, Name, ObservedState, OperationId};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Master keys unlocked by this process, by repository location, with the password
/// that unlocked them (see `Hub::repo_key`).
static MASTER_KEYS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, (Secret, Secret)>>> = std::sync::LazyLock::new(Default::default);

/// Per repository location: backups that ended uncleanly (failed, cancelled, lost) since
/// this process started, and how many of them a repairing backup that succeeded had
/// seen when it started (see `needs_repair`).
static UNCLEAN: std::sync::LazyLock<std::sync::Mutex<UncleanEnds>> = std::sync::LazyLock::new(Default::default);
type UncleanEnds = std::collections::HashMap<String, (u64, Option<u64>)>;

/// How long one long-poll of a running job waits for its end; the job's progress (and a
/// cancel request) is relayed at least this often.
const JOB_WAIT: Duration = Duration::from_millis(500);
/// How long to wait before polling again after a failed poll, or for a created instance.
const POLL: Duration = Duration::from_millis(300);
/// Failed polls in a row (about 15 s) before the host counts as lost for the job.
const MAX_MISSED_POLLS: u32 = 50;
/// A running backup operation whose progress was not written for this long has no
/// runner any more (its hub died): it is failed.
const STALE_JOB: time::Duration = time::Duration::seconds(30);

/// What to do when a job succeeded.
enum Done {
    /// `repair`: (location, unclean count it started after) when it repairs the index.
    Backup { template: Box<Backup>, apply_policy: bool, repair: Option<(String, u64)> },
    Restore,
    Check,
}

fn repo_path(tenant: &Name) -> String {
    format!("tenants/{tenant}")
}

fn preflight_error(e: PreflightError) -> HubError {
    let code = match e {
        PreflightError::Unreachable { .. } => ErrorCode::Unavailable,
        _ => ErrorCode::InvalidArgument,
    };
    HubError::new(code, format!("target check failed: {e}"))
}

fn forbidden_as_not_found(p: &Principal, tenant: &Name) -> HubResult<()> {
    p.check_tenant(tenant).map_err(|_| HubError::not_found(format!("tenant '{tenant}' not found")))
}

impl Hub {
    // ---- sealing ----

    /// `plain` sealed with the hub's one sealing (see `secrets`), bound to `what` (so a
    /// sealed value cannot be moved to another row), as hex.
    fn seal(&self, what: &str, plain: &[u8]) -> HubResult<String> {
        Ok(hex::encode(self.seal_value(&format!("hangar-backup-v1\0{what}"), plain)?))
    }

    fn unseal(&self, what: &str, sealed: &str) -> HubResult<Vec<u8>> {
        let corrupt = || HubError::internal(format!("the sealed {what} cannot be opened (was the hub's secrets.key replaced?)"));
        let bytes = hex::decode(sealed).map_err(|_| corrupt())?;
        self.open_value(&format!("hangar-backup-v1\0{what}"), &bytes)?.ok_or_else(corrupt)
    }

    async fn target_spec(&self, name: &Name) -> HubResult<TargetSpec> {
        let rec = self.store.get_backup_target(name).await?.ok_or_else(|| HubError::not_found(format!("backup target '{name}' not found")))?;
        let plain = self.unseal(&format!("target:{name}"), &rec.sealed_spec)?;
        serde_json::from_slice(&plain).map_err(|e| HubError::internal(format!("backup target '{name}' is unreadable: {e}")))
    }

    /// The tenant's target and repository password (made on first use).
    async fn tenant_repo(&self, tenant: &Name) -> HubResult<(Name, TargetSpec, Secret)> {
        let settings = self.store.get_backup_settings(tenant).await?;
        let target = settings.target.ok_or_else(|| {
            HubError::new(ErrorCode::IllegalTransition, format!("tenant '{tenant}' has no backup target: set one with `hangar tenant update {tenant} --backup-target NAME`"))
        })?;
        let spec = self.target_spec(&target).await?;
        let what = format!("password:{tenant}");
        let sealed = match settings.sealed_password {
            Some(s) => s,
            None => {
                let password = hex::encode(rand::random::<[u8; 32]>());
                self.store.init_backup_password(tenant, &self.seal(&what, password.as_bytes())?).await?
            }
        };
        let password = String::from_utf8(self.unseal(&what, &sealed)?).map_err(|_| HubError::internal("the backup password is unreadable"))?;
        Ok((target, spec, Secret::new(password)))
    }

    /// The tenant's repository master key (`None` before its first backup), checked
    /// against the tenant's password before any job starts: a repository that exists
    /// under another key is refused here, before anything is written. Unlocked keys are
    /// kept in this process's memory, so the key derivation runs once per repository.
    async fn repo_key(&self, tenant: &Name, spec: &TargetSpec, password: &Secret) -> HubResult<Option<Secret>> {
        let location = spec.restic_location(&repo_path(tenant));
        if let Some((pw, key)) = MASTER_KEYS.lock().unwrap_or_else(|e| e.into_inner()).get(&location)
            && pw == password
        {
            return Ok(Some(key.clone()));
        }
        let (spec2, path, pw) = (spec.clone(), repo_path(tenant), password.clone());
        let unlocked = tokio::task::spawn_blocking(move || Repo::unlock(&spec2, &path, pw.expose())).await.map_err(|e| HubError::internal(e.to_string()))?;
        match unlocked {
            Ok(Some(key)) => {
                MASTER_KEYS.lock().unwrap_or_else(|e| e.into_inner()).insert(location, (password.clone(), key.clone()));
                Ok(Some(key))
            }
            Ok(None) => Ok(None),
            Err(RepoError::WrongPassword { location }) => Err(HubError::new(
                ErrorCode::IllegalTransition,
                format!("password: the repository {location} exists under another key than tenant '{tenant}'s; nothing was written. Give the tenant another target (`hangar tenant update {tenant} --backup-target NAME`) or move that repository away"),
            )),
            Err(e) => Err(HubError::new(ErrorCode::Unavailable, format!("target: cannot open the repository: {e}"))),
        }
    }

    // ---- targets ----

    pub async fn backup_target_add(&self, p: &Principal, req: BackupTargetAdd) -> HubResult<BackupTarget> {
        p.require_admin()?;
        let s3 = S3Options { endpoint: req.endpoint.clone(), region: req.region.clone(), access_key: req.access_key.clone(), secret_key: req.secret_key.clone().map(Secret::new) };
        let spec = TargetSpec::parse(&req.location, s3).map_err(|e| HubError::invalid(format!("location: {e}")))?;
        if self.store.get_backup_target(&req.name).await?.is_some() {
            return Err(HubError::new(ErrorCode::AlreadyExists, format!("backup target '{}' already exists", req.name)));
        }
        preflight(spec.clone()).await?;
        let json = serde_json::to_vec(&spec).map_err(|e| HubError::internal(e.to_string()))?;
        let rec = BackupTargetRecord { name: req.name.clone(), location: spec.to_string(), sealed_spec: self.seal(&format!("target:{}", req.name), &json)?, created_at: OffsetDateTime::now_utc() };
        self.store.insert_backup_target(&rec).await?;
        self.event(&p.actor(), None, format!("backup-target/{}", rec.name), "backup.target.add", "ok", Some(rec.location.clone())).await;
        Ok(target_view(rec))
    }

    pub async fn backup_target_list(&self, p: &Principal) -> HubResult<Vec<BackupTarget>> {
        p.require_admin()?;
        Ok(self.store.list_backup_targets().await?.into_iter().map(target_view).collect())
    }

    pub async fn backup_target_check(&self, p: &Principal, name: &Name) -> HubResult<BackupTarget> {
        p.require_admin()?;
        let spec = self.target_spec(name).await?;
        preflight(spec).await?;
        Ok(target_view(self.store.get_backup_target(name).await?.ok_or_else(|| HubError::not_found(format!("backup target '{name}' not found")))?))
    }

    pub async fn backup_target_remove(&self, p: &Principal, name: &Name) -> HubResult<BackupTarget> {
        p.require_admin()?;
        let rec = self.store.get_backup_target(name).await?.ok_or_else(|| HubError::not_found(format!("backup target '{name}' not found")))?;
        let users = self.store.backup_target_users(name).await?;
        if !users.is_empty() {
            let names: Vec<String> = users.iter().map(ToString::to_string).collect();
            return Err(HubError::new(ErrorCode::Conflict, format!("backup target '{name}' is used by tenant(s) {}: give them another target first", names.join(", "))));
        }
        self.store.delete_backup_target(name).await?;
        self.event(&p.actor(), None, format!("backup-target/{name}"), "backup.target.remove", "ok", None).await;
        Ok(target_view(rec))
    }

    // ---- settings ----

    pub async fn backup_settings(&self, p: &Principal, tenant: &Name) -> HubResult<BackupSettings> {
        self.tenant_get(p, tenant).await?;
        let s = self.store.get_backup_settings(tenant).await?;
        Ok(BackupSettings { target: s.target, policy: s.policy })
    }

    pub async fn backup_target_set(&self, p: &Principal, tenant: &Name, req: BackupTargetSet) -> HubResult<BackupSettings> {
        p.require_admin()?;
        self.tenant_get(p, tenant).await?;
        if let Some(t) = &req.target
            && self.store.get_backup_target(t).await?.is_none()
        {
            return Err(HubError::new(ErrorCode::Conflict, format!("target: backup target '{t}' not found (see `hangar backup target list`)")));
        }
        self.store.set_backup_target(tenant, req.target.as_ref()).await?;
        self.event(&p.actor(), Some(tenant), format!("tenant/{tenant}"), "backup.target.set", "ok", req.target.as_ref().map(ToString::to_string)).await;
        self.backup_settings(p, tenant).await
    }

    pub async fn backup_policy_set(&self, p: &Principal, tenant: &Name, policy: BackupPolicy) -> HubResult<BackupSettings> {
        self.tenant_get(p, tenant).await?;
        for (field, v) in [("keep_last", policy.keep_last), ("keep_daily", policy.keep_daily), ("keep_weekly", policy.keep_weekly), ("keep_monthly", policy.keep_monthly)] {
            if v == Some(0) {
                return Err(HubError::invalid(format!("{field}: must be at least 1 (leave it out to keep no backups by that rule)")));
            }
            if v.is_some_and(|n| n > hangar_types::backups::KEEP_MAX) {
                return Err(HubError::invalid(format!("{field}: at most {} backups", hangar_types::backups::KEEP_MAX)));
            }
        }
        self.store.set_backup_policy(tenant, &policy).await?;
        self.event(&p.actor(), Some(tenant), format!("tenant/{tenant}"), "backup.policy.set", "ok", None).await;
        self.backup_settings(p, tenant).await
    }

    pub async fn backup_key(&self, p: &Principal, tenant: &Name) -> HubResult<BackupKey> {
        p.require_admin()?;
        self.tenant_get(p, tenant).await?;
        let (target, spec, password) = self.tenant_repo(tenant).await?;
        let (access_key, secret_key) = match &spec {
            TargetSpec::S3 { access_key, secret_key, .. } => (Some(access_key.clone()), Some(secret_key.expose().to_string())),
            TargetSpec::Dir { .. } => (None, None),
        };
        // The event says that the key was read, never the key.
        self.event(&p.actor(), Some(tenant), format!("tenant/{tenant}"), "backup.key", "ok", None).await;
        Ok(BackupKey { tenant: tenant.clone(), target, repository: spec.restic_location(&repo_path(tenant)), password: password.expose().to_string(), access_key, secret_key })
    }

    // ---- operations ----

    async fn backup_operation(&self, kind: &str, tenant: &Name, target: String) -> HubResult<Operation> {
        // No instance id: instance requests cancel their instance's operations when
        // superseded, and a backup is not superseded by a start or stop.
        let op = self.operation_unbound(kind, Some(tenant), target).await?;
        self.store.set_backup_progress(op.id, &BackupProgressRecord::default()).await?;
        Ok(op)
    }

    pub async fn backup_create(self: &Arc<Self>, p: &Principal, tenant: &Name, name: &Name) -> HubResult<Operation> {
        let inst = self.instance_get(p, tenant, name).await?;
        self.backup_start(&p.actor(), inst, false).await
    }

    /// Starts a backup of `inst` on the host it is placed on (users' backups, the
    /// schedule, and moves through a backup).
    pub(crate) async fn backup_start(self: &Arc<Self>, actor: &str, inst: Instance, apply_policy: bool) -> HubResult<Operation> {
        let (target, spec, password) = self.tenant_repo(&inst.tenant).await?;
        let agent = self.agent_for(&inst).await?.0;
        let master_key = self.repo_key(&inst.tenant, &spec, &password).await?;
        let op = self.backup_operation("backup.create", &inst.tenant, format!("{}/{}", inst.tenant, inst.name)).await?;
        let template = Backup {
            id: String::new(),
            tenant: inst.tenant.clone(),
            instance: inst.name.clone(),
            instance_id: inst.id,
            target,
            created_at: op.created_at,
            bytes: 0,
            files: 0,
            dirs: 0,
            added_bytes: 0,
            id_base: inst.ids.map(|r| r.base),
        };
        let location = spec.restic_location(&repo_path(&inst.tenant));
        let repair = needs_repair(&location).map(|seen| (location, seen));
        let kind = JobKind::Backup { volume: inst.id.sandbox_id().to_string(), hostname: inst.id.to_string(), tags: vec![format!("{}/{}", inst.tenant, inst.name)], repair_index: repair.is_some() };
        let req = job_request(&op, &inst.tenant, spec, password, master_key, kind);
        self.event(actor, Some(&inst.tenant), format!("instance/{}/{}", inst.tenant, inst.name), "backup.create", "accepted", Some(format!("operation {}", op.id))).await;
        tokio::spawn(self.clone().run_job(op.clone(), agent, req, Done::Backup { template: Box::new(template), apply_policy, repair }));
        Ok(op)
    }

    pub async fn backup_restore(self: &Arc<Self>, p: &Principal, tenant: &Name, name: &Name, req: BackupRestore) -> HubResult<Operation> {
        let inst = self.instance_get(p, tenant, name).await?;
        let backup = self.backup_by_prefix(tenant, name, &req.backup).await?;
        let path = req.path.as_deref().map(|s| s.trim_matches('/').to_string()).filter(|s| !s.is_empty());
        let into = match &path {
            None => String::new(),
            Some(path) => {
                if path.split('/').any(|c| c == ".." || c == ".") {
                    return Err(HubError::invalid(format!("path: '{path}' must be relative, without '.' or '..'")));
                }
                let entry = self.store.get_backup_file(&backup.id, path).await?.ok_or_else(|| HubError::not_found(format!("path: '{path}' is not in backup {}", short(&backup.id))))?;
                match entry.kind {
                    BackupFileKind::Dir => path.clone(),
                    _ => path.rsplit_once('/').map(|(parent, _)| parent.to_string()).unwrap_or_default(),
                }
            }
        };
        let (_, spec, password) = self.tenant_repo(tenant).await?;
        let master_key = self.repo_key(tenant, &spec, &password).await?;
        let (dest, created) = match &req.as_instance {
            Some(new_name) => {
                let create = InstanceCreate {
                    name: new_name.clone(),
                    image: inst.spec.image.clone(),
                    vcpus: inst.spec.vcpus,
                    mem_mib: inst.spec.mem_mib,
                    disk_mib: inst.spec.disk_mib,
                    command: inst.spec.command.clone(),
                    env: inst.spec.env.clone(),
                    secrets: inst.spec.secrets.clone(),
                    start: false,
                    host: None,
                };
                let op = self.instance_create(p, tenant, create).await.map_err(|e| HubError::new(e.0.code, format!("as: {}", e.0.message)))?;
                (self.instance_get(p, tenant, new_name).await?, Some(op))
            }
            None => {
                let stopped = matches!(inst.state, InstanceState::Stopped | InstanceState::Created | InstanceState::Sleeping) && inst.observed == ObservedState::Stopped;
                if !stopped && !req.force {
                    return Err(HubError::new(
                        ErrorCode::IllegalTransition,
                        format!("force: instance '{tenant}/{name}' is {} (observed {}): stop it first, or pass --force to restore into it while it runs", inst.state, inst.observed),
                    ));
                }
                (inst.clone(), None)
            }
        };
        let ids = id_shift(&backup, &dest);
        let op = self.backup_operation("backup.restore", tenant, format!("{}/{}", dest.tenant, dest.name)).await?;
        let job = job_request(&op, tenant, spec, password, master_key, JobKind::Restore { volume: dest.id.sandbox_id().to_string(), snapshot: backup.id.clone(), path, into, ids });
        self.event(&p.actor(), Some(tenant), format!("instance/{}/{}", dest.tenant, dest.name), "backup.restore", "accepted", Some(format!("backup {} of {name}", short(&backup.id)))).await;
        let (hub, accepted) = (self.clone(), op.clone());
        tokio::spawn(async move {
            // A new instance's volume exists once its host reports it created.
            let dest = match created {
                Some(create_op) => match hub.wait_created(&dest, create_op.id).await {
                    Ok(d) => d,
                    Err(msg) => return hub.finish(&op, OperationStatus::Failed, Some(msg)).await,
                },
                None => dest,
            };
            match hub.agent_for(&dest).await.map(|(a, _)| a) {
                Ok(agent) => hub.run_job(op, agent, job, Done::Restore).await,
                Err(e) => hub.finish(&op, OperationStatus::Failed, Some(e.0.message)).await,
            }
        });
        Ok(accepted)
    }

    /// Restores all of `backup` into `inst`'s volume on the host `agent` runs on,
    /// whether or not the instance is placed there: the target of a move through a
    /// backup fills its volume before the switch. The same job as `backup_restore`.
    pub(crate) async fn backup_restore_on(self: &Arc<Self>, agent: AgentClient, inst: &Instance, backup: &Backup) -> HubResult<Operation> {
        let (_, spec, password) = self.tenant_repo(&inst.tenant).await?;
        let master_key = self.repo_key(&inst.tenant, &spec, &password).await?;
        let op = self.backup_operation("backup.restore", &inst.tenant, format!("{}/{}", inst.tenant, inst.name)).await?;
        let kind = JobKind::Restore { volume: inst.id.sandbox_id().to_string(), snapshot: backup.id.clone(), path: None, into: String::new(), ids: id_shift(backup, inst) };
        let job = job_request(&op, &inst.tenant, spec, password, master_key, kind);
        tokio::spawn(self.clone().run_job(op.clone(), agent, job, Done::Restore));
        Ok(op)
    }

    async fn wait_created(&self, inst: &Instance, create_op: OperationId) -> Result<Instance, String> {
        let deadline = tokio::time::Instant::now() + self.config.operation_timeout;
        let mut changed = self.coord.notifier.watch_operations();
        loop {
            changed.mark_unchanged();
            match self.store.get_operation(create_op).await {
                Ok(Some(op)) if op.status == OperationStatus::Succeeded => break,
                Ok(Some(op)) if op.status.is_final() => return Err(format!("creating {}/{} failed: {}", inst.tenant, inst.name, op.error.unwrap_or_default())),
                _ if tokio::time::Instant::now() > deadline => return Err(format!("{}/{} was not created in time", inst.tenant, inst.name)),
                // Woken when an operation ends; the timeout covers one ended by another hub.
                _ => drop(tokio::time::timeout(POLL, changed.changed()).await),
            }
        }
        self.store.get_instance_by_id(inst.id).await.ok().flatten().ok_or_else(|| format!("{}/{} is gone", inst.tenant, inst.name))
    }

    pub async fn backup_check(self: &Arc<Self>, p: &Principal, tenant: &Name, name: &Name, req: BackupCheck) -> HubResult<Operation> {
        let inst = self.instance_get(p, tenant, name).await?;
        let (_, spec, password) = self.tenant_repo(tenant).await?;
        let agent = self.agent_for(&inst).await?.0;
        let master_key = self.repo_key(tenant, &spec, &password).await?;
        let op = self.backup_operation("backup.check", tenant, format!("{tenant}/{name}")).await?;
        let job = job_request(&op, tenant, spec, password, master_key, JobKind::Check { read_data: req.read_data });
        tokio::spawn(self.clone().run_job(op.clone(), agent, job, Done::Check));
        Ok(op)
    }

    async fn finish(&self, op: &Operation, status: OperationStatus, error: Option<String>) {
        if let Err(e) = self.store.finish_operation(op.id, status, error.as_deref()).await {
            tracing::error!(error = %e, op = %op.id, "cannot record the end of a backup operation");
        }
        let result = match status {
            OperationStatus::Succeeded => "ok",
            OperationStatus::Cancelled => "cancelled",
            _ => "error",
        };
        self.event("hub", op.tenant.as_ref(), format!("operation/{}", op.id), &op.kind, result, error).await;
        self.coord.notifier.operations_changed();
    }

    /// Starts the job on the agent, relays its progress to the store until it ends,
    /// passes a cancel on, and records the outcome.
    async fn run_job(self: Arc<Self>, op: Operation, agent: AgentClient, req: JobRequest, done: Done) {
        let backup_location = matches!(done, Done::Backup { .. }).then(|| req.target.restic_location(&req.repo_path));
        // A backup handed no master key makes the repository (or finds it made since).
        let maker = match &done {
            Done::Backup { template, .. } if req.master_key.is_none() => Some(template.tenant.clone()),
            _ => None,
        };
        let (status, error) = match self.drive_job(&op, &agent, &req, done).await {
            Ok(()) => (OperationStatus::Succeeded, None),
            Err((status, msg)) => (status, Some(msg)),
        };
        if let Some(tenant) = maker
            && status == OperationStatus::Succeeded
        {
            // Unlock the new repository now, off every job's path, so that the next job
            // (often the incremental right after) does not wait for the key derivation
            // (scrypt, about 0.3 s here).
            let (hub, spec, password) = (self.clone(), req.target.clone(), req.password.clone());
            tokio::spawn(async move {
                let _ = hub.repo_key(&tenant, &spec, &password).await;
            });
        }
        if let Some(location) = backup_location
            && status != OperationStatus::Succeeded
        {
            ended_unclean(location);
        }
        let _ = agent.backup_job_forget(&req.id).await;
        self.finish(&op, status, error).await;
    }

    async fn drive_job(&self, op: &Operation, agent: &AgentClient, req: &JobRequest, done: Done) -> Result<(), (OperationStatus, String)> {
        let failed = |msg: String| (OperationStatus::Failed, msg);
        agent.backup_job_start(req).await.map_err(|e| failed(format!("cannot start the job on the host: {e}")))?;
        let mut missed = 0;
        let mut cancel_sent = false;
        let status: JobStatus = loop {
            let cancel = self.store.get_backup_progress(op.id).await.ok().flatten().is_some_and(|p| p.cancel_requested);
            if cancel && !cancel_sent {
                cancel_sent = agent.backup_job_cancel(&req.id).await.is_ok();
            }
            match agent.backup_job_wait(&req.id, JOB_WAIT).await {
                Ok(st) => {
                    missed = 0;
                    let p = BackupProgressRecord { files: st.progress.files, bytes: st.progress.bytes, total_bytes: st.progress.total_bytes, ..Default::default() };
                    let _ = self.store.set_backup_progress(op.id, &p).await;
                    if st.state != JobState::Running {
                        break st;
                    }
                }
                Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => {
                    return Err(failed("the host's agent lost the job (it was restarted during it); the repository stays valid and the next backup re-uses what was uploaded".into()));
                }
                Err(e) => {
                    missed += 1;
                    if missed >= MAX_MISSED_POLLS {
                        return Err(failed(format!("lost contact with the host during the job: {e}")));
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        };
        match status.state {
            JobState::Cancelled => return Err((OperationStatus::Cancelled, "cancelled on request; nothing was recorded".into())),
            JobState::Failed => {
                let what = match status.failure {
                    Some(JobFailure::Preflight) => "the target failed its check",
                    Some(JobFailure::WrongPassword) => "password: the repository refused the tenant's password",
                    Some(JobFailure::TargetFull) => "the target is full; nothing was recorded",
                    Some(JobFailure::Corrupted) => "the repository holds corrupted data; nothing was written",
                    Some(JobFailure::NotFound) => "not found",
                    _ => "failed",
                };
                return Err(failed(format!("{what}: {}", status.error.unwrap_or_default())));
            }
            _ => {}
        }
        match done {
            Done::Restore => Ok(()),
            Done::Check => {
                let report = status.check.unwrap_or_default();
                if report.is_ok() {
                    Ok(())
                } else {
                    Err(failed(format!("check found {} error(s): {}", report.errors.len(), report.errors.join("; "))))
                }
            }
            Done::Backup { template, apply_policy, repair } => {
                if let Some((location, seen)) = repair {
                    repaired(location, seen);
                }
                let summary = status.backup.ok_or_else(|| failed("the host reported no backup summary".into()))?;
                let t = std::time::Instant::now();
                let files = agent.backup_job_files(&req.id).await.map_err(|e| failed(format!("cannot fetch the backup's file index: {e}")))?;
                let fetched = t.elapsed();
                let files: Vec<BackupFile> = files.into_iter().filter(|f| !f.path.is_empty()).map(index_entry).collect();
                let backup = Backup {
                    id: summary.snapshot_id.clone(),
                    created_at: summary.time,
                    bytes: summary.bytes,
                    files: summary.files,
                    dirs: summary.dirs,
                    added_bytes: summary.added_bytes,
                    ..*template
                };
                self.store.insert_backup(&backup, &files).await.map_err(|e| failed(format!("cannot record the backup: {e}")))?;
                tracing::info!(op = %op.id, files = files.len(), fetch_ms = fetched.as_millis() as u64, record_ms = (t.elapsed() - fetched).as_millis() as u64, "backup index recorded");
                if apply_policy
                    && let Err(e) = self.apply_policy(&backup.tenant).await
                {
                    tracing::warn!(error = %e.0.message, tenant = %backup.tenant, "retention failed");
                }
                Ok(())
            }
        }
    }

    /// Forgets and prunes what the tenant's keep-* rules do not keep (on the hub's
    /// blocking threads), then drops the forgotten backups from the index.
    pub async fn apply_policy(&self, tenant: &Name) -> HubResult<Vec<String>> {
        let settings = self.store.get_backup_settings(tenant).await?;
        let pol = settings.policy;
        if !pol.keeps_something() {
            return Ok(vec![]);
        }
        let (_, spec, password) = self.tenant_repo(tenant).await?;
        let keep = KeepPolicy { last: pol.keep_last, daily: pol.keep_daily, weekly: pol.keep_weekly, monthly: pol.keep_monthly };
        let key = self.repo_key(tenant, &spec, &password).await?;
        let path = repo_path(tenant);
        let removed = tokio::task::spawn_blocking(move || Repo::open_with(&spec, &path, password.expose(), key.as_ref())?.forget(&keep))
            .await
            .map_err(|e| HubError::internal(e.to_string()))?
            .map_err(|e| HubError::internal(format!("retention: {e}")))?;
        self.store.delete_backups(&removed).await?;
        if !removed.is_empty() {
            self.event("hub", Some(tenant), format!("tenant/{tenant}"), "backup.forget", "ok", Some(format!("{} backup(s) past the policy removed", removed.len()))).await;
        }
        Ok(removed)
    }

    pub async fn backup_progress(&self, p: &Principal, id: OperationId) -> HubResult<BackupProgress> {
        let operation = self.operation_get(p, id).await?;
        let pr = self.store.get_backup_progress(id).await?.ok_or_else(|| HubError::not_found(format!("operation {id} is not a backup operation")))?;
        let secs = ((pr.updated_at.unwrap_or(operation.updated_at) - operation.created_at).as_seconds_f64()).max(0.001);
        Ok(BackupProgress { rate: (pr.bytes as f64 / secs) as u64, files: pr.files, bytes: pr.bytes, total_bytes: pr.total_bytes, cancelling: pr.cancel_requested, operation })
    }

    pub async fn backup_cancel(&self, p: &Principal, id: OperationId) -> HubResult<BackupProgress> {
        let op = self.operation_get(p, id).await?;
        if op.status.is_final() {
            return Err(HubError::new(ErrorCode::IllegalTransition, format!("operation {id} is already {}", op.status.as_str())));
        }
        self.store.request_backup_cancel(id).await?;
        self.event(&p.actor(), op.tenant.as_ref(), format!("operation/{id}"), "backup.cancel", "accepted", None).await;
        self.backup_progress(p, id).await
    }

    // ---- the index ----

    async fn backup_by_prefix(&self, tenant: &Name, instance: &Name, prefix: &str) -> HubResult<Backup> {
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HubError::invalid(format!("backup: '{prefix}' is not a backup id (hex, as `hangar backup list` shows)")));
        }
        let mut found = self.store.find_backups(tenant, instance, &prefix.to_ascii_lowercase()).await?;
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(HubError::not_found(format!("backup: no backup '{prefix}' of {tenant}/{instance} (see `hangar backup list {tenant}/{instance}`)"))),
            n => Err(HubError::invalid(format!("backup: '{prefix}' matches {n} backups: give more of its id"))),
        }
    }

    pub async fn backup_list(&self, p: &Principal, tenant: &Name, instance: &Name) -> HubResult<Vec<Backup>> {
        forbidden_as_not_found(p, tenant)?;
        Ok(self.store.list_backups(tenant, instance).await?)
    }

    pub async fn backup_files(&self, p: &Principal, tenant: &Name, instance: &Name, backup: &str, path: &str) -> HubResult<Vec<BackupFile>> {
        forbidden_as_not_found(p, tenant)?;
        let b = self.backup_by_prefix(tenant, instance, backup).await?;
        let path = path.trim_matches('/');
        if !path.is_empty() {
            let entry = self.store.get_backup_file(&b.id, path).await?.ok_or_else(|| HubError::not_found(format!("path: '{path}' is not in backup {}", short(&b.id))))?;
            if entry.kind != BackupFileKind::Dir {
                return Ok(vec![entry]);
            }
        }
        Ok(self.store.list_backup_files(&b.id, path).await?)
    }

    pub async fn backup_find(&self, p: &Principal, tenant: &Name, instance: &Name, glob: &str) -> HubResult<Vec<BackupFound>> {
        forbidden_as_not_found(p, tenant)?;
        if glob.is_empty() || glob.len() > 255 || glob.contains('/') {
            return Err(HubError::invalid("name: give a file name pattern of 1-255 characters without '/' (`*`, `?` and `[..]` match)"));
        }
        Ok(self.store.find_backup_files(tenant, instance, glob, FIND_LIMIT).await?)
    }

    // ---- purges ----

    pub async fn backup_purge_schedule(&self, p: &Principal, tenant: &Name, name: &Name) -> HubResult<BackupPurge> {
        let inst = self.instance_get(p, tenant, name).await?;
        let backups = self.store.list_backups_of(inst.id).await?;
        let Some(last) = backups.last() else {
            return Err(HubError::not_found(format!("instance '{tenant}/{name}' has no backups to purge")));
        };
        let delay = time::Duration::try_from(self.config.backup_purge_delay).unwrap_or(time::Duration::days(7));
        let purge = BackupPurge { tenant: tenant.clone(), instance: name.clone(), instance_id: inst.id, target: last.target.clone(), due_at: OffsetDateTime::now_utc() + delay };
        self.store.schedule_backup_purge(&purge).await?;
        self.event(&p.actor(), Some(tenant), format!("instance/{tenant}/{name}"), "backup.purge.schedule", "ok", Some(format!("{} backup(s) purged after {}", backups.len(), purge.due_at))).await;
        Ok(purge)
    }

    pub async fn backup_purge_list(&self, p: &Principal) -> HubResult<Vec<BackupPurge>> {
        let all = self.store.list_backup_purges().await?;
        Ok(all.into_iter().filter(|pg| p.check_tenant(&pg.tenant).is_ok()).collect())
    }

    pub async fn backup_purge_cancel(&self, p: &Principal, tenant: &Name, name: &Name) -> HubResult<BackupPurge> {
        forbidden_as_not_found(p, tenant)?;
        let purge = self.store.take_backup_purge(tenant, name).await?.ok_or_else(|| HubError::not_found(format!("no purge of '{tenant}/{name}' is scheduled")))?;
        self.event(&p.actor(), Some(tenant), format!("instance/{tenant}/{name}"), "backup.purge.cancel", "ok", None).await;
        Ok(purge)
    }

    async fn run_purge(&self, purge: &BackupPurge) -> HubResult<usize> {
        let backups = self.store.list_backups_of(purge.instance_id).await?;
        let (_, spec, password) = self.tenant_repo(&purge.tenant).await?;
        let key = self.repo_key(&purge.tenant, &spec, &password).await?;
        let path = repo_path(&purge.tenant);
        let host = purge.instance_id.to_string();
        tokio::task::spawn_blocking(move || Repo::open_with(&spec, &path, password.expose(), key.as_ref())?.purge_host(&host))
            .await
            .map_err(|e| HubError::internal(e.to_string()))?
            .map_err(|e| HubError::internal(format!("purge: {e}")))?;
        let ids: Vec<String> = backups.into_iter().map(|b| b.id).collect();
        self.store.delete_backups(&ids).await?;
        Ok(ids.len())
    }

    /// One pass of the backup loop: due purges, scheduled backups, and backup
    /// operations whose runner is gone (a hub that died mid-job).
    pub async fn backup_pass(self: &Arc<Self>) -> HubResult<()> {
        let now = OffsetDateTime::now_utc();
        for purge in self.store.list_backup_purges().await?.into_iter().filter(|pg| pg.due_at <= now) {
            // Taking it is what makes this hub the one that runs it.
            if self.store.take_backup_purge(&purge.tenant, &purge.instance).await?.is_none() {
                continue;
            }
            let object = format!("instance/{}/{}", purge.tenant, purge.instance);
            match self.run_purge(&purge).await {
                Ok(n) => self.event("hub", Some(&purge.tenant), object, "backup.purge", "ok", Some(format!("{n} backup(s) purged"))).await,
                Err(e) => {
                    self.event("hub", Some(&purge.tenant), object, "backup.purge", "error", Some(format!("{}; retried in an hour", e.0.message))).await;
                    let _ = self.store.schedule_backup_purge(&BackupPurge { due_at: now + time::Duration::hours(1), ..purge }).await;
                }
            }
        }
        for (tenant, settings) in self.store.list_backup_settings().await? {
            let (Some(schedule), Some(_)) = (settings.policy.schedule, settings.target.as_ref()) else { continue };
            if settings.last_run_at.is_some_and(|last| now - last < schedule.every()) {
                continue;
            }
            if !self.store.mark_backup_run(&tenant, settings.last_run_at, now).await? {
                continue;
            }
            let instances = self.instance_list(&Principal::Admin, Some(&tenant), None).await?;
            for inst in instances.into_iter().filter(|i| i.host.is_some() && !matches!(i.state, InstanceState::Deleted | InstanceState::Failed)) {
                let object = format!("instance/{}/{}", inst.tenant, inst.name);
                if let Err(e) = self.backup_start("hub", inst, true).await {
                    self.event("hub", Some(&tenant), object, "backup.create", "error", Some(format!("scheduled backup not started: {}", e.0.message))).await;
                }
            }
        }
        for op in self.store.running_operations(None).await?.into_iter().filter(|o| o.kind.starts_with("backup.")) {
            let last = self.store.get_backup_progress(op.id).await?.and_then(|p| p.updated_at).unwrap_or(op.created_at);
            if now - last > STALE_JOB {
                self.finish(&op, OperationStatus::Failed, Some(format!("no progress for {}s: the hub running it stopped; the repository stays valid and the next backup re-uses what was uploaded", STALE_JOB.whole_seconds()))).await;
            }
        }
        Ok(())
    }
}

/// Whether a backup of the repository at `location` must first index the packs an
/// interrupted backup left (`Repo::backup_after`): `Some(unclean count now)` unless a
/// backup that repaired and succeeded started after every unclean end this process
/// saw. A new process knows of none, so its first backup of each repository repairs.
/// A backup still running when another starts needs no repair for it: it indexes its
/// own packs when it succeeds, and counts as unclean when it does not.
fn needs_repair(location: &str) -> Option<u64> {
    let map = UNCLEAN.lock().unwrap_or_else(|e| e.into_inner());
    match map.get(location) {
        Some(&(unclean, Some(repaired))) if repaired == unclean => None,
        Some(&(unclean, _)) => Some(unclean),
        None => Some(0),
    }
}

/// A backup of `location` ended without its snapshot (its packs may be unindexed).
fn ended_unclean(location: String) {
    UNCLEAN.lock().unwrap_or_else(|e| e.into_inner()).entry(location).or_default().0 += 1;
}

/// A backup that repaired when the unclean count was `seen` succeeded.
fn repaired(location: String, seen: u64) {
    let mut map = UNCLEAN.lock().unwrap_or_else(|e| e.into_inner());
    let entry = map.entry(location).or_default();
    entry.1 = Some(entry.1.map_or(seen, |r| r.max(seen)));
}

/// The preflight of a target, on a blocking thread.
async fn preflight(spec: TargetSpec) -> HubResult<()> {
    tokio::task::spawn_blocking(move || hangar_backup::preflight(&spec)).await.map_err(|e| HubError::internal(e.to_string()))?.map_err(preflight_error)
}

/// How file owners shift from the backed-up instance's id range to `dest`'s.
fn id_shift(backup: &Backup, dest: &Instance) -> Option<IdShift> {
    match (backup.id_base, dest.ids) {
        (Some(from_base), Some(to)) => Some(IdShift { from_base, to_base: to.base, size: to.size }),
        _ => None,
    }
}

fn target_view(rec: BackupTargetRecord) -> BackupTarget {
    BackupTarget { name: rec.name, location: rec.location, created_at: rec.created_at }
}

/// The agent's job for operation `op` on `tenant`'s repository in `target`.
fn job_request(op: &Operation, tenant: &Name, target: TargetSpec, password: Secret, master_key: Option<Secret>, kind: JobKind) -> JobRequest {
    JobRequest { id: job_id(op.id), target, repo_path: repo_path(tenant), password, master_key, kind }
}

fn job_id(op: OperationId) -> String {
    op.to_string().to_ascii_lowercase().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(60).collect()
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn index_entry(f: hangar_backup::FileEntry) -> BackupFile {
    let kind = match f.kind {
        FileKind::File => BackupFileKind::File,
        FileKind::Dir => BackupFileKind::Dir,
        FileKind::Symlink { .. } => BackupFileKind::Symlink,
        FileKind::Other => BackupFileKind::Other,
    };
    BackupFile { path: f.path, size: f.size, mtime: f.mtime, kind }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unclean_end_makes_the_next_backups_repair_until_one_that_repaired_succeeds() {
        let loc = "dir:/tests/unclean-ends".to_string();
        // Unknown to this process: repair.
        let first = needs_repair(&loc).expect("a repository this process has not seen is repaired");
        repaired(loc.clone(), first);
        assert_eq!(needs_repair(&loc), None, "after a clean repairing backup, none");
        ended_unclean(loc.clone());
        let started_after = needs_repair(&loc).expect("an unclean end makes the next backup repair");
        // A backup that started before a second unclean end succeeds: not enough.
        ended_unclean(loc.clone());
        repaired(loc.clone(), started_after);
        let again = needs_repair(&loc).expect("the second unclean end is not repaired yet");
        repaired(loc.clone(), again);
        assert_eq!(needs_repair(&loc), None);
        // A late success of an older repairing backup does not undo a newer one.
        repaired(loc.clone(), started_after);
        assert_eq!(needs_repair(&loc), None);
        assert!(needs_repair("dir:/tests/other").is_some(), "repositories are apart");
    }
}
