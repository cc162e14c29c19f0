//! Images an admin registered: which host directories or tarballs may become a
//! sandbox's root filesystem is an admin's decision. A tenant names a registered image
//! or `host`; a `dir:` path in a request is refused, whoever sends it.
//!
//! The path is the same on every host (like a package installed fleet-wide): the hub
//! checks it on its own machine when it is added (a directory must hold a root
//! filesystem, a tarball's sha256 is recorded), each host when it first uses it (a
//! tarball is extracted once, only if its sha256 still matches). An image that
//! instances or pools use cannot be removed; a create racing a remove can still name
//! it, and that instance then fails to start with the reason.

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::Hub;
use hangar_store::InstanceFilter;
use hangar_types::api::{Image, ImageCreate, ImageKind, ImageRef};
use hangar_types::protocol::ResolvedImage;
use hangar_types::{ErrorCode, Name};
use std::collections::HashMap;
use std::path::Path;
use time::OffsetDateTime;

impl Hub {
    pub async fn image_add(&self, p: &Principal, req: ImageCreate) -> HubResult<Image> {
        p.require_admin()?;
        if req.name.as_str() == "host" {
            return Err(HubError::new(ErrorCode::AlreadyExists, "name: 'host' is the built-in image; pick another name"));
        }
        if !req.path.starts_with('/') || req.path.split('/').any(|c| c == "..") {
            return Err(HubError::invalid(format!("path: '{}' must be absolute, without '..'", req.path)));
        }
        let (kind, path) = (req.kind, req.path.clone());
        let (sha256, size_bytes) = tokio::task::spawn_blocking(move || inspect(kind, Path::new(&path)))
            .await
            .map_err(|e| HubError::internal(format!("image check: {e}")))?
            // Nothing of that kind at the path: not found (the request itself was well formed).
            .map_err(|e| HubError::not_found(format!("path: {e}")))?;
        let image = Image { name: req.name, kind: req.kind, path: req.path, sha256, size_bytes, created_at: OffsetDateTime::now_utc() };
        self.store.insert_image(&image).await?;
        self.event(&p.actor(), None, format!("image/{}", image.name), "image.add", "ok", Some(format!("{} {}", image.kind.as_str(), image.path))).await;
        Ok(image)
    }

    pub async fn image_list(&self, p: &Principal) -> HubResult<Vec<Image>> {
        p.require_admin()?;
        Ok(self.store.list_images().await?)
    }

    /// Refused with 409 naming the instances and pools that use it.
    pub async fn image_remove(&self, p: &Principal, name: &Name) -> HubResult<Image> {
        p.require_admin()?;
        let image = self.store.get_image(name).await?.ok_or_else(|| HubError::not_found(format!("image '{name}' not found")))?;
        let named = ImageRef::Named(name.clone());
        let mut users: Vec<String> = self
            .store
            .list_instances(&InstanceFilter::default())
            .await?
            .into_iter()
            .filter(|i| i.spec.image == named)
            .map(|i| format!("instance {}/{}", i.tenant, i.name))
            .collect();
        users.extend(self.store.list_pools(None).await?.into_iter().filter(|pl| pl.spec.image == named).map(|pl| format!("pool {}/{}", pl.tenant, pl.name)));
        if !users.is_empty() {
            return Err(HubError::new(ErrorCode::Conflict, format!("image '{name}' is in use by {}: delete them first", users.join(", "))));
        }
        self.store.delete_image(name).await?;
        self.event(&p.actor(), None, format!("image/{name}"), "image.remove", "ok", None).await;
        Ok(image)
    }

    /// Whether a create request may use `image`: `host` or a registered image. The
    /// errors name the `image` field and say what to do.
    pub(crate) async fn check_requested_image(&self, image: &ImageRef) -> HubResult<()> {
        image.check_requested().map_err(HubError::invalid)?;
        if let ImageRef::Named(n) = image
            && self.store.get_image(n).await?.is_none() {
                return Err(HubError::new(ErrorCode::Conflict, format!("image: no image '{n}' is registered: an admin adds it with `hangar image add {n} --dir PATH` (or --tar FILE)")));
            }
        Ok(())
    }

    /// The registered images as hosts need them, by name.
    pub(crate) async fn resolved_images(&self) -> HubResult<HashMap<Name, ResolvedImage>> {
        Ok(self.store.list_images().await?.into_iter().map(|i| (i.name, ResolvedImage { kind: i.kind, path: i.path, sha256: i.sha256 })).collect())
    }
}

/// Checks an image's source on this machine: its sha256 (tarballs) and size.
fn inspect(kind: ImageKind, path: &Path) -> Result<(Option<String>, u64), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    match kind {
        ImageKind::Dir => {
            if !meta.is_dir() {
                return Err(format!("{} is not a directory", path.display()));
            }
            if !path.join("bin").exists() && !path.join("usr/bin").exists() {
                return Err(format!("{} holds no bin/ or usr/bin/: is it a root filesystem?", path.display()));
            }
            Ok((None, dir_size(path)))
        }
        ImageKind::Tar => {
            if !meta.is_file() {
                return Err(format!("{} is not a file", path.display()));
            }
            Ok((Some(sha256_file(path).map_err(|e| format!("{}: {e}", path.display()))?), meta.len()))
        }
    }
}

/// SHA-256 (hex) of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Total size of the regular files below `dir`, symlinks not followed.
fn dir_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    // One filesystem (not /proc or /sys below `/`), and at most this many entries: a
    // registration answers in seconds whatever directory it names; past the budget the
    // size is what was counted (a lower bound, for display only).
    const MAX_ENTRIES: usize = 200_000;
    let Ok(root) = std::fs::metadata(dir) else { return 0 };
    let mut total = 0;
    let mut seen = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                return total;
            }
            match e.metadata() {
                Ok(m) if m.is_dir() && m.dev() == root.dev() => stack.push(e.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}
