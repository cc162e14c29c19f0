//! End-to-end tests run the real `hangar` binary on the harness's fleet
//! ([`hangar_harness::fleet::Fleet`]): a temp data dir, a hub and an agent on loopback.
//! Dropping a fleet kills its processes and runs `hangar down --purge`.
#![allow(dead_code)]

pub mod moves;

pub use hangar_harness::fleet::{free_port as try_free_port, Fleet, FleetOptions};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Every host process: its pid and its command line, NULs as spaces.
pub fn host_command_lines() -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&raw).replace('\0', " ")))
        })
        .collect()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hangar")
}

/// These tests drive runc, cgroups and loop devices: without root they cannot run,
/// and they say so instead of passing vacuously.
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1).map(str::to_string)));
    assert_eq!(uid.as_deref(), Some("0"), "end-to-end tests need root (runc, cgroups, loop devices, btrfs)");
    for tool in ["runc", "mkfs.btrfs", "losetup", "blkid"] {
        let ok = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| o.status.success()).unwrap_or(false);
        assert!(ok, "{tool} is missing: install runc, btrfs-progs, util-linux (.ci/run does)");
    }
}

/// Runs a future to completion on a runtime of its own (the tests are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime").block_on(f)
}

/// `hangar up` in the background, waiting until its host is ready.
pub fn up() -> Fleet {
    up_with(&[])
}

/// `hangar up` with more arguments (e.g. `--stale-after`).
pub fn up_with(up_args: &[&str]) -> Fleet {
    require_root();
    let mut opts = FleetOptions::new(bin(), "hangar-e2e-");
    opts.pool_size_mib = 2048;
    opts.up_args = up_args.iter().map(|s| s.to_string()).collect();
    opts.env = vec![("HANGAR_LOG".into(), "info".into())];
    block_on(Fleet::start(opts)).unwrap_or_else(|e| panic!("{e:#}"))
}

/// kill -9 of the fleet's `hangar up`, then a start on the same data dir, until ready.
pub fn crash_and_restart(f: &mut Fleet) {
    block_on(f.crash_and_restart()).unwrap_or_else(|e| panic!("{e:#}"))
}

pub fn free_port() -> u16 {
    try_free_port().expect("a free port")
}

/// Polls `ok` every 250 ms for up to 90 s.
pub fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Removes everything a data dir's fleet made, whatever state it is in.
pub fn down(data_dir: &Path) {
    hangar_harness::fleet::down(Path::new(bin()), data_dir);
}

/// Runs `script` with `sh -c` in `instance` through `hangar instance exec`; its stdout.
pub fn exec(f: &Fleet, instance: &str, script: &str) -> String {
    f.run(&["instance", "exec", instance, "--", "sh", "-c", script])
}

/// The API error of a call that must be refused.
pub fn api_error<T>(r: Result<T, hangar_client::ClientError>) -> hangar_types::ApiError {
    match r {
        Err(hangar_client::ClientError::Api(e)) => e,
        Err(other) => panic!("expected an API error, got {other}"),
        Ok(_) => panic!("expected an API error, got success"),
    }
}
