//! `hangar bench --only copy`: one file of `mib` MiB copied between instances on two
//! hosts (network namespaces of this machine) by `hangar cp` (a host-to-host transfer:
//! tar frames over mutual TLS, staged, then put in place), next to the raw stream in
//! the same run: the same file sent over plain TCP from the source host's namespace to
//! the target's (`cat > /dev/tcp/...`), written to a file in the target's pool.

use crate::fleet::{wait_host, Fleet};
use anyhow::{bail, Context, Result};
use hangar_client::HubClient;
use hangar_types::api::*;
use hangar_types::files::{CopyEnd, CopyRequest};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct CopyBench {
    pub bytes: u64,
    pub hangar_secs: f64,
    pub raw_secs: f64,
    /// The peer: the same file through OpenSSH (`cat | ssh 'cat > FILE'`).
    pub ssh_secs: f64,
}

const HOSTS: [&str; 2] = ["bcp-a", "bcp-b"];

pub(crate) async fn instance_on(c: &HubClient, tenant: &str, name: &str, host: &str, disk_mib: u64) -> Result<Instance> {
    let spec = InstanceSpec { image: ImageRef::Host, vcpus: 1, mem_mib: 64, disk_mib, command: vec![], env: Default::default(), secrets: vec![] };
    let mut req = InstanceCreate::new(name.parse()?, spec, true);
    req.host = Some(host.parse()?);
    let op = c.instance_create(tenant, &req).await?;
    let op = c.operation_wait_final(op.id, Duration::from_secs(120)).await?;
    if op.status != OperationStatus::Succeeded {
        bail!("{name} did not start: {:?}", op.error);
    }
    Ok(c.instance_get(tenant, name).await?)
}

/// The network namespace the `local` provider runs `host` in.
pub(crate) fn netns_of(host: &str) -> Result<String> {
    let out = Command::new("ip").args(["netns", "list"]).output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .find(|n| n.starts_with("hgn-") && n.ends_with(&format!("-{host}")))
        .map(str::to_string)
        .with_context(|| format!("no network namespace for host {host}"))
}

/// Starts `script` in `ns` (a TCP listener) and waits until its first line of
/// output says `ready`.
pub(crate) fn listening(ns: &str, script: &str) -> Result<std::process::Child> {
    let mut rx = sh(ns, script).stdout(std::process::Stdio::piped()).spawn()?;
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(rx.stdout.as_mut().context("listener output")?), &mut ready)?;
    if ready.trim() != "ready" {
        bail!("the raw listener in {ns} did not start: {ready:?}");
    }
    Ok(rx)
}

pub(crate) fn sh(ns: &str, script: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "bash", "-c", script]);
    c
}

pub async fn run(c: &HubClient, fleet: &Fleet, tenant: &str, mib: u64) -> Result<CopyBench> {
    for h in HOSTS {
        c.host_add(&HostAdd { name: h.parse()?, provider: Some("local".into()), join_ttl_secs: None }).await?;
        wait_host(c, h, HostState::Ready, Duration::from_secs(60)).await?;
    }
    let disk = mib * 2 + 256;
    let src = instance_on(c, tenant, "cpsrc", HOSTS[0], disk).await?;
    let dst = instance_on(c, tenant, "cpdst", HOSTS[1], disk).await?;
    let pool = |h: &str| fleet.data_dir().join("hosts").join(h).join("agent/storage/pool/volumes");
    let src_file = pool(HOSTS[0]).join(src.id.sandbox_id().as_str()).join("big.bin");
    // Random bytes, written on the host straight into the source volume.
    let status = Command::new("dd").arg("if=/dev/urandom").arg(format!("of={}", src_file.display())).args(["bs=1M", &format!("count={mib}"), "status=none"]).status()?;
    if !status.success() {
        bail!("cannot write {}", src_file.display());
    }
    let bytes = std::fs::metadata(&src_file)?.len();

    let t = Instant::now();
    let end = |i: &str, p: &str| -> Result<CopyEnd> { Ok(CopyEnd { tenant: tenant.parse()?, instance: i.parse()?, path: p.into() }) };
    let done = c.files_copy(&CopyRequest { from: end("cpsrc", "/home/big.bin")?, to: end("cpdst", "/home/")?, recursive: false }).await?;
    let hangar_secs = t.elapsed().as_secs_f64();
    if done.written.bytes != bytes {
        bail!("hangar cp wrote {} bytes of {bytes}", done.written.bytes);
    }
    let dst_file = pool(HOSTS[1]).join(dst.id.sandbox_id().as_str()).join("big.bin");
    same_bytes(&src_file, &dst_file)?;

    // Raw: the same bytes over plain TCP between the same two namespaces, into a file
    // in the target's pool.
    let raw_file = pool(HOSTS[1]).join("raw-copy.bin");
    let raw_secs = raw_stream(c, HOSTS, &format!("cat {}", src_file.display()), RawSink::File(&raw_file)).await?;
    same_bytes(&src_file, &raw_file)?;
    let _ = std::fs::remove_file(&raw_file);
    let ssh_secs = ssh_stream(c, HOSTS, &format!("cat {}", src_file.display()), RawSink::File(&raw_file), fleet.dir.path()).await?;
    same_bytes(&src_file, &raw_file)?;
    let _ = std::fs::remove_file(&raw_file);
    for i in ["cpsrc", "cpdst"] {
        let op = c.instance_delete(tenant, i).await?;
        c.operation_wait_final(op.id, Duration::from_secs(120)).await?;
    }
    Ok(CopyBench { bytes, hangar_secs, raw_secs, ssh_secs })
}

/// Where [`raw_stream`]'s receiver puts the bytes.
pub(crate) enum RawSink<'a> {
    File(&'a Path),
    /// A shell command reading them on its stdin.
    Command(String),
}

/// A stream's two ends: host `from`'s and host `to`'s network namespaces, and the
/// address `to` is reached at from `from`.
async fn stream_ends(c: &HubClient, [from, to]: [&str; 2]) -> Result<(String, String, std::net::Ipv4Addr)> {
    let b = c.host_get(to).await?;
    let addr = b.endpoint.as_deref().and_then(hangar_types::net::underlay_of).with_context(|| format!("host {to} has no routable endpoint"))?;
    Ok((netns_of(from)?, netns_of(to)?, addr))
}

/// The raw baseline of a host-to-host stream: `send` (a shell command writing the
/// stream on its stdout) run in host `from`'s namespace into plain TCP, received in
/// host `to`'s by one Python copy loop into `sink`; the seconds from the first byte
/// asked to the receiver's end.
pub(crate) async fn raw_stream(c: &HubClient, hosts: [&str; 2], send: &str, sink: RawSink<'_>) -> Result<f64> {
    let (ns_a, ns_b, addr) = stream_ends(c, hosts).await?;
    let port = crate::fleet::free_port()?;
    let (out, pipe) = match &sink {
        RawSink::File(p) => (format!("open(\"{}\",\"wb\")", p.display()), String::new()),
        RawSink::Command(cmd) => ("sys.stdout.buffer".to_string(), format!(" | {cmd}")),
    };
    // `ready` (on stderr: stdout may be the stream) comes out as the first line.
    let receiver = format!(
        "{{ python3 -c 'import socket,shutil,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"{addr}\", {port})); s.listen(1); print(\"ready\", file=sys.stderr, flush=True); c,_=s.accept(); f={out}; shutil.copyfileobj(c.makefile(\"rb\"), f, 1<<20); f.close()'{pipe}; }} 2>&1 >/dev/null"
    );
    let mut rx = listening(&ns_b, &receiver)?;
    let t = Instant::now();
    let sent = sh(&ns_a, &format!("{send} > /dev/tcp/{addr}/{port}")).status()?;
    let got = rx.wait()?;
    let secs = t.elapsed().as_secs_f64();
    if !sent.success() || !got.success() {
        bail!("the raw stream failed: sender {sent}, receiver {got}");
    }
    Ok(secs)
}

/// The peer a user would pick for a host-to-host stream: `send` run in host `from`'s
/// namespace piped into OpenSSH (`ssh`, AES-128-GCM, its fastest cipher with AES-NI) to
/// a throwaway sshd in host `to`'s namespace, which writes into `sink`; the seconds from
/// the first byte asked to the end. Encrypted and authenticated like hangar's transfers,
/// so it prices that work on this machine.
pub(crate) async fn ssh_stream(c: &HubClient, hosts: [&str; 2], send: &str, sink: RawSink<'_>, dir: &Path) -> Result<f64> {
    let (ns_a, ns_b, addr) = stream_ends(c, hosts).await?;
    let dir = tempfile::tempdir_in(dir)?;
    let key = dir.path().join("id_peer");
    let public = crate::bench_ssh::keygen(&key)?;
    let port = crate::fleet::free_port()?;
    let (_sshd, known) = crate::bench_ssh::start_sshd_at(dir.path(), &public, &addr.to_string(), port, Some(&ns_b))?;
    let remote = match &sink {
        RawSink::File(p) => format!("cat > {}", p.display()),
        RawSink::Command(cmd) => cmd.clone(),
    };
    // SHLVL=1: Debian's bash sources root's ~/.bashrc for commands sshd starts at
    // level 1, which is the machine owner's, not ssh's, cost (see bench_ssh).
    let ssh = format!(
        "ssh -p {port} -i {} -c aes128-gcm@openssh.com -o SetEnv=SHLVL=1 -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -o UserKnownHostsFile={} root@{addr} '{remote}'",
        key.display(),
        known.display()
    );
    let t = Instant::now();
    let o = sh(&ns_a, &format!("set -o pipefail; {send} | {ssh}")).output()?;
    let secs = t.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!("the ssh stream failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(secs)
}

pub(crate) fn same_bytes(a: &Path, b: &Path) -> Result<()> {
    let sum = |p: &PathBuf| -> Result<String> {
        let o = Command::new("sha256sum").arg(p).output()?;
        Ok(String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or_default().to_string())
    };
    let (x, y) = (sum(&a.to_path_buf())?, sum(&b.to_path_buf())?);
    if x.is_empty() || x != y {
        bail!("{} and {} differ", a.display(), b.display());
    }
    Ok(())
}
