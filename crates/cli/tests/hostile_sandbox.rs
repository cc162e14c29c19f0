//! A hostile tenant inside its own sandbox, with the real binary, runc and a btrfs pool.
//! Each test is one attack (its name says which) and asserts it fails; each names the
//! defence that stops it, and fails if that defence is removed: the user namespace on
//! the instance's uid range, the generated /etc, the seccomp allow list, the capability
//! set, ping through `net.ipv4.ping_group_range`.
//!
//! Attacks use what a `host` image offers: sh, coreutils, util-linux, btrfs-progs,
//! iputils, and python3's ctypes for raw syscalls.

mod common;

use common::Fleet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// A fleet with tenant `evil`, its token, and `evil/NAME` running for each name.
struct Evil {
    f: Fleet,
    token: String,
}

fn evil(names: &[&str]) -> Evil {
    let f = common::up();
    f.run(&["tenant", "create", "evil", "--max-vcpus", "8", "--max-mem", "4096", "--max-running", "4", "--max-instances", "4", "--max-disk", "8"]);
    let token = f.json(&["token", "create", "--tenant", "evil"])["token"].as_str().unwrap().to_string();
    let e = Evil { f, token };
    for n in names {
        e.as_tenant(&["instance", "create", &format!("evil/{n}"), "--image", "host", "--mem", "256", "--disk", "256", "--start", "--", "sleep", "infinity"]);
    }
    e
}

/// What a command inside printed and how it ended.
struct Ran {
    code: Option<i32>,
    out: String,
    err: String,
}

impl Evil {
    fn as_tenant(&self, args: &[&str]) -> String {
        // Before any `--`, after which everything is the workload's command.
        let at = args.iter().position(|a| *a == "--").unwrap_or(args.len());
        let mut a = args.to_vec();
        a.splice(at..at, ["--token", self.token.as_str()]);
        self.f.run(&a)
    }

    /// Runs `argv` in `evil/NAME` as the tenant.
    fn exec(&self, name: &str, argv: &[&str]) -> Ran {
        let inst = format!("evil/{name}");
        let mut a = vec!["instance", "exec", &inst, "--token", &self.token, "--"];
        a.extend(argv);
        let o = self.f.try_run(&a);
        Ran { code: o.status.code(), out: String::from_utf8_lossy(&o.stdout).into_owned(), err: String::from_utf8_lossy(&o.stderr).into_owned() }
    }

    fn sh(&self, name: &str, script: &str) -> Ran {
        self.exec(name, &["sh", "-c", script])
    }

    /// A shell script that must succeed; its stdout.
    fn ok(&self, name: &str, script: &str) -> String {
        let r = self.sh(name, script);
        assert_eq!(r.code, Some(0), "`{script}` failed in evil/{name}: {} {}", r.out, r.err);
        r.out
    }

    /// python3 inside with [`PY_PRELUDE`]; what it printed.
    fn py(&self, name: &str, code: &str) -> String {
        let r = self.exec(name, &["python3", "-c", &format!("{PY_PRELUDE}\n{code}")]);
        assert_eq!(r.code, Some(0), "python in evil/{name}: {} {}", r.out, r.err);
        r.out.trim().to_string()
    }

    /// The first line of /proc/self/uid_map inside: (inside, outside, count).
    fn uid_map(&self, name: &str) -> (u64, u64, u64) {
        let out = self.ok(name, "cat /proc/self/uid_map");
        let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
        assert_eq!(v.len(), 3, "one mapping: {out}");
        (v[0], v[1], v[2])
    }

    fn sandbox(&self, name: &str) -> String {
        let id: hangar_types::InstanceId = self.f.json(&["instance", "info", &format!("evil/{name}")])["id"].as_str().unwrap().parse().unwrap();
        id.sandbox_id().to_string()
    }

    /// The instance's volume on the host (the btrfs pool's subvolume).
    fn volume(&self, name: &str) -> PathBuf {
        self.f.data_dir().join("agent/storage/pool/volumes").join(self.sandbox(name))
    }

    /// The host pid of the sandbox's init.
    fn host_pid(&self, name: &str) -> u32 {
        let o = std::process::Command::new("runc").arg("--root").arg(self.f.data_dir().join("agent/runtime")).args(["state", &self.sandbox(name)]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("runc state: {e}: {}", String::from_utf8_lossy(&o.stderr)));
        v["pid"].as_u64().unwrap() as u32
    }
}

/// Syscall numbers by architecture, and `call(name, *args)` returning "ok" or the errno
/// name.
const PY_PRELUDE: &str = r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
x86 = os.uname().machine == "x86_64"
NR = dict(clone=56 if x86 else 220, clone3=435, finit_module=313 if x86 else 273, init_module=175 if x86 else 105,
          io_uring_setup=425, fsopen=430, open_tree=428, ptrace=101 if x86 else 117, unshare=272 if x86 else 97)
def call(name, *args):
    r = libc.syscall(NR[name], *args)
    if r == 0 and name == "clone":
        os._exit(0)
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
"#;

fn assert_refused(what: &str, r: &Ran) {
    assert!(r.code.is_some_and(|c| c != 0), "{what} succeeded: {} {}", r.out, r.err);
}

/// Defence: the generated /etc. The host's shadow, ssh host keys, private TLS keys and
/// accounts are not there at all (not merely unreadable).
#[test]
fn reading_host_shadow_and_ssh_host_keys_fails() {
    // An ssh host key to look for, made if this host has none.
    let made = std::fs::read_dir("/etc/ssh").map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().ends_with("_key")).count()).unwrap_or(0) == 0;
    let key = PathBuf::from("/etc/ssh/ssh_host_hangartest_key");
    if made {
        std::fs::create_dir_all("/etc/ssh").unwrap();
        std::fs::write(&key, "host secret").unwrap();
    }
    struct Remove(Option<PathBuf>);
    impl Drop for Remove {
        fn drop(&mut self) {
            if let Some(p) = &self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    let _cleanup = Remove(made.then(|| key.clone()));
    let e = evil(&["x"]);
    assert_refused("reading /etc/shadow", &e.sh("x", "head /etc/shadow"));
    assert_refused("finding /etc/shadow", &e.sh("x", "test -e /etc/shadow"));
    assert_refused("finding ssh host keys", &e.sh("x", "ls /etc/ssh/ssh_host_*"));
    assert_refused("finding /etc/ssl/private", &e.sh("x", "test -e /etc/ssl/private"));
    assert_refused("finding hangar's data dir", &e.sh("x", &format!("test -e {}", e.f.data_dir().display())));
    let passwd = e.ok("x", "cat /etc/passwd");
    assert!(passwd.starts_with("root:x:0:0:") && !passwd.contains("daemon:"), "the host's accounts: {passwd}");
    // What the image must still offer: its hostname, names, certificates, commands.
    assert_eq!(e.ok("x", "hostname; cat /etc/hostname"), "x\nx\n");
    e.ok("x", "test -s /etc/ssl/certs/ca-certificates.crt && test -s /etc/os-release && getent hosts localhost && awk 'BEGIN{}'");
}

/// Defence: the user namespace. Root inside is the first id of the instance's range on
/// the host: files it makes are owned by that id, never by host root.
#[test]
fn uid_0_inside_is_not_uid_0_outside() {
    let e = evil(&["x"]);
    let (inside, outside, count) = e.uid_map("x");
    assert_eq!((inside, count), (0, 65536));
    assert!(outside >= 1 << 20, "root inside is host uid {outside}");
    assert_eq!(e.ok("x", "id -u; touch /home/made-inside; stat -c %u /home/made-inside"), "0\n0\n");
    let meta = std::fs::metadata(e.volume("x").join("made-inside")).unwrap();
    assert_eq!((meta.uid() as u64, meta.gid() as u64), (outside, outside), "owned by the mapped root on the host");
    let home = std::fs::metadata(e.volume("x")).unwrap();
    assert_eq!(home.uid() as u64, outside, "the volume's root is the sandbox root's");
}

/// Defence: the hub's uid range allocation (unique among live instances, across tenants).
#[test]
fn two_instances_share_no_host_ids() {
    let e = evil(&["a", "b"]);
    let (_, a, n) = e.uid_map("a");
    let (_, b, _) = e.uid_map("b");
    assert!(a + n <= b || b + n <= a, "ranges {a}+{n} and {b}+{n} overlap");
}

/// Defence: the range is the instance's for life (store, desired document), so its
/// volume stays its own after stop, start and an agent (and hub) crash.
#[test]
fn the_uid_range_survives_stop_start_and_agent_restart() {
    let mut e = evil(&["x"]);
    let first = e.uid_map("x");
    e.ok("x", "echo 1 > /home/f");
    e.as_tenant(&["instance", "stop", "evil/x"]);
    e.as_tenant(&["instance", "start", "evil/x"]);
    assert_eq!(e.uid_map("x"), first, "after stop and start");
    common::crash_and_restart(&mut e.f);
    assert_eq!(e.uid_map("x"), first, "after the agent's restart");
    e.as_tenant(&["instance", "stop", "evil/x"]);
    e.as_tenant(&["instance", "start", "evil/x"]);
    assert_eq!(e.uid_map("x"), first, "after a restart, then stop and start");
    assert_eq!(e.ok("x", "echo 2 >> /home/f; cat /home/f"), "1\n2\n", "the volume is still writable by root inside");
}

/// Defence: the user namespace. A host-owned file in reach (in the volume) cannot be
/// written through /proc/self/root or /proc/1/root: root inside has no power over ids
/// outside its range.
#[test]
fn writing_a_host_owned_file_through_proc_root_fails() {
    let e = evil(&["x"]);
    let file = e.volume("x").join("host-owned");
    std::fs::write(&file, "host\n").unwrap();
    std::os::unix::fs::chown(&file, Some(0), Some(0)).unwrap();
    for path in ["/home/host-owned", "/proc/self/root/home/host-owned", "/proc/1/root/home/host-owned"] {
        assert_refused(&format!("writing {path}"), &e.sh("x", &format!("echo pwned > {path}")));
    }
    assert_refused("chowning it", &e.sh("x", "chown 0:0 /proc/1/root/home/host-owned"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "host\n");
}

/// Defence: seccomp (mount and the new mount API are not on the allow list) and the
/// capability set (no CAP_SYS_ADMIN).
#[test]
fn mounting_fails() {
    let e = evil(&["x"]);
    assert_refused("mount -t tmpfs", &e.sh("x", "mount -t tmpfs none /tmp"));
    assert_refused("mount --bind", &e.sh("x", "mount --bind /home /tmp"));
    assert_eq!(e.py("x", "print(call('fsopen', b'tmpfs', 0), call('open_tree', -100, b'/', 0))"), "EPERM EPERM");
}

/// Defence: seccomp. Creating user namespaces needs no privilege, so only the filter
/// stops `unshare -U` and clone(CLONE_NEWUSER); clone3 fails with ENOSYS (its flags
/// are out of a filter's reach), so libc falls back to clone.
#[test]
fn new_namespaces_through_unshare_and_clone_fail() {
    let e = evil(&["x"]);
    assert_refused("unshare -U", &e.sh("x", "unshare -U true"));
    assert_refused("unshare -r", &e.sh("x", "unshare -r -n true"));
    let out = e.py(
        "x",
        "CLONE_NEWUSER, CLONE_NEWNS, SIGCHLD = 0x10000000, 0x20000, 17\n\
         print(call('clone', CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0), call('clone', CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0), \
         call('unshare', CLONE_NEWUSER), call('clone3', 0, 0))",
    );
    assert_eq!(out, "EPERM EPERM EPERM ENOSYS");
    // A plain fork still works.
    assert_eq!(e.ok("x", "(echo child) | cat"), "child\n");
}

/// Defence: seccomp (no module syscalls) and capabilities (no CAP_SYS_MODULE).
#[test]
fn loading_a_kernel_module_fails() {
    let e = evil(&["x"]);
    let out = e.py("x", "fd = os.open('/bin/true', os.O_RDONLY)\nbuf = ctypes.create_string_buffer(64)\nprint(call('finit_module', fd, b'', 0), call('init_module', buf, 64, b''))");
    assert_eq!(out, "EPERM EPERM");
}

/// Defence: the pid namespace. Host processes and other sandboxes' processes are not
/// visible, so they cannot be traced (or signalled).
#[test]
fn ptrace_of_a_host_process_or_another_sandbox_fails() {
    let e = evil(&["x", "victim"]);
    let victim = e.host_pid("victim");
    let me = std::process::id();
    for pid in [me, victim] {
        let out = e.py("x", &format!("print(call('ptrace', 16, {pid}, 0, 0), 'visible' if os.path.exists('/proc/{pid}/exe') else 'hidden')"));
        assert_eq!(out, "ESRCH hidden", "ptrace attach to host pid {pid}");
        assert_refused("kill -0", &e.sh("x", &format!("kill -0 {pid}")));
    }
}

/// Defence: seccomp (io_uring is off the allow list: its operations bypass the filter).
#[test]
fn io_uring_setup_fails() {
    let e = evil(&["x"]);
    assert_eq!(e.py("x", "params = ctypes.create_string_buffer(120)\nprint(call('io_uring_setup', 1, params))"), "EPERM");
}

/// Defence: seccomp's argument filter on ioctl: a subvolume or snapshot made inside the
/// volume would escape its quota and block its deletion.
#[test]
fn creating_a_nested_btrfs_subvolume_fails() {
    let e = evil(&["x"]);
    assert_refused("btrfs subvolume create", &e.sh("x", "btrfs subvolume create /home/x"));
    assert_refused("btrfs subvolume snapshot", &e.sh("x", "btrfs subvolume snapshot /home /home/snap"));
    assert!(!e.volume("x").join("x").exists() && !e.volume("x").join("snap").exists());
    // Other ioctls still work.
    e.ok("x", "stty -a < /dev/null 2>/dev/null; true; ls /home >/dev/null");
}

/// Defence kept working: without CAP_NET_RAW, ping goes through ICMP datagram sockets,
/// which `net.ipv4.ping_group_range` allows in the sandbox's network namespace. (The
/// gateway is the host, which sandboxes must not reach: ping a neighbour instead.)
#[test]
fn ping_to_a_neighbour_still_works_without_net_raw() {
    let e = evil(&["x", "y"]);
    let eff = e.ok("x", "grep CapEff /proc/self/status | cut -f2");
    let caps = u64::from_str_radix(eff.trim(), 16).unwrap();
    assert_eq!(caps & (1 << 13), 0, "CAP_NET_RAW is held: {eff}");
    assert_eq!(caps & (1 << 27), 0, "CAP_MKNOD is held: {eff}");
    let y = e.f.json(&["instance", "info", "evil/y"])["address"].as_str().unwrap().to_string();
    let r = e.sh("x", &format!("ping -c 1 -W 5 {y}"));
    assert_eq!(r.code, Some(0), "ping {y}: {} {}", r.out, r.err);
}
