//! `hangar bench --only ssh`: an SSH session's setup to its first byte of output through
//! the gateway (key exchange, public-key auth, a hub session to the agent, `runc exec`
//! in the sandbox), next to OpenSSH's own sshd on loopback (started here with a
//! throwaway config and host key, running the same command on the host) in the same run.

use crate::fleet::{free_port, Fleet};
use anyhow::{bail, Context, Result};
use hangar_client::HubClient;
use hangar_types::api::SshKeyAdd;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// p50 and p90 (ms) of setup-to-first-byte: through the gateway, and straight to sshd.
pub struct SshBench {
    pub gateway: Vec<f64>,
    pub sshd: Vec<f64>,
}

/// sshd, killed when dropped.
pub(crate) struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn keygen(path: &Path) -> Result<String> {
    let o = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(path).output().context("ssh-keygen (openssh-client)")?;
    if !o.status.success() {
        bail!("ssh-keygen: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(std::fs::read_to_string(path.with_extension("pub"))?)
}

/// `ssh ... user@127.0.0.1 -- echo x` against `port`, trusting only `known`, with the same
/// key exchange either way.
fn ssh(port: u16, key: &Path, known: &Path, user: &str) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-p", &port.to_string(), "-i"]).arg(key);
    // One key exchange for both: OpenSSH 9 would pick sntrup761x25519 with its own sshd
    // (about 0.14 s of client CPU here), which russh 0.65 does not offer.
    c.args(["-o", "KexAlgorithms=curve25519-sha256"]);
    c.args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null", "-o"]);
    c.arg(format!("UserKnownHostsFile={}", known.display()));
    c.arg(format!("{user}@127.0.0.1")).args(["--", "echo", "x"]);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// The same session to sshd, as root. Debian's bash sources ~/.bashrc when sshd starts
/// it at shell level 1 (SSH_SOURCE_BASHRC), and root's rc file on a build machine is
/// whatever its owner put there (pyenv: a third of a second here), which is not sshd's
/// cost: sending SHLVL=1 (accepted by the throwaway config) makes it level 2.
fn to_sshd(port: u16, key: &Path, known: &Path) -> Command {
    let mut c = ssh(port, key, known, "root");
    let args: Vec<std::ffi::OsString> = c.get_args().map(|a| a.to_os_string()).collect();
    let mut c2 = Command::new("ssh");
    c2.args(["-o", "SetEnv=SHLVL=1"]).args(args);
    c2.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let _ = &mut c;
    c2
}

/// Time from starting `c` to its first byte of output; the run must print `x` and succeed.
fn first_byte(mut c: Command) -> Result<f64> {
    let t = Instant::now();
    let mut child = c.spawn().context("ssh (openssh-client)")?;
    let mut out = child.stdout.take().expect("piped");
    let mut b = [0u8; 1];
    let n = out.read(&mut b)?;
    let took = t.elapsed();
    let mut rest = Vec::new();
    out.read_to_end(&mut rest)?;
    let o = child.wait_with_output()?;
    if n != 1 || b[0] != b'x' || !o.status.success() {
        bail!("ssh printed {:?} and ended {}: {}", String::from_utf8_lossy(&[&b[..n], &rest[..]].concat()), o.status, String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(took.as_secs_f64() * 1000.0)
}

/// Starts sshd on a free loopback port, root logging in with `public`; its port.
fn start_sshd(dir: &Path, public: &str) -> Result<(Sshd, u16, PathBuf)> {
    let port = free_port()?;
    let (sshd, known) = start_sshd_at(dir, public, "127.0.0.1", port, None)?;
    Ok((sshd, port, known))
}

/// Starts sshd on `addr:port` (in network namespace `netns`, when given) with a throwaway
/// config and host key in `dir`, root logging in with `public`; the sshd and a
/// known_hosts file naming its key.
pub(crate) fn start_sshd_at(dir: &Path, public: &str, addr: &str, port: u16, netns: Option<&str>) -> Result<(Sshd, PathBuf)> {
    let host_key = dir.join("sshd_host_key");
    let host_public = keygen(&host_key)?;
    let authorized = dir.join("authorized_keys");
    std::fs::write(&authorized, public)?;
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress {addr}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\nUsePAM no\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nPrintMotd no\nAcceptEnv SHLVL\n",
            host_key.display(),
            authorized.display()
        ),
    )?;
    // sshd's privilege separation needs this directory (the ssh service makes it).
    std::fs::create_dir_all("/run/sshd")?;
    let mut cmd = match netns {
        // `ip netns exec` execs sshd in place: killing the child kills sshd.
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "/usr/sbin/sshd"]);
            c
        }
        None => Command::new("/usr/sbin/sshd"),
    };
    let child = cmd
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log"))?)
        .spawn()
        .context("cannot start /usr/sbin/sshd: install openssh-server")?;
    let sshd = Sshd(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect((addr, port)).is_err() {
        if Instant::now() > deadline {
            bail!("sshd did not listen on {addr}:{port}: {}", std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let known = dir.join("known_hosts_sshd");
    std::fs::write(&known, format!("[{addr}]:{port} {}", host_public.split_whitespace().take(2).collect::<Vec<_>>().join(" ")))?;
    Ok((sshd, known))
}

/// `runs` sessions each way, alternating, on `tenant/name` (running).
pub async fn run(c: &HubClient, fleet: &Fleet, tenant: &str, name: &str, runs: usize) -> Result<SshBench> {
    let dir = tempfile::tempdir_in(fleet.dir.path())?;
    let key = dir.path().join("id_bench");
    let public = keygen(&key)?;
    c.ssh_key_add(tenant, &SshKeyAdd { public_key: public.clone(), name: Some("bench".into()) }).await?;
    let g = c.ssh_gateway().await?;
    let (Some(port), Some(host_key)) = (g.port, g.host_key) else { bail!("the bench fleet's hub runs no SSH gateway") };
    let known = dir.path().join("known_hosts_gateway");
    std::fs::write(&known, format!("[127.0.0.1]:{port} {host_key}\n"))?;
    let (_sshd, sshd_port, sshd_known) = start_sshd(dir.path(), &public)?;
    let user = format!("{tenant}.{name}");
    let (mut gateway, mut sshd) = (vec![], vec![]);
    // One of each first, not counted: page cache, sshd's first fork.
    first_byte(ssh(port, &key, &known, &user))?;
    first_byte(to_sshd(sshd_port, &key, &sshd_known))?;
    for _ in 0..runs {
        gateway.push(first_byte(ssh(port, &key, &known, &user))?);
        sshd.push(first_byte(to_sshd(sshd_port, &key, &sshd_known))?);
    }
    Ok(SshBench { gateway, sshd })
}
