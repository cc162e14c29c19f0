//! Pure types shared by every hangar crate: typed identifiers, validated names,
//! the API and hub-agent documents, and the instance state machine.
//!
//! This crate does no I/O: no files, no sockets, no clocks except the caller's.

pub mod access;
pub mod api;
pub mod backups;
pub mod error;
pub mod files;
pub mod generation;
pub mod ids;
pub mod idmap;
pub mod names;
pub mod net;
pub mod placement;
pub mod pool;
pub mod protocol;
pub mod quota;
pub mod snapshots;
pub mod session;
pub mod state;
pub mod failpoint;
pub mod transfer;
pub mod moves;

pub use error::{ApiError, ErrorCode};
pub use generation::Generation;
pub use ids::{HostId, IdError, InstanceId, OperationId, SandboxId, SnapshotId, TenantId, TokenId, VolumeId};
pub use names::{InstanceRef, Name, NameError};
pub use state::{DesiredState, IllegalTransition, InstanceState, ObservedState, Transition};
