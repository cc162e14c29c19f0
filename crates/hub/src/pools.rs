//! Pools: identical instances held at desired counts {running, warm, sleeping}.
//!
//! The counts live in the store; [`Hub::reconcile_pools`] (run on every scale and every
//! `pool_interval`) asks the pure planner in `hangar_types::pool` for the next requests
//! and executes them through the same paths as a user's requests, so quotas, the state
//! machine, placement and events apply unchanged. A pass that cannot do everything
//! records why in the pool (`last_error`) and the next pass tries again.

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::{Hub, LockKey};
use hangar_store::{InstanceFilter, StoreError};
use hangar_types::api::*;
use hangar_types::pool::{self, CreateAs, Member, PoolAction};
use hangar_types::quota::{self, counts_text, Demand};
use hangar_types::{ErrorCode, InstanceState, Name, Transition};
use std::collections::{BTreeMap, HashMap};
use time::OffsetDateTime;

/// A fresh member name: the pool's name and 6 random hex digits.
fn member_name(pool: &Name) -> Name {
    let base: String = pool.as_str().chars().take(56).collect();
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("{base}-{}", &hex[..6]).parse().expect("pool name plus hex is a valid name")
}

/// Steps of one pool per pass while holding its tenant's lock: big scales proceed in
/// batches, so API calls on the tenant interleave with them.
pub const POOL_BATCH: usize = 32;

impl Hub {
    pub async fn pool_create(&self, p: &Principal, tenant: &Name, req: PoolCreate) -> HubResult<PoolInfo> {
        let t = self.tenant_get(p, tenant).await?;
        let spec = req.spec();
        spec.validate().map_err(HubError::invalid)?;
        self.check_spec_fits(&t, &spec)?;
        self.check_requested_image(&spec.image).await?;
        self.check_secrets_exist(&t.name, &spec.secrets).await?;
        let _tg = self.lock(LockKey::Tenant(t.name.clone())).await;
        // Again under the lock: a destroy (which decides under it) may have come first.
        let t = self.tenant_for_create(p, &t).await?;
        let now = OffsetDateTime::now_utc();
        let pool = Pool { tenant: t.name.clone(), name: req.name, role: req.role, spec, counts: PoolCounts::default(), last_error: None, created_at: now, updated_at: now };
        self.check_pool_fits(&t, &pool, req.counts).await?;
        let pool = Pool { counts: req.counts, ..pool };
        self.store.insert_pool(&pool).await?;
        self.event(&p.actor(), Some(&t.name), format!("pool/{}/{}", t.name, pool.name), "pool.create", "ok", Some(format!("role {}, {}", pool.role, counts_text(pool.counts)))).await;
        let actions = self.reconcile_pool_first_batch(&t, &pool).await;
        self.pool_info_of(&t.name, &pool.name, actions).await
    }

    /// The first batch of a pool's pass, inside the API call; the pool loop, woken at
    /// once, does the rest, so a scale to 1,000 answers in milliseconds, not minutes.
    async fn reconcile_pool_first_batch(&self, t: &Tenant, pool: &Pool) -> Vec<String> {
        let (mut actions, more) = self.reconcile_pool_locked(t, pool).await;
        if more {
            self.coord.notifier.wake_pools();
            actions.push("more steps follow in the background: watch with `hangar pool info`".into());
        }
        actions
    }

    pub async fn pool_list(&self, p: &Principal, tenant: &Name) -> HubResult<Vec<PoolInfo>> {
        let t = self.tenant_get(p, tenant).await?;
        let mut out = vec![];
        for pl in self.store.list_pools(Some(&t.name)).await? {
            out.push(self.pool_info_of(&t.name, &pl.name, vec![]).await?);
        }
        Ok(out)
    }

    pub async fn pool_info(&self, p: &Principal, tenant: &Name, name: &Name) -> HubResult<PoolInfo> {
        let t = self.tenant_get(p, tenant).await?;
        self.pool_info_of(&t.name, name, vec![]).await
    }

    /// Sets new desired counts (absent ones unchanged) and runs a first batch of the
    /// reconcile pass at once.
    /// Counts that cannot fit the tenant's quotas are refused up front, naming the quota.
    pub async fn pool_scale(&self, p: &Principal, tenant: &Name, n: &Name, req: PoolScale) -> HubResult<PoolInfo> {
        let t = self.tenant_get(p, tenant).await?;
        let _tg = self.lock(LockKey::Tenant(t.name.clone())).await;
        let pool = self.pool_get(&t.name, n).await?;
        let counts = PoolCounts {
            running: req.running.unwrap_or(pool.counts.running),
            warm: req.warm.unwrap_or(pool.counts.warm),
            sleeping: req.sleeping.unwrap_or(pool.counts.sleeping),
        };
        let object = format!("pool/{}/{}", t.name, pool.name);
        if let Err(e) = self.check_pool_fits(&t, &pool, counts).await {
            self.event(&p.actor(), Some(&t.name), object, "pool.scale", "error", Some(e.0.message.clone())).await;
            return Err(e);
        }
        let before = pool.counts;
        // The counts were checked against the quotas as read: they are written only if
        // still what was read. A scale that lost to another (from another hub; in one,
        // the tenant lock orders them) is refused, not retried: a retry would overwrite
        // the other scale's counts, the last-writer-wins this check exists to prevent.
        let pool = match self.store.set_pool_counts_if(&t.name, &pool.name, before, counts).await {
            Ok(pool) => pool,
            Err(StoreError::Conflict(_)) => {
                let msg = format!("pool '{}/{}' was scaled by another request meanwhile: look at its counts with `hangar pool info` and scale again", t.name, pool.name);
                self.event(&p.actor(), Some(&t.name), object, "pool.scale", "error", Some(msg.clone())).await;
                return Err(HubError::new(ErrorCode::Conflict, msg));
            }
            Err(e) => return Err(e.into()),
        };
        crate::failpoint::hit("pool.scale.after-counts");
        self.event(&p.actor(), Some(&t.name), object, "pool.scale", "ok", Some(format!("{} -> {}", counts_text(before), counts_text(counts)))).await;
        let actions = self.reconcile_pool_first_batch(&t, &pool).await;
        self.pool_info_of(&t.name, &pool.name, actions).await
    }

    /// Deletes every member and then the pool.
    pub async fn pool_delete(&self, p: &Principal, tenant: &Name, n: &Name) -> HubResult<PoolInfo> {
        let t = self.tenant_get(p, tenant).await?;
        let _tg = self.lock(LockKey::Tenant(t.name.clone())).await;
        let pool = self.pool_get(&t.name, n).await?;
        // The pool's row says "empty me" before any member goes: a kill from here on
        // leaves a pool its reconciler empties (and a delete run again removes), never
        // one it refills.
        if pool.counts != PoolCounts::default() {
            self.store.set_pool_counts_if(&t.name, n, pool.counts, PoolCounts::default()).await?;
        }
        crate::failpoint::hit("pool.delete.after-mark");
        let mut actions = vec![];
        for m in self.store.list_instances(&InstanceFilter::pool(&t.name, n)).await? {
            if m.state != InstanceState::Deleted {
                self.request_locked(&p.actor(), &t, m.id, Transition::Delete, None).await?;
                actions.push(format!("delete {}", m.name));
                crate::failpoint::hit("pool.delete.after-member");
            }
        }
        let mut info = self.pool_info_of(&t.name, n, actions).await?;
        info.pool.counts = pool.counts;
        self.store.delete_pool(&t.name, n).await?;
        self.event(&p.actor(), Some(&t.name), format!("pool/{}/{}", t.name, pool.name), "pool.delete", "ok", None).await;
        Ok(info)
    }

    async fn pool_get(&self, tenant: &Name, name: &Name) -> HubResult<Pool> {
        self.store.get_pool(tenant, name).await?.ok_or_else(|| HubError::not_found(format!("pool '{tenant}/{name}' not found")))
    }

    /// Refuses counts the tenant's quotas can never hold, counting the tenant's other
    /// instances as they are now.
    async fn check_pool_fits(&self, t: &Tenant, pool: &Pool, c: PoolCounts) -> HubResult<()> {
        if c.total() > MAX_POOL_SIZE {
            return Err(HubError::invalid(format!("counts: running + warm + sleeping is {}; a pool holds at most {MAX_POOL_SIZE}", c.total())));
        }
        let others = self.store.list_instances(&InstanceFilter::tenant(&t.name)).await?;
        let usage = quota::usage(others.iter().filter(|i| i.pool.as_ref() != Some(&pool.name)));
        quota::check(&t.quotas, &usage, &Demand::pool(&pool.spec, c))
            .map_err(|e| HubError::new(ErrorCode::QuotaExceeded, e.pool_message(t.name.as_str(), pool.name.as_str(), c)))
    }

    async fn pool_info_of(&self, tenant: &Name, name: &Name, actions: Vec<String>) -> HubResult<PoolInfo> {
        let pool = self.pool_get(tenant, name).await?;
        let members = self.store.list_instances(&InstanceFilter::pool(tenant, name)).await?;
        let mut actual = PoolTally::default();
        let mut hosts: BTreeMap<String, PoolTally> = BTreeMap::new();
        for m in &members {
            actual.add(m.state);
            hosts.entry(m.host.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "-".into())).or_default().add(m.state);
        }
        let evacuating = self.evacuating_hosts().await?;
        let plan_members: Vec<Member> = members.iter().map(|i| member_of(i, &evacuating, OffsetDateTime::now_utc())).collect();
        let converged = pool::converged(&plan_members, pool.counts);
        Ok(PoolInfo { pool, actual, hosts, converged, actions })
    }

    /// Hosts whose pool members are moved elsewhere.
    async fn evacuating_hosts(&self) -> HubResult<Vec<Name>> {
        Ok(self.store.list_hosts().await?.into_iter().filter(|h| h.state == HostState::Draining).map(|h| h.name).collect())
    }

    /// One pass over every pool, at most [`POOL_BATCH`] steps each, releasing the tenant
    /// lock between pools. True if some pool has steps left.
    pub async fn reconcile_pools(&self) -> HubResult<bool> {
        let mut more = false;
        let pools = self.store.list_pools(None).await?;
        let mut tenants: HashMap<Name, Tenant> = HashMap::new();
        for t in self.store.list_tenants().await? {
            tenants.insert(t.name.clone(), t);
        }
        for pl in pools {
            let Some(t) = tenants.get(&pl.tenant) else { continue };
            let _tg = self.lock(LockKey::Tenant(t.name.clone())).await;
            // Re-read under the lock: a scale may have landed since the listing.
            let Some(pl) = self.store.get_pool(&t.name, &pl.name).await? else { continue };
            more |= self.reconcile_pool_locked(t, &pl).await.1;
        }
        Ok(more)
    }

    /// Plans and executes up to [`POOL_BATCH`] steps for a pool; the caller holds the
    /// tenant lock. Returns what it did and whether steps are left; a failure stops the
    /// pass and is kept in `last_error`.
    async fn reconcile_pool_locked(&self, t: &Tenant, pl: &Pool) -> (Vec<String>, bool) {
        let now = OffsetDateTime::now_utc();
        let actor = format!("pool:{}/{}", t.name, pl.name);
        let members = match self.store.list_instances(&InstanceFilter::pool(&t.name, &pl.name)).await {
            Ok(m) => m,
            Err(e) => return (vec![format!("error: {e}")], false),
        };
        let evacuating = self.evacuating_hosts().await.unwrap_or_default();
        let plan_members: Vec<Member> = members.iter().map(|i| member_of(i, &evacuating, now)).collect();
        let mut plan = pool::plan(&plan_members, pl.counts);
        let more = plan.len() > POOL_BATCH;
        plan.truncate(POOL_BATCH);
        let mut done = vec![];
        let mut error: Option<String> = None;
        for action in plan {
            let r = match action {
                PoolAction::Create(as_state) => {
                    let target = match as_state {
                        CreateAs::Running => InstanceState::Starting,
                        CreateAs::Sleeping => InstanceState::Sleeping,
                    };
                    let name = member_name(&pl.name);
                    let what = format!("create {name} ({})", if target == InstanceState::Starting { "running" } else { "sleeping" });
                    self.create_locked(&actor, t, name, pl.spec.clone(), target, Some(pl.name.clone()), None).await.map(|_| what)
                }
                PoolAction::Request(id, tr) => {
                    let name = members.iter().find(|m| m.id == id).map(|m| m.name.to_string()).unwrap_or_default();
                    self.request_locked(&actor, t, id, tr, None).await.map(|_| format!("{tr} {name}"))
                }
            };
            match r {
                Ok(what) => {
                    done.push(what);
                    crate::failpoint::hit("pool.reconcile.after-step");
                }
                Err(e) => {
                    error = Some(e.0.message.clone());
                    break;
                }
            }
        }
        // An error that repeats pass after pass with nothing done is recorded once (and
        // kept as the pool's last_error), not every pool interval.
        if !done.is_empty() || (error.is_some() && error != pl.last_error) {
            let msg = match &error {
                Some(e) if done.is_empty() => format!("no step done: {e}"),
                Some(e) => format!("did {} of the planned steps ({}), then: {e}", done.len(), done.join(", ")),
                None => done.join(", "),
            };
            self.event(&actor, Some(&t.name), format!("pool/{}/{}", t.name, pl.name), "pool.reconcile", if error.is_some() { "error" } else { "ok" }, Some(msg)).await;
        }
        if error != pl.last_error {
            // A pool deleted meanwhile has no error to keep: nothing to do.
            if let Err(e) = self.store.set_pool_last_error(&t.name, &pl.name, error.as_deref()).await {
                tracing::warn!(error = %e, "cannot record a pool's last error");
            }
        }
        let more = more && error.is_none();
        if let Some(e) = error {
            done.push(format!("stopped: {e}"));
        }
        (done, more)
    }
}

fn member_of(i: &Instance, evacuating: &[Name], now: OffsetDateTime) -> Member {
    Member {
        id: i.id,
        state: i.state,
        created_ns: i.created_at.unix_timestamp_nanos(),
        held: i.held_until.is_some_and(|h| h > now),
        evacuate: i.host.as_ref().is_some_and(|h| evacuating.contains(h)),
    }
}
