//! Instance volumes behind one narrow trait: [`BtrfsPool`] (subvolumes with qgroup
//! limits and read-only snapshots, on a device or a loop file) and [`DirVolumes`]
//! (plain directories, no quotas) as the fallback. A new volume driver is a new file
//! that implements [`VolumeDriver`] and one line in [`VOLUMES`].

mod btrfs;
mod dir;
pub mod disk;

pub use btrfs::{BtrfsPool, PoolConfig};
pub use dir::DirVolumes;

use crate::identity::AgentPaths;
use futures_util::future::BoxFuture;
use hangar_types::{SnapshotId, VolumeId};
use std::path::PathBuf;
use std::sync::Arc;

/// Which volume driver an agent uses, with its settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeConfig {
    /// A name from [`VOLUMES`].
    pub driver: String,
    /// btrfs: the block device of the pool (never formatted if it holds a filesystem);
    /// none means a sparse loop file under the agent's storage dir.
    pub device: Option<PathBuf>,
    /// btrfs: the size of that loop file, created only if missing.
    pub loop_size_mib: u64,
}

impl Default for VolumeConfig {
    fn default() -> Self {
        VolumeConfig { driver: VOLUMES[0].name.to_string(), device: None, loop_size_mib: 20480 }
    }
}

/// One volume driver an agent can be started with.
pub struct VolumeDriverInfo {
    /// What `--volumes` takes and reports show (`volume=<name>`).
    pub name: &'static str,
    /// Opens (making, formatting if blank, mounting as needed) the agent's volumes.
    pub open: for<'a> fn(&'a AgentPaths, &'a VolumeConfig) -> BoxFuture<'a, Result<Arc<dyn VolumeDriver>, VolumeError>>,
    /// The volumes an agent dir holds now, read without opening (mounting) anything.
    pub present: fn(&AgentPaths) -> Vec<VolumeId>,
    /// Releases what the driver holds on the machine (mounts, loop devices), keeping
    /// the data. Ok if there is nothing.
    pub release: for<'a> fn(&'a AgentPaths) -> BoxFuture<'a, Result<(), VolumeError>>,
}

/// Every volume driver, the default first.
pub static VOLUMES: &[VolumeDriverInfo] = &[
    VolumeDriverInfo { name: "btrfs", open: btrfs::open, present: btrfs::present, release: btrfs::release },
    VolumeDriverInfo { name: "dir", open: dir::open, present: dir::present, release: dir::release },
];

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{device} holds a {fs} filesystem: hangar never formats a disk that holds data; give an empty device or a btrfs one")]
    Occupied { device: String, fs: String },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no volume '{0}'")]
    NotFound(String),
}

#[async_trait::async_trait]
pub trait VolumeDriver: Send + Sync {
    fn name(&self) -> &'static str;
    /// Creates the volume if absent and applies a limit of `size_mib`; returns its path.
    async fn ensure(&self, id: &VolumeId, size_mib: u64) -> Result<PathBuf, VolumeError>;
    fn path(&self, id: &VolumeId) -> PathBuf;
    /// Whether the volume is there: its path is a directory.
    async fn exists(&self, id: &VolumeId) -> Result<bool, VolumeError> {
        Ok(self.path(id).is_dir())
    }
    /// The volumes present (entries that are no volume id, which hangar never makes,
    /// are not listed).
    async fn list(&self) -> Result<Vec<VolumeId>, VolumeError>;
    /// Removes the volume and its snapshots. Ok if absent.
    async fn delete(&self, id: &VolumeId) -> Result<(), VolumeError>;
    async fn usage_bytes(&self, id: &VolumeId) -> Result<Option<u64>, VolumeError>;
    /// A read-only snapshot named `snap`.
    async fn snapshot(&self, id: &VolumeId, snap: &SnapshotId) -> Result<PathBuf, VolumeError>;
    async fn list_snapshots(&self, id: &VolumeId) -> Result<Vec<SnapshotId>, VolumeError>;
    async fn delete_snapshot(&self, id: &VolumeId, snap: &SnapshotId) -> Result<(), VolumeError>;
    /// Replaces the volume by a writable copy of its snapshot `snap` (the snapshot
    /// stays), limited to `size_mib` like the volume was. The volume's path never
    /// disappears: the new one is swapped in atomically (`RENAME_EXCHANGE`), then the
    /// old one removed. Ownership is the snapshot's, which is the volume's as it was.
    /// The caller makes sure no sandbox has the volume mounted.
    async fn restore_snapshot(&self, id: &VolumeId, snap: &SnapshotId, size_mib: u64) -> Result<(), VolumeError>;
    /// Every snapshot of every volume, with its time and sizes as far as the driver
    /// can tell (one pass over the pool, not one per snapshot).
    async fn snapshot_infos(&self) -> Result<Vec<SnapshotInfo>, VolumeError>;

    // Host-to-host transfers (`crate::transfer`): only drivers that can send and
    // receive snapshots (btrfs) have these; the others refuse transfers.
    /// Where volume `id`'s snapshots are (`<dir>/<snapshot>`).
    fn snapshot_dir(&self, _id: &VolumeId) -> Option<PathBuf> {
        None
    }
    /// Where transfers stage what they receive (`<dir>/<volume>/<snapshot>`), on the
    /// pool's filesystem, so a volume is made from a staged snapshot in place.
    fn transfer_dir(&self) -> Option<PathBuf> {
        None
    }
    /// Removes what is at `path` under the transfer dir: a subvolume (with any nested
    /// in it), or a directory and everything in it. Ok if absent.
    async fn remove_staged(&self, _path: &std::path::Path) -> Result<(), VolumeError> {
        Ok(())
    }
    /// Whether the subvolume at `path` is complete: read-only, as `btrfs receive`
    /// leaves one only once it has received all of it.
    async fn is_sealed(&self, _path: &std::path::Path) -> Result<bool, VolumeError> {
        Ok(false)
    }
    /// Makes volume `id` a writable snapshot of the staged subvolume at `staged`
    /// (instant, sharing every block), limited to `size_mib`. The volume must not exist.
    async fn adopt_staged(&self, _id: &VolumeId, _staged: &std::path::Path, _size_mib: u64) -> Result<PathBuf, VolumeError> {
        Err(VolumeError::NotFound("this volume driver cannot adopt transferred snapshots".into()))
    }
    /// Makes the staged (sealed, read-only) subvolume at `staged` volume `id`'s snapshot
    /// `snapshot`, as it is (a user's snapshot carried by a move). Ok if that snapshot
    /// exists already (a retry).
    async fn adopt_staged_snapshot(&self, _id: &VolumeId, _staged: &std::path::Path, _snapshot: &SnapshotId) -> Result<(), VolumeError> {
        Err(VolumeError::NotFound("this volume driver cannot adopt transferred snapshots".into()))
    }
}

/// One snapshot as a driver sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub volume: VolumeId,
    pub id: SnapshotId,
    /// Unix seconds.
    pub created: Option<i64>,
    pub referenced_bytes: Option<u64>,
    pub exclusive_bytes: Option<u64>,
}

/// Where a restore builds the new volume before swapping it in: in the volume's
/// snapshot dir, under a name that is no id (so never listed), removed if a crash left it.
pub(crate) const RESTORING: &str = ".restoring";

/// For a restore of volume `id` (at `volume`, its snapshots in `snaps`) from `snap`:
/// the snapshot, the volume and where the new volume is built, once both exist.
pub(crate) fn restore_paths(snaps: &std::path::Path, volume: &std::path::Path, id: &VolumeId, snap: &SnapshotId) -> Result<(PathBuf, PathBuf, PathBuf), VolumeError> {
    let src = snaps.join(snap);
    if !src.is_dir() {
        return Err(VolumeError::NotFound(format!("{id}/{snap}")));
    }
    if !volume.is_dir() {
        return Err(VolumeError::NotFound(id.to_string()));
    }
    Ok((src, volume.to_path_buf(), snaps.join(RESTORING)))
}

/// Swaps two paths atomically (both must exist, on one filesystem).
pub(crate) fn exchange(a: &std::path::Path, b: &std::path::Path) -> Result<(), VolumeError> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE)
        .map_err(|e| VolumeError::Io { context: format!("cannot swap {} and {}", a.display(), b.display()), source: e.into() })
}

/// Runs a command; its stdout on success, a `Command` error with its stderr otherwise.
pub(crate) async fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<String, VolumeError> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| VolumeError::Spawn { program: program.into(), source })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(VolumeError::Command {
        command: format!("{program} {}", args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// The sorted entries of a directory that are ids of kind `T` (ids are path components
/// checked against a safe alphabet); none if it does not exist.
pub(crate) fn ids_in<T: std::str::FromStr + Ord>(dir: &std::path::Path) -> Vec<T> {
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    let mut v: Vec<T> = rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    v.sort();
    v
}

/// Makes a volume owned by the ids of the sandbox that mounts it at /home: its root by
/// root inside (`ids.base`). A volume whose root is owned by an id below `ids.size` is
/// new, or was made before sandboxes had user namespaces: every entry in it is shifted
/// into the range once (host id n becomes `ids.base + n`), so root inside still owns
/// what root made. Otherwise one stat and nothing else.
pub async fn own_root(path: &std::path::Path, ids: hangar_types::idmap::IdRange) -> Result<(), VolumeError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(io(format!("cannot stat {}", path.display())))?;
    if meta.uid() == ids.base && meta.gid() == ids.base {
        return Ok(());
    }
    if meta.uid() >= ids.size {
        // Another id outside the range (moved by hand?): the root only.
        return std::os::unix::fs::chown(path, Some(ids.base), Some(ids.base)).map_err(io(format!("cannot chown {}", path.display())));
    }
    let root = path.to_path_buf();
    tokio::task::spawn_blocking(move || shift_ids(&root, ids))
        .await
        .map_err(|e| VolumeError::Io { context: "volume ownership worker".into(), source: std::io::Error::other(e.to_string()) })?
}

/// `lchown` of `path` and everything under it (not following symlinks) from ids n to
/// `ids.base + n`, for ids inside the range; the set-id bits a chown clears are put back.
fn shift_ids(path: &std::path::Path, ids: hangar_types::idmap::IdRange) -> Result<(), VolumeError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(path).map_err(io(format!("cannot stat {}", path.display())))?;
    let (uid, gid) = (ids.host_id(meta.uid()), ids.host_id(meta.gid()));
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::lchown(path, uid, gid).map_err(io(format!("cannot chown {}", path.display())))?;
        if !meta.file_type().is_symlink() && meta.mode() & 0o6000 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(io(format!("cannot chmod {}", path.display())))?;
        }
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(path).map_err(io(format!("cannot list {}", path.display())))? {
            shift_ids(&e.map_err(io(format!("cannot list {}", path.display())))?.path(), ids)?;
        }
    }
    Ok(())
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VolumeError {
    let context = context.into();
    move |source| VolumeError::Io { context, source }
}
