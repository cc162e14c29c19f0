//! Moves of instances between hosts (`hangar_types::moves`): the users' calls to the
//! hub, and the hub's call to a move's source agent to remove what is left there.

use crate::{AgentClient, HubClient, Result};
use hangar_types::moves::{Evacuation, HostEvacuate, InstanceMove, MoveStatus};
use hangar_types::SandboxId;

impl HubClient {
    /// Starts moving `tenant/name` (the answer comes at once; follow it with
    /// [`HubClient::instance_move_status`]).
    pub async fn instance_move(&self, tenant: &str, name: &str, req: &InstanceMove) -> Result<MoveStatus> {
        self.t.post(&format!("/v1/tenants/{tenant}/instances/{name}/move"), req).await
    }
    /// The instance's newest move.
    pub async fn instance_move_status(&self, tenant: &str, name: &str) -> Result<MoveStatus> {
        self.t.get(&format!("/v1/tenants/{tenant}/instances/{name}/move")).await
    }
    /// Drains `host` and starts moving every instance off it.
    pub async fn host_evacuate(&self, host: &str, req: &HostEvacuate) -> Result<Evacuation> {
        self.t.post(&format!("/v1/hosts/{host}/evacuate"), req).await
    }
    /// The host's newest evacuation, instance by instance.
    pub async fn host_evacuation(&self, host: &str) -> Result<Evacuation> {
        self.t.get(&format!("/v1/hosts/{host}/evacuate")).await
    }
}

impl AgentClient {
    /// Source: removes a moved instance's volume, once this agent applied `generation`
    /// (or later) without the instance. 409 while it is still placed there.
    pub async fn moved_remove(&self, sandbox: &SandboxId, generation: i64) -> Result<()> {
        self.t.delete::<serde_json::Value>(&format!("/v1/moved/{sandbox}?generation={generation}")).await.map(drop)
    }
    /// Target of a move through a backup: makes the sandbox's (empty) volume, limited
    /// to `size_mib`, for the restore to fill.
    pub async fn moved_volume_create(&self, sandbox: &SandboxId, size_mib: u64) -> Result<()> {
        self.t.post::<_, serde_json::Value>(&format!("/v1/moved/{sandbox}/volume?size_mib={size_mib}"), &serde_json::json!({})).await.map(drop)
    }
    /// Removes the snapshots moves took of the sandbox's volume (`mv-`).
    pub async fn moved_snapshots_remove(&self, sandbox: &SandboxId) -> Result<()> {
        self.t.delete::<serde_json::Value>(&format!("/v1/moved/{sandbox}/snapshots")).await.map(drop)
    }
}
