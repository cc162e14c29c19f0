//! Tenant networks: each instance's address in its tenant's subnet, the spec a host
//! wires it with, the overlay peers that change when a tenant reaches or leaves a host,
//! and `hangar net verify`: what the store says each host's tenant networking should
//! be, next to what each agent finds, plus active probes inside running instances (same
//! tenant reachable; other tenants and the host unreachable).

use crate::error::{HubError, HubResult};
use crate::{Hub, Principal};
use hangar_store::InstanceFilter;
use hangar_types::api::{ExecRequest, HostState, Instance, Tenant};
use hangar_types::net::{veth_name, NetCheck, NetVerifyReport};
use hangar_types::{ErrorCode, InstanceState, Name, ObservedState};
use std::collections::{BTreeMap, BTreeSet};

fn check(host: &str, check: String, ok: bool, detail: impl Into<String>) -> NetCheck {
    NetCheck { host: host.to_string(), check, ok, detail: detail.into() }
}

impl Hub {
    /// The lowest free address of the tenant's subnet. Called under the tenant lock; the
    /// store's unique index on (tenant, address) is the last line of defence.
    pub(crate) async fn allocate_address(&self, t: &Tenant) -> HubResult<std::net::Ipv4Addr> {
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

    pub async fn net_verify(&self, p: &Principal) -> HubResult<NetVerifyReport> {
        p.require_admin()?;
        let tenants: BTreeMap<_, _> = self.store.list_tenants().await?.into_iter().map(|t| (t.name.clone(), t)).collect();
        let r = self.config.cluster_range;
        let mut checks = vec![];
        for h in self.store.list_hosts().await? {
            let host = h.name.to_string();
            let Some(endpoint) = h.endpoint.clone().filter(|_| h.state == HostState::Ready) else {
                if h.state != HostState::Joining {
                    checks.push(check(&host, "host reachable".into(), false, format!("host is {}", h.state.as_str())));
                }
                continue;
            };
            let agent = self.agent_client(&endpoint)?;
            let found = match agent.network().await {
                Ok(f) => f,
                Err(e) => {
                    checks.push(check(&host, "agent network report".into(), false, e.to_string()));
                    continue;
                }
            };
            let insts: Vec<Instance> = self
                .store
                .list_instances(&InstanceFilter::host(&h.name))
                .await?
                .into_iter()
                .filter(|i| i.state != InstanceState::Deleted && i.address.is_some())
                .collect();
            let net_of = |i: &Instance| tenants.get(&i.tenant).map(|t| self.net_spec(t, i.address.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)));
            // Bridges: one per tenant with instances here, up, holding the gateway.
            let mut expected = BTreeSet::new();
            for i in &insts {
                let Some(n) = net_of(i) else { continue };
                if !expected.insert(n.bridge.clone()) {
                    continue;
                }
                let want = format!("{}/{}", n.gateway, n.prefix_len);
                let (ok, detail) = match found.bridges.iter().find(|b| b.name == n.bridge) {
                    None => (false, "missing".to_string()),
                    Some(b) if !b.up => (false, "down".into()),
                    Some(b) if !b.addresses.contains(&want) => (false, format!("has {:?}, expected {want}", b.addresses)),
                    Some(_) => (true, format!("up, {want} (tenant {})", i.tenant)),
                };
                checks.push(check(&host, format!("bridge {}", n.bridge), ok, detail));
            }
            for b in found.bridges.iter().filter(|b| !expected.contains(&b.name)) {
                let ours = hangar_types::net::bridge_subnet(&b.name).is_some_and(|s| r.contains(s));
                if ours {
                    checks.push(check(&host, format!("bridge {}", b.name), false, "no instance here needs it (stale)"));
                }
            }
            // Veths of instances that run.
            for i in insts.iter().filter(|i| matches!(i.observed, ObservedState::Running | ObservedState::Warm)) {
                let Some(n) = net_of(i) else { continue };
                let v = veth_name(&i.id.sandbox_id());
                let (ok, detail) = match found.veths.iter().find(|(name, _)| *name == v) {
                    None => (false, format!("{v} missing")),
                    Some((_, Some(br))) if *br == n.bridge => (true, format!("{v} on {br}, {}", n.address)),
                    Some((_, other)) => (false, format!("{v} attached to {other:?}, expected {}", n.bridge)),
                };
                checks.push(check(&host, format!("veth of {}/{}", i.tenant, i.name), ok, detail));
            }
            if !expected.is_empty() {
                checks.push(check(&host, "nftables rules".into(), found.rules_present, if found.rules_present { "present" } else { "missing" }));
                checks.push(check(&host, "ip forwarding".into(), found.ip_forward, if found.ip_forward { "on" } else { "off" }));
            }
            // Probes from inside running instances.
            let running: Vec<&Instance> = insts.iter().filter(|i| i.state == InstanceState::Running && i.observed == ObservedState::Running).collect();
            let mut by_tenant: BTreeMap<_, Vec<&Instance>> = BTreeMap::new();
            for i in &running {
                by_tenant.entry(i.tenant.clone()).or_default().push(i);
            }
            let firsts: Vec<&Instance> = by_tenant.values().map(|v| v[0]).collect();
            let probe = |from: &Instance, to: std::net::Ipv4Addr| {
                let agent = agent.clone();
                let sid = from.id.sandbox_id();
                async move {
                    let req = ExecRequest { command: vec!["ping".into(), "-c1".into(), "-W1".into(), to.to_string()], env: Default::default(), timeout_secs: Some(10) };
                    agent.exec(&sid, &req).await
                }
            };
            let mut probes: Vec<(&Instance, std::net::Ipv4Addr, String, bool)> = vec![];
            for v in by_tenant.values() {
                if v.len() >= 2 {
                    // Neighbours reach each other, unless the tenant isolates its instances.
                    let reach = !tenants.get(&v[0].tenant).is_some_and(|t| t.isolated);
                    probes.push((v[0], v[1].address.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED), format!("{}/{}", v[1].tenant, v[1].name), reach));
                }
                if let Some(n) = net_of(v[0]) {
                    probes.push((v[0], n.gateway, format!("host {} (gateway)", n.gateway), false));
                }
            }
            for a in &firsts {
                for b in firsts.iter().filter(|b| b.tenant != a.tenant) {
                    probes.push((a, b.address.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED), format!("{}/{}", b.tenant, b.name), false));
                }
            }
            for (from, to, label, expect) in probes {
                let name = format!("probe {}/{} -> {label}", from.tenant, from.name);
                match probe(from, to).await {
                    Ok(res) if res.exit_code == 0 || res.exit_code == 1 => {
                        let reached = res.exit_code == 0;
                        let detail = match (expect, reached) {
                            (true, true) => "reachable, as it should be",
                            (false, false) => "unreachable, as it should be",
                            (true, false) => "UNREACHABLE but should be reachable",
                            (false, true) => "REACHABLE but must be isolated",
                        };
                        checks.push(check(&host, name, expect == reached, detail));
                    }
                    Ok(res) => checks.push(check(&host, name, false, format!("ping could not run (exit {}): {}", res.exit_code, res.stderr.trim()))),
                    Err(e) => checks.push(check(&host, name, false, e.to_string())),
                }
            }
        }
        Ok(NetVerifyReport { ok: checks.iter().all(|c| c.ok), checks })
    }
}
