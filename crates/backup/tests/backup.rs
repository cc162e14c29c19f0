//! Backups hangar writes, read back by hangar and by Debian's restic, on a local
//! directory and on a real S3 server (moto). Run `scripts/test-deps` first.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use hangar_backup::{
    CancelToken, FileKind, KeepPolicy, PreflightError, ProbeStep, Repo, RepoError, TargetSpec,
    preflight,
};

const REPO_PATH: &str = "tenants/acme";

fn no_progress(_: &hangar_backup::Progress) {}

fn backup(repo: &Repo, src: &Path) -> hangar_backup::BackupSummary {
    repo.backup(src, "acme-web", &["instance=acme/web"], no_progress, &CancelToken::new())
        .expect("backup")
}

/// What every target must do: restic lists, restores byte-identical and checks what
/// hangar wrote; hangar restores the same; a second backup re-uses the data.
fn check_target(target: &TargetSpec, s3_keys: Option<(&str, &str)>) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 300);

    preflight(target).expect("preflight");
    let repo = Repo::open_or_init(target, REPO_PATH, PASSWORD).unwrap();
    let first = backup(&repo, &src);
    assert_eq!(first.files, 300 + 8, "{first:?}");
    assert!(first.added_bytes > 12 * 1024 * 1024 / 2, "{first:?}");
    let location = repo.location().to_string();

    let snaps = restic(&location, s3_keys, &["snapshots", "--json"]);
    let snaps: serde_json::Value = serde_json::from_str(&snaps).unwrap();
    let ids: Vec<&str> = snaps.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [first.snapshot_id.as_str()]);
    assert_eq!(snaps[0]["hostname"], "acme-web");

    let by_restic = work.path().join("by-restic");
    restic(&location, s3_keys, &["restore", &first.snapshot_id, "--target", by_restic.to_str().unwrap()]);
    assert_same_tree(&src, &by_restic);
    restic(&location, s3_keys, &["check"]);

    let by_hangar = work.path().join("by-hangar");
    repo.restore(&first.snapshot_id[..8], None, &by_hangar).unwrap();
    assert_same_tree(&src, &by_hangar);

    let one_file = work.path().join("one-file");
    repo.restore(&first.snapshot_id, Some("home/notes/notes1.md"), &one_file).unwrap();
    assert_eq!(std::fs::read_to_string(one_file.join("notes1.md")).unwrap(), "# notes\nsentinel\n");
    let err = repo.restore(&first.snapshot_id, Some("home/nope.md"), &one_file).unwrap_err();
    assert!(matches!(err, RepoError::PathNotInSnapshot { ref path, .. } if path == "home/nope.md"), "{err}");
    let err = repo.restore("0123abcd", None, &one_file).unwrap_err();
    assert!(matches!(err, RepoError::SnapshotNotFound { .. }), "{err}");

    // Incremental: a changed small file and a new 1 MiB file; the 12 MiB file is re-used.
    std::fs::write(src.join("home/notes/notes1.md"), "# notes\nchanged\n").unwrap();
    std::fs::write(src.join("new.bin"), pseudo_random(1024 * 1024, 7)).unwrap();
    let reopened = Repo::open_or_init(target, REPO_PATH, PASSWORD).unwrap();
    let second = backup(&reopened, &src);
    assert!(second.added_bytes < 2 * 1024 * 1024, "incremental added too much: {second:?}");
    assert_eq!(reopened.snapshots().unwrap().len(), 2);
    restic(&location, s3_keys, &["check"]);

    let err = Repo::open_or_init(target, REPO_PATH, "wrong password").unwrap_err();
    assert!(matches!(err, RepoError::WrongPassword { .. }), "{err}");

    Repo::delete_all(target, REPO_PATH).unwrap();
    let fresh = Repo::open_or_init(target, REPO_PATH, "another password").unwrap();
    assert!(fresh.snapshots().unwrap().is_empty(), "delete_all left snapshots");
}

#[test]
fn dir_target_is_a_restic_repository() {
    let target_dir = tempfile::tempdir().unwrap();
    check_target(&TargetSpec::Dir { path: target_dir.path().to_path_buf() }, None);
}

#[test]
fn s3_target_is_a_restic_repository() {
    let moto = Moto::start();
    let target = moto.target(BUCKET, &moto.admin);
    check_target(&target, Some((&moto.admin.0, &moto.admin.1)));
}

#[test]
fn s3_preflight_names_what_is_wrong() {
    let moto = Moto::start();
    preflight(&moto.target(BUCKET, &moto.admin)).unwrap();

    let err = preflight(&moto.target("no-such-bucket", &moto.admin)).unwrap_err();
    assert!(matches!(err, PreflightError::MissingBucket { ref bucket, .. } if bucket == "no-such-bucket"), "{err}");
    assert!(err.to_string().contains("bucket `no-such-bucket` does not exist"), "{err}");

    let wrong_secret = (moto.admin.0.clone(), "not-the-secret".to_string());
    let err = preflight(&moto.target(BUCKET, &wrong_secret)).unwrap_err();
    assert!(matches!(err, PreflightError::BadCredentials { .. }), "{err}");
    assert!(err.to_string().contains(&format!("bad credentials for s3://{BUCKET}")), "{err}");
    assert!(err.to_string().contains(&moto.admin.0), "access key not named: {err}");
    assert!(!err.to_string().contains(&moto.admin.1), "secret in error: {err}");
    let unknown_key = ("AKIANOSUCHKEY0000000".to_string(), "x".to_string());
    let err = preflight(&moto.target(BUCKET, &unknown_key)).unwrap_err();
    assert!(matches!(err, PreflightError::BadCredentials { .. }), "{err}");

    let err = preflight(&moto.target(BUCKET, &moto.nodelete)).unwrap_err();
    assert!(matches!(err, PreflightError::PermissionDenied { step: ProbeStep::Delete, .. }), "{err}");
    assert!(err.to_string().contains("no permission to delete"), "{err}");

    let mut unreachable = moto.target(BUCKET, &moto.admin);
    if let TargetSpec::S3 { endpoint, .. } = &mut unreachable {
        *endpoint = format!("http://127.0.0.1:{}", free_port());
    }
    let err = preflight(&unreachable).unwrap_err();
    assert!(matches!(err, PreflightError::Unreachable { .. }), "{err}");
    let TargetSpec::S3 { endpoint, .. } = &unreachable else { unreachable!() };
    assert!(err.to_string().contains(&format!("endpoint {endpoint} is unreachable")), "{err}");
}

#[test]
fn flipped_bit_in_a_pack_is_found_by_check_and_refused_by_restore() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data.bin"), pseudo_random(3 * 1024 * 1024, 3)).unwrap();
    let target = TargetSpec::Dir { path: work.path().join("target") };
    std::fs::create_dir_all(work.path().join("target")).unwrap();
    let repo = Repo::open_or_init(&target, REPO_PATH, PASSWORD).unwrap();
    let snap = backup(&repo, &src);
    assert!(repo.check(true).unwrap().is_ok());

    // The largest pack holds the file's data; flip one bit in its middle.
    let data = work.path().join("target").join(REPO_PATH).join("data");
    let pack = std::fs::read_dir(&data)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&pack, bytes).unwrap();

    let report = repo.check(true).unwrap();
    assert!(!report.is_ok(), "check --read-data missed the flipped bit: {report:?}");
    let dest = work.path().join("restored");
    let err = repo.restore(&snap.snapshot_id, None, &dest).unwrap_err();
    assert!(matches!(err, RepoError::Corrupted { .. }), "{err}");
    let written = std::fs::read(dest.join("data.bin")).unwrap_or_default();
    assert!(written != pseudo_random(3 * 1024 * 1024, 3) || written.is_empty());
}

#[test]
fn ls_returns_every_entry_of_a_large_tree() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    for i in 0..1000 {
        let dir = src.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("file-{i:04}.txt")), i.to_string()).unwrap();
    }
    std::fs::create_dir_all(work.path().join("t")).unwrap();
    let repo = Repo::open_or_init(&TargetSpec::Dir { path: work.path().join("t") }, REPO_PATH, PASSWORD).unwrap();
    let snap = backup(&repo, &src);
    let entries: Vec<_> = repo.ls(&snap.snapshot_id).unwrap().collect::<Result<_, _>>().unwrap();
    let files: Vec<_> = entries.iter().filter(|e| e.kind == FileKind::File).collect();
    assert_eq!(files.len(), 1000);
    assert_eq!(entries.iter().filter(|e| e.kind == FileKind::Dir).count(), 10, "{:?}", &entries[..3]);
    let one = files.iter().find(|e| e.path == "d7/file-0007.txt").expect("d7/file-0007.txt listed");
    assert_eq!(one.size, 1);
    assert!(one.mtime.is_some());
}

#[test]
fn cancelled_backup_leaves_no_snapshot_and_the_next_one_reuses_its_data() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        std::fs::write(src.join(format!("big{i}.bin")), pseudo_random(8 * 1024 * 1024, 100 + i)).unwrap();
    }
    std::fs::create_dir_all(work.path().join("t")).unwrap();
    let target = TargetSpec::Dir { path: work.path().join("t") };
    let repo = Repo::open_or_init(&target, REPO_PATH, PASSWORD).unwrap();
    let cancel = CancelToken::new();
    let seen = Arc::new(AtomicU64::new(0));
    let (c, s) = (cancel.clone(), seen.clone());
    let err = repo
        .backup(&src, "acme-web", &[], move |p| {
            s.store(p.bytes, Ordering::Relaxed);
            if p.bytes > 40 * 1024 * 1024 {
                c.cancel();
            }
        }, &cancel)
        .unwrap_err();
    assert!(matches!(err, RepoError::Cancelled), "{err}");
    assert!(seen.load(Ordering::Relaxed) < 64 * 1024 * 1024, "cancel came too late");
    assert!(repo.snapshots().unwrap().is_empty());
    restic(repo.location(), None, &["check"]);
    let done = backup(&repo, &src);
    assert_eq!(done.files, 8);
    assert!(done.added_bytes < 60 * 1024 * 1024, "nothing re-used: {done:?}");
}

#[test]
fn forget_keeps_by_policy_and_purge_removes_an_instance() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 20);
    std::fs::create_dir_all(work.path().join("t")).unwrap();
    let target = TargetSpec::Dir { path: work.path().join("t") };
    let repo = Repo::open_or_init(&target, REPO_PATH, PASSWORD).unwrap();
    for _ in 0..3 {
        backup(&repo, &src);
    }
    repo.backup(&src, "acme-db", &[], no_progress, &CancelToken::new()).unwrap();
    let removed = repo.forget(&KeepPolicy { last: Some(1), ..Default::default() }).unwrap();
    assert_eq!(removed.len(), 2, "keeps the last snapshot of each instance");
    let hosts: Vec<_> = repo.snapshots().unwrap().into_iter().map(|s| s.hostname).collect();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    assert_eq!(repo.purge_host("acme-web").unwrap().len(), 1);
    let left = repo.snapshots().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].hostname, "acme-db");
    restic(repo.location(), None, &["check", "--read-data"]);
}

/// kill -9 of the process in the middle of a backup: the repository stays valid for
/// restic, and the next backup succeeds re-using what was uploaded.
#[test]
fn kill_9_mid_backup_keeps_the_repository_valid() {
    // The child role: this same test executable, started below with the env var set.
    if let Ok(args) = std::env::var("HANGAR_BACKUP_KILL_CHILD") {
        let (target, src) = args.split_once('\n').unwrap();
        let target = TargetSpec::Dir { path: target.into() };
        let repo = Repo::open_or_init(&target, REPO_PATH, PASSWORD).unwrap();
        let _ = repo.backup(Path::new(src), "acme-web", &[], |p| println!("bytes {}", p.bytes), &CancelToken::new());
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..12 {
        std::fs::write(src.join(format!("big{i}.bin")), pseudo_random(8 * 1024 * 1024, 200 + i)).unwrap();
    }
    let target_dir = work.path().join("t");
    std::fs::create_dir_all(&target_dir).unwrap();
    let target = TargetSpec::Dir { path: target_dir.clone() };
    drop(Repo::open_or_init(&target, REPO_PATH, PASSWORD).unwrap());

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_9_mid_backup_keeps_the_repository_valid", "--nocapture", "--test-threads=1"])
        .env("HANGAR_BACKUP_KILL_CHILD", format!("{}\n{}", target_dir.display(), src.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut killed_at = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(bytes) = line.strip_prefix("bytes ").and_then(|b| b.parse::<u64>().ok())
            && bytes > 60 * 1024 * 1024
        {
            killed_at = bytes;
            child.kill().unwrap(); // SIGKILL
            break;
        }
    }
    child.wait().unwrap();
    assert!(killed_at > 0, "the child finished or failed before it could be killed");

    let location = target.restic_location(REPO_PATH);
    restic(&location, None, &["check"]);
    let repo = Repo::open_or_init(&target, REPO_PATH, PASSWORD).unwrap();
    assert!(repo.snapshots().unwrap().is_empty(), "a killed backup left a snapshot");
    let done = backup(&repo, &src);
    assert_eq!(done.files, 12);
    assert!(done.added_bytes < 96 * 1024 * 1024 - 8 * 1024 * 1024, "nothing re-used after the kill: {done:?}");
    restic(&location, None, &["check"]);
    // After a clean backup, the next may skip the repair and still de-duplicate.
    let again = repo.backup_after(false, &src, "acme-web", &[], no_progress, &CancelToken::new()).unwrap();
    assert_eq!(again.files, 12);
    assert!(again.added_bytes < 1024 * 1024, "the index was not read without the repair: {again:?}");
    restic(&location, None, &["check"]);
}

/// A full disk: the backup fails saying so and records no snapshot, preflight names
/// the full disk, and once there is room again the repository is valid for restic and
/// the next backup succeeds.
#[test]
fn full_dir_target_fails_cleanly() {
    let disk = Tmpfs::mount("4m");
    let target = TargetSpec::Dir { path: disk.path().to_path_buf() };
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Random data neither compresses nor deduplicates: 6 MiB cannot fit in 4 MiB.
    for i in 0..3 {
        std::fs::write(src.join(format!("big{i}.bin")), pseudo_random(2 * 1024 * 1024, 300 + i)).unwrap();
    }
    preflight(&target).expect("preflight on an empty disk");
    let repo = Repo::open_or_init(&target, REPO_PATH, PASSWORD).unwrap();

    let err = repo
        .backup(&src, "acme-web", &[], no_progress, &CancelToken::new())
        .unwrap_err();
    assert!(matches!(err, RepoError::TargetFull { .. }), "{err:?}");
    assert!(err.to_string().contains("full"), "{err}");
    assert!(repo.snapshots().unwrap().is_empty(), "a failed backup left a snapshot");

    // Whatever room the failed backup left, fill it: the probe itself cannot be written.
    let filler = disk.path().join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    drop(file);
    let err = preflight(&target).unwrap_err();
    assert!(matches!(err, PreflightError::Full { ref path, .. } if path == disk.path()), "{err:?}");
    assert!(err.to_string().contains("is full"), "{err}");

    std::fs::remove_file(&filler).unwrap();
    disk.resize("32m");
    let location = repo.location().to_string();
    restic(&location, None, &["check"]);
    let done = backup(&Repo::open_or_init(&target, REPO_PATH, PASSWORD).unwrap(), &src);
    assert_eq!(done.files, 3);
    restic(&location, None, &["check", "--read-data"]);
}
