//! Secrets on this host: each sandbox that names some gets a directory on a tmpfs of the
//! agent's own (`/run/hangar/secrets/<agent>`, never the agent's data dir, never a
//! disk), holding one file per secret, owned by the sandbox's root (the first id of its
//! range), 0400 in a 0500 directory; the bundle bind-mounts it read-only at
//! `/run/secrets` ([`crate::drivers::runtime::bundle`]).
//!
//! The desired document carries only names and versions ([`SecretStamp`]); when an
//! instance that is to run or be warm has stamps other than those last written, the
//! agent fetches the values from the hub over mutual TLS and replaces the files (each
//! written beside and renamed into place, so a reader never sees half a value). The
//! directory is a bind of a directory, so a running sandbox sees the new files at once:
//! a changed secret reaches it within one reconcile pass. Directories of instances not
//! to run, and of sandboxes no longer desired, are removed.

use crate::identity::AgentPaths;
use hangar_client::HostClient;
use hangar_types::access::SecretStamp;
use hangar_types::protocol::{DesiredDoc, DesiredInstance};
use hangar_types::{DesiredState, SandboxId};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where every agent's secrets tmpfs is mounted.
const SECRETS_BASE: &str = "/run/hangar/secrets";
/// Room for 32 secrets of 64 KiB in each of many sandboxes; a tmpfs takes only what it
/// holds.
const TMPFS_OPTIONS: &str = "mode=0711,size=256m,nr_inodes=65536";

/// This agent's tmpfs: named after its dir, so agents sharing a machine never share one.
pub fn root(paths: &AgentPaths) -> PathBuf {
    let tag = hex::encode(&Sha256::digest(paths.root.to_string_lossy().as_bytes())[..8]);
    Path::new(SECRETS_BASE).join(tag)
}

/// The directory a sandbox of `d` sees at `/run/secrets`, if it names any secret.
pub fn sandbox_dir(paths: &AgentPaths, d: &DesiredInstance) -> Option<PathBuf> {
    (!d.spec.secrets.is_empty()).then(|| root(paths).join(d.id.sandbox_id().as_str()))
}

fn is_mount_point(path: &Path) -> bool {
    let want = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines().any(|l| l.split(' ').nth(4) == Some(want.as_ref()))
}

/// Mounts the agent's tmpfs if it is not mounted yet.
fn ensure_tmpfs(root: &Path) -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    use std::os::unix::fs::PermissionsExt;
    if is_mount_point(root) {
        return Ok(());
    }
    std::fs::create_dir_all(root)?;
    // Sandboxes' roots (unprivileged host ids) must be able to pass through.
    std::fs::set_permissions(root.parent().unwrap_or(root), std::fs::Permissions::from_mode(0o711))?;
    mount(Some("tmpfs"), root, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, Some(TMPFS_OPTIONS)).map_err(std::io::Error::from)
}

/// Unmounts and removes the agent's tmpfs (teardown); Ok if it is not there.
pub fn remove(paths: &AgentPaths) -> std::io::Result<bool> {
    let root = root(paths);
    if !root.exists() {
        return Ok(false);
    }
    if is_mount_point(&root) {
        nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH).map_err(std::io::Error::from)?;
    }
    std::fs::remove_dir_all(&root)?;
    Ok(true)
}

/// Replaces the files of `dir` with `values` (name, bytes), owned by `uid`, read-only.
fn write_dir(dir: &Path, uid: u32, values: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{chown, OpenOptionsExt, PermissionsExt};
    std::fs::create_dir_all(dir)?;
    for (name, value) in values {
        let tmp = dir.join(format!(".{name}.new"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(&tmp)?;
        f.write_all(value)?;
        chown(&tmp, Some(uid), Some(uid))?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let n = e.file_name().to_string_lossy().into_owned();
        if !values.iter().any(|(v, _)| *v == n) {
            std::fs::remove_file(e.path())?;
        }
    }
    chown(dir, Some(uid), Some(uid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o500))
}

/// What was last written for each sandbox.
pub struct Secrets {
    root: PathBuf,
    paths: AgentPaths,
    written: Mutex<HashMap<SandboxId, Vec<SecretStamp>>>,
}

impl Secrets {
    pub fn new(paths: &AgentPaths) -> Secrets {
        Secrets { root: root(paths), paths: paths.clone(), written: Mutex::default() }
    }

    /// Brings every sandbox's directory in line with `doc` before a convergence pass
    /// starts anything. A fetch that fails leaves the directory as it was (a sandbox
    /// that needs it and has none fails to start, with the reason); the next pass
    /// tries again.
    pub async fn sync(&self, hub: &HostClient, doc: &DesiredDoc) {
        let needed: Vec<&DesiredInstance> = doc.instances.iter().filter(|d| !d.spec.secrets.is_empty() && matches!(d.desired, DesiredState::Running | DesiredState::Warm)).collect();
        if needed.is_empty() && !self.root.exists() {
            return;
        }
        if let Err(e) = ensure_tmpfs(&self.root) {
            tracing::warn!(error = %e, root = %self.root.display(), "cannot mount the secrets tmpfs; instances that name secrets will not start");
            return;
        }
        for d in &needed {
            let Some(dir) = sandbox_dir(&self.paths, d) else { continue };
            let sid = d.id.sandbox_id();
            let current = self.written.lock().unwrap_or_else(|e| e.into_inner()).get(&sid) == Some(&d.secrets);
            if current && dir.exists() {
                continue;
            }
            let Some(ids) = d.ids else { continue };
            let got = match hub.secrets(d.id).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(instance = %d.id, error = %e, "cannot fetch the instance's secrets; will retry");
                    continue;
                }
            };
            use base64::Engine;
            let values: Result<Vec<(String, Vec<u8>)>, _> =
                got.secrets.into_iter().map(|s| base64::engine::general_purpose::STANDARD.decode(s.value_b64).map(|v| (s.name.to_string(), v))).collect();
            let written = match values {
                Ok(v) => tokio::task::spawn_blocking(move || write_dir(&dir, ids.base, &v)).await.map_err(std::io::Error::other).and_then(|r| r),
                Err(e) => Err(std::io::Error::other(format!("the hub sent a value that is not base64: {e}"))),
            };
            match written {
                Ok(()) => {
                    self.written.lock().unwrap_or_else(|e| e.into_inner()).insert(sid, d.secrets.clone());
                }
                Err(e) => tracing::warn!(instance = %d.id, error = %e, "cannot write the instance's secrets"),
            }
        }
        // Everything else goes: stopped, deleted, or no longer on this host.
        let keep: Vec<String> = needed.iter().map(|d| d.id.sandbox_id().to_string()).collect();
        let Ok(entries) = std::fs::read_dir(&self.root) else { return };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&n) {
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    tracing::warn!(dir = %e.path().display(), error = %err, "cannot remove a sandbox's secrets");
                }
                if let Ok(sid) = n.parse::<SandboxId>() {
                    self.written.lock().unwrap_or_else(|e| e.into_inner()).remove(&sid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn files_are_replaced_whole_and_removed_when_gone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("sb");
        let uid = nix::unistd::getuid().as_raw();
        write_dir(&d, uid, &[("a".into(), b"one".to_vec()), ("b".into(), b"two".to_vec())]).unwrap();
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"one");
        let m = std::fs::metadata(d.join("a")).unwrap();
        assert_eq!((m.permissions().mode() & 0o777, m.uid()), (0o400, uid));
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o500);
        write_dir(&d, uid, &[("a".into(), b"three".to_vec())]).unwrap();
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"three");
        assert!(!d.join("b").exists(), "a secret no longer named is removed");
        let names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "no temporary files left: {names:?}");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn each_agent_dir_has_its_own_root() {
        let a = root(&AgentPaths::new("/var/lib/hangar/a"));
        let b = root(&AgentPaths::new("/var/lib/hangar/b"));
        assert_ne!(a, b);
        assert!(a.starts_with(SECRETS_BASE));
    }
}
