//! What the store keeps about moves of instances between hosts
//! (`hangar_types::moves`): one row per move, its phase, and the one transaction that
//! switches an instance's placement.

use crate::{InstanceVersion, Result};
use async_trait::async_trait;
use hangar_types::api::Instance;
use hangar_types::moves::{EvacuationOutcome, MovePhase, MoveVia};
use hangar_types::{Generation, HostId, InstanceId, InstanceState, Name, OperationId};
use time::OffsetDateTime;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveRecord {
    /// UUID text.
    pub id: String,
    pub instance: InstanceId,
    pub tenant: Name,
    pub name: Name,
    pub source: Name,
    pub target: Name,
    pub previous_state: InstanceState,
    pub phase: MovePhase,
    pub via: MoveVia,
    pub bytes: u64,
    pub downtime_ms: Option<u64>,
    pub keep_source_until: Option<OffsetDateTime>,
    pub error: Option<String>,
    pub created_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

/// An evacuation of a host, keyed by the operation that tracks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvacuationRecord {
    pub operation: OperationId,
    pub host: Name,
    pub parallel: u32,
    pub created_at: OffsetDateTime,
}

/// One instance that was on the host when its evacuation began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvacuationItemRecord {
    pub instance: InstanceId,
    pub tenant: Name,
    pub name: Name,
    /// Its state when the evacuation began.
    pub state: InstanceState,
    pub outcome: EvacuationOutcome,
    pub target: Option<Name>,
    pub move_id: Option<String>,
    pub error: Option<String>,
}

#[async_trait]
pub trait MoveStore: Send + Sync {
    /// AlreadyExists if the instance has an open move.
    async fn insert_move(&self, m: &MoveRecord) -> Result<()>;
    async fn get_move(&self, id: &str) -> Result<Option<MoveRecord>>;
    /// The instance's newest move, open or not.
    async fn latest_move(&self, instance: InstanceId) -> Result<Option<MoveRecord>>;
    /// Moves not final, oldest first.
    async fn list_open_moves(&self) -> Result<Vec<MoveRecord>>;
    /// Moves the move from phase `from` to `to` (final phases set `finished_at`), with
    /// its bytes (only up), downtime and error. False if it was not in `from`.
    async fn set_move_phase(&self, id: &str, from: MovePhase, to: MovePhase, bytes: u64, downtime_ms: Option<u64>, error: Option<&str>) -> Result<bool>;
    /// The switch, in one transaction: the move goes from `staged` to `switched`,
    /// `instance` (its host now the target) is written if it is still at `expected`,
    /// and both hosts' generations are bumped. Conflict if either moved.
    async fn switch_move(&self, id: &str, instance: &Instance, expected: InstanceVersion, source: &Name) -> Result<Vec<(HostId, Generation)>>;

    /// The evacuation and its items, in one transaction.
    async fn insert_evacuation(&self, e: &EvacuationRecord, items: &[EvacuationItemRecord]) -> Result<()>;
    /// The evacuation and its items (by tenant and name).
    async fn get_evacuation(&self, operation: OperationId) -> Result<Option<(EvacuationRecord, Vec<EvacuationItemRecord>)>>;
    /// The host's newest evacuation.
    async fn latest_evacuation(&self, host: &Name) -> Result<Option<OperationId>>;
    /// Writes an item's outcome, target, move and error, unless it has ended already
    /// (moved or failed): false then, or if there is no such item.
    async fn set_evacuation_item(&self, operation: OperationId, item: &EvacuationItemRecord) -> Result<bool>;
}
