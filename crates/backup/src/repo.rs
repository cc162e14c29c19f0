//! A restic repository on a target, and what hangar does with it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use rustic_backend::LocalBackend;
use rustic_core::repofile::{MasterKey, NodeType, SnapshotFile};
use rustic_core::{
    BackupOptions, CheckOptions, ConfigOptions, Credentials, ErrorKind, KeepOptions,
    LocalDestination, LocalSource, LocalSourceFilterOptions, LocalSourceSaveOptions, LsOptions,
    OpenStatus, PruneOptions, RepairIndexOptions, Repository, RepositoryBackends,
    RepositoryOptions, RestoreOptions, RusticError, SnapshotOptions, WriteBackend,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::operation::{
    CANCELLED, CancelToken, CancellableSource, GuardedBackend, Operation, OperationSlot,
    Progress, ProgressRelay,
};
use crate::s3::{self, S3Backend};
use crate::target::{Secret, TargetSpec, TargetSpecError, check_repo_path};

/// Why a repository operation failed; the variants callers map to distinct answers.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("wrong password for the repository at {location}")]
    WrongPassword { location: String },
    #[error(transparent)]
    BadRepoPath(#[from] TargetSpecError),
    #[error("backup source {} is not a directory", path.display())]
    SourceNotDirectory { path: PathBuf },
    #[error("snapshot `{id}` not found in {location}")]
    SnapshotNotFound { id: String, location: String },
    #[error("snapshot `{id}` is ambiguous in {location}: give more of its id")]
    SnapshotAmbiguous { id: String, location: String },
    #[error("path `{path}` is not in snapshot {snapshot}")]
    PathNotInSnapshot { snapshot: String, path: String },
    #[error("operation cancelled")]
    Cancelled,
    #[error(
        "restore stopped: data in {location} is corrupted or unreadable ({detail}); nothing of it was written, run check with read_data"
    )]
    Corrupted { location: String, detail: String },
    /// The disk (or the S3 quota) of the target is full. Nothing is recorded: the
    /// repository stays valid and the next backup re-uses what was written.
    #[error("{action} failed: the target {location} is full ({detail})")]
    TargetFull { action: &'static str, location: String, detail: String },
    #[error("{action} failed on {location}: {source}")]
    Rustic {
        action: &'static str,
        location: String,
        #[source]
        source: Box<RusticError>,
    },
    #[error("deleting the repository {location} failed: {detail}")]
    Delete { location: String, detail: String },
}

/// What a finished backup added; `files`, `dirs` and `bytes` are the whole snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackupSummary {
    pub snapshot_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub files: u64,
    pub dirs: u64,
    /// Size of all files in the snapshot.
    pub bytes: u64,
    /// Bytes this backup added to the repository (after deduplication and compression).
    pub added_bytes: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub duration_secs: f64,
}

/// A snapshot in the repository, as `hangar backup list` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub hostname: String,
    pub tags: Vec<String>,
    /// Missing for snapshots written by tools that record no summary.
    pub summary: Option<BackupSummary>,
}

/// The type of an entry in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink { target: String },
    /// Devices, fifos and sockets.
    Other,
}

/// One entry of a snapshot's tree, for the hub's index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the backed-up directory, `/`-separated, without a leading `/`.
    pub path: String,
    pub size: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub mtime: Option<OffsetDateTime>,
    pub kind: FileKind,
}

/// Which snapshots `forget` keeps, per hostname (instance); at least one must be set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepPolicy {
    pub last: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
}

/// Findings of `check`; `errors` mean the repository is damaged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// An open restic repository (format version 2, compressed) on a target.
///
/// Every method blocks (rustic_core is synchronous and uses its own threads): call them
/// from a blocking thread (`tokio::task::spawn_blocking`), never from an async task.
/// One operation runs at a time per `Repo`; open a second `Repo` to run two at once.
pub struct Repo {
    /// Unopened (rustic_core's open repository cannot be cloned, and every command
    /// consumes one), reopened per operation with the master key: cheap, no key
    /// derivation.
    base: Repository<()>,
    master_key: Credentials,
    repo: Repository<OpenStatus>,
    location: String,
    slot: OperationSlot,
    one_at_a_time: Mutex<()>,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo").field("location", &self.location).finish()
    }
}

/// A rustic_core failure, as `TargetFull` when the target ran out of room.
fn rustic_error(action: &'static str, location: String, source: Box<RusticError>) -> RepoError {
    match full_target_detail(&*source) {
        Some(detail) => RepoError::TargetFull { action, location, detail },
        None => RepoError::Rustic { action, location, source },
    }
}

/// S3 error codes for a target out of room: Ceph RGW's quota and MinIO's full drives
/// (MinIO's bucket quota code, `XMinioAdminBucketQuotaExceeded`, contains the first).
const S3_FULL_CODES: [&str; 2] = ["QuotaExceeded", "XMinioStorageFull"];

/// Why the target is full, if that is what `err` (or one of its causes) says.
fn full_target_detail(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        {
            return Some(io.to_string());
        }
        let text = current.to_string();
        if let Some(code) = S3_FULL_CODES.iter().find(|code| text.contains(*code)) {
            return Some(format!("S3 error {code}"));
        }
        cause = current.source();
    }
    None
}

/// The repository at `repo_path` in `target`, not opened yet, with the slot its
/// operations report through and its location as `restic -r` takes it.
fn unopened(
    target: &TargetSpec,
    repo_path: &str,
) -> Result<(Repository<()>, OperationSlot, String), RepoError> {
    check_repo_path(repo_path)?;
    let location = target.restic_location(repo_path);
    let rustic = |action| {
        let location = location.clone();
        move |source| rustic_error(action, location, source)
    };
    let inner: Arc<dyn WriteBackend> = match target {
        TargetSpec::Dir { path } => Arc::new(
            LocalBackend::new(path.join(repo_path).to_string_lossy(), [])
                .map_err(rustic("opening the target"))?,
        ),
        TargetSpec::S3 { .. } => {
            Arc::new(S3Backend::new(target, repo_path).map_err(rustic("opening the target"))?)
        }
    };
    let slot = OperationSlot::default();
    let backend = Arc::new(GuardedBackend { inner, slot: slot.clone() });
    // No local cache: agents back up many tenants, and a cache per tenant on every
    // host would be a second copy of the repository's metadata to keep and protect.
    let opts = RepositoryOptions::default().no_cache(true);
    let repo = Repository::new_with_progress(
        &opts,
        &RepositoryBackends::new(backend, None),
        ProgressRelay(slot.clone()),
    )
    .map_err(rustic("opening the repository"))?;
    Ok((repo, slot, location))
}

/// Opens an existing repository with its password; a password no key of the
/// repository takes is `WrongPassword`.
fn open_checked(
    repo: Repository<()>,
    password: &str,
    location: &str,
) -> Result<Repository<OpenStatus>, RepoError> {
    repo.open(&Credentials::Password(password.to_string())).map_err(|source| {
        if source.is_code("C002") {
            RepoError::WrongPassword { location: location.to_string() }
        } else {
            rustic_error("opening the repository", location.to_string(), source)
        }
    })
}

impl Repo {
    /// Opens the repository at `repo_path` within `target`, creating it if the path holds
    /// none. The password is the repository's (per-tenant) key.
    pub fn open_or_init(
        target: &TargetSpec,
        repo_path: &str,
        password: &str,
    ) -> Result<Self, RepoError> {
        Self::open_with(target, repo_path, password, None)
    }

    /// As `open_or_init`, but with the master key `unlock` returned when there is one:
    /// opening then skips the password's key derivation (scrypt, made slow on purpose:
    /// about half a second per open). A master key that no longer opens the repository
    /// (it was deleted and made again) falls back to the password.
    pub fn open_with(
        target: &TargetSpec,
        repo_path: &str,
        password: &str,
        master_key: Option<&Secret>,
    ) -> Result<Self, RepoError> {
        let (repo, slot, location) = unopened(target, repo_path)?;
        let rustic = |action| {
            let location = location.clone();
            move |source| rustic_error(action, location, source)
        };
        let base = repo.clone();
        let exists = repo.config_id().map_err(rustic("reading the repository config"))?.is_some();
        let from_master = master_key
            .filter(|_| exists)
            .and_then(|k| serde_json::from_str::<MasterKey>(k.expose()).ok())
            .and_then(|k| repo.clone().open(&Credentials::Masterkey(k)).ok());
        let repo = match from_master {
            Some(open) => open,
            None if exists => open_checked(repo, password, &location)?,
            None => {
                let credentials = Credentials::Password(password.to_string());
                // rustic_core's defaults are what restic >= 0.14 reads: version 2, zstd.
                repo.init(&credentials, &Default::default(), &ConfigOptions::default())
                    .map_err(rustic("creating the repository"))?
            }
        };
        let master_key = Credentials::Masterkey(repo.key());
        Ok(Self { base, master_key, repo, location, slot, one_at_a_time: Mutex::new(()) })
    }

    /// The master key of the repository at `repo_path`, unlocked with `password` (so
    /// this is the check that the password is the repository's), as a secret to hand to
    /// `open_with`; `None` when there is no repository there yet. Writes nothing.
    pub fn unlock(
        target: &TargetSpec,
        repo_path: &str,
        password: &str,
    ) -> Result<Option<Secret>, RepoError> {
        let (repo, _, location) = unopened(target, repo_path)?;
        let exists = repo
            .config_id()
            .map_err(|source| rustic_error("reading the repository config", location.clone(), source))?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let open = open_checked(repo, password, &location)?;
        let key = serde_json::to_string(&open.key()).map_err(|e| RepoError::Rustic {
            action: "keeping the master key",
            location: location.clone(),
            source: RusticError::with_source(ErrorKind::Internal, "serializing the key failed", e),
        })?;
        Ok(Some(Secret::new(key)))
    }

    /// The location as `restic -r` takes it.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn rustic(&self, action: &'static str) -> impl FnOnce(Box<RusticError>) -> RepoError + '_ {
        move |source| rustic_error(action, self.location.clone(), source)
    }

    fn reopen(&self) -> Result<Repository<OpenStatus>, RepoError> {
        self.base.clone().open(&self.master_key).map_err(self.rustic("opening the repository"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.one_at_a_time.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Backs up the tree at `source_dir` (a read-only snapshot of the volume, so that the
    /// backup is consistent) as a snapshot of `hostname` (the instance) with `tags`.
    /// Paths in the snapshot are relative to `source_dir`, so `restic restore --target D`
    /// recreates the tree in D. The latest snapshot of the same hostname is the parent:
    /// unchanged files are not read again.
    ///
    /// Cancelling through `cancel` stops reading and ends with `RepoError::Cancelled`
    /// without a snapshot; the data already uploaded stays and the next backup uses it.
    pub fn backup(
        &self,
        source_dir: &Path,
        hostname: &str,
        tags: &[&str],
        progress: impl Fn(&Progress) + Send + Sync + 'static,
        cancel: &CancelToken,
    ) -> Result<BackupSummary, RepoError> {
        self.backup_after(true, source_dir, hostname, tags, progress, cancel)
    }

    /// As `backup`; `repair` first indexes the packs an interrupted backup uploaded
    /// without indexing them (it lists every pack and reads the index once more), so
    /// this backup re-uses them instead of uploading the same data again. Skip it only
    /// when every backup of this repository since the last repair ended cleanly:
    /// skipping it otherwise loses no data, but uploads again what was uploaded.
    pub fn backup_after(
        &self,
        repair: bool,
        source_dir: &Path,
        hostname: &str,
        tags: &[&str],
        progress: impl Fn(&Progress) + Send + Sync + 'static,
        cancel: &CancelToken,
    ) -> Result<BackupSummary, RepoError> {
        let _one = self.lock();
        if !source_dir.is_dir() {
            return Err(RepoError::SourceNotDirectory { path: source_dir.to_path_buf() });
        }
        if repair {
            self.repo
                .repair_index(&RepairIndexOptions::default(), false)
                .map_err(self.rustic("indexing packs of an interrupted backup"))?;
        }

        let mut snap_opts = SnapshotOptions::default().host(hostname.to_string());
        for tag in tags {
            snap_opts = snap_opts.add_tags(tag).map_err(self.rustic("reading tags"))?;
        }
        let snap = SnapshotFile::from_options(&snap_opts).map_err(self.rustic("preparing the snapshot"))?;
        let opts = BackupOptions::default().as_path(PathBuf::from("/"));
        let source = LocalSource::new(
            LocalSourceSaveOptions::default(),
            &Default::default(),
            &LocalSourceFilterOptions::default(),
            &[source_dir],
        )
        .map_err(self.rustic("reading the source"))?;

        let op = Arc::new(Operation::new(cancel.clone(), Box::new(progress)));
        let _running = self.slot.start(op.clone());
        let source = CancellableSource { inner: source, op: op.clone() };

        let indexed = self.reopen()?.to_indexed_ids().map_err(self.rustic("reading the index"))?;
        let result = indexed.archive(&opts, &source, snap, &[source_dir.to_path_buf()]);
        let snap = match result {
            Ok(_) if cancel.is_cancelled() => return Err(RepoError::Cancelled),
            Err(_) if cancel.is_cancelled() => return Err(RepoError::Cancelled),
            Err(err) if err.to_string().contains(CANCELLED) => return Err(RepoError::Cancelled),
            Err(err) => return Err(self.rustic("backup")(err)),
            Ok(snap) => snap,
        };
        Ok(summary_of(&snap).expect("a snapshot just written has a summary"))
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>, RepoError> {
        let mut snaps = self.repo.get_all_snapshots().map_err(self.rustic("listing snapshots"))?;
        snaps.sort_unstable_by(|a, b| a.time.cmp(&b.time));
        Ok(snaps
            .iter()
            .map(|snap| SnapshotInfo {
                id: snap.id.to_hex().to_string(),
                time: to_offset(snap.time.timestamp()),
                hostname: snap.hostname.clone(),
                tags: snap.tags.iter().cloned().collect(),
                summary: summary_of(snap),
            })
            .collect())
    }

    /// Finds a snapshot by its id or a unique prefix of it.
    fn find_snapshot(&self, id: &str) -> Result<SnapshotFile, RepoError> {
        let mut found = self
            .repo
            .get_all_snapshots()
            .map_err(self.rustic("listing snapshots"))?;
        found.retain(|snap| !id.is_empty() && snap.id.to_hex().starts_with(id));
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(RepoError::SnapshotNotFound { id: id.to_string(), location: self.location.clone() }),
            _ => Err(RepoError::SnapshotAmbiguous { id: id.to_string(), location: self.location.clone() }),
        }
    }

    /// Every entry of a snapshot (directories included), in tree order. Entries are read
    /// from the repository while iterating, on a thread of their own.
    pub fn ls(&self, snapshot: &str) -> Result<LsIter, RepoError> {
        let snap = self.find_snapshot(snapshot)?;
        let indexed = self.reopen()?.to_indexed().map_err(self.rustic("reading the index"))?;
        let node = indexed
            .node_from_snapshot_and_path(&snap, "")
            .map_err(self.rustic("reading the snapshot"))?;
        let (tx, rx): (SyncSender<Result<FileEntry, RepoError>>, Receiver<_>) = sync_channel(1024);
        let location = self.location.clone();
        std::thread::Builder::new()
            .name("hangar-backup-ls".into())
            .spawn(move || {
                let opts = LsOptions::default().recursive(true);
                let entries = match indexed.ls(&node, &opts) {
                    Ok(entries) => entries,
                    Err(source) => {
                        let _ = tx.send(Err(RepoError::Rustic { action: "listing the snapshot", location, source }));
                        return;
                    }
                };
                for entry in entries {
                    let item = entry
                        .map(|(path, node)| file_entry(&path, &node))
                        .map_err(|source| RepoError::Rustic {
                            action: "listing the snapshot",
                            location: location.clone(),
                            source,
                        });
                    let failed = item.is_err();
                    // A dropped iterator ends the listing.
                    if tx.send(item).is_err() || failed {
                        return;
                    }
                }
            })
            .expect("spawning the listing thread failed");
        Ok(LsIter(rx))
    }

    /// Restores a snapshot, or the file or directory at `path` within it, into
    /// `dest_dir` (created if missing): a directory's contents go into `dest_dir`, a
    /// file goes to `dest_dir/<its name>`.
    ///
    /// Data is authenticated as it is read: a corrupted pack stops the restore with
    /// `RepoError::Corrupted` instead of writing wrong bytes. The destination may then
    /// hold part of the restore: restore into a fresh directory and discard it on error.
    pub fn restore(
        &self,
        snapshot: &str,
        path: Option<&str>,
        dest_dir: &Path,
    ) -> Result<(), RepoError> {
        let _one = self.lock();
        let snap = self.find_snapshot(snapshot)?;
        let indexed = self.reopen()?.to_indexed().map_err(self.rustic("reading the index"))?;
        let path = path.unwrap_or("").trim_matches('/');
        let node = indexed.node_from_snapshot_and_path(&snap, path).map_err(|_| {
            RepoError::PathNotInSnapshot { snapshot: snapshot.to_string(), path: path.to_string() }
        })?;
        let dest = if node.is_dir() {
            dest_dir.to_path_buf()
        } else {
            std::fs::create_dir_all(dest_dir).map_err(|err| RepoError::Rustic {
                action: "creating the restore destination",
                location: dest_dir.display().to_string(),
                source: RusticError::with_source(ErrorKind::InputOutput, "creating `{path}` failed", err)
                    .attach_context("path", dest_dir.display().to_string()),
            })?;
            dest_dir.join(&node.name)
        };
        let dest = LocalDestination::new(&dest.to_string_lossy(), true, !node.is_dir())
            .map_err(self.rustic("opening the restore destination"))?;
        let opts = RestoreOptions::default();
        let ls_opts = LsOptions::default().recursive(true);
        let streamer = || indexed.ls(&node, &ls_opts).map_err(self.rustic("listing the snapshot"));
        let plan = indexed
            .prepare_restore(&opts, streamer()?, &dest, false)
            .map_err(self.rustic("planning the restore"))?;
        // rustic_core 0.13 unwraps read and decrypt results inside its restore threads,
        // so corrupted data surfaces as a panic; it is caught here and becomes an error.
        let restored = catch_unwind(AssertUnwindSafe(|| -> Result<(), RepoError> {
            indexed.restore(plan, &opts, streamer()?, &dest).map_err(self.rustic("restore"))
        }));
        match restored {
            Ok(result) => result,
            Err(panic) => Err(RepoError::Corrupted {
                location: self.location.clone(),
                detail: panic_message(&*panic),
            }),
        }
    }

    /// Checks the repository's structure; with `read_data`, also reads every pack and
    /// verifies its hash and every blob in it (slow: reads the whole repository).
    pub fn check(&self, read_data: bool) -> Result<CheckReport, RepoError> {
        let _one = self.lock();
        let opts = CheckOptions::default().read_data(read_data);
        let results = self.repo.check(opts).map_err(self.rustic("check"))?;
        let mut report = CheckReport::default();
        for (level, finding) in results.0 {
            // The level type is not exported by rustic_core; its Debug form is stable.
            if format!("{level:?}") == "Warn" {
                report.warnings.push(finding.to_string());
            } else {
                report.errors.push(finding.to_string());
            }
        }
        Ok(report)
    }

    /// Removes the snapshots `keep` does not keep (per hostname, i.e. per instance),
    /// then prunes the data no snapshot uses any more. Returns the removed snapshot ids.
    ///
    /// Prune deletes unused packs only a day after marking them (rustic_core's default),
    /// so a backup running concurrently never loses data it re-uses.
    pub fn forget(&self, keep: &KeepPolicy) -> Result<Vec<String>, RepoError> {
        let _one = self.lock();
        let to_i32 = |n: Option<u32>| n.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        let mut opts = KeepOptions::default();
        opts.keep_last = to_i32(keep.last);
        opts.keep_daily = to_i32(keep.daily);
        opts.keep_weekly = to_i32(keep.weekly);
        opts.keep_monthly = to_i32(keep.monthly);
        let now = rustic_core::jiff::Zoned::now();
        let mut by_host: std::collections::BTreeMap<String, Vec<SnapshotFile>> = Default::default();
        for snap in self.repo.get_all_snapshots().map_err(self.rustic("listing snapshots"))? {
            by_host.entry(snap.hostname.clone()).or_default().push(snap);
        }
        let mut remove = Vec::new();
        for snaps in by_host.into_values() {
            let decided = opts.apply(snaps, &now).map_err(self.rustic("applying the keep policy"))?;
            remove.extend(decided.into_iter().filter(|s| !s.keep).map(|s| s.snapshot.id));
        }
        self.remove_and_prune(&remove, PruneOptions::default())?;
        Ok(remove.iter().map(|id| id.to_hex().to_string()).collect())
    }

    /// Purges every snapshot of `hostname` (an instance deleted with `--hard`) and
    /// deletes the data only they used at once. Run it when no backup of this
    /// repository is running: data a concurrent backup re-uses could be deleted.
    pub fn purge_host(&self, hostname: &str) -> Result<Vec<String>, RepoError> {
        let _one = self.lock();
        let remove: Vec<_> = self
            .repo
            .get_matching_snapshots(|snap| snap.hostname == hostname)
            .map_err(self.rustic("listing snapshots"))?
            .into_iter()
            .map(|snap| snap.id)
            .collect();
        let mut opts = PruneOptions::default();
        opts.instant_delete = true;
        opts.max_unused = rustic_core::LimitOption::Unlimited;
        self.remove_and_prune(&remove, opts)?;
        Ok(remove.iter().map(|id| id.to_hex().to_string()).collect())
    }

    fn remove_and_prune(
        &self,
        remove: &[rustic_core::repofile::SnapshotId],
        opts: PruneOptions,
    ) -> Result<(), RepoError> {
        if remove.is_empty() {
            return Ok(());
        }
        self.repo.delete_snapshots(remove).map_err(self.rustic("removing snapshots"))?;
        let plan = self.repo.prune_plan(&opts).map_err(self.rustic("planning prune"))?;
        self.repo.prune(&opts, plan).map_err(self.rustic("prune"))
    }

    /// Deletes the whole repository from its target (a tenant's purge).
    pub fn delete_all(target: &TargetSpec, repo_path: &str) -> Result<(), RepoError> {
        check_repo_path(repo_path)?;
        let location = target.restic_location(repo_path);
        let failed = |detail: String| RepoError::Delete { location: location.clone(), detail };
        match target {
            TargetSpec::Dir { path } => match std::fs::remove_dir_all(path.join(repo_path)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(failed(err.to_string())),
                _ => Ok(()),
            },
            TargetSpec::S3 { .. } => s3::delete_all(target, repo_path).map_err(|err| failed(err.to_string())),
        }
    }
}

fn summary_of(snap: &SnapshotFile) -> Option<BackupSummary> {
    let s = snap.summary.as_ref()?;
    Some(BackupSummary {
        snapshot_id: snap.id.to_hex().to_string(),
        time: to_offset(snap.time.timestamp()),
        files: s.total_files_processed,
        dirs: s.total_dirs_processed,
        bytes: s.total_bytes_processed,
        added_bytes: s.data_added_packed,
        files_new: s.files_new,
        files_changed: s.files_changed,
        duration_secs: s.backup_duration,
    })
}

fn to_offset(ts: rustic_core::jiff::Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ts.as_nanosecond())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Entries of a snapshot; see [`Repo::ls`].
pub struct LsIter(Receiver<Result<FileEntry, RepoError>>);

impl Iterator for LsIter {
    type Item = Result<FileEntry, RepoError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.recv().ok()
    }
}

fn file_entry(path: &Path, node: &rustic_core::repofile::Node) -> FileEntry {
    let kind = match &node.node_type {
        NodeType::File => FileKind::File,
        NodeType::Dir => FileKind::Dir,
        NodeType::Symlink { .. } => FileKind::Symlink {
            target: node.node_type.to_link().to_string_lossy().into_owned(),
        },
        _ => FileKind::Other,
    };
    FileEntry {
        path: path.to_string_lossy().trim_start_matches('/').to_string(),
        size: node.meta.size,
        mtime: node.meta.mtime.map(to_offset),
        kind,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a restore thread failed".to_string())
}
