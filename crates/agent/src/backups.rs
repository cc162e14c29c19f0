//! Backup jobs on this host: back up an instance's volume to its tenant's restic
//! repository (from a temporary read-only snapshot, so the backup is consistent),
//! restore a backup into a volume, check a repository. The hub starts a job with the
//! repository password and the target's keys in the body of its mTLS call; they live in
//! the job's memory while it runs and are never written down. The hub polls the job for
//! progress and its result, then fetches the backup's file index and forgets the job.
//!
//! Temporary snapshots are named `bk-<job>` (the prefix is reserved for backups; user
//! snapshots never use it). They are deleted when the job ends, whatever the outcome,
//! and leftovers of a killed agent are deleted when the agent starts.

use crate::drivers::volume::VolumeDriver;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hangar_backup::wire::{IdShift, JobFailure, JobKind, JobRequest, JobState, JobStatus};
use hangar_backup::{CancelToken, FileEntry, PreflightError, Progress, Repo, RepoError};
use hangar_tls::serve::PeerInfo;
use hangar_types::{ApiError, ErrorCode, SnapshotId, VolumeId};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The prefix of temporary backup snapshots.
pub const SNAPSHOT_PREFIX: &str = "bk-";
/// A staging directory of a restore inside the volume; removed on failure and at start.
const RESTORE_STAGING_PREFIX: &str = ".hangar-restore-";
/// Finished jobs the hub never collected are forgotten after this long.
const FINISHED_JOB_TTL: Duration = Duration::from_secs(3600);

struct Job {
    status: Mutex<JobStatus>,
    /// Flips to true when the job ends: wakes the hub's long-polls.
    done: tokio::sync::watch::Sender<bool>,
    cancel: CancelToken,
    files: Mutex<Option<Vec<FileEntry>>>,
    finished_at: Mutex<Option<Instant>>,
}

#[derive(Clone)]
struct Backups {
    volumes: Arc<dyn VolumeDriver>,
    hub_fingerprint: String,
    jobs: Arc<Mutex<HashMap<String, Arc<Job>>>>,
}

struct JobError(StatusCode, ApiError);

impl IntoResponse for JobError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn err(code: ErrorCode, msg: impl Into<String>) -> JobError {
    JobError(StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), ApiError::new(code, msg))
}

/// The routes of backup jobs, for the agent's endpoint; starts the removal of leftovers
/// of a previous agent (snapshots, restore staging dirs).
pub fn router(volumes: Arc<dyn VolumeDriver>, hub_fingerprint: String) -> Router {
    let st = Backups { volumes: volumes.clone(), hub_fingerprint, jobs: Default::default() };
    tokio::spawn(remove_leftovers(volumes));
    Router::new()
        .route("/v1/backup-jobs", post(job_start))
        .route("/v1/backup-jobs/{id}", get(job_get).delete(job_forget))
        .route("/v1/backup-jobs/{id}/files", get(job_files))
        .route("/v1/backup-jobs/{id}/cancel", post(job_cancel))
        .with_state(st)
}

/// Deletes `bk-` snapshots and restore staging dirs: no job runs yet, so every one is
/// the leftover of an agent killed in the middle of a job.
async fn remove_leftovers(volumes: Arc<dyn VolumeDriver>) {
    let Ok(list) = volumes.list().await else { return };
    for vol in list {
        for snap in volumes.list_snapshots(&vol).await.unwrap_or_default() {
            if snap.as_str().starts_with(SNAPSHOT_PREFIX) {
                match volumes.delete_snapshot(&vol, &snap).await {
                    Ok(()) => tracing::info!(volume = %vol, snapshot = %snap, "removed the snapshot of an interrupted backup"),
                    Err(e) => tracing::warn!(volume = %vol, snapshot = %snap, error = %e, "cannot remove the snapshot of an interrupted backup"),
                }
            }
        }
        let root = volumes.path(&vol);
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(RESTORE_STAGING_PREFIX) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

fn check_peer(st: &Backups, peer: &PeerInfo) -> Result<(), JobError> {
    if peer.fingerprint.as_deref() == Some(st.hub_fingerprint.as_str()) {
        return Ok(());
    }
    Err(err(ErrorCode::Unauthenticated, "only the hub may call this endpoint"))
}

impl Backups {
    fn job(&self, id: &str) -> Result<Arc<Job>, JobError> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.get(id).cloned().ok_or_else(|| err(ErrorCode::NotFound, format!("no backup job '{id}' on this host (was the agent restarted?)")))
    }

    fn forget_old(&self) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.retain(|_, j| j.finished_at.lock().unwrap_or_else(|e| e.into_inner()).is_none_or(|at| at.elapsed() < FINISHED_JOB_TTL));
    }
}

fn status_of(job: &Job) -> JobStatus {
    job.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

async fn job_start(State(st): State<Backups>, Extension(peer): Extension<PeerInfo>, Json(req): Json<JobRequest>) -> Result<Json<JobStatus>, JobError> {
    check_peer(&st, &peer)?;
    st.forget_old();
    if req.id.is_empty() || req.id.len() > 60 || !req.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(err(ErrorCode::InvalidArgument, format!("job id '{}': use 1-60 of a-z, 0-9 and '-'", req.id)));
    }
    let job = {
        let mut jobs = st.jobs.lock().unwrap_or_else(|e| e.into_inner());
        // The same id again (a retried call) is the same job.
        if let Some(job) = jobs.get(&req.id) {
            return Ok(Json(status_of(job)));
        }
        let job = Arc::new(Job {
            status: Mutex::new(JobStatus { id: req.id.clone(), state: JobState::Running, progress: Progress::default(), failure: None, error: None, backup: None, check: None }),
            done: tokio::sync::watch::channel(false).0,
            cancel: CancelToken::new(),
            files: Mutex::new(None),
            finished_at: Mutex::new(None),
        });
        jobs.insert(req.id.clone(), job.clone());
        job
    };
    let status = status_of(&job);
    let volumes = st.volumes.clone();
    tokio::spawn(async move {
        let id = req.id.clone();
        let outcome = run(&job, req, volumes).await;
        let mut s = job.status.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => s.state = JobState::Succeeded,
            Err(Failed::Cancelled) => s.state = JobState::Cancelled,
            Err(Failed::With(failure, msg)) => {
                tracing::warn!(job = %id, error = %msg, "backup job failed");
                s.state = JobState::Failed;
                s.failure = Some(failure);
                s.error = Some(msg);
            }
        }
        drop(s);
        *job.finished_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        job.done.send_replace(true);
    });
    Ok(Json(status))
}

async fn job_get(State(st): State<Backups>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>, Query(w): Query<crate::endpoint::LongPoll>) -> Result<Json<JobStatus>, JobError> {
    check_peer(&st, &peer)?;
    let job = st.job(&id)?;
    w.until(job.done.subscribe()).await;
    Ok(Json(status_of(&job)))
}

async fn job_files(State(st): State<Backups>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>) -> Result<Json<Vec<FileEntry>>, JobError> {
    check_peer(&st, &peer)?;
    let job = st.job(&id)?;
    let files = job.files.lock().unwrap_or_else(|e| e.into_inner()).clone();
    files.map(Json).ok_or_else(|| err(ErrorCode::Conflict, format!("backup job '{id}' has no file index (it is not a finished backup)")))
}

async fn job_cancel(State(st): State<Backups>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>) -> Result<Json<JobStatus>, JobError> {
    check_peer(&st, &peer)?;
    let job = st.job(&id)?;
    job.cancel.cancel();
    Ok(Json(status_of(&job)))
}

async fn job_forget(State(st): State<Backups>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>) -> Result<Json<JobStatus>, JobError> {
    check_peer(&st, &peer)?;
    let job = st.job(&id)?;
    job.cancel.cancel();
    st.jobs.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    Ok(Json(status_of(&job)))
}

enum Failed {
    Cancelled,
    With(JobFailure, String),
}

impl From<RepoError> for Failed {
    fn from(e: RepoError) -> Self {
        let failure = match &e {
            RepoError::Cancelled => return Failed::Cancelled,
            RepoError::WrongPassword { .. } => JobFailure::WrongPassword,
            RepoError::SnapshotNotFound { .. } | RepoError::SnapshotAmbiguous { .. } | RepoError::PathNotInSnapshot { .. } => JobFailure::NotFound,
            RepoError::TargetFull { .. } => JobFailure::TargetFull,
            RepoError::Corrupted { .. } => JobFailure::Corrupted,
            _ => JobFailure::Other,
        };
        Failed::With(failure, error_chain(&e))
    }
}

impl From<PreflightError> for Failed {
    fn from(e: PreflightError) -> Self {
        Failed::With(JobFailure::Preflight, format!("target preflight failed: {e}"))
    }
}

fn other(msg: impl Into<String>) -> Failed {
    Failed::With(JobFailure::Other, msg.into())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}

/// Runs `f` on a blocking thread (rustic_core is synchronous).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Failed> + Send + 'static) -> Result<T, Failed> {
    tokio::task::spawn_blocking(f).await.map_err(|e| other(format!("backup worker failed: {e}")))?
}

async fn run(job: &Arc<Job>, req: JobRequest, volumes: Arc<dyn VolumeDriver>) -> Result<(), Failed> {
    let target = req.target.clone();
    blocking(move || Ok(hangar_backup::preflight(&target)?)).await?;
    let progress = {
        let job = job.clone();
        move |p: &Progress| job.status.lock().unwrap_or_else(|e| e.into_inner()).progress = *p
    };
    let cancel = job.cancel.clone();
    match req.kind {
        JobKind::Backup { ref volume, ref hostname, ref tags, repair_index } => {
            let vol: VolumeId = volume.parse().map_err(|e| other(format!("volume: {e}")))?;
            let snap: SnapshotId = format!("{SNAPSHOT_PREFIX}{}", req.id).parse().map_err(|e| other(format!("snapshot: {e}")))?;
            let source = volumes.snapshot(&vol, &snap).await.map_err(|e| other(format!("cannot snapshot volume {vol}: {e}")))?;
            let (hostname, tags) = (hostname.clone(), tags.clone());
            let (target, repo_path, password, key) = (req.target.clone(), req.repo_path.clone(), req.password.clone(), req.master_key.clone());
            let job_id = req.id.clone();
            let result = blocking(move || {
                // Where a job's time goes, for `hangar bench --only backup`'s notes.
                let t = Instant::now();
                let repo = Repo::open_with(&target, &repo_path, password.expose(), key.as_ref())?;
                let opened = t.elapsed();
                let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                let summary = repo.backup_after(repair_index, &source, &hostname, &tags, progress, &cancel)?;
                let backed_up = t.elapsed();
                let files = repo.ls(&summary.snapshot_id)?.collect::<Result<Vec<_>, _>>()?;
                tracing::info!(job = %job_id, open_ms = opened.as_millis() as u64, repair_index, backup_ms = (backed_up - opened).as_millis() as u64, index_ms = (t.elapsed() - backed_up).as_millis() as u64, files = files.len(), "backup job timings");
                Ok((summary, files))
            })
            .await;
            // Whatever happened, the temporary snapshot goes.
            if let Err(e) = volumes.delete_snapshot(&vol, &snap).await {
                tracing::warn!(volume = %vol, snapshot = %snap, error = %e, "cannot remove a backup's snapshot; the next agent start retries");
            }
            let (summary, files) = result?;
            *job.files.lock().unwrap_or_else(|e| e.into_inner()) = Some(files);
            job.status.lock().unwrap_or_else(|e| e.into_inner()).backup = Some(summary);
            Ok(())
        }
        JobKind::Restore { ref volume, ref snapshot, ref path, ref into, ids } => {
            let vol: VolumeId = volume.parse().map_err(|e| other(format!("volume: {e}")))?;
            if !volumes.exists(&vol).await.unwrap_or(false) {
                return Err(Failed::With(JobFailure::NotFound, format!("volume {vol} is not on this host")));
            }
            let root = volumes.path(&vol);
            let into = safe_relative(into).ok_or_else(|| other(format!("restore destination '{into}' must be a relative path inside the volume")))?;
            let staging = root.join(format!("{RESTORE_STAGING_PREFIX}{}", req.id));
            let (snapshot, path) = (snapshot.clone(), path.clone());
            let (target, repo_path, password, key) = (req.target.clone(), req.repo_path.clone(), req.password.clone(), req.master_key.clone());
            let staged = staging.clone();
            let job_id = req.id.clone();
            let result = blocking(move || {
                let t = Instant::now();
                let repo = Repo::open_with(&target, &repo_path, password.expose(), key.as_ref())?;
                let opened = t.elapsed();
                // Only root may see a restore in progress.
                std::fs::create_dir(&staged).map_err(|e| other(format!("cannot create {}: {e}", staged.display())))?;
                std::os::unix::fs::chown(&staged, Some(0), Some(0)).map_err(|e| other(format!("cannot chown {}: {e}", staged.display())))?;
                progress(&Progress::default());
                if cancel.is_cancelled() {
                    return Err(Failed::Cancelled);
                }
                repo.restore(&snapshot, path.as_deref(), &staged)?;
                let restored = t.elapsed();
                if let Some(ids) = ids {
                    shift_ids(&staged, ids).map_err(|e| other(format!("cannot shift the restored files' owners: {e}")))?;
                }
                let shifted = t.elapsed();
                let dest = root.join(&into);
                std::fs::create_dir_all(&dest).map_err(|e| other(format!("cannot create {}: {e}", dest.display())))?;
                merge_into(&staged, &dest).map_err(|e| other(format!("cannot move the restored files into place: {e}")))?;
                tracing::info!(job = %job_id, open_ms = opened.as_millis() as u64, restore_ms = (restored - opened).as_millis() as u64, shift_ms = (shifted - restored).as_millis() as u64, move_ms = (t.elapsed() - shifted).as_millis() as u64, "backup job timings (restore)");
                Ok(())
            })
            .await;
            let _ = std::fs::remove_dir_all(&staging);
            result
        }
        JobKind::Check { read_data } => {
            let (target, repo_path, password, key) = (req.target.clone(), req.repo_path.clone(), req.password.clone(), req.master_key.clone());
            let report = blocking(move || Ok(Repo::open_with(&target, &repo_path, password.expose(), key.as_ref())?.check(read_data)?)).await?;
            job.status.lock().unwrap_or_else(|e| e.into_inner()).check = Some(report);
            Ok(())
        }
    }
}

/// `p` as a relative path without `..`; '' is the volume's root.
fn safe_relative(p: &str) -> Option<PathBuf> {
    let p = p.trim_matches('/');
    if p.split('/').any(|part| part == ".." || part == ".") {
        return None;
    }
    Some(PathBuf::from(p))
}

/// Moves every entry of `from` into `to`: directories are merged, anything else
/// replaces what is there.
fn merge_into(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        let src_is_dir = e.file_type()?.is_dir();
        match std::fs::symlink_metadata(&dst) {
            Ok(m) if m.is_dir() && src_is_dir => {
                merge_into(&e.path(), &dst)?;
                // Take the backup's mode and owner for the merged directory too.
                let src = std::fs::symlink_metadata(e.path())?;
                std::fs::set_permissions(&dst, src.permissions())?;
                use std::os::unix::fs::MetadataExt;
                std::os::unix::fs::lchown(&dst, Some(src.uid()), Some(src.gid()))?;
                continue;
            }
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&dst)?,
            Ok(_) => std::fs::remove_file(&dst)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::rename(e.path(), &dst)?;
    }
    Ok(())
}

/// Moves owners from the backed-up instance's id range to the destination's: ids in
/// `[from_base, from_base + size)` and ids below `size` (a volume not yet shifted)
/// become `to_base + offset`; others stay.
fn shift_ids(path: &std::path::Path, ids: IdShift) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    let map = |id: u32| {
        if id >= ids.from_base && id - ids.from_base < ids.size {
            Some(ids.to_base + (id - ids.from_base))
        } else if id < ids.size {
            Some(ids.to_base + id)
        } else {
            None
        }
    };
    // Owners already in place (a restore into the instance it came from) stay untouched.
    let (uid, gid) = (map(meta.uid()).filter(|&u| u != meta.uid()), map(meta.gid()).filter(|&g| g != meta.gid()));
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::lchown(path, uid, gid)?;
        if !meta.file_type().is_symlink() && meta.mode() & 0o6000 != 0 {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(path)? {
            shift_ids(&e?.path(), ids)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn merge_replaces_files_and_merges_directories() {
        let t = tempfile::tempdir().unwrap();
        let (from, to) = (t.path().join("from"), t.path().join("to"));
        std::fs::create_dir_all(from.join("home/sub")).unwrap();
        std::fs::create_dir_all(to.join("home/keep")).unwrap();
        std::fs::write(from.join("home/sub/a"), "new").unwrap();
        std::fs::write(from.join("home/b"), "restored").unwrap();
        std::fs::write(to.join("home/b"), "old").unwrap();
        std::fs::write(to.join("home/keep/c"), "untouched").unwrap();
        merge_into(&from, &to).unwrap();
        assert_eq!(std::fs::read_to_string(to.join("home/sub/a")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(to.join("home/b")).unwrap(), "restored");
        assert_eq!(std::fs::read_to_string(to.join("home/keep/c")).unwrap(), "untouched");
    }

    #[test]
    fn ids_move_from_the_old_range_to_the_new() {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var("CI").is_err(), "this test needs root (chown) and CI is set");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, "x").unwrap();
        std::os::unix::fs::chown(&f, Some(100_000 + 1000), Some(100_000 + 1000)).unwrap();
        std::os::unix::fs::chown(t.path(), Some(100_000), Some(100_000)).unwrap();
        shift_ids(t.path(), IdShift { from_base: 100_000, to_base: 300_000, size: 65536 }).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().uid(), 301_000);
        assert_eq!(std::fs::metadata(t.path()).unwrap().gid(), 300_000);
        assert!(safe_relative("a/../b").is_none());
        assert_eq!(safe_relative("/home/"), Some(PathBuf::from("home")));
    }
}
