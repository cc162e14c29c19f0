//! Tenant network arithmetic: the cluster range, each tenant's subnet (a /24 by
//! default, up to a /20: a block of consecutive net ids), gateway, bridge and link names. Pure functions, shared by the hub (IPAM) and the agent (network driver).

use crate::ids::SandboxId;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The range tenant /24s are cut from: `10.240.0.0/12` by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterRange {
    pub base: Ipv4Addr,
    pub prefix_len: u8,
}

impl Default for ClusterRange {
    fn default() -> Self {
        ClusterRange { base: Ipv4Addr::new(10, 240, 0, 0), prefix_len: 12 }
    }
}

impl std::str::FromStr for ClusterRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| format!("cluster range '{s}': write it as A.B.C.D/LEN, e.g. 10.240.0.0/12"))?;
        let base: Ipv4Addr = a.parse().map_err(|_| format!("cluster range '{s}': '{a}' is not an IPv4 address"))?;
        let prefix_len: u8 = p.parse().map_err(|_| format!("cluster range '{s}': '{p}' is not a prefix length"))?;
        if !(8..=23).contains(&prefix_len) {
            return Err(format!("cluster range '{s}': the prefix length must be 8 to 23 so it holds several /24s"));
        }
        let mask = u32::MAX << (32 - prefix_len);
        if u32::from(base) & !mask != 0 {
            return Err(format!("cluster range '{s}': {base} is not the start of a /{prefix_len}"));
        }
        Ok(ClusterRange { base, prefix_len })
    }
}

impl std::fmt::Display for ClusterRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix_len)
    }
}

impl ClusterRange {
    /// Net ids run from 1 to this; 0 (the range's first /24) is never handed out.
    pub fn max_net_id(&self) -> u32 {
        (1u32 << (24 - self.prefix_len)) - 1
    }

    /// The network address of a tenant's /24.
    pub fn subnet(&self, net_id: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + (net_id << 8))
    }

    /// `.1` of the tenant's /24: the bridge's address and the default route.
    pub fn gateway(&self, net_id: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet(net_id)) + 1)
    }

    /// Whether a /24 starting at `subnet` lies inside this range.
    pub fn contains(&self, subnet: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix_len);
        u32::from(subnet) & mask == u32::from(self.base)
    }

    /// The instance address with host number `n` (see [`host_numbers`]) in the tenant
    /// subnet that starts at net id `net_id`.
    pub fn host(&self, net_id: u32, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet(net_id)) + n)
    }
}

/// A tenant subnet's prefix length when none is asked for: 253 instance addresses.
pub const DEFAULT_NET_PREFIX: u8 = 24;
/// The largest tenant subnet: a /20, 4,093 instance addresses.
pub const MIN_NET_PREFIX: u8 = 20;

/// Checks a tenant subnet prefix length: 20 to 24.
pub fn check_net_prefix(prefix: u8) -> Result<(), String> {
    if (MIN_NET_PREFIX..=DEFAULT_NET_PREFIX).contains(&prefix) {
        Ok(())
    } else {
        Err(format!("net_prefix {prefix} is out of range: give {MIN_NET_PREFIX} (4,093 addresses) to {DEFAULT_NET_PREFIX} (253 addresses)"))
    }
}

/// How many consecutive /24 net ids a tenant subnet of this prefix takes. Its first
/// net id is a multiple of this (the subnet is aligned), and never 0.
pub fn net_ids_per_subnet(prefix: u8) -> u32 {
    1 << (24 - prefix.clamp(MIN_NET_PREFIX, DEFAULT_NET_PREFIX))
}

/// Host numbers instances may get in a subnet of this prefix: the first address is the
/// network, the second the gateway, the last broadcast.
pub fn host_numbers(prefix: u8) -> std::ops::RangeInclusive<u32> {
    2..=(1u32 << (32 - prefix.clamp(MIN_NET_PREFIX, DEFAULT_NET_PREFIX))) - 2
}

/// The network address of the subnet of this prefix that holds `address`.
pub fn subnet_of(address: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(address) & (u32::MAX << (32 - prefix.clamp(1, 32))))
}

/// The gateway (second address) of the subnet of this prefix that holds `address`.
pub fn gateway_of(address: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet_of(address, prefix)) + 1)
}

/// The smallest aligned first net id for a subnet of `prefix` that overlaps none of
/// `taken` (first net id, prefix) and fits in `1..=max_net_id`.
pub fn first_free_net_id(taken: &[(u32, u8)], prefix: u8, max_net_id: u32) -> Option<u32> {
    let size = net_ids_per_subnet(prefix);
    let mut start = size; // net id 0 is never handed out, and a block is aligned
    while start + size - 1 <= max_net_id {
        let clash = taken.iter().find(|(id, p)| *id < start + size && start < *id + net_ids_per_subnet(*p));
        match clash {
            None => return Some(start),
            // Skip past the block in the way, to the next aligned start.
            Some((id, p)) => start = (id + net_ids_per_subnet(*p)).div_ceil(size) * size,
        }
    }
    None
}

/// The per-tenant bridge on every host: `hgb` and the first three octets of the
/// tenant's /24 in hex. Named after the subnet, not the net id, so fleets with different
/// cluster ranges on one machine never share or fight over a bridge.
pub fn bridge_name(subnet: Ipv4Addr) -> String {
    let o = subnet.octets();
    format!("hgb{:02x}{:02x}{:02x}", o[0], o[1], o[2])
}

/// The subnet a bridge name stands for, if it is a hangar bridge name.
pub fn bridge_subnet(name: &str) -> Option<Ipv4Addr> {
    let hex = name.strip_prefix("hgb").filter(|h| h.len() == 6)?;
    let n = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(n << 8))
}

/// The host side of an instance's veth pair: `hv` and the sandbox id's 12 hex digits.
pub fn veth_name(sandbox: &SandboxId) -> String {
    let sandbox = sandbox.as_str();
    format!("hv{}", &sandbox[sandbox.len().saturating_sub(12)..])
}

/// What a host needs to wire one instance to its tenant network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
// Part of the hub-agent protocol: unknown fields (a newer peer's optional ones) are ignored.
pub struct NetSpec {
    pub net_id: u32,
    /// The tenant's bridge on the host.
    pub bridge: String,
    #[schema(value_type = String)]
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    #[schema(value_type = String)]
    pub gateway: Ipv4Addr,
    /// The cluster range, for NAT and isolation rules.
    pub cluster_range: String,
    /// The tenant's instances must not reach each other (isolated bridge port).
    #[serde(default)]
    pub isolated: bool,
    /// The tenant's overlay to its instances on other hosts; none while it has
    /// instances on this host only (or this host has no underlay address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<Overlay>,
}

/// A tenant's VXLAN segment between hosts: the bridges of its subnet on every host it
/// has instances on, joined into one L2 network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
// Part of the hub-agent protocol: unknown fields (a newer peer's optional ones) are ignored.
pub struct Overlay {
    /// The VXLAN network id: [`vni`] of the subnet.
    pub vni: u32,
    /// This host's underlay address (the source of its VXLAN packets).
    #[schema(value_type = String)]
    pub local: Ipv4Addr,
    /// The underlay addresses of the other hosts with instances of the tenant.
    #[schema(value_type = Vec<String>)]
    pub peers: Vec<Ipv4Addr>,
}

/// The IPv4 address in an agent endpoint URL (`https://10.1.0.2:7000`) if it can carry
/// overlay traffic between hosts: not loopback, not unspecified.
pub fn underlay_of(endpoint: &str) -> Option<Ipv4Addr> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let hostport = rest.split('/').next()?;
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    host.parse::<Ipv4Addr>().ok().filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

/// UDP port of the tenant overlays (the IANA VXLAN port).
pub const VXLAN_PORT: u16 = 4789;

/// The VXLAN id of a tenant subnet: the first three octets of its network address, so
/// it is unique per subnet and the same on every host, like the bridge name.
pub fn vni(subnet: Ipv4Addr) -> u32 {
    u32::from(subnet) >> 8
}

/// The tenant's VXLAN device on a host: `hgx` and the subnet's first three octets in hex.
pub fn vxlan_name(subnet: Ipv4Addr) -> String {
    let o = subnet.octets();
    format!("hgx{:02x}{:02x}{:02x}", o[0], o[1], o[2])
}

/// The gateway's MAC on every host's bridge of a subnet (02:47 + the subnet's first
/// three octets + 01): an anycast gateway, so an instance that moves to another host
/// finds its cached gateway MAC still right, and replies of every host's gateway agree.
pub fn gateway_mac(subnet: Ipv4Addr) -> [u8; 6] {
    let o = subnet.octets();
    [0x02, 0x47, o[0], o[1], o[2], 0x01]
}

/// What a host's tenant networking looks like, as its agent finds it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetReport {
    /// hangar bridges (`hgb*`) with their addresses.
    pub bridges: Vec<BridgeReport>,
    /// Host-side veths (`hv*`) and the bridge each is attached to.
    pub veths: Vec<(String, Option<String>)>,
    /// Sandboxes with a network namespace (`/run/netns/hg-<host>-<sandbox>`).
    pub namespaces: Vec<String>,
    /// Whether this agent's nftables table is present with its chains.
    pub rules_present: bool,
    pub ip_forward: bool,
    /// The overlay packets the host accepts: (VNI, peer underlay addresses) per tenant
    /// overlay, as its nftables sets hold them.
    #[serde(default)]
    pub overlay_peers: Vec<(u32, Vec<String>)>,
    /// Packets to UDP 4789 from sandboxes the host dropped so far (None without the rule).
    #[serde(default)]
    pub sandbox_vxlan_dropped: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BridgeReport {
    pub name: String,
    /// `a.b.c.d/len`.
    pub addresses: Vec<String>,
    pub up: bool,
}

/// One finding of `hangar net verify`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetCheck {
    pub host: String,
    /// e.g. `bridge hgb0af001`, `veth of acme/web`, `probe acme/a -> zeta/x`.
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetVerifyReport {
    pub ok: bool,
    pub checks: Vec<NetCheck>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_range() {
        let r = ClusterRange::default();
        assert_eq!(r.max_net_id(), 4095);
        assert_eq!(r.subnet(1), Ipv4Addr::new(10, 240, 1, 0));
        assert_eq!(r.gateway(1), Ipv4Addr::new(10, 240, 1, 1));
        assert_eq!(r.subnet(4095), Ipv4Addr::new(10, 255, 255, 0));
        assert_eq!(r.host(2, 7), Ipv4Addr::new(10, 240, 2, 7));
        assert_eq!(r.host(4, 300), Ipv4Addr::new(10, 240, 5, 44));
        assert_eq!(bridge_name(r.subnet(1)), "hgb0af001");
        assert_eq!(bridge_subnet("hgb0af001"), Some(r.subnet(1)));
        assert_eq!(bridge_subnet("hgbx"), None);
        assert!(bridge_name(r.subnet(4095)).len() <= 15);
        assert!(r.contains(r.subnet(4095)) && !r.contains(Ipv4Addr::new(10, 239, 0, 0)));
        assert!(veth_name(&"i0123456789ab".parse().unwrap()).len() <= 15);
        assert_eq!(vxlan_name(r.subnet(1)), "hgx0af001");
        assert_eq!(vni(r.subnet(1)), 0x0af001);
        assert!(vni(Ipv4Addr::new(255, 255, 255, 0)) < 1 << 24, "VNIs are 24 bits");
        assert_eq!(gateway_mac(r.subnet(1)), [0x02, 0x47, 10, 240, 1, 1]);
        assert_eq!(underlay_of("https://10.1.0.2:7000"), Some(Ipv4Addr::new(10, 1, 0, 2)));
        assert_eq!(underlay_of("https://127.0.0.1:7000"), None);
        assert_eq!(underlay_of("https://[::1]:7000"), None);
        assert_eq!(underlay_of("https://0.0.0.0:1"), None);
    }

    #[test]
    fn subnet_sizes() {
        assert_eq!(host_numbers(24), 2..=254);
        assert_eq!(host_numbers(22), 2..=1022);
        assert_eq!(host_numbers(20), 2..=4094);
        assert_eq!(net_ids_per_subnet(24), 1);
        assert_eq!(net_ids_per_subnet(22), 4);
        let a = Ipv4Addr::new(10, 240, 5, 44);
        assert_eq!(subnet_of(a, 22), Ipv4Addr::new(10, 240, 4, 0));
        assert_eq!(gateway_of(a, 22), Ipv4Addr::new(10, 240, 4, 1));
        assert_eq!(subnet_of(a, 24), Ipv4Addr::new(10, 240, 5, 0));
        assert!(check_net_prefix(24).is_ok() && check_net_prefix(20).is_ok());
        for bad in [0, 8, 19, 25, 32] {
            assert!(check_net_prefix(bad).unwrap_err().contains("net_prefix"), "{bad}");
        }
    }

    #[test]
    fn free_net_ids_are_aligned_smallest_first_and_never_overlap() {
        assert_eq!(first_free_net_id(&[], 24, 10), Some(1));
        assert_eq!(first_free_net_id(&[], 22, 10), Some(4));
        assert_eq!(first_free_net_id(&[(1, 24), (2, 24)], 24, 10), Some(3));
        // A /22 skips the /24 in its way to the next aligned block.
        assert_eq!(first_free_net_id(&[(5, 24)], 22, 20), Some(8));
        // /24s fill the holes before and after a /22.
        assert_eq!(first_free_net_id(&[(4, 22)], 24, 20), Some(1));
        assert_eq!(first_free_net_id(&[(1, 24), (2, 24), (3, 24), (4, 22)], 24, 20), Some(8));
        // Nothing fits: the block would cross max_net_id.
        assert_eq!(first_free_net_id(&[], 22, 6), None);
        assert_eq!(first_free_net_id(&[(4, 22)], 22, 7), None);
        // Exhaustive for small ranges: the answer never overlaps what is taken, and no
        // smaller aligned start would have fit.
        let overlaps = |a: u32, pa: u8, b: u32, pb: u8| a < b + net_ids_per_subnet(pb) && b < a + net_ids_per_subnet(pa);
        for max in 1..40u32 {
            let mut taken: Vec<(u32, u8)> = vec![];
            for (k, p) in [24u8, 22, 24, 23, 24, 21, 24, 24, 22].into_iter().enumerate() {
                let got = first_free_net_id(&taken, p, max);
                let size = net_ids_per_subnet(p);
                let fits = |s: u32| s >= 1 && s.is_multiple_of(size) && s + size - 1 <= max && taken.iter().all(|&(id, tp)| !overlaps(s, p, id, tp));
                let want = (1..=max).find(|&s| fits(s));
                assert_eq!(got, want, "max {max} step {k} taken {taken:?}");
                if let Some(s) = got {
                    taken.push((s, p));
                }
            }
        }
    }

    #[test]
    fn parse_ranges() {
        let ok = |s: &str, max: u32| assert_eq!(s.parse::<ClusterRange>().unwrap().max_net_id(), max, "{s}");
        ok("10.240.0.0/12", 4095);
        ok("192.168.0.0/16", 255);
        ok("10.0.0.0/8", 65535);
        for bad in ["10.240.0.0", "10.240.0.0/24", "10.240.0.0/4", "10.240.1.0/12", "x/12", "10.0.0.0/x"] {
            assert!(bad.parse::<ClusterRange>().is_err(), "{bad}");
        }
    }
}
