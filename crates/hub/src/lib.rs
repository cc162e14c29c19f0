//! The hangar hub: the control plane.
//!
//! [`Hub`] holds the store, the fleet's CA and the in-memory signals (long-poll wake-ups,
//! operation changes, per-instance locks). The logic lives in plain async methods
//! ([`instances`], [`agents`]) that take a [`Principal`]; [`http`] maps them onto REST
//! routes and [`server`] serves those over TLS, where client certificates identify hosts.

pub mod agents;
pub mod auth;
pub mod error;
pub mod hosts;
pub mod http;
pub mod instances;
pub mod monitor;
pub mod network;
pub mod pools;
pub mod server;

pub use auth::Principal;
pub use error::{HubError, HubResult};

use hangar_store::{NewEvent, Store};
use hangar_tls::{Ca, CertifiedKey};
use hangar_types::{HostId, InstanceId, Name};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Tunables of a hub; defaults suit a small fleet.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// A host without a report for this long is marked stale.
    pub stale_after: Duration,
    /// An operation not finished after this long fails with a timeout.
    pub operation_timeout: Duration,
    /// How much vCPU a host may promise beyond its cores. vCPUs are CFS quotas, not
    /// reservations, and idle workspaces cost next to nothing, so this is generous.
    pub cpu_overcommit: f64,
    /// Same for memory of instances that hold memory (starting, running, warm).
    pub mem_overcommit: f64,
    /// Same for volume sizes (btrfs volumes are thin).
    pub disk_overcommit: f64,
    /// The range tenant subnets are cut from.
    pub cluster_range: hangar_types::net::ClusterRange,
    /// A stale host is marked offline once silent this long, confirmed on
    /// `confirmations` consecutive checks.
    pub offline_after: Duration,
    /// How many consecutive checks must agree before a host is marked offline or missing.
    pub confirmations: u32,
    /// How long a manual request on a pool member holds the pool's reconciler off it.
    pub pool_hold: Duration,
    /// How often every pool is reconciled (besides right after each scale).
    pub pool_interval: Duration,
    /// After a user action on a provider's host, how long the provider check leaves it be.
    pub provider_grace: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            stale_after: Duration::from_secs(12),
            operation_timeout: Duration::from_secs(300),
            cpu_overcommit: 256.0,
            mem_overcommit: 1.5,
            disk_overcommit: 4.0,
            cluster_range: hangar_types::net::ClusterRange::default(),
            offline_after: Duration::from_secs(300),
            confirmations: 3,
            pool_hold: Duration::from_secs(60),
            pool_interval: Duration::from_secs(2),
            provider_grace: Duration::from_secs(15),
        }
    }
}

/// The hub's key material.
#[derive(Clone)]
pub struct HubKeys {
    pub ca: Arc<Ca>,
    /// The hub's TLS server certificate (API and agent protocol).
    pub server: CertifiedKey,
    /// The certificate the hub presents to agents' endpoints.
    pub client: CertifiedKey,
}

pub struct Hub {
    pub store: Arc<dyn Store>,
    pub keys: HubKeys,
    pub config: HubConfig,
    /// One channel per host; the value is the host's desired generation.
    host_watch: Mutex<HashMap<HostId, watch::Sender<i64>>>,
    /// Ticks whenever any operation may have finished.
    ops_changed: watch::Sender<u64>,
    /// One lock per instance: serializes requests and observations on it.
    instance_locks: Mutex<HashMap<InstanceId, Arc<tokio::sync::Mutex<()>>>>,
    /// One lock per tenant: makes quota checks and the changes they allow atomic.
    tenant_locks: Mutex<HashMap<Name, Arc<tokio::sync::Mutex<()>>>>,
    /// One lock per host: every read-modify-write of a host row holds it, so a report
    /// (heartbeat) can never write back a stale desired generation over a newer one.
    host_locks: Mutex<HashMap<Name, Arc<tokio::sync::Mutex<()>>>>,
    /// Host providers by name (`local`).
    providers: Mutex<HashMap<String, Arc<dyn hosts::HostProvider>>>,
    /// One lock per provider host: a start waits for a stop in progress, and so on.
    provider_locks: Mutex<HashMap<Name, Arc<tokio::sync::Mutex<()>>>>,
    /// When a user last acted on a host (the provider check's grace window).
    host_actions: Mutex<HashMap<Name, std::time::Instant>>,
    /// Consecutive provider checks that did not find a host's agent running.
    misses: Mutex<HashMap<Name, u32>>,
    /// Consecutive monitor checks that found a stale host past `offline_after`.
    offline_confirmations: Mutex<HashMap<Name, u32>>,
    /// Wakes the pool loop: a scale left steps for it.
    pub(crate) pool_wake: tokio::sync::Notify,
    /// API tokens already verified.
    pub(crate) token_cache: auth::TokenCache,
}

impl Hub {
    pub fn new(store: Arc<dyn Store>, keys: HubKeys, config: HubConfig) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            keys,
            config,
            host_watch: Mutex::new(HashMap::new()),
            ops_changed: watch::channel(0).0,
            instance_locks: Mutex::new(HashMap::new()),
            tenant_locks: Mutex::new(HashMap::new()),
            host_locks: Mutex::new(HashMap::new()),
            providers: Mutex::new(HashMap::new()),
            provider_locks: Mutex::new(HashMap::new()),
            host_actions: Mutex::new(HashMap::new()),
            misses: Mutex::new(HashMap::new()),
            offline_confirmations: Mutex::new(HashMap::new()),
            pool_wake: tokio::sync::Notify::new(),
            token_cache: Default::default(),
        })
    }

    fn host_sender(&self, host: HostId) -> watch::Sender<i64> {
        let mut map = self.host_watch.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(host).or_insert_with(|| watch::channel(0).0).clone()
    }

    /// Wakes a host's long-poll.
    pub(crate) fn notify_host(&self, host: HostId, generation: i64) {
        self.host_sender(host).send_replace(generation);
    }

    pub(crate) fn subscribe_host(&self, host: HostId) -> watch::Receiver<i64> {
        self.host_sender(host).subscribe()
    }

    pub(crate) fn notify_ops(&self) {
        self.ops_changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn subscribe_ops(&self) -> watch::Receiver<u64> {
        self.ops_changed.subscribe()
    }

    pub(crate) fn instance_lock(&self, id: InstanceId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.instance_locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id).or_default().clone()
    }

    pub(crate) fn forget_instance_lock(&self, id: InstanceId) {
        self.instance_locks.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    pub(crate) fn host_lock(&self, host: &Name) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.host_locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(host.clone()).or_default().clone()
    }

    pub(crate) fn tenant_lock(&self, tenant: &Name) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.tenant_locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(tenant.clone()).or_default().clone()
    }

    /// Records an audit event; a failure to record is logged, never hidden from the log.
    pub(crate) async fn event(
        &self,
        actor: &str,
        tenant: Option<&Name>,
        object: String,
        action: &str,
        result: &str,
        message: Option<String>,
    ) {
        let ev = NewEvent {
            actor: actor.to_string(),
            tenant: tenant.cloned(),
            object,
            action: action.to_string(),
            result: result.to_string(),
            message,
        };
        if let Err(e) = self.store.insert_event(&ev).await {
            tracing::error!(error = %e, action, "could not record event");
        }
    }
}
