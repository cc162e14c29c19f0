//! Backup faults at hangar's level, on a real fleet: a repository under another key, a
//! flipped bit in a pack, a full target, a cancelled job, a kill -9 of the agent in the
//! middle of a backup. Each checks what was (not) written and that the next backup
//! works. `backups.rs` has the bad-input cases of restore (unknown backup, path not in
//! the backup, running instance without `--force`) and check's report of a flipped bit.

mod common;

use common::{exec, Fleet};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn require(tool: &str) {
    let ok = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(ok, "`{tool}` is missing: run scripts/test-deps (restic, moto) first");
}


/// `restic check` of `repository` with `password`.
fn restic_check(repository: &str, password: &str) {
    require("restic");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, password).unwrap();
    let o = Command::new("restic").args(["-r", repository, "--no-cache", "check"]).arg("--password-file").arg(&pw).output().unwrap();
    assert!(o.status.success(), "restic check: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

fn restic_check_tenant(f: &Fleet, tenant: &str) {
    let key = f.json(&["backup", "key", tenant]);
    restic_check(key["repository"].as_str().unwrap(), key["password"].as_str().unwrap());
}

/// Every file under `dir`, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

fn tree_bytes(dir: &Path) -> u64 {
    walk(dir).iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum()
}

/// The temporary backup snapshots (`bk-*`) in the agent's pool under `agent_dir`.
fn backup_snapshots(agent_dir: &Path) -> Vec<String> {
    let mut found = vec![];
    let mut stack = vec![(agent_dir.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name() == "snapshots" {
                for vol in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                    for snap in std::fs::read_dir(vol.path()).into_iter().flatten().flatten() {
                        let name = snap.file_name().to_string_lossy().into_owned();
                        if name.starts_with("bk-") {
                            found.push(name);
                        }
                    }
                }
            } else if depth < 5 {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    found
}

/// A tenant `acme` with a running `acme/web` holding a sentinel and a random file.
fn workspace(f: &Fleet) {
    f.run(&["tenant", "create", "acme"]);
    f.run(&["instance", "create", "acme/web", "--start", "--disk", "1024", "--", "sleep", "infinity"]);
    exec(f, "acme/web", "mkdir -p /home/notes /home/src && echo sentinel > /home/notes/notes1.md && head -c 3000000 /dev/urandom > /home/src/blob.bin");
}

fn dir_target(f: &Fleet, dir: &Path) {
    f.run(&["backup", "target", "add", "local", &format!("dir:{}", dir.display())]);
    f.run(&["tenant", "update", "acme", "--backup-target", "local"]);
}

/// A fleet with the workspace, backing up to the directory it returns.
fn backed_up_to_dir(extra: &str) -> (Fleet, PathBuf) {
    let f = common::up();
    workspace(&f);
    if !extra.is_empty() {
        exec(&f, "acme/web", extra);
    }
    let target = f.dir.path().join("backups");
    std::fs::create_dir_all(&target).unwrap();
    dir_target(&f, &target);
    (f, target)
}

#[test]
fn a_repository_under_another_key_is_refused_before_anything_is_written() {
    require("restic");
    let f = common::up();
    workspace(&f);
    let target = f.dir.path().join("backups");
    let repo = target.join("tenants/acme");
    std::fs::create_dir_all(&target).unwrap();
    // Someone else's repository where acme's would go (a tenant made again under an
    // old name, a second hangar on the same target).
    let pw = f.dir.path().join("other-pw");
    std::fs::write(&pw, "not the tenant's key").unwrap();
    let init = Command::new("restic").arg("-r").arg(&repo).arg("--password-file").arg(&pw).args(["init", "--repository-version", "2"]).output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let before = walk(&repo);
    dir_target(&f, &target);

    for args in [&["backup", "create", "acme/web", "--wait"][..], &["backup", "check", "acme/web"], &["backup", "create", "acme/web"]] {
        let err = f.fail(args);
        assert!(err.contains("password") && err.contains("another key") && err.contains("tenants/acme"), "{args:?}: {err}");
    }
    // Refused up front: no operation started, no backup, not a file more in the
    // repository.
    let events = f.run(&["events", "acme", "--last", "200", "--json"]);
    assert!(!events.contains("backup.create") && !events.contains("operation/"), "{events}");
    assert_eq!(f.json(&["backup", "list", "acme/web"]), Value::Array(vec![]));
    assert_eq!(walk(&repo), before);
    // Its owner still reads it.
    let snaps = Command::new("restic").arg("-r").arg(&repo).arg("--password-file").arg(&pw).args(["--no-cache", "snapshots", "--json"]).output().unwrap();
    assert!(snaps.status.success());

    // Moved away, the tenant's own repository is made and used.
    std::fs::rename(&repo, target.join("someone-elses")).unwrap();
    f.run(&["backup", "create", "acme/web", "--wait"]);
    assert_eq!(f.json(&["backup", "list", "acme/web"]).as_array().unwrap().len(), 1);
    restic_check_tenant(&f, "acme");
}

#[test]
fn a_flipped_bit_in_a_pack_is_never_restored() {
    let (f, target) = backed_up_to_dir("");
    f.run(&["backup", "create", "acme/web", "--wait"]);
    let id = f.json(&["backup", "list", "acme/web"])[0]["id"].as_str().unwrap().to_string();

    // The largest pack holds blob.bin's data.
    let pack = walk(&target.join("tenants/acme/data")).into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).expect("a pack file");
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&pack, &bytes).unwrap();
    let err = f.fail(&["backup", "check", "acme/web", "--read-data"]);
    assert!(err.contains("error"), "{err}");

    // A restore stops at the damaged blob and leaves the volume as it was.
    exec(&f, "acme/web", "echo changed > /home/notes/notes1.md && echo keep > /home/src/blob.bin");
    f.run(&["instance", "stop", "acme/web"]);
    let err = f.fail(&["backup", "restore", "acme/web", &id]);
    assert!(err.contains("corrupted") && err.contains("nothing was written"), "{err}");
    f.run(&["instance", "start", "acme/web"]);
    assert_eq!(exec(&f, "acme/web", "cat /home/notes/notes1.md /home/src/blob.bin"), "changed\nkeep\n");
    let root = exec(&f, "acme/web", "ls -a /");
    assert!(!root.contains(".hangar-restore-"), "a staging dir was left: {root}");
}

/// A small tmpfs as a "full disk" target; unmounted on drop, even after a failure.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: &Path, mib: u32) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"]).arg(path).status().unwrap().success();
        assert!(ok, "cannot mount a tmpfs on {}", path.display());
        SmallDisk(path.to_path_buf())
    }

    fn grow(&self, mib: u32) {
        let ok = Command::new("mount").args(["-o", &format!("remount,size={mib}m")]).arg(&self.0).status().unwrap().success();
        assert!(ok, "cannot grow the tmpfs on {}", self.0.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_target_fails_cleanly_and_the_next_backup_after_freeing_space_works() {
    let f = common::up();
    workspace(&f);
    exec(&f, "acme/web", "head -c 40000000 /dev/urandom > /home/src/big.bin");
    let disk = SmallDisk::mount(&f.dir.path().join("small"), 8);
    dir_target(&f, &disk.0);
    let err = f.fail(&["backup", "create", "acme/web", "--wait"]);
    assert!(err.contains("full") && err.contains("nothing was recorded"), "{err}");
    // Nothing half-recorded in the hub, no temporary snapshot left on the host.
    assert_eq!(f.json(&["backup", "list", "acme/web"]), Value::Array(vec![]));
    assert_eq!(f.json(&["backup", "find", "acme/web", "*"]), Value::Array(vec![]));
    assert_eq!(backup_snapshots(&f.data_dir().join("agent")), Vec::<String>::new());
    // The repository is still valid for restic.
    restic_check_tenant(&f, "acme");

    disk.grow(200);
    f.run(&["backup", "create", "acme/web", "--wait"]);
    let list = f.json(&["backup", "list", "acme/web"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert!(list[0]["bytes"].as_u64().unwrap() >= 43_000_000, "{list}");
    let found = f.json(&["backup", "find", "acme/web", "big.bin"]);
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    restic_check_tenant(&f, "acme");
}

/// Waits until the operation is final; returns it.
async fn final_operation(c: &hangar_client::HubClient, id: hangar_types::OperationId, secs: u64) -> hangar_types::api::Operation {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let p = c.backup_progress(id).await.unwrap();
        if p.operation.status.is_final() {
            return p.operation;
        }
        assert!(Instant::now() < deadline, "{} {} still running after {secs} s", p.operation.kind, p.operation.target);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the backup `id` has read some bytes, still running.
async fn wait_reading(c: &hangar_client::HubClient, id: hangar_types::OperationId, until: impl Fn(u64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = c.backup_progress(id).await.unwrap();
        assert!(!p.operation.status.is_final(), "the backup ended too soon: {p:?}");
        if until(p.bytes) {
            return;
        }
        assert!(Instant::now() < deadline, "no progress: {p:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_cancelled_backup_records_nothing_and_the_next_one_works() {
    use hangar_types::api::OperationStatus;
    let (f, _) = backed_up_to_dir("head -c 300000000 /dev/urandom > /home/src/big.bin");
    let c = f.client().unwrap();
    common::block_on(async {
        let op = c.backup_create("acme", "web").await.unwrap();
        wait_reading(&c, op.id, |b| b > 0).await;
        let p = c.backup_cancel(op.id).await.unwrap();
        assert!(p.cancelling, "{p:?}");
        let ended = final_operation(&c, op.id, 60).await;
        assert_eq!(ended.status, OperationStatus::Cancelled, "{ended:?}");
        // A final operation cannot be cancelled again.
        let again = c.backup_cancel(op.id).await.unwrap_err().to_string();
        assert!(again.contains("already"), "{again}");
    });
    assert_eq!(f.json(&["backup", "list", "acme/web"]), Value::Array(vec![]));
    assert_eq!(backup_snapshots(&f.data_dir().join("agent")), Vec::<String>::new());
    restic_check_tenant(&f, "acme");
    f.run(&["backup", "create", "acme/web", "--wait"]);
    assert_eq!(f.json(&["backup", "list", "acme/web"]).as_array().unwrap().len(), 1);
}

#[test]
fn agent_killed_mid_backup_leaves_a_valid_repository_and_the_next_backup_reuses_the_upload() {
    use hangar_types::api::{ExecRequest, ImageRef, InstanceCreate, InstanceSpec, OperationStatus, TenantCreate};
    use hangar_types::backups::{BackupTargetAdd, BackupTargetSet};
    common::require_root();
    require("restic");
    const BIG: u64 = 300_000_000;
    common::block_on(async {
        let (mut f, c) = hangar_harness::fleet::SplitFleet::start(Path::new(common::bin()), "hangar-bk-kill-", 12.0).await.unwrap();
        let agent_dir = f.dir.path().join("data/agent");
        c.tenant_create(&TenantCreate { name: "acme".parse().unwrap(), quotas: None, isolated: false, net_prefix: None }).await.unwrap();
        let spec = InstanceSpec { image: ImageRef::Host, vcpus: 1, mem_mib: 256, disk_mib: 1500, command: vec!["sleep".into(), "infinity".into()], env: Default::default(), secrets: vec![] };
        let op = c.instance_create("acme", &InstanceCreate::new("web".parse().unwrap(), spec, true)).await.unwrap();
        c.operation_wait_final(op.id, Duration::from_secs(120)).await.unwrap();
        let write = ExecRequest { command: vec!["sh".into(), "-c".into(), format!("head -c {BIG} /dev/urandom > /home/big.bin")], env: Default::default(), timeout_secs: Some(120) };
        assert_eq!(c.instance_exec("acme", "web", &write).await.unwrap().exit_code, 0);
        let target = f.dir.path().join("backups");
        std::fs::create_dir_all(&target).unwrap();
        let add = BackupTargetAdd { name: "local".parse().unwrap(), location: format!("dir:{}", target.display()), endpoint: None, region: None, access_key: None, secret_key: None };
        c.backup_target_add(&add).await.unwrap();
        c.backup_target_set("acme", &BackupTargetSet { target: Some("local".parse().unwrap()) }).await.unwrap();
        let data = target.join("tenants/acme/data");

        let op = c.backup_create("acme", "web").await.unwrap();
        // Killed once a good part is uploaded (packs on the target), before the end.
        let deadline = Instant::now() + Duration::from_secs(180);
        while tree_bytes(&data) < BIG / 4 {
            let p = c.backup_progress(op.id).await.unwrap();
            assert!(!p.operation.status.is_final(), "the backup ended before the agent was killed: {p:?}");
            assert!(Instant::now() < deadline, "nothing uploaded: {p:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        f.kill_agent();
        let uploaded = tree_bytes(&data);
        assert_eq!(backup_snapshots(&agent_dir).len(), 1, "the killed job's snapshot should still be there");
        let ended = final_operation(&c, op.id, 90).await;
        assert_eq!(ended.status, OperationStatus::Failed, "{ended:?}");
        assert!(ended.error.as_deref().unwrap_or_default().contains("host"), "{ended:?}");
        assert!(c.backup_list("acme", "web").await.unwrap().is_empty());

        // restic finds the repository valid, with what was uploaded before the kill.
        let key = c.backup_key("acme").await.unwrap();
        restic_check(&key.repository, &key.password);

        // The restarted agent removes the leftover snapshot.
        f.start_agent().await.unwrap();
        hangar_harness::fleet::wait_host(&c, "node-a", hangar_types::api::HostState::Ready, Duration::from_secs(60)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !backup_snapshots(&agent_dir).is_empty() {
            assert!(Instant::now() < deadline, "the leftover bk- snapshot was not removed: {:?}", backup_snapshots(&agent_dir));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // The next backup re-uses the packs uploaded before the kill.
        let op = c.backup_create("acme", "web").await.unwrap();
        let done = final_operation(&c, op.id, 300).await;
        assert_eq!(done.status, OperationStatus::Succeeded, "{done:?}");
        let list = c.backup_list("acme", "web").await.unwrap();
        assert_eq!(list.len(), 1);
        assert!(list[0].added_bytes + uploaded / 2 < BIG, "added {} after {uploaded} were uploaded", list[0].added_bytes);
        assert!(tree_bytes(&data) < BIG + uploaded / 2, "the upload was repeated: {} bytes in data/", tree_bytes(&data));
        restic_check(&key.repository, &key.password);
        assert!(backup_snapshots(&agent_dir).is_empty());
    });
}
