//! `hangar cp`: the documents of copies between the CLI, the hub and agents, and the one
//! rule for paths inside an instance: a path is the instance's view (`/home/...`, where
//! its volume is mounted), and only what lies in the volume can be copied.
//!
//! Copies travel as tar streams ([`TAR_MEDIA_TYPE`]): mode, mtime (seconds), owner
//! ids *as seen inside the instance* (0 is the instance's root), files, directories and
//! symlinks; never device files, fifos, sockets or hard links.

use crate::names::Name;
use serde::{Deserialize, Serialize};

/// Where an instance's volume is mounted inside it: the only part of its filesystem
/// `hangar cp` reads or writes.
pub const VOLUME_MOUNT: &str = "/home";
/// The media type of file streams.
pub const TAR_MEDIA_TYPE: &str = "application/x-tar";
/// The longest path accepted (Linux's PATH_MAX).
pub const PATH_MAX_BYTES: usize = 4096;

/// A path of the instance's view as a path relative to its volume's root ('' is the
/// root). Relative paths are relative to `/home` (the working directory of a session).
/// `..` anywhere, NUL bytes, and anything outside `/home` are refused with a message
/// that names the path; a trailing `/` is kept (the destination must be a directory).
pub fn volume_path(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("the path is empty: name a path under /home".into());
    }
    if path.len() > PATH_MAX_BYTES {
        return Err(format!("the path is longer than {PATH_MAX_BYTES} bytes"));
    }
    if path.contains('\0') {
        return Err("the path holds a NUL byte".into());
    }
    let rel = match path.strip_prefix('/') {
        Some(abs) => {
            let abs = abs.trim_start_matches('/');
            match abs.strip_prefix(&VOLUME_MOUNT[1..]) {
                Some("") => "",
                Some(rest) if rest.starts_with('/') => rest,
                _ => return Err(format!("'{path}' is outside the instance's volume: only paths under {VOLUME_MOUNT} can be copied")),
            }
        }
        None => path,
    };
    let dir = rel.ends_with('/') && !rel.trim_matches('/').is_empty();
    let mut parts = vec![];
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("'{path}' holds '..': name the path without it")),
            p => parts.push(p),
        }
    }
    let mut out = parts.join("/");
    if dir {
        out.push('/');
    }
    Ok(out)
}

/// The query of `GET` and `PUT /v1/tenants/{t}/instances/{i}/files`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FilesQuery {
    /// A path under `/home` (the instance's volume), at most 4096 bytes, no `..`. For a
    /// write: an existing directory receives the stream's entries under their names;
    /// otherwise its parent must exist and the stream's one top entry takes this name.
    pub path: String,
    /// Directories are copied (read) or merged into existing ones (write) only with it.
    #[serde(default)]
    pub recursive: bool,
}

/// What a write or a copy put in place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FilesWritten {
    /// Files, directories and symlinks written.
    pub entries: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

/// One side of an instance-to-instance copy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyEnd {
    #[schema(value_type = String)]
    pub tenant: Name,
    #[schema(value_type = String)]
    pub instance: Name,
    /// A path under `/home`, as in [`FilesQuery::path`].
    pub path: String,
}

/// `POST /v1/files/copy`: from one instance's volume into another's (or the same).
/// Across tenants only with an admin token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyRequest {
    pub from: CopyEnd,
    pub to: CopyEnd,
    #[serde(default)]
    pub recursive: bool,
}

/// How the bytes of a copy travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CopyVia {
    /// Both volumes on one host: reflinks inside its btrfs pool (a plain copy on the
    /// dir driver); no byte left the host.
    Reflink,
    /// Across hosts: a tar stream from the source agent straight to the target agent
    /// (a host-to-host transfer with a ticket; see `transfer`).
    Transfer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CopyResult {
    pub via: CopyVia,
    #[serde(flatten)]
    pub written: FilesWritten,
}

/// The query of the agent's `GET`/`PUT /v1/sandboxes/{id}/files`: the hub's
/// [`FilesQuery`] with the path already made relative to the volume, and the
/// sandbox's id range (owners are mapped between it and the stream's inside ids).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentFilesQuery {
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
    pub uid_base: u32,
}

/// The agent's `GET /v1/sandboxes/{id}/files/check`: what a copy from (or, with
/// `top`, into) this path would refuse, before a transfer is started for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentFilesCheck {
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
    pub uid_base: u32,
    /// Checked as a destination receiving an entry of this name...
    #[serde(default)]
    pub top: Option<String>,
    /// ...which is a directory.
    #[serde(default)]
    pub top_dir: bool,
}

/// What a source check found: what the copy will write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesChecked {
    pub written: FilesWritten,
    /// Whether the copy's top entry is a directory.
    pub top_dir: bool,
}

/// One side of a copy between two volumes (of one host, or of two through a transfer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCopyEnd {
    pub sandbox: crate::SandboxId,
    pub path: String,
    pub uid_base: u32,
}

/// The agent's `POST /v1/copies`: a copy between two volumes of this host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentCopy {
    pub from: AgentCopyEnd,
    pub to: AgentCopyEnd,
    #[serde(default)]
    pub recursive: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_relative_to_the_volume() {
        let ok = |p: &str| volume_path(p).unwrap();
        assert_eq!(ok("/home"), "");
        assert_eq!(ok("/home/"), "");
        assert_eq!(ok("//home//a/./b"), "a/b");
        assert_eq!(ok("/home/in/"), "in/");
        assert_eq!(ok("report.csv"), "report.csv");
        assert_eq!(ok("./a/b/"), "a/b/");
        for bad in ["", "/etc/passwd", "/homes/x", "/", "/home/../etc", "a/../b", "..", "/home/a\0b"] {
            assert!(volume_path(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(volume_path("/etc/passwd").unwrap_err().contains("outside the instance's volume"));
        assert!(volume_path("/home/a/../../etc").unwrap_err().contains("'..'"));
        assert!(volume_path(&format!("/home/{}", "a".repeat(5000))).is_err());
    }
}
