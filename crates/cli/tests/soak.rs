//! `hangar soak`: a background run that starts, reports, stops on request and is
//! collected and triaged; a killed runner is detected; bad input is refused.

mod common;

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn soak(base: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(common::bin()).arg("soak").args(args).arg("--base").arg(base).arg("--json").output().unwrap()
}

fn status(base: &std::path::Path) -> Value {
    serde_json::from_slice(&soak(base, &["status"]).stdout).unwrap_or_default()
}

#[test]
fn a_soak_run_starts_stops_and_is_collected() {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let o = soak(base, &["start", "120", "--scenario", "lifecycle,integrity"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A second run is refused while the first is alive.
    let again = soak(base, &["start", "10"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("still running"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while status(base)["rounds"].as_u64().unwrap_or(0) < 3 {
        assert_eq!(status(base)["state"], "running", "{}", status(base));
        assert!(Instant::now() < deadline, "no progress: {}", status(base));
        std::thread::sleep(Duration::from_millis(500));
    }
    let o = soak(base, &["stop"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = status(base);
    assert_eq!(s["state"], "stopped", "{s}");
    assert_eq!(s["errors"], 0, "{s}");
    let c: Value = serde_json::from_slice(&soak(base, &["collect"]).stdout).unwrap();
    let tar = c["tarball"].as_str().unwrap();
    assert!(std::path::Path::new(tar).exists());
    let t: Value = serde_json::from_slice(&Command::new(common::bin()).args(["soak", "triage", tar, "--json"]).output().unwrap().stdout).unwrap();
    assert!(t["rounds"].as_u64().unwrap() >= 3, "{t}");
    assert_eq!(t["failed_rounds"], 0, "{t}");
}

#[test]
fn a_killed_runner_is_detected_and_bad_input_refused() {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let bad = soak(base, &["start", "10", "--scenario", "nope"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scenario 'nope'"));
    let none = soak(base, &["status"]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("no soak run"));
    assert!(soak(base, &["start", "120", "--scenario", "churn"]).status.success());
    // Wait until the runner has its fleet, then kill it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(base)["fleet_dir"].is_null() {
        assert!(Instant::now() < deadline, "the runner never started its fleet");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = status(base)["pid"].as_u64().unwrap();
    // kill -9 the runner: its fleet is orphaned, the next status says so.
    Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let s = status(base);
    assert_eq!(s["state"], "failed", "{s}");
    assert!(s["last_error"].as_str().unwrap().contains("died"), "{s}");
    // The orphaned fleet was removed by that status call.
    let fleet = std::path::PathBuf::from(s["fleet_dir"].as_str().expect("the runner recorded its fleet"));
    assert!(!fleet.exists(), "the dead runner's fleet is still there");
}

/// The `transfer` scenario: moves and cross-host copies with the source or target agent
/// killed at random moments; every round checks its invariants (one host per
/// instance, checksums, progress only up, no staging, no open tickets).
#[test]
fn a_transfer_soak_run_keeps_its_invariants_under_kill_9() {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let o = soak(base, &["start", "300", "--scenario", "transfer"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(240);
    while status(base)["rounds"].as_u64().unwrap_or(0) < 3 {
        let s = status(base);
        assert_eq!(s["state"], "running", "{s}");
        assert_eq!(s["errors"], 0, "{s}");
        assert!(Instant::now() < deadline, "no progress: {s}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let o = soak(base, &["stop"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = status(base);
    assert_eq!(s["errors"], 0, "{s}");
    let run = std::path::PathBuf::from(std::fs::read_to_string(base.join("current")).unwrap().trim());
    let rounds = std::fs::read_to_string(run.join("rounds.tsv")).unwrap();
    assert!(rounds.lines().skip(1).all(|l| l.contains("\ttransfer\tok\t")), "{rounds}");
    // The runner logs each round: moves ended, and agents were killed (a round without
    // any kill is one in ten; three in a row one in a thousand).
    let log = std::fs::read_to_string(run.join("runner.log")).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("transfer: move")).collect();
    assert!(lines.len() >= 3, "{log}");
    assert!(lines.iter().any(|l| l.contains("(kill tx-")), "no agent was killed in {} rounds:\n{log}", lines.len());
}
