//! Tenant networks: each instance's address in its tenant's subnet, the spec a host
//! wires it with, the overlay peers that change when a tenant reaches or leaves a host,
//! and `hangar net verify`: what the store says each host's tenant networking should
//! be, next to what each agent finds, plus active probes inside running instances (same
//! tenant reachable; other tenants, the host, the hub's API, agent endpoints, hosts'
//! underlay addresses and UDP 4789 unreachable).

use crate::error::{HubError, HubResult};
use crate::{Hub, Principal};
use hangar_store::InstanceFilter;
use hangar_types::api::{ExecRequest, HostState, Instance, Tenant};
use hangar_types::net::{veth_name, NetCheck, NetVerifyReport};
use hangar_types::{ErrorCode, InstanceState, Name, ObservedState};
use std::collections::{BTreeMap, BTreeSet};

/// How long `net verify` gives each host (its probes run one after another inside).
const NET_VERIFY_HOST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(90);

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

    /// `hub_port`: the port the hub's API was reached on (the `Host` header of the
    /// request), probed from sandboxes at the host network's gateway, where the `local`
    /// provider's hosts reach the hub.
    pub async fn net_verify(&self, p: &Principal, hub_port: Option<u16>) -> HubResult<NetVerifyReport> {
        p.require_admin()?;
        let tenants: BTreeMap<_, _> = self.store.list_tenants().await?.into_iter().map(|t| (t.name.clone(), t)).collect();
        let mut checks = vec![];
        let hosts = self.store.list_hosts().await?;
        // Agent endpoints a sandbox could aim at (loopback ones are the sandbox's own).
        let endpoints: Vec<(String, std::net::SocketAddrV4)> = hosts
            .iter()
            .filter(|h| h.state != HostState::Stopped)
            .filter_map(|h| Some((h.name.to_string(), endpoint_addr(h.endpoint.as_deref()?)?)))
            .collect();
        // Hosts are verified in parallel, each within NET_VERIFY_HOST_DEADLINE: one slow or
        // unreachable host costs its own checks, not everyone's wait.
        let runs = hosts.into_iter().map(|h| {
            let (tenants, endpoints) = (&tenants, &endpoints);
            async move {
                let host = h.name.to_string();
                match tokio::time::timeout(NET_VERIFY_HOST_DEADLINE, self.net_verify_host(h, tenants, endpoints, hub_port)).await {
                    Ok(checks) => checks,
                    Err(_) => Ok(vec![check(&host, "verified in time".into(), false, format!("no result within {}s", NET_VERIFY_HOST_DEADLINE.as_secs()))]),
                }
            }
        });
        for host_checks in futures_util::future::join_all(runs).await {
            checks.extend(host_checks?);
        }
        Ok(NetVerifyReport { ok: checks.iter().all(|c| c.ok), checks })
    }

    /// Every check of one host (its bridges, veths, rules, overlay peers and probes from
    /// its sandboxes).
    async fn net_verify_host(
        &self,
        h: hangar_store::HostRecord,
        tenants: &BTreeMap<Name, Tenant>,
        endpoints: &[(String, std::net::SocketAddrV4)],
        hub_port: Option<u16>,
    ) -> HubResult<Vec<NetCheck>> {
        let r = self.config.cluster_range;
        let mut checks = vec![];
        let host = h.name.to_string();
        let Some(endpoint) = h.endpoint.clone().filter(|_| h.state == HostState::Ready) else {
            if h.state != HostState::Joining {
                checks.push(check(&host, "host reachable".into(), false, format!("host is {}", h.state.as_str())));
            }
            return Ok(checks);
        };
        let agent = self.agent_client(&h, &endpoint).await?;
        let found = match agent.network().await {
            Ok(f) => f,
            Err(e) => {
                checks.push(check(&host, "agent network report".into(), false, e.to_string()));
                return Ok(checks);
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
        // Overlay packets are accepted from exactly the peers the hub lists.
        let doc = self.desired_doc(&h).await?;
        let mut overlays: BTreeMap<String, (u32, Vec<String>)> = BTreeMap::new();
        for i in &doc.instances {
            if let Some(ov) = i.network.as_ref().and_then(|n| n.overlay.as_ref()) {
                let mut peers: Vec<String> = ov.peers.iter().map(|p| p.to_string()).collect();
                peers.sort();
                overlays.insert(i.tenant.to_string(), (ov.vni, peers));
            }
        }
        for (tenant, (vni, peers)) in overlays {
            let (ok, detail) = match found.overlay_peers.iter().find(|(v, _)| *v == vni) {
                None => (false, format!("no filter for VNI {vni}: overlay traffic is dropped")),
                Some((_, have)) if *have == peers => (true, format!("VNI {vni} only from {}", peers.join(", "))),
                Some((_, have)) => (false, format!("VNI {vni} accepted from {}, expected {}", have.join(", "), peers.join(", "))),
            };
            checks.push(check(&host, format!("overlay peers of {tenant}"), ok, detail));
        }
        // Probes from inside running instances.
        let running: Vec<&Instance> = insts.iter().filter(|i| i.state == InstanceState::Running && i.observed == ObservedState::Running).collect();
        let mut by_tenant: BTreeMap<_, Vec<&Instance>> = BTreeMap::new();
        for i in &running {
            by_tenant.entry(i.tenant.clone()).or_default().push(i);
        }
        let firsts: Vec<&Instance> = by_tenant.values().map(|v| v[0]).collect();
        let run_in = |from: &Instance, command: Vec<String>| {
            let agent = agent.clone();
            let sid = from.id.sandbox_id();
            async move {
                let req = ExecRequest { command, env: Default::default(), timeout_secs: Some(10) };
                agent.exec(&sid, &req).await
            }
        };
        let probe = |from: &Instance, to: std::net::Ipv4Addr| run_in(from, vec!["ping".into(), "-c1".into(), "-W1".into(), to.to_string()]);
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
        // The fleet's own machinery, from one sandbox of the host: the hub's API, an
        // agent endpoint and a host's underlay address must not answer, and its
        // overlay traffic must be dropped.
        let Some(from) = running.first().copied() else { return Ok(checks) };
        let who = format!("probe {}/{}", from.tenant, from.name);
        let own = h.endpoint.as_deref().and_then(endpoint_addr);
        let other = endpoints.iter().find(|(n, _)| *n != host).map(|(n, a)| (n.clone(), *a));
        let mut tcp: Vec<(String, std::net::SocketAddrV4)> = vec![];
        if let Some(port) = hub_port {
            tcp.push((format!("hub API {}:{port}", r.gateway(0)), std::net::SocketAddrV4::new(r.gateway(0), port)));
        }
        if let Some((n, a)) = other.clone().or_else(|| own.map(|a| (host.clone(), a))) {
            tcp.push((format!("agent endpoint of {n} {a}"), a));
        }
        for (label, to) in tcp {
            let name = format!("{who} -> {label}");
            let cmd = vec!["timeout".into(), "2".into(), "bash".into(), "-c".into(), format!("exec 3<>/dev/tcp/{}/{}", to.ip(), to.port())];
            checks.push(match run_in(from, cmd).await {
                Ok(res) => match tcp_outcome(&res) {
                    Ok(false) => check(&host, name, true, "unreachable, as it should be"),
                    Ok(true) => check(&host, name, false, "REACHABLE but must be unreachable from a sandbox"),
                    Err(why) => check(&host, name, false, why),
                },
                Err(e) => check(&host, name, false, e.to_string()),
            });
        }
        if let Some((n, a)) = other.clone().or_else(|| own.map(|a| (host.clone(), a))) {
            let name = format!("{who} -> underlay of {n} {}", a.ip());
            checks.push(match probe(from, *a.ip()).await {
                Ok(res) if res.exit_code == 1 => check(&host, name, true, "unreachable, as it should be"),
                Ok(res) if res.exit_code == 0 => check(&host, name, false, "REACHABLE but must be unreachable from a sandbox"),
                Ok(res) => check(&host, name, false, format!("ping could not run (exit {}): {}", res.exit_code, res.stderr.trim())),
                Err(e) => check(&host, name, false, e.to_string()),
            });
        }
        // UDP has no answer to wait for: the host's drop counter for sandboxes'
        // overlay traffic must move while the sandbox sends to a peer (or, alone, to
        // a documentation address).
        let target = other.map(|(_, a)| *a.ip()).unwrap_or(std::net::Ipv4Addr::new(198, 51, 100, 1));
        let name = format!("{who} -> udp {target}:{}", hangar_types::net::VXLAN_PORT);
        let before = found.sandbox_vxlan_dropped;
        let sent = run_in(from, vec!["bash".into(), "-c".into(), format!("echo hangar-net-verify > /dev/udp/{target}/{}", hangar_types::net::VXLAN_PORT)]).await;
        let after = agent.network().await.map(|f| f.sandbox_vxlan_dropped);
        checks.push(match (sent, before, after) {
            (Err(e), _, _) | (_, _, Err(e)) => check(&host, name, false, e.to_string()),
            (Ok(res), _, _) if res.exit_code != 0 => check(&host, name, false, format!("could not send (exit {}): {}", res.exit_code, res.stderr.trim())),
            (_, Some(b), Ok(Some(a))) if a > b => check(&host, name, true, "dropped by the host, as it should be"),
            (_, Some(_), Ok(Some(_))) => check(&host, name, false, "NOT dropped: the host's sandbox VXLAN rule did not see it"),
            _ => check(&host, name, false, "the host has no rule dropping sandboxes' VXLAN traffic"),
        });
        Ok(checks)
    }
}

/// The address of an agent endpoint URL, if a sandbox could aim at it (not loopback).
fn endpoint_addr(endpoint: &str) -> Option<std::net::SocketAddrV4> {
    let ip = hangar_types::net::underlay_of(endpoint)?;
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let port = rest.split('/').next()?.rsplit_once(':')?.1.parse().ok()?;
    Some(std::net::SocketAddrV4::new(ip, port))
}

/// What a `timeout 2 bash -c 'exec 3<>/dev/tcp/...'` says: Ok(true) if something
/// answered (connected, or refused: a host replied), Ok(false) if nothing did (timed
/// out, unreachable), Err if the probe could not run.
fn tcp_outcome(res: &hangar_types::api::ExecResult) -> Result<bool, String> {
    match res.exit_code {
        0 => Ok(true),
        124 => Ok(false),
        125..=127 => Err(format!("the probe could not run (exit {}): {}", res.exit_code, res.stderr.trim())),
        _ => Ok(res.stderr.contains("refused")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_a_sandbox_could_aim_at() {
        assert_eq!(endpoint_addr("https://10.1.0.2:7000"), Some("10.1.0.2:7000".parse().unwrap()));
        assert_eq!(endpoint_addr("https://127.0.0.1:7000"), None);
        assert_eq!(endpoint_addr("https://10.1.0.2"), None);
    }

    #[test]
    fn a_refused_connection_is_an_answer() {
        let r = |exit_code: i32, stderr: &str| hangar_types::api::ExecResult { exit_code, stdout: String::new(), stderr: stderr.into(), truncated: false };
        assert_eq!(tcp_outcome(&r(0, "")), Ok(true));
        assert_eq!(tcp_outcome(&r(1, "bash: connect: Connection refused")), Ok(true));
        assert_eq!(tcp_outcome(&r(124, "")), Ok(false));
        assert_eq!(tcp_outcome(&r(1, "bash: connect: No route to host")), Ok(false));
        assert!(tcp_outcome(&r(127, "bash: not found")).is_err());
    }
}
