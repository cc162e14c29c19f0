//! Instances: create (quota, placement, address), get, list, requests through the state
//! machine, and the live calls to the instance's agent (exec, logs, stats).
//!
//! Every mutating call checks the caller's scope, validates, runs the state machine,
//! persists the new desired state, wakes the host, and leaves an event.
//!
//! Locks: a request holds its tenant's lock (the quota check reads every instance of the
//! tenant) and then the instance's lock (the state machine runs on the instance as read).
//! The write itself is a compare-and-swap on the version read, in one transaction with
//! the host's generation bump: a hub that decided on a stale read (another hub on the
//! same store) gets a conflict instead of overwriting, and no crash leaves a decision
//! the host is not told about.

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::{Hub, LockKey};
use hangar_client::AgentClient;
use hangar_store::{HostRecord, InstanceFilter, InstanceVersion};
use hangar_types::api::*;
use hangar_types::placement::{self, Candidate, Load, Overcommit};
use hangar_types::quota::{self, Demand};
use hangar_types::state::transition;
use hangar_types::{ErrorCode, Generation, InstanceId, InstanceState, Name, ObservedState, SandboxId, Transition};
use time::OffsetDateTime;

impl Hub {
    /// Fails with quota_exceeded naming the quota if `inst` in state `to` would not fit.
    async fn check_quota(&self, tenant: &Tenant, inst: &Instance, to: InstanceState) -> HubResult<()> {
        let usage = self.usage(&tenant.name, Some(inst.id)).await?;
        quota::check(&tenant.quotas, &usage, &Demand::instance(&inst.spec, to))
            .map_err(|e| HubError::new(ErrorCode::QuotaExceeded, e.instance_message(tenant.name.as_str())))
    }

    /// The host a new instance goes to (see [`placement::choose`]).
    pub(crate) async fn place(&self, spec: &InstanceSpec, pin: Option<&Name>) -> HubResult<HostRecord> {
        let mut hosts = self.store.list_hosts().await?;
        let all = self.store.list_instances(&InstanceFilter::default()).await?;
        let candidates: Vec<Candidate> = hosts
            .iter()
            .map(|h| Candidate {
                name: h.name.clone(),
                state: h.state,
                reachable: h.endpoint.is_some(),
                capacity: h.capacity,
                load: Load::of(all.iter().filter(|i| i.host.as_ref() == Some(&h.name))),
            })
            .collect();
        let c = &self.config;
        let oc = Overcommit { cpu: c.cpu_overcommit, mem: c.mem_overcommit, disk: c.disk_overcommit };
        let at = placement::choose(&candidates, spec, pin, oc).map_err(|r| HubError::new(r.code(), r.to_string()))?;
        Ok(hosts.swap_remove(at))
    }

    pub async fn instance_create(&self, p: &Principal, tenant: &Name, req: InstanceCreate) -> HubResult<Operation> {
        let t = self.tenant_get(p, tenant).await?;
        let spec = req.spec();
        spec.validate().map_err(HubError::invalid)?;
        self.check_spec_fits(&t, &spec)?;
        self.check_requested_image(&spec.image).await?;
        self.check_secrets_exist(&t.name, &spec.secrets).await?;
        let _tg = self.lock(LockKey::Tenant(t.name.clone())).await;
        // Again under the lock: a destroy (which decides under it) may have come first.
        let t = self.tenant_for_create(p, &t).await?;
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
            generation: Generation::ZERO,
            error: None,
            created_at: now,
            updated_at: now,
            address: None,
            pool,
            held_until: None,
            ids: None,
        };
        self.check_quota(t, &inst, target).await?;
        let host = self.place(&inst.spec, pin).await?;
        inst.address = Some(self.allocate_address(t).await?);
        inst.host = Some(host.name.clone());
        inst.state = target;
        inst.desired = target.desired();
        inst.generation = self.store.next_generation().await?;
        // One write: the instance and its host's new generation land together.
        let bumped = self.insert_with_uid_range(&mut inst, &host.name).await?;
        crate::failpoint::hit("instance.create.after-write");
        self.host_bumped(bumped);
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

    pub async fn instance_get(&self, p: &Principal, tenant: &Name, name: &Name) -> HubResult<Instance> {
        let t = self.tenant_get(p, tenant).await?;
        self.store
            .get_instance(&t.name, name)
            .await?
            .ok_or_else(|| HubError::not_found(format!("instance '{}/{}' not found", t.name, name)))
    }

    pub async fn instance_list(&self, p: &Principal, tenant: Option<&Name>, pool: Option<&Name>) -> HubResult<Vec<Instance>> {
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
            filter.pool = Some(pl.clone());
        }
        Ok(self.store.list_instances(&filter).await?)
    }

    /// start, stop, warm, resume, delete: one path through the state machine.
    pub async fn instance_request(&self, p: &Principal, tenant: &Name, name: &Name, t: Transition) -> HubResult<Operation> {
        let ten = self.tenant_get(p, tenant).await?;
        let inst = self.instance_get(p, tenant, name).await?;
        let _tg = self.lock(LockKey::Tenant(ten.name.clone())).await;
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
        let _ig = self.lock(LockKey::Instance(id)).await;
        // Re-read under the lock: the state may have moved while we waited.
        let read = self.store.get_instance_by_id(id).await?.ok_or_else(|| HubError::not_found(format!("instance {id} of tenant '{}' not found", ten.name)))?;
        let mut inst = read.clone();
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
        if matches!(t, Transition::Start | Transition::Resume)
            && let Err(e) = self.check_quota(ten, &inst, to).await {
                self.event(actor, Some(&ten.name), object, &action, "error", Some(e.0.message.clone())).await;
                return Err(e);
            }
        inst.state = to;
        inst.desired = to.desired();
        inst.observed = ObservedState::Unknown;
        inst.error = None;
        inst.generation = self.store.next_generation().await?;
        inst.updated_at = OffsetDateTime::now_utc();
        if hold.is_some() {
            inst.held_until = hold;
        }
        // Written only if nobody decided anything about the instance since the read
        // (Conflict otherwise: another hub's request won), in one write with its host's
        // new generation. The operations it supersedes are cancelled only once it landed.
        let bumped = self.store.update_instance_if(&inst, InstanceVersion::of(&read), inst.host.as_ref()).await?;
        crate::failpoint::hit(&format!("instance.{t}.after-write"));
        self.cancel_operations(inst.id, &format!("superseded by {action}")).await?;
        self.host_bumped(bumped);
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
    pub(crate) async fn agent_for(&self, inst: &Instance) -> HubResult<(AgentClient, SandboxId)> {
        let (host, endpoint) = self.placed_host(inst).await?;
        Ok((self.agent_client(&host, &endpoint).await?, inst.id.sandbox_id()))
    }

    /// The host an instance is placed on and its agent's endpoint, or why there is none
    /// to call (503).
    pub(crate) async fn placed_host(&self, inst: &Instance) -> HubResult<(hangar_store::HostRecord, String)> {
        let host_name = inst.host.as_ref().ok_or_else(|| HubError::new(ErrorCode::Unavailable, format!("instance '{}/{}' is not placed on a host", inst.tenant, inst.name)))?;
        let host = self
            .store
            .get_host(host_name)
            .await?
            .ok_or_else(|| HubError::new(ErrorCode::Unavailable, format!("host '{host_name}' is gone")))?;
        let endpoint = host
            .endpoint
            .clone()
            .ok_or_else(|| HubError::new(ErrorCode::Unavailable, format!("host '{host_name}' has not reported an endpoint yet")))?;
        Ok((host, endpoint))
    }

    pub(crate) fn require_running(inst: &Instance, what: &str) -> HubResult<()> {
        if inst.state == InstanceState::Running && inst.observed == ObservedState::Running {
            return Ok(());
        }
        Err(HubError::new(
            ErrorCode::IllegalTransition,
            format!("cannot {what} instance '{}/{}': it is {} (observed {}); start or resume it first", inst.tenant, inst.name, inst.state, inst.observed),
        ))
    }

    pub async fn instance_exec(&self, p: &Principal, tenant: &Name, name: &Name, req: ExecRequest) -> HubResult<ExecResult> {
        // The timeout's limit is the host's (it answers 400 past it); the rest no host
        // could run.
        req.validate(u64::MAX).map_err(HubError::invalid)?;
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

    /// The last lines of an instance's log, or those after a cursor (`--follow`); the
    /// agent caps the answer ([`hangar_types::api::LOGS_MAX_BYTES`]), the client call
    /// refuses a larger one.
    pub async fn instance_logs(&self, p: &Principal, tenant: &Name, name: &Name, q: &LogsQuery) -> HubResult<InstanceLogs> {
        let inst = self.instance_get(p, tenant, name).await?;
        let (agent, sandbox) = self.agent_for(&inst).await?;
        Ok(agent.logs(&sandbox, q).await?)
    }

    pub async fn instance_stats(&self, p: &Principal, tenant: &Name, name: &Name) -> HubResult<InstanceStats> {
        let inst = self.instance_get(p, tenant, name).await?;
        if !inst.state.holds_resources() {
            return Err(HubError::new(ErrorCode::IllegalTransition, format!("instance '{}/{}' is {}: stats exist only while it runs", inst.tenant, inst.name, inst.state)));
        }
        let (agent, sandbox) = self.agent_for(&inst).await?;
        Ok(agent.stats(&sandbox).await?)
    }
}
