//! The hangar hub: the control plane.
//!
//! [`Hub`] holds the store, the fleet's keys, the configuration, the [`coord`]ination
//! seam (keyed locks, wake-ups, loop leases), the host providers and the token cache.
//! Each capability is a module of plain async methods on [`Hub`] that take a
//! [`Principal`] and typed values and do the locking, store access, policy, events and
//! wake-ups: [`tenants`], [`instances`], [`operations`], [`pools`], [`hosts`],
//! [`network`], [`tokens`], [`events`], [`images`], [`secrets`], [`proxy`] (the HTTP proxy
//! and its tokens), and [`agents`] (the hub-agent protocol).
//! [`api`] has one HTTP module per capability; [`server`] serves the router over TLS,
//! where client certificates identify hosts; [`monitor`] runs the background loops.

pub mod agents;
pub mod api;
pub mod auth;
pub mod backups;
pub mod coord;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod files;
pub mod hosts;
pub mod images;
pub mod instances;
pub mod monitor;
pub mod network;
pub mod operations;
pub mod pools;
pub mod proxy;
pub mod secrets;
pub mod server;
pub mod snapshots;
pub mod sessions;
pub mod ssh;
pub mod tenants;
pub mod tokens;
pub mod transfer;
pub mod moves;
pub mod evacuate;
pub mod uid_ranges;

pub use auth::Principal;
pub use coord::{Coordination, LockKey};
pub use error::{HubError, HubResult};
pub use hosts::{HostProvider, ProvidedHost};

use coord::LockGuard;
use hangar_store::{NewEvent, Store};
use hangar_tls::{Ca, CertifiedKey};
use hangar_types::Name;
use std::sync::Arc;
use std::time::Duration;

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
    /// The host uid/gid ranges sandboxes' user namespaces are cut from (see
    /// [`uid_ranges`]).
    pub uid_ranges: hangar_types::idmap::IdPool,
    /// The SSH gateway `hub serve` starts (see [`ssh`]).
    pub ssh: ssh::SshConfig,
    /// How long after `instance delete --hard` its backups are purged (cancellable
    /// until then).
    pub backup_purge_delay: Duration,
    /// How long a host certificate is valid; agents renew at a third left.
    pub host_cert_lifetime: Duration,
    /// How long a join token works unless `host add` says otherwise.
    pub join_token_ttl: Duration,
    /// Requests a second one API token may make on average (0: no limit), and in a burst.
    pub token_rate: f64,
    pub token_burst: f64,
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
            uid_ranges: hangar_types::idmap::IdPool::default(),
            ssh: ssh::SshConfig::default(),
            backup_purge_delay: Duration::from_secs(7 * 24 * 3600),
            host_cert_lifetime: Duration::from_secs(7 * 24 * 3600),
            join_token_ttl: Duration::from_secs(3600),
            // Well above what the CLI, smoke, soak and bench make; a flood is what it stops.
            token_rate: 200.0,
            token_burst: 1000.0,
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
    /// Locks, wake-ups and loop leadership (in-process for a single hub).
    pub coord: Coordination,
    /// Host providers and what the provider check remembers about their hosts.
    pub(crate) providers: hosts::Providers,
    /// API tokens already verified.
    pub(crate) token_cache: auth::TokenCache,
    /// The key secrets are sealed with ([`secrets`]).
    pub(crate) secret_key: secrets::SecretKey,
    /// The proxy's TLS configuration for agents ([`proxy`]).
    pub(crate) proxy: proxy::ProxyState,
    /// The SSH gateway's port and host key, once `hub serve` started it.
    pub(crate) ssh_gateway: std::sync::OnceLock<hangar_types::api::SshGateway>,
    /// The CA host certificates come from: not the one behind the hub's server
    /// certificate, so nothing a host holds can pose as the hub (see [`Hub::set_hosts_ca`]).
    pub(crate) hosts_ca: std::sync::OnceLock<Arc<Ca>>,
    /// Per-token request rates and the failed-authentication event budget.
    pub(crate) auth_guard: auth::AuthGuard,
    /// Who waits on which operation, woken one by one.
    pub(crate) op_waiters: operations::OperationWaiters,
}

impl Hub {
    pub fn new(store: Arc<dyn Store>, keys: HubKeys, config: HubConfig) -> Arc<Hub> {
        Hub::with_coordination(store, keys, config, Coordination::in_process())
    }

    /// A hub whose locks, wake-ups and leases are shared with other hubs through `coord`.
    pub fn with_coordination(store: Arc<dyn Store>, keys: HubKeys, config: HubConfig, coord: Coordination) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            keys,
            coord,
            providers: Default::default(),
            token_cache: Default::default(),
            secret_key: Default::default(),
            proxy: Default::default(),
            ssh_gateway: Default::default(),
            hosts_ca: Default::default(),
            auth_guard: auth::AuthGuard::new(config.token_rate, config.token_burst),
            op_waiters: Default::default(),
            config,
        })
    }

    pub(crate) async fn lock(&self, key: LockKey) -> LockGuard {
        self.coord.locks.lock(key).await
    }

    /// A client for a host's agent endpoint, presenting the hub's client certificate and
    /// accepting only the host's registered certificate (or its renewed one), by
    /// fingerprint; every call has an overall timeout.
    pub(crate) async fn agent_client(&self, host: &hangar_store::HostRecord, endpoint: &str) -> HubResult<hangar_client::AgentClient> {
        Ok(hangar_client::AgentClient::pinned(endpoint, self.agent_tls(host).await?)?)
    }

    /// The TLS client configuration for calls to `host`'s agent: the hub's client
    /// certificate, and only the host's own certificate (current or staged renewal)
    /// accepted as the server's. Every hub-to-agent connection is made with it.
    pub(crate) async fn agent_tls(&self, host: &hangar_store::HostRecord) -> HubResult<rustls::ClientConfig> {
        let mut pins: Vec<String> = host.cert_fingerprint.iter().cloned().collect();
        pins.extend(self.store.host_cert_next(host.id).await?);
        let k = &self.keys;
        hangar_tls::pinned_client_config(pins, Some((&k.client.cert_pem, &k.client.key_pem))).map_err(|e| HubError::internal(e.to_string()))
    }

    /// Sets the hosts' CA (the node crate loads it from the hub's files); without one, a
    /// fresh CA that lives as long as this hub (tests).
    pub fn set_hosts_ca(&self, ca: Arc<Ca>) {
        let _ = self.hosts_ca.set(ca);
    }

    pub fn hosts_ca(&self) -> &Arc<Ca> {
        self.hosts_ca.get_or_init(|| Arc::new(Ca::generate("hangar hosts CA").expect("a CA can be generated")))
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

/// A name from a path or query parameter; the error names the parameter.
pub(crate) fn parse_name(what: &str, s: &str) -> HubResult<Name> {
    s.parse::<Name>().map_err(|e| HubError::invalid(format!("{what}: {e}")))
}
