//! Hosts: adding (a join token, or made by a provider), listing, drain and undrain, stop
//! and start, remove, the agent's live status, desired-generation bumps, and the
//! provider check.
//!
//! A [`HostProvider`] makes and runs hosts (the `local` one: a network namespace, a data
//! dir and an agent process on the hub's machine). The hub only ever asks it to act on a
//! user's request; the provider check compares what the provider says exists with the
//! host table and marks a host `missing` only after a grace window and repeated
//! confirmations, never on one bad reading.
//!
//! No lock guards a host row: every change is one conditional store write (a state move
//! from the states it names, a join token renewed only before joining, a generation
//! bump), so reports, requests and the monitor never write over each other. The
//! provider lock only orders a provider's own actions on a host.

use crate::auth::{hash_secret, new_secret, Principal};
use crate::error::{HubError, HubResult};
use crate::{Hub, LockKey};
use hangar_store::{HostRecord, HostStateChange, InstanceFilter, StoreError};
use hangar_types::api::*;
use hangar_types::{ErrorCode, Generation, HostId, Name};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use time::OffsetDateTime;

/// What a provider says about one of its hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvidedHost {
    pub name: Name,
    /// Whether its agent process runs.
    pub running: bool,
}

/// Makes and runs hosts. A second provider (cloud VMs, SSH) is a new implementation.
#[async_trait::async_trait]
pub trait HostProvider: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Makes the host and starts its agent, which joins with `join_token`.
    async fn create(&self, host: &Name, join_token: &str) -> anyhow::Result<()>;
    /// Starts the agent of a made host (its instances come back with it).
    async fn start(&self, host: &Name) -> anyhow::Result<()>;
    /// Stops the agent and the host's instances; returns once both really stopped.
    /// Volumes, addresses and the host's identity stay.
    async fn stop(&self, host: &Name) -> anyhow::Result<()>;
    /// Stops and removes everything the host had.
    async fn remove(&self, host: &Name) -> anyhow::Result<()>;
    async fn list(&self) -> anyhow::Result<Vec<ProvidedHost>>;
}


fn provider_error(what: &str, host: &Name, e: anyhow::Error) -> HubError {
    HubError::new(ErrorCode::Unavailable, format!("cannot {what} host '{host}': {e:#}"))
}

/// The hub's host providers by name (`local`), and what the provider check remembers
/// about their hosts between passes.
#[derive(Default)]
pub struct Providers {
    registry: Mutex<HashMap<String, Arc<dyn HostProvider>>>,
    /// When a user last acted on a host (the provider check's grace window).
    actions: Mutex<HashMap<Name, Instant>>,
    /// Consecutive provider checks that did not find a host's agent running.
    misses: Mutex<HashMap<Name, u32>>,
}

impl Hub {
    pub async fn host_add(&self, p: &Principal, req: HostAdd) -> HubResult<HostJoinToken> {
        p.require_admin()?;
        if let Some(pv) = &req.provider {
            return self.host_add_provided(p, req.name, pv).await;
        }
        if req.join_ttl_secs.is_some_and(|s| !(60..=30 * 24 * 3600).contains(&s)) {
            return Err(HubError::invalid("join_ttl_secs: must be between 60 and 2592000 (30 days)"));
        }
        let (rec, token) = self.host_add_record(req.name).await?;
        if let Some(s) = req.join_ttl_secs {
            self.store.set_join_token_expiry(rec.id, Some(OffsetDateTime::now_utc() + std::time::Duration::from_secs(s))).await?;
        }
        self.event(&p.actor(), None, format!("host/{}", rec.name), "host.add", "ok", None).await;
        Ok(HostJoinToken { host: self.host_view(&rec).await?, join_token: token })
    }

    /// Creates a host in `joining` with a fresh one-time join token valid for the hub's
    /// `join_token_ttl` (or renews the token of a host that never joined).
    pub async fn host_add_record(&self, name: Name) -> HubResult<(HostRecord, String)> {
        let (rec, token) = self.host_add_record_untimed(name).await?;
        self.store.set_join_token_expiry(rec.id, Some(OffsetDateTime::now_utc() + self.config.join_token_ttl)).await?;
        Ok((rec, token))
    }

    async fn host_add_record_untimed(&self, name: Name) -> HubResult<(HostRecord, String)> {
        let secret = new_secret("");
        let token = format!("hjt1.{secret}.{}", &self.keys.ca.fingerprint()[..32]);
        let hash = hash_secret(&secret);
        if let Some(h) = self.store.get_host(&name).await? {
            return self.renew_join_token(h, hash, token).await;
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
            join_token_hash: Some(hash.clone()),
            cert_fingerprint: None,
            desired_generation: Generation::ZERO,
            created_at: OffsetDateTime::now_utc(),
            provider: None,
        };
        match self.store.insert_host(&rec).await {
            Ok(()) => Ok((rec, token)),
            // Another add of this name got there first: renew its token, as if it had
            // come first and this add second.
            Err(StoreError::AlreadyExists(what)) => match self.store.get_host(&rec.name).await? {
                Some(h) => self.renew_join_token(h, hash, token).await,
                None => Err(StoreError::AlreadyExists(what).into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Gives a host that has not joined yet a new join token (the old one stops working).
    async fn renew_join_token(&self, h: HostRecord, hash: String, token: String) -> HubResult<(HostRecord, String)> {
        if !self.store.renew_join_token(h.id, &hash).await? {
            return Err(HubError::new(ErrorCode::AlreadyExists, format!("host '{}' already exists and has joined", h.name)));
        }
        Ok((HostRecord { join_token_hash: Some(hash), ..h }, token))
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
            cert_fingerprint: h.cert_fingerprint.clone(),
            cert_rotation_pending: self.store.cert_rotation(h.id).await?.is_some(),
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

    pub async fn host_get(&self, p: &Principal, n: &Name) -> HubResult<Host> {
        p.require_admin()?;
        let h = self.store.get_host(n).await?.ok_or_else(|| HubError::not_found(format!("host '{n}' not found")))?;
        self.host_view(&h).await
    }

    /// Bumps a host's desired generation and wakes its long-poll (a host that is gone
    /// has nothing to be told).
    pub(crate) async fn bump_host(&self, host: &Name) -> HubResult<()> {
        let bumped = self.store.bump_host_generation(host).await?;
        self.host_bumped(bumped);
        Ok(())
    }

    /// Wakes the long-poll of the host a store write bumped, if it bumped one.
    pub(crate) fn host_bumped(&self, bumped: Option<(HostId, Generation)>) {
        if let Some((id, generation)) = bumped {
            self.coord.notifier.host_changed(id, generation);
        }
    }

    /// Bumps every host's generation, once at start: each agent fetches its document
    /// again, so a wake-up lost in a crash (another host's bump after an instance
    /// write, e.g. a tenant's overlay peers) reaches its host now, not at some
    /// unrelated later change.
    pub async fn reannounce_hosts(&self) -> HubResult<()> {
        for h in self.store.list_hosts().await? {
            self.bump_host(&h.name).await?;
        }
        Ok(())
    }

    /// Moves a host's state if `change` allows it, deciding and writing in one store
    /// call. The state it moved from, or None if the change did not apply or the host is
    /// gone.
    pub(crate) async fn change_host_state(&self, id: HostId, change: &HostStateChange) -> HubResult<Option<HostState>> {
        match self.store.change_host_state(id, change).await {
            Err(StoreError::NotFound(_)) => Ok(None),
            moved => Ok(moved?),
        }
    }

    pub fn register_provider(&self, p: Arc<dyn HostProvider>) {
        self.providers.registry.lock().unwrap_or_else(|e| e.into_inner()).insert(p.name().to_string(), p);
    }

    fn provider(&self, name: &str) -> HubResult<Arc<dyn HostProvider>> {
        let map = self.providers.registry.lock().unwrap_or_else(|e| e.into_inner());
        map.get(name).cloned().ok_or_else(|| {
            let known: Vec<String> = map.keys().cloned().collect();
            // Like any other name that names nothing here: not found.
            HubError::not_found(format!(
                "provider: '{name}' is not available on this hub (available: {}); `hangar up` and `hangar hub serve` run as root offer `local`",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            ))
        })
    }

    /// The provider of an existing host, or an error saying the host has none.
    async fn host_provider(&self, host: &Name) -> HubResult<(hangar_store::HostRecord, Arc<dyn HostProvider>)> {
        let h = self.store.get_host(host).await?.ok_or_else(|| HubError::not_found(format!("host '{host}' not found")))?;
        let Some(p) = h.provider.clone() else {
            return Err(HubError::new(
                ErrorCode::IllegalTransition,
                format!("host '{host}' was joined by hand, not made by a provider: stop or start its agent where it runs"),
            ));
        };
        Ok((h, self.provider(&p)?))
    }

    /// `host add NAME --provider P`: the record, a join token, and the provider makes it.
    pub(crate) async fn host_add_provided(&self, p: &Principal, name: Name, provider: &str) -> HubResult<HostJoinToken> {
        let prov = self.provider(provider)?;
        let (mut rec, token) = self.host_add_record(name.clone()).await?;
        self.store.set_host_provider(rec.id, Some(provider)).await?;
        rec.provider = Some(provider.to_string());
        self.touch_host(&name);
        let _pg = self.lock(LockKey::Provider(name.clone())).await;
        if let Err(e) = prov.create(&name, &token).await {
            // Nothing half-made stays: the provider cleans up after itself, the record goes.
            let _ = prov.remove(&name).await;
            self.store.delete_host(rec.id).await?;
            self.event(&p.actor(), None, format!("host/{name}"), "host.add", "error", Some(format!("provider {provider}: {e:#}"))).await;
            return Err(provider_error("make", &name, e));
        }
        self.event(&p.actor(), None, format!("host/{name}"), "host.add", "ok", Some(format!("made by provider {provider}"))).await;
        Ok(HostJoinToken { host: self.host_view(&rec).await?, join_token: token })
    }

    pub async fn host_drain(&self, p: &Principal, n: &Name, drain: bool) -> HubResult<Host> {
        p.require_admin()?;
        let not_found = || HubError::not_found(format!("host '{n}' not found"));
        let h = self.store.get_host(n).await?.ok_or_else(not_found)?;
        let to = if drain { HostState::Draining } else { HostState::Ready };
        let change = HostStateChange::to(to).from(&[HostState::Ready, HostState::Draining]);
        let Some(from) = self.change_host_state(h.id, &change).await? else {
            // Read again: the error names the state the host is in now.
            let now = self.store.get_host_by_id(h.id).await?.ok_or_else(not_found)?.state;
            return Err(HubError::new(
                ErrorCode::IllegalTransition,
                format!("cannot {} host '{n}': it is {}; only a ready host can be drained", if drain { "drain" } else { "undrain" }, now.as_str()),
            ));
        };
        let h = HostRecord { state: to, ..h };
        self.touch_host(n);
        let action = if drain { "host.drain" } else { "host.undrain" };
        self.event(&p.actor(), None, format!("host/{n}"), action, "ok", Some(format!("{} -> {}", from.as_str(), h.state.as_str()))).await;
        self.host_view(&h).await
    }

    /// Stops the host's agent and instances through its provider. Returns once they
    /// really stopped; a start asked meanwhile waits for that.
    pub async fn host_stop(&self, p: &Principal, n: &Name) -> HubResult<Host> {
        p.require_admin()?;
        let (_, prov) = self.host_provider(n).await?;
        let _pg = self.lock(LockKey::Provider(n.clone())).await;
        self.touch_host(n);
        self.set_host_state(n, HostState::Stopped, &p.actor(), "host.stop").await?;
        if let Err(e) = prov.stop(n).await {
            self.event(&p.actor(), None, format!("host/{n}"), "host.stop", "error", Some(format!("{e:#}"))).await;
            return Err(provider_error("stop", n, e));
        }
        self.mark_unknown(n).await?;
        self.touch_host(n);
        let h = self.store.get_host(n).await?.ok_or_else(|| HubError::not_found(format!("host '{n}' not found")))?;
        self.host_view(&h).await
    }

    /// Starts a stopped host's agent. The host is ready again only after the agent's
    /// first full report (every instance, converged), not on any earlier signal.
    pub async fn host_start(&self, p: &Principal, n: &Name) -> HubResult<Host> {
        p.require_admin()?;
        let (_, prov) = self.host_provider(n).await?;
        // Held by a stop still in progress: a start waits until the stop finished.
        let _pg = self.lock(LockKey::Provider(n.clone())).await;
        self.touch_host(n);
        self.set_host_state(n, HostState::Offline, &p.actor(), "host.start").await?;
        if let Err(e) = prov.start(n).await {
            self.event(&p.actor(), None, format!("host/{n}"), "host.start", "error", Some(format!("{e:#}"))).await;
            return Err(provider_error("start", n, e));
        }
        self.touch_host(n);
        let h = self.store.get_host(n).await?.ok_or_else(|| HubError::not_found(format!("host '{n}' not found")))?;
        self.host_view(&h).await
    }

    /// `host rotate-cert`: asks the host's agent to renew its certificate now. The host's
    /// document carries the fingerprint to replace (its generation is bumped, so the
    /// agent hears at once); the agent renews over mTLS, and the new certificate becomes
    /// the host's only one when the agent first presents it: from then on the old one is
    /// refused, by the hub's listener and by the pin the hub reaches the agent with.
    /// Asking again before that is harmless (the same request).
    pub async fn host_rotate_cert(&self, p: &Principal, n: &Name) -> HubResult<Host> {
        p.require_admin()?;
        let h = self.store.get_host(n).await?.ok_or_else(|| HubError::not_found(format!("host '{n}' not found")))?;
        let not_joined = || HubError::new(ErrorCode::IllegalTransition, format!("host '{n}' has not joined yet: it has no certificate to rotate"));
        let current = h.cert_fingerprint.clone().ok_or_else(not_joined)?;
        if !self.store.request_cert_rotation(h.id, &current).await? {
            return Err(HubError::new(ErrorCode::Conflict, format!("host '{n}' changed its certificate meanwhile: ask again")));
        }
        self.bump_host(n).await?;
        self.event(&p.actor(), None, format!("host/{n}"), "host.rotate-cert", "accepted", Some(format!("replacing certificate {}", &current[..current.len().min(16)]))).await;
        self.host_view(&h).await
    }

    /// Removes a host that holds no instances (its provider removes what it made).
    pub async fn host_remove(&self, p: &Principal, n: &Name) -> HubResult<Host> {
        p.require_admin()?;
        let h = self.store.get_host(n).await?.ok_or_else(|| HubError::not_found(format!("host '{n}' not found")))?;
        let left = self.store.list_instances(&InstanceFilter::host(n)).await?.len();
        if left > 0 {
            return Err(HubError::new(
                ErrorCode::IllegalTransition,
                format!("host '{n}' still holds {left} instance(s): drain it (pools move their members) and delete the rest first"),
            ));
        }
        if let Some(pv) = &h.provider {
            let prov = self.provider(pv)?;
            let _pg = self.lock(LockKey::Provider(n.clone())).await;
            prov.remove(n).await.map_err(|e| provider_error("remove", n, e))?;
        }
        self.store.delete_host(h.id).await?;
        self.event(&p.actor(), None, format!("host/{n}"), "host.remove", "ok", None).await;
        let mut view = self.host_view(&h).await?;
        view.state = HostState::Removed;
        Ok(view)
    }

    /// The agent's own view of its host, read live over mTLS.
    pub async fn host_status(&self, p: &Principal, n: &Name) -> HubResult<NodeStatus> {
        p.require_admin()?;
        let h = self.store.get_host(n).await?.ok_or_else(|| HubError::not_found(format!("host '{n}' not found")))?;
        // Not an outage: nothing to ask yet (a 409 the caller can wait out, not a 5xx).
        let endpoint = h
            .endpoint
            .clone()
            .ok_or_else(|| HubError::new(ErrorCode::Conflict, format!("host '{n}' has not reported yet ({}): wait until it is ready", h.state.as_str())))?;
        let agent = self.agent_client(&h, &endpoint).await?;
        agent.status().await.map_err(|e| HubError::new(ErrorCode::Unavailable, format!("host '{n}' ({}) does not answer: {e}", h.state.as_str())))
    }

    async fn set_host_state(&self, n: &Name, to: HostState, actor: &str, action: &str) -> HubResult<()> {
        let not_found = || HubError::not_found(format!("host '{n}' not found"));
        let h = self.store.get_host(n).await?.ok_or_else(not_found)?;
        // A change from any state applies unless the host is gone.
        let from = self.change_host_state(h.id, &HostStateChange::to(to)).await?.ok_or_else(not_found)?;
        self.event(actor, None, format!("host/{n}"), action, "ok", Some(format!("{} -> {}", from.as_str(), to.as_str()))).await;
        Ok(())
    }

    /// A host nobody hears from: what its instances do is unknown (they are kept).
    /// Touches only `observed`, not the instances' versions, so it needs no instance lock
    /// and never makes a request's compare-and-swap fail.
    pub(crate) async fn mark_unknown(&self, host: &Name) -> HubResult<u32> {
        Ok(self.store.mark_host_instances_unknown(host).await?)
    }

    /// Remembers a user action on a host: the provider check leaves it alone for a while.
    fn touch_host(&self, host: &Name) {
        self.providers.actions.lock().unwrap_or_else(|e| e.into_inner()).insert(host.clone(), Instant::now());
    }

    /// One provider check: a stale host its provider no longer has (or whose agent is
    /// gone while it should run) is marked missing after the grace window and
    /// `confirmations` consecutive readings agree. Its instances stay as they are.
    pub async fn check_providers(&self) -> HubResult<()> {
        let hosts = self.store.list_hosts().await?;
        let names: Vec<String> = self.providers.registry.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        for pname in names {
            let prov = self.provider(&pname)?;
            let Ok(provided) = prov.list().await else { continue };
            for h in hosts.iter().filter(|h| h.provider.as_deref() == Some(pname.as_str())) {
                // Only a host the hub also stopped hearing from can be missing: a provider's
                // view alone (a lost pid file, a slow listing) never is enough.
                if h.state != HostState::Stale {
                    self.providers.misses.lock().unwrap_or_else(|e| e.into_inner()).remove(&h.name);
                    continue;
                }
                let recent = self.providers.actions.lock().unwrap_or_else(|e| e.into_inner()).get(&h.name).is_some_and(|t| t.elapsed() < self.config.provider_grace);
                let fine = provided.iter().any(|p| p.name == h.name && p.running);
                let misses = {
                    let mut m = self.providers.misses.lock().unwrap_or_else(|e| e.into_inner());
                    let c = m.entry(h.name.clone()).or_insert(0);
                    *c = if fine || recent { 0 } else { *c + 1 };
                    *c
                };
                if misses >= self.config.confirmations {
                    self.providers.misses.lock().unwrap_or_else(|e| e.into_inner()).remove(&h.name);
                    let exists = provided.iter().any(|p| p.name == h.name);
                    let why = if exists { "its agent is not running" } else { "the provider has no such host" };
                    let change = HostStateChange::to(HostState::Missing).from(&[HostState::Stale]);
                    if self.change_host_state(h.id, &change).await?.is_none() {
                        continue; // it reported meanwhile (or was removed)
                    }
                    self.event("hub", None, format!("host/{}", h.name), "host.missing", "error", Some(format!("stale -> missing: provider {pname}: {why} ({misses} checks)"))).await;
                }
            }
        }
        Ok(())
    }
}
