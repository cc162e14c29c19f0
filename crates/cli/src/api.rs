//! The commands that are calls to the hub API: tenants, instances, hosts, tokens,
//! events and the network check.

use crate::args::*;
use crate::output::Out;
use anyhow::{bail, Result};
use hangar_client::HubClient;
use hangar_types::api::*;
use hangar_types::net::DEFAULT_NET_PREFIX;
use std::collections::BTreeMap;
use std::time::Duration;

/// The commands that are calls to the hub API.
pub async fn api(c: &HubClient, cmd: &Cmd, out: &Out) -> Result<i32> {
    let c = c.clone();
    match cmd {
        Cmd::SshKey(k) => crate::ssh::key_cmd(&c, k, out).await?,
        Cmd::Cp { recursive, src, dst } => return crate::copy::cp(&c, out, src, dst, *recursive).await,
        Cmd::Ssh(SshCmd::KnownHosts) => crate::ssh::known_hosts(&c, out).await?,
        Cmd::Tenant(TenantCmd::Create { name, max_vcpus, max_mem, max_running, max_instances, max_disk, isolated, net_prefix }) => {
            let req = TenantCreate {
                name: parse_name("tenant", name)?,
                quotas: Some(Quotas { max_vcpus: *max_vcpus, max_mem_mib: *max_mem, max_running: *max_running, max_instances: *max_instances, max_disk_gib: *max_disk }),
                isolated: *isolated,
                net_prefix: *net_prefix,
            };
            if let Some(p) = net_prefix {
                hangar_types::net::check_net_prefix(*p).map_err(|e| anyhow::anyhow!("--net-prefix: {e}"))?;
            }
            let t = c.tenant_create(&req).await?;
            let addresses = hangar_types::net::host_numbers(t.net_prefix).count();
            out.item(&t, &format!("tenant '{}' created (net id {}, a /{} subnet: {addresses} instance addresses)", t.name, t.net_id, t.net_prefix));
        }
        Cmd::Tenant(TenantCmd::List) => out.tenants(&c.tenant_list().await?),
        Cmd::Tenant(TenantCmd::Info { name }) => out.tenant_info(&c.tenant_info(name).await?),
        Cmd::Tenant(TenantCmd::Destroy { name, force: true, no_wait }) => {
            let op = c.tenant_destroy_start(name).await?;
            if *no_wait {
                out.item(&op, &format!("destroying tenant '{name}': operation {}", op.id));
            } else {
                let op = follow_progress(&c, out, op, Duration::from_secs(600)).await?;
                out.item(&op, &format!("tenant '{name}' destroyed with everything in it"));
            }
        }
        Cmd::Tenant(TenantCmd::Destroy { name, force: false, .. }) => {
            let t = c.tenant_destroy(name).await?;
            out.item(&t, &format!("tenant '{}' destroyed", t.name));
        }
        Cmd::Instance(ic) => return instance(&c, out, ic).await,
        Cmd::Secret(sc) => crate::access::secret_cmd(&c, out, sc).await?,
        Cmd::Backup(bc) => return crate::backups::backup_cmd(&c, out, bc).await,
        Cmd::Tenant(TenantCmd::Update { name, backup_target }) => return crate::backups::tenant_update(&c, out, name, backup_target.as_deref()).await,
        Cmd::Host(HostCmd::Add { name, provider: Some(p), ttl }) => {
            let r = c.host_add(&HostAdd { name: parse_name("host", name)?, provider: Some(p.clone()), join_ttl_secs: ttl.map(|t| t.as_secs()) }).await?;
            let host = wait_host_ready(&c, name, Duration::from_secs(120)).await?;
            out.item(&host, &format!("host '{}' made by provider {p} and ready", r.host.name));
        }
        Cmd::Host(HostCmd::Add { name, provider: None, ttl }) => {
            let r = c.host_add(&HostAdd { name: parse_name("host", name)?, provider: None, join_ttl_secs: ttl.map(|t| t.as_secs()) }).await?;
            out.item(&r, &format!(
                "host '{}' added. On that host run:\n  hangar agent join --hub {} --token {}\n  hangar agent run",
                r.host.name,
                c.base_url(),
                r.join_token
            ));
        }
        Cmd::Host(HostCmd::List) => out.hosts(&c.host_list().await?),
        Cmd::Host(HostCmd::Info { name }) => out.host(&c.host_get(name).await?),
        Cmd::Host(HostCmd::Status { name }) => out.node_status(&c.host_status(name).await?),
        Cmd::Host(HostCmd::Drain { name }) => {
            let h = c.host_action(name, "drain").await?;
            out.item(&h, &format!("host '{}' is draining: nothing new lands there; pools move their members off", h.name));
        }
        Cmd::Host(HostCmd::Evacuate { name, parallel, wait }) => return crate::moves::evacuate_cmd(&c, out, name, *parallel, *wait).await,
        Cmd::Host(HostCmd::Undrain { name }) => {
            let h = c.host_action(name, "undrain").await?;
            out.item(&h, &format!("host '{}' is {}", h.name, h.state.as_str()));
        }
        Cmd::Host(HostCmd::Stop { name }) => {
            let h = c.host_action(name, "stop").await?;
            out.item(&h, &format!("host '{}' stopped: its agent and instances are down; volumes, addresses and states are kept", h.name));
        }
        Cmd::Host(HostCmd::Start { name }) => {
            c.host_action(name, "start").await?;
            let h = wait_host_ready(&c, name, Duration::from_secs(120)).await?;
            out.item(&h, &format!("host '{}' is {}", h.name, h.state.as_str()));
        }
        Cmd::Host(HostCmd::RotateCert { name, no_wait }) => {
            let asked = c.host_action(name, "rotate-cert").await?;
            if *no_wait {
                out.item(&asked, &format!("host '{}': certificate rotation asked; its agent renews at once", asked.name));
            } else {
                let h = wait_cert_rotated(&c, &asked, Duration::from_secs(120)).await?;
                out.item(&h, &format!("host '{}' has a new certificate ({}); the old one is refused", h.name, h.cert_fingerprint.as_deref().unwrap_or("-")));
            }
        }
        Cmd::Host(HostCmd::Remove { name }) => {
            let h = c.host_remove(name).await?;
            out.item(&h, &format!("host '{}' removed", h.name));
        }
        Cmd::Agent(AgentCmd::Desired { host }) => {
            let d = c.host_desired(host).await?;
            println!("{}", serde_json::to_string_pretty(&d)?);
        }
        Cmd::Pool(pc) => return crate::pools::pool_cmd(&c, out, pc).await,
        Cmd::New(NewCmd::Sandbox { name, workers, warm, wait }) => return crate::pools::new_sandbox(&c, out, name, *workers, *warm, wait).await,
        Cmd::Connect { tenant } => return crate::pools::connect(&c, out, tenant).await,
        Cmd::Token(TokenCmd::Create { tenant, role, description, ttl }) => {
            let tenant = tenant.as_deref().map(|t| parse_name("tenant", t)).transpose()?;
            let t = c.token_create(&TokenCreate { tenant, role: *role, description: description.clone(), ttl_secs: ttl.map(|t| t.as_secs()) }).await?;
            out.item(&t, &t.token);
        }
        Cmd::Token(TokenCmd::List) => out.tokens(&c.token_list().await?),
        Cmd::Token(TokenCmd::Revoke { id }) => {
            let t = c.token_revoke(id).await?;
            out.item(&t, &format!("token '{}' revoked", t.id));
        }
        Cmd::Image(ImageCmd::Add { name, dir, tar }) => {
            let (kind, path) = match (dir, tar) {
                (Some(d), _) => (ImageKind::Dir, d),
                (None, Some(t)) => (ImageKind::Tar, t),
                (None, None) => bail!("give --dir PATH or --tar FILE"),
            };
            // The path as the hub and hosts will see it.
            let path = std::path::absolute(path)?.display().to_string();
            let i = c.image_add(&ImageCreate { name: parse_name("image", name)?, kind, path }).await?;
            out.item(&i, &format!("image '{}' registered ({} {}): instances use it with --image {}", i.name, i.kind.as_str(), i.path, i.name));
        }
        Cmd::Image(ImageCmd::List) => out.images(&c.image_list().await?),
        Cmd::Image(ImageCmd::Remove { name }) => {
            let i = c.image_remove(name).await?;
            out.item(&i, &format!("image '{}' removed", i.name));
        }
        Cmd::Snapshot(sc) => return crate::snapshots::snapshot_cmd(&c, out, sc).await,
        Cmd::Events { tenant, last } => out.events(&c.events(tenant.as_deref(), *last).await?),
        Cmd::Net(NetCmd::Verify) => {
            let r = c.net_verify().await?;
            out.net_verify(&r);
            return Ok(if r.ok { 0 } else { 1 });
        }
        _ => unreachable!("local commands are handled in main.rs"),
    }
    Ok(0)
}

async fn instance(c: &HubClient, out: &Out, cmd: &InstanceCmd) -> Result<i32> {
    match cmd {
        InstanceCmd::Create { instance, spec, start, host, secrets, wait } => {
            let r = parse_ref("instance", instance)?;
            let mut spec = spec.spec()?;
            spec.secrets = crate::access::secret_names(secrets)?;
            let mut req = InstanceCreate::new(r.name.clone(), spec, *start);
            req.host = host.as_deref().map(|h| parse_name("--host", h)).transpose()?;
            let op = c.instance_create(r.tenant.as_str(), &req).await?;
            finish(c, out, op, wait, |_| format!("{r} {}", if *start { "running" } else { "created" })).await?;
        }
        InstanceCmd::Start { instance, wait } => action(c, out, instance, "start", wait).await?,
        InstanceCmd::Stop { instance, wait } => action(c, out, instance, "stop", wait).await?,
        InstanceCmd::Update { instance, snapshot_schedule } => return crate::snapshots::instance_update(c, out, instance, snapshot_schedule.as_deref()).await,
        InstanceCmd::Warm { instance, wait } => action(c, out, instance, "warm", wait).await?,
        InstanceCmd::Resume { instance, wait } => action(c, out, instance, "resume", wait).await?,
        InstanceCmd::Delete { instance, hard, wait } => {
            let r = parse_ref("instance", instance)?;
            if *hard {
                crate::backups::schedule_purge(c, out, &r).await?;
            }
            let op = c.instance_delete(r.tenant.as_str(), r.name.as_str()).await?;
            finish(c, out, op, wait, |_| format!("{r} deleted")).await?;
        }
        InstanceCmd::Ssh { instance, check, identity, command } => {
            let r = parse_ref("instance", instance)?;
            return crate::ssh::instance_ssh(c, r.tenant.as_str(), r.name.as_str(), *check, identity.as_deref(), command).await;
        }
        InstanceCmd::Exec { instance, interactive, tty, command, .. } if *interactive || *tty => {
            let r = parse_ref("instance", instance)?;
            return crate::sessions::exec(c, r.tenant.as_str(), r.name.as_str(), command, *interactive, *tty).await;
        }
        InstanceCmd::Exec { instance, timeout, command, .. } => {
            let r = parse_ref("instance", instance)?;
            let res = c.instance_exec(r.tenant.as_str(), r.name.as_str(), &ExecRequest { command: command.clone(), env: BTreeMap::new(), timeout_secs: Some(*timeout) }).await?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&res)?);
            } else {
                use std::io::Write;
                std::io::stdout().write_all(res.stdout.as_bytes())?;
                std::io::stderr().write_all(res.stderr.as_bytes())?;
            }
            return Ok(res.exit_code);
        }
        InstanceCmd::Logs { instance, tail, follow } => {
            let r = parse_ref("instance", instance)?;
            let l = c.instance_logs(r.tenant.as_str(), r.name.as_str(), *tail).await?;
            if !*follow {
                out.item(&l, &l.lines.join("\n"));
                return Ok(0);
            }
            // Long polls from the last answer's cursor; each answer is printed as it comes.
            let print = |l: &hangar_types::api::InstanceLogs| -> Result<()> {
                use std::io::Write;
                let mut o = std::io::stdout().lock();
                if out.json {
                    writeln!(o, "{}", serde_json::to_string(l)?)?;
                } else {
                    for line in &l.lines {
                        writeln!(o, "{line}")?;
                    }
                }
                Ok(o.flush()?)
            };
            print(&l)?;
            // No log yet: a cursor of no file, which the agent reads as "from the oldest
            // kept file on", so the first lines are not missed.
            let mut cursor = l.cursor.or_else(|| Some("0:0".to_string()));
            loop {
                let q = hangar_types::api::LogsQuery { after: cursor.clone(), wait: Some(25), ..Default::default() };
                let l = c.instance_logs_query(r.tenant.as_str(), r.name.as_str(), &q).await?;
                if !l.lines.is_empty() {
                    print(&l)?;
                }
                cursor = l.cursor.or(cursor);
            }
        }
        InstanceCmd::Move { instance, to, via, wait, keep_source } => return crate::moves::move_cmd(c, out, instance, to, *via, *wait, *keep_source).await,
        InstanceCmd::Stats { instance } => {
            let r = parse_ref("instance", instance)?;
            out.stats(&c.instance_stats(r.tenant.as_str(), r.name.as_str()).await?);
        }
        InstanceCmd::Info { instance } => {
            let r = parse_ref("instance", instance)?;
            let i = c.instance_get(r.tenant.as_str(), r.name.as_str()).await?;
            // The subnet's size is the tenant's: the gateway and bridge follow from it.
            let prefix = if out.json { DEFAULT_NET_PREFIX } else { c.tenant_info(r.tenant.as_str()).await.map(|t| t.tenant.net_prefix).unwrap_or(DEFAULT_NET_PREFIX) };
            out.instance(&i, prefix);
        }
        InstanceCmd::List { tenant, pool: None } => out.instances(&c.instance_list(tenant.as_deref()).await?),
        InstanceCmd::List { tenant: Some(t), pool: Some(p) } => out.instances(&c.pool_members(t, p).await?),
        InstanceCmd::List { tenant: None, pool: Some(_) } => bail!("--pool needs --tenant: pools are named per tenant"),
        InstanceCmd::Sleep { instance, wait } => action(c, out, instance, "sleep", wait).await?,
        InstanceCmd::ProxyToken { cmd, instance, port, ttl } => crate::access::proxy_token_cmd(c, out, cmd.as_ref(), instance.as_deref(), *port, ttl.as_deref()).await?,
        // Needs the hub's CA as well: main.rs runs it.
        InstanceCmd::Proxy { .. } => unreachable!("main.rs handles instance proxy"),
    }
    Ok(0)
}

async fn action(c: &HubClient, out: &Out, instance: &str, verb: &str, wait: &WaitArgs) -> Result<()> {
    let r = parse_ref("instance", instance)?;
    let op = c.instance_action(r.tenant.as_str(), r.name.as_str(), verb).await?;
    finish(c, out, op, wait, |_| String::new()).await?;
    if !wait.no_wait && !out.json {
        let i = c.instance_get(r.tenant.as_str(), r.name.as_str()).await?;
        println!("{r} {} on host {}", i.state, i.host.as_ref().map(|h| h.as_str()).unwrap_or("-"));
    }
    Ok(())
}

/// Waits for an operation unless told not to; fails if it did not succeed.
pub async fn finish(c: &HubClient, out: &Out, op: Operation, wait: &WaitArgs, done: impl FnOnce(&Operation) -> String) -> Result<Operation> {
    if wait.no_wait {
        out.item(&op, &format!("operation {} {} ({})", op.id, op.status.as_str(), op.kind));
        return Ok(op);
    }
    let spinner = out.spinner(&format!("{} {}", op.kind, op.target));
    let op = c.operation_wait_final(op.id, Duration::from_secs(wait.timeout)).await?;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    match op.status {
        OperationStatus::Succeeded => {
            out.item(&op, &done(&op));
            Ok(op)
        }
        OperationStatus::Running => bail!("{} {} is still running after {}s: follow it with the operation id {}", op.kind, op.target, wait.timeout, op.id),
        s => bail!("{} {} {}: {}", op.kind, op.target, s.as_str(), op.error.as_deref().unwrap_or("no reason given")),
    }
}

/// Waits until a host is ready (its agent reported in full).
/// Follows a multi-step operation to its end, printing its progress as it moves (to
/// stderr, so `--json` output stays one document); fails if it fails or outlasts
/// `timeout`.
async fn follow_progress(c: &HubClient, out: &Out, mut op: Operation, timeout: Duration) -> Result<Operation> {
    let deadline = std::time::Instant::now() + timeout;
    let mut shown = None;
    loop {
        if let Some(p) = op.progress.as_ref().filter(|p| !out.json && shown.as_ref() != Some(*p)) {
            eprintln!("{} {}: {}/{} {}", op.kind, op.target, p.done, p.total, p.what);
            shown = Some(p.clone());
        }
        match op.status {
            OperationStatus::Succeeded => return Ok(op),
            OperationStatus::Running if std::time::Instant::now() < deadline => {}
            OperationStatus::Running => bail!("{} {} still running after {}s (operation {}); it goes on: see `hangar events` and `hangar tenant info`", op.kind, op.target, timeout.as_secs(), op.id),
            s => bail!("{} {} {}: {}", op.kind, op.target, s.as_str(), op.error.as_deref().unwrap_or("no reason given")),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        op = c.operation_get(op.id).await?;
    }
}

/// Waits until a host presents a certificate other than the one `asked` had, with no
/// rotation pending.
async fn wait_cert_rotated(c: &HubClient, asked: &Host, timeout: Duration) -> Result<Host> {
    let deadline = std::time::Instant::now() + timeout;
    let name = asked.name.as_str();
    loop {
        let h = c.host_get(name).await?;
        if h.cert_fingerprint != asked.cert_fingerprint && !h.cert_rotation_pending {
            return Ok(h);
        }
        if std::time::Instant::now() > deadline {
            bail!("host '{name}' still uses its old certificate after {}s: is its agent running (`hangar host info {name}`, its agent.log)? The rotation stays asked", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_host_ready(c: &HubClient, name: &str, timeout: Duration) -> Result<Host> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let h = c.host_get(name).await?;
        if h.state == HostState::Ready {
            return Ok(h);
        }
        if std::time::Instant::now() > deadline {
            bail!("host '{name}' is still {} after {}s: see `hangar host info {name}` and its agent.log", h.state.as_str(), timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
