//! Tenant network arithmetic: the cluster range, each tenant's /24, gateway, bridge and
//! link names. Pure functions, shared by the hub (IPAM) and the agent (network driver).

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

    /// The instance address with host number `n` (2..=254) in a tenant's /24.
    pub fn host(&self, net_id: u32, n: u8) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet(net_id)) + n as u32)
    }
}

/// Host numbers instances may get: .0 is the network, .1 the gateway, .255 broadcast.
pub const FIRST_HOST: u8 = 2;
pub const LAST_HOST: u8 = 254;

/// The per-tenant bridge on every host: `hgb` and the net id in hex (at most 15 chars).
pub fn bridge_name(net_id: u32) -> String {
    format!("hgb{net_id:04x}")
}

/// The host side of an instance's veth pair: `hv` and the sandbox id's 12 hex digits.
pub fn veth_name(sandbox: &str) -> String {
    format!("hv{}", &sandbox[sandbox.len().saturating_sub(12)..])
}

/// What a host needs to wire one instance to its tenant network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    pub net_id: u32,
    #[schema(value_type = String)]
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    #[schema(value_type = String)]
    pub gateway: Ipv4Addr,
    /// The cluster range, for NAT and isolation rules.
    pub cluster_range: String,
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
        assert_eq!(bridge_name(4095), "hgb0fff");
        assert!(veth_name("i0123456789ab").len() <= 15);
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
