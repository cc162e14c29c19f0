//! Tenants: create, list, info with quota usage, destroy.

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::{Hub, LockKey};
use hangar_store::InstanceFilter;
use hangar_types::api::{Tenant, TenantCreate, TenantInfo, Usage};
use hangar_types::{quota, ErrorCode, InstanceId, Name, TenantId};
use time::OffsetDateTime;

impl Hub {
    pub async fn tenant_create(&self, p: &Principal, req: TenantCreate) -> HubResult<Tenant> {
        p.require_admin()?;
        let quotas = req.quotas.unwrap_or_default();
        if quotas.max_instances == 0 || quotas.max_vcpus == 0 || quotas.max_mem_mib == 0 || quotas.max_disk_gib == 0 {
            return Err(HubError::invalid("quotas must be positive: max_vcpus, max_mem_mib, max_instances and max_disk_gib must be at least 1"));
        }
        let m = hangar_types::api::Quotas::MAX;
        for (field, v, max) in [
            ("max_vcpus", quotas.max_vcpus as u64, m.max_vcpus as u64),
            ("max_mem_mib", quotas.max_mem_mib, m.max_mem_mib),
            ("max_running", quotas.max_running as u64, m.max_running as u64),
            ("max_instances", quotas.max_instances as u64, m.max_instances as u64),
            ("max_disk_gib", quotas.max_disk_gib, m.max_disk_gib),
        ] {
            if v > max {
                return Err(HubError::invalid(format!("quotas.{field}: at most {max}, got {v}")));
            }
        }
        let net_prefix = req.net_prefix.unwrap_or(hangar_types::net::DEFAULT_NET_PREFIX);
        hangar_types::net::check_net_prefix(net_prefix).map_err(HubError::invalid)?;
        let t = Tenant { id: TenantId::new(), name: req.name, quotas, net_id: 0, net_prefix, created_at: OffsetDateTime::now_utc(), isolated: req.isolated };
        let t = self.store.insert_tenant(&t, self.config.cluster_range.max_net_id()).await?;
        self.event(&p.actor(), Some(&t.name), format!("tenant/{}", t.name), "tenant.create", "ok", None).await;
        Ok(t)
    }

    pub async fn tenant_list(&self, p: &Principal) -> HubResult<Vec<Tenant>> {
        let all = self.store.list_tenants().await?;
        Ok(all.into_iter().filter(|t| p.check_tenant(&t.name).is_ok()).collect())
    }

    /// The tenant, if the caller may see it (others are not found, so names do not leak).
    pub async fn tenant_get(&self, p: &Principal, name: &Name) -> HubResult<Tenant> {
        p.check_tenant(name)?;
        self.store.get_tenant(name).await?.ok_or_else(|| HubError::not_found(format!("tenant '{name}' not found")))
    }

    pub async fn tenant_info(&self, p: &Principal, tenant: &Name) -> HubResult<TenantInfo> {
        let t = self.tenant_get(p, tenant).await?;
        let usage = self.usage(&t.name, None).await?;
        Ok(TenantInfo { tenant: t, usage })
    }

    pub async fn tenant_destroy(&self, p: &Principal, tenant: &Name) -> HubResult<Tenant> {
        p.require_admin()?;
        let _g = self.lock(LockKey::Tenant(tenant.clone())).await;
        // Read under the lock: a create (which also reads under it) cannot slip in between.
        let t = self.tenant_get(p, tenant).await?;
        let pools = self.store.list_pools(Some(&t.name)).await?.len();
        if pools > 0 {
            return Err(HubError::new(ErrorCode::IllegalTransition, format!("tenant '{}' still has {pools} pool(s): delete them first, or destroy with --force", t.name)));
        }
        let n = self.store.list_instances(&InstanceFilter::tenant(&t.name)).await?.len();
        if n > 0 {
            return Err(HubError::new(
                ErrorCode::IllegalTransition,
                format!("tenant '{}' still has {n} instance(s): delete them first, or destroy with --force", t.name),
            ));
        }
        // Its tokens go with it: forgotten before and after, so no lookup racing with
        // the delete can keep one alive.
        self.token_cache.invalidate();
        self.store.delete_tenant(&t.name).await?;
        self.token_cache.invalidate();
        self.event(&p.actor(), Some(&t.name), format!("tenant/{}", t.name), "tenant.destroy", "ok", None).await;
        Ok(t)
    }

    /// `tenant destroy --force`: deletes the tenant's pools and instances through the
    /// same paths as a user (pool delete, instance delete), waits up to `wait` for the
    /// agents to confirm every instance gone (sandboxes, volumes, addresses; a host's
    /// tenant network goes with its last instance), then destroys the tenant and its
    /// tokens. Progress is in the events (`tenant.destroy` with what is left). Run
    /// again if the wait ran out: what was done stays done.
    pub async fn tenant_destroy_force(&self, p: &Principal, tenant: &Name, wait: std::time::Duration) -> HubResult<Tenant> {
        p.require_admin()?;
        let t = self.tenant_get(p, tenant).await?;
        for pool in self.store.list_pools(Some(&t.name)).await? {
            self.pool_delete(p, &t.name, &pool.name).await?;
        }
        crate::failpoint::hit("tenant.destroy.after-pools");
        for i in self.store.list_instances(&InstanceFilter::tenant(&t.name)).await? {
            if i.state != hangar_types::InstanceState::Deleted {
                match self.instance_request(p, &t.name, &i.name, hangar_types::Transition::Delete).await {
                    // Gone meanwhile, or already being deleted: either way on its way out.
                    Ok(_) => {}
                    Err(e) if matches!(e.0.code, ErrorCode::NotFound | ErrorCode::IllegalTransition | ErrorCode::Conflict) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        crate::failpoint::hit("tenant.destroy.after-instances");
        self.event(&p.actor(), Some(&t.name), format!("tenant/{}", t.name), "tenant.destroy", "accepted", Some("deleting every pool and instance".into())).await;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = self.store.list_instances(&InstanceFilter::tenant(&t.name)).await?.len();
            if left == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HubError::new(
                    ErrorCode::Unavailable,
                    format!("tenant '{}': {left} instance(s) still being deleted (their hosts have not confirmed): run the destroy again", t.name),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        self.tenant_destroy(p, tenant).await
    }

    /// Refuses an instance or pool spec that alone passes a quota of the tenant's (it
    /// could never run), naming the quota.
    pub(crate) fn check_spec_fits(&self, t: &Tenant, spec: &hangar_types::api::InstanceSpec) -> HubResult<()> {
        let demand = quota::Demand { instances: 0, running: 0, ..quota::Demand::instance(spec, hangar_types::InstanceState::Running) };
        quota::check(&t.quotas, &Default::default(), &demand).map_err(|e| {
            HubError::new(ErrorCode::QuotaExceeded, format!("{}: one instance of this spec can never run", e.instance_message(t.name.as_str())))
        })
    }

    /// Current use of a tenant's quotas, leaving out one instance (the one being changed).
    pub(crate) async fn usage(&self, tenant: &Name, except: Option<InstanceId>) -> HubResult<Usage> {
        let list = self.store.list_instances(&InstanceFilter::tenant(tenant)).await?;
        // Snapshots count as disk by the bytes only they hold (see `snapshots`).
        Ok(quota::add_snapshots(quota::usage(list.iter().filter(|i| Some(i.id) != except)), self.snapshot_bytes(tenant).await?))
    }
}
