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

/// Until an armed failpoint fired (its `HANGAR_FAILPOINT_ONCE` file exists): 90 s at most.
pub fn wait_fired(once: &std::path::Path, step: &str) {
    let t = std::time::Instant::now();
    while !once.exists() {
        assert!(t.elapsed() < std::time::Duration::from_secs(90), "{step}: the failpoint did not fire");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Until the newest move of acme/web has ended (done or rolled back): 180 s at most.
pub fn wait_move_final(f: &Fleet, step: &str) -> hangar_types::moves::MoveStatus {
    let c = f.client().unwrap();
    let t = std::time::Instant::now();
    loop {
        if let Ok(m) = super::block_on(c.instance_move_status("acme", "web"))
            && m.phase.is_final()
        {
            return m;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(180),
            "{step}: the move did not end: {:?}\nlog:\n{}",
            super::block_on(c.instance_move_status("acme", "web")),
            hangar_harness::fleet::tail(&f.log(), 60)
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// A fleet (data dirs named `prefix`...) with hosts node-b and node-c (the loopback
/// host drained), tenant acme and acme/web running on node-b with an 8 MiB sentinel at
/// /home/sentinel.bin; `failpoint` armed once (it fires once, creating the file).
pub fn fleet_with_web(prefix: &str, failpoint: Option<(&str, &std::path::Path)>) -> Fleet {
    super::require_root();
    let mut opts = super::FleetOptions::new(super::bin(), prefix);
    opts.pool_size_mib = 2048;
    opts.env = vec![("HANGAR_LOG".into(), "info".into())];
    if let Some((step, once)) = failpoint {
        opts.env.push(("HANGAR_FAILPOINT".into(), step.into()));
        opts.env.push(("HANGAR_FAILPOINT_ONCE".into(), once.to_str().unwrap().into()));
    }
    let f = super::block_on(Fleet::start(opts)).unwrap_or_else(|e| panic!("{e:#}"));
    for h in ["node-b", "node-c"] {
        f.run(&["host", "add", h, "--provider", "local"]);
    }
    f.run(&["tenant", "create", "acme", "--max-running", "8", "--max-disk", "8"]);
    f.run(&["host", "drain", "local"]);
    f.run(&["host", "drain", "node-c"]);
    f.run(&["instance", "create", "acme/web", "--disk", "512", "--start", "--", "sleep", "infinity"]);
    f.run(&["host", "undrain", "node-c"]);
    super::exec(&f, "acme/web", "head -c 8388608 /dev/urandom > /home/sentinel.bin && sync");
    f
}

/// Starts a move of acme/web with a failpoint armed: the hub may die before its answer
/// is written (a failpoint at the move's first phase), and the move is recorded then.
pub fn start_move_may_die(f: &Fleet, req: &hangar_types::moves::InstanceMove, step: &str) {
    match super::block_on(f.client().unwrap().instance_move("acme", "web", req)) {
        Ok(_) | Err(hangar_client::ClientError::Transport { .. }) => {}
        Err(e) => panic!("{step}: {e}"),
    }
}
