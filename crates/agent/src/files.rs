//! File modes of what hangar keeps on a machine. Desired documents, bundles
//! (`config.json`), workload logs, keys and the store hold every tenant's environment
//! and commands: files are 0600. Directories that only hold such files are 0700.
//! Directories on the way to a sandbox's root filesystem or volume (the data dir, an
//! agent dir, its bundles, storage and image cache) are 0711: others may pass through
//! but not list them, which a sandbox whose root is an unprivileged host uid (a user
//! namespace) needs to reach its own root and volume.
//!
//! Everything here is applied when a dir is opened too, not only when a file is made:
//! an upgrade keeps the files an older hangar created 0644 in 0755 directories.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Files holding tenants' data or secrets.
pub const PRIVATE_FILE: u32 = 0o600;
/// Directories holding only such files.
pub const PRIVATE_DIR: u32 = 0o700;
/// Directories a sandbox's root or volume lies below: pass through, no listing.
pub const TRAVERSE_DIR: u32 = 0o711;

/// Creates `dir` (and its parents) if missing and sets its mode.
pub fn ensure_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Sets `path` to 0600 if it exists (a symlink is left alone: hangar makes none).
pub fn make_private(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o777 != PRIVATE_FILE => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_FILE))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `contents` to `path` atomically (a temp file renamed over it), 0600 from the
/// first byte.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(PRIVATE_FILE).open(&tmp)?;
    f.write_all(contents)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_set_on_new_and_existing_files() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b");
        ensure_dir(&dir, PRIVATE_DIR).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, PRIVATE_DIR);
        let old = dir.join("old.json");
        std::fs::write(&old, "x").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        make_private(&old).unwrap();
        assert_eq!(std::fs::metadata(&old).unwrap().permissions().mode() & 0o777, PRIVATE_FILE);
        make_private(&dir.join("absent")).unwrap();
        let new = dir.join("desired.json");
        write_private(&new, b"{}").unwrap();
        assert_eq!(std::fs::metadata(&new).unwrap().permissions().mode() & 0o777, PRIVATE_FILE);
        assert_eq!(std::fs::read_to_string(&new).unwrap(), "{}");
        write_private(&new, b"[]").unwrap();
        assert_eq!(std::fs::read_to_string(&new).unwrap(), "[]");
    }
}
