//! `hangar instance move --via backup` on a real fleet (root, runc, btrfs pools, two
//! hosts as network namespaces, a `dir:` backup target): refused (409 naming `backup
//! target`) while the tenant has none; then a running instance with a sentinel moves
//! through the target: backed up on the source while it runs and once stopped,
//! restored on the target, switched and started there, bytes intact, the source
//! holding nothing. Then the hub is aborted (like kill -9) at each phase that is new
//! with this way (after each backup, before and after the restore): afterwards the
//! instance is on exactly one host, running, bytes intact, the other host holds no
//! volume of it. `MOVE_VIA_BACKUP_STEP=<failpoint>` runs one step.

mod common;

use common::moves::{fleet_with_web, held, sandbox, start_move_may_die, volume, wait_fired, wait_move_final};
use common::{block_on, exec, wait_until, Fleet};
use hangar_types::moves::{InstanceMove, MovePhase, MoveVia};
use std::time::Duration;

/// The moves' fleet (acme/web running on node-b with a sentinel), its sentinel's
/// SHA-256 and sandbox; `failpoint` armed once.
fn fleet(failpoint: Option<(&str, &std::path::Path)>) -> (Fleet, String, String) {
    let f = fleet_with_web("hangar-mvbk-", failpoint);
    exec(&f, "acme/web", "echo hello > /home/hello.txt && sync");
    let sha = sha_in(&f);
    let sb = sandbox(&f, "acme/web");
    (f, sha, sb)
}

fn with_target(f: &Fleet, dir: &std::path::Path) {
    f.run(&["backup", "target", "add", "vault", &format!("dir:{}", dir.display())]);
    f.run(&["tenant", "update", "acme", "--backup-target", "vault"]);
}

fn sha_in(f: &Fleet) -> String {
    exec(f, "acme/web", "sha256sum /home/sentinel.bin | cut -d' ' -f1").trim().to_string()
}

fn via_backup(to: &str) -> InstanceMove {
    InstanceMove { via: MoveVia::Backup, ..InstanceMove::to(to.parse().unwrap()) }
}

#[test]
fn a_move_through_a_backup_target_keeps_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (f, sha, sb) = fleet(None);
    // ---- no backup target: refused, nothing changes
    let err = f.fail(&["instance", "move", "acme/web", "--to", "node-c", "--via", "backup"]);
    assert!(err.contains("backup target"), "{err}");
    assert!(f.fail(&["instance", "move", "acme/web", "--to", "node-c", "--via", "carrier-pigeon"]).contains("transfer or backup"));
    assert_eq!(f.json(&["instance", "info", "acme/web"])["host"], "node-b");
    assert!(block_on(f.client().unwrap().instance_move_status("acme", "web")).is_err(), "a refusal recorded a move");

    // ---- the move
    with_target(&f, dir.path());
    let before = f.json(&["instance", "info", "acme/web"]);
    let out = f.run(&["instance", "move", "acme/web", "--to", "node-c", "--via", "backup", "--wait"]);
    assert!(out.contains("moved acme/web from host node-b to node-c via backup"), "{out}");
    let after = f.json(&["instance", "info", "acme/web"]);
    assert_eq!((after["host"].as_str(), after["state"].as_str()), (Some("node-c"), Some("running")));
    for k in ["id", "address"] {
        assert_eq!(after[k], before[k], "{k} changed");
    }
    assert_eq!(sha_in(&f), sha);
    assert_eq!(exec(&f, "acme/web", "cat /home/hello.txt"), "hello\n");
    let m = block_on(f.client().unwrap().instance_move_status("acme", "web")).unwrap();
    assert_eq!((m.phase, m.via), (MovePhase::Done, MoveVia::Backup));
    assert!(m.bytes > 8 << 20, "{m:?}");
    wait_until("the source holds nothing of the moved instance", || held(&f, "node-b", &sb).is_empty());
    // The backups it went through are the tenant's, listed like any other.
    assert!(f.run(&["backup", "list", "acme/web"]).lines().count() >= 2);
}

const STEPS: &[&str] = &["move-hub-sending", "move-hub-backed-up-sending", "move-hub-backed-up-final", "move-hub-staged", "move-hub-restored"];

#[test]
fn a_move_through_a_backup_killed_at_each_new_phase_leaves_the_instance_on_one_host() {
    let only = std::env::var("MOVE_VIA_BACKUP_STEP").ok();
    for &step in STEPS.iter().filter(|s| only.as_deref().is_none_or(|o| o == **s)) {
        let dir = tempfile::tempdir().unwrap();
        let once = dir.path().join("fired");
        let target = dir.path().join("vault");
        std::fs::create_dir(&target).unwrap();
        let (mut f, sha, sb) = fleet(Some((step, &once)));
        with_target(&f, &target);
        start_move_may_die(&f, &via_backup("node-c"), step);
        wait_fired(&once, step);
        std::thread::sleep(Duration::from_millis(300));
        common::crash_and_restart(&mut f);
        let m = wait_move_final(&f, step);
        let (owner, other) = if m.phase == MovePhase::Done { ("node-c", "node-b") } else { ("node-b", "node-c") };
        assert_eq!(f.json(&["instance", "info", "acme/web"])["host"], owner, "{step}: {m:?}");
        wait_until(&format!("{step}: running on {owner}"), || f.json(&["instance", "info", "acme/web"])["state"] == "running");
        assert!(volume(&f, owner, &sb).is_dir(), "{step}: the owner {owner} has no volume");
        wait_until(&format!("{step}: {other} holds nothing of it"), || held(&f, other, &sb).is_empty());
        assert_eq!(sha_in(&f), sha, "{step}: the sentinel changed");
        eprintln!("{step}: ok ({:?} on {owner}{})", m.phase, m.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default());
    }
}
