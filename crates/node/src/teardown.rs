//! What an agent leaves on this machine, removed: its sandboxes, networks and volume
//! pool. Used by `hangar down` and the `local` provider.
// merge: replaced by hangar_agent::teardown

use hangar_agent::identity::AgentPaths;
use hangar_agent::runtime::Flavor;
use std::time::Duration;

// merge: replaced by hangar_agent::teardown
/// Removes what one agent left on this machine: its sandboxes (and their cgroups), their
/// network namespaces, its volume pool mount and loop device, and, when the agent ran in
/// this namespace (`own_netns`), its tenant bridges and nftables table.
pub async fn remove_agent_state(paths: &AgentPaths, own_netns: bool, done: &mut Vec<String>, errors: &mut Vec<String>) {
    for flavor in [Flavor::Runc, Flavor::Crun] {
        let rt = hangar_agent::runtime::OciRuntime::new(flavor, paths.runtime_root(), paths.bundles());
        use hangar_agent::runtime::Runtime;
        let list = match rt.list().await {
            Ok(l) => l,
            // crun may simply not be installed; runc failing on our own root is an error.
            Err(e) if flavor == Flavor::Runc && paths.runtime_root().exists() => {
                errors.push(format!("cannot list sandboxes: {e}"));
                continue;
            }
            Err(_) => continue,
        };
        for (id, _) in list {
            match rt.stop(&id, Duration::from_secs(2)).await {
                Ok(()) => done.push(format!("stopped sandbox {id}")),
                Err(e) => errors.push(format!("sandbox {id}: {e}")),
            }
        }
    }
    // Networking: namespaces of every instance the agent last knew, then its bridges
    // and nftables table (sync to nothing removes both).
    // Whose namespaces and rules: the joined identity, or for a one-shot reconcile
    // (no identity) the host id of the document it converged to.
    let owner = paths.load().map(|(id, ..)| id.host_id).ok().or_else(|| {
        let doc = std::fs::read_to_string(paths.desired()).ok()?;
        Some(serde_json::from_str::<hangar_types::protocol::DesiredDoc>(&doc).ok()?.host_id)
    });
    let doc = std::fs::read_to_string(paths.desired()).ok();
    if let (Some(owner), Some(doc)) = (owner, doc) {
        let parsed = serde_json::from_str::<hangar_types::protocol::DesiredDoc>(&doc);
        if let Err(e) = &parsed {
            errors.push(format!("cannot read the agent's last desired state (its networks are left): {e}"));
        }
        if let Ok(doc) = parsed {
            use hangar_agent::network::NetworkDriver;
            let net = hangar_agent::network::BridgeNetwork::new(&owner.short());
            for d in &doc.instances {
                if let Err(e) = net.detach(&d.id.short()).await {
                    errors.push(format!("network of {}/{}: {e}", d.tenant, d.name));
                }
            }
            if let Some(range) = doc.cluster_range.as_deref().and_then(|r| r.parse().ok()).filter(|_| own_netns) {
                match net.sync(&range, &[]).await {
                    Ok(()) => done.push("removed tenant networks".into()),
                    Err(e) => errors.push(format!("tenant bridges: {e}")),
                }
            }
        }
    }
    // Spare namespaces the agent made ahead live in /run/netns whichever namespace it ran in.
    if let Some(owner) = owner {
        if let Err(e) = hangar_agent::network::BridgeNetwork::new(&owner.short()).remove_spares() {
            errors.push(format!("spare namespaces: {e}"));
        }
    }
    // The agent's own nftables table goes in any case: its name needs only the identity.
    // (A provider host's table lives in its namespace and goes with it.)
    if let (true, Some(owner)) = (own_netns, owner) {
        if let Err(e) = hangar_agent::network::remove_rules(&owner.short()).await {
            errors.push(format!("nftables table: {e}"));
        }
    }
    if let Err(e) = hangar_agent::volume::BtrfsPool::teardown(&paths.storage()).await {
        errors.push(format!("volume pool: {e}"));
    }
}

/// Stops every sandbox of an agent; volumes and namespaces stay (a provider host's stop).
// merge: replaced by hangar_agent::teardown
pub async fn stop_sandboxes(paths: &AgentPaths) -> anyhow::Result<()> {
    use anyhow::Context;
    use hangar_agent::runtime::Runtime;
    for flavor in [Flavor::Runc, Flavor::Crun] {
        let rt = hangar_agent::runtime::OciRuntime::new(flavor, paths.runtime_root(), paths.bundles());
        let Ok(list) = rt.list().await else { continue };
        for (id, _) in list {
            rt.stop(&id, Duration::from_secs(5)).await.with_context(|| format!("cannot stop sandbox {id}"))?;
        }
    }
    Ok(())
}
