//! `hangar bench` runs end to end and reports real numbers. No speed is asserted: these
//! machines are shared and noisy.

mod common;

#[test]
fn bench_runs_and_reports() {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.json");
    let nginx_before = nginx_processes();
    let o = std::process::Command::new(common::bin())
        .args(["bench", "--only", "start,resume,api,proxy,move", "--runs", "3", "--api-secs", "1", "--proxy-requests", "5", "--proxy-mib", "1", "--move-mib", "32", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let results = v["results"].as_array().unwrap();
    for bench in ["start", "resume", "api", "proxy", "move"] {
        let r = results.iter().find(|r| r["bench"] == bench).unwrap_or_else(|| panic!("no {bench} result in {v:#}"));
        assert!(r["hangar"].as_f64().unwrap() > 0.0, "{r}");
    }
    let start = results.iter().find(|r| r["bench"] == "start").unwrap();
    assert!(start["raw"].as_f64().unwrap() > 0.0 && start["ratio"].as_f64().unwrap() > 0.0, "{start}");
    // The move next to btrfs send | receive, and the downtime it reported.
    let mv: Vec<&serde_json::Value> = results.iter().filter(|r| r["bench"] == "move").collect();
    assert!(mv[0]["raw"].as_f64().unwrap() > 0.0 && mv[0]["ratio"].as_f64().unwrap() > 0.0, "{mv:?}");
    let down = mv.iter().find(|r| r["metric"].as_str().unwrap().starts_with("downtime")).unwrap_or_else(|| panic!("no downtime row in {mv:?}"));
    assert!(down["hangar"].as_f64().unwrap() > 0.0, "{down}");
    assert!(mv.iter().any(|r| r["metric"] == "phase final"), "{mv:?}");
    // The peers a user would pick, in the same run: nginx for the proxy, OpenSSH for the move.
    let peer = |bench: &str, metric: &str| {
        let r = results.iter().find(|r| r["bench"] == bench && r["metric"].as_str().unwrap().starts_with(metric)).unwrap_or_else(|| panic!("no {bench} '{metric}' row in {v:#}"));
        assert!(r["raw"].as_f64().unwrap() > 0.0, "{r}");
    };
    peer("proxy", "download vs nginx");
    peer("move", "vs the peer: btrfs send | ssh");
    assert!(v["failed"].as_array().unwrap().is_empty(), "{v:#}");
    // The peers' servers went with the bench, workers too.
    assert!(nginx_processes() <= nginx_before, "the proxy bench left nginx processes running");
    assert!(v["machine"]["nproc"].as_u64().unwrap() >= 1);
    let bad = std::process::Command::new(common::bin()).args(["bench", "--only", "warp"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown benchmark 'warp'"));
}

/// How many nginx processes run (master: `nginx -c ...`, workers: `nginx: worker process`).
fn nginx_processes() -> usize {
    common::host_command_lines().iter().filter(|(_, l)| l.starts_with("nginx")).count()
}
