//! An agent's `inet hangar_<host>` nftables table, written whole through nft's JSON interface so a
//! change is one atomic transaction:
//! - input: traffic from tenant bridges to the host itself is dropped (replies to
//!   connections the host opened are let through); overlay (VXLAN, UDP 4789) packets
//!   with a VNI of this cluster range are accepted only from the peer hosts the hub
//!   listed for that VNI (a set `vxlan_peers_<vni>` each), the rest are dropped, so no
//!   unknown source ever reaches a VXLAN device (and none is learned);
//! - forward: from this agent's tenant bridges, UDP 4789 is dropped wherever it goes (a
//!   sandbox never sends overlay traffic, and masqueraded it would come from a peer's
//!   address);
//!   traffic from one tenant bridge to another is dropped; traffic to the cluster range
//!   that leaves through anything but a tenant bridge is dropped: the range's first /24
//!   is the fleet's host network (the hosts' underlay addresses and agent endpoints, the
//!   hub's `.1` under the `local` provider), and a tenant reaches its own instances on
//!   other hosts only over its bridge (the overlay), never by routing;
//! - forward, first: from tenant bridges to the hub's addresses (those of the URL the
//!   agent talks to the hub at, inside the cluster range or not) is dropped and counted
//!   (rule [`HUB_RULE`]): a hub outside the range (another machine) is otherwise the
//!   outside world to a sandbox;
//! - postrouting: traffic from the cluster range leaving through anything but a tenant
//!   bridge is masqueraded.
//!
//! Same-bridge traffic is switched by the bridge; with br_netfilter built in (then
//! `net.bridge.bridge-nf-call-iptables` is 1 in every namespace) it also passes the
//! forward hook, with the bridge as input and output device, where the rules above
//! leave it alone.

use super::NetError;
use hangar_types::net::{ClusterRange, VXLAN_PORT};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// The overlay packets a host accepts for one tenant: this VNI from these peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayFilter {
    pub vni: u32,
    pub peers: Vec<Ipv4Addr>,
}

/// What the table is written from: equal inputs need no rewrite.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// Tenant bridges, sorted.
    pub bridges: Vec<String>,
    /// One per tenant overlay, sorted by VNI.
    pub overlays: Vec<OverlayFilter>,
    /// The hub's addresses, sorted: no sandbox reaches them.
    pub hub: Vec<Ipv4Addr>,
}

/// The comment on the forward rule that drops sandboxes' traffic to the hub.
pub const HUB_RULE: &str = "hub from sandboxes";

/// The comment on the forward rule that drops sandboxes' UDP 4789: its counter is what
/// `net verify` watches while a sandbox sends overlay traffic.
pub const SANDBOX_VXLAN_RULE: &str = "sandbox vxlan";

fn peer_set(vni: u32) -> String {
    format!("vxlan_peers_{vni}")
}

fn meta(key: &str, op: &str, right: &str) -> Value {
    json!({"match": {"op": op, "left": {"meta": {"key": key}}, "right": right}})
}

fn udp_dport(port: u16) -> Value {
    json!({"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": port}})
}

/// The VNI of a VXLAN packet: 24 bits after the UDP header (64 bits) and the VXLAN
/// flags and reserved bits (32).
fn vni_is(right: Value) -> Value {
    json!({"match": {"op": "==", "left": {"payload": {"base": "th", "offset": 96, "len": 24}}, "right": right}})
}

fn prefix(op: &str, field: &str, range: &ClusterRange) -> Value {
    json!({"match": {"op": op, "left": {"payload": {"protocol": "ip", "field": field}}, "right": {"prefix": {"addr": range.base.to_string(), "len": range.prefix_len}}}})
}

/// The VNIs of a cluster range's subnets (a VNI is a subnet's first three octets).
fn vni_span(range: &ClusterRange) -> (u32, u32) {
    let base = u32::from(range.base);
    let last = base | (u32::MAX.checked_shr(range.prefix_len as u32).unwrap_or(0));
    (base >> 8, last >> 8)
}

/// The whole ruleset of `table` for these tenant bridges and overlays of one cluster range.
pub fn ruleset(table: &str, range: &ClusterRange, rules: &Rules) -> Value {
    let rule = |chain: &str, expr: Vec<Value>| json!({"add": {"rule": {"family": "inet", "table": table, "chain": chain, "expr": expr}}});
    let commented = |chain: &str, comment: &str, expr: Vec<Value>| json!({"add": {"rule": {"family": "inet", "table": table, "chain": chain, "comment": comment, "expr": expr}}});
    let chain = |name: &str, kind: &str, hook: &str, prio: i32| {
        json!({"add": {"chain": {"family": "inet", "table": table, "name": name, "type": kind, "hook": hook, "prio": prio, "policy": "accept"}}})
    };
    let t = json!({"family": "inet", "name": table});
    let from_tenant = || meta("iifname", "==", "hgb*");
    let mut cmds = vec![
        // add + delete + add: replaces the table whether or not it existed.
        json!({"add": {"table": t}}),
        json!({"delete": {"table": t}}),
        json!({"add": {"table": t}}),
        chain("input", "filter", "input", 0),
        chain("forward", "filter", "forward", 0),
        chain("postrouting", "nat", "postrouting", 100),
        rule("input", vec![from_tenant(), json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}), json!({"accept": null})]),
        rule("input", vec![from_tenant(), json!({"drop": null})]),
    ];
    for o in &rules.overlays {
        let elem: Vec<String> = o.peers.iter().map(Ipv4Addr::to_string).collect();
        let mut set = json!({"family": "inet", "table": table, "name": peer_set(o.vni), "type": "ipv4_addr"});
        if !elem.is_empty() {
            set["elem"] = json!(elem);
        }
        cmds.push(json!({"add": {"set": set}}));
        cmds.push(rule(
            "input",
            vec![
                udp_dport(VXLAN_PORT),
                vni_is(json!(o.vni)),
                json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": format!("@{}", peer_set(o.vni))}}),
                json!({"accept": null}),
            ],
        ));
    }
    if !rules.hub.is_empty() {
        let hub: Vec<String> = rules.hub.iter().map(Ipv4Addr::to_string).collect();
        let daddr = json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"set": hub}}});
        cmds.push(commented("forward", HUB_RULE, vec![from_tenant(), daddr, json!({"counter": null}), json!({"drop": null})]));
    }
    let (lo, hi) = vni_span(range);
    cmds.push(commented("input", "overlay from unknown peers", vec![udp_dport(VXLAN_PORT), vni_is(json!({"range": [lo, hi]})), json!({"counter": null}), json!({"drop": null})]));
    // This agent's own bridges, not `hgb*`: agents sharing a namespace each count (and
    // drop) their own sandboxes' packets, whichever table's chain runs first.
    let own = json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": {"set": rules.bridges}}});
    cmds.push(commented("forward", SANDBOX_VXLAN_RULE, vec![own, udp_dport(VXLAN_PORT), json!({"counter": null}), json!({"drop": null})]));
    for b in &rules.bridges {
        cmds.push(rule("forward", vec![meta("iifname", "==", b), meta("oifname", "==", "hgb*"), meta("oifname", "!=", b), json!({"drop": null})]));
    }
    cmds.push(commented("forward", "cluster range from sandboxes", vec![from_tenant(), prefix("==", "daddr", range), meta("oifname", "!=", "hgb*"), json!({"drop": null})]));
    cmds.push(rule(
        "postrouting",
        vec![
            prefix("==", "saddr", range),
            // Traffic that stays inside the cluster range keeps its source: the
            // hosts' own network (the range's first /24) carries the tenant
            // overlays, and with br_netfilter loaded (Docker loads it) even bridged
            // packets would otherwise be masqueraded.
            prefix("!=", "daddr", range),
            meta("oifname", "!=", "hgb*"),
            json!({"masquerade": null}),
        ],
    ));
    json!({"nftables": cmds})
}

async fn nft(args: &[&str], stdin: Option<String>) -> Result<String, NetError> {
    use tokio::io::AsyncWriteExt;
    let mut c = tokio::process::Command::new("nft");
    c.args(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().map_err(|e| NetError::Nft(format!("cannot run nft (install nftables): {e}")))?;
    if let (Some(s), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(s.as_bytes()).await.map_err(|e| NetError::Nft(e.to_string()))?;
    }
    let out = child.wait_with_output().await.map_err(|e| NetError::Nft(e.to_string()))?;
    if !out.status.success() {
        return Err(NetError::Nft(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces the table with `rules` in one transaction; with no bridges the table is
/// removed.
pub async fn apply(table: &str, range: &ClusterRange, rules: &Rules) -> Result<(), NetError> {
    if rules.bridges.is_empty() {
        return remove(table).await;
    }
    nft(&["-j", "-f", "-"], Some(ruleset(table, range, rules).to_string())).await.map(|_| ())
}

pub async fn remove(table: &str) -> Result<(), NetError> {
    if present(table).await {
        nft(&["delete", "table", "inet", table], None).await?;
    }
    Ok(())
}

/// The table as the kernel has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// The three chains are there.
    pub complete: bool,
    /// The overlay peer sets: (VNI, peers), sorted by VNI.
    pub overlay_peers: Vec<(u32, Vec<Ipv4Addr>)>,
    /// Packets the forward rule [`SANDBOX_VXLAN_RULE`] dropped; None without the rule.
    pub sandbox_vxlan_dropped: Option<u64>,
}

/// Reads `nft -j list table` output.
pub fn parse(listing: &str) -> Found {
    let Ok(v) = serde_json::from_str::<Value>(listing) else { return Found::default() };
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    let chains: Vec<&str> = items.iter().filter_map(|i| i["chain"]["name"].as_str()).collect();
    let mut f = Found { complete: ["input", "forward", "postrouting"].iter().all(|c| chains.contains(c)), ..Found::default() };
    for i in &items {
        if let Some(vni) = i["set"]["name"].as_str().and_then(|n| n.strip_prefix("vxlan_peers_")).and_then(|n| n.parse().ok()) {
            let mut peers: Vec<Ipv4Addr> = i["set"]["elem"].as_array().map(|e| e.iter().filter_map(|x| x.as_str()?.parse().ok()).collect()).unwrap_or_default();
            peers.sort();
            f.overlay_peers.push((vni, peers));
        }
        if i["rule"]["comment"].as_str() == Some(SANDBOX_VXLAN_RULE) {
            f.sandbox_vxlan_dropped = i["rule"]["expr"].as_array().and_then(|e| e.iter().find_map(|x| x["counter"]["packets"].as_u64()));
        }
    }
    f.overlay_peers.sort();
    f
}

/// The table's state; None if it is absent.
pub async fn found(table: &str) -> Option<Found> {
    nft(&["-j", "list", "table", "inet", table], None).await.ok().map(|out| parse(&out))
}

/// Whether the table exists with its three chains.
pub async fn present(table: &str) -> bool {
    found(table).await.is_some_and(|f| f.complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vni_span_covers_exactly_the_ranges_subnets() {
        let r: ClusterRange = "10.240.0.0/12".parse().unwrap();
        assert_eq!(vni_span(&r), (0x0af000, 0x0affff));
        let r: ClusterRange = "10.99.0.0/16".parse().unwrap();
        assert_eq!(vni_span(&r), (0x0a6300, 0x0a63ff));
    }

    #[test]
    fn overlay_packets_are_accepted_per_vni_from_listed_peers_only_then_dropped() {
        let r: ClusterRange = "10.99.0.0/16".parse().unwrap();
        let rules = Rules { bridges: vec!["hgb0a6301".into()], overlays: vec![OverlayFilter { vni: 0x0a6301, peers: vec![Ipv4Addr::new(10, 99, 0, 3)] }], hub: vec![] };
        let text = ruleset("hangar_t", &r, &rules).to_string();
        let accept = text.find(&format!("@vxlan_peers_{}", 0x0a6301)).expect("the accept rule names the VNI's set");
        let drop = text.find("overlay from unknown peers").expect("a drop for the rest");
        assert!(accept < drop, "the peers' accept must come before the drop");
        assert!(text.contains(r#""elem":["10.99.0.3"]"#), "{text}");
        assert!(text.contains(SANDBOX_VXLAN_RULE) && text.contains("cluster range from sandboxes"));
    }

    #[test]
    fn the_hubs_addresses_are_dropped_from_sandboxes_first_wherever_they_are() {
        let r: ClusterRange = "10.99.0.0/16".parse().unwrap();
        let hub = vec![Ipv4Addr::new(192, 0, 2, 7)];
        let rules = Rules { bridges: vec!["hgb0a6301".into()], overlays: vec![], hub };
        let text = ruleset("hangar_t", &r, &rules).to_string();
        let at = text.find(HUB_RULE).expect("a hub rule");
        assert!(text.contains(r#"{"set":["192.0.2.7"]}"#), "{text}");
        assert!(at < text.find(SANDBOX_VXLAN_RULE).unwrap(), "the hub rule comes first in forward");
        let none = ruleset("hangar_t", &r, &Rules { hub: vec![], ..rules }).to_string();
        assert!(!none.contains(HUB_RULE), "no hub known: no rule");
    }

    #[test]
    fn a_listing_gives_peers_and_the_counter() {
        let listing = r#"{"nftables": [{"set": {"family": "inet", "name": "vxlan_peers_123", "table": "t", "type": "ipv4_addr", "elem": ["10.1.0.3", "10.1.0.2"]}},
            {"chain": {"name": "input"}}, {"chain": {"name": "forward"}}, {"chain": {"name": "postrouting"}},
            {"rule": {"chain": "forward", "comment": "sandbox vxlan", "expr": [{"counter": {"packets": 7, "bytes": 9}}, {"drop": null}]}}]}"#;
        let f = parse(listing);
        assert!(f.complete);
        assert_eq!(f.overlay_peers, vec![(123, vec![Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3)])]);
        assert_eq!(f.sandbox_vxlan_dropped, Some(7));
    }
}
