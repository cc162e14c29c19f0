//! The drivers an agent converges with, and the one place that picks them. Each family
//! ([`runtime`], [`volume`], [`network`]) keeps a registry of named drivers (the default
//! first); a [`DriverConfig`] names one of each, and [`open`] opens them. Drivers know
//! nothing of HTTP or the hub.

pub mod network;
pub mod runtime;
pub mod volume;

pub use network::{HostNetwork, NetworkDriverInfo, NETWORKS};
pub use runtime::{RuntimeDriverInfo, RUNTIMES};
pub use volume::{VolumeConfig, VolumeDriverInfo, VOLUMES};

use crate::identity::AgentPaths;
use network::NetworkDriver;
use runtime::Runtime;
use std::path::PathBuf;
use std::sync::Arc;
use volume::VolumeDriver;

/// Which driver of each family an agent uses, by name. Filled from command-line strings
/// and recorded in the agent dir when opened, so teardown and inventory know what an
/// agent used.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DriverConfig {
    /// A name from [`RUNTIMES`].
    pub runtime: String,
    pub volumes: VolumeConfig,
    /// A name from [`NETWORKS`].
    pub network: String,
    /// How much of each workload's output is kept (an agent dir recorded before this
    /// existed gets the defaults).
    #[serde(default)]
    pub logs: runtime::LogLimits,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig { runtime: RUNTIMES[0].name.to_string(), volumes: VolumeConfig::default(), network: NETWORKS[0].name.to_string(), logs: runtime::LogLimits::default() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("unknown {family} driver '{name}': use one of {}", valid.join(", "))]
    Unknown { family: &'static str, name: String, valid: Vec<&'static str> },
    #[error("cannot create {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the {driver} volume pool")]
    Volumes {
        driver: &'static str,
        #[source]
        source: volume::VolumeError,
    },
}

/// The names `--runtime` accepts, the default first.
pub fn runtime_names() -> Vec<&'static str> {
    RUNTIMES.iter().map(|d| d.name).collect()
}

/// The names `--volumes` accepts, the default first.
pub fn volume_names() -> Vec<&'static str> {
    VOLUMES.iter().map(|d| d.name).collect()
}

/// The names of the network drivers, the default first.
pub fn network_names() -> Vec<&'static str> {
    NETWORKS.iter().map(|d| d.name).collect()
}

fn find<'a, T>(family: &'static str, registry: &'a [T], name_of: fn(&T) -> &'static str, name: &str) -> Result<&'a T, DriverError> {
    registry.iter().find(|d| name_of(d) == name).ok_or_else(|| DriverError::Unknown {
        family,
        name: name.to_string(),
        valid: registry.iter().map(name_of).collect(),
    })
}

impl DriverConfig {
    pub fn runtime_driver(&self) -> Result<&'static RuntimeDriverInfo, DriverError> {
        find("runtime", RUNTIMES, |d| d.name, &self.runtime)
    }

    pub fn volume_driver(&self) -> Result<&'static VolumeDriverInfo, DriverError> {
        find("volume", VOLUMES, |d| d.name, &self.volumes.driver)
    }

    pub fn network_driver(&self) -> Result<&'static NetworkDriverInfo, DriverError> {
        find("network", NETWORKS, |d| d.name, &self.network)
    }

    /// Checks every name against its registry.
    pub fn check(&self) -> Result<(), DriverError> {
        self.runtime_driver()?;
        self.volume_driver()?;
        self.network_driver()?;
        Ok(())
    }

    /// What an agent dir was last opened with; None if it never was (or its record is
    /// unreadable).
    pub fn recorded(paths: &AgentPaths) -> Option<DriverConfig> {
        serde_json::from_str(&std::fs::read_to_string(paths.drivers()).ok()?).ok()
    }

    fn record(&self, paths: &AgentPaths) -> Result<(), DriverError> {
        let path = paths.drivers();
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string(self).expect("a driver config serializes");
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)).map_err(|source| DriverError::Io { path, source })
    }
}

/// One open driver of each family.
#[derive(Clone)]
pub struct Drivers {
    pub runtime: Arc<dyn Runtime>,
    pub volumes: Arc<dyn VolumeDriver>,
    pub network: Arc<dyn NetworkDriver>,
}

impl Drivers {
    /// `runtime=<name>`, `volume=<name>`, `network=<name>`: what reports and status show.
    pub fn describe(&self) -> Vec<String> {
        vec![format!("runtime={}", self.runtime.name()), format!("volume={}", self.volumes.name()), format!("network={}", self.network.name())]
    }
}

/// Opens the drivers `cfg` names for the agent dir `paths` (making its runtime, bundle
/// and log dirs) and records `cfg` there. `owner` names what the network driver makes
/// (see [`NetworkDriverInfo::open`]).
pub async fn open(paths: &AgentPaths, owner: &str, cfg: &DriverConfig) -> Result<Drivers, DriverError> {
    let (runtime, volumes, network) = (cfg.runtime_driver()?, cfg.volume_driver()?, cfg.network_driver()?);
    for path in [paths.runtime_root(), paths.bundles(), paths.logs()] {
        std::fs::create_dir_all(&path).map_err(|source| DriverError::Io { path, source })?;
    }
    let opened_volumes = (volumes.open)(paths, &cfg.volumes).await.map_err(|source| DriverError::Volumes { driver: volumes.name, source })?;
    cfg.record(paths)?;
    Ok(Drivers { runtime: (runtime.open)(paths, cfg.logs), volumes: opened_volumes, network: (network.open)(owner) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_names_registered_drivers() {
        let cfg = DriverConfig::default();
        cfg.check().unwrap();
        assert_eq!((cfg.runtime.as_str(), cfg.volumes.driver.as_str(), cfg.network.as_str()), ("runc", "btrfs", "bridge"));
        assert_eq!(runtime_names(), ["runc", "crun"]);
        assert_eq!(volume_names(), ["btrfs", "dir"]);
        assert_eq!(network_names(), ["bridge"]);
    }

    #[test]
    fn an_unknown_name_is_refused_naming_the_valid_ones() {
        let cfg = DriverConfig { runtime: "kata".into(), ..Default::default() };
        assert_eq!(cfg.check().unwrap_err().to_string(), "unknown runtime driver 'kata': use one of runc, crun");
        let cfg = DriverConfig { volumes: VolumeConfig { driver: "zfs".into(), ..Default::default() }, ..Default::default() };
        assert_eq!(cfg.check().unwrap_err().to_string(), "unknown volume driver 'zfs': use one of btrfs, dir");
    }

    #[test]
    fn registry_names_are_unique() {
        for names in [runtime_names(), volume_names(), network_names()] {
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), names.len(), "{names:?}");
        }
    }

    #[tokio::test]
    async fn opening_records_the_config_for_teardown() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AgentPaths::new(dir.path());
        assert_eq!(DriverConfig::recorded(&paths), None);
        let cfg = DriverConfig { runtime: "crun".into(), volumes: VolumeConfig { driver: "dir".into(), ..Default::default() }, ..Default::default() };
        let drivers = open(&paths, "t1", &cfg).await.unwrap();
        assert_eq!(drivers.describe(), ["runtime=crun", "volume=dir", "network=bridge"]);
        assert_eq!(DriverConfig::recorded(&paths), Some(cfg));
        assert!(paths.runtime_root().is_dir() && paths.bundles().is_dir() && paths.logs().is_dir());
    }
}
