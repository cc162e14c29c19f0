//! Real parts for the backup tests: Debian's restic and moto's S3 server.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hangar_backup::{S3Options, Secret, TargetSpec};

pub const PASSWORD: &str = "correct horse battery staple";

/// Fails loudly when a real part is missing instead of skipping the test.
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "`{tool}` is not installed: run scripts/test-deps first");
}

/// Runs restic on `location` with the test password; panics with its output on failure.
pub fn restic(location: &str, s3_keys: Option<(&str, &str)>, args: &[&str]) -> String {
    require("restic");
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let mut cmd = Command::new("restic");
    cmd.arg("-r").arg(location).arg("--password-file").arg(&password_file);
    cmd.arg("--no-cache").args(args);
    if let Some((access, secret)) = s3_keys {
        cmd.env("AWS_ACCESS_KEY_ID", access).env("AWS_SECRET_ACCESS_KEY", secret);
    }
    let out = cmd.output().expect("running restic");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "restic {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A moto S3 server on a free loopback port, with IAM enforced: `admin` may do
/// anything, `nodelete` may put, get and list but not delete. Killed on drop.
///
/// Started through `tests/support/moto_server.py`, which fixes moto's signature check
/// for queries with escaped characters (every listing under a prefix): see that file.
pub struct Moto {
    child: Child,
    pub endpoint: String,
    pub admin: (String, String),
    pub nodelete: (String, String),
    _log: tempfile::NamedTempFile,
}

pub const BUCKET: &str = "hangar-backups";

impl Moto {
    pub fn start() -> Self {
        let moto_found = Command::new("python3")
            .args(["-c", "import moto.server, boto3"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(moto_found, "moto is not installed for python3: run scripts/test-deps first");
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let launcher = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/moto_server.py");
        let mut child = Command::new("python3")
            .args([launcher, "-H", "127.0.0.1", "-p", &port.to_string()])
            // The setup below makes exactly 6 IAM calls; every request after them is
            // authenticated and authorized against the IAM policies.
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "6")
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("starting moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let out = std::fs::read_to_string(log.path()).unwrap_or_default();
                panic!("moto_server exited ({status}) before listening:\n{out}");
            }
            assert!(Instant::now() < deadline, "moto_server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut moto = Self {
            child,
            endpoint,
            admin: Default::default(),
            nodelete: Default::default(),
            _log: log,
        };
        let out = Command::new("python3")
            .args(["-c", SETUP, &moto.endpoint, BUCKET])
            .output()
            .expect("running python3 for the moto setup");
        assert!(out.status.success(), "moto setup failed: {}", String::from_utf8_lossy(&out.stderr));
        let keys: Vec<String> =
            String::from_utf8(out.stdout).unwrap().split_whitespace().map(String::from).collect();
        moto.admin = (keys[0].clone(), keys[1].clone());
        moto.nodelete = (keys[2].clone(), keys[3].clone());
        moto
    }

    pub fn target(&self, bucket: &str, keys: &(String, String)) -> TargetSpec {
        TargetSpec::parse(
            &format!("s3://{bucket}/hangar"),
            S3Options {
                endpoint: Some(self.endpoint.clone()),
                region: None,
                access_key: Some(keys.0.clone()),
                secret_key: Some(Secret::new(keys.1.clone())),
            },
        )
        .unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SETUP: &str = r#"
import boto3, json, sys
ep, bucket = sys.argv[1], sys.argv[2]
iam = boto3.client("iam", endpoint_url=ep, region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
keys = []
for user, actions in [("admin", ["s3:*"]),
                      ("nodelete", ["s3:PutObject", "s3:GetObject", "s3:ListBucket"])]:
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    keys += [key["AccessKeyId"], key["SecretAccessKey"]]
boto3.client("s3", endpoint_url=ep, region_name="us-east-1", aws_access_key_id=keys[0],
             aws_secret_access_key=keys[1]).create_bucket(Bucket=bucket)
print(" ".join(keys))
"#;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A tree with what restores get wrong: many small files, a large file, symlinks
/// (relative, absolute, dangling), empty directories, unusual modes, nested paths.
pub fn make_tree(root: &Path, small_files: usize) {
    std::fs::create_dir_all(root.join("home/notes")).unwrap();
    for i in 0..small_files {
        let dir = root.join(format!("many/d{:02}", i % 25));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}.txt")), format!("small file {i}\n").repeat(i % 7 + 1))
            .unwrap();
    }
    std::fs::write(root.join("home/notes/notes1.md"), "# notes\nsentinel\n").unwrap();
    std::fs::write(root.join("large.bin"), pseudo_random(12 * 1024 * 1024 + 17, 1)).unwrap();
    std::fs::create_dir_all(root.join("empty/nested-empty")).unwrap();
    std::fs::create_dir_all(root.join("empty2")).unwrap();
    symlink("home/notes/notes1.md", root.join("link-relative")).unwrap();
    symlink("/etc/hostname", root.join("link-absolute")).unwrap();
    symlink("does-not-exist", root.join("link-dangling")).unwrap();
    let script = root.join("home/run.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let private = root.join("home/private");
    std::fs::write(&private, "secret").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(root.join("empty-file"), "").unwrap();
    std::fs::set_permissions(root.join("empty2"), std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// Deterministic bytes that do not compress or deduplicate (xorshift).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Asserts that two trees are identical: names, kinds, bytes, symlink targets, modes.
pub fn assert_same_tree(want: &Path, got: &Path) {
    let list = |root: &Path| -> Vec<PathBuf> {
        let mut all = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() && !path.is_symlink() {
                    stack.push(path.clone());
                }
                all.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
        all.sort();
        all
    };
    let (want_list, got_list) = (list(want), list(got));
    assert_eq!(want_list, got_list, "restored tree lists different entries");
    for rel in want_list {
        let (w, g) = (want.join(&rel), got.join(&rel));
        let (wm, gm) = (std::fs::symlink_metadata(&w).unwrap(), std::fs::symlink_metadata(&g).unwrap());
        assert_eq!(wm.file_type(), gm.file_type(), "{}", rel.display());
        if wm.is_symlink() {
            assert_eq!(std::fs::read_link(&w).unwrap(), std::fs::read_link(&g).unwrap(), "{}", rel.display());
            continue;
        }
        assert_eq!(wm.permissions().mode(), gm.permissions().mode(), "mode of {}", rel.display());
        if wm.is_file() {
            assert!(std::fs::read(&w).unwrap() == std::fs::read(&g).unwrap(), "bytes of {}", rel.display());
        }
    }
}

/// A small tmpfs mounted on a private temporary directory (needs root), unmounted on
/// drop: a real filesystem that really runs full.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (the test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Grows (or shrinks) the filesystem in place; its files stay.
    pub fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "resizing the tmpfs failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so that a test failing with a file still open cannot leave the mount.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
