//! Backups end to end: a real fleet, a directory target and a moto S3 target, and
//! Debian's `restic` reading what hangar wrote with the key `hangar backup key` prints.

mod common;

use common::{exec, Fleet};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn require(tool: &str) {
    let ok = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(ok, "`{tool}` is missing: run scripts/test-deps (restic, moto) first");
}

/// `restic` on the tenant's repository, with what `hangar backup key` prints.
fn restic(f: &Fleet, tenant: &str, args: &[&str]) -> std::process::Output {
    require("restic");
    let key = f.json(&["backup", "key", tenant]);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, key["password"].as_str().unwrap()).unwrap();
    let mut c = Command::new("restic");
    c.arg("-r").arg(key["repository"].as_str().unwrap()).arg("--password-file").arg(&pw).arg("--no-cache").args(args);
    if let (Some(a), Some(s)) = (key["access_key"].as_str(), key["secret_key"].as_str()) {
        c.env("AWS_ACCESS_KEY_ID", a).env("AWS_SECRET_ACCESS_KEY", s);
    }
    c.output().unwrap()
}

fn restic_ok(f: &Fleet, tenant: &str, args: &[&str]) -> String {
    let o = restic(f, tenant, args);
    assert!(o.status.success(), "restic {args:?}: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}


fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// A workspace with a sentinel, a binary file and a few directories.
fn workspace(f: &Fleet) {
    f.run(&["tenant", "create", "acme"]);
    f.run(&["instance", "create", "acme/web", "--start", "--disk", "1024", "--", "sleep", "infinity"]);
    exec(f, "acme/web", "mkdir -p /home/notes /home/src/deep && echo sentinel > /home/notes/notes1.md && echo two > /home/notes/notes2.md && head -c 3000000 /dev/urandom > /home/src/deep/blob.bin && echo x > /home/src/a.txt");
}

fn only_backup(f: &Fleet) -> Value {
    let list = f.json(&["backup", "list", "acme/web"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    list[0].clone()
}

#[test]
fn dir_target_backup_browse_restore_check_purge() {
    let f = common::up();
    workspace(&f);
    let target = f.dir.path().join("backups");
    std::fs::create_dir_all(&target).unwrap();
    let location = format!("dir:{}", target.display());

    // Bad input names the field and writes nothing.
    assert!(f.fail(&["backup", "target", "add", "bad", "dir:relative/path"]).contains("location"));
    let missing = f.fail(&["backup", "target", "add", "gone", "dir:/nonexistent/hangar-backups"]);
    assert!(missing.contains("does not exist"), "{missing}");
    let no_target = f.fail(&["backup", "create", "acme/web"]);
    assert!(no_target.contains("no backup target"), "{no_target}");

    f.run(&["backup", "target", "add", "local", &location]);
    assert!(f.run(&["backup", "target", "check", "local"]).contains("passed"));
    assert_eq!(f.json(&["backup", "target", "list"])[0]["name"], "local");
    f.run(&["tenant", "update", "acme", "--backup-target", "local"]);
    // A target in use cannot be removed.
    assert!(f.fail(&["backup", "target", "remove", "local"]).contains("used by"));

    let out = f.run(&["backup", "create", "acme/web", "--wait"]);
    assert!(out.contains("backup "), "{out}");
    let b = only_backup(&f);
    let id = b["id"].as_str().unwrap().to_string();
    assert!(b["files"].as_u64().unwrap() >= 4, "{b}");
    assert!(b["bytes"].as_u64().unwrap() >= 3_000_000, "{b}");

    // The index: browse and find, without the repository.
    let root = f.json(&["backup", "files", "acme/web", &id[..8]]);
    let names: Vec<&str> = root.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert!(names.contains(&"notes") && names.contains(&"src"), "{names:?}");
    let notes = f.json(&["backup", "files", "acme/web", &id, "notes"]);
    assert_eq!(notes.as_array().unwrap().len(), 2, "{notes}");
    let found = f.json(&["backup", "find", "acme/web", "notes*.md"]);
    let paths: Vec<&str> = found.as_array().unwrap().iter().map(|e| e["file"]["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["notes/notes1.md", "notes/notes2.md"]);
    assert_eq!(found[0]["backup"], id.as_str());

    // restic reads the repository: snapshots, check, restore with identical bytes.
    let snaps: Value = serde_json::from_str(&restic_ok(&f, "acme", &["snapshots", "--json"])).unwrap();
    assert_eq!(snaps[0]["id"], id.as_str());
    restic_ok(&f, "acme", &["check"]);
    let out = tempfile::tempdir().unwrap();
    restic_ok(&f, "acme", &["restore", &id, "--target", out.path().to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out.path().join("notes/notes1.md")).unwrap(), "sentinel\n");
    let in_volume = exec(&f, "acme/web", "sha256sum /home/src/deep/blob.bin");
    assert_eq!(in_volume.split_whitespace().next().unwrap(), sha256(&out.path().join("src/deep/blob.bin")));
    // The password is nowhere in the events.
    let key = f.json(&["backup", "key", "acme"]);
    let events = f.run(&["events", "acme", "--last", "200", "--json"]);
    assert!(!events.contains(key["password"].as_str().unwrap()));

    // Restore faults: 4xx naming the field, nothing written.
    exec(&f, "acme/web", "echo changed > /home/notes/notes1.md");
    assert!(f.fail(&["backup", "restore", "acme/web", "deadbeef"]).contains("backup"));
    assert!(f.fail(&["backup", "restore", "acme/web", &id, "--path", "notes/nope.md"]).contains("path"));
    let running = f.fail(&["backup", "restore", "acme/web", &id, "--path", "notes/notes1.md"]);
    assert!(running.contains("force") && running.contains("running"), "{running}");
    assert_eq!(exec(&f, "acme/web", "cat /home/notes/notes1.md"), "changed\n");

    // One file back into the stopped instance; the rest stays as it is.
    f.run(&["instance", "stop", "acme/web"]);
    f.run(&["backup", "restore", "acme/web", &id[..10], "--path", "notes/notes1.md"]);
    f.run(&["instance", "start", "acme/web"]);
    assert_eq!(exec(&f, "acme/web", "cat /home/notes/notes1.md"), "sentinel\n");
    // Owned by root inside the sandbox, as before.
    assert_eq!(exec(&f, "acme/web", "stat -c %u:%g /home/notes/notes1.md"), "0:0\n");

    // Into a new instance, made through the normal create path.
    f.run(&["backup", "restore", "acme/web", &id, "--as", "acme/web-restored"]);
    f.run(&["instance", "start", "acme/web-restored"]);
    assert_eq!(exec(&f, "acme/web-restored", "cat /home/notes/notes1.md"), "sentinel\n");
    assert_eq!(exec(&f, "acme/web-restored", "stat -c %u /home/src/deep/blob.bin"), "0\n");
    assert_eq!(exec(&f, "acme/web-restored", "sha256sum /home/src/deep/blob.bin"), in_volume);

    // An incremental backup adds little; check passes.
    f.run(&["backup", "create", "acme/web", "--wait"]);
    let list = f.json(&["backup", "list", "acme/web"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(list[1]["added_bytes"].as_u64().unwrap() < 1_000_000, "{list}");
    f.run(&["backup", "check", "acme/web", "--read-data"]);

    // A flipped bit in a pack: backups_faults.rs.

    // Hard delete schedules a purge; it is listed and can be cancelled.
    f.run(&["instance", "delete", "acme/web", "--hard"]);
    let purges = f.json(&["backup", "purge", "list"]);
    assert_eq!(purges[0]["instance"], "web", "{purges}");
    f.run(&["backup", "purge", "cancel", "acme/web"]);
    assert_eq!(f.json(&["backup", "purge", "list"]), Value::Array(vec![]));
    // The backups of the deleted instance are still listed.
    assert_eq!(f.json(&["backup", "list", "acme/web"]).as_array().unwrap().len(), 2);
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// moto's S3 server on a free port (no IAM: any keys are accepted), with one bucket.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start(bucket: &str) -> Moto {
        let port = common::free_port();
        let launcher = concat!(env!("CARGO_MANIFEST_DIR"), "/../backup/tests/support/moto_server.py");
        let ok = Command::new("python3").args(["-c", "import moto.server, boto3"]).status().is_ok_and(|s| s.success());
        assert!(ok, "moto is not installed for python3: run scripts/test-deps first");
        let child = Command::new("python3").args([launcher, "-H", "127.0.0.1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        let make = format!("import boto3; boto3.client('s3', endpoint_url='{endpoint}', region_name='us-east-1', aws_access_key_id='k', aws_secret_access_key='s').create_bucket(Bucket='{bucket}')");
        assert!(Command::new("python3").args(["-c", &make]).status().unwrap().success());
        Moto { child, endpoint }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn s3_target_backup_read_by_restic() {
    let f = common::up();
    let moto = Moto::start("hangar-bk");
    workspace(&f);
    let keys = f.dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("access"), "AKIDTEST\n").unwrap();
    std::fs::write(keys.join("secret"), "very-secret-key\n").unwrap();
    let (ak, sk) = (keys.join("access"), keys.join("secret"));
    let add = |name: &str, location: &str, endpoint: &str| {
        vec!["backup".to_string(), "target".into(), "add".into(), name.into(), location.into(), "--endpoint".into(), endpoint.into(), "--access-key-file".into(), ak.display().to_string(), "--secret-key-file".into(), sk.display().to_string()]
    };
    let missing = add("nobucket", "s3://no-such-bucket/x", &moto.endpoint);
    let err = f.fail(&strs(&missing));
    assert!(err.contains("no-such-bucket") && err.contains("does not exist"), "{err}");
    let unreachable = add("away", "s3://hangar-bk/x", "http://127.0.0.1:9");
    let err = f.fail(&strs(&unreachable));
    assert!(err.contains("unreachable"), "{err}");
    assert!(!err.contains("very-secret-key"));

    f.run(&strs(&add("offsite", "s3://hangar-bk/fleet", &moto.endpoint)));
    f.run(&["tenant", "update", "acme", "--backup-target", "offsite"]);
    f.run(&["backup", "create", "acme/web", "--wait"]);
    let b = only_backup(&f);
    let id = b["id"].as_str().unwrap();
    let snaps: Value = serde_json::from_str(&restic_ok(&f, "acme", &["snapshots", "--json"])).unwrap();
    assert_eq!(snaps[0]["id"], id);
    restic_ok(&f, "acme", &["check"]);
    let out = tempfile::tempdir().unwrap();
    restic_ok(&f, "acme", &["restore", id, "--target", out.path().to_str().unwrap(), "--include", "/notes"]);
    assert_eq!(std::fs::read_to_string(out.path().join("notes/notes1.md")).unwrap(), "sentinel\n");
    // The S3 secret key is in no event and no target listing.
    let shown = format!("{}{}", f.run(&["events", "--last", "200", "--json"]), f.run(&["backup", "target", "list", "--json"]));
    assert!(!shown.contains("very-secret-key"));
}

// Faults (a full target, a kill -9 mid-backup, a cancel, a repository under another
// key, a corrupted restore) are in backups_faults.rs.

#[test]
fn scheduled_backups_keep_the_policy_and_hard_deletes_purge_after_the_delay() {
    let f = common::up_with(&["--backup-purge-delay", "3"]);
    workspace(&f);
    let target = f.dir.path().join("backups");
    std::fs::create_dir_all(&target).unwrap();
    f.run(&["backup", "target", "add", "local", &format!("dir:{}", target.display())]);
    f.run(&["tenant", "update", "acme", "--backup-target", "local"]);
    // Bad policies name the flag's field.
    assert!(f.fail(&["backup", "policy", "acme", "--keep-daily", "0"]).contains("keep_daily"));
    assert!(f.fail(&["backup", "policy", "acme", "--schedule", "sometimes"]).contains("--schedule"));
    f.run(&["backup", "create", "acme/web", "--wait"]);
    f.run(&["backup", "create", "acme/web", "--wait"]);
    assert_eq!(f.json(&["backup", "list", "acme/web"]).as_array().unwrap().len(), 2);
    // A schedule never run runs at once; keep-last 1 then leaves one backup, in the
    // index and in the repository.
    f.run(&["backup", "policy", "acme", "--keep-last", "1", "--schedule", "hourly"]);
    common::wait_until("the scheduled backup and its retention", || {
        let list = f.json(&["backup", "list", "acme/web"]);
        list.as_array().unwrap().len() == 1 && list[0]["created_at"].as_str() > Some("2000")
    });
    let snaps: Value = serde_json::from_str(&restic_ok(&f, "acme", &["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    // A hard delete purges after the (short) delay: index and repository.
    f.run(&["backup", "policy", "acme", "--keep-last", "1"]);
    f.run(&["instance", "delete", "acme/web", "--hard"]);
    common::wait_until("the purge", || f.json(&["backup", "list", "acme/web"]) == Value::Array(vec![]));
    assert_eq!(f.json(&["backup", "purge", "list"]), Value::Array(vec![]));
    let snaps: Value = serde_json::from_str(&restic_ok(&f, "acme", &["snapshots", "--json"])).unwrap();
    assert_eq!(snaps, Value::Array(vec![]));
    restic_ok(&f, "acme", &["check"]);
}
