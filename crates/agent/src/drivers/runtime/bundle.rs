//! The OCI bundle of a sandbox: `config.json` built with oci-spec, and for the `host`
//! image a tiny root directory whose system directories are read-only binds of the host.

use super::{RuntimeError, SandboxSpec};
use hangar_types::api::ImageRef;
use hangar_types::SandboxId;
use oci_spec::runtime::{
    Arch, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Capabilities a workspace keeps: Docker's default set. Everything else is dropped.
const CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Syscalls a workspace may not make (EPERM): kernel modules, reboot, mounts, namespaces,
/// tracing, keyrings, clock changes and other ways out of the sandbox.
const DENIED_SYSCALLS: [&str; 34] = [
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff",
    "mount", "umount2", "pivot_root", "open_by_handle_at", "name_to_handle_at", "bpf", "perf_event_open", "ptrace",
    "add_key", "request_key", "keyctl", "unshare", "setns", "iopl", "ioperm", "acct", "quotactl", "settimeofday",
    "clock_settime", "adjtimex", "lookup_dcookie", "userfaultfd", "personality", "syslog", "vhangup", "nfsservctl",
];

/// Host directories a `host` image shares read-only.
const HOST_DIRS: [&str; 6] = ["usr", "etc", "bin", "sbin", "lib", "lib64"];

fn err(id: &SandboxId, detail: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Bundle { id: id.to_string(), detail: detail.to_string() }
}

fn bind(dest: &str, src: &Path, ro: bool) -> Result<Mount, oci_spec::OciSpecError> {
    let mut opts = vec!["rbind".to_string(), "nosuid".into(), "nodev".into()];
    opts.push(if ro { "ro".into() } else { "rw".into() });
    MountBuilder::default().destination(dest).typ("bind").source(src).options(opts).build()
}

/// Creates `<bundle>/rootfs` (for the host image) and writes `<bundle>/config.json`.
pub fn write(bundle: &Path, spec: &SandboxSpec) -> Result<(), RuntimeError> {
    let id = &spec.id;
    let rootfs = match &spec.image {
        ImageRef::Host => {
            let r = bundle.join("rootfs");
            std::fs::create_dir_all(&r).map_err(|e| err(id, format!("mkdir {}: {e}", r.display())))?;
            r
        }
        // The reconciler resolves a registered image (`crate::images`) before the bundle.
        ImageRef::Named(n) => return Err(err(id, format!("image '{n}' was not resolved to a root filesystem"))),
        ImageRef::Dir(p) => {
            let p = PathBuf::from(p);
            if !p.join("bin").exists() && !p.join("usr/bin").exists() {
                return Err(err(id, format!("image directory {} holds no bin/ or usr/bin/: is it a root filesystem?", p.display())));
            }
            p
        }
    };
    let mut mounts: Vec<Mount> = oci_spec::runtime::get_default_mounts();
    if matches!(spec.image, ImageRef::Host) {
        for d in HOST_DIRS {
            let host = Path::new("/").join(d);
            let Ok(meta) = std::fs::symlink_metadata(&host) else { continue };
            let inside = rootfs.join(d);
            if meta.file_type().is_symlink() {
                // Debian's merged /usr: /bin -> usr/bin. Recreate the link instead of binding.
                let target = std::fs::read_link(&host).map_err(|e| err(id, e))?;
                if std::fs::symlink_metadata(&inside).is_err() {
                    std::os::unix::fs::symlink(&target, &inside).map_err(|e| err(id, format!("symlink {}: {e}", inside.display())))?;
                }
            } else {
                std::fs::create_dir_all(&inside).map_err(|e| err(id, e))?;
                mounts.push(bind(&format!("/{d}"), &host, true).map_err(|e| err(id, e))?);
            }
        }
        for d in ["home", "tmp", "proc", "dev", "sys", "root", "run", "var"] {
            std::fs::create_dir_all(rootfs.join(d)).map_err(|e| err(id, e))?;
        }
        // A writable /var/tmp and /run are expected by many tools.
        for d in ["/run", "/var"] {
            mounts.push(MountBuilder::default().destination(d).typ("tmpfs").source("tmpfs").options(vec!["nosuid".to_string(), "nodev".into(), "size=16m".into()]).build().map_err(|e| err(id, e))?);
        }
    }
    mounts.push(bind("/home", &spec.home_dir, false).map_err(|e| err(id, e))?);
    mounts.push(
        MountBuilder::default()
            .destination("/tmp")
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec!["nosuid".to_string(), "nodev".into(), "mode=1777".into(), format!("size={}m", (spec.mem_mib / 2).clamp(16, 1024))])
            .build()
            .map_err(|e| err(id, e))?,
    );

    let caps: HashSet<Capability> = CAPS.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .ambient(HashSet::new())
        .inheritable(HashSet::new())
        .build()
        .map_err(|e| err(id, e))?;
    let mut env: Vec<String> = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "HOME=/home".into(),
        "TERM=xterm".into(),
    ];
    env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
    let args = if spec.command.is_empty() { vec!["sleep".to_string(), "infinity".into()] } else { spec.command.clone() };
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build().map_err(|e| err(id, e))?)
        .args(args)
        .env(env)
        .cwd("/home")
        .no_new_privileges(true)
        .capabilities(capabilities)
        .rlimits(vec![oci_spec::runtime::PosixRlimitBuilder::default()
            .typ(oci_spec::runtime::PosixRlimitType::RlimitNofile)
            .hard(1024u64)
            .soft(1024u64)
            .build()
            .map_err(|e| err(id, e))?])
        .build()
        .map_err(|e| err(id, e))?;

    let mem = (spec.mem_mib * 1024 * 1024) as i64;
    let resources = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(mem).swap(mem).build().map_err(|e| err(id, e))?)
        .cpu(LinuxCpuBuilder::default().quota(spec.vcpus as i64 * 100_000).period(100_000u64).build().map_err(|e| err(id, e))?)
        .pids(LinuxPidsBuilder::default().limit(spec.pids_limit as i64).build().map_err(|e| err(id, e))?)
        .build()
        .map_err(|e| err(id, e))?;
    let namespaces: Vec<LinuxNamespace> = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|t| {
        let mut b = LinuxNamespaceBuilder::default().typ(t);
        if t == LinuxNamespaceType::Network {
            if let Some(p) = &spec.netns_path {
                b = b.path(p.clone());
            }
        }
        b.build()
    })
    .collect::<Result<_, _>>()
    .map_err(|e| err(id, e))?;
    let seccomp = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32])
        .syscalls(vec![LinuxSyscallBuilder::default()
            .names(DENIED_SYSCALLS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(1u32)
            .build()
            .map_err(|e| err(id, e))?])
        .build()
        .map_err(|e| err(id, e))?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(PathBuf::from(format!("/hangar/{id}")))
        .masked_paths(oci_spec::runtime::get_default_maskedpaths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
        .seccomp(seccomp)
        .build()
        .map_err(|e| err(id, e))?;
    let mut s = Spec::default();
    s.set_hostname(Some(spec.hostname.clone()));
    s.set_root(Some(RootBuilder::default().path(rootfs).readonly(true).build().map_err(|e| err(id, e))?));
    s.set_mounts(Some(mounts));
    s.set_process(Some(process));
    s.set_linux(Some(linux));
    s.save(bundle.join("config.json")).map_err(|e| err(id, e))?;
    // It holds the tenant's env and command: 0600 (see `crate::files`).
    crate::files::make_private(&bundle.join("config.json")).map_err(|e| err(id, e))?;
    Ok(())
}
