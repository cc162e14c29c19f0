//! Tenants: create, list, info with quota usage, destroy (of an empty tenant at once;
//! `--force` as a tracked, resumable operation).

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::{Hub, LockKey};
use hangar_store::InstanceFilter;
use hangar_types::api::{Operation, OperationProgress, OperationStatus, Tenant, TenantCreate, TenantInfo, Usage};
use hangar_types::{quota, ErrorCode, InstanceId, Name, OperationId, TenantId};
use std::sync::Arc;
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

    /// The tenant and its usage. One that a `destroy --force` is emptying is gone to its
    /// readers at once (404 naming the operation that is removing it), as a DELETE
    /// answered 202 promises; its progress is the operation's.
    pub async fn tenant_info(&self, p: &Principal, tenant: &Name) -> HubResult<TenantInfo> {
        let t = self.tenant_get(p, tenant).await?;
        if let Some(op) = self.store.tenant_destroy_of(&t.name).await? {
            return Err(HubError::not_found(format!("tenant '{}' is being destroyed (operation {op})", t.name)));
        }
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

    /// The tenant `expected` as it stands under its lock, for a create that the caller
    /// decided on before taking the lock: gone or replaced (a destroy came first) is
    /// 404, and a tenant a `destroy --force` is emptying takes nothing new (409), or the
    /// destroy would wait for the newcomer forever. The caller holds the tenant lock.
    pub(crate) async fn tenant_for_create(&self, p: &Principal, expected: &Tenant) -> HubResult<Tenant> {
        let t = self.tenant_get(p, &expected.name).await.ok().filter(|now| now.id == expected.id).ok_or_else(|| HubError::not_found(format!("tenant '{}' not found", expected.name)))?;
        if let Some(op) = self.store.tenant_destroy_of(&t.name).await? {
            return Err(HubError::new(ErrorCode::IllegalTransition, format!("tenant '{}' is being destroyed (operation {op}): nothing new can be created in it", t.name)));
        }
        Ok(t)
    }

    /// `tenant destroy --force`, as one operation (`tenant.destroy`, answered at once):
    /// the tenant is marked with it in the store first, then
    /// [`Hub::tenant_destroy_steps`] runs in the background. A destroy asked while one
    /// is under way answers that one's operation.
    pub async fn tenant_destroy_force(self: &Arc<Self>, p: &Principal, tenant: &Name) -> HubResult<Operation> {
        p.require_admin()?;
        let _g = self.lock(LockKey::Tenant(tenant.clone())).await;
        let t = self.tenant_get(p, tenant).await?;
        let op = Operation { progress: Some(self.destroy_progress(&t.name, None).await?), ..Operation::running("tenant.destroy", Some(t.name.clone()), t.name.to_string()) };
        self.store.insert_operation(&op).await?;
        let marked = self.store.mark_tenant_destroy(&t.name, op.id).await?.ok_or_else(|| HubError::not_found(format!("tenant '{}' not found", t.name)))?;
        if marked != op.id {
            self.store.finish_operation(op.id, OperationStatus::Cancelled, Some("another destroy of this tenant is under way")).await?;
            return self.store.get_operation(marked).await?.ok_or_else(|| HubError::internal(format!("tenant '{}' is marked by a missing operation {marked}", t.name)));
        }
        crate::failpoint::hit("tenant.destroy.accepted");
        self.event(&p.actor(), Some(&t.name), format!("tenant/{}", t.name), "tenant.destroy", "accepted", Some(format!("operation {}", op.id))).await;
        tokio::spawn(self.clone().tenant_destroy_run(op.id, t.name.clone()));
        Ok(op)
    }

    /// Resumes, at start, every destroy a previous run of a hub left marked, and settles
    /// the operations of destroys that ended (the tenant row gone) just before a crash.
    pub async fn resume_tenant_destroys(self: &Arc<Self>) -> HubResult<()> {
        let marked = self.store.tenant_destroys().await?;
        for op in self.store.running_operations(None).await?.into_iter().filter(|o| o.kind == "tenant.destroy") {
            if !marked.iter().any(|(_, id)| *id == op.id) {
                self.store.finish_operation(op.id, OperationStatus::Succeeded, None).await?;
            }
        }
        for (tenant, op) in marked {
            tokio::spawn(self.clone().tenant_destroy_run(op, tenant));
        }
        Ok(())
    }

    /// Runs the steps until they finish; a failed step is tried again (its host may be
    /// back), with the error in the log.
    async fn tenant_destroy_run(self: Arc<Self>, op: OperationId, tenant: Name) {
        loop {
            match self.tenant_destroy_steps(op, &tenant).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e.0.message, "tenant destroy: a step failed; trying again");
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
            }
        }
        if let Err(e) = self.store.finish_operation(op, OperationStatus::Succeeded, None).await {
            tracing::warn!(tenant = %tenant, error = %e, "tenant destroy: cannot finish its operation");
        }
        self.op_waiters.wake(op);
        self.coord.notifier.operations_changed();
    }

    /// The steps of a destroy, each safe to run again after a crash (a failpoint after
    /// each): delete the pools, then the instances, through the user paths; wait for the
    /// agents to confirm every instance gone (sandboxes, volumes, addresses; a host's
    /// tenant network goes with its last instance), counting progress; then the tenant
    /// row, its tokens and its mark, in one store write.
    async fn tenant_destroy_steps(&self, op: OperationId, tenant: &Name) -> HubResult<()> {
        let p = &Principal::Admin;
        if self.store.get_tenant(tenant).await?.is_none() {
            return Ok(());
        }
        for pool in self.store.list_pools(Some(tenant)).await? {
            match self.pool_delete(p, tenant, &pool.name).await {
                Ok(_) => {}
                Err(e) if e.0.code == ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        crate::failpoint::hit("tenant.destroy.after-pools");
        for i in self.store.list_instances(&InstanceFilter::tenant(tenant)).await? {
            if i.state != hangar_types::InstanceState::Deleted {
                match self.instance_request(p, tenant, &i.name, hangar_types::Transition::Delete).await {
                    // Gone meanwhile, or already being deleted: either way on its way out.
                    Ok(_) => {}
                    Err(e) if matches!(e.0.code, ErrorCode::NotFound | ErrorCode::IllegalTransition | ErrorCode::Conflict) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        crate::failpoint::hit("tenant.destroy.after-instances");
        let mut last = None;
        loop {
            let progress = self.destroy_progress(tenant, Some(op)).await?;
            if last.as_ref() != Some(&progress) {
                self.store.set_operation_progress(op, &progress).await?;
                self.op_waiters.wake(op);
                last = Some(progress);
            }
            if self.store.list_instances(&InstanceFilter::tenant(tenant)).await?.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        crate::failpoint::hit("tenant.destroy.before-row");
        match self.tenant_destroy(p, tenant).await {
            Ok(_) => Ok(()),
            Err(e) if e.0.code == ErrorCode::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Pools and instances removed of those the tenant had when the destroy began (the
    /// operation's first count, kept across restarts).
    async fn destroy_progress(&self, tenant: &Name, op: Option<OperationId>) -> HubResult<OperationProgress> {
        let left = (self.store.list_pools(Some(tenant)).await?.len() + self.store.list_instances(&InstanceFilter::tenant(tenant)).await?.len()) as u32;
        let total = match op {
            Some(id) => self.store.get_operation(id).await?.and_then(|o| o.progress).map(|p| p.total).unwrap_or(left).max(left),
            None => left,
        };
        Ok(OperationProgress { done: total - left, total, what: "pools and instances removed".into() })
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
