//! A btrfs pool: one filesystem on a device or a sparse loop file, a subvolume per
//! volume with a qgroup limit, read-only snapshots beside them.
//!
//! Disk safety: before anything is formatted the target is probed with `blkid -p`;
//! only a blank target is ever formatted, a btrfs one is used as is, anything else is
//! refused. `mkfs.btrfs` is never given `-f`.

use super::disk::{probe, Probe};
use super::{exchange, ids_in, io, restore_paths, run, SnapshotInfo, VolumeConfig, VolumeDriver, VolumeError};
use hangar_types::{SnapshotId, VolumeId};
use crate::identity::AgentPaths;
use futures_util::future::BoxFuture;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(super) fn open<'a>(paths: &'a AgentPaths, cfg: &'a VolumeConfig) -> BoxFuture<'a, Result<Arc<dyn VolumeDriver>, VolumeError>> {
    Box::pin(async move {
        let pool = BtrfsPool::open(PoolConfig { root: paths.storage(), device: cfg.device.clone(), loop_size_mib: cfg.loop_size_mib }).await?;
        Ok(Arc::new(pool) as Arc<dyn VolumeDriver>)
    })
}

/// Unmounted, the mount point is an empty dir: nothing is listed then.
pub(super) fn present(paths: &AgentPaths) -> Vec<VolumeId> {
    ids_in(&volumes_dir(&mount_point(&paths.storage())))
}

fn volumes_dir(mount: &Path) -> PathBuf {
    mount.join("volumes")
}

pub(super) fn release(paths: &AgentPaths) -> BoxFuture<'_, Result<(), VolumeError>> {
    Box::pin(async move { BtrfsPool::teardown(&paths.storage()).await })
}

#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Directory for the pool's mount point (`<root>/pool`) and loop file (`<root>/pool.img`).
    pub root: PathBuf,
    /// A block device to use instead of a loop file.
    pub device: Option<PathBuf>,
    /// Size of the sparse loop file, created only if missing.
    pub loop_size_mib: u64,
}

pub struct BtrfsPool {
    mount: PathBuf,
}

fn mount_point(root: &Path) -> PathBuf {
    root.join("pool")
}

fn image(root: &Path) -> PathBuf {
    root.join("pool.img")
}

/// Whether `path` is a mount point, per /proc/self/mountinfo.
fn is_mounted(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else { return false };
    let target = canon.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(target.as_str())))
}

/// Loop devices attached to `file`.
async fn loops_of(file: &Path) -> Result<Vec<String>, VolumeError> {
    let out = run("losetup", &["-j".as_ref(), file.as_os_str()]).await?;
    Ok(out.lines().filter_map(|l| l.split(':').next()).filter(|d| d.starts_with("/dev/loop")).map(str::to_string).collect())
}

fn a(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Attaches `image` to a free loop device with direct I/O: the device reads and writes
/// the image file with O_DIRECT instead of through the host filesystem's page cache,
/// where every byte written to a volume was copied once more (a kernel worker's
/// `memcpy` took a core while a move received 1 GiB) and cached twice. A filesystem
/// that has no O_DIRECT (tmpfs) gets a buffered device, as before.
async fn attach_loop(image: &Path) -> Result<String, VolumeError> {
    match run("losetup", &[a("--find"), a("--show"), a("--direct-io=on"), image.as_os_str()]).await {
        Ok(dev) => Ok(dev.trim().to_string()),
        Err(e) => {
            tracing::info!(image = %image.display(), error = %e, "no direct I/O for the pool's loop device; using a buffered one");
            // losetup may have attached the device before refusing the flag.
            for dev in loops_of(image).await? {
                let _ = run("losetup", &[a("-d"), a(&dev)]).await;
            }
            Ok(run("losetup", &[a("--find"), a("--show"), image.as_os_str()]).await?.trim().to_string())
        }
    }
}

impl BtrfsPool {
    /// Opens the pool, creating, formatting (only if blank) and mounting it as needed.
    /// Re-opening an existing pool re-uses its loop device and mount.
    pub async fn open(cfg: PoolConfig) -> Result<BtrfsPool, VolumeError> {
        let mount = mount_point(&cfg.root);
        std::fs::create_dir_all(&mount).map_err(io(format!("cannot create {}", mount.display())))?;
        if !is_mounted(&mount) {
            let backing = match &cfg.device {
                Some(d) => d.clone(),
                None => {
                    let img = image(&cfg.root);
                    if !img.exists() {
                        // 0600: the image holds every volume's data.
                        let f = {
                            use std::os::unix::fs::OpenOptionsExt;
                            std::fs::OpenOptions::new().write(true).create_new(true).mode(crate::files::PRIVATE_FILE).open(&img)
                        }
                        .map_err(io(format!("cannot create {}", img.display())))?;
                        f.set_len(cfg.loop_size_mib * 1024 * 1024).map_err(io(format!("cannot size {}", img.display())))?;
                    }
                    img
                }
            };
            match probe(&backing).await? {
                Probe::Blank => {
                    run("mkfs.btrfs", &[a("-q"), a("-L"), a("hangar"), backing.as_os_str()]).await?;
                }
                Probe::Holds(fs) if fs == "btrfs" => {}
                Probe::Holds(fs) => return Err(VolumeError::Occupied { device: backing.display().to_string(), fs }),
            }
            let dev = if cfg.device.is_some() {
                backing.display().to_string()
            } else {
                match loops_of(&backing).await?.into_iter().next() {
                    Some(d) => d,
                    None => attach_loop(&backing).await?,
                }
            };
            run("mount", &[a("-t"), a("btrfs"), a(&dev), mount.as_os_str()]).await?;
        }
        if cfg.device.is_none() {
            // Also an image an older agent made 0644.
            let img = image(&cfg.root);
            crate::files::make_private(&img).map_err(io(format!("cannot chmod {}", img.display())))?;
        }
        run("btrfs", &[a("quota"), a("enable"), mount.as_os_str()]).await?;
        for d in ["volumes", "snapshots"] {
            std::fs::create_dir_all(mount.join(d)).map_err(io(format!("cannot create {d} in the pool")))?;
        }
        Ok(BtrfsPool { mount })
    }

    pub fn mount_path(&self) -> &Path {
        &self.mount
    }

    /// Unmounts the pool under `root` and detaches its loop device, if any. Leaves the
    /// image file (and so the data) in place.
    pub async fn teardown(root: &Path) -> Result<(), VolumeError> {
        let mount = mount_point(root);
        if is_mounted(&mount)
            && run("umount", &[mount.as_os_str()]).await.is_err() {
                // Busy (a sandbox still holds a bind): detach lazily so it goes when freed.
                run("umount", &[a("-l"), mount.as_os_str()]).await?;
            }
        let img = image(root);
        if img.exists() {
            for dev in loops_of(&img).await? {
                run("losetup", &[a("-d"), a(&dev)]).await?;
            }
            // A device still busy right after the unmount is only marked for autoclear:
            // wait until the kernel has really let go of it.
            for _ in 0..100 {
                if loops_of(&img).await?.is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    fn snaps(&self, id: &VolumeId) -> PathBuf {
        self.mount.join("snapshots").join(id)
    }
}

#[async_trait::async_trait]
impl VolumeDriver for BtrfsPool {
    fn name(&self) -> &'static str {
        "btrfs"
    }

    async fn ensure(&self, id: &VolumeId, size_mib: u64) -> Result<PathBuf, VolumeError> {
        let p = self.path(id);
        // The ioctls `btrfs subvolume create` and `btrfs qgroup limit` make, without the
        // two process spawns (~7 ms on the start path).
        let (parent, name) = (volumes_dir(&self.mount), id.to_string());
        let path = p.clone();
        tokio::task::spawn_blocking(move || -> Result<(), VolumeError> {
            if !path.exists() {
                ioctl::create_subvolume(&parent, &name).map_err(io(format!("cannot create the subvolume {}", path.display())))?;
            }
            ioctl::limit_referenced(&path, size_mib * 1024 * 1024).map_err(io(format!("cannot set the qgroup limit of {}", path.display())))
        })
        .await
        .map_err(|e| VolumeError::Io { context: "volume worker".into(), source: std::io::Error::other(e.to_string()) })??;
        Ok(p)
    }

    fn path(&self, id: &VolumeId) -> PathBuf {
        volumes_dir(&self.mount).join(id)
    }

    async fn list(&self) -> Result<Vec<VolumeId>, VolumeError> {
        Ok(ids_in(&volumes_dir(&self.mount)))
    }

    async fn delete(&self, id: &VolumeId) -> Result<(), VolumeError> {
        for s in self.list_snapshots(id).await? {
            self.delete_snapshot(id, &s).await?;
        }
        // What a restore cut off by a crash left (no id, so not listed above).
        let restoring = self.snaps(id).join(super::RESTORING);
        if restoring.exists() {
            delete_subvolume_tree(&restoring).await?;
        }
        let _ = std::fs::remove_dir(self.snaps(id));
        let p = self.path(id);
        if p.exists() {
            delete_subvolume_tree(&p).await?;
        }
        Ok(())
    }

    async fn usage_bytes(&self, id: &VolumeId) -> Result<Option<u64>, VolumeError> {
        let p = self.path(id);
        if !p.exists() {
            return Ok(None);
        }
        // `-f` limits the listing to the qgroup of this subvolume; the last row is it.
        let out = run("btrfs", &[a("qgroup"), a("show"), a("--raw"), a("-f"), p.as_os_str()]).await?;
        Ok(out.lines().last().and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse().ok()))
    }

    async fn snapshot(&self, id: &VolumeId, snap: &SnapshotId) -> Result<PathBuf, VolumeError> {
        let src = self.path(id);
        if !src.exists() {
            return Err(VolumeError::NotFound(id.to_string()));
        }
        std::fs::create_dir_all(self.snaps(id)).map_err(io("cannot create the snapshot dir"))?;
        let dst = self.snaps(id).join(snap);
        run("btrfs", &[a("subvolume"), a("snapshot"), a("-r"), src.as_os_str(), dst.as_os_str()]).await?;
        Ok(dst)
    }

    async fn list_snapshots(&self, id: &VolumeId) -> Result<Vec<SnapshotId>, VolumeError> {
        Ok(ids_in(&self.snaps(id)))
    }

    async fn delete_snapshot(&self, id: &VolumeId, snap: &SnapshotId) -> Result<(), VolumeError> {
        let p = self.snaps(id).join(snap);
        if p.exists() {
            delete_subvolume_tree(&p).await?;
        }
        Ok(())
    }

    /// A writable snapshot of the read-only one (instant, sharing every block), given
    /// the volume's qgroup limit, swapped in; the old subvolume is then deleted.
    async fn restore_snapshot(&self, id: &VolumeId, snap: &SnapshotId, size_mib: u64) -> Result<(), VolumeError> {
        let (src, vol, tmp) = restore_paths(&self.snaps(id), &self.path(id), id, snap)?;
        if tmp.exists() {
            delete_subvolume_tree(&tmp).await?;
        }
        writable_snapshot(&src, &tmp, size_mib).await?;
        exchange(&tmp, &vol)?;
        delete_subvolume_tree(&tmp).await
    }

    /// Two commands for the whole pool: `btrfs subvolume list -s` (ids, creation times,
    /// paths; in UTC) and `btrfs qgroup show` (sizes as of the last transaction commit:
    /// a snapshot commits one, so a new snapshot's are current; others lag at most the
    /// commit interval, 30 s by default, which is not worth a sync of the pool).
    async fn snapshot_infos(&self) -> Result<Vec<SnapshotInfo>, VolumeError> {
        let list = run("env", &[a("TZ=UTC"), a("btrfs"), a("subvolume"), a("list"), a("-s"), self.mount.as_os_str()]).await?;
        let sizes = run("btrfs", &[a("qgroup"), a("show"), a("--raw"), self.mount.as_os_str()]).await?;
        Ok(parse_snapshot_infos(&list, &sizes))
    }

    fn snapshot_dir(&self, id: &VolumeId) -> Option<PathBuf> {
        Some(self.snaps(id))
    }

    fn transfer_dir(&self) -> Option<PathBuf> {
        Some(self.mount.join("transfers"))
    }

    async fn remove_staged(&self, path: &Path) -> Result<(), VolumeError> {
        remove_staged(path.to_path_buf()).await
    }

    async fn is_sealed(&self, path: &Path) -> Result<bool, VolumeError> {
        let out = run("btrfs", &[a("property"), a("get"), a("-ts"), path.as_os_str(), a("ro")]).await?;
        Ok(out.trim() == "ro=true")
    }

    async fn adopt_staged(&self, id: &VolumeId, staged: &Path, size_mib: u64) -> Result<PathBuf, VolumeError> {
        let vol = self.path(id);
        if vol.exists() {
            return Err(VolumeError::Io { context: format!("volume {id} exists already"), source: std::io::Error::from(std::io::ErrorKind::AlreadyExists) });
        }
        writable_snapshot(staged, &vol, size_mib).await?;
        Ok(vol)
    }

    async fn adopt_staged_snapshot(&self, id: &VolumeId, staged: &Path, snapshot: &SnapshotId) -> Result<(), VolumeError> {
        let dst = self.snaps(id).join(snapshot);
        if dst.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(self.snaps(id)).map_err(io(format!("cannot make {}", self.snaps(id).display())))?;
        // A read-only snapshot of the received subvolume (instant, sharing its blocks):
        // btrfs refuses to rename a read-only subvolume, and the staged one goes with
        // the staging. Atomic: it exists whole or not at all.
        run("btrfs", &[a("subvolume"), a("snapshot"), a("-r"), staged.as_os_str(), dst.as_os_str()]).await?;
        Ok(())
    }
}

/// Joins `btrfs subvolume list -s` lines (`ID 257 gen 10 cgen 9 top level 5 otime
/// 2026-11-30 18:15:16 path snapshots/<volume>/<snapshot>`, times in UTC) with `btrfs
/// qgroup show --raw` rows (`0/257 16384 16384 ...`) by subvolume id. Snapshots outside
/// `snapshots/`, or whose names are no ids, are not listed.
fn parse_snapshot_infos(list: &str, qgroups: &str) -> Vec<SnapshotInfo> {
    let sizes: std::collections::HashMap<&str, (Option<u64>, Option<u64>)> = qgroups
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?.strip_prefix("0/")?;
            Some((id, (f.next().and_then(|n| n.parse().ok()), f.next().and_then(|n| n.parse().ok()))))
        })
        .collect();
    let mut out = vec![];
    for l in list.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let field = |k: &str| f.iter().position(|x| *x == k).and_then(|i| f.get(i + 1)).copied();
        let (Some(id), Some(path)) = (field("ID"), l.split_once(" path ").map(|(_, p)| p)) else { continue };
        let mut parts = path.split('/');
        let (Some("snapshots"), Some(volume), Some(snap), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else { continue };
        let (Ok(volume), Ok(snap)) = (volume.parse::<VolumeId>(), snap.parse::<SnapshotId>()) else { continue };
        let created = field("otime").zip(f.iter().position(|x| *x == "otime").and_then(|i| f.get(i + 2))).and_then(|(d, t)| hangar_types::snapshots::utc_seconds(d, t));
        let (referenced_bytes, exclusive_bytes) = sizes.get(id).copied().unwrap_or((None, None));
        out.push(SnapshotInfo { volume, id: snap, created, referenced_bytes, exclusive_bytes });
    }
    out
}

/// A writable snapshot of `src` at `dst` (instant, sharing every block), limited to
/// `size_mib` like a volume.
async fn writable_snapshot(src: &Path, dst: &Path, size_mib: u64) -> Result<(), VolumeError> {
    run("btrfs", &[a("subvolume"), a("snapshot"), src.as_os_str(), dst.as_os_str()]).await?;
    let limited = dst.to_path_buf();
    tokio::task::spawn_blocking(move || ioctl::limit_referenced(&limited, size_mib * 1024 * 1024))
        .await
        .map_err(|e| VolumeError::Io { context: "volume worker".into(), source: std::io::Error::other(e.to_string()) })?
        .map_err(io(format!("cannot set the qgroup limit of {}", dst.display())))
}

/// A subvolume (with those nested in it), or a directory and everything in it.
fn remove_staged(path: PathBuf) -> BoxFuture<'static, Result<(), VolumeError>> {
    Box::pin(async move {
        use std::os::unix::fs::MetadataExt;
        let Ok(md) = std::fs::symlink_metadata(&path) else { return Ok(()) };
        if md.is_dir() && md.ino() == SUBVOLUME_ROOT_INO {
            return delete_subvolume_tree(&path).await;
        }
        if !md.is_dir() {
            return std::fs::remove_file(&path).map_err(io(format!("cannot remove {}", path.display())));
        }
        for e in std::fs::read_dir(&path).map_err(io(format!("cannot list {}", path.display())))?.flatten() {
            remove_staged(e.path()).await?;
        }
        std::fs::remove_dir(&path).map_err(io(format!("cannot remove {}", path.display())))
    })
}

/// btrfs gives the root directory of every subvolume inode 256 (`BTRFS_FIRST_FREE_OBJECTID`).
const SUBVOLUME_ROOT_INO: u64 = 256;

/// Deletes the subvolume at `root` and every subvolume nested anywhere inside it,
/// deepest first: btrfs refuses to delete a subvolume that still holds one
/// ("Directory not empty"), and a volume must never become undeletable because a
/// subvolume was made inside it.
async fn delete_subvolume_tree(root: &Path) -> Result<(), VolumeError> {
    let top = root.to_path_buf();
    let nested = tokio::task::spawn_blocking(move || nested_subvolumes(&top))
        .await
        .map_err(|e| VolumeError::Io { context: "volume worker".into(), source: std::io::Error::other(e.to_string()) })?;
    for sub in nested {
        run("btrfs", &[a("subvolume"), a("delete"), sub.as_os_str()]).await?;
    }
    run("btrfs", &[a("subvolume"), a("delete"), root.as_os_str()]).await?;
    Ok(())
}

/// The subvolumes nested inside the subvolume at `root`, children after their own
/// nested ones (the order to delete them in). The walk reads directories only (file
/// types come from readdir) and stats each directory once; it follows no symlink and
/// enters no mount point (a mount inside makes the delete fail, visibly, instead of
/// reaching into another filesystem). Unreadable parts are skipped: the delete then
/// names what is left.
fn nested_subvolumes(root: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    // mountinfo names canonical paths.
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let mounts = mount_points_under(&root);
    let mut found = vec![];
    // (dir, whether its children were pushed): an explicit stack, since a tenant
    // controls how deep the tree is.
    let mut stack: Vec<(PathBuf, bool)> = vec![(root.clone(), false)];
    while let Some((dir, expanded)) = stack.pop() {
        if expanded {
            if dir != root {
                found.push(dir);
            }
            continue;
        }
        let is_subvolume = dir != root && std::fs::symlink_metadata(&dir).is_ok_and(|m| m.ino() == SUBVOLUME_ROOT_INO);
        // Ordinary dirs are walked through but not deleted; subvolumes come back
        // after their children.
        if is_subvolume {
            stack.push((dir.clone(), true));
        }
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) && !mounts.contains(&e.path()) {
                stack.push((e.path(), false));
            }
        }
    }
    found
}

/// Mount points strictly below `root`, per /proc/self/mountinfo.
fn mount_points_under(root: &Path) -> std::collections::HashSet<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return Default::default() };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(root) && m != root)
        .collect()
}

/// The two btrfs ioctls on the start path (linux/btrfs.h). The only `unsafe` in the
/// workspace: two ioctl calls with fixed-layout arguments.
#[allow(unsafe_code)]
mod ioctl {
    use std::os::fd::AsRawFd;
    use std::path::Path;

    /// `struct btrfs_ioctl_vol_args`.
    #[repr(C)]
    pub struct VolArgs {
        fd: i64,
        name: [u8; 4088],
    }

    /// `struct btrfs_ioctl_qgroup_limit_args` (with its `struct btrfs_qgroup_limit`).
    #[repr(C)]
    pub struct QgroupLimitArgs {
        qgroupid: u64,
        flags: u64,
        max_rfer: u64,
        max_excl: u64,
        rsv_rfer: u64,
        rsv_excl: u64,
    }

    const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;

    nix::ioctl_write_ptr!(btrfs_subvol_create, 0x94, 14, VolArgs);
    // The kernel declares it _IOR although it only reads the argument.
    nix::ioctl_read!(btrfs_qgroup_limit, 0x94, 43, QgroupLimitArgs);

    /// Creates the subvolume `name` in the directory `parent`.
    pub fn create_subvolume(parent: &Path, name: &str) -> std::io::Result<()> {
        let dir = std::fs::File::open(parent)?;
        let mut args = VolArgs { fd: 0, name: [0; 4088] };
        if name.is_empty() || name.len() >= args.name.len() || name.contains('/') {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad subvolume name {name:?}")));
        }
        args.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: `dir` is an open directory and `args` a properly laid out argument.
        unsafe { btrfs_subvol_create(dir.as_raw_fd(), &args) }.map_err(std::io::Error::from)?;
        Ok(())
    }

    /// Limits the referenced bytes of the subvolume at `path` (its own qgroup 0/id).
    pub fn limit_referenced(path: &Path, bytes: u64) -> std::io::Result<()> {
        let f = std::fs::File::open(path)?;
        // qgroupid 0: the kernel takes the qgroup of the subvolume the fd is in.
        let mut args = QgroupLimitArgs { qgroupid: 0, flags: BTRFS_QGROUP_LIMIT_MAX_RFER, max_rfer: bytes, max_excl: 0, rsv_rfer: 0, rsv_excl: 0 };
        // SAFETY: `f` is open on the subvolume and `args` a properly laid out argument.
        unsafe { btrfs_qgroup_limit(f.as_raw_fd(), &mut args) }.map_err(std::io::Error::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshot_listing_joins_times_and_sizes() {
        let list = "ID 257 gen 10 cgen 9 top level 5 otime 2026-11-30 18:15:16 path snapshots/sb-1/before\n\
                    ID 258 gen 11 cgen 11 top level 5 otime 2026-11-30 18:16:00 path volumes/sb-1\n\
                    ID 259 gen 12 cgen 12 top level 5 otime 2026-11-30 18:17:00 path snapshots/sb-1/.restoring\n\
                    ID 260 gen 13 cgen 13 top level 5 otime - path snapshots/sb-2/auto-20261130-181700\n";
        let q = "Qgroupid    Referenced    Exclusive   Path\n--------    ----------    ---------   ----\n0/257  1048576  4096  snapshots/sb-1/before\n0/260 16384 16384 x\n";
        let got = super::parse_snapshot_infos(list, q);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].volume.as_str(), got[0].id.as_str()), ("sb-1", "before"));
        assert_eq!(got[0].created, Some(1_796_062_516));
        assert_eq!((got[0].referenced_bytes, got[0].exclusive_bytes), (Some(1048576), Some(4096)));
        assert_eq!((got[1].id.as_str(), got[1].created, got[1].exclusive_bytes), ("auto-20261130-181700", None, Some(16384)));
    }
}
