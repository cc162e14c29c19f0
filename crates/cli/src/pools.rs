//! `hangar pool ...`, `hangar new sandbox` and `hangar connect`: the pool commands and
//! the onboarding (`hangar_client::onboarding`) shown.

use crate::args::{parse_name, parse_ref, CountArgs, PoolCmd, PoolWait};
use crate::output::Out;
use anyhow::{bail, Result};
use hangar_client::onboarding::{self, wait_converged};
use hangar_client::HubClient;
use hangar_types::api::*;
use std::time::Duration;

fn counts(c: &CountArgs) -> PoolScale {
    PoolScale { running: c.running, warm: c.warm, sleeping: c.sleeping }
}

async fn settle(c: &HubClient, out: &Out, info: PoolInfo, wait: &PoolWait) -> Result<i32> {
    if let Some(e) = &info.pool.last_error {
        // Partial progress is shown, not hidden: what was done, then why it stopped.
        out.pool(&info);
        bail!("pool {}/{}: {e}", info.pool.tenant, info.pool.name);
    }
    if wait.no_wait {
        out.pool(&info);
        return Ok(0);
    }
    let spinner = out.spinner(&format!("pool {}/{} converging", info.pool.tenant, info.pool.name));
    let r = wait_converged(c, info.pool.tenant.as_str(), info.pool.name.as_str(), Duration::from_secs(wait.timeout)).await;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let mut done = r?;
    done.actions = info.actions;
    out.pool(&done);
    Ok(0)
}

pub async fn pool_cmd(c: &HubClient, out: &Out, cmd: &PoolCmd) -> Result<i32> {
    match cmd {
        PoolCmd::Create { pool, role, spec, counts: cn, secrets, wait } => {
            let r = parse_ref("pool", pool)?;
            let mut spec = spec.spec()?;
            spec.secrets = crate::access::secret_names(secrets)?;
            let counts = PoolCounts { running: cn.running.unwrap_or(0), warm: cn.warm.unwrap_or(0), sleeping: cn.sleeping.unwrap_or(0) };
            let req = PoolCreate::new(r.name.clone(), parse_name("--role", role)?, spec, counts);
            let info = c.pool_create(r.tenant.as_str(), &req).await?;
            settle(c, out, info, wait).await
        }
        PoolCmd::Scale { pool, counts: cn, wait } => {
            let r = parse_ref("pool", pool)?;
            if cn.running.is_none() && cn.warm.is_none() && cn.sleeping.is_none() {
                bail!("give at least one of --running, --warm, --sleeping");
            }
            let info = c.pool_scale(r.tenant.as_str(), r.name.as_str(), &counts(cn)).await?;
            settle(c, out, info, wait).await
        }
        PoolCmd::Info { pool } => {
            let r = parse_ref("pool", pool)?;
            out.pool(&c.pool_info(r.tenant.as_str(), r.name.as_str()).await?);
            Ok(0)
        }
        PoolCmd::List { tenant } => {
            out.pools(&c.pool_list(tenant).await?);
            Ok(0)
        }
        PoolCmd::Delete { pool } => {
            let r = parse_ref("pool", pool)?;
            let info = c.pool_delete(r.tenant.as_str(), r.name.as_str()).await?;
            out.item(&info, &format!("pool {r} deleted ({} member(s) deleting)", info.actions.len()));
            Ok(0)
        }
    }
}

/// `hangar new sandbox NAME`: the sandbox made (or completed), its pools waited for
/// unless told not to, then the dashboard.
pub async fn new_sandbox(c: &HubClient, out: &Out, name: &str, workers: u32, warm: u32, wait: &PoolWait) -> Result<i32> {
    let tenant = parse_name("name", name)?;
    let pools = onboarding::new_sandbox(c, &tenant, workers, warm).await?;
    if !wait.no_wait {
        let spinner = out.spinner(&format!("sandbox {tenant}: building pools"));
        for p in &pools {
            wait_converged(c, tenant.as_str(), p.as_str(), Duration::from_secs(wait.timeout)).await?;
        }
        if let Some(s) = spinner {
            s.finish_and_clear();
        }
    }
    connect(c, out, tenant.as_str()).await
}

/// The dashboard of one tenant.
#[derive(serde::Serialize)]
struct Dashboard {
    tenant: Tenant,
    usage: Usage,
    network: Option<String>,
    gateway: Option<String>,
    pools: Vec<PoolInfo>,
    instances: Vec<Instance>,
    next: Vec<String>,
}

pub async fn connect(c: &HubClient, out: &Out, tenant: &str) -> Result<i32> {
    let info = c.tenant_info(tenant).await?;
    let pools = c.pool_list(tenant).await?;
    let instances = c.instance_list(Some(tenant)).await?;
    let prefix = info.tenant.net_prefix;
    let net = instances.iter().find_map(|i| i.address).map(|a| (format!("{}/{prefix}", hangar_types::net::subnet_of(a, prefix)), hangar_types::net::gateway_of(a, prefix).to_string()));
    let first = instances.iter().find(|i| i.state == hangar_types::InstanceState::Running).map(|i| i.name.to_string());
    let mut next = vec![];
    if let Some(f) = &first {
        next.push(format!("hangar instance exec {tenant}/{f} -- sh -c 'hostname; ip -4 addr show eth0'"));
    }
    if let Some(p) = pools.iter().find(|p| p.pool.role.as_str() == "worker").or(pools.first()) {
        next.push(format!("hangar pool scale {tenant}/{} --running {}", p.pool.name, p.pool.counts.running + 1));
        next.push(format!("hangar pool info {tenant}/{}", p.pool.name));
    }
    next.push(format!("hangar instance list --tenant {tenant}"));
    next.push(format!("hangar events {tenant}"));
    let d = Dashboard { tenant: info.tenant, usage: info.usage, network: net.as_ref().map(|n| n.0.clone()), gateway: net.map(|n| n.1), pools, instances, next };
    if out.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(0);
    }
    let u = &d.usage;
    let q = &d.tenant.quotas;
    println!("tenant {}", d.tenant.name);
    println!("  network  {} (gateway {}){}", d.network.as_deref().unwrap_or("-"), d.gateway.as_deref().unwrap_or("-"), if d.tenant.isolated { ", isolated" } else { "" });
    println!("  usage    {}/{} running, {}/{} instances, {}/{} vCPU, {}/{} MiB", u.running, q.max_running, u.instances, q.max_instances, u.vcpus, q.max_vcpus, u.mem_mib, q.max_mem_mib);
    println!();
    out.pools(&d.pools);
    println!();
    out.instances(&d.instances);
    println!();
    println!("next:");
    for n in &d.next {
        println!("  {n}");
    }
    Ok(0)
}
