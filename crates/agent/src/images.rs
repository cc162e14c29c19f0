//! Registered images on this host: how the image an instance names becomes the root
//! filesystem its bundle uses. `host` stays `host`; a registered directory is used in
//! place; a registered tarball is extracted once into the agent's image cache
//! (`<agent>/images/<sha256>/rootfs`), only if the file still has the sha256 it was
//! registered with, and every later start finds it there with one `stat`. Sandboxes
//! mount their root read-only, so one extraction serves every instance of the image.

use crate::identity::AgentPaths;
use hangar_types::api::{ImageKind, ImageRef};
use hangar_types::protocol::DesiredInstance;
use std::path::{Path, PathBuf};

/// The root filesystem for `d`: what the bundle is written with.
pub async fn resolve(paths: &AgentPaths, d: &DesiredInstance) -> Result<ImageRef, String> {
    match &d.spec.image {
        ImageRef::Host => Ok(ImageRef::Host),
        // Instances created before images were registered keep their directory.
        ImageRef::Dir(p) => {
            ensure_mount_points(Path::new(p))?;
            Ok(ImageRef::Dir(p.clone()))
        }
        ImageRef::Named(n) => {
            let Some(r) = &d.image else {
                return Err(format!("image '{n}' is not registered on the hub (an admin adds it with `hangar image add {n} ...`)"));
            };
            match r.kind {
                ImageKind::Dir => {
                    ensure_mount_points(Path::new(&r.path)).map_err(|e| format!("image '{n}': {e}"))?;
                    Ok(ImageRef::Dir(r.path.clone()))
                }
                ImageKind::Tar => {
                    let sha = r.sha256.as_deref().ok_or_else(|| format!("image '{n}': the hub sent no sha256 for its tarball"))?;
                    let root = prepare_tar(&paths.images(), Path::new(&r.path), sha).await.map_err(|e| format!("image '{n}': {e}"))?;
                    Ok(ImageRef::Dir(root.display().to_string()))
                }
            }
        }
    }
}

/// Where the bundle mounts onto an image's root. The sandbox's runtime runs as the
/// instance's unprivileged mapped root and cannot create them in a host-owned image, so
/// the agent (host root) makes the missing ones, empty, once; a `stat` each afterwards.
const MOUNT_POINTS: [&str; 6] = ["proc", "dev", "sys", "tmp", "home", "run"];

fn ensure_mount_points(root: &Path) -> Result<(), String> {
    for d in MOUNT_POINTS {
        let p = root.join(d);
        if std::fs::symlink_metadata(&p).is_err() {
            std::fs::create_dir(&p).map_err(|e| format!("cannot create the mount point {}: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// Extractions are serialized: two instances of one new image start side by side.
static EXTRACTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The extracted root of the tarball at `tar`, whose sha256 must be `sha256`; made once
/// under `cache`.
pub async fn prepare_tar(cache: &Path, tar: &Path, sha256: &str) -> Result<PathBuf, String> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("'{sha256}' is not a sha256"));
    }
    let dir = cache.join(sha256.to_ascii_lowercase());
    let root = dir.join("rootfs");
    // The rename below is the last step: a present dir is a complete extraction.
    if dir.is_dir() {
        return Ok(root);
    }
    let _one = EXTRACTING.lock().await;
    if dir.is_dir() {
        return Ok(root);
    }
    let tar_path = tar.to_path_buf();
    let actual = tokio::task::spawn_blocking(move || sha256_file(&tar_path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read {}: {e}", tar.display()))?;
    if !actual.eq_ignore_ascii_case(sha256) {
        return Err(format!("{} has sha256 {actual}, not the {sha256} it was registered with: an admin registers it again", tar.display()));
    }
    let partial = cache.join(format!(".{sha256}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    crate::files::ensure_dir(&partial.join("rootfs"), crate::files::TRAVERSE_DIR).map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    // First use only, never again for this image: one `tar` process (it reads every
    // compression GNU tar knows). Owners and modes as in the archive.
    let out = tokio::process::Command::new("tar")
        .arg("-x")
        .arg("--numeric-owner")
        .arg("-p")
        .arg("-f")
        .arg(tar)
        .arg("-C")
        .arg(partial.join("rootfs"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(format!("cannot extract {}: {}", tar.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    let r = partial.join("rootfs");
    if !r.join("bin").exists() && !r.join("usr/bin").exists() {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(format!("{} holds no bin/ or usr/bin/: is it a root filesystem?", tar.display()));
    }
    ensure_mount_points(&r)?;
    std::fs::rename(&partial, &dir).map_err(|e| format!("cannot keep the extracted image: {e}"))?;
    Ok(root)
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tarball_is_extracted_once_and_only_with_its_sha256() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/hello"), "hi").unwrap();
        let tar = d.path().join("img.tar");
        assert!(std::process::Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&src).arg(".").status().unwrap().success());
        let sha = sha256_file(&tar).unwrap();
        let cache = d.path().join("cache");
        let wrong = "0".repeat(64);
        let e = prepare_tar(&cache, &tar, &wrong).await.unwrap_err();
        assert!(e.contains("registered with"), "{e}");
        assert!(prepare_tar(&cache, &tar, "../../etc").await.is_err());
        let root = prepare_tar(&cache, &tar, &sha).await.unwrap();
        assert_eq!(std::fs::read_to_string(root.join("bin/hello")).unwrap(), "hi");
        // Later uses find it without reading the tarball again.
        std::fs::remove_file(&tar).unwrap();
        assert_eq!(prepare_tar(&cache, &tar, &sha).await.unwrap(), root);
    }
}
