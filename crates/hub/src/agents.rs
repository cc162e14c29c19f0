//! The hub's side of the hub-agent protocol: join, desired-state long-poll, reports.
//!
//! Observed state only ever comes from here, and only a report made for an instance's
//! current generation moves its state machine.

use crate::auth::{hash_secret, Principal};
use crate::error::{HubError, HubResult};
use crate::{Hub, LockKey};
use hangar_store::{HostRecord, HostReport, HostStateChange, InstanceFilter, InstanceVersion, StoreError};
use hangar_types::api::{HostState, Instance};
use hangar_types::protocol::{AgentReport, DesiredDoc, DesiredInstance, DesiredPool, DesiredTenant, JoinRequest, JoinResponse, RenewRequest, RenewResponse, PROTOCOL_VERSION};
use hangar_types::state::transition;
use hangar_types::{ErrorCode, Generation, InstanceId, InstanceState, Name, ObservedState, Transition};
use std::collections::HashMap;
use std::time::Duration;
use time::OffsetDateTime;

impl Hub {
    /// Exchanges a one-time join token and a CSR for a host certificate.
    pub async fn join(&self, req: JoinRequest, peer_ip: Option<std::net::IpAddr>) -> HubResult<JoinResponse> {
        let mut parts = req.join_token.split('.');
        let (Some("hjt1"), Some(secret), Some(_pin), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(HubError::invalid("join token is malformed: use the token printed by `hangar host add NAME`"));
        };
        let mut names = req.names.clone();
        if let Some(ip) = peer_ip {
            names.push(ip.to_string());
        }
        names.push("localhost".into());
        names.sort();
        names.dedup();
        // Look the host up first so its name goes into the certificate; consuming the
        // token then records the fingerprint atomically, so of two racing joins with one
        // token only one gets a working certificate.
        let hash = hash_secret(secret);
        let hosts = self.store.list_hosts().await?;
        let host = hosts
            .into_iter()
            .find(|h| h.join_token_hash.as_deref() == Some(hash.as_str()))
            .ok_or_else(|| HubError::new(ErrorCode::Unauthenticated, "join token is unknown or already used: ask for a new one with `hangar host add NAME`"))?;
        if self.store.join_token_expiry(host.id).await?.is_some_and(|at| at <= OffsetDateTime::now_utc()) {
            return Err(HubError::new(ErrorCode::Unauthenticated, format!("join token expired: ask for a new one with `hangar host add {}`", host.name)));
        }
        let cert_pem = self
            .hosts_ca()
            .sign_host_csr(&req.csr_pem, host.name.as_str(), &names, self.config.host_cert_lifetime)
            .map_err(|e| HubError::invalid(format!("csr_pem: {e}")))?;
        let fp = hangar_tls::fingerprint_pem(&cert_pem).map_err(|e| HubError::internal(e.to_string()))?;
        let host = self
            .store
            .consume_join_token(&hash, &fp)
            .await?
            .ok_or_else(|| HubError::new(ErrorCode::Unauthenticated, "join token is unknown or already used: ask for a new one with `hangar host add NAME`"))?;
        self.event(&format!("host:{}", host.name), None, format!("host/{}", host.name), "host.join", "ok", None).await;
        Ok(JoinResponse {
            host_id: host.id,
            host: host.name,
            cert_pem,
            ca_pem: self.keys.ca.cert_pem().to_string(),
            hub_client_fingerprint: hangar_tls::fingerprint_pem(&self.keys.client.cert_pem).map_err(|e| HubError::internal(e.to_string()))?,
        })
    }

    /// Signs a joined host's new key for another lifetime. The certificate it called with
    /// keeps working until the agent presents the new one ([`Store::promote_host_cert`]),
    /// so a crash on either side between the two cannot lock the host out.
    ///
    /// [`Store::promote_host_cert`]: hangar_store::Store::promote_host_cert
    pub async fn renew_host_cert(&self, host: &HostRecord, presented: &str, req: RenewRequest) -> HubResult<RenewResponse> {
        let names = host_cert_names(host);
        let cert_pem = self
            .hosts_ca()
            .sign_host_csr(&req.csr_pem, host.name.as_str(), &names, self.config.host_cert_lifetime)
            .map_err(|e| HubError::invalid(format!("csr_pem: {e}")))?;
        let fp = hangar_tls::fingerprint_pem(&cert_pem).map_err(|e| HubError::internal(e.to_string()))?;
        if !self.store.stage_host_cert(host.id, presented, &fp).await? {
            return Err(HubError::new(ErrorCode::Conflict, "the host's certificate changed meanwhile: renew again with the current one"));
        }
        self.event(&format!("host:{}", host.name), None, format!("host/{}", host.name), "host.renew-cert", "ok", None).await;
        Ok(RenewResponse { cert_pem })
    }

    /// The desired-state document of one host, built from the store.
    pub async fn desired_doc(&self, host: &HostRecord) -> HubResult<DesiredDoc> {
        let list = self.store.list_instances(&InstanceFilter::host(&host.name)).await?;
        let tenants: std::collections::HashMap<_, _> = self.store.list_tenants().await?.into_iter().map(|t| (t.name.clone(), t)).collect();
        let mut names: Vec<&hangar_types::Name> = list.iter().map(|i| &i.tenant).collect();
        names.sort();
        names.dedup();
        let mut pools = vec![];
        for t in &names {
            for p in self.store.list_pools(Some(t)).await? {
                if list.iter().any(|i| i.tenant == p.tenant && i.pool.as_ref() == Some(&p.name)) {
                    pools.push(DesiredPool { tenant: p.tenant, name: p.name, role: p.role, counts: p.counts });
                }
            }
        }
        // Each tenant's overlay: the underlay addresses of the other hosts it has
        // instances on. This host joins only with an underlay address of its own.
        let local = host.endpoint.as_deref().and_then(hangar_types::net::underlay_of);
        let mut overlays: std::collections::HashMap<hangar_types::Name, hangar_types::net::Overlay> = Default::default();
        if let Some(local) = local {
            let underlay: std::collections::HashMap<hangar_types::Name, std::net::Ipv4Addr> = self
                .store
                .list_hosts()
                .await?
                .into_iter()
                .filter(|h| h.state != HostState::Stopped)
                .filter_map(|h| Some((h.name, h.endpoint.as_deref().and_then(hangar_types::net::underlay_of)?)))
                .collect();
            // The route gate: a moved instance is routed to its new host only once that
            // host reported it there (crate::moves::route_hosts).
            let routes = self.move_routes().await?;
            for t in &names {
                let Some(tenant) = tenants.get(*t) else { continue };
                let mut peers: Vec<std::net::Ipv4Addr> = self
                    .store
                    .list_instances(&InstanceFilter::tenant(t))
                    .await?
                    .iter()
                    .filter_map(|i| routes.get(&i.id).or(i.host.as_ref()))
                    .filter(|h| **h != host.name)
                    .filter_map(|h| underlay.get(h).copied())
                    .filter(|ip| *ip != local)
                    .collect();
                peers.sort();
                peers.dedup();
                if !peers.is_empty() {
                    let vni = hangar_types::net::vni(self.config.cluster_range.subnet(tenant.net_id));
                    overlays.insert((*t).clone(), hangar_types::net::Overlay { vni, local, peers });
                }
            }
        }
        // Registered images, resolved for the host; read only if an instance names one.
        let images = match list.iter().any(|i| matches!(i.spec.image, hangar_types::api::ImageRef::Named(_))) {
            true => self.resolved_images().await?,
            false => Default::default(),
        };
        let schedules: HashMap<InstanceId, hangar_types::snapshots::SnapshotSchedule> = self.store.list_snapshot_schedules(Some(&host.name)).await?.into_iter().collect();
        // Secrets by name and version only: the agent fetches values over mTLS.
        let mut stamps = self.secret_stamps(&list).await?;
        Ok(DesiredDoc {
            tenants: names.iter().filter_map(|n| tenants.get(*n)).map(|t| DesiredTenant { name: t.name.clone(), quotas: t.quotas }).collect(),
            pools,
            schema_version: PROTOCOL_VERSION,
            host: host.name.clone(),
            host_id: host.id,
            generation: host.desired_generation,
            cluster_range: Some(self.config.cluster_range.to_string()),
            rotate_cert: self.store.cert_rotation(host.id).await?,
            instances: list
                .into_iter()
                .map(|i| DesiredInstance {
                    secrets: stamps.remove(&i.id).unwrap_or_default(),
                    network: match (tenants.get(&i.tenant), i.address) {
                        (Some(t), Some(a)) => Some(hangar_types::net::NetSpec { overlay: overlays.get(&i.tenant).cloned(), ..self.net_spec(t, a) }),
                        _ => None,
                    },
                    id: i.id,
                    tenant: i.tenant,
                    name: i.name,
                    desired: i.state.desired(),
                    generation: i.generation,
                    image: match &i.spec.image {
                        hangar_types::api::ImageRef::Named(n) => images.get(n).cloned(),
                        _ => None,
                    },
                    snapshot_schedule: schedules.get(&i.id).copied(),
                    spec: i.spec,
                    pool: i.pool,
                    ids: i.ids,
                })
                .collect(),
        })
    }

    /// The desired-state document of a host, as its agent would get it.
    pub async fn host_desired(&self, p: &Principal, n: &Name) -> HubResult<DesiredDoc> {
        p.require_admin()?;
        let h = self.store.get_host(n).await?.ok_or_else(|| HubError::not_found(format!("host '{n}' not found")))?;
        self.desired_doc(&h).await
    }

    /// Answers when the host's generation passes `after` (at once without one), or
    /// after `wait`.
    pub async fn desired_long_poll(&self, host: &HostRecord, after: Option<Generation>, wait: Duration) -> HubResult<DesiredDoc> {
        let mut rx = self.coord.notifier.watch_host(host.id);
        let deadline = tokio::time::Instant::now() + wait.min(Duration::from_secs(60));
        loop {
            let h = self.store.get_host_by_id(host.id).await?.ok_or_else(|| HubError::not_found("host was removed"))?;
            if after.is_none_or(|after| h.desired_generation > after) {
                return self.desired_doc(&h).await;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.desired_doc(&h).await,
            }
        }
    }

    /// Applies a host's report: heartbeat, capacity, and observations for the current
    /// generation of each instance.
    pub async fn report(&self, host: HostRecord, report: AgentReport) -> HubResult<()> {
        if report.schema_version != PROTOCOL_VERSION {
            return Err(HubError::invalid(format!(
                "protocol version {} is not supported by this hub (speaks {PROTOCOL_VERSION}): upgrade the agent or the hub",
                report.schema_version
            )));
        }
        let removed = || HubError::not_found("host was removed");
        let h = self.store.get_host_by_id(host.id).await?.ok_or_else(removed)?;
        if h.state == HostState::Stopped {
            // A stopped host comes back only through `host start`: a stray agent's report
            // (one that outlived the stop) must not revive it.
            return Err(HubError::new(ErrorCode::IllegalTransition, format!("host '{}' is stopped: start it with `hangar host start {}`", h.name, h.name)));
        }
        // Writes only what the host says: never its state or desired generation, so a
        // bump or a stop landing meanwhile stays.
        let said = HostReport {
            at: OffsetDateTime::now_utc(),
            capacity: report.capacity,
            endpoint: report.endpoint.clone(),
            drivers: report.drivers.clone(),
            agent_version: report.agent_version.clone(),
        };
        let h = match self.store.record_host_report(h.id, &said).await {
            Err(StoreError::NotFound(_)) => return Err(removed()),
            recorded => recorded?,
        };
        // Every report is a full one (each instance, after a convergence pass), so one is
        // enough to trust the host again; a stopped host is not among these states.
        let trusted = HostStateChange::to(HostState::Ready).from(&[HostState::Joining, HostState::Stale, HostState::Offline, HostState::Missing]);
        if let Some(was) = self.change_host_state(h.id, &trusted).await? {
            self.event(&format!("host:{}", h.name), None, format!("host/{}", h.name), "host.state", "ok", Some(format!("{} -> ready", was.as_str()))).await;
        }
        // One read of the host's instances sorts out the observations that change
        // nothing (most of them, on a settled host), instead of a read per instance;
        // the rest are applied one by one under their instance's lock.
        let stored: HashMap<InstanceId, Instance> =
            self.store.list_instances(&InstanceFilter::host(&h.name)).await?.into_iter().map(|i| (i.id, i)).collect();
        self.observe_snapshots(&h, &stored, &report.instances).await?;
        let mut deleted = false;
        for obs in report.instances {
            if stored.get(&obs.id).is_some_and(|i| observation_is_noop(i, &obs)) {
                continue;
            }
            deleted |= self.observe(&h, obs).await?;
        }
        if deleted {
            self.bump_host(&h.name).await?;
        }
        Ok(())
    }

    /// Applies one observation; returns whether it deleted the instance, which the
    /// host's desired document must then drop. (A new desired state bumps the host in
    /// the same write as the instance.)
    async fn observe(&self, host: &HostRecord, obs: hangar_types::protocol::ObservedInstance) -> HubResult<bool> {
        let _g = self.lock(LockKey::Instance(obs.id)).await;
        let Some(read) = self.store.get_instance_by_id(obs.id).await? else { return Ok(false) };
        let mut inst = read.clone();
        if inst.host.as_ref() != Some(&host.name) || obs.generation != inst.generation {
            return Ok(false); // stale or misplaced report: only current observations count
        }
        if inst.state == InstanceState::Deleted && obs.state == ObservedState::Gone {
            self.store.delete_instance(inst.id).await?;
            self.tenant_hosts_changed(&inst.tenant, &host.name).await?;
            self.coord.locks.forget(&LockKey::Instance(inst.id));
            self.settle_operations(inst.id).await?;
            self.event(&format!("host:{}", host.name), Some(&inst.tenant), format!("instance/{}/{}", inst.tenant, inst.name), "instance.delete", "ok", None).await;
            return Ok(true);
        }
        if observation_is_noop(&inst, &obs) {
            return Ok(false);
        }
        let from = inst.state;
        let to = transition(from, Transition::Observed(obs.state))?;
        inst.observed = obs.state;
        inst.state = to;
        if obs.error.is_some() {
            inst.error = obs.error.clone();
        }
        let desired_changed = from.desired() != to.desired();
        if desired_changed {
            // A new desired state is a new generation, like a request.
            inst.desired = to.desired();
            inst.generation = self.store.next_generation().await?;
        }
        inst.updated_at = OffsetDateTime::now_utc();
        let bump = inst.host.as_ref().filter(|_| desired_changed);
        match self.store.update_instance_if(&inst, InstanceVersion::of(&read), bump).await {
            Ok(bumped) => self.host_bumped(bumped),
            // A newer decision about the instance landed since the read (another hub's
            // request): this observation was made for what it replaced.
            Err(StoreError::Conflict(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        if from != to {
            let result = if to == InstanceState::Failed { "error" } else { "ok" };
            self.event(
                &format!("host:{}", host.name),
                Some(&inst.tenant),
                format!("instance/{}/{}", inst.tenant, inst.name),
                "instance.state",
                result,
                Some(match &obs.error {
                    Some(e) => format!("{from} -> {to}: {e}"),
                    None => format!("{from} -> {to}"),
                }),
            )
            .await;
        }
        self.settle_operations(inst.id).await?;
        Ok(false)
    }
}

/// The names a renewed host certificate carries: the endpoint's host as reported, and
/// localhost (the same kind of names a join gives).
fn host_cert_names(host: &HostRecord) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Some(h) = host.endpoint.as_deref().and_then(|e| e.strip_prefix("https://")).and_then(|e| e.rsplit_once(':')).map(|(h, _)| h.trim_matches(['[', ']'])) {
        names.push(h.to_string());
    }
    names.sort();
    names.dedup();
    names
}

/// Whether applying `obs` to `inst` as stored would change nothing: a stale
/// generation, or the same observation the store already holds. [`Hub::observe`]
/// decides with it, and reports use it to skip unchanged instances without a read each.
fn observation_is_noop(inst: &Instance, obs: &hangar_types::protocol::ObservedInstance) -> bool {
    if obs.generation != inst.generation {
        return true; // stale: observe ignores it too
    }
    if inst.state == InstanceState::Deleted && obs.state == ObservedState::Gone {
        return false;
    }
    inst.observed == obs.state && inst.error == obs.error && transition(inst.state, Transition::Observed(obs.state)).is_ok_and(|to| to == inst.state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HubConfig, HubKeys};
    use hangar_types::api::Capacity;
    use std::sync::Arc;

    async fn hub() -> (tempfile::TempDir, Arc<Hub>) {
        let dir = tempfile::tempdir().unwrap();
        let store = hangar_store::open(&dir.path().join("hub.db").to_string_lossy()).await.unwrap();
        let ca = hangar_tls::Ca::generate("test").unwrap();
        let keys = HubKeys { server: ca.issue_server("hub", &["localhost".into()]).unwrap(), client: ca.issue_client("hub").unwrap(), ca: Arc::new(ca) };
        (dir, Hub::new(store, keys, HubConfig::default()))
    }

    /// Regression (found by `hangar soak` churn): a report read the host row, a request
    /// bumped its desired generation, and the report wrote the old generation back. The
    /// agent's long-poll then never saw the change and an instance stayed `stopping`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reports_never_write_back_a_stale_desired_generation() {
        let (_dir, hub) = hub().await;
        let name: hangar_types::Name = "node".parse().unwrap();
        let rec = HostRecord { state: HostState::Ready, join_token_hash: None, cert_fingerprint: Some("fp".into()), ..hangar_store::contract::fixtures::host("node") };
        hub.store.insert_host(&rec).await.unwrap();
        let report = AgentReport {
            schema_version: PROTOCOL_VERSION,
            agent_version: "t".into(),
            capacity: Capacity::default(),
            endpoint: "https://127.0.0.1:1".into(),
            drivers: vec![],
            instances: vec![],
        };
        for _ in 0..200 {
            let (a, b) = tokio::join!(hub.report(rec.clone(), report.clone()), hub.bump_host(&name));
            a.unwrap();
            b.unwrap();
            let h = hub.store.get_host(&name).await.unwrap().unwrap();
            let latest = Generation::new(hub.store.next_generation().await.unwrap().get() - 1);
            // The bump's generation is the newest the counter handed out before this read.
            assert_eq!(h.desired_generation, latest, "a report wrote back an old desired generation");
        }
    }
}
