//! What one agent holds on this machine, read without changing anything: for audits
//! such as soak's integrity check, which compare it with what the hub knows.

use crate::drivers::network::NetError;
use crate::drivers::runtime::{memory_cgroup, RuntimeError};
use crate::drivers::{DriverConfig, DriverError, VOLUMES};
use crate::identity::AgentPaths;
use hangar_types::{SandboxId, VolumeId};

/// Sandbox ids (and veth names) found for one agent dir, each list sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Sandboxes in the agent's runtime state root.
    pub sandboxes: Vec<SandboxId>,
    /// Volumes in its storage, whichever volume driver made them (a pool that is not
    /// mounted shows none).
    pub volumes: Vec<VolumeId>,
    /// Sandboxes with a namespace of this agent, network or user (spares an older
    /// agent made are not listed).
    pub namespaces: Vec<SandboxId>,
    /// Of those: the sandboxes with a pinned user namespace.
    pub user_namespaces: Vec<SandboxId>,
    /// Of the sandboxes asked about: those whose memory cgroup still exists.
    pub cgroups: Vec<SandboxId>,
    /// Of the sandboxes asked about: their host-side veths that still exist.
    pub veths: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{} has no identity and no desired document: has this agent joined or reconciled?", .0.display())]
    NoOwner(std::path::PathBuf),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("cannot list sandboxes")]
    Runtime(#[from] RuntimeError),
    #[error("cannot list network namespaces and links")]
    Network(#[from] NetError),
}

/// What the agent of `paths` holds now. Cgroups and veths are named by sandbox id
/// alone and shared by every agent on the machine, so they are looked for only for the
/// sandboxes in `traces_of` (e.g. ones the caller knows were deleted).
pub async fn inventory(paths: &AgentPaths, traces_of: &[SandboxId]) -> Result<Inventory, InventoryError> {
    let owner = paths.owner().ok_or_else(|| InventoryError::NoOwner(paths.root.clone()))?;
    let used = DriverConfig::recorded(paths).unwrap_or_default();
    let runtime = (used.runtime_driver()?.open)(paths, used.logs);
    let network = (used.network_driver()?.open)(&owner.short());
    let mut inv = Inventory::default();
    inv.sandboxes = runtime.list().await?.into_iter().map(|(id, _)| id).collect();
    inv.volumes = VOLUMES.iter().flat_map(|d| (d.present)(paths)).collect();
    inv.namespaces = network.attached().await?;
    inv.user_namespaces = network.user_namespaces().await?;
    let wired = network.wired().await?;
    for sid in traces_of {
        if memory_cgroup(sid).exists() {
            inv.cgroups.push(sid.clone());
        }
        let veth = hangar_types::net::veth_name(sid);
        if wired.contains(&veth) {
            inv.veths.push(veth);
        }
    }
    for list in [&mut inv.sandboxes, &mut inv.namespaces, &mut inv.user_namespaces, &mut inv.cgroups] {
        sorted(list);
    }
    sorted(&mut inv.volumes);
    sorted(&mut inv.veths);
    Ok(inv)
}

fn sorted<T: Ord>(list: &mut Vec<T>) {
    list.sort();
    list.dedup();
}
