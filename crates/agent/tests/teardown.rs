//! Teardown and inventory against the real thing: an agent dir converged with runc, a
//! btrfs pool on a loop file and a tenant network, then audited and removed. Needs root.
//! The networked test runs in a network namespace of its own (bridges, veths and rules
//! never touch the machine's), and a guard tears the agent down also when it fails.

use hangar_agent::drivers::{DriverConfig, HostNetwork, VolumeConfig};
use hangar_agent::identity::AgentPaths;
use hangar_agent::{inventory, teardown, Inventory, InventoryError, Teardown, TeardownReport};
use hangar_types::net::{bridge_name, veth_name, ClusterRange};
use hangar_types::protocol::DesiredDoc;
use hangar_types::{ObservedState, VolumeId};
use std::path::Path;

fn require_root() {
    let st = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = st.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1)).unwrap();
    assert_eq!(uid, "0", "teardown tests need root (runc, netns, loop devices, btrfs)");
}

/// Tears the agent down when dropped (outside any runtime), whatever the test did.
struct Guard(AgentPaths);

impl Drop for Guard {
    fn drop(&mut self) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(teardown(&self.0, Teardown::Everything(HostNetwork::Shared)));
    }
}

/// A document for host `host_id` with one instance of tenant acme, wired to its network.
fn doc(host_id: &uuid::Uuid, instance_id: &uuid::Uuid, desired: &str) -> DesiredDoc {
    let range: ClusterRange = "10.240.0.0/12".parse().unwrap();
    let gateway = range.gateway(1);
    let address = range.host(1, 10);
    let bridge = bridge_name(range.subnet(1));
    DesiredDoc::parse(&format!(
        r#"{{"schema_version":1,"host":"solo","host_id":"{host_id}","generation":1,"cluster_range":"{range}",
           "tenants":[{{"name":"acme","quotas":{{"max_vcpus":4,"max_mem_mib":1024,"max_running":2,"max_instances":4,"max_disk_gib":4}}}}],
           "pools":[],
           "instances":[{{"id":"{instance_id}","tenant":"acme","name":"web","generation":1,"ids":{{"base":1048576,"size":65536}},"desired":"{desired}",
             "spec":{{"image":"host","vcpus":1,"mem_mib":64,"disk_mib":64}},
             "network":{{"net_id":1,"bridge":"{bridge}","address":"{address}","prefix_len":24,"gateway":"{gateway}","cluster_range":"{range}"}}}}]}}"#
    ))
    .unwrap()
}

/// Whether a command run in this thread's network namespace succeeds.
fn succeeds(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program).args(args).output().unwrap().status.success()
}

fn netns_of(owner: &str) -> Vec<String> {
    let prefix = format!("hg-{owner}-");
    std::fs::read_dir("/run/netns").map(|rd| rd.flatten().filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with(&prefix)).collect()).unwrap_or_default()
}

/// The agent's pinned user namespaces, and its nsfs mounts anywhere (pins of either kind).
fn pins_of(owner: &str) -> (Vec<String>, Vec<String>) {
    let prefix = format!("hg-{owner}-");
    let users = std::fs::read_dir("/run/hangar/userns")
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with(&prefix)).collect())
        .unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(" - nsfs ") && l.contains(&prefix)).map(str::to_string).collect();
    (users, mounts)
}

fn mounted(p: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&format!(" {} ", p.display()))
}

#[test]
fn an_agents_sandboxes_networks_and_pool_are_inventoried_then_removed() {
    require_root();
    // This thread only (the runtime below is current-thread, and what it spawns inherits it).
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::Builder::new().prefix("hangar-teardown-").tempdir().unwrap();
    let paths = AgentPaths::new(dir.path().join("agent"));
    let _guard = Guard(paths.clone());
    let (host_id, instance_id) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let running = doc(&host_id, &instance_id, "running");
    let sid = running.instances[0].id.sandbox_id();
    let volume = VolumeId::from(&sid);
    let owner = running.host_id.short();
    let bridge = running.instances[0].network.as_ref().unwrap().bridge.clone();
    let table = format!("hangar_{owner}");
    let cfg = DriverConfig { volumes: VolumeConfig { loop_size_mib: 1024, ..Default::default() }, ..Default::default() };
    rt.block_on(async {
        let observed = hangar_agent::daemon::reconcile_once(&paths, &cfg, &running, 20).await.unwrap();
        assert_eq!(observed[0].state, ObservedState::Running, "{observed:?}");
        let (users, mounts) = pins_of(&owner);
        assert_eq!((users.len(), mounts.len()), (1, 2), "one pinned user namespace, two nsfs mounts: {users:?} {mounts:?}");
        // A spare namespace as an agent before user namespaces left it: teardown removes it.
        assert!(succeeds("ip", &["netns", "add", &format!("hg-{owner}-spare0")]), "cannot make an old agent's spare");
        assert!(netns_of(&owner).iter().any(|n| n.contains("spare")), "no spares: {:?}", netns_of(&owner));
        assert!(succeeds("nft", &["list", "table", "inet", &table]), "no rules table");

        let all = inventory(&paths, std::slice::from_ref(&sid)).await.unwrap();
        let one = vec![sid.clone()];
        assert_eq!(
            all,
            Inventory { sandboxes: one.clone(), volumes: vec![volume.clone()], namespaces: one.clone(), user_namespaces: one.clone(), cgroups: one.clone(), veths: vec![veth_name(&sid)] }
        );
        let untraced = inventory(&paths, &[]).await.unwrap();
        assert!(untraced.cgroups.is_empty() && untraced.veths.is_empty(), "traces looked for unasked: {untraced:?}");

        // A host stop: the sandbox goes, its volume and network stay.
        let r = teardown(&paths, Teardown::Sandboxes).await;
        assert_eq!(r, TeardownReport { done: vec![format!("stopped sandbox {sid}")], errors: vec![] });
        let stopped = inventory(&paths, std::slice::from_ref(&sid)).await.unwrap();
        assert_eq!(
            stopped,
            Inventory { sandboxes: vec![], volumes: vec![volume.clone()], namespaces: one.clone(), user_namespaces: one.clone(), cgroups: vec![], veths: vec![veth_name(&sid)] }
        );

        // Everything: namespaces (spares too), bridge, rules, the pool's mount and loop device.
        let r = teardown(&paths, Teardown::Everything(HostNetwork::Shared)).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.done, ["removed tenant networks"]);
        assert_eq!(inventory(&paths, std::slice::from_ref(&sid)).await.unwrap(), Inventory::default());
        assert_eq!(netns_of(&owner), Vec::<String>::new());
        assert_eq!(pins_of(&owner), (vec![], vec![]), "pinned namespaces left");
        assert!(!succeeds("ip", &["link", "show", &bridge]), "bridge {bridge} left");
        assert!(!succeeds("nft", &["list", "table", "inet", &table]), "table {table} left");
        let storage = paths.storage();
        assert!(!mounted(&storage.join("pool")), "pool still mounted");
        let loops = std::process::Command::new("losetup").arg("-j").arg(storage.join("pool.img")).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&loops.stdout), "", "loop device still attached");

        // The data stays: reopened, the pool still holds the volume.
        let drivers = hangar_agent::drivers::open(&paths, &owner, &cfg).await.unwrap();
        assert!(drivers.volumes.exists(&volume).await.unwrap(), "teardown lost the volume");
        let r = teardown(&paths, Teardown::Everything(HostNetwork::Shared)).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(!mounted(&storage.join("pool")), "pool still mounted");
    });
}

#[tokio::test]
async fn an_agent_dir_that_never_ran_has_nothing_to_tear_down() {
    let dir = tempfile::tempdir().unwrap();
    let paths = AgentPaths::new(dir.path().join("agent"));
    assert_eq!(teardown(&paths, Teardown::Everything(HostNetwork::Shared)).await, TeardownReport::default());
    assert!(!paths.root.exists(), "teardown made the dir it was to remove");
    assert!(matches!(inventory(&paths, &[]).await, Err(InventoryError::NoOwner(_))));
}
