//! Tenants, instances, operations, events, tokens and hosts as the user sees them.
//!
//! Every mutating call checks the caller's scope, validates, runs the state machine,
//! persists the new desired state, wakes the host, and leaves an event.

use crate::auth::{hash_secret, new_secret, Principal};
use crate::error::{HubError, HubResult};
use crate::Hub;
use hangar_client::AgentClient;
use hangar_store::{HostRecord, InstanceFilter, TokenRecord};
use hangar_types::api::*;
use hangar_types::state::transition;
use hangar_types::{ErrorCode, InstanceId, InstanceState, Name, ObservedState, OperationId, TenantId, Transition};
use std::time::Duration;
use time::OffsetDateTime;

/// The observed state that confirms an instance reached `state`.
pub fn confirming_observation(state: InstanceState) -> Option<ObservedState> {
    match state {
        InstanceState::Created | InstanceState::Stopped | InstanceState::Sleeping => Some(ObservedState::Stopped),
        InstanceState::Running => Some(ObservedState::Running),
        InstanceState::Warm => Some(ObservedState::Warm),
        _ => None,
    }
}

fn parse_name(what: &str, s: &str) -> HubResult<Name> {
    s.parse::<Name>().map_err(|e| HubError::invalid(format!("{what}: {e}")))
}

impl Hub {
    // ---------------------------------------------------------------- tenants

    pub async fn tenant_create(&self, p: &Principal, req: TenantCreate) -> HubResult<Tenant> {
        p.require_admin()?;
        let quotas = req.quotas.unwrap_or_default();
        if quotas.max_instances == 0 || quotas.max_vcpus == 0 || quotas.max_mem_mib == 0 || quotas.max_disk_gib == 0 {
            return Err(HubError::invalid("quotas must be positive: max_vcpus, max_mem_mib, max_instances and max_disk_gib must be at least 1"));
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

    pub(crate) async fn tenant_get(&self, p: &Principal, tenant: &str) -> HubResult<Tenant> {
        let name = parse_name("tenant", tenant)?;
        p.check_tenant(&name)?;
        self.store.get_tenant(&name).await?.ok_or_else(|| HubError::not_found(format!("tenant '{name}' not found")))
    }

    pub async fn tenant_info(&self, p: &Principal, tenant: &str) -> HubResult<TenantInfo> {
        let t = self.tenant_get(p, tenant).await?;
        let usage = self.usage(&t.name, None).await?;
        Ok(TenantInfo { tenant: t, usage })
    }

    pub async fn tenant_destroy(&self, p: &Principal, tenant: &str) -> HubResult<Tenant> {
        p.require_admin()?;
        let t = self.tenant_get(p, tenant).await?;
        let _g = self.tenant_lock(&t.name).lock_owned().await;
        let pools = self.store.list_pools(Some(&t.name)).await?.len();
        if pools > 0 {
            return Err(HubError::new(ErrorCode::IllegalTransition, format!("tenant '{}' still has {pools} pool(s): delete them first", t.name)));
        }
        let n = self.store.list_instances(&InstanceFilter::tenant(&t.name)).await?.len();
        if n > 0 {
            return Err(HubError::new(
                ErrorCode::IllegalTransition,
                format!("tenant '{}' still has {n} instance(s): delete them first", t.name),
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

    /// Current use of a tenant's quotas, leaving out one instance (the one being changed).
    async fn usage(&self, tenant: &Name, except: Option<InstanceId>) -> HubResult<Usage> {
        let list = self.store.list_instances(&InstanceFilter::tenant(tenant)).await?;
        let mut u = Usage::default();
        for i in list.iter().filter(|i| Some(i.id) != except) {
            u.instances += 1;
            u.disk_mib += i.spec.disk_mib;
            if i.state.holds_resources() {
                u.vcpus += i.spec.vcpus;
                u.mem_mib += i.spec.mem_mib;
            }
            if i.state.counts_as_running() {
                u.running += 1;
            }
        }
        Ok(u)
    }

    /// Fails with quota_exceeded naming the quota if `inst` in state `to` would not fit.
    async fn check_quota(&self, tenant: &Tenant, inst: &Instance, to: InstanceState) -> HubResult<()> {
        let u = self.usage(&tenant.name, Some(inst.id)).await?;
        let q = &tenant.quotas;
        let over = |quota: &str, limit: String, would: String| {
            Err(HubError::new(
                ErrorCode::QuotaExceeded,
                format!("tenant '{}' quota {quota} is {limit}; this would make it {would}", tenant.name),
            ))
        };
        if to != InstanceState::Deleted && u.instances + 1 > q.max_instances {
            return over("max_instances", q.max_instances.to_string(), (u.instances + 1).to_string());
        }
        if to != InstanceState::Deleted && u.disk_mib + inst.spec.disk_mib > q.max_disk_gib * 1024 {
            return over("max_disk_gib", q.max_disk_gib.to_string(), format!("{:.2}", (u.disk_mib + inst.spec.disk_mib) as f64 / 1024.0));
        }
        if to.holds_resources() {
            if u.vcpus + inst.spec.vcpus > q.max_vcpus {
                return over("max_vcpus", q.max_vcpus.to_string(), (u.vcpus + inst.spec.vcpus).to_string());
            }
            if u.mem_mib + inst.spec.mem_mib > q.max_mem_mib {
                return over("max_mem_mib", q.max_mem_mib.to_string(), (u.mem_mib + inst.spec.mem_mib).to_string());
            }
        }
        if to.counts_as_running() && u.running + 1 > q.max_running {
            return over("max_running", q.max_running.to_string(), (u.running + 1).to_string());
        }
        Ok(())
    }

    // ---------------------------------------------------------------- placement

    /// Picks the ready host (never a draining, stale, stopped or missing one) that fits
    /// the spec and is least loaded: memory share, then instance count (spread).
    async fn place(&self, spec: &InstanceSpec, pin: Option<&Name>) -> HubResult<HostRecord> {
        let mut hosts = self.store.list_hosts().await?;
        if let Some(want) = pin {
            hosts.retain(|h| &h.name == want);
            match hosts.first() {
                None => return Err(HubError::invalid(format!("host: no host named '{want}': see `hangar host list`"))),
                Some(h) if h.state != HostState::Ready => {
                    return Err(HubError::new(ErrorCode::NoCapacity, format!("host '{want}' is {}: only a ready host takes new instances", h.state.as_str())))
                }
                _ => {}
            }
        }
        let all = self.store.list_instances(&InstanceFilter::default()).await?;
        let mut best: Option<(f64, HostRecord)> = None;
        for h in hosts.into_iter().filter(|h| h.state == HostState::Ready && h.endpoint.is_some()) {
            let (mut cpu, mut mem, mut disk, mut count) = (0u64, 0u64, 0u64, 0u64);
            for i in all.iter().filter(|i| i.host.as_ref() == Some(&h.name)) {
                count += 1;
                disk += i.spec.disk_mib;
                if i.state.holds_resources() {
                    cpu += i.spec.vcpus as u64;
                    mem += i.spec.mem_mib;
                }
            }
            let c = &h.capacity;
            let fits = (cpu + spec.vcpus as u64) as f64 <= c.vcpus as f64 * self.config.cpu_overcommit
                && (mem + spec.mem_mib) as f64 <= c.mem_mib as f64 * self.config.mem_overcommit
                && (disk + spec.disk_mib) as f64 <= c.disk_mib as f64 * self.config.disk_overcommit;
            if !fits {
                continue;
            }
            // Hosts made on one machine report the same capacity, so the count breaks ties
            // between them, also for members that hold no memory (sleeping).
            let load = (mem + spec.mem_mib) as f64 / (c.mem_mib.max(1)) as f64 + count as f64 * 0.01;
            if best.as_ref().is_none_or(|(l, _)| load < *l) {
                best = Some((load, h));
            }
        }
        best.map(|(_, h)| h).ok_or_else(|| {
            HubError::new(
                ErrorCode::NoCapacity,
                format!(
                    "no ready host has room for {} vCPU, {} MiB memory, {} MiB disk: add a host or free capacity",
                    spec.vcpus, spec.mem_mib, spec.disk_mib
                ),
            )
        })
    }

    /// The lowest free address of the tenant's subnet. Called under the tenant lock; the
    /// store's unique index on (tenant, address) is the last line of defence.
    async fn allocate_address(&self, t: &Tenant) -> HubResult<std::net::Ipv4Addr> {
        let used: std::collections::HashSet<std::net::Ipv4Addr> = self
            .store
            .list_instances(&InstanceFilter::tenant(&t.name))
            .await?
            .into_iter()
            .filter_map(|i| i.address)
            .collect();
        let r = &self.config.cluster_range;
        hangar_types::net::host_numbers(t.net_prefix).map(|n| r.host(t.net_id, n)).find(|a| !used.contains(a)).ok_or_else(|| {
            HubError::new(
                ErrorCode::NoCapacity,
                format!(
                    "tenant '{}' network {}/{} has no free address: delete an instance first (or give a new tenant a bigger subnet with net_prefix)",
                    t.name,
                    r.subnet(t.net_id),
                    t.net_prefix
                ),
            )
        })
    }

    /// What a host needs to wire an instance to its tenant's network.
    pub(crate) fn net_spec(&self, t: &Tenant, address: std::net::Ipv4Addr) -> hangar_types::net::NetSpec {
        let net_id = t.net_id;
        let r = &self.config.cluster_range;
        hangar_types::net::NetSpec {
            net_id,
            bridge: hangar_types::net::bridge_name(r.subnet(net_id)),
            address,
            prefix_len: t.net_prefix,
            gateway: r.gateway(net_id),
            cluster_range: r.to_string(),
            isolated: t.isolated,
            overlay: None,
        }
    }

    /// If `host` just got its first instance of `tenant`, or lost its last, the other
    /// hosts of the tenant get a new desired document: their overlay peers changed.
    pub(crate) async fn tenant_hosts_changed(&self, tenant: &Name, host: &Name) -> HubResult<()> {
        // A host without an underlay address is nobody's peer: nothing to tell (and
        // nothing read on the create path of such hosts).
        let underlay = self.store.get_host(host).await?.and_then(|h| h.endpoint).and_then(|e| hangar_types::net::underlay_of(&e));
        if underlay.is_none() {
            return Ok(());
        }
        let here = self.store.list_instances(&InstanceFilter { tenant: Some(tenant.clone()), host: Some(host.clone()), pool: None }).await?.len();
        if here > 1 {
            return Ok(()); // neither first nor last
        }
        let all = self.store.list_instances(&InstanceFilter::tenant(tenant)).await?;
        let mut others: Vec<&Name> = all.iter().filter_map(|i| i.host.as_ref()).filter(|h| *h != host).collect();
        others.sort();
        others.dedup();
        for h in others {
            self.bump_host(h).await?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- instances

    pub async fn instance_create(&self, p: &Principal, tenant: &str, req: InstanceCreate) -> HubResult<Operation> {
        let t = self.tenant_get(p, tenant).await?;
        let spec = req.spec();
        spec.validate().map_err(HubError::invalid)?;
        let _tg = self.tenant_lock(&t.name).lock_owned().await;
        let target = if req.start { transition(InstanceState::Created, Transition::Start)? } else { InstanceState::Created };
        self.create_locked(&p.actor(), &t, req.name, spec, target, None, req.host.as_ref()).await
    }

    /// Creates an instance in `target` (created, starting or sleeping): quota, placement,
    /// address, record, host wake-up, operation and event. The caller holds the tenant lock.
    pub(crate) async fn create_locked(
        &self,
        actor: &str,
        t: &Tenant,
        name: Name,
        spec: InstanceSpec,
        target: InstanceState,
        pool: Option<Name>,
        pin: Option<&Name>,
    ) -> HubResult<Operation> {
        if self.store.get_instance(&t.name, &name).await?.is_some() {
            return Err(HubError::new(ErrorCode::AlreadyExists, format!("instance '{}/{}' already exists", t.name, name)));
        }
        let now = OffsetDateTime::now_utc();
        let mut inst = Instance {
            id: InstanceId::new(),
            tenant: t.name.clone(),
            name,
            spec,
            host: None,
            state: InstanceState::Created,
            desired: InstanceState::Created.desired(),
            observed: ObservedState::Unknown,
            generation: 0,
            error: None,
            created_at: now,
            updated_at: now,
            address: None,
            pool,
            held_until: None,
        };
        self.check_quota(t, &inst, target).await?;
        let host = self.place(&inst.spec, pin).await?;
        inst.address = Some(self.allocate_address(t).await?);
        inst.host = Some(host.name.clone());
        inst.state = target;
        inst.desired = target.desired();
        inst.generation = self.store.next_generation().await?;
        self.store.insert_instance(&inst).await?;
        self.bump_host(&host.name).await?;
        self.tenant_hosts_changed(&t.name, &host.name).await?;
        let done_at = if target == InstanceState::Starting { InstanceState::Running } else { target };
        let op = self.operation_new("instance.create", &inst, done_at).await?;
        let why = match &inst.pool {
            Some(pl) => format!("placed on host {} (pool {pl}, {target})", host.name),
            None => format!("placed on host {}", host.name),
        };
        self.event(actor, Some(&t.name), format!("instance/{}/{}", t.name, inst.name), "instance.create", "accepted", Some(why)).await;
        Ok(op)
    }

    pub async fn instance_get(&self, p: &Principal, tenant: &str, name: &str) -> HubResult<Instance> {
        let t = self.tenant_get(p, tenant).await?;
        let n = parse_name("instance", name)?;
        self.store
            .get_instance(&t.name, &n)
            .await?
            .ok_or_else(|| HubError::not_found(format!("instance '{}/{}' not found", t.name, n)))
    }

    pub async fn instance_list(&self, p: &Principal, tenant: Option<&str>, pool: Option<&str>) -> HubResult<Vec<Instance>> {
        let mut filter = match tenant {
            Some(t) => InstanceFilter::tenant(&self.tenant_get(p, t).await?.name),
            None => match p {
                Principal::Admin => InstanceFilter::default(),
                Principal::Tenant(t) => InstanceFilter::tenant(t),
            },
        };
        if let Some(pl) = pool {
            if filter.tenant.is_none() {
                return Err(HubError::invalid("pool: a pool filter needs a tenant (pools are named per tenant)"));
            }
            filter.pool = Some(parse_name("pool", pl)?);
        }
        Ok(self.store.list_instances(&filter).await?)
    }

    /// start, stop, warm, resume, delete: one path through the state machine.
    pub async fn instance_request(&self, p: &Principal, tenant: &str, name: &str, t: Transition) -> HubResult<Operation> {
        let ten = self.tenant_get(p, tenant).await?;
        let inst = self.instance_get(p, tenant, name).await?;
        let _tg = self.tenant_lock(&ten.name).lock_owned().await;
        // A user's action on a pool member holds the pool's reconciler off it for a while.
        let hold = inst.pool.as_ref().map(|_| OffsetDateTime::now_utc() + self.config.pool_hold);
        self.request_locked(&p.actor(), &ten, inst.id, t, hold).await
    }

    /// One request through the state machine; the caller holds the tenant lock.
    /// `hold` sets (or with None keeps) the instance's pool hold-off.
    pub(crate) async fn request_locked(
        &self,
        actor: &str,
        ten: &Tenant,
        id: InstanceId,
        t: Transition,
        hold: Option<OffsetDateTime>,
    ) -> HubResult<Operation> {
        let _ig = self.instance_lock(id).lock_owned().await;
        // Re-read under the lock: the state may have moved while we waited.
        let mut inst = self.store.get_instance_by_id(id).await?.ok_or_else(|| HubError::not_found(format!("instance {id} of tenant '{}' not found", ten.name)))?;
        let object = format!("instance/{}/{}", ten.name, inst.name);
        let action = format!("instance.{t}");
        let to = match transition(inst.state, t) {
            Ok(to) => to,
            Err(e) => {
                self.event(actor, Some(&ten.name), object, &action, "error", Some(e.to_string())).await;
                return Err(e.into());
            }
        };
        // Only moves that take more resources are checked against the quotas.
        if matches!(t, Transition::Start | Transition::Resume) {
            if let Err(e) = self.check_quota(ten, &inst, to).await {
                self.event(actor, Some(&ten.name), object, &action, "error", Some(e.0.message.clone())).await;
                return Err(e);
            }
        }
        self.cancel_operations(inst.id, &format!("superseded by {action}")).await?;
        inst.state = to;
        inst.desired = to.desired();
        inst.observed = ObservedState::Unknown;
        inst.error = None;
        inst.generation = self.store.next_generation().await?;
        inst.updated_at = OffsetDateTime::now_utc();
        if hold.is_some() {
            inst.held_until = hold;
        }
        self.store.update_instance(&inst).await?;
        if let Some(h) = &inst.host {
            self.bump_host(h).await?;
        }
        let done_at = match to {
            InstanceState::Starting => InstanceState::Running,
            InstanceState::Stopping => InstanceState::Stopped,
            s => s,
        };
        let op = self.operation_new(&action, &inst, done_at).await?;
        let note = match (&inst.pool, hold) {
            (Some(pl), Some(_)) => Some(format!("pool {pl} leaves this member alone for {}s", self.config.pool_hold.as_secs())),
            _ => None,
        };
        self.event(actor, Some(&ten.name), object, &action, "accepted", note).await;
        Ok(op)
    }

    /// The agent client of the host an instance runs on, if it is reachable now.
    async fn agent_for(&self, inst: &Instance) -> HubResult<(AgentClient, String)> {
        let host_name = inst.host.as_ref().ok_or_else(|| HubError::new(ErrorCode::Unavailable, "instance is not placed on a host"))?;
        let host = self
            .store
            .get_host(host_name)
            .await?
            .ok_or_else(|| HubError::new(ErrorCode::Unavailable, format!("host '{host_name}' is gone")))?;
        let endpoint = host
            .endpoint
            .ok_or_else(|| HubError::new(ErrorCode::Unavailable, format!("host '{host_name}' has not reported an endpoint yet")))?;
        let k = &self.keys;
        let client = AgentClient::new(&endpoint, k.ca.cert_pem(), &k.client.cert_pem, &k.client.key_pem)?;
        Ok((client, inst.id.short()))
    }

    fn require_running(inst: &Instance, what: &str) -> HubResult<()> {
        if inst.state == InstanceState::Running && inst.observed == ObservedState::Running {
            return Ok(());
        }
        Err(HubError::new(
            ErrorCode::IllegalTransition,
            format!("cannot {what} instance '{}/{}': it is {} (observed {}); start or resume it first", inst.tenant, inst.name, inst.state, inst.observed),
        ))
    }

    pub async fn instance_exec(&self, p: &Principal, tenant: &str, name: &str, req: ExecRequest) -> HubResult<ExecResult> {
        if req.command.is_empty() {
            return Err(HubError::invalid("command is empty: give the command to run, e.g. -- sh -c 'echo hi'"));
        }
        let inst = self.instance_get(p, tenant, name).await?;
        Self::require_running(&inst, "exec in")?;
        let (agent, sandbox) = self.agent_for(&inst).await?;
        let res = agent.exec(&sandbox, &req).await;
        let result = match &res {
            Ok(r) => format!("exit {}", r.exit_code),
            Err(e) => format!("error: {e}"),
        };
        // The command line can hold secrets: record only its program name.
        let program = req.command.first().cloned().unwrap_or_default();
        self.event(&p.actor(), Some(&inst.tenant), format!("instance/{}/{}", inst.tenant, inst.name), "instance.exec", if res.is_ok() { "ok" } else { "error" }, Some(format!("{program}: {result}"))).await;
        Ok(res?)
    }

    pub async fn instance_logs(&self, p: &Principal, tenant: &str, name: &str, lines: u32) -> HubResult<InstanceLogs> {
        let inst = self.instance_get(p, tenant, name).await?;
        let (agent, sandbox) = self.agent_for(&inst).await?;
        Ok(agent.logs(&sandbox, lines.clamp(1, 10_000)).await?)
    }

    pub async fn instance_stats(&self, p: &Principal, tenant: &str, name: &str) -> HubResult<InstanceStats> {
        let inst = self.instance_get(p, tenant, name).await?;
        if !inst.state.holds_resources() {
            return Err(HubError::new(ErrorCode::IllegalTransition, format!("instance '{}/{}' is {}: stats exist only while it runs", inst.tenant, inst.name, inst.state)));
        }
        let (agent, sandbox) = self.agent_for(&inst).await?;
        Ok(agent.stats(&sandbox).await?)
    }

    /// Bumps a host's desired generation and wakes its long-poll.
    pub(crate) async fn bump_host(&self, host: &Name) -> HubResult<()> {
        let _g = self.host_lock(host).lock_owned().await;
        let Some(mut h) = self.store.get_host(host).await? else { return Ok(()) };
        h.desired_generation = self.store.next_generation().await?;
        self.store.update_host(&h).await?;
        self.notify_host(h.id, h.desired_generation);
        Ok(())
    }

    // ---------------------------------------------------------------- operations

    async fn operation_new(&self, kind: &str, inst: &Instance, target: InstanceState) -> HubResult<Operation> {
        let now = OffsetDateTime::now_utc();
        let op = Operation {
            id: OperationId::new(),
            kind: kind.to_string(),
            tenant: Some(inst.tenant.clone()),
            target: format!("{}/{}", inst.tenant, inst.name),
            instance_id: Some(inst.id),
            target_state: Some(target),
            status: OperationStatus::Running,
            error: None,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_operation(&op).await?;
        Ok(op)
    }

    async fn cancel_operations(&self, id: InstanceId, why: &str) -> HubResult<()> {
        for op in self.store.running_operations(Some(id)).await? {
            self.store.finish_operation(op.id, OperationStatus::Cancelled, Some(why)).await?;
        }
        self.notify_ops();
        Ok(())
    }

    /// Finishes the running operations of an instance whose outcome is now known.
    pub(crate) async fn settle_operations(&self, id: InstanceId) -> HubResult<()> {
        let ops = self.store.running_operations(Some(id)).await?;
        if ops.is_empty() {
            return Ok(());
        }
        let inst = self.store.get_instance_by_id(id).await?;
        for op in ops {
            let outcome = match (&inst, op.target_state) {
                (None, Some(InstanceState::Deleted)) => Some((OperationStatus::Succeeded, None)),
                (None, _) => Some((OperationStatus::Failed, Some("the instance was deleted".to_string()))),
                (Some(i), Some(target)) if i.state == target && i.observed == confirming_observation(target).unwrap_or(ObservedState::Gone) => {
                    Some((OperationStatus::Succeeded, None))
                }
                (Some(i), Some(target)) if i.state == InstanceState::Failed && target != InstanceState::Failed => {
                    Some((OperationStatus::Failed, Some(i.error.clone().unwrap_or_else(|| "the host reported a failure".into()))))
                }
                (Some(i), Some(InstanceState::Running)) if i.state == InstanceState::Stopped => Some((
                    OperationStatus::Failed,
                    Some(i.error.clone().unwrap_or_else(|| "the workload exited right after it started: see `hangar instance logs`".into())),
                )),
                _ => None,
            };
            if let Some((status, err)) = outcome {
                self.store.finish_operation(op.id, status, err.as_deref()).await?;
            }
        }
        self.notify_ops();
        Ok(())
    }

    pub async fn operation_get(&self, p: &Principal, id: &str) -> HubResult<Operation> {
        let oid: OperationId = id.parse().map_err(|_| HubError::invalid(format!("'{id}' is not an operation id (a UUID)")))?;
        let op = self.store.get_operation(oid).await?.ok_or_else(|| HubError::not_found(format!("operation {id} not found")))?;
        if let Some(t) = &op.tenant {
            p.check_tenant(t).map_err(|_| HubError::not_found(format!("operation {id} not found")))?;
        } else {
            p.require_admin().map_err(|_| HubError::not_found(format!("operation {id} not found")))?;
        }
        Ok(op)
    }

    /// Waits until the operation is final or `timeout` passes; answers its state either way.
    pub async fn operation_wait(&self, p: &Principal, id: &str, timeout: Duration) -> HubResult<Operation> {
        let deadline = tokio::time::Instant::now() + timeout.min(Duration::from_secs(300));
        let mut rx = self.subscribe_ops();
        loop {
            let op = self.operation_get(p, id).await?;
            if op.status.is_final() {
                return Ok(op);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return self.operation_get(p, id).await,
            }
        }
    }

    // ---------------------------------------------------------------- events, tokens, hosts

    pub async fn events(&self, p: &Principal, tenant: Option<&str>, limit: u32) -> HubResult<Vec<Event>> {
        let limit = limit.clamp(1, 10_000);
        match (tenant, p) {
            (Some(t), _) => {
                let t = self.tenant_get(p, t).await?;
                Ok(self.store.list_events(Some(&t.name), limit).await?)
            }
            (None, Principal::Tenant(t)) => Ok(self.store.list_events(Some(t), limit).await?),
            (None, Principal::Admin) => Ok(self.store.list_events(None, limit).await?),
        }
    }

    pub async fn token_create(&self, p: &Principal, req: TokenCreate) -> HubResult<TokenCreated> {
        p.require_admin()?;
        if let Some(t) = &req.tenant {
            self.tenant_get(p, t.as_str()).await?;
        }
        let secret = new_secret("hat_");
        let rec = TokenRecord {
            id: uuid::Uuid::now_v7().simple().to_string()[20..].to_string(),
            hash: hash_secret(&secret),
            tenant: req.tenant.clone(),
            description: req.description,
            created_at: OffsetDateTime::now_utc(),
        };
        self.store.insert_token(&rec).await?;
        let scope = req.tenant.as_ref().map(|t| format!("tenant {t}")).unwrap_or_else(|| "admin".into());
        self.event(&p.actor(), req.tenant.as_ref(), format!("token/{}", rec.id), "token.create", "ok", Some(scope)).await;
        Ok(TokenCreated { id: rec.id, tenant: req.tenant, token: secret })
    }

    pub async fn host_add(&self, p: &Principal, req: HostAdd) -> HubResult<HostJoinToken> {
        p.require_admin()?;
        if let Some(pv) = &req.provider {
            return self.host_add_provided(p, req.name, pv).await;
        }
        let (rec, token) = self.host_add_record(req.name).await?;
        self.event(&p.actor(), None, format!("host/{}", rec.name), "host.add", "ok", None).await;
        Ok(HostJoinToken { host: self.host_view(&rec).await?, join_token: token })
    }

    /// Creates a host in `joining` with a fresh one-time join token (or renews the token
    /// of a host that never joined).
    pub async fn host_add_record(&self, name: Name) -> HubResult<(HostRecord, String)> {
        let secret = new_secret("");
        let token = format!("hjt1.{secret}.{}", &self.keys.ca.fingerprint()[..32]);
        let hash = hash_secret(&secret);
        let _g = self.host_lock(&name).lock_owned().await;
        if let Some(mut h) = self.store.get_host(&name).await? {
            if h.cert_fingerprint.is_some() {
                return Err(HubError::new(ErrorCode::AlreadyExists, format!("host '{name}' already exists and has joined")));
            }
            h.join_token_hash = Some(hash);
            self.store.update_host(&h).await?;
            return Ok((h, token));
        }
        let rec = HostRecord {
            id: hangar_types::HostId::new(),
            name,
            state: HostState::Joining,
            capacity: Capacity::default(),
            endpoint: None,
            drivers: vec![],
            agent_version: None,
            last_heartbeat: None,
            join_token_hash: Some(hash),
            cert_fingerprint: None,
            desired_generation: 0,
            created_at: OffsetDateTime::now_utc(),
            provider: None,
        };
        self.store.insert_host(&rec).await?;
        Ok((rec, token))
    }

    pub(crate) async fn host_view(&self, h: &HostRecord) -> HubResult<Host> {
        let list = self.store.list_instances(&InstanceFilter::host(&h.name)).await?;
        Ok(Host {
            id: h.id,
            name: h.name.clone(),
            state: h.state,
            capacity: h.capacity,
            endpoint: h.endpoint.clone(),
            drivers: h.drivers.clone(),
            agent_version: h.agent_version.clone(),
            last_heartbeat: h.last_heartbeat,
            instances: list.len() as u32,
            active: list.iter().filter(|i| i.state.holds_resources()).count() as u32,
            provider: h.provider.clone(),
            created_at: h.created_at,
        })
    }

    pub async fn host_list(&self, p: &Principal) -> HubResult<Vec<Host>> {
        p.require_admin()?;
        let mut out = vec![];
        for h in self.store.list_hosts().await? {
            out.push(self.host_view(&h).await?);
        }
        Ok(out)
    }

    pub async fn host_get(&self, p: &Principal, name: &str) -> HubResult<Host> {
        p.require_admin()?;
        let n = parse_name("host", name)?;
        let h = self.store.get_host(&n).await?.ok_or_else(|| HubError::not_found(format!("host '{n}' not found")))?;
        self.host_view(&h).await
    }
}
