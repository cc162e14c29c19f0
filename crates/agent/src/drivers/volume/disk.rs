//! Disk safety: what a file or device holds, before anything touches it.

use super::VolumeError;
use std::path::Path;

/// What `blkid -p` finds on a file or device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// No filesystem or partition table: safe to format.
    Blank,
    /// A filesystem of this type (e.g. "btrfs", "ext4"), or "partition table".
    Holds(String),
}

/// Probes with `blkid -p` (low-level, bypassing the cache): exit 2 means nothing found.
pub async fn probe(path: &Path) -> Result<Probe, VolumeError> {
    let out = tokio::process::Command::new("blkid")
        .arg("-p")
        .arg(path)
        .output()
        .await
        .map_err(|source| VolumeError::Spawn { program: "blkid".into(), source })?;
    match out.status.code() {
        Some(2) => Ok(Probe::Blank),
        Some(0) => {
            let s = String::from_utf8_lossy(&out.stdout);
            let field = |k: &str| s.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}=\"")).map(|v| v.trim_end_matches('"').to_string()));
            Ok(Probe::Holds(field("TYPE").or_else(|| field("PTTYPE").map(|p| format!("{p} partition table"))).unwrap_or_else(|| "unknown".into())))
        }
        _ => Err(VolumeError::Command { command: format!("blkid -p {}", path.display()), stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() }),
    }
}
