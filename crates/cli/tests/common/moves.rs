//! What hosts hold of moved instances, read on disk (`instance move`, `host evacuate`).

use super::Fleet;
use std::path::PathBuf;

/// The agent dir of fleet host `host`.
pub fn agent_dir(f: &Fleet, host: &str) -> PathBuf {
    f.data_dir().join("hosts").join(host).join("agent")
}

/// The sandbox id (which names the volume) of `instance`.
pub fn sandbox(f: &Fleet, instance: &str) -> String {
    let id: hangar_types::InstanceId = f.json(&["instance", "info", instance])["id"].as_str().unwrap().parse().unwrap();
    id.sandbox_id().to_string()
}

/// The volume of sandbox `sb` on `host`.
pub fn volume(f: &Fleet, host: &str, sb: &str) -> PathBuf {
    agent_dir(f, host).join("storage/pool/volumes").join(sb)
}

/// What `host` holds of sandbox `sb`: volume, snapshots, staging, pinned namespaces.
pub fn held(f: &Fleet, host: &str, sb: &str) -> Vec<String> {
    let pool = agent_dir(f, host).join("storage/pool");
    let mut out = vec![];
    for p in [pool.join("volumes").join(sb), pool.join("snapshots").join(sb), pool.join("transfers").join(sb)] {
        if p.exists() {
            out.push(p.display().to_string());
        }
    }
    let id: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(agent_dir(f, host).join("identity.json")).unwrap()).unwrap();
    let hid = id["host_id"].as_str().unwrap().replace('-', "");
    let pin = format!("hg-h{}-{sb}", &hid[hid.len() - 12..]);
    for dir in ["/run/hangar/userns", "/run/netns"] {
        if std::path::Path::new(dir).join(&pin).exists() {
            out.push(format!("{dir}/{pin}"));
        }
    }
    out
}

/// SHA-256 (hex) of a file on this machine.
pub fn sha_file(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(path).output().expect("sha256sum runs");
    assert!(out.status.success(), "sha256sum {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}
