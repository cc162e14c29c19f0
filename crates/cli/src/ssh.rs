//! `ssh-key`, `ssh known-hosts` and `instance ssh`: the SSH gateway from the CLI. Login
//! runs the system's OpenSSH client with the gateway's user, port and host key (a
//! known_hosts file written from the hub's answer, so no trust-on-first-use prompt).

use crate::args::{parse_name, SshKeyCmd};
use crate::output::Out;
use anyhow::{bail, Context, Result};
use hangar_client::HubClient;
use hangar_types::api::{SshGateway, SshKeyAdd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub async fn key_cmd(c: &HubClient, cmd: &SshKeyCmd, out: &Out) -> Result<()> {
    match cmd {
        SshKeyCmd::Add { tenant, file, name } => {
            let tenant = parse_name("--tenant", tenant)?;
            let public_key = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(file).with_context(|| format!("cannot read {}: give the public key file (e.g. ~/.ssh/id_ed25519.pub)", file.display()))?
            };
            let k = c.ssh_key_add(tenant.as_str(), &SshKeyAdd { public_key, name: name.clone() }).await?;
            out.item(&k, &format!("ssh key '{}' added to tenant '{}' ({} {})", k.name, k.tenant, k.algorithm, k.fingerprint));
        }
        SshKeyCmd::List { tenant } => {
            let keys = c.ssh_key_list(parse_name("--tenant", tenant)?.as_str()).await?;
            let text = keys.iter().map(|k| format!("{}\t{}\t{}\t{}", k.name, k.algorithm, k.fingerprint, k.comment)).collect::<Vec<_>>().join("\n");
            out.item(&keys, if keys.is_empty() { "no ssh keys" } else { &text });
        }
        SshKeyCmd::Remove { tenant, name } => {
            let k = c.ssh_key_remove(parse_name("--tenant", tenant)?.as_str(), parse_name("name", name)?.as_str()).await?;
            out.item(&k, &format!("ssh key '{}' removed", k.name));
        }
    }
    Ok(())
}

/// The hub's host name or address, as in its URL.
fn hub_host(c: &HubClient) -> String {
    let rest = c.base_url().split_once("://").map(|(_, r)| r).unwrap_or(c.base_url());
    let authority = rest.split('/').next().unwrap_or_default();
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default().to_string();
    }
    authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority).to_string()
}

/// The gateway's port and known_hosts line, or why there is none.
async fn gateway(c: &HubClient) -> Result<(SshGateway, u16, String)> {
    let g = c.ssh_gateway().await?;
    let (Some(port), Some(key), true) = (g.port, g.host_key.clone(), g.enabled) else {
        bail!("the hub runs no SSH gateway: start it with `hangar hub serve --ssh-listen ADDR:PORT` (or its default port 2222 was taken)");
    };
    let host = hub_host(c);
    let line = if port == 22 { format!("{host} {key}") } else { format!("[{host}]:{port} {key}") };
    Ok((g, port, line))
}

pub async fn known_hosts(c: &HubClient, out: &Out) -> Result<()> {
    let (g, _, line) = gateway(c).await?;
    out.item(&serde_json::json!({"line": line, "gateway": g}), &line);
    Ok(())
}

/// A known_hosts file holding only the gateway's line, removed when dropped.
struct KnownHosts(PathBuf);

impl KnownHosts {
    fn write(line: &str) -> Result<KnownHosts> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!("hangar-known-hosts-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(f, "{line}")?;
        Ok(KnownHosts(path))
    }
}

impl Drop for KnownHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The `ssh` command line for `tenant.instance` through the gateway.
fn ssh_command(host: &str, port: u16, known: &Path, identity: Option<&Path>, user: &str) -> Command {
    let mut ssh = Command::new("ssh");
    ssh.arg("-p").arg(port.to_string());
    ssh.arg("-o").arg(format!("UserKnownHostsFile={}", known.display()));
    ssh.args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"]);
    if let Some(i) = identity {
        ssh.arg("-i").arg(i).args(["-o", "IdentitiesOnly=yes"]);
    }
    ssh.arg(format!("{user}@{host}"));
    ssh
}

pub async fn instance_ssh(c: &HubClient, tenant: &str, name: &str, check: bool, identity: Option<&Path>, command: &[String]) -> Result<i32> {
    let (_, port, line) = gateway(c).await?;
    let host = hub_host(c);
    let known = KnownHosts::write(&line)?;
    let user = format!("{tenant}.{name}");
    if !check {
        let mut ssh = ssh_command(&host, port, &known.0, identity, &user);
        if !command.is_empty() {
            ssh.arg("--").args(command);
        }
        let status = ssh.status().context("cannot run ssh: install an OpenSSH client (Debian: openssh-client)")?;
        return Ok(status.code().unwrap_or(255));
    }
    match check_way_in(c, tenant, name, &host, port, &known.0, identity, &user).await {
        Ok(()) => {
            println!("ok: ssh -p {port} {user}@{host} reaches {tenant}/{name}");
            Ok(0)
        }
        Err(reason) => {
            eprintln!("ssh to {tenant}/{name} does not work: {reason:#}");
            Ok(1)
        }
    }
}

/// Each step of the way in, cheapest first; the first that fails is the reason.
#[allow(clippy::too_many_arguments)]
async fn check_way_in(c: &HubClient, tenant: &str, name: &str, host: &str, port: u16, known: &Path, identity: Option<&Path>, user: &str) -> Result<()> {
    let addr = format!("{}:{port}", if host.contains(':') { format!("[{host}]") } else { host.to_string() });
    match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => bail!("the gateway is down: cannot connect to {addr}: {e}"),
        Err(_) => bail!("the gateway is down: no answer from {addr} within 5s"),
    }
    let inst = c.instance_get(tenant, name).await?;
    if inst.state != hangar_types::InstanceState::Running || inst.observed != hangar_types::ObservedState::Running {
        bail!("the instance is not running (it is {}, observed {}): start it with `hangar instance start {tenant}/{name}`", inst.state, inst.observed);
    }
    if c.ssh_key_list(tenant).await?.is_empty() {
        bail!("no SSH key is registered for tenant '{tenant}': add one with `hangar ssh-key add --tenant {tenant} ~/.ssh/id_ed25519.pub`");
    }
    let out = ssh_command(host, port, known, identity, user)
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-T", "--", "true"])
        .output()
        .context("cannot run ssh: install an OpenSSH client (Debian: openssh-client)")?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Permission denied") {
        bail!("the gateway refused your key: none of the keys ssh offered (~/.ssh/id_*, ssh-agent, -i) is registered for tenant '{tenant}' (see `hangar ssh-key list --tenant {tenant}`)");
    }
    if stderr.contains("Host key verification failed") {
        bail!("the gateway's host key is not the one the hub reports: something else answers on port {port}");
    }
    bail!("ssh failed ({}): {}", out.status, stderr.trim())
}
