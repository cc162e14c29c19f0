//! hangar's harness: the tools that exercise a whole fleet through the real `hangar`
//! binary, and the fleet they (and the integration tests) run on.
//!
//! - [`fleet`]: throwaway fleets (`hangar up` in a temp dir; hub and agent split);
//! - [`smoke`]: the whole lifecycle as a PASS/FAIL matrix;
//! - [`soak`]: long background runs and their triage (`soak_transfer`: its moves and
//!   copies under kill -9);
//! - [`bench`]: hangar measured against the raw tools underneath.
//!
//! The binary's path is always a parameter: the tools pass their own executable, the
//! tests `env!("CARGO_BIN_EXE_hangar")`. May depend on: types, client, hub (defaults),
//! agent (the soak's look at a host), node (client config, process helpers). Must not
//! be depended on by the product crates except the CLI, which offers these tools as
//! commands.

pub mod bench;
mod bench_ssh;
pub mod bench_backup;
mod bench_copy;
mod bench_move;
mod bench_nginx;
pub mod fleet;
pub mod smoke;
pub mod soak;
mod soak_transfer;

/// What a tool has to show: a JSON document (for `--json`), the same for people, and
/// the exit code.
#[derive(Debug)]
pub struct Report {
    /// `None`: the text is all there is, with or without `--json`.
    pub json: Option<serde_json::Value>,
    pub text: String,
    pub code: i32,
}

impl Report {
    pub fn item(json: serde_json::Value, text: String, code: i32) -> Report {
        Report { json: Some(json), text, code }
    }

    pub fn text(text: String, code: i32) -> Report {
        Report { json: None, text, code }
    }
}
