//! `hangar instance move` with a process killed (abort, like kill -9) at each phase:
//! the hub at every recorded phase and between its steps, the source agent while it
//! sends, the target agent while it receives, after it received and while it adopts.
//! After the restart the move ends (done, or rolled back) and: the instance is placed
//! on exactly one host, whose volume holds it, the other host holds no volume of it,
//! it runs (its previous state), the sentinel's bytes are intact; and a second move
//! works.

mod common;

use common::moves::{fleet_with_web, start_move_may_die, volume, wait_fired, wait_move_final};
use common::{wait_until, Fleet, exec};
use hangar_types::moves::{InstanceMove, MovePhase};
use std::time::Duration;


fn host_state(f: &Fleet, host: &str) -> String {
    f.json(&["host", "info", host])["state"].as_str().unwrap_or_default().to_string()
}

/// Which process a failpoint kills.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Hub,
    Source,
    Target,
}

const STEPS: &[(&str, Who)] = &[
    ("move-hub-sending", Who::Hub),
    ("transfer-source-sending", Who::Source),
    ("transfer-target-receiving", Who::Target),
    ("move-hub-stopping", Who::Hub),
    ("move-hub-final", Who::Hub),
    ("move-hub-snapshot-mv-2", Who::Hub),
    ("transfer-target-received", Who::Target),
    ("move-hub-staged", Who::Hub),
    ("transfer-target-adopt", Who::Target),
    ("move-hub-adopted", Who::Hub),
    ("move-hub-switched", Who::Hub),
    ("move-hub-started", Who::Hub),
];

fn sha_in(f: &Fleet, instance: &str) -> String {
    exec(f, instance, "sha256sum /home/sentinel.bin | cut -d' ' -f1").trim().to_string()
}

#[test]
fn a_move_killed_at_any_phase_leaves_the_instance_on_exactly_one_host() {
    let only = std::env::var("MOVE_FAULT_STEP").ok();
    for &(step, who) in STEPS.iter().filter(|(s, _)| only.as_deref().is_none_or(|o| o == *s)) {
        let once = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        std::fs::remove_file(&once).unwrap();
        let mut f = fleet_with_web("hangar-movefault-", Some((step, &once)));
        let id: hangar_types::InstanceId = f.json(&["instance", "info", "acme/web"])["id"].as_str().unwrap().parse().unwrap();
        let sb = id.sandbox_id().to_string();
        let sha = sha_in(&f, "acme/web");

        start_move_may_die(&f, &InstanceMove::to("node-c".parse().unwrap()), step);
        wait_fired(&once, step);
        match who {
            Who::Hub => {
                std::thread::sleep(Duration::from_millis(300));
                common::crash_and_restart(&mut f);
            }
            Who::Source | Who::Target => {
                let host = if who == Who::Source { "node-b" } else { "node-c" };
                wait_until(&format!("{step}: {host} seen gone"), || host_state(&f, host) != "ready");
                f.run(&["host", "start", host]);
                wait_until(&format!("{step}: {host} back"), || host_state(&f, host) == "ready");
            }
        }
        let m = wait_move_final(&f, step);
        let (owner, other) = match m.phase {
            MovePhase::Done => ("node-c", "node-b"),
            _ => ("node-b", "node-c"),
        };
        let i = f.json(&["instance", "info", "acme/web"]);
        assert_eq!(i["host"], owner, "{step}: {m:?}");
        wait_until(&format!("{step}: running on {owner}"), || f.json(&["instance", "info", "acme/web"])["state"] == "running");
        assert!(volume(&f, owner, &sb).is_dir(), "{step}: the owner {owner} has no volume");
        wait_until(&format!("{step}: {other} holds no volume of it"), || !volume(&f, other, &sb).exists());
        assert_eq!(sha_in(&f, "acme/web"), sha, "{step}: the sentinel changed");
        // A second move works.
        let back = if owner == "node-b" { "node-c" } else { "node-b" };
        let out = f.run(&["instance", "move", "acme/web", "--to", back, "--wait"]);
        assert!(out.contains("moved"), "{step}: {out}");
        assert_eq!(f.json(&["instance", "info", "acme/web"])["host"], back);
        assert_eq!(sha_in(&f, "acme/web"), sha, "{step}: the sentinel changed on the second move");
        wait_until(&format!("{step}: {owner} holds nothing after the second move"), || !volume(&f, owner, &sb).exists());
        eprintln!("{step}: ok ({:?}, then moved to {back})", m.phase);
        drop(f);
    }
}
