//! The OCI bundle of a sandbox: `config.json` built with oci-spec, and for the `host`
//! image a generated /etc on a shared skeleton root whose system directories are
//! read-only binds of the host's.
//!
//! Every sandbox runs in a user namespace of its own: ids 0..size inside are the
//! instance's [`IdRange`] outside, so root inside is an unprivileged host id no other
//! sandbox has. Seccomp is an allow list ([`super::seccomp`]); capabilities are
//! Podman's default set.

use super::{RuntimeError, SandboxSpec};
use hangar_types::api::ImageRef;
use hangar_types::SandboxId;
use hangar_types::idmap::IdRange;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder,
    Spec, UserBuilder,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Capabilities a workspace keeps: Podman's default set (Docker's without NET_RAW,
/// MKNOD and AUDIT_WRITE; ping works through `net.ipv4.ping_group_range` instead of raw
/// sockets). They hold only inside the sandbox's user namespace. Everything else is
/// dropped.
const CAPS: [Capability; 11] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
];

/// Host directories a `host` image shares read-only (where they are directories; a
/// symlink such as Debian's /bin -> usr/bin is recreated in the skeleton instead).
const HOST_DIRS: [&str; 7] = ["usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32"];

/// Host paths under /etc a `host` image shares read-only: public data the system's
/// programs need (Debian's /usr/bin links through /etc/alternatives; the CA bundle; the
/// loader's cache). Nothing else of the host's /etc is visible: see [`write_etc`].
const HOST_ETC: [&str; 5] = ["alternatives", "ssl/certs", "ld.so.cache", "protocols", "services"];

/// The root of every `host` image sandbox: empty directories to mount on and the host's
/// /usr-merge symlinks, nothing else, owned by host root and read-only to sandboxes.
/// Shared, and outside the agent's (private) dir: runc resolves the root filesystem's
/// path as the sandbox's root, an unprivileged host id, so each directory on the way must
/// be searchable by anyone. Rebuilt after a reboot (/run is a tmpfs); `v1` names its
/// layout.
const HOST_ROOTFS: &str = "/run/hangar/host-rootfs-v1";

fn err(id: &SandboxId, detail: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Bundle { id: id.to_string(), detail: detail.to_string() }
}

fn bind(dest: &str, src: &Path, ro: bool) -> Result<Mount, oci_spec::OciSpecError> {
    let mut opts = vec!["rbind".to_string(), "nosuid".into(), "nodev".into()];
    opts.push(if ro { "ro".into() } else { "rw".into() });
    MountBuilder::default().destination(dest).typ("bind").source(src).options(opts).build()
}

fn tmpfs(dest: &str, opts: &[&str]) -> Result<Mount, oci_spec::OciSpecError> {
    MountBuilder::default().destination(dest).typ("tmpfs").source("tmpfs").options(opts.iter().map(|o| o.to_string()).collect::<Vec<_>>()).build()
}

/// The shared root of `host` image sandboxes ([`HOST_ROOTFS`]), made if missing: built
/// beside it and renamed into place, so concurrent agents never see half of one.
fn host_rootfs() -> std::io::Result<PathBuf> {
    let root = PathBuf::from(HOST_ROOTFS);
    if root.is_dir() {
        return Ok(root);
    }
    let parent = root.parent().expect("HOST_ROOTFS has a parent");
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".host-rootfs-{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp)?;
    for d in HOST_DIRS {
        match std::fs::symlink_metadata(Path::new("/").join(d)) {
            Ok(m) if m.file_type().is_symlink() => std::os::unix::fs::symlink(std::fs::read_link(Path::new("/").join(d))?, tmp.join(d))?,
            Ok(m) if m.is_dir() => std::fs::create_dir(tmp.join(d))?,
            _ => {}
        }
    }
    for d in ["etc", "home", "tmp", "proc", "dev", "sys", "root", "run", "var"] {
        std::fs::create_dir(tmp.join(d))?;
    }
    match std::fs::rename(&tmp, &root) {
        Ok(()) => Ok(root),
        // Another agent made it first.
        Err(_) if root.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(root)
        }
        Err(e) => Err(e),
    }
}

/// A sandbox's /etc, written into `etc` (bind-mounted read-only at /etc): accounts for
/// root and nobody, its hostname, loopback names, the host's resolver and OS release,
/// and mount points for [`HOST_ETC`]. Never the host's shadow, keys or hangar's files.
/// Plain file writes: no process is spawned on the start path.
fn write_etc(etc: &Path, hostname: &str) -> std::io::Result<Vec<(String, PathBuf)>> {
    std::fs::create_dir_all(etc)?;
    let host = |f: &str| std::fs::read_to_string(Path::new("/etc").join(f)).unwrap_or_default();
    let files = [
        ("passwd", "root:x:0:0:root:/home:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n".to_string()),
        ("group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n".to_string()),
        ("hostname", format!("{hostname}\n")),
        ("hosts", format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n")),
        ("nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n".to_string()),
        ("resolv.conf", host("resolv.conf")),
        ("os-release", host("os-release")),
    ];
    for (name, content) in files {
        std::fs::write(etc.join(name), content)?;
    }
    if let Ok(zone) = std::fs::read_link("/etc/localtime") {
        let _ = std::os::unix::fs::symlink(zone, etc.join("localtime"));
    }
    let mut binds = vec![];
    for rel in HOST_ETC {
        let src = Path::new("/etc").join(rel);
        let Ok(meta) = std::fs::metadata(&src) else { continue };
        let at = etc.join(rel);
        if meta.is_dir() {
            std::fs::create_dir_all(&at)?;
        } else {
            std::fs::create_dir_all(at.parent().unwrap_or(etc))?;
            std::fs::File::create(&at)?;
        }
        binds.push((format!("/etc/{rel}"), src));
    }
    Ok(binds)
}

/// The mappings of a user namespace: ids 0..size inside are `ids` outside.
fn id_mapping(ids: IdRange) -> Result<oci_spec::runtime::LinuxIdMapping, oci_spec::OciSpecError> {
    LinuxIdMappingBuilder::default().container_id(0u32).host_id(ids.base).size(ids.size).build()
}

/// Creates `<bundle>/etc` (for the host image) and writes `<bundle>/config.json`.
pub fn write(bundle: &Path, spec: &SandboxSpec) -> Result<(), RuntimeError> {
    let id = &spec.id;
    spec.ids.check().map_err(|e| err(id, format!("uid range: {e}")))?;
    let mut mounts: Vec<Mount> = oci_spec::runtime::get_default_mounts();
    let rootfs = match &spec.image {
        ImageRef::Host => {
            let r = host_rootfs().map_err(|e| err(id, format!("the host image's root {HOST_ROOTFS}: {e}")))?;
            for d in HOST_DIRS {
                if r.join(d).is_dir() && !r.join(d).is_symlink() {
                    mounts.push(bind(&format!("/{d}"), &Path::new("/").join(d), true).map_err(|e| err(id, e))?);
                }
            }
            let etc = bundle.join("etc");
            let binds = write_etc(&etc, &spec.hostname).map_err(|e| err(id, format!("write {}: {e}", etc.display())))?;
            mounts.push(bind("/etc", &etc, true).map_err(|e| err(id, e))?);
            for (dest, src) in binds {
                mounts.push(bind(&dest, &src, true).map_err(|e| err(id, e))?);
            }
            // A writable /var/tmp and /run are expected by many tools.
            for d in ["/run", "/var"] {
                mounts.push(tmpfs(d, &["nosuid", "nodev", "size=16m"]).map_err(|e| err(id, e))?);
            }
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
    mounts.push(bind("/home", &spec.home_dir, false).map_err(|e| err(id, e))?);
    let tmp_size = format!("size={}m", (spec.mem_mib / 2).clamp(16, 1024));
    mounts.push(tmpfs("/tmp", &["nosuid", "nodev", "mode=1777", &tmp_size]).map_err(|e| err(id, e))?);
    // Secrets (`crate::secrets`): the sandbox's directory on the agent's tmpfs, read-only
    // at /run/secrets (on a /run of its own for images, which the host image has).
    if let Some(dir) = &spec.secrets_dir {
        if !matches!(spec.image, ImageRef::Host) {
            mounts.push(tmpfs("/run", &["nosuid", "nodev", "size=16m"]).map_err(|e| err(id, e))?);
        }
        let mut m = bind("/run/secrets", dir, true).map_err(|e| err(id, e))?;
        m.set_options(m.options().clone().map(|mut o| {
            o.push("noexec".into());
            o
        }));
        mounts.push(m);
    }

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
    let ns = |t: LinuxNamespaceType, path: Option<&PathBuf>| {
        let mut b = LinuxNamespaceBuilder::default().typ(t);
        if let Some(p) = path {
            b = b.path(p.clone());
        }
        b.build()
    };
    // The user and network namespaces are the pinned pair the network driver made for
    // this instance (the network one owned by the user one, so the runtime, which joins
    // the user namespace first, may join it; runc exec too), or new ones (loopback only).
    // The mappings stay in the config either way: runc 1.1 refuses a user namespace
    // without them ("no uid mappings found") and, joining one by path, writes none.
    let namespaces: Vec<LinuxNamespace> = [
        ns(LinuxNamespaceType::User, spec.join.as_ref().map(|j| &j.user)),
        ns(LinuxNamespaceType::Pid, None),
        ns(LinuxNamespaceType::Ipc, None),
        ns(LinuxNamespaceType::Uts, None),
        ns(LinuxNamespaceType::Mount, None),
        ns(LinuxNamespaceType::Cgroup, None),
        ns(LinuxNamespaceType::Network, spec.join.as_ref().map(|j| &j.net)),
    ]
    .into_iter()
    .collect::<Result<_, _>>()
    .map_err(|e| err(id, e))?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .uid_mappings(vec![id_mapping(spec.ids).map_err(|e| err(id, e))?])
        .gid_mappings(vec![id_mapping(spec.ids).map_err(|e| err(id, e))?])
        .resources(resources)
        .cgroups_path(PathBuf::from(format!("/hangar/{id}")))
        .masked_paths(oci_spec::runtime::get_default_maskedpaths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
        .seccomp(super::seccomp::profile().map_err(|e| err(id, e))?)
        // ping without CAP_NET_RAW: ICMP echo sockets for every group, in ids as seen
        // inside (the namespace is the sandbox's; its sysctls are its own).
        .sysctl(HashMap::from([("net.ipv4.ping_group_range".to_string(), format!("0 {}", spec.ids.size - 1))]))
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
