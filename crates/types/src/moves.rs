//! Moving an instance to another host (`hangar instance move`): the phases a move goes
//! through, each recorded by the hub before it acts on it, so a restarted hub continues
//! or rolls back from the last one; the request and the status users see.

use crate::names::Name;
use crate::state::InstanceState;
use serde::{Deserialize, Serialize};

/// Where a move is. Before `switched` the source owns the instance (a failure rolls
/// back: the instance returns to its state on the source, the target's copy is
/// dropped); from `switched` on the target owns it (a failure only leaves cleanup).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MovePhase {
    /// A read-only snapshot of the running instance's volume goes to the target.
    Sending,
    /// The instance is being stopped on the source.
    Stopping,
    /// The final snapshot's difference goes to the target.
    Final,
    /// The target holds the final snapshot, checked, and made the volume from it.
    Staged,
    /// The store places the instance on the target (one transaction).
    Switched,
    /// The target reports the instance in its previous state; the source copy goes.
    Started,
    Done,
    /// Failed before the switch: the target's copy and the move's snapshots are being
    /// removed and the instance put back in its state on the source (retried until done).
    RollingBack,
    /// Ended before the switch: the instance is back as it was on the source.
    RolledBack,
}

impl MovePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            MovePhase::Sending => "sending",
            MovePhase::Stopping => "stopping",
            MovePhase::Final => "final",
            MovePhase::Staged => "staged",
            MovePhase::Switched => "switched",
            MovePhase::Started => "started",
            MovePhase::Done => "done",
            MovePhase::RollingBack => "rolling_back",
            MovePhase::RolledBack => "rolled_back",
        }
    }

    pub fn parse(s: &str) -> Option<MovePhase> {
        [
            MovePhase::Sending,
            MovePhase::Stopping,
            MovePhase::Final,
            MovePhase::Staged,
            MovePhase::Switched,
            MovePhase::Started,
            MovePhase::Done,
            MovePhase::RollingBack,
            MovePhase::RolledBack,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// Whether the move has ended (done or rolled back).
    pub fn is_final(self) -> bool {
        matches!(self, MovePhase::Done | MovePhase::RolledBack)
    }

    /// Whether the target owns the instance.
    pub fn switched(self) -> bool {
        matches!(self, MovePhase::Switched | MovePhase::Started | MovePhase::Done)
    }
}

impl std::fmt::Display for MovePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest a source copy may be kept after a move (`keep_source_secs`).
pub const KEEP_SOURCE_MAX_SECS: u64 = 7 * 24 * 3600;

/// How a move carries the volume to the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MoveVia {
    /// Straight from the source agent to the target agent (btrfs send over mutual TLS).
    #[default]
    Transfer,
    /// Through the tenant's backup target: a backup on the source, a restore on the
    /// target (for hosts that cannot reach each other).
    Backup,
}

impl MoveVia {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveVia::Transfer => "transfer",
            MoveVia::Backup => "backup",
        }
    }

    pub fn parse(s: &str) -> Option<MoveVia> {
        [MoveVia::Transfer, MoveVia::Backup].into_iter().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for MoveVia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of `POST /v1/tenants/{tenant}/instances/{name}/move`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceMove {
    /// The host to move to: another active, reporting host with room for the instance.
    #[schema(value_type = String, example = "node-b")]
    pub to: Name,
    /// Keep the source's copy this long after the move (at most 604800 s); default 0.
    #[serde(default)]
    pub keep_source_secs: u64,
    /// How the volume travels; default `transfer`. `backup` needs the tenant's backup
    /// target.
    #[serde(default)]
    pub via: MoveVia,
}

impl InstanceMove {
    /// A move to `to` the default way, the source's copy removed at once.
    pub fn to(to: Name) -> InstanceMove {
        InstanceMove { to, keep_source_secs: 0, via: MoveVia::Transfer }
    }
}

/// A move as the hub records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MoveStatus {
    /// The move's id (UUID).
    pub id: String,
    #[schema(value_type = String)]
    pub tenant: Name,
    #[schema(value_type = String)]
    pub instance: Name,
    #[schema(value_type = String)]
    pub source: Name,
    #[schema(value_type = String)]
    pub target: Name,
    pub phase: MovePhase,
    pub via: MoveVia,
    /// The state the instance had when the move began, and has again on the target.
    #[schema(value_type = String)]
    pub previous_state: InstanceState,
    /// Bytes sent to the target so far (both passes); never goes down.
    pub bytes: u64,
    /// From the stop on the source to the report from the target, once known.
    pub downtime_ms: Option<u64>,
    /// Why it rolled back or what its cleanup still waits for.
    pub error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// The most moves an evacuation runs at once (`parallel`).
pub const EVACUATE_PARALLEL_MAX: u32 = 16;

fn default_parallel() -> u32 {
    2
}

/// Body of `POST /v1/hosts/{name}/evacuate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostEvacuate {
    /// How many instances move at once (1 to 16); default 2.
    #[serde(default = "default_parallel")]
    pub parallel: u32,
}

impl Default for HostEvacuate {
    fn default() -> Self {
        HostEvacuate { parallel: default_parallel() }
    }
}

/// Where one instance of an evacuation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvacuationOutcome {
    /// Not started yet (at most `parallel` move at once).
    Waiting,
    /// Its move runs (`phase` says where).
    Moving,
    /// On `target` now.
    Moved,
    /// Still on the evacuated host: `error` says why.
    Failed,
}

impl EvacuationOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            EvacuationOutcome::Waiting => "waiting",
            EvacuationOutcome::Moving => "moving",
            EvacuationOutcome::Moved => "moved",
            EvacuationOutcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<EvacuationOutcome> {
        [EvacuationOutcome::Waiting, EvacuationOutcome::Moving, EvacuationOutcome::Moved, EvacuationOutcome::Failed].into_iter().find(|o| o.as_str() == s)
    }

    /// Whether this instance's part has ended (moved or failed).
    pub fn is_final(self) -> bool {
        matches!(self, EvacuationOutcome::Moved | EvacuationOutcome::Failed)
    }
}

impl std::fmt::Display for EvacuationOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One instance of an evacuation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvacuationItem {
    #[schema(value_type = String)]
    pub tenant: Name,
    #[schema(value_type = String)]
    pub instance: Name,
    /// The state it had when the evacuation began (and keeps on its new host).
    #[schema(value_type = String)]
    pub state: InstanceState,
    pub outcome: EvacuationOutcome,
    /// The host it moves or moved to, once chosen.
    #[schema(value_type = Option<String>)]
    pub target: Option<Name>,
    /// Its move's id, once started (`GET .../instances/{name}/move` follows it).
    pub move_id: Option<String>,
    /// Its move's phase, while it moves.
    pub phase: Option<MovePhase>,
    /// Why it failed.
    pub error: Option<String>,
}

/// An evacuation as the hub records it: the operation that tracks it (kind
/// `host.evacuate`) and where each instance is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Evacuation {
    /// The operation's id (`GET /v1/operations/{id}/wait` waits for the end).
    #[schema(value_type = String)]
    pub operation_id: crate::OperationId,
    #[schema(value_type = String)]
    pub host: Name,
    pub parallel: u32,
    /// `running`, `succeeded` (every instance moved) or `failed` (some did not).
    pub status: crate::api::OperationStatus,
    pub items: Vec<EvacuationItem>,
    /// RFC 3339.
    pub created_at: String,
}
