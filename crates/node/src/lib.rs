//! hangar on this machine: the processes and files one node runs.
//!
//! - [`hub`]: the hub's files in the data dir, `hangar init` and `hub serve` wiring;
//! - [`up`]: `hangar up` (hub and local agent in one process) and agent options;
//! - [`down`]: stopping and removing a data dir's fleet;
//! - [`daemon`]: `hangar up` in the background (PID file, log, start/status/stop);
//! - [`proc`]: the one place that reads /proc command lines, PID files and runs the
//!   TERM, wait, KILL sequence;
//! - [`config`]: the client config file;
//! - [`providers`]: host providers (`local`: hosts as network namespaces here).
//!
//! May depend on: types, store (to open SQLite), tls, client, hub, agent. Must not
//! know: argument parsing or how results are shown (the CLI's), test scenarios (the
//! harness's). The `local` provider is told what it needs (an address to serve on,
//! the hosts a user stopped) instead of reading the hub's store.

pub mod config;
pub mod daemon;
pub mod down;
pub mod hub;
pub mod proc;
pub mod providers;
pub mod ssh;
pub mod up;
