//! The hangar agent: joins the hub, converges this host to its desired state with the
//! runtime and volume drivers, and reports what it observes.
//!
//! Drivers sit behind narrow traits ([`runtime::Runtime`], [`volume::VolumeDriver`]);
//! they know nothing of HTTP or the hub. [`reconcile`] compares and acts; [`daemon`]
//! wires the loop, the long-poll and the [`endpoint`] together.

pub mod daemon;
pub mod endpoint;
pub mod identity;
pub mod join;
pub mod network;
pub mod reconcile;
pub mod runtime;
pub mod stopwatch;
pub mod volume;
