//! A real local fleet for end-to-end tests: the `hangar` binary, a temp data dir, a hub
//! and an agent on loopback. Dropping a [`Fleet`] kills its processes and runs
//! `hangar down --purge`, which removes its sandboxes, cgroups, mounts and loop device.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hangar")
}

/// These tests drive runc, cgroups and loop devices: without root they cannot run,
/// and they say so instead of passing vacuously.
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1).map(str::to_string)));
    assert_eq!(uid.as_deref(), Some("0"), "end-to-end tests need root (runc, cgroups, loop devices, btrfs)");
    for tool in ["runc", "mkfs.btrfs", "losetup", "blkid"] {
        let ok = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| o.status.success()).unwrap_or(false);
        assert!(ok, "{tool} is missing: install runc, btrfs-progs, util-linux (.ci/run does)");
    }
}

pub struct Fleet {
    pub dir: tempfile::TempDir,
    /// A cluster range of this fleet's own, so fleets of tests running side by side
    /// never share a bridge.
    pub range_octet: u8,
    pub procs: Vec<Child>,
    pub extra_env: Vec<(String, String)>,
    /// More `hangar up` arguments (e.g. `--stale-after`).
    pub up_args: Vec<String>,
}

impl Fleet {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    /// `hangar up` in the background on a free port, waiting until its host is ready.
    pub fn up() -> Fleet {
        Fleet::up_with(&[])
    }

    /// `hangar up` with more arguments.
    pub fn up_with(up_args: &[&str]) -> Fleet {
        require_root();
        let dir = tempfile::Builder::new().prefix("hangar-e2e-").tempdir().expect("tempdir");
        // 10.100.0.0/16 .. 10.199.0.0/16: distinct for every fleet of this test binary
        // (test binaries run one after another).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + std::process::id() * 7;
        let range_octet = 100 + (n % 100) as u8;
        let mut f = Fleet { dir, range_octet, procs: vec![], extra_env: vec![], up_args: up_args.iter().map(|s| s.to_string()).collect() };
        f.spawn_up();
        f.wait_ready();
        f
    }

    pub fn spawn_up(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("up.log")).unwrap();
        let child = Command::new(bin())
            .args(["up", "--listen", "127.0.0.1:0", "--pool-size-mib", "2048", "--interval", "0.5", "--cluster-range"])
            .arg(format!("10.{}.0.0/16", self.range_octet))
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.up_args)
            .env("HANGAR_CONFIG", self.config())
            .env("HANGAR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn hangar up");
        self.procs.push(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    /// Waits until the API answers and a host is ready.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let o = self.try_run(&["host", "list", "--json"]);
            if o.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
                if v.as_array().is_some_and(|a| a.iter().any(|h| h["state"] == "ready")) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "fleet not ready after 90s; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn try_run(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin());
        c.args(args).env("HANGAR_CONFIG", self.config()).env_remove("HANGAR_TOKEN").env_remove("HANGAR_HUB");
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c.output().expect("run hangar")
    }

    /// Runs a CLI command that must succeed; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let o = self.try_run(args);
        assert!(
            o.status.success(),
            "hangar {args:?} failed ({}):\nstdout: {}\nstderr: {}\nlog:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            tail(&self.log(), 40)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let s = self.run(&a);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("hangar {args:?} printed no JSON ({e}): {s}"))
    }

    /// Runs a CLI command that must fail; returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let o = self.try_run(args);
        assert!(!o.status.success(), "hangar {args:?} should fail but printed: {}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    pub fn kill9(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        self.procs.clear();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `ok` every 250 ms for up to 90 s.
pub fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let l: Vec<&str> = s.lines().collect();
    l[l.len().saturating_sub(n)..].join("\n")
}

/// Removes everything a data dir's fleet made, whatever state it is in.
pub fn down(data_dir: &Path) {
    let o = Command::new(bin()).args(["down", "--purge", "--data-dir"]).arg(data_dir).output().expect("run hangar down");
    if !o.status.success() {
        eprintln!("hangar down failed: {}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill9();
        down(&self.data_dir());
    }
}
