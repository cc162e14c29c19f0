//! Onboarding on top of the API: what a new sandbox is (`hangar new sandbox`), and
//! waiting until a pool converged.
//!
//! It lives here, beside the typed client, because it is nothing but API calls with the
//! product's defaults: the CLI, the harness and any later client (a console) make a
//! sandbox the same way, and none of them needs this machine's files or processes (the
//! node crate's) or the harness's scenarios for it.

use crate::{ClientError, HubClient};
use hangar_types::api::*;
use hangar_types::{ErrorCode, Name};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum OnboardingError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A pool of a sandbox could not be created or scaled.
    #[error("{role} pool: {error}")]
    Pool { role: String, error: ClientError },
    #[error("pool {tenant}/{pool} is stuck: no progress for {secs}s at running {running}/{desired}: {error}")]
    Stuck { tenant: String, pool: String, secs: u64, running: u32, desired: u32, error: String },
    #[error(
        "pool {tenant}/{pool} did not converge in {secs}s: running {}/{}, warm {}/{}, sleeping {}/{}, pending {}, failed {}{}",
        .actual.running, .desired.running, .actual.warm, .desired.warm, .actual.sleeping, .desired.sleeping, .actual.pending, .actual.failed,
        .last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    Timeout { tenant: String, pool: String, secs: u64, actual: PoolTally, desired: PoolCounts, last_error: Option<String> },
}

/// The pools of a sandbox: a gateway (one running) and `workers` running plus `warm`
/// frozen workers; small host-image members.
pub fn sandbox_pools(workers: u32, warm: u32) -> [PoolCreate; 2] {
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
        secrets: vec![],
    };
    [
        pool("gateway", "gateway", 128, PoolCounts { running: 1, warm: 0, sleeping: 0 }),
        pool("workers", "worker", 256, PoolCounts { running: workers, warm, sleeping: 0 }),
    ]
}

/// Makes the sandbox `tenant`: the tenant (default quotas) and its [`sandbox_pools`],
/// created or, when they exist, scaled to the counts. Re-running completes what is
/// missing. Returns the pools' names; it does not wait for them to converge.
pub async fn new_sandbox(c: &HubClient, tenant: &Name, workers: u32, warm: u32) -> Result<Vec<Name>, OnboardingError> {
    match c.tenant_create(&TenantCreate { name: tenant.clone(), quotas: None, isolated: false, net_prefix: None }).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => {}
        Err(e) => return Err(e.into()),
    }
    let mut names = vec![];
    for req in sandbox_pools(workers, warm) {
        match c.pool_create(tenant.as_str(), &req).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => {
                let scale = PoolScale { running: Some(req.counts.running), warm: Some(req.counts.warm), sleeping: Some(req.counts.sleeping) };
                c.pool_scale(tenant.as_str(), req.name.as_str(), &scale).await?;
            }
            Err(error) => return Err(OnboardingError::Pool { role: req.role.to_string(), error }),
        }
        names.push(req.name);
    }
    Ok(names)
}

/// Waits until the pool converged; fails naming what is missing (and the pool's last
/// error, e.g. a quota) when it does not in time.
pub async fn wait_converged(c: &HubClient, tenant: &str, pool: &str, timeout: Duration) -> Result<PoolInfo, OnboardingError> {
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
            return Err(OnboardingError::Stuck {
                tenant: tenant.into(),
                pool: pool.into(),
                secs: STUCK.as_secs(),
                running: a.running,
                desired: p.pool.counts.running,
                error: e.to_string(),
            });
        }
        if Instant::now() > deadline {
            return Err(OnboardingError::Timeout { tenant: tenant.into(), pool: pool.into(), secs: timeout.as_secs(), actual: a, desired: p.pool.counts, last_error: p.pool.last_error });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
