//! Removing what one agent left on this machine, for whoever stops or removes it
//! (`hangar down`, a host provider). The agent must be stopped already. Best effort:
//! every step runs even when an earlier one failed, so one stuck object does not leave
//! the rest behind; the errors come back together.

use crate::drivers::{DriverConfig, HostNetwork, RUNTIMES, VOLUMES};
use crate::identity::AgentPaths;
use std::time::Duration;

/// How much of an agent to remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Teardown {
    /// Its sandboxes only (a host stop): volumes, namespaces and networks stay.
    Sandboxes,
    /// Its sandboxes (and their cgroups), their pinned user and network namespaces
    /// (every one with the agent's prefix), the network driver's
    /// leftovers, e.g. an older agent's spare namespaces (and, in a [`HostNetwork::Shared`] namespace, its bridges and rules) and
    /// its volume pool's mount and loop device. The data (volumes, identity) stays.
    Everything(HostNetwork),
}

/// What a teardown did and what failed, as lines for the user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TeardownReport {
    pub done: Vec<String>,
    pub errors: Vec<String>,
}

/// Removes what the agent of `paths` left, as much as `what` says.
pub async fn teardown(paths: &AgentPaths, what: Teardown) -> TeardownReport {
    let mut r = TeardownReport::default();
    // A host stop gives workloads time to exit; a removal does not wait long.
    let grace = match what {
        Teardown::Sandboxes => Duration::from_secs(5),
        Teardown::Everything(_) => Duration::from_secs(2),
    };
    let used = DriverConfig::recorded(paths).unwrap_or_default();
    // Every runtime looks at the state root: whichever the agent ran with, its
    // sandboxes go. Only the one it used must be able to read it (another may simply not
    // be installed).
    for driver in RUNTIMES {
        let rt = (driver.open)(paths, used.logs);
        let list = match rt.list().await {
            Ok(l) => l,
            Err(e) if driver.name == used.runtime && paths.runtime_root().exists() => {
                r.errors.push(format!("cannot list sandboxes: {e}"));
                continue;
            }
            Err(_) => continue,
        };
        for (id, _) in list {
            match rt.stop(&id, grace).await {
                Ok(()) => r.done.push(format!("stopped sandbox {id}")),
                Err(e) => r.errors.push(format!("sandbox {id}: {e}")),
            }
        }
    }
    // The secrets tmpfs holds nothing a stopped sandbox needs (`crate::secrets`).
    match crate::secrets::remove(paths) {
        Ok(true) => r.done.push("removed the secrets tmpfs".into()),
        Ok(false) => {}
        Err(e) => r.errors.push(format!("secrets tmpfs: {e}")),
    }
    let Teardown::Everything(place) = what else { return r };
    remove_network(paths, &used, place, &mut r).await;
    for driver in VOLUMES {
        if let Err(e) = (driver.release)(paths).await {
            r.errors.push(format!("volume pool: {e}"));
        }
    }
    r
}

/// Namespaces of every instance the agent last knew, then (sync to nothing) its bridges
/// and rules, then what its driver keeps besides (pinned namespaces of sandboxes the
/// last document no longer held, an older agent's spares).
async fn remove_network(paths: &AgentPaths, used: &DriverConfig, place: HostNetwork, r: &mut TeardownReport) {
    let Some(owner) = paths.owner() else { return };
    let net = match used.network_driver() {
        Ok(d) => (d.open)(&owner.short()),
        Err(e) => {
            r.errors.push(format!("network: {e}"));
            return;
        }
    };
    match paths.last_desired() {
        None => {}
        Some(Err(e)) => r.errors.push(format!("cannot read the agent's last desired state (its networks are left): {e}")),
        Some(Ok(doc)) => {
            for d in &doc.instances {
                if let Err(e) = net.detach(&d.id.sandbox_id()).await {
                    r.errors.push(format!("network of {}/{}: {e}", d.tenant, d.name));
                }
            }
            if let Some(range) = doc.cluster_range.as_deref().and_then(|r| r.parse().ok()).filter(|_| place == HostNetwork::Shared) {
                match net.sync(&range, &[]).await {
                    Ok(()) => r.done.push("removed tenant networks".into()),
                    Err(e) => r.errors.push(format!("tenant bridges: {e}")),
                }
            }
        }
    }
    if let Err(e) = net.release(place).await {
        r.errors.push(format!("network: {e}"));
    }
}
