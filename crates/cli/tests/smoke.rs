//! `hangar smoke` on a local fleet of its own: every step passes, results are written
//! per scenario, bad arguments are refused before anything starts.

mod common;

use serde_json::Value;
use std::process::Command;

#[test]
fn smoke_passes_on_a_local_fleet_and_writes_results() {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(common::bin()).args(["smoke", "--results"]).arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("0 failed"), "{stdout}");
    let run = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert!(summary["passed"].as_u64().unwrap() >= 30, "{summary:#}");
    assert_eq!(summary["skipped"], 0, "{summary:#}");
    for s in ["fleet", "lifecycle", "network", "security", "pools", "hosts", "access", "backup", "copy", "move", "cleanup"] {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(run.join(format!("{s}.json"))).unwrap()).unwrap();
        for step in v["steps"].as_array().unwrap() {
            assert_eq!(step["status"], "PASS", "{step}");
            assert!(step["finished_at"].is_string() && step["duration_ms"].is_u64());
        }
    }
}

#[test]
fn smoke_refuses_bad_arguments_before_starting() {
    let o = Command::new(common::bin()).args(["smoke", "--scenario", "nope"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown scenario 'nope'"));
    let o = Command::new(common::bin()).args(["smoke", "--list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("lifecycle:"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let o = Command::new(common::bin()).args(["smoke", "--hub", "https://127.0.0.1:1", "--token-file", "/nonexistent", "--ca-file"]).arg(&ca).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--token-file /nonexistent"), "{}", String::from_utf8_lossy(&o.stderr));
}
