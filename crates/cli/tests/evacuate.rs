//! `hangar host evacuate` end to end on a real fleet (root, runc, btrfs pools, three
//! hosts as network namespaces; the fleet's own loopback host stays drained): three
//! instances on one host, one of them stopped, leave it through the move mechanism;
//! each lands on another host in its state with its sentinel's bytes intact, and the
//! evacuated host holds nothing of them and stays drained. The hub is killed (abort,
//! like kill -9) right after the evacuation started its first move and before it
//! recorded it: after the restart the evacuation finds that move again and ends.
//! Refusals: an unknown host, `parallel` out of range, a host that is the only ready
//! one; each changes nothing.

mod common;

use common::moves::{held, sandbox, sha_file, volume, wait_fired};
use common::{api_error, bin, block_on, exec, wait_until, Fleet};
use hangar_harness::fleet::FleetOptions;
use hangar_types::api::OperationStatus;
use hangar_types::moves::{EvacuationOutcome, HostEvacuate};
use hangar_types::ErrorCode;
use std::time::{Duration, Instant};

fn host_of(f: &Fleet, instance: &str) -> String {
    f.json(&["instance", "info", instance])["host"].as_str().unwrap_or_default().to_string()
}

#[test]
fn evacuate_moves_every_instance_off_and_survives_a_hub_kill() {
    common::require_root();
    let once = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    std::fs::remove_file(&once).unwrap();
    let mut opts = FleetOptions::new(bin(), "hangar-evac-");
    opts.pool_size_mib = 2048;
    opts.env = vec![
        ("HANGAR_LOG".into(), "info".into()),
        ("HANGAR_FAILPOINT".into(), "evacuate-hub-move-started".into()),
        ("HANGAR_FAILPOINT_ONCE".into(), once.to_str().unwrap().into()),
    ];
    let mut f = block_on(Fleet::start(opts)).unwrap_or_else(|e| panic!("{e:#}"));
    for h in ["node-b", "node-c", "node-d"] {
        f.run(&["host", "add", h, "--provider", "local"]);
    }
    f.run(&["tenant", "create", "acme", "--max-running", "8", "--max-disk", "8"]);
    for h in ["local", "node-c", "node-d"] {
        f.run(&["host", "drain", h]);
    }
    let names = ["acme/web", "acme/api", "acme/cold"];
    for i in names {
        f.run(&["instance", "create", i, "--disk", "256", "--start", "--", "sleep", "infinity"]);
        assert_eq!(host_of(&f, i), "node-b");
        exec(&f, i, "head -c 4194304 /dev/urandom > /home/sentinel.bin && sync");
    }
    f.run(&["instance", "stop", "acme/cold"]);
    let sb: Vec<String> = names.iter().map(|i| sandbox(&f, i)).collect();
    let sha: Vec<String> = sb.iter().map(|s| sha_file(&volume(&f, "node-b", s).join("sentinel.bin"))).collect();
    let c = f.client().unwrap();

    // ---- refusals: nothing changes
    let e = api_error(block_on(c.host_evacuate("node-zz", &HostEvacuate::default())));
    assert_eq!(e.code, ErrorCode::NotFound, "{}", e.message);
    assert!(e.message.contains("node-zz"), "{}", e.message);
    for parallel in [0, 17] {
        let e = api_error(block_on(c.host_evacuate("node-b", &HostEvacuate { parallel })));
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{}", e.message);
        assert!(e.message.starts_with("parallel:"), "{}", e.message);
    }
    let e = api_error(block_on(c.host_evacuate("node-b", &HostEvacuate::default())));
    assert_eq!(e.code, ErrorCode::Conflict, "{}", e.message);
    assert!(e.message.contains("only ready host"), "{}", e.message);
    let err = f.fail(&["host", "evacuate", "node-b", "--parallel", "0"]);
    assert!(err.contains("parallel"), "{err}");
    assert_eq!(f.json(&["host", "info", "node-b"])["state"], "ready", "a refusal drained the host");
    let e = api_error(block_on(c.host_evacuation("node-b")));
    assert_eq!(e.code, ErrorCode::NotFound, "a refusal recorded an evacuation: {}", e.message);

    // ---- the evacuation; the hub dies right after it started its first move
    f.run(&["host", "undrain", "node-c"]);
    f.run(&["host", "undrain", "node-d"]);
    let t = Instant::now();
    // The hub may die before its answer is written: the evacuation is recorded.
    match block_on(c.host_evacuate("node-b", &HostEvacuate { parallel: 2 })) {
        Ok(ev) => assert_eq!(ev.items.len(), 3, "{ev:?}"),
        Err(hangar_client::ClientError::Transport { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    wait_fired(&once, "evacuate-hub-move-started");
    std::thread::sleep(Duration::from_millis(300));
    common::crash_and_restart(&mut f);
    let c = f.client().unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let ev = loop {
        if let Ok(ev) = block_on(c.host_evacuation("node-b"))
            && ev.status.is_final()
        {
            break ev;
        }
        assert!(Instant::now() < deadline, "the evacuation did not end: {:?}\nlog:\n{}", block_on(c.host_evacuation("node-b")), hangar_harness::fleet::tail(&f.log(), 80));
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("evacuated 3 instances in {:.1} s (hub killed once)", t.elapsed().as_secs_f64());
    assert_eq!(ev.status, OperationStatus::Succeeded, "{ev:?}");
    let op = block_on(c.operation_get(ev.operation_id)).unwrap();
    assert_eq!((op.kind.as_str(), op.status), ("host.evacuate", OperationStatus::Succeeded));
    assert_eq!(f.json(&["host", "info", "node-b"])["state"], "draining");
    for (k, i) in names.iter().enumerate() {
        let item = ev.items.iter().find(|it| format!("{}/{}", it.tenant, it.instance) == *i).unwrap();
        assert_eq!(item.outcome, EvacuationOutcome::Moved, "{item:?}");
        let on = host_of(&f, i);
        assert!(on == "node-c" || on == "node-d", "{i} is on {on}");
        assert_eq!(item.target.as_ref().map(ToString::to_string).as_deref(), Some(on.as_str()));
        let want = if *i == "acme/cold" { "stopped" } else { "running" };
        wait_until(&format!("{i} {want} on {on}"), || f.json(&["instance", "info", i])["state"] == want);
        assert_eq!(sha_file(&volume(&f, &on, &sb[k]).join("sentinel.bin")), sha[k], "{i}: the sentinel changed");
        wait_until(&format!("node-b holds nothing of {i}"), || held(&f, "node-b", &sb[k]).is_empty());
    }
    assert_eq!(exec(&f, "acme/web", "sha256sum /home/sentinel.bin | cut -d' ' -f1").trim(), sha[0]);

    // ---- the CLI: a second evacuation, followed to its end, prints each instance
    let from = host_of(&f, "acme/web");
    let to = if from == "node-c" { "node-d" } else { "node-c" };
    let moving: Vec<&str> = names.iter().copied().filter(|i| host_of(&f, i) == from).collect();
    let out = f.run(&["host", "evacuate", &from, "--wait"]);
    for i in &moving {
        assert!(out.lines().any(|l| l.contains(i) && l.contains(&format!("moved to {to}"))), "{i} not shown moved to {to}:\n{out}");
        assert_eq!(host_of(&f, i), to);
    }
    assert!(out.contains(&format!("host {from} is empty")), "{out}");
}
