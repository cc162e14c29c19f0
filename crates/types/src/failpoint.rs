//! Test-only crash points: `HANGAR_FAILPOINT=<step>` makes the process abort (like a
//! kill -9: no destructors, no flushing) when it reaches that step, so tests can show
//! that every step of a multi-step change leaves a consistent state. With
//! `HANGAR_FAILPOINT_ONCE=<file>`, it fires only if that file does not exist yet (and
//! creates it first), so a restarted process with the same environment goes on.
//! Without the variables this is one environment read per step. Shared by the hub and
//! the agent (the one exception to "no I/O" in this crate: an environment read and,
//! when armed, one file create).

/// Aborts here if `HANGAR_FAILPOINT` names `step`.
pub fn hit(step: &str) {
    if std::env::var("HANGAR_FAILPOINT").ok().as_deref() != Some(step) {
        return;
    }
    let once = std::env::var_os("HANGAR_FAILPOINT_ONCE");
    if once.is_some_and(|f| std::fs::OpenOptions::new().write(true).create_new(true).open(f).is_err()) {
        return;
    }
    eprintln!("failpoint {step}: aborting");
    std::process::abort();
}
