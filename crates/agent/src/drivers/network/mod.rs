//! Tenant networks on a host, behind one narrow trait. [`BridgeNetwork`] gives each
//! tenant a Linux bridge (`hgb<subnet>`, its gateway address on it), each sandbox a
//! pinned user namespace with its id mapping (`/run/hangar/userns/hg-<host>-<sandbox>`)
//! owning a persistent network namespace (`/run/netns/hg-<host>-<sandbox>`, see
//! [`pinned`]) joined by a veth pair, and
//! keeps one nftables table per agent (`inet hangar_<host>`) for NAT and isolation. All
//! link work is done in-process over netlink; rules go through nft's JSON interface. A
//! new network driver is a new file that implements [`NetworkDriver`] and one line in
//! [`NETWORKS`].

mod bridge;
mod nft;
mod pinned;

pub use bridge::BridgeNetwork;

pub use hangar_types::net::{BridgeReport, NetReport};
use crate::drivers::runtime::JoinNamespaces;
use hangar_types::idmap::IdRange;
use hangar_types::net::{ClusterRange, NetSpec};
use hangar_types::SandboxId;
use std::sync::Arc;

/// One network driver an agent can be started with.
pub struct NetworkDriverInfo {
    /// What reports show (`network=<name>`).
    pub name: &'static str,
    /// The driver for the agent `owner`: a short name unique on this machine (the host
    /// id's short form) that names everything it makes, so agents sharing a machine
    /// never touch each other's. Makes nothing.
    pub open: fn(owner: &str) -> Arc<dyn NetworkDriver>,
}

/// Every network driver, the default first.
pub static NETWORKS: &[NetworkDriverInfo] = &[NetworkDriverInfo { name: "bridge", open: bridge::open }];

/// Where an agent's network lived, seen from whoever tears it down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostNetwork {
    /// In the caller's own network namespace (`hangar up`'s agent): its bridges and
    /// rules are here to remove.
    Shared,
    /// In a namespace of its own that goes away with it (a provider host): only what
    /// lives outside it, the pinned namespaces in the machine-wide /run/netns and
    /// /run/hangar/userns, is removed.
    Separate,
}

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
    /// Makes the sandbox's pinned namespaces if they are missing (a user namespace
    /// mapping 0..size inside to `ids`, and a network namespace it owns: runc joins the
    /// user namespace first, and could not join a network namespace of the host's from
    /// inside it) and wires the network namespace to its tenant network. Idempotent;
    /// returns the paths the sandbox joins. Kept across stop and start; [`detach`]
    /// removes them.
    ///
    /// [`detach`]: Self::detach
    async fn attach(&self, sandbox: &SandboxId, net: &NetSpec, ids: IdRange) -> Result<JoinNamespaces, NetError>;
    /// Removes a sandbox's namespaces and veth. Ok if absent.
    async fn detach(&self, sandbox: &SandboxId) -> Result<(), NetError>;
    /// The hub's addresses: no sandbox may reach them, whether they are in the cluster
    /// range or not (rules follow at the next [`sync`](Self::sync)).
    fn guard_hub(&self, _addresses: Vec<std::net::Ipv4Addr>) {}
    /// Gets ready, off the start path, what makes the next [`attach`](Self::attach)
    /// fast (e.g. helpers holding fresh namespaces).
    async fn prewarm(&self) -> Result<(), NetError> {
        Ok(())
    }
    /// Makes the host-wide part match: a bridge for each of `nets` (and no other hangar
    /// bridge), the nftables table, forwarding on. Repairs what was removed by hand.
    async fn sync(&self, range: &ClusterRange, nets: &[NetSpec]) -> Result<(), NetError>;
    /// Host-side veths present now (one cheap netlink dump, every reconcile pass).
    async fn wired(&self) -> Result<std::collections::HashSet<String>, NetError>;
    /// Sandboxes that have a namespace here (network or user; a half-made pair too).
    async fn attached(&self) -> Result<Vec<SandboxId>, NetError>;
    /// Sandboxes that have a pinned user namespace here.
    async fn user_namespaces(&self) -> Result<Vec<SandboxId>, NetError> {
        Ok(vec![])
    }
    async fn inspect(&self) -> Result<NetReport, NetError>;
    /// Teardown: removes what the driver keeps besides the namespaces of the sandboxes
    /// it is told about (those of any other sandbox of this agent too) and, in a
    /// [`HostNetwork::Shared`] namespace, what [`sync`](Self::sync) keeps beside the
    /// bridges (e.g. rules). Ok if absent.
    async fn release(&self, _place: HostNetwork) -> Result<(), NetError> {
        Ok(())
    }
}
