//! The hangar agent: joins the hub, converges this host to its desired state with the
//! runtime, volume and network drivers, and reports what it observes.
//!
//! Drivers sit behind narrow traits in [`drivers`], chosen by name from one registry per
//! family; they know nothing of HTTP or the hub. [`reconcile`] compares and acts;
//! [`daemon`] wires the loop, the long-poll and the [`endpoint`] together. [`teardown`]
//! and [`inventory`] are the host-side views of an agent dir for the tools that remove
//! or audit what an agent left (`hangar down`, providers, soak). [`secrets`] puts
//! instances' secrets on a tmpfs for `/run/secrets`; [`proxy`] is the agent's half of
//! the hub's HTTP proxy.

pub mod backups;
pub mod copy;
pub mod daemon;
pub mod drivers;
pub mod endpoint;
pub mod files;
mod host;
pub mod identity;
pub mod images;
mod inventory;
pub mod join;
pub mod proxy;
pub mod reconcile;
pub mod snapshots;
pub mod secrets;
pub mod session;
pub mod stopwatch;
mod teardown;
pub mod transfer;
pub mod moves;

pub use inventory::{inventory, Inventory, InventoryError};
pub use teardown::{teardown, Teardown, TeardownReport};
