//! `hangar instance move` end to end on a real fleet (root, runc, btrfs pools, two more
//! hosts as network namespaces): a running instance with a sentinel moves to another
//! host and back: same id, address and uid range, the sentinel's bytes intact, running
//! there; the source holds nothing of it (no volume, no snapshots, no pinned
//! namespaces) and the target no staging. A stopped one stays stopped. Refusals: the
//! same host, an unknown or draining host, a tenant token, an instance with snapshots,
//! a second move while one runs; each changes nothing.

mod common;

use common::moves::{agent_dir, held, sandbox};
use common::{block_on, Fleet, exec, api_error};
use hangar_types::moves::InstanceMove;
use hangar_types::ErrorCode;


fn sha_in(f: &Fleet, instance: &str, path: &str) -> String {
    exec(f, instance, &format!("sha256sum {path} | cut -d' ' -f1")).trim().to_string()
}

#[test]
fn move_keeps_identity_and_bytes_and_leaves_nothing_behind() {
    let f = common::up();
    let c = f.client().unwrap();
    for h in ["node-b", "node-c"] {
        f.run(&["host", "add", h, "--provider", "local"]);
    }
    f.run(&["tenant", "create", "acme", "--max-running", "8", "--max-disk", "8"]);
    f.run(&["host", "drain", "local"]);
    f.run(&["host", "drain", "node-c"]);
    for i in ["acme/web", "acme/cold"] {
        f.run(&["instance", "create", i, "--disk", "512", "--start", "--", "sleep", "infinity"]);
    }
    f.run(&["host", "undrain", "node-c"]);
    f.run(&["instance", "stop", "acme/cold"]);
    let before = f.json(&["instance", "info", "acme/web"]);
    assert_eq!(before["host"], "node-b");
    let sb = sandbox(&f, "acme/web");
    // A sentinel: 8 MiB of pseudo-random bytes and a small file, written while running.
    exec(&f, "acme/web", "head -c 8388608 /dev/urandom > /home/sentinel.bin && echo hello > /home/hello.txt && sync");
    let sha = sha_in(&f, "acme/web", "/home/sentinel.bin");
    let uid = std::fs::metadata(agent_dir(&f, "node-b").join("storage/pool/volumes").join(&sb).join("sentinel.bin")).map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();

    // ---- refusals: nothing changes
    let mv = |to: &str| InstanceMove::to(to.parse().unwrap());
    let e = api_error(block_on(c.instance_move("acme", "web", &mv("node-b"))));
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{}", e.message);
    assert!(e.message.contains("to:"), "{}", e.message);
    let e = api_error(block_on(c.instance_move("acme", "web", &mv("node-zz"))));
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{}", e.message);
    assert!(e.message.contains("node-zz"), "{}", e.message);
    let e = api_error(block_on(c.instance_move("acme", "web", &mv("local"))));
    assert_eq!(e.code, ErrorCode::NoCapacity, "a draining host: {}", e.message);
    assert!(e.message.contains("draining"), "{}", e.message);
    let e = api_error(block_on(c.instance_move("acme", "web", &InstanceMove { keep_source_secs: 10 * 86400, ..mv("node-c") })));
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{}", e.message);
    let tok: hangar_types::api::TokenCreated = block_on(c.token_create(&serde_json::from_value(serde_json::json!({"tenant": "acme"})).unwrap())).unwrap();
    let e = api_error(block_on(c.with_token(&tok.token).instance_move("acme", "web", &mv("node-c"))));
    assert_eq!(e.code, ErrorCode::Forbidden, "{}", e.message);
    // A snapshot goes with the instance (a backup cannot carry one: refused that way).
    exec(&f, "acme/web", "echo before > /home/snap.txt && sync");
    f.run(&["snapshot", "create", "acme/web", "--name", "keep"]);
    exec(&f, "acme/web", "echo after > /home/snap.txt && sync");
    let e = api_error(block_on(c.instance_move("acme", "web", &InstanceMove { via: hangar_types::moves::MoveVia::Backup, ..mv("node-c") })));
    assert_eq!(e.code, ErrorCode::Conflict, "{}", e.message);
    assert!(e.message.contains("snapshots (keep)"), "{}", e.message);
    let err = f.fail(&["instance", "move", "acme/web", "--to", "node-b"]);
    assert!(err.contains("to:"), "{err}");
    assert_eq!(f.json(&["instance", "info", "acme/web"])["host"], "node-b");

    // ---- the move
    let out = f.run(&["instance", "move", "acme/web", "--to", "node-c", "--wait"]);
    assert!(out.contains("moved acme/web from host node-b to node-c") && out.contains("downtime"), "{out}");
    let after = f.json(&["instance", "info", "acme/web"]);
    assert_eq!(after["host"], "node-c");
    for k in ["id", "address", "name", "tenant"] {
        assert_eq!(after[k], before[k], "{k} changed");
    }
    assert_eq!(after["state"], "running");
    assert_eq!(sha_in(&f, "acme/web", "/home/sentinel.bin"), sha);
    assert_eq!(exec(&f, "acme/web", "cat /home/hello.txt"), "hello\n");
    // Its snapshot came along: listed on the target, and it restores what it held.
    let snaps = f.json(&["snapshot", "list", "acme/web"]);
    assert!(snaps.as_array().unwrap().iter().any(|s| s["name"] == "keep"), "{snaps}");
    assert!(agent_dir(&f, "node-c").join("storage/pool/snapshots").join(&sb).join("keep").is_dir(), "the snapshot is not on the target");
    f.run(&["snapshot", "restore", "acme/web", "keep", "--force"]);
    common::wait_until("running after the restore", || f.json(&["instance", "info", "acme/web"])["state"] == "running");
    assert_eq!(exec(&f, "acme/web", "cat /home/snap.txt"), "before\n");
    let on_c = agent_dir(&f, "node-c").join("storage/pool/volumes").join(&sb);
    assert_eq!(std::fs::metadata(on_c.join("sentinel.bin")).map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap(), uid, "the files changed owner");
    common::wait_until("the source holds nothing of the moved instance", || held(&f, "node-b", &sb).is_empty());
    assert!(!agent_dir(&f, "node-c").join("storage/pool/transfers").join(&sb).exists(), "staging left on the target");
    // The move back carries 64 MiB more: its bytes never go down while it runs (that
    // they show during a pass, not only at its end, is move_netcut.rs's: it slows the
    // stream so a pass lasts long enough to watch).
    exec(&f, "acme/web", "head -c 67108864 /dev/urandom > /home/big.bin && sync");
    let st = f.json(&["instance", "move", "acme/web", "--to", "node-b"]);
    assert_eq!(st["phase"], "sending");
    // ---- a second move while one runs: refused
    let e = api_error(block_on(c.instance_move("acme", "web", &mv("node-b"))));
    assert_eq!(e.code, ErrorCode::Conflict, "{}", e.message);
    let (t, mut seen) = (std::time::Instant::now(), 0);
    loop {
        let m = block_on(c.instance_move_status("acme", "web")).unwrap();
        assert!(m.bytes >= seen, "the move's bytes went down: {} after {seen}", m.bytes);
        seen = m.bytes;
        if m.phase.is_final() {
            break;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(180), "the move back did not end: {m:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(seen >= 64 << 20, "the move reports {seen} bytes");
    let m = block_on(c.instance_move_status("acme", "web")).unwrap();
    assert_eq!(m.phase, hangar_types::moves::MovePhase::Done, "{m:?}");
    assert_eq!(f.json(&["instance", "info", "acme/web"])["host"], "node-b");
    assert_eq!(sha_in(&f, "acme/web", "/home/sentinel.bin"), sha);
    common::wait_until("node-c holds nothing of the instance moved back", || held(&f, "node-c", &sb).is_empty());
    assert!(agent_dir(&f, "node-b").join("storage/pool/snapshots").join(&sb).join("keep").is_dir(), "the snapshot did not come back");

    // ---- a stopped instance stays stopped
    let cold = sandbox(&f, "acme/cold");
    f.run(&["instance", "move", "acme/cold", "--to", "node-c", "--wait"]);
    let i = f.json(&["instance", "info", "acme/cold"]);
    assert_eq!((i["host"].as_str(), i["state"].as_str()), (Some("node-c"), Some("stopped")));
    assert!(agent_dir(&f, "node-c").join("storage/pool/volumes").join(&cold).is_dir());
    common::wait_until("node-b holds nothing of the stopped instance", || held(&f, "node-b", &cold).is_empty());
}
