//! The seccomp profile of every sandbox: an allow list; any other syscall fails with
//! EPERM.
//!
//! Source: Docker's default profile (moby/moby `profiles/seccomp/default.json`), taking
//! the rules that apply to a container holding none of CAP_SYS_ADMIN, CAP_SYS_PTRACE,
//! CAP_SYS_MODULE, CAP_SYS_BOOT, CAP_SYS_TIME, CAP_SYS_RAWIO, CAP_SYSLOG, CAP_BPF,
//! CAP_PERFMON (hangar grants none of them, see `bundle::CAPS`). Podman's default
//! (containers/common `pkg/seccomp/seccomp.json`) is the same list. So, as there:
//! mount and the new mount API (fsopen, fsconfig, fsmount, fspick, move_mount,
//! open_tree, mount_setattr), unshare, setns, kexec, modules, bpf, perf, keyrings
//! (add_key, request_key, keyctl), userfaultfd, reboot, swap, clock changes, acct,
//! quotactl, open_by_handle_at, kcmp, pidfd_getfd are refused; clone is allowed only
//! without namespace flags (an argument filter), and clone3, whose flags live in memory
//! a filter cannot read, fails with ENOSYS so libc falls back to clone.
//!
//! Where hangar differs from that profile, and why:
//! - io_uring_setup, io_uring_enter, io_uring_register are refused: the operations a
//!   ring runs never pass through seccomp (moby removed them from its default in 25.0).
//! - ioctl is allowed except the btrfs subvolume and snapshot create and destroy
//!   requests: a volume is a btrfs subvolume with a qgroup limit, and a subvolume made
//!   inside it escapes that limit and blocks the volume's deletion.
//! - socket(AF_VSOCK) is refused, as in Docker.
//!
//! Architectures: x86_64 with its x86 and x32 ABIs, aarch64 with arm (the filter must
//! name every ABI a process could switch to, or their syscalls would bypass it). Names
//! an architecture does not have are skipped by runc and crun.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Allowed unconditionally on every architecture (Docker's list, minus io_uring and the
/// syscalls given argument filters below).
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset", "chdir", "chmod", "chown", "chown32",
    "chroot", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
    "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3",
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old",
    "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64",
    "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync",
    "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64",
    "fsync", "ftruncate", "ftruncate64", "futex", "futex_time64", "futex_waitv", "futimesat", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer",
    "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid",
    "gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
    "io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup",
    "io_submit", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32",
    "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat",
    "lstat64", "madvise", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock",
    "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd",
    "msync", "munlock", "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat",
    "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll",
    "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "process_vm_readv",
    "process_vm_writev", "pselect6", "pselect6_time64", "ptrace", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr",
    "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
    "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
    "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop", "semtimedop",
    "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid",
    "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32",
    "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "shmat", "shmctl", "shmdt", "shmget",
    "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat",
    "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill",
    "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times",
    "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
];

/// Allowed on this architecture only.
#[cfg(target_arch = "x86_64")]
const ALLOWED_ARCH: &[&str] = &["arch_prctl", "modify_ldt"];
#[cfg(target_arch = "aarch64")]
const ALLOWED_ARCH: &[&str] = &["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("hangar's seccomp profile covers x86_64 and aarch64 only");

#[cfg(target_arch = "x86_64")]
const ARCHES: [Arch; 3] = [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32];
#[cfg(target_arch = "aarch64")]
const ARCHES: [Arch; 2] = [Arch::ScmpArchAarch64, Arch::ScmpArchArm];

/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET: clone is allowed only with none of these set.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// Personalities Docker allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32,
/// and the query 0xffffffff.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

const AF_VSOCK: u64 = 40;

/// The btrfs ioctls that make or remove subvolumes and snapshots: `_IOW(0x94, nr, 4096
/// bytes)` with nr 1 (SNAP_CREATE), 14 (SUBVOL_CREATE), 15 (SNAP_DESTROY), 23
/// (SNAP_CREATE_V2), 24 (SUBVOL_CREATE_V2), 63 (SNAP_DESTROY_V2). The same numbers on
/// x86_64 and aarch64.
pub const BTRFS_SUBVOLUME_IOCTLS: [u64; 6] = [0x5000_9401, 0x5000_940E, 0x5000_940F, 0x5000_9417, 0x5000_9418, 0x5000_943F];

fn rule(names: &[&str], action: LinuxSeccompAction, errno: Option<u32>, args: Vec<(usize, u64, Option<u64>, LinuxSeccompOperator)>) -> Result<LinuxSyscall, oci_spec::OciSpecError> {
    let mut b = LinuxSyscallBuilder::default().names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).action(action);
    if let Some(e) = errno {
        b = b.errno_ret(e);
    }
    if !args.is_empty() {
        let args = args
            .into_iter()
            .map(|(index, value, value_two, op)| {
                let a = LinuxSeccompArgBuilder::default().index(index).value(value).op(op);
                match value_two {
                    Some(v2) => a.value_two(v2).build(),
                    None => a.build(),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        b = b.args(args);
    }
    b.build()
}

/// Aligned blocks `(mask, value)` of 16-bit values covering exactly every value but
/// `refused`: `x & mask == value` holds for an allowed `x` in exactly one block and for a
/// refused one in none.
fn allowed_blocks(refused: &[u16]) -> Vec<(u64, u64)> {
    fn cover(value: u32, free_bits: u32, refused: &[u16], out: &mut Vec<(u64, u64)>) {
        let inside = |r: &&u16| (**r as u32) >> free_bits == value >> free_bits;
        if !refused.iter().any(|r| inside(&r)) {
            out.push(((0xffff_u64 >> free_bits) << free_bits, value as u64));
        } else if free_bits > 0 {
            cover(value, free_bits - 1, refused, out);
            cover(value | 1 << (free_bits - 1), free_bits - 1, refused, out);
        }
    }
    let mut out = vec![];
    cover(0, 16, refused, &mut out);
    out
}

/// The profile (see the module doc).
pub fn profile() -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    use LinuxSeccompAction::{ScmpActAllow as Allow, ScmpActErrno as Errno};
    use LinuxSeccompOperator::{ScmpCmpEq as Eq, ScmpCmpMaskedEq as MaskedEq, ScmpCmpNe as Ne};
    let mut syscalls = vec![
        rule(ALLOWED, Allow, None, vec![])?,
        rule(ALLOWED_ARCH, Allow, None, vec![])?,
        rule(&["socket"], Allow, None, vec![(0, AF_VSOCK, None, Ne)])?,
        // Masked: flags & CLONE_NAMESPACE_FLAGS == 0.
        rule(&["clone"], Allow, None, vec![(0, CLONE_NAMESPACE_FLAGS, Some(0), MaskedEq)])?,
        rule(&["clone3"], Errno, Some(ENOSYS), vec![])?,
    ];
    for p in PERSONALITIES {
        syscalls.push(rule(&["personality"], Allow, None, vec![(0, p, None, Eq)])?);
    }
    // ioctl: allowed for every request whose low 16 bits (type and number) are not a
    // refused one's, one rule per aligned block of allowed values. (An unconditional
    // allow beside errno rules would not do: libseccomp lets the unconditional rule win.)
    // Only masked bits are compared, so bits above them, which the kernel ignores or
    // checks itself, cannot smuggle a refused request past the filter.
    let refused: Vec<u16> = BTRFS_SUBVOLUME_IOCTLS.iter().map(|r| (r & 0xffff) as u16).collect();
    for (mask, value) in allowed_blocks(&refused) {
        syscalls.push(rule(&["ioctl"], Allow, None, vec![(1, mask, Some(value), MaskedEq)])?);
    }
    LinuxSeccompBuilder::default().default_action(Errno).default_errno_ret(EPERM).architectures(ARCHES.to_vec()).syscalls(syscalls).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_syscalls_are_not_on_the_allow_list() {
        for s in [
            "mount", "umount2", "unshare", "setns", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
            "mount_setattr", "io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load", "init_module",
            "finit_module", "delete_module", "bpf", "perf_event_open", "add_key", "request_key", "keyctl", "userfaultfd", "reboot",
            "swapon", "swapoff", "settimeofday", "clock_settime", "acct", "quotactl", "open_by_handle_at", "kcmp", "pidfd_getfd",
            "iopl", "ioperm", "syslog", "sethostname", "setdomainname", "lookup_dcookie", "clone", "clone3", "ioctl", "socket",
            "personality",
        ] {
            assert!(!ALLOWED.contains(&s) && !ALLOWED_ARCH.contains(&s), "{s} must not be allowed unconditionally");
        }
        let mut sorted = ALLOWED.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ALLOWED.len(), "no name twice");
    }

    #[test]
    fn the_btrfs_requests_are_iow_0x94_of_4096_bytes() {
        let iow = |nr: u64| (1 << 30) | (4096 << 16) | (0x94 << 8) | nr;
        assert_eq!(BTRFS_SUBVOLUME_IOCTLS, [iow(1), iow(14), iow(15), iow(23), iow(24), iow(63)]);
        let refused: Vec<u16> = BTRFS_SUBVOLUME_IOCTLS.iter().map(|r| (r & 0xffff) as u16).collect();
        let blocks = allowed_blocks(&refused);
        for x in 0..=0xffff_u64 {
            let hits = blocks.iter().filter(|(m, v)| x & m == *v).count();
            assert_eq!(hits, usize::from(!refused.contains(&(x as u16))), "request {x:#x}");
        }
        assert!(blocks.len() < 64, "{} rules for ioctl", blocks.len());
        let p = profile().unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["defaultErrnoRet"], 1);
    }
}
