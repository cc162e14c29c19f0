//! What the store keeps about host-to-host transfers: one row per ticket the hub
//! issued (`hangar_types::transfer`), its progress and how it ended.

use crate::Result;
use async_trait::async_trait;
use hangar_types::transfer::{TransferId, TransferObject, TransferState};
use hangar_types::HostId;
use time::OffsetDateTime;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRecord {
    pub id: TransferId,
    pub source: HostId,
    pub target: HostId,
    pub object: TransferObject,
    pub expires_at: OffsetDateTime,
    /// `expected` (issued, no stream yet), `running`, `done` or `failed`.
    pub state: TransferState,
    /// Bytes sent so far as last seen; never goes down.
    pub bytes: u64,
    /// The stream's digest once done, as `types::transfer::Checksum::show` writes it
    /// (SHA-256 as plain hex; BLAKE3 as `blake3:` and hex). The name is the column's,
    /// from before BLAKE3.
    pub sha256: Option<String>,
    pub error: Option<String>,
    pub created_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

impl TransferRecord {
    /// A ticket just issued: open, nothing sent.
    pub fn issued(id: TransferId, source: HostId, target: HostId, object: TransferObject, created_at: OffsetDateTime, expires_at: OffsetDateTime) -> TransferRecord {
        TransferRecord { id, source, target, object, expires_at, state: TransferState::Expected, bytes: 0, sha256: None, error: None, created_at, finished_at: None }
    }
}

#[async_trait]
pub trait TransferStore: Send + Sync {
    /// AlreadyExists if the id is taken.
    async fn insert_transfer(&self, t: &TransferRecord) -> Result<()>;
    async fn get_transfer(&self, id: TransferId) -> Result<Option<TransferRecord>>;
    /// Records progress of an open transfer: it is running, and its bytes become
    /// `bytes` unless they were more already. False if it is final (or unknown).
    async fn set_transfer_progress(&self, id: TransferId, bytes: u64) -> Result<bool>;
    /// Ends an open transfer (`done` or `failed`) once: false if it was final already
    /// (or unknown), so two hubs cannot both end it.
    async fn finish_transfer(&self, id: TransferId, state: TransferState, sha256: Option<&str>, error: Option<&str>) -> Result<bool>;
    /// The transfers not yet final, oldest first.
    async fn list_open_transfers(&self) -> Result<Vec<TransferRecord>>;
}
