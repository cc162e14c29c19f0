//! The hub's calls to agents for host-to-host transfers (`hangar_types::transfer`).

use crate::{AgentClient, Result};
use hangar_types::{SnapshotId, VolumeId};
use hangar_types::transfer::{StagedAdopt, TransferExpect, TransferId, TransferSend, TransferStatus};

impl AgentClient {
    /// Target: accept one stream for this ticket.
    pub async fn transfer_expect(&self, x: &TransferExpect) -> Result<TransferStatus> {
        self.t.post("/v1/transfers/expect", x).await
    }
    /// Source: start sending; the answer comes at once, progress through
    /// [`AgentClient::transfer_status`].
    pub async fn transfer_send(&self, s: &TransferSend) -> Result<TransferStatus> {
        self.t.post("/v1/transfers/send", s).await
    }
    pub async fn transfer_status(&self, id: &TransferId) -> Result<TransferStatus> {
        self.t.get(&format!("/v1/transfers/{id}")).await
    }
    /// The transfer's status once it ends, or after `wait` (a long-poll; at most 10 s).
    pub async fn transfer_status_wait(&self, id: &TransferId, wait: std::time::Duration) -> Result<TransferStatus> {
        self.t.call::<(), _>(reqwest::Method::GET, &format!("/v1/transfers/{id}?wait_ms={}", wait.as_millis()), None, Some(std::time::Duration::from_secs(20) + wait)).await
    }
    /// Stops the transfer on this agent and removes what it staged; Ok if unknown.
    pub async fn transfer_forget(&self, id: &TransferId) -> Result<()> {
        self.t.delete::<serde_json::Value>(&format!("/v1/transfers/{id}")).await.map(drop)
    }
    /// Target: the complete snapshots staged for `volume`.
    pub async fn transfer_staged(&self, volume: &VolumeId) -> Result<Vec<SnapshotId>> {
        self.t.get(&format!("/v1/transfers/staged/{volume}")).await
    }
    /// Target: makes `volume` from its staged snapshot and drops the staging.
    pub async fn transfer_adopt(&self, volume: &VolumeId, a: &StagedAdopt) -> Result<()> {
        self.t.post::<_, serde_json::Value>(&format!("/v1/transfers/staged/{volume}/adopt"), a).await.map(drop)
    }
    /// Target: drops everything staged for `volume`.
    pub async fn transfer_discard(&self, volume: &VolumeId) -> Result<()> {
        self.t.delete::<serde_json::Value>(&format!("/v1/transfers/staged/{volume}")).await.map(drop)
    }
}
