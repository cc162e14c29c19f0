//! Snapshots end to end on a real fleet (root, runc, a btrfs pool): create, list,
//! restore (stopped, and running with --force), delete, the errors users meet, the disk
//! quota counting snapshots, scheduled snapshots with retention, and a kill -9 of the
//! fleet after which the hub's list still matches what the host holds.

mod common;

use common::{block_on, Fleet, api_error};
use hangar_types::api::{SnapshotCreate, SnapshotRestore};
use hangar_types::ErrorCode;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The fleet's btrfs pool (its volumes and snapshots).
fn pool(f: &Fleet) -> PathBuf {
    let p = f.data_dir().join("agent/storage/pool");
    assert!(p.join("volumes").is_dir(), "no pool at {}", p.display());
    p
}

fn sandbox(f: &Fleet, instance: &str) -> String {
    let i = f.json(&["instance", "info", instance]);
    let id: hangar_types::InstanceId = i["id"].as_str().unwrap().parse().unwrap();
    id.sandbox_id().to_string()
}

/// Snapshot names on the host (backups' own excepted), sorted.
fn on_disk(f: &Fleet, sandbox: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(pool(f).join("snapshots").join(sandbox))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with("bk-") && !n.starts_with('.')).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn desired(f: &Fleet) -> Value {
    serde_json::from_str(&f.run(&["agent", "desired", "--host", "local"])).unwrap()
}

fn listed(f: &Fleet, instance: &str) -> Vec<Value> {
    f.json(&["snapshot", "list", instance]).as_array().unwrap().clone()
}

fn names(list: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}


#[test]
fn create_list_restore_delete_and_quota() {
    let f = common::up();
    let c = f.client().unwrap();
    f.run(&["tenant", "create", "acme", "--max-vcpus", "8", "--max-mem", "8192", "--max-running", "4", "--max-instances", "10", "--max-disk", "1"]);
    f.run(&["instance", "create", "acme/web", "--disk", "768", "--start", "--", "sleep", "infinity"]);
    let sb = sandbox(&f, "acme/web");
    f.run(&["instance", "exec", "acme/web", "--", "sh", "-c", "echo v1 > /home/notes.txt"]);

    let out = f.run(&["snapshot", "create", "acme/web", "--name", "before-upgrade"]);
    assert!(out.contains("snapshot 'before-upgrade' of acme/web taken at"), "{out}");
    assert_eq!(on_disk(&f, &sb), ["before-upgrade"]);
    // Read-only on the host.
    assert!(std::fs::write(pool(&f).join("snapshots").join(&sb).join("before-upgrade/x"), "no").is_err());
    let list = listed(&f, "acme/web");
    assert_eq!(names(&list), ["before-upgrade"]);
    assert_eq!((list[0]["scheduled"].as_bool(), list[0]["instance"].as_str()), (Some(false), Some("acme/web")));
    // Without --name: a name from the time.
    let auto = f.json(&["snapshot", "create", "acme/web"]);
    assert!(auto["name"].as_str().unwrap().starts_with("snap-"), "{auto}");

    // Bad input: 4xx with the field named, nothing made.
    let e = api_error(block_on(c.snapshot_create("acme", "web", &SnapshotCreate { name: Some("before-upgrade".into()) })));
    assert_eq!(e.code, ErrorCode::AlreadyExists, "{e:?}");
    for bad in ["bk-mine", "auto-20261130-120000", "Bad_Name"] {
        let e = api_error(block_on(c.snapshot_create("acme", "web", &SnapshotCreate { name: Some(bad.into()) })));
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message.starts_with("name: "), "{e:?}");
    }
    let err = f.fail(&["snapshot", "create", "acme/web", "--name", "bk-mine"]);
    assert!(err.contains("--name") && err.contains("backups"), "{err}");
    let e = api_error(block_on(c.snapshot_create("acme", "nope", &SnapshotCreate::default())));
    assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");
    let e = api_error(block_on(c.snapshot_restore("acme", "web", "nope", &SnapshotRestore::default())));
    assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");
    let e = api_error(block_on(c.snapshot_delete("acme", "web", "nope")));
    assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");
    assert_eq!(on_disk(&f, &sb).len(), 2);

    // A restore onto a running instance is refused without --force, and changes nothing.
    f.run(&["instance", "exec", "acme/web", "--", "sh", "-c", "echo v2 > /home/notes.txt"]);
    let e = api_error(block_on(c.snapshot_restore("acme", "web", "before-upgrade", &SnapshotRestore { force: false })));
    assert_eq!(e.code, ErrorCode::IllegalTransition, "{e:?}");
    let err = f.fail(&["snapshot", "restore", "acme/web", "before-upgrade"]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(f.run(&["instance", "exec", "acme/web", "--", "cat", "/home/notes.txt"]), "v2\n");
    assert_eq!(f.json(&["instance", "info", "acme/web"])["state"], "running");

    // --force: said up front, stopped, restored, started again.
    let o = f.try_run(&["snapshot", "restore", "acme/web", "before-upgrade", "--force"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{out}{err}");
    assert!(err.contains("stopping it, restoring 'before-upgrade', then starting it again"), "{err}");
    assert!(out.contains("restored from snapshot 'before-upgrade'") && out.contains("running again"), "{out}");
    assert_eq!(f.run(&["instance", "exec", "acme/web", "--", "cat", "/home/notes.txt"]), "v1\n");
    // Owned by root inside, writable, and the volume keeps its size limit.
    assert_eq!(f.run(&["instance", "exec", "acme/web", "--", "sh", "-c", "stat -c %u /home/notes.txt && touch /home/new && echo ok"]), "0\nok\n");
    let q = std::process::Command::new("btrfs").args(["qgroup", "show", "-r", "--raw", "-f"]).arg(pool(&f).join("volumes").join(&sb)).output().unwrap();
    let q = String::from_utf8_lossy(&q.stdout);
    assert!(q.lines().last().is_some_and(|l| l.split_whitespace().any(|x| x == (768u64 << 20).to_string())), "no 768 MiB limit: {q}");

    // Stopped: a plain restore.
    f.run(&["instance", "exec", "acme/web", "--", "sh", "-c", "echo v3 > /home/notes.txt"]);
    f.run(&["instance", "stop", "acme/web"]);
    let out = f.run(&["snapshot", "restore", "acme/web", "before-upgrade"]);
    assert!(out.contains("restored") && !out.contains("running again"), "{out}");
    f.run(&["instance", "start", "acme/web"]);
    assert_eq!(f.run(&["instance", "exec", "acme/web", "--", "cat", "/home/notes.txt"]), "v1\n");

    // Quota: snapshots count by the bytes only they hold. 768 MiB of volume, then a
    // snapshot that comes to hold 300 MiB alone: over the tenant's 1 GiB.
    f.run(&["snapshot", "delete", "acme/web", auto["name"].as_str().unwrap()]);
    f.run(&["instance", "exec", "acme/web", "--", "sh", "-c", "dd if=/dev/urandom of=/home/big bs=1M count=300 status=none && sync"]);
    f.run(&["snapshot", "create", "acme/web", "--name", "big"]);
    f.run(&["instance", "exec", "acme/web", "--", "sh", "-c", "rm /home/big && sync"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = listed(&f, "acme/web");
        let big = list.iter().find(|s| s["name"] == "big").expect("big listed");
        if big["exclusive_bytes"].as_u64().unwrap_or(0) > 250 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the snapshot's exclusive bytes never showed: {big}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let e = api_error(block_on(c.snapshot_create("acme", "web", &SnapshotCreate { name: Some("one-more".into()) })));
    assert_eq!(e.code, ErrorCode::QuotaExceeded, "{e:?}");
    assert!(e.message.contains("max_disk_gib") && e.message.contains("delete snapshots"), "{e:?}");
    let err = f.fail(&["instance", "create", "acme/small", "--disk", "64"]);
    assert!(err.contains("max_disk_gib"), "{err}");
    f.run(&["snapshot", "delete", "acme/web", "big"]);
    assert!(!on_disk(&f, &sb).contains(&"big".to_string()));
    f.run(&["snapshot", "create", "acme/web", "--name", "one-more"]);
    assert_eq!(names(&listed(&f, "acme/web")), ["before-upgrade", "one-more"]);

    let events = f.json(&["events", "acme", "--last", "200"]);
    let actions: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in ["snapshot.create", "snapshot.restore", "snapshot.delete"] {
        assert!(actions.contains(&a), "no {a} event in {actions:?}");
    }

    // Deleting the instance removes its snapshots from the host and the hub.
    f.run(&["instance", "delete", "acme/web"]);
    assert!(!pool(&f).join("snapshots").join(&sb).exists(), "snapshots left behind");
    assert!(!pool(&f).join("volumes").join(&sb).exists(), "volume left behind");
}

#[test]
fn schedules_take_and_prune_and_a_crash_keeps_the_list_true() {
    let mut f = common::up();
    f.run(&["tenant", "create", "acme", "--max-disk", "10"]);
    f.run(&["instance", "create", "acme/db", "--disk", "256", "--start", "--", "sleep", "infinity"]);
    let sb = sandbox(&f, "acme/db");

    let err = f.fail(&["instance", "update", "acme/db", "--snapshot-schedule", "every=10s"]);
    assert!(err.contains("--snapshot-schedule") && err.contains("10s"), "{err}");
    let out = f.run(&["instance", "update", "acme/db", "--snapshot-schedule", "every=1m,keep=2"]);
    assert!(out.contains("every=1m,keep=2"), "{out}");
    assert_eq!(desired(&f)["instances"][0]["snapshot_schedule"], serde_json::json!({"every_secs": 60, "keep": 2}));
    f.run(&["snapshot", "create", "acme/db", "--name", "manual"]);

    // One at once, then one a minute: after the third, retention has pruned the first;
    // the snapshot taken by hand is never pruned.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let list = listed(&f, "acme/db");
        let scheduled: Vec<String> = list.iter().filter(|s| s["scheduled"] == true).map(|s| s["name"].as_str().unwrap().to_string()).collect();
        assert!(scheduled.iter().all(|n| n.starts_with("auto-")), "{list:?}");
        assert!(scheduled.len() <= 2, "retention keeps 2: {scheduled:?}");
        seen.extend(scheduled.iter().cloned());
        if seen.len() >= 3 && scheduled.len() == 2 && on_disk(&f, &sb).len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "no third scheduled snapshot, or no pruning: seen {seen:?}, now {scheduled:?}, on disk {:?}", on_disk(&f, &sb));
        std::thread::sleep(Duration::from_secs(1));
    }
    let first = seen.iter().next().unwrap().clone();
    assert!(!on_disk(&f, &sb).contains(&first), "{first} was not pruned");
    assert!(on_disk(&f, &sb).contains(&"manual".to_string()));
    // The hub lists what the host holds.
    assert_eq!(names(&listed(&f, "acme/db")), on_disk(&f, &sb));

    // kill -9 of the hub and agent, while a snapshot made behind the hub's back sits on
    // the host and one the hub knows is gone from it: after the restart the list is
    // what the host holds again.
    common::crash_and_restart(&mut f);
    let dir = pool(&f).join("snapshots").join(&sb);
    let mk = std::process::Command::new("btrfs").args(["subvolume", "snapshot", "-r"]).arg(pool(&f).join("volumes").join(&sb)).arg(dir.join("by-hand")).output().unwrap();
    assert!(mk.status.success(), "{}", String::from_utf8_lossy(&mk.stderr));
    let rm = std::process::Command::new("btrfs").args(["subvolume", "delete"]).arg(dir.join("manual")).output().unwrap();
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    common::wait_until("the hub's list to match the host after a crash", || {
        let disk = on_disk(&f, &sb);
        names(&listed(&f, "acme/db")) == disk && disk.contains(&"by-hand".to_string())
    });
    assert!(!names(&listed(&f, "acme/db")).contains(&"manual".to_string()));

    // Off: no more scheduled snapshots.
    let out = f.run(&["instance", "update", "acme/db", "--snapshot-schedule", "off"]);
    assert!(out.contains("no scheduled snapshots"), "{out}");
    assert!(desired(&f)["instances"][0].get("snapshot_schedule").is_none());
}

#[test]
fn scheduled_snapshots_are_skipped_with_an_event_at_the_disk_quota() {
    let f = common::up();
    f.run(&["tenant", "create", "acme", "--max-vcpus", "8", "--max-mem", "8192", "--max-running", "4", "--max-instances", "10", "--max-disk", "1"]);
    // 768 + 256 MiB: the tenant's whole GiB, no room for even a snapshot's metadata.
    f.run(&["instance", "create", "acme/web", "--disk", "768", "--start", "--", "sleep", "infinity"]);
    f.run(&["instance", "create", "acme/filler", "--disk", "256"]);
    let sb = sandbox(&f, "acme/web");
    f.run(&["instance", "update", "acme/web", "--snapshot-schedule", "every=1m,keep=2"]);
    let skipped = || -> Vec<Value> {
        let events = f.json(&["events", "acme", "--last", "200"]);
        events.as_array().unwrap().iter().filter(|e| e["action"] == "snapshot.schedule" && e["result"] == "skipped").cloned().collect()
    };
    common::wait_until("a skipped scheduled snapshot's event", || !skipped().is_empty());
    let event = &skipped()[0];
    assert_eq!(event["object"], "instance/acme/web", "{event}");
    assert!(event["message"].as_str().unwrap().contains("max_disk_gib"), "{event}");
    // Skipped, not taken: nothing on the host, nothing listed; asked once per slot, not
    // on every pass.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(on_disk(&f, &sb), Vec::<String>::new());
    assert!(listed(&f, "acme/web").is_empty());
    assert!(skipped().len() <= 2, "an event on every pass: {:?}", skipped());

    // With room again, the next slot takes it.
    f.run(&["instance", "delete", "acme/filler"]);
    let deadline = Instant::now() + Duration::from_secs(150);
    while !on_disk(&f, &sb).iter().any(|n| n.starts_with("auto-")) {
        assert!(Instant::now() < deadline, "no scheduled snapshot once there was room");
        std::thread::sleep(Duration::from_millis(500));
    }
}
