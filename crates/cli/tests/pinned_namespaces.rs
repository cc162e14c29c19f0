//! The pinned namespaces of sandboxes (a user namespace with the instance's mapping and
//! a network namespace it owns, bind-mounted under /run so a start joins them) do not
//! leak: they are made once per instance (ahead for an instance created stopped), kept
//! across stop and start and an agent kill -9, removed when the instance is deleted,
//! and nothing of them (pins, nsfs mounts, helper processes) is left after
//! `hangar down --purge`.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The `hg-<host>-` prefix of the fleet's own agent's namespaces.
fn prefix(f: &Fleet) -> String {
    let id: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f.data_dir().join("agent/identity.json")).unwrap()).unwrap();
    let host = id["host_id"].as_str().unwrap().replace('-', "");
    format!("hg-h{}-", &host[host.len() - 12..])
}

/// What is pinned for the agent: (user pins, network pins, nsfs mounts), by file name.
fn pins(prefix: &str) -> (BTreeSet<String>, BTreeSet<String>, Vec<String>) {
    let names = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(dir).map(|rd| rd.flatten().filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with(prefix)).collect()).unwrap_or_default()
    };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(" - nsfs ") && l.contains(prefix)).map(str::to_string).collect();
    (names("/run/hangar/userns"), names("/run/netns"), mounts)
}

/// The pin names of an instance (its sandbox id is `i` + the id's last 12 hex digits).
fn pin_of(f: &Fleet, prefix: &str, inst: &str) -> String {
    let id = f.json(&["instance", "info", inst])["id"].as_str().unwrap().replace('-', "");
    format!("{prefix}i{}", &id[id.len() - 12..])
}

fn inodes(pin: &str) -> (u64, u64) {
    let ino = |p: String| std::fs::metadata(&p).unwrap_or_else(|e| panic!("{p}: {e}")).ino();
    (ino(format!("/run/hangar/userns/{pin}")), ino(format!("/run/netns/{pin}")))
}

/// Helper processes (`unshare --user --net` holding fresh namespaces) whose parent is a
/// process of this fleet (its command line names the fleet's dir).
fn helpers_of(f: &Fleet) -> Vec<u32> {
    let dir = f.dir.path().display().to_string();
    let cmdline = |pid: &str| std::fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).replace('\0', " ")).unwrap_or_default();
    let ppid = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| s.rsplit(')').next()?.split_whitespace().nth(1).map(str::to_string));
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        .filter(|p| cmdline(p).contains("echo ready; read _") && ppid(p).is_some_and(|pp| cmdline(&pp).contains(&dir)))
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn pinned_namespaces_do_not_leak_across_starts_deletes_crashes_and_down() {
    let mut f = up();
    let prefix = prefix(&f);
    f.run(&["tenant", "create", "acme"]);
    f.run(&["instance", "create", "acme/a", "--start", "--", "sleep", "infinity"]);
    let a = pin_of(&f, &prefix, "acme/a");
    let (users, nets, mounts) = pins(&prefix);
    assert_eq!((users.iter().collect::<Vec<_>>(), nets.iter().collect::<Vec<_>>(), mounts.len()), (vec![&a], vec![&a], 2), "{mounts:?}");
    let first = inodes(&a);

    // Stop and start: the same namespaces, nothing more.
    for round in 0..3 {
        f.run(&["instance", "stop", "acme/a"]);
        assert_eq!(inodes(&a), first, "round {round}: the stopped instance's namespaces changed");
        f.run(&["instance", "start", "acme/a"]);
        assert_eq!(inodes(&a), first, "round {round}: the start made new namespaces");
        assert_eq!(pins(&prefix).2.len(), 2, "round {round}: nsfs mounts");
    }
    let uid_map = f.run(&["instance", "exec", "acme/a", "--", "cat", "/proc/self/uid_map"]);
    assert_eq!(uid_map.split_whitespace().next(), Some("0"), "{uid_map}");

    // An instance created stopped gets its namespaces ahead, off its start path.
    f.run(&["instance", "create", "acme/b", "--", "sleep", "infinity"]);
    let b = pin_of(&f, &prefix, "acme/b");
    wait_until("acme/b's namespaces made ahead", || pins(&prefix).0.contains(&b) && pins(&prefix).1.contains(&b));
    let ahead = inodes(&b);
    f.run(&["instance", "start", "acme/b"]);
    assert_eq!(inodes(&b), ahead, "the start did not join the namespaces made ahead");
    let addr = f.json(&["instance", "info", "acme/a"])["address"].as_str().unwrap().to_string();
    assert!(f.try_run(&["instance", "exec", "acme/b", "--", "ping", "-c1", "-W2", &addr]).status.success(), "acme/b cannot reach acme/a");

    // Deleted: its pins go, the other instance's stay.
    f.run(&["instance", "delete", "acme/a"]);
    wait_until("acme/a's namespaces removed", || !pins(&prefix).0.contains(&a) && !pins(&prefix).1.contains(&a));
    let (users, nets, mounts) = pins(&prefix);
    assert_eq!((users.len(), nets.len(), mounts.len()), (1, 1, 2), "{users:?} {nets:?} {mounts:?}");

    // kill -9 of the agent: the pins outlive it and the running sandbox keeps them.
    crash_and_restart(&mut f);
    assert_eq!(inodes(&b), ahead, "the restarted agent made new namespaces for a running sandbox");
    assert!(f.try_run(&["instance", "exec", "acme/b", "--", "true"]).status.success(), "exec after the restart");
    f.run(&["instance", "stop", "acme/b"]);
    f.run(&["instance", "start", "acme/b"]);
    assert_eq!(inodes(&b), ahead, "a start after the restart made new namespaces");
    assert_eq!(pins(&prefix).2.len(), 2, "nsfs mounts after the restart");

    // `hangar down --purge`: nothing left, no helper process either.
    let helpers = helpers_of(&f);
    let data = f.data_dir();
    drop(f);
    assert!(!Path::new(&data).exists(), "down --purge left the data dir");
    let (users, nets, mounts) = pins(&prefix);
    assert!(users.is_empty() && nets.is_empty() && mounts.is_empty(), "left after down: {users:?} {nets:?} {mounts:?}");
    wait_until("the namespace helpers exit with their agent", || helpers.iter().all(|p| !Path::new(&format!("/proc/{p}")).exists()));
}
