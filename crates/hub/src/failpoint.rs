//! Test-only crash points; the one implementation is `hangar_types::failpoint`, shared
//! with the agent.

pub use hangar_types::failpoint::hit;
