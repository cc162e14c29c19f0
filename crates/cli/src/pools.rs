//! `hangar pool ...`, `hangar new sandbox` and `hangar connect`: the pool commands and
//! the onboarding built on them.

use crate::output::Out;
use crate::{parse_name, CountArgs, PoolCmd, PoolWait};
use anyhow::{bail, Context, Result};
use hangar_client::HubClient;
use hangar_types::api::*;
use hangar_types::InstanceRef;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn parse_pool(s: &str) -> Result<InstanceRef> {
    s.parse::<InstanceRef>().map_err(|e| anyhow::anyhow!("pool: {e}"))
}

fn counts(c: &CountArgs) -> PoolScale {
    PoolScale { running: c.running, warm: c.warm, sleeping: c.sleeping }
}

/// Waits until the pool converged; fails naming what is missing (and the pool's last
/// error, e.g. a quota) when it does not in time.
pub async fn wait_converged(c: &HubClient, tenant: &str, pool: &str, timeout: Duration) -> Result<PoolInfo> {
    let deadline = Instant::now() + timeout;
    // A pool that reports an error and makes no progress for this long is stuck (no
    // capacity, a quota): say so instead of waiting out the whole timeout.
    const STUCK: Duration = Duration::from_secs(30);
    let mut last = (None, Instant::now());
    loop {
        let p = c.pool_info(tenant, pool).await?;
        if p.converged {
            return Ok(p);
        }
        let a = p.actual;
        let progress = Some((a.running, a.warm, a.sleeping, a.pending, a.failed));
        if progress != last.0 {
            last = (progress, Instant::now());
        }
        if let Some(e) = p.pool.last_error.as_deref().filter(|_| last.1.elapsed() > STUCK) {
            bail!("pool {tenant}/{pool} is stuck: no progress for {}s at running {}/{}: {e}", STUCK.as_secs(), a.running, p.pool.counts.running);
        }
        if Instant::now() > deadline {
            let a = p.actual;
            let d = p.pool.counts;
            bail!(
                "pool {tenant}/{pool} did not converge in {}s: running {}/{}, warm {}/{}, sleeping {}/{}, pending {}, failed {}{}",
                timeout.as_secs(),
                a.running,
                d.running,
                a.warm,
                d.warm,
                a.sleeping,
                d.sleeping,
                a.pending,
                a.failed,
                p.pool.last_error.map(|e| format!("; last error: {e}")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
        PoolCmd::Create { pool, role, image, cpus, mem, disk, env, counts: cn, wait, command } => {
            let r = parse_pool(pool)?;
            let image: ImageRef = image.parse().map_err(|e: String| anyhow::anyhow!("--image: {e}"))?;
            let mut envs = BTreeMap::new();
            for kv in env {
                let (k, v) = kv.split_once('=').with_context(|| format!("--env '{kv}': write it as KEY=VALUE"))?;
                envs.insert(k.to_string(), v.to_string());
            }
            let req = PoolCreate {
                name: r.name.clone(),
                role: parse_name("--role", role)?,
                image,
                vcpus: *cpus,
                mem_mib: *mem,
                disk_mib: *disk,
                command: command.clone(),
                env: envs,
                counts: PoolCounts { running: cn.running.unwrap_or(0), warm: cn.warm.unwrap_or(0), sleeping: cn.sleeping.unwrap_or(0) },
            };
            req.spec().validate().map_err(|e| anyhow::anyhow!("{}", crate::cli_field(&e)))?;
            let info = c.pool_create(r.tenant.as_str(), &req).await?;
            settle(c, out, info, wait).await
        }
        PoolCmd::Scale { pool, counts: cn, wait } => {
            let r = parse_pool(pool)?;
            if cn.running.is_none() && cn.warm.is_none() && cn.sleeping.is_none() {
                bail!("give at least one of --running, --warm, --sleeping");
            }
            let info = c.pool_scale(r.tenant.as_str(), r.name.as_str(), &counts(cn)).await?;
            settle(c, out, info, wait).await
        }
        PoolCmd::Info { pool } => {
            let r = parse_pool(pool)?;
            out.pool(&c.pool_info(r.tenant.as_str(), r.name.as_str()).await?);
            Ok(0)
        }
        PoolCmd::List { tenant } => {
            out.pools(&c.pool_list(tenant).await?);
            Ok(0)
        }
        PoolCmd::Delete { pool } => {
            let r = parse_pool(pool)?;
            let info = c.pool_delete(r.tenant.as_str(), r.name.as_str()).await?;
            out.item(&info, &format!("pool {r} deleted ({} member(s) deleting)", info.actions.len()));
            Ok(0)
        }
    }
}

/// `hangar new sandbox NAME`: a tenant, a gateway pool (1 running) and a worker pool,
/// created and scaled, then the dashboard. Re-running it completes what is missing.
pub async fn new_sandbox(c: &HubClient, out: &Out, name: &str, workers: u32, warm: u32, wait: &PoolWait) -> Result<i32> {
    let tenant = parse_name("name", name)?;
    match c.tenant_create(&TenantCreate { name: tenant.clone(), quotas: None, isolated: false, net_prefix: None }).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(hangar_types::ErrorCode::AlreadyExists) => {}
        Err(e) => return Err(e.into()),
    }
    let pool = |n: &str, role: &str, mem: u64, counts: PoolCounts| PoolCreate {
        name: n.parse().expect("fixed name"),
        role: role.parse().expect("fixed role"),
        image: ImageRef::Host,
        vcpus: 1,
        mem_mib: mem,
        disk_mib: 256,
        command: vec![],
        env: BTreeMap::new(),
        counts,
    };
    for (req, role) in [
        (pool("gateway", "gateway", 128, PoolCounts { running: 1, warm: 0, sleeping: 0 }), "gateway"),
        (pool("workers", "worker", 256, PoolCounts { running: workers, warm, sleeping: 0 }), "worker"),
    ] {
        match c.pool_create(tenant.as_str(), &req).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(hangar_types::ErrorCode::AlreadyExists) => {
                c.pool_scale(tenant.as_str(), req.name.as_str(), &PoolScale { running: Some(req.counts.running), warm: Some(req.counts.warm), sleeping: Some(req.counts.sleeping) }).await?;
            }
            Err(e) => return Err(anyhow::anyhow!("{role} pool: {e}")),
        }
    }
    if !wait.no_wait {
        let spinner = out.spinner(&format!("sandbox {tenant}: building pools"));
        for p in ["gateway", "workers"] {
            wait_converged(c, tenant.as_str(), p, Duration::from_secs(wait.timeout)).await?;
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
