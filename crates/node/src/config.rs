//! The client config: where the hub is, the CA that vouches for it, and the token.
//! Written by `hangar init`/`up` with mode 0600; flags and environment override it.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub hub_url: String,
    pub ca_pem: String,
    pub token: String,
}

/// `$HANGAR_CONFIG`, else `~/.config/hangar/config.json`.
pub fn default_path() -> PathBuf {
    if let Ok(p) = std::env::var("HANGAR_CONFIG") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".config/hangar/config.json")
}

pub fn load(path: &Path) -> Result<ClientConfig> {
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("no client config at {}: run `hangar up` (or `hangar init`), or pass --hub and --token", path.display()))?;
    serde_json::from_str(&s).with_context(|| format!("{} is not a valid hangar client config", path.display()))
}

pub fn save(path: &Path, cfg: &ClientConfig) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    hangar_tls::write_private(path, &serde_json::to_string_pretty(cfg)?).with_context(|| format!("cannot write {}", path.display()))
}
