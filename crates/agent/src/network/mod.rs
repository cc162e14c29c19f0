//! Tenant networks on a host, behind one narrow trait. [`BridgeNetwork`] gives each
//! tenant a Linux bridge (`hgb<subnet>`, its gateway address on it), each sandbox a
//! persistent network namespace (`/run/netns/hg-<host>-<sandbox>`) joined by a veth pair, and
//! keeps one nftables table (`inet hangar`) for NAT and isolation. All link work is done
//! in-process over netlink; rules go through nft's JSON interface.

mod bridge;
mod nft;

pub use bridge::BridgeNetwork;

/// Removes the nftables table of the agent `owner` (see [`BridgeNetwork::new`]), if any.
pub async fn remove_rules(owner: &str) -> Result<(), NetError> {
    nft::remove(&format!("hangar_{owner}")).await
}

pub use hangar_types::net::{BridgeReport, NetReport};
use hangar_types::net::{ClusterRange, NetSpec};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("netlink: {context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a device named {0} exists and is not a hangar bridge: rename or remove it, hangar will not take it over")]
    NameClash(String),
    #[error("tenant subnet {subnet} overlaps the host's route to {route} (dev {dev}): pick another cluster range with --cluster-range")]
    Overlap { subnet: String, route: String, dev: String },
    #[error("nft failed: {0}")]
    Nft(String),
}

#[async_trait::async_trait]
pub trait NetworkDriver: Send + Sync {
    fn name(&self) -> &'static str;
    /// Wires a sandbox to its tenant network (idempotent); returns the network namespace
    /// path the sandbox must join.
    async fn attach(&self, sandbox: &str, net: &NetSpec) -> Result<PathBuf, NetError>;
    /// Removes a sandbox's namespace and veth. Ok if absent.
    async fn detach(&self, sandbox: &str) -> Result<(), NetError>;
    /// Makes the host-wide part match: a bridge for each of `nets` (and no other hangar
    /// bridge), the nftables table, forwarding on. Repairs what was removed by hand.
    async fn sync(&self, range: &ClusterRange, nets: &[NetSpec]) -> Result<(), NetError>;
    /// Host-side veths present now (one cheap netlink dump, every reconcile pass).
    async fn wired(&self) -> Result<std::collections::HashSet<String>, NetError>;
    /// Sandboxes that have a namespace here.
    async fn attached(&self) -> Result<Vec<String>, NetError>;
    async fn inspect(&self) -> Result<NetReport, NetError>;
    /// Work done ahead, off the start path (e.g. spare namespaces). Called after reports.
    async fn prepare(&self) -> Result<(), NetError> {
        Ok(())
    }
}
