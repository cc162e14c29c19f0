//! The drivers against the real thing: runc and crun sandboxes, a btrfs pool on a loop
//! file. Needs root; fails loudly without it. Every test cleans up through guards, also
//! when it fails.

use hangar_agent::drivers::runtime::{Runtime, SandboxSpec, SandboxStatus};
use hangar_agent::drivers::volume::{BtrfsPool, DirVolumes, PoolConfig, VolumeDriver, VolumeError};
use hangar_agent::drivers::DriverConfig;
use hangar_agent::identity::AgentPaths;
use hangar_types::api::{ExecRequest, ImageRef};
use hangar_types::idmap::{IdRange, DEFAULT_FIRST_ID};
use hangar_types::{SandboxId, SnapshotId, VolumeId};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn require_root() {
    let st = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = st.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1)).unwrap();
    assert_eq!(uid, "0", "driver tests need root (runc, cgroups, loop devices, btrfs)");
    for tool in ["runc", "crun", "mkfs.btrfs", "losetup", "blkid", "mkfs.ext4"] {
        let ok = std::process::Command::new("sh").arg("-c").arg(format!("command -v {tool} >/dev/null")).status().unwrap().success();
        assert!(ok, "{tool} is missing: .ci/run installs it");
    }
}

/// A temp dir with a btrfs pool; dropping it stops sandboxes and releases the pool.
struct Env {
    dir: tempfile::TempDir,
    runtimes: Vec<Arc<dyn Runtime>>,
    ids: std::sync::Mutex<Vec<SandboxId>>,
}

impl Env {
    fn new() -> Env {
        require_root();
        Env { dir: tempfile::Builder::new().prefix("hangar-drv-").tempdir().unwrap(), runtimes: vec![], ids: Default::default() }
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    async fn pool(&self) -> BtrfsPool {
        BtrfsPool::open(PoolConfig { root: self.root().join("storage"), device: None, loop_size_mib: 1024 }).await.unwrap()
    }
    /// The runtime registered as `name`, on an agent dir of its own.
    fn runtime(&mut self, name: &str) -> Arc<dyn Runtime> {
        let cfg = DriverConfig { runtime: name.into(), ..Default::default() };
        let rt = (cfg.runtime_driver().unwrap().open)(&AgentPaths::new(self.root().join(format!("agent-{name}"))), cfg.logs);
        assert_eq!(rt.name(), name);
        self.runtimes.push(rt.clone());
        rt
    }
    fn spec(&self, home: PathBuf, mem_mib: u64) -> SandboxSpec {
        let id: SandboxId = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]).parse().unwrap();
        self.ids.lock().unwrap().push(id.clone());
        SandboxSpec {
            id: id.clone(),
            image: ImageRef::Host,
            home_dir: home,
            vcpus: 1,
            mem_mib,
            pids_limit: 64,
            command: vec![],
            env: BTreeMap::from([("GREETING".into(), "hello".into())]),
            hostname: "drv".into(),
            log_path: self.root().join(format!("{id}.log")),
            ids: IdRange::at(DEFAULT_FIRST_ID),
            secrets_dir: None,
            join: None,
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Drop may run inside the test's runtime, which cannot be blocked on: clean up
        // on a thread with a runtime of its own.
        let runtimes = std::mem::take(&mut self.runtimes);
        let ids = std::mem::take(&mut *self.ids.lock().unwrap());
        let storage = self.root().join("storage");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                for r in &runtimes {
                    for id in &ids {
                        let _ = r.stop(id, Duration::from_millis(100)).await;
                    }
                }
                let _ = BtrfsPool::teardown(&storage).await;
            });
        })
        .join()
        .unwrap();
    }
}

fn vol(id: &str) -> VolumeId {
    id.parse().unwrap()
}

fn snap(id: &str) -> SnapshotId {
    id.parse().unwrap()
}

fn exec(cmd: &str) -> ExecRequest {
    ExecRequest { command: vec!["sh".into(), "-c".into(), cmd.into()], env: BTreeMap::new(), timeout_secs: Some(30) }
}

fn loops_of(file: &Path) -> String {
    String::from_utf8(std::process::Command::new("losetup").arg("-j").arg(file).output().unwrap().stdout).unwrap()
}

fn mounted(p: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&format!(" {} ", p.display()))
}

#[tokio::test]
async fn btrfs_pool_volumes_snapshots_reopen_and_teardown() {
    let env = Env::new();
    let pool = env.pool().await;
    // The loop device reads and writes its image with direct I/O wherever the image's
    // filesystem has O_DIRECT (not through that filesystem's page cache as well).
    let img = env.root().join("storage/pool.img");
    let dev = loops_of(&img).split(':').next().unwrap().trim().to_string();
    let dio = std::fs::read_to_string(format!("/sys/block/{}/loop/dio", dev.trim_start_matches("/dev/"))).unwrap();
    let probe = env.root().join("storage/odirect-probe");
    let has_odirect = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).create(true).custom_flags(nix::libc::O_DIRECT).open(&probe).is_ok()
    };
    let _ = std::fs::remove_file(&probe);
    assert_eq!(dio.trim(), if has_odirect { "1" } else { "0" }, "{dev} direct I/O (O_DIRECT available here: {has_odirect})");
    let v = pool.ensure(&vol("vol-a"), 64).await.unwrap();
    std::fs::write(v.join("marker"), "kept").unwrap();
    assert_eq!(pool.ensure(&vol("vol-a"), 64).await.unwrap(), v, "ensure is idempotent");
    assert!(pool.exists(&vol("vol-a")).await.unwrap());
    let snapshot = pool.snapshot(&vol("vol-a"), &snap("s1")).await.unwrap();
    assert_eq!(std::fs::read_to_string(snapshot.join("marker")).unwrap(), "kept");
    assert!(std::fs::write(snapshot.join("x"), "no").is_err(), "snapshots are read-only");
    assert_eq!(pool.list_snapshots(&vol("vol-a")).await.unwrap(), [snap("s1")]);
    assert_eq!(pool.list().await.unwrap(), [vol("vol-a")]);
    assert!("../etc".parse::<VolumeId>().is_err(), "a volume id that leaves the pool");
    drop(pool);
    // Reopening re-uses the formatted pool: the data is still there.
    let pool = env.pool().await;
    assert_eq!(std::fs::read_to_string(pool.path(&vol("vol-a")).join("marker")).unwrap(), "kept");
    pool.delete(&vol("vol-a")).await.unwrap();
    assert!(!pool.exists(&vol("vol-a")).await.unwrap());
    assert!(pool.list_snapshots(&vol("vol-a")).await.unwrap().is_empty());
    pool.delete(&vol("vol-a")).await.unwrap(); // absent: still fine
    let mount = pool.mount_path().to_path_buf();
    BtrfsPool::teardown(&env.root().join("storage")).await.unwrap();
    assert!(!mounted(&mount), "pool still mounted");
    assert_eq!(loops_of(&env.root().join("storage/pool.img")), "", "loop device still attached");
}

#[tokio::test]
async fn a_file_holding_ext4_is_refused_and_left_untouched() {
    let env = Env::new();
    let storage = env.root().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let img = storage.join("pool.img");
    std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    assert!(std::process::Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img).status().unwrap().success());
    let err = BtrfsPool::open(PoolConfig { root: storage.clone(), device: None, loop_size_mib: 1024 }).await.err().expect("ext4 must be refused");
    assert!(matches!(&err, VolumeError::Occupied { fs, .. } if fs == "ext4"), "{err}");
    assert!(err.to_string().contains("never formats"), "{err}");
    let probe = std::process::Command::new("blkid").arg("-p").arg(&img).output().unwrap();
    assert!(String::from_utf8_lossy(&probe.stdout).contains("TYPE=\"ext4\""));
    assert_eq!(loops_of(&img), "");
}

#[tokio::test]
async fn volume_quota_stops_writes_at_the_limit() {
    let env = Env::new();
    let pool = env.pool().await;
    let v = pool.ensure(&vol("q"), 20).await.unwrap();
    let out = std::process::Command::new("dd").arg("if=/dev/zero").arg(format!("of={}", v.join("big").display())).args(["bs=1M", "count=60", "conv=fsync"]).output().unwrap();
    assert!(!out.status.success(), "a 60 MiB write fit in a 20 MiB volume");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Disk quota exceeded"), "{}", String::from_utf8_lossy(&out.stderr));
    let used = pool.usage_bytes(&vol("q")).await.unwrap().unwrap();
    assert!(used <= 21 << 20, "usage {used} beyond the limit");
}

fn btrfs(args: &[&str], path: &Path) {
    let out = std::process::Command::new("btrfs").args(args).arg(path).output().unwrap();
    assert!(out.status.success(), "btrfs {args:?} {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
}

fn subvolumes_listed(mount: &Path) -> String {
    String::from_utf8(std::process::Command::new("btrfs").args(["subvolume", "list"]).arg(mount).output().unwrap().stdout).unwrap()
}

/// Attack: subvolumes made inside a volume (nested, in a plain dir, a snapshot of the
/// volume inside itself) made its deletion fail with "Directory not empty" forever.
#[tokio::test]
async fn deleting_a_volume_removes_the_subvolumes_nested_in_it() {
    let env = Env::new();
    let pool = env.pool().await;
    let v = pool.ensure(&vol("nest"), 64).await.unwrap();
    btrfs(&["subvolume", "create"], &v.join("n1"));
    btrfs(&["subvolume", "create"], &v.join("n1/n2"));
    std::fs::create_dir_all(v.join("a/b")).unwrap();
    btrfs(&["subvolume", "create"], &v.join("a/b/n3"));
    let out = std::process::Command::new("btrfs").args(["subvolume", "snapshot", "-r"]).arg(&v).arg(v.join("selfsnap")).output().unwrap();
    assert!(out.status.success());
    pool.snapshot(&vol("nest"), &snap("s1")).await.unwrap();
    assert!(subvolumes_listed(pool.mount_path()).contains("volumes/nest/n1/n2"));
    pool.delete(&vol("nest")).await.unwrap();
    assert!(!v.exists());
    let left = subvolumes_listed(pool.mount_path());
    assert!(!left.contains("nest"), "subvolumes left behind: {left}");
}

/// A delete that fails (the volume made immutable) says why, and works once the cause
/// is gone.
#[tokio::test]
async fn a_failed_volume_delete_names_the_cause_and_works_later() {
    let env = Env::new();
    let pool = env.pool().await;
    let v = pool.ensure(&vol("stuck"), 64).await.unwrap();
    assert!(std::process::Command::new("chattr").arg("+i").arg(&v).status().unwrap().success());
    let err = pool.delete(&vol("stuck")).await.expect_err("an immutable subvolume cannot be deleted");
    assert!(err.to_string().contains("Operation not permitted"), "{err}");
    assert!(v.exists());
    assert!(std::process::Command::new("chattr").arg("-i").arg(&v).status().unwrap().success());
    pool.delete(&vol("stuck")).await.unwrap();
    assert!(!v.exists());
}

async fn lifecycle(runtime: &str) {
    let mut env = Env::new();
    let pool = env.pool().await;
    let rt = env.runtime(runtime);
    let home = pool.ensure(&vol("home"), 64).await.unwrap();
    let spec = env.spec(home.clone(), 128);
    // The volume is owned by the sandbox's root, as the reconciler makes it.
    hangar_agent::drivers::volume::own_root(&home, spec.ids).await.unwrap();
    let id = spec.id.clone();
    rt.start(&spec).await.unwrap();
    assert_eq!(rt.status(&id).await.unwrap(), Some(SandboxStatus::Running));
    assert!(rt.list().await.unwrap().iter().any(|(i, s)| *i == id && *s == SandboxStatus::Running), "list() adopts it");
    rt.start(&spec).await.unwrap(); // already running: left alone

    let r = rt.exec(&id, &exec("echo hi > /home/hi.txt; cat /home/hi.txt; echo $GREETING $HOME; hostname")).await.unwrap();
    assert_eq!((r.exit_code, r.stdout.as_str()), (0, "hi\nhello /home\ndrv\n"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(home.join("hi.txt")).unwrap(), "hi\n", "the volume is the sandbox's /home");
    assert_eq!(rt.exec(&id, &exec("exit 3")).await.unwrap().exit_code, 3);
    // exec joins the sandbox's user namespace too: root there is the mapped host id.
    let map = rt.exec(&id, &exec("cat /proc/self/uid_map")).await.unwrap().stdout;
    assert_eq!(map.split_whitespace().collect::<Vec<_>>(), ["0", &spec.ids.base.to_string(), "65536"], "{map}");
    let ro = rt.exec(&id, &exec("touch /usr/evil")).await.unwrap();
    assert_ne!(ro.exit_code, 0, "/usr must be read-only");
    assert!(!Path::new("/usr/evil").exists());
    // Sandboxed: no mounts, no namespaces, no tracing, own pid namespace.
    assert_ne!(rt.exec(&id, &exec("mount -t tmpfs none /tmp")).await.unwrap().exit_code, 0, "mount allowed");
    assert_ne!(rt.exec(&id, &exec("unshare -U true")).await.unwrap().exit_code, 0, "unshare allowed");
    let pid1 = rt.exec(&id, &exec("cat /proc/1/cmdline | tr '\\0' ' '")).await.unwrap();
    assert_eq!(pid1.stdout.trim(), "sleep infinity");
    let caps = rt.exec(&id, &exec("grep CapEff /proc/self/status")).await.unwrap();
    assert!(!caps.stdout.contains("000001ffffffffff") && !caps.stdout.contains("0000003fffffffff"), "full capabilities: {}", caps.stdout);

    let st = rt.stats(&id).await.unwrap();
    assert!(st.memory_bytes > 0 && st.pids >= 1, "{st:?}");
    assert_eq!((st.memory_limit_bytes, st.pids_limit), (128 << 20, 64));

    rt.pause(&id).await.unwrap();
    assert_eq!(rt.status(&id).await.unwrap(), Some(SandboxStatus::Paused));
    rt.pause(&id).await.unwrap(); // idempotent
    rt.resume(&id).await.unwrap();
    assert_eq!(rt.status(&id).await.unwrap(), Some(SandboxStatus::Running));
    rt.resume(&id).await.unwrap(); // not paused: nothing to do

    // Stopping a paused sandbox works too, and leaves no cgroup behind.
    rt.pause(&id).await.unwrap();
    rt.stop(&id, Duration::from_secs(2)).await.unwrap();
    assert_eq!(rt.status(&id).await.unwrap(), None);
    assert!(!Path::new(&format!("/sys/fs/cgroup/memory/hangar/{id}")).exists(), "cgroup left behind");
    rt.stop(&id, Duration::from_secs(1)).await.unwrap(); // absent: fine

    // Start again: the volume's data is still there.
    rt.start(&spec).await.unwrap();
    assert_eq!(rt.exec(&id, &exec("cat /home/hi.txt")).await.unwrap().stdout, "hi\n");
    rt.stop(&id, Duration::from_secs(2)).await.unwrap();
    assert!(rt.exec(&id, &exec("true")).await.is_err(), "exec in a stopped sandbox must fail");
}

/// The start path of a networked instance: the network driver pins a user namespace
/// with the instance's mapping and a network namespace it owns, wires it, and the
/// runtime joins both by path; stop and start again reuse them, detach removes them.
/// In a network namespace of this thread's own (bridges and veths never touch the
/// machine's). Leaves no pin and no nsfs mount.
async fn joined_namespaces(runtime: &str) {
    use hangar_agent::drivers::network::NetworkDriver;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    let mut env = Env::new();
    let rt = env.runtime(runtime);
    let home = env.root().join("home-join");
    std::fs::create_dir_all(&home).unwrap();
    let mut spec = env.spec(home.clone(), 64);
    hangar_agent::drivers::volume::own_root(&home, spec.ids).await.unwrap();
    let id = spec.id.clone();
    let owner = format!("hd{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let net = hangar_agent::drivers::network::BridgeNetwork::new(&owner);
    let range: hangar_types::net::ClusterRange = "10.240.0.0/12".parse().unwrap();
    let netspec = hangar_types::net::NetSpec {
        net_id: 1,
        bridge: hangar_types::net::bridge_name(range.subnet(1)),
        address: range.host(1, 10),
        prefix_len: 24,
        gateway: range.gateway(1),
        cluster_range: range.to_string(),
        isolated: false,
        overlay: None,
    };
    net.prewarm().await.unwrap();
    let join = net.attach(&id, &netspec, spec.ids).await.unwrap();
    let inode = |p: &Path| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
    let (user_ino, net_ino) = (inode(&join.user), inode(&join.net));
    assert_eq!(net.attach(&id, &netspec, spec.ids).await.unwrap(), join, "attach again: the same pins");
    assert_eq!((inode(&join.user), inode(&join.net)), (user_ino, net_ino), "attach again made new namespaces");
    spec.join = Some(join.clone());
    for round in 0..2 {
        rt.start(&spec).await.unwrap();
        assert_eq!(rt.status(&id).await.unwrap(), Some(SandboxStatus::Running), "round {round}");
        let r = rt.exec(&id, &exec("cat /proc/self/uid_map; stat -L -c %i /proc/self/ns/user /proc/self/ns/net; cat /sys/class/net/eth0/address; cat /proc/sys/net/ipv4/ping_group_range")).await.unwrap();
        let words: Vec<&str> = r.stdout.split_whitespace().collect();
        let base = spec.ids.base.to_string();
        let (user, netns) = (user_ino.to_string(), net_ino.to_string());
        assert_eq!(words, ["0", base.as_str(), "65536", user.as_str(), netns.as_str(), "02:58:0a:f0:01:0a", "0", "65535"], "round {round}: {}", r.stderr);
        rt.stop(&id, Duration::from_secs(1)).await.unwrap();
        assert!(join.user.exists() && join.net.exists(), "stop removed the pins");
    }
    net.detach(&id).await.unwrap();
    assert!(!join.user.exists() && !join.net.exists(), "detach left a pin");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.lines().any(|l| l.contains(" - nsfs ") && l.contains(&owner)), "nsfs mounts left:\n{mounts}");
    net.release(hangar_agent::drivers::HostNetwork::Shared).await.unwrap();
}

#[tokio::test]
async fn runc_joins_pinned_namespaces() {
    joined_namespaces("runc").await;
}

#[tokio::test]
async fn crun_joins_pinned_namespaces() {
    joined_namespaces("crun").await;
}

#[tokio::test]
async fn runc_sandbox_lifecycle() {
    lifecycle("runc").await;
}

#[tokio::test]
async fn crun_sandbox_lifecycle() {
    lifecycle("crun").await;
}

#[tokio::test]
async fn memory_limit_kills_an_allocation_beyond_it() {
    let mut env = Env::new();
    let rt = env.runtime("runc");
    let home = env.root().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let spec = env.spec(home, 32);
    rt.start(&spec).await.unwrap();
    let r = rt.exec(&spec.id, &exec("x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived")).await.unwrap();
    assert!(!r.stdout.contains("survived"), "100 MB fit in a 32 MiB sandbox");
    assert_ne!(r.exit_code, 0);
    let oom = std::fs::read_to_string(format!("/sys/fs/cgroup/memory/hangar/{}/memory.oom_control", spec.id)).unwrap_or_default();
    assert!(oom.contains("oom_kill ") && !oom.contains("oom_kill 0"), "no OOM kill recorded: {oom}");
}

#[tokio::test]
async fn dir_volumes_work_without_btrfs() {
    let env = Env::new();
    let d = DirVolumes::new(env.root().join("dirvols"));
    let p = d.ensure(&vol("a"), 10).await.unwrap();
    std::fs::write(p.join("f"), "12345").unwrap();
    assert_eq!(d.usage_bytes(&vol("a")).await.unwrap(), Some(5));
    d.snapshot(&vol("a"), &snap("s")).await.unwrap();
    assert_eq!(d.list_snapshots(&vol("a")).await.unwrap(), [snap("s")]);
    d.delete(&vol("a")).await.unwrap();
    assert!(d.list().await.unwrap().is_empty());
    assert!(d.list_snapshots(&vol("a")).await.unwrap().is_empty());
}

/// A restore swaps a writable copy of the snapshot in for the volume: the old content
/// back, the snapshot kept, the volume's limit and owner kept, nothing left behind;
/// the pool-wide listing gives times and sizes.
#[tokio::test]
async fn btrfs_restore_replaces_the_volume_and_keeps_its_limit() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let pool = env.pool().await;
    let v = pool.ensure(&vol("vol-r"), 8).await.unwrap();
    std::os::unix::fs::chown(&v, Some(100_000), Some(100_000)).unwrap();
    std::fs::write(v.join("notes"), "v1").unwrap();
    pool.snapshot(&vol("vol-r"), &snap("before")).await.unwrap();
    std::fs::write(v.join("notes"), "v2").unwrap();
    std::fs::write(v.join("new"), "later").unwrap();
    assert!(pool.restore_snapshot(&vol("vol-r"), &snap("nope"), 8).await.is_err());
    pool.restore_snapshot(&vol("vol-r"), &snap("before"), 8).await.unwrap();
    assert_eq!(std::fs::read_to_string(v.join("notes")).unwrap(), "v1");
    assert!(!v.join("new").exists());
    assert_eq!(std::fs::metadata(&v).unwrap().uid(), 100_000, "the owner is kept");
    std::fs::write(v.join("writable"), "yes").unwrap();
    assert_eq!(pool.list_snapshots(&vol("vol-r")).await.unwrap(), [snap("before")], "the snapshot stays; no leftovers listed");
    assert!(!pool.mount_path().join("snapshots/vol-r/.restoring").exists());
    // The 8 MiB limit holds on the restored volume.
    let big = std::fs::write(v.join("big"), vec![1u8; 16 << 20]);
    assert!(big.is_err(), "16 MiB fit in an 8 MiB volume after a restore");
    let infos = pool.snapshot_infos().await.unwrap();
    let before = infos.iter().find(|i| i.id == snap("before")).unwrap();
    assert_eq!(before.volume, vol("vol-r"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(before.created.is_some_and(|t| (now - t).abs() < 120), "{before:?}");
    assert!(before.referenced_bytes.is_some() && before.exclusive_bytes.is_some(), "{before:?}");
    // A restore cut off by a crash leaves its half-built volume: the next restore and a
    // delete both clear it.
    let leftover = pool.mount_path().join("snapshots/vol-r/.restoring");
    let mk = std::process::Command::new("btrfs").args(["subvolume", "snapshot"]).arg(&v).arg(&leftover).output().unwrap();
    assert!(mk.status.success(), "{}", String::from_utf8_lossy(&mk.stderr));
    pool.restore_snapshot(&vol("vol-r"), &snap("before"), 8).await.unwrap();
    assert!(!leftover.exists());
    let mk = std::process::Command::new("btrfs").args(["subvolume", "snapshot"]).arg(&v).arg(&leftover).output().unwrap();
    assert!(mk.status.success());
    pool.delete(&vol("vol-r")).await.unwrap();
    assert!(!pool.mount_path().join("snapshots/vol-r").exists(), "the volume's snapshot dir is left");
    BtrfsPool::teardown(&env.root().join("storage")).await.unwrap();
}

#[tokio::test]
async fn dir_restore_copies_the_snapshot_back() {
    let env = Env::new();
    let d = DirVolumes::new(env.root().join("dirvols"));
    let p = d.ensure(&vol("a"), 10).await.unwrap();
    std::fs::write(p.join("f"), "v1").unwrap();
    d.snapshot(&vol("a"), &snap("s")).await.unwrap();
    std::fs::write(p.join("f"), "v2").unwrap();
    d.restore_snapshot(&vol("a"), &snap("s"), 10).await.unwrap();
    assert_eq!(std::fs::read_to_string(p.join("f")).unwrap(), "v1");
    assert_eq!(d.list_snapshots(&vol("a")).await.unwrap(), [snap("s")]);
    let infos = d.snapshot_infos().await.unwrap();
    assert_eq!((infos.len(), infos[0].referenced_bytes), (1, Some(2)));
    assert!(matches!(d.restore_snapshot(&vol("a"), &snap("nope"), 10).await, Err(VolumeError::NotFound(_))));
}
