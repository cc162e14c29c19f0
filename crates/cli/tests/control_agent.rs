//! Issue 13: agent commands follow the data dir (`HANGAR_DATA_DIR`, `--data-dir`) like
//! every other command, and refuse to act on a host whose agent is running. Before,
//! `agent reconcile` used /var/lib/hangar/agent whatever the data dir and started a
//! second copy of the host's instances there.

mod common;

use common::*;

#[test]
fn agent_reconcile_follows_the_data_dir_and_refuses_a_running_agent() {
    let f = up();
    let host = f.json(&["host", "list"])[0]["name"].as_str().unwrap().to_string();
    let doc = f.run(&["agent", "desired", "--host", &host]);
    let file = f.dir.path().join("desired.json");
    std::fs::write(&file, doc).unwrap();
    let data = f.data_dir();
    let by_env = std::process::Command::new(bin())
        .args(["agent", "reconcile", "--volumes", "dir", "--desired"])
        .arg(&file)
        .env("HANGAR_DATA_DIR", &data)
        .env("HANGAR_CONFIG", f.config())
        .output()
        .unwrap();
    let by_flag = std::process::Command::new(bin())
        .args(["agent", "reconcile", "--volumes", "dir", "--desired"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .env("HANGAR_CONFIG", f.config())
        .output()
        .unwrap();
    for (how, o) in [("HANGAR_DATA_DIR", by_env), ("--data-dir", by_flag)] {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "{how}: reconcile acted beside a running agent: {err}");
        assert!(err.contains("another hangar agent works on") && err.contains(&data.join("agent").display().to_string()), "{how}: {err}");
    }
    assert!(!std::path::Path::new("/var/lib/hangar/agent/desired.json").exists() || std::fs::read_to_string("/var/lib/hangar/agent/desired.json").unwrap_or_default() != std::fs::read_to_string(&file).unwrap());
}
