//! Plain-directory volumes: no quotas, snapshots by copy. For hosts without btrfs.

use super::{exchange, ids_in, io, restore_paths, run, SnapshotInfo, VolumeConfig, VolumeDriver, VolumeError};
use hangar_types::{SnapshotId, VolumeId};
use crate::identity::AgentPaths;
use futures_util::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Arc;

pub(super) fn open<'a>(paths: &'a AgentPaths, _: &'a VolumeConfig) -> BoxFuture<'a, Result<Arc<dyn VolumeDriver>, VolumeError>> {
    Box::pin(async move {
        let root = paths.storage();
        std::fs::create_dir_all(&root).map_err(io(format!("cannot create {}", root.display())))?;
        Ok(Arc::new(DirVolumes::new(root)) as Arc<dyn VolumeDriver>)
    })
}

pub(super) fn present(paths: &AgentPaths) -> Vec<VolumeId> {
    ids_in(&volumes_dir(&paths.storage()))
}

fn volumes_dir(root: &std::path::Path) -> PathBuf {
    root.join("volumes")
}

/// Plain directories hold no mounts or devices.
pub(super) fn release(_: &AgentPaths) -> BoxFuture<'_, Result<(), VolumeError>> {
    Box::pin(async { Ok(()) })
}

pub struct DirVolumes {
    root: PathBuf,
}

impl DirVolumes {
    pub fn new(root: PathBuf) -> Self {
        DirVolumes { root }
    }
    fn snaps(&self, id: &VolumeId) -> PathBuf {
        self.root.join("snapshots").join(id)
    }
}

fn dir_size(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[async_trait::async_trait]
impl VolumeDriver for DirVolumes {
    fn name(&self) -> &'static str {
        "dir"
    }
    async fn ensure(&self, id: &VolumeId, _size_mib: u64) -> Result<PathBuf, VolumeError> {
        let p = self.path(id);
        std::fs::create_dir_all(&p).map_err(io(format!("cannot create {}", p.display())))?;
        Ok(p)
    }
    fn path(&self, id: &VolumeId) -> PathBuf {
        volumes_dir(&self.root).join(id)
    }
    async fn list(&self) -> Result<Vec<VolumeId>, VolumeError> {
        Ok(ids_in(&volumes_dir(&self.root)))
    }
    async fn delete(&self, id: &VolumeId) -> Result<(), VolumeError> {
        for p in [self.path(id), self.snaps(id)] {
            if p.exists() {
                std::fs::remove_dir_all(&p).map_err(io(format!("cannot remove {}", p.display())))?;
            }
        }
        Ok(())
    }
    async fn usage_bytes(&self, id: &VolumeId) -> Result<Option<u64>, VolumeError> {
        Ok(self.path(id).is_dir().then(|| dir_size(&self.path(id))))
    }
    async fn snapshot(&self, id: &VolumeId, snap: &SnapshotId) -> Result<PathBuf, VolumeError> {
        if !self.path(id).is_dir() {
            return Err(VolumeError::NotFound(id.to_string()));
        }
        let dst = self.snaps(id).join(snap);
        std::fs::create_dir_all(self.snaps(id)).map_err(io("cannot create the snapshot dir"))?;
        run("cp", &["-a".as_ref(), "--reflink=auto".as_ref(), self.path(id).as_os_str(), dst.as_os_str()]).await?;
        Ok(dst)
    }
    async fn list_snapshots(&self, id: &VolumeId) -> Result<Vec<SnapshotId>, VolumeError> {
        Ok(ids_in(&self.snaps(id)))
    }
    async fn delete_snapshot(&self, id: &VolumeId, snap: &SnapshotId) -> Result<(), VolumeError> {
        let p = self.snaps(id).join(snap);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(io(format!("cannot remove {}", p.display())))?;
        }
        Ok(())
    }
    /// A copy (reflinked where the filesystem can), swapped in; no size limit to keep.
    async fn restore_snapshot(&self, id: &VolumeId, snap: &SnapshotId, _size_mib: u64) -> Result<(), VolumeError> {
        let (src, vol, tmp) = restore_paths(&self.snaps(id), &self.path(id), id, snap)?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(format!("cannot remove {}", tmp.display())))?;
        }
        run("cp", &["-a".as_ref(), "--reflink=auto".as_ref(), src.as_os_str(), tmp.as_os_str()]).await?;
        exchange(&tmp, &vol)?;
        std::fs::remove_dir_all(&tmp).map_err(io(format!("cannot remove the replaced volume {}", tmp.display())))
    }
    /// Times from the copy's birth time; a copy shares nothing, so both sizes are its size.
    async fn snapshot_infos(&self) -> Result<Vec<SnapshotInfo>, VolumeError> {
        let mut out = vec![];
        for volume in ids_in::<VolumeId>(&self.root.join("snapshots")) {
            for id in ids_in::<SnapshotId>(&self.snaps(&volume)) {
                let p = self.snaps(&volume).join(&id);
                let created = std::fs::metadata(&p)
                    .and_then(|m| m.created())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64);
                let size = dir_size(&p);
                out.push(SnapshotInfo { volume: volume.clone(), id, created, referenced_bytes: Some(size), exclusive_bytes: Some(size) });
            }
        }
        Ok(out)
    }
}
