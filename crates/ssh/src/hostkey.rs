//! The gateway's host key: an Ed25519 key made once in the hub's data dir (0600) and
//! kept, so clients' known_hosts entries survive hub restarts.

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("cannot read the SSH host key {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the SSH host key {path} is not an OpenSSH private key ({detail}): move it away to make a new one (clients will then see a new host key)")]
    Parse { path: PathBuf, detail: String },
    #[error("cannot write the SSH host key {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The key at `path`, made (Ed25519, 0600) if there is none.
pub fn host_key(path: &Path) -> Result<PrivateKey, HostKeyError> {
    match std::fs::read_to_string(path) {
        Ok(pem) => return PrivateKey::from_openssh(pem.as_bytes()).map_err(|e| HostKeyError::Parse { path: path.into(), detail: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(HostKeyError::Read { path: path.into(), source }),
    }
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&rand::random::<[u8; 32]>()));
    let pem = key.to_openssh(LineEnding::LF).map_err(|e| HostKeyError::Parse { path: path.into(), detail: e.to_string() })?;
    let write = || -> std::io::Result<()> {
        // Written under a temporary name and renamed: a crash never leaves half a key
        // that the next start would refuse.
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| HostKeyError::Write { path: path.into(), source })?;
    Ok(key)
}

/// The known_hosts line for the gateway at `host:port`.
pub fn known_hosts_line(key: &PrivateKey, host: &str, port: u16) -> String {
    let public = key.public_key().to_openssh().unwrap_or_default();
    let public = public.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    if port == 22 {
        format!("{host} {public}")
    } else {
        format!("[{host}]:{port} {public}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_ed25519_key");
        let a = host_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let b = host_key(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let line = known_hosts_line(&a, "10.0.0.1", 2222);
        assert!(line.starts_with("[10.0.0.1]:2222 ssh-ed25519 AAAA"), "{line}");
        std::fs::write(&path, "junk").unwrap();
        assert!(host_key(&path).unwrap_err().to_string().contains("move it away"));
    }
}
