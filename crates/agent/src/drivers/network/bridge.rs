//! The bridge network driver: netlink for links, addresses and routes; each sandbox's
//! pinned user and network namespaces ([`super::pinned`]); nftables through
//! [`super::nft`].

use super::pinned::{self, Spares};
use super::{nft, BridgeReport, HostNetwork, NetError, NetReport, NetworkDriver};
use crate::drivers::runtime::JoinNamespaces;
use hangar_types::idmap::IdRange;
use futures_util::TryStreamExt;
use hangar_types::net::{bridge_subnet, gateway_mac, subnet_of, veth_name, vxlan_name, ClusterRange, NetSpec, Overlay, VXLAN_PORT};
use hangar_types::SandboxId;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoBridgePort, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

const NETNS_DIR: &str = "/run/netns";

pub(super) fn open(owner: &str) -> std::sync::Arc<dyn NetworkDriver> {
    std::sync::Arc::new(BridgeNetwork::new(owner))
}
const ENODEV: i32 = -19;
const EEXIST: i32 = -17;

/// Bridges per tenant, pinned namespaces and a veth per sandbox, one nftables table.
pub struct BridgeNetwork {
    /// This agent's nftables table (`hangar_<host>`), so agents never rewrite each other's.
    table: String,
    /// Prefix of this agent's namespace names (`hg-<host>-`): several agents can share a
    /// machine, and each must only ever clean up its own.
    ns_prefix: String,
    /// The last rule set applied, so unchanged passes do not rewrite nftables.
    applied: tokio::sync::Mutex<Option<nft::Rules>>,
    /// The peers each overlay device was last given, so unchanged passes spawn nothing.
    flooded: tokio::sync::Mutex<std::collections::HashMap<String, Vec<Ipv4Addr>>>,
    /// Helpers holding fresh namespaces, ready to be pinned to the next sandbox.
    spares: Spares,
    /// The hub's addresses, which no sandbox may reach (see [`nft`]).
    hub: std::sync::Mutex<Vec<Ipv4Addr>>,
}

/// Names of the spare network namespaces agents before user namespaces kept made ahead
/// (`hg-<host>-spare<k>`): they were the host's, which a sandbox in its own user
/// namespace cannot join, so none are made any more (the spares now are helpers holding
/// a user namespace and a network namespace it owns, see [`Spares`], which pin nothing);
/// teardown still removes an older agent's.
const SPARE: &str = "spare";

impl BridgeNetwork {
    /// `owner`: a short name unique on this machine (the host id's short form).
    pub fn new(owner: &str) -> Self {
        BridgeNetwork {
            table: format!("hangar_{owner}"),
            ns_prefix: format!("hg-{owner}-"),
            applied: Default::default(),
            flooded: Default::default(),
            spares: Default::default(),
            hub: Default::default(),
        }
    }

    /// The overlay device of a tenant bridge, with its flooding entries.
    async fn sync_overlay(&self, h: &Handle, net: &NetSpec, ov: &Overlay, br: u32) -> Result<String, NetError> {
        let (dev, created) = ensure_overlay(h, net, ov, br).await?;
        let mut flooded = self.flooded.lock().await;
        if created || flooded.get(&dev) != Some(&ov.peers) {
            sync_flood_entries(&dev, &ov.peers).await?;
            flooded.insert(dev.clone(), ov.peers.clone());
        }
        Ok(dev)
    }

    fn spare_paths(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(NETNS_DIR) else { return vec![] };
        let prefix = format!("{}{SPARE}", self.ns_prefix);
        rd.flatten().filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix))).map(|e| e.path()).collect()
    }

    /// Removes spare namespaces an older agent left (`hangar down`).
    pub fn remove_spares(&self) -> Result<(), NetError> {
        for p in self.spare_paths() {
            remove_netns(&p)?;
        }
        Ok(())
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn netns_path(&self, sandbox: &SandboxId) -> PathBuf {
        Path::new(NETNS_DIR).join(format!("{}{sandbox}", self.ns_prefix))
    }

    /// Where the sandbox's user namespace is pinned.
    pub fn userns_path(&self, sandbox: &SandboxId) -> PathBuf {
        Path::new(pinned::USERNS_DIR).join(format!("{}{sandbox}", self.ns_prefix))
    }

    /// Sandboxes with an entry of this agent's in `dir` (spares of older agents aside).
    fn sandboxes_in(&self, dir: &str) -> Vec<SandboxId> {
        let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
        rd.flatten()
            .filter_map(|e| e.file_name().into_string().ok()?.strip_prefix(&self.ns_prefix).map(str::to_string))
            .filter(|n| !n.starts_with(SPARE))
            .filter_map(|n| n.parse().ok())
            .collect()
    }

    /// The sandbox's pinned pair, made from a ready helper if either half is missing
    /// (after a kill -9 while pinning, a reboot, or a namespace an older agent made the
    /// host's): what is left of it and its veth go first.
    async fn ensure_pinned(&self, sandbox: &SandboxId, ids: IdRange) -> Result<JoinNamespaces, NetError> {
        let join = JoinNamespaces { user: self.userns_path(sandbox), net: self.netns_path(sandbox) };
        if pinned::is_pinned(&join.user) && pinned::is_pinned(&join.net) {
            return Ok(join);
        }
        self.detach(sandbox).await?;
        std::fs::create_dir_all(NETNS_DIR).map_err(sys(format!("create {NETNS_DIR}")))?;
        share_netns_dir()?;
        self.spares.pin(ids, &join.user, &join.net).await?;
        Ok(join)
    }
}

fn nl(context: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let context = context.into();
    move |source| NetError::Netlink { context, source }
}

fn sys(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let context = context.into();
    move |source| NetError::Sys { context, source }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| c.get()),
        _ => None,
    }
}

async fn connect() -> Result<Handle, NetError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(sys("cannot open a netlink socket"))?;
    tokio::spawn(conn);
    Ok(handle)
}

async fn link(h: &Handle, name: &str) -> Result<Option<LinkMessage>, NetError> {
    match h.link().get().match_name(name.to_string()).execute().try_next().await {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("get link {name}"))(e)),
    }
}

fn is_bridge(m: &LinkMessage) -> bool {
    m.attributes.iter().any(|a| matches!(a, LinkAttribute::LinkInfo(i) if i.iter().any(|x| matches!(x, LinkInfo::Kind(InfoKind::Bridge)))))
}

fn link_name(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn controller(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(c) => Some(*c),
        _ => None,
    })
}

async fn add_address(h: &Handle, index: u32, addr: Ipv4Addr, len: u8, what: &str) -> Result<(), NetError> {
    match h.address().add(index, IpAddr::V4(addr), len).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        Err(e) => Err(nl(format!("add {addr}/{len} to {what}"))(e)),
    }
}

async fn set_up(h: &Handle, index: u32, what: &str) -> Result<(), NetError> {
    h.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await.map_err(nl(format!("set {what} up")))
}

/// Ensures the tenant's bridge exists, is up and holds the gateway address.
async fn ensure_bridge(h: &Handle, net: &NetSpec) -> Result<u32, NetError> {
    let name = net.bridge.clone();
    let m = match link(h, &name).await? {
        Some(m) if is_bridge(&m) => m,
        Some(_) => return Err(NetError::NameClash(name)),
        None => {
            check_no_overlap(h, net).await?;
            match h.link().add(LinkBridge::new(&name).build()).execute().await {
                Ok(()) => {}
                // Another instance of the same tenant, converging in parallel, made it first.
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => return Err(nl(format!("create bridge {name}"))(e)),
            }
            link(h, &name).await?.ok_or_else(|| NetError::NameClash(name.clone()))?
        }
    };
    let idx = m.header.index;
    // The anycast gateway MAC: the same on every host of the tenant's overlay.
    let mac = gateway_mac(subnet_of(net.gateway, net.prefix_len)).to_vec();
    let has = m.attributes.iter().any(|a| matches!(a, LinkAttribute::Address(a) if *a == mac));
    if !has {
        h.link().set(LinkUnspec::new_with_index(idx).address(mac).build()).execute().await.map_err(nl(format!("set the gateway MAC of {name}")))?;
    }
    add_address(h, idx, net.gateway, net.prefix_len, &name).await?;
    if !m.header.flags.contains(LinkFlags::Up) {
        set_up(h, idx, &name).await?;
    }
    Ok(idx)
}

/// Joins the tenant's bridge to its overlay: a VXLAN device on the bridge whose
/// all-zero FDB entries send broadcasts and unknown unicast to every peer (head-end
/// replication; MACs behind peers are learned). Returns the device's name.
async fn ensure_overlay(h: &Handle, net: &NetSpec, ov: &Overlay, br: u32) -> Result<(String, bool), NetError> {
    let name = vxlan_name(subnet_of(net.gateway, net.prefix_len));
    let mut created = false;
    let m = match link(h, &name).await? {
        Some(m) => m,
        None => {
            created = true;
            let req = rtnetlink::LinkVxlan::new(&name, ov.vni).local(ov.local).port(VXLAN_PORT).learning(true).build();
            match h.link().add(req).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => return Err(nl(format!("create {name}"))(e)),
            }
            link(h, &name).await?.ok_or_else(|| NetError::NameClash(name.clone()))?
        }
    };
    let idx = m.header.index;
    if controller(&m) != Some(br) || !m.header.flags.contains(LinkFlags::Up) {
        h.link().set(LinkUnspec::new_with_index(idx).controller(br).up().build()).execute().await.map_err(nl(format!("attach {name}")))?;
    }
    // Isolated tenants: the overlay port is isolated too, so their instances cannot
    // reach each other across hosts either. Otherwise it is an ordinary port.
    h.link()
        .set_port(rtnetlink::LinkBridgePort::new(idx).append_info_data(InfoBridgePort::Isolated(net.isolated)).build())
        .execute()
        .await
        .map_err(nl(format!("isolate {name}")))?;
    Ok((name, created))
}

/// Makes the device's flooding entries exactly `peers` (`bridge fdb`, only on change).
async fn sync_flood_entries(dev: &str, peers: &[Ipv4Addr]) -> Result<(), NetError> {
    let out = bridge_cmd(&["fdb", "show", "dev", dev]).await?;
    let have: Vec<Ipv4Addr> = out
        .lines()
        .filter(|l| l.starts_with("00:00:00:00:00:00 "))
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "dst").nth(1)?.parse().ok())
        .collect();
    for p in peers.iter().filter(|p| !have.contains(p)) {
        bridge_cmd(&["fdb", "append", "00:00:00:00:00:00", "dev", dev, "dst", &p.to_string()]).await?;
    }
    for p in have.iter().filter(|p| !peers.contains(p)) {
        bridge_cmd(&["fdb", "del", "00:00:00:00:00:00", "dev", dev, "dst", &p.to_string()]).await?;
    }
    Ok(())
}

async fn bridge_cmd(args: &[&str]) -> Result<String, NetError> {
    let o = tokio::process::Command::new("bridge").args(args).output().await.map_err(sys("run bridge (iproute2)"))?;
    if !o.status.success() {
        return Err(NetError::Sys { context: format!("bridge {}", args.join(" ")), source: std::io::Error::other(String::from_utf8_lossy(&o.stderr).trim().to_string()) });
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Refuses a tenant subnet that overlaps a route the host already has (other than the
/// default route and hangar's own bridges): traffic to that network would go astray.
async fn check_no_overlap(h: &Handle, net: &NetSpec) -> Result<(), NetError> {
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
    let routes: Vec<_> = h.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute().try_collect().await.map_err(nl("list routes"))?;
    let links: Vec<LinkMessage> = h.link().get().execute().try_collect().await.map_err(nl("list links"))?;
    let ours = u32::from(net.address) & (u32::MAX << (32 - net.prefix_len as u32));
    for r in routes {
        let len = r.header.destination_prefix_length;
        if len == 0 {
            continue;
        }
        let Some(dst) = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        }) else {
            continue;
        };
        let dev = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => links.iter().find(|l| l.header.index == *i).and_then(link_name),
            _ => None,
        });
        if dev.as_deref().is_some_and(|d| d.starts_with("hgb")) {
            continue;
        }
        // Two prefixes overlap when they agree on the shorter one's bits.
        let shorter = len.min(net.prefix_len) as u32;
        let mask = if shorter == 0 { 0 } else { u32::MAX << (32 - shorter) };
        if u32::from(dst) & mask == ours & mask {
            return Err(NetError::Overlap {
                subnet: format!("{}/{}", Ipv4Addr::from(ours), net.prefix_len),
                route: format!("{dst}/{len}"),
                dev: dev.unwrap_or_else(|| "?".into()),
            });
        }
    }
    Ok(())
}

/// Runs `f` with a netlink handle inside the network namespace at `path`, on a fresh
/// thread: setns changes only that thread, which then dies, so no worker thread of the
/// agent is ever left in a sandbox's namespace.
async fn in_netns<F, Fut, T>(path: PathBuf, f: F) -> Result<T, NetError>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, NetError>>,
    T: Send + 'static,
{
    let job = move || -> Result<T, NetError> {
        let file = std::fs::File::open(&path).map_err(sys(format!("open {}", path.display())))?;
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Sys { context: format!("setns {}", path.display()), source: e.into() })?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(sys("runtime"))?;
        rt.block_on(async move { f(connect().await?).await })
    };
    tokio::task::spawn_blocking(move || std::thread::spawn(job).join())
        .await
        .map_err(|e| NetError::Sys { context: "netns worker".into(), source: std::io::Error::other(e.to_string()) })?
        .map_err(|_| NetError::Sys { context: "netns worker panicked".into(), source: std::io::Error::other("panic") })?
}

/// Brings the loopback of the network namespace at `path` up, so the workload can talk
/// to itself.
pub(super) async fn loopback_up(path: PathBuf) -> Result<(), NetError> {
    in_netns(path, |h| async move {
        if let Some(lo) = link(&h, "lo").await? {
            set_up(&h, lo.header.index, "lo").await?;
        }
        Ok(())
    })
    .await
}

/// Makes /run/netns a shared mount point, as `ip netns add` does. Without it, the first
/// `ip netns add` by anyone else bind-mounts the directory over itself and hides every
/// namespace mounted in it before.
fn share_netns_dir() -> Result<(), NetError> {
    let shared = |flags| nix::mount::mount(None::<&str>, NETNS_DIR, None::<&str>, flags, None::<&str>);
    let err = |e: nix::Error| NetError::Sys { context: format!("make {NETNS_DIR} a shared mount"), source: e.into() };
    match shared(MsFlags::MS_SHARED | MsFlags::MS_REC) {
        Ok(()) => Ok(()),
        Err(nix::Error::EINVAL) => {
            nix::mount::mount(Some(NETNS_DIR), NETNS_DIR, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).map_err(err)?;
            shared(MsFlags::MS_SHARED | MsFlags::MS_REC).map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

fn remove_netns(path: &Path) -> Result<(), NetError> {
    pinned::unpin(path)
}

#[async_trait::async_trait]
impl NetworkDriver for BridgeNetwork {
    fn name(&self) -> &'static str {
        "bridge"
    }

    async fn attach(&self, sandbox: &SandboxId, net: &NetSpec, ids: IdRange) -> Result<JoinNamespaces, NetError> {
        let mut laps = crate::stopwatch::Stopwatch::start();
        let h = connect().await?;
        let br = ensure_bridge(&h, net).await?;
        laps.mark("bridge");
        let join = self.ensure_pinned(sandbox, ids).await?;
        let ns = join.net.clone();
        laps.mark("pinned");
        let host_end = veth_name(sandbox);
        if let Some(m) = link(&h, &host_end).await? {
            // Exists: make sure it hangs on the right bridge and is up.
            if controller(&m) != Some(br) || !m.header.flags.contains(LinkFlags::Up) {
                h.link().set(LinkUnspec::new_with_index(m.header.index).controller(br).up().build()).execute().await.map_err(nl(format!("attach {host_end}")))?;
            }
            return Ok(join);
        }
        // One request makes the pair: the host end on the bridge and up, the sandbox end
        // born inside the namespace as eth0. Moving an existing link into a namespace
        // instead waits for an RCU grace period (15-30 ms here: most of the start path).
        // The MAC follows from the address (02:58 + IPv4, locally administered), so a
        // re-created veth answers with the MAC neighbours already have cached.
        let (addr, len, gw) = (net.address, net.prefix_len, net.gateway);
        let o = addr.octets();
        let ns_file = std::fs::File::open(&ns).map_err(sys(format!("open {}", ns.display())))?;
        use std::os::fd::AsRawFd;
        let peer = LinkUnspec::new_with_name("eth0").address(vec![0x02, 0x58, o[0], o[1], o[2], o[3]]).setns_by_fd(ns_file.as_raw_fd()).build();
        let pair = rtnetlink::LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host_end.clone())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(br)
            .up()
            .build();
        h.link().add(pair).execute().await.map_err(nl(format!("create veth {host_end} into {}", ns.display())))?;
        drop(ns_file);
        laps.mark("veth");
        if net.isolated {
            let host_idx = link(&h, &host_end).await?.map(|m| m.header.index).ok_or_else(|| NetError::NameClash(host_end.clone()))?;
            // Isolated ports forward only to non-isolated ones (the bridge itself, which
            // routes out): instances of this tenant cannot talk to each other.
            h.link()
                .set_port(rtnetlink::LinkBridgePort::new(host_idx).append_info_data(InfoBridgePort::Isolated(true)).build())
                .execute()
                .await
                .map_err(nl(format!("isolate {host_end}")))?;
        }
        laps.mark("port");
        in_netns(ns.clone(), move |h| async move {
            let idx = link(&h, "eth0").await?.ok_or_else(|| NetError::NameClash("eth0".into()))?.header.index;
            add_address(&h, idx, addr, len, "eth0").await?;
            set_up(&h, idx, "eth0").await?;
            match h.route().add(RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build()).execute().await {
                Ok(()) => Ok(()),
                Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
                Err(e) => Err(nl(format!("default route via {gw}"))(e)),
            }
        })
        .await?;
        laps.mark("inside");
        tracing::debug!(%sandbox, laps = %laps.laps(), "network attached");
        Ok(join)
    }

    async fn detach(&self, sandbox: &SandboxId) -> Result<(), NetError> {
        let h = connect().await?;
        if let Some(m) = link(&h, &veth_name(sandbox)).await? {
            match h.link().del(m.header.index).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(ENODEV) => {}
                Err(e) => return Err(nl(format!("delete {}", veth_name(sandbox)))(e)),
            }
        }
        // Both pins go even if one fails; the first error is returned.
        let net = remove_netns(&self.netns_path(sandbox));
        let user = pinned::unpin(&self.userns_path(sandbox));
        net.and(user)
    }

    fn guard_hub(&self, mut addresses: Vec<Ipv4Addr>) {
        addresses.sort();
        addresses.dedup();
        *self.hub.lock().unwrap_or_else(|p| p.into_inner()) = addresses;
    }

    async fn prewarm(&self) -> Result<(), NetError> {
        self.spares.top_up().await
    }

    async fn sync(&self, range: &ClusterRange, nets: &[NetSpec]) -> Result<(), NetError> {
        let h = connect().await?;
        let mut wanted: Vec<String> = vec![];
        let mut overlays: Vec<String> = vec![];
        let mut filters: Vec<nft::OverlayFilter> = vec![];
        for n in nets {
            if wanted.contains(&n.bridge) {
                continue;
            }
            // One tenant's broken network (e.g. an overlapping route) must not keep
            // the others from being synced: skip it, its instances report the error.
            match ensure_bridge(&h, n).await {
                Ok(br) => {
                    wanted.push(n.bridge.clone());
                    if let Some(ov) = &n.overlay {
                        let mut peers = ov.peers.clone();
                        peers.sort();
                        filters.push(nft::OverlayFilter { vni: ov.vni, peers });
                        match self.sync_overlay(&h, n, ov, br).await {
                            Ok(dev) => overlays.push(dev),
                            Err(e) => tracing::warn!(bridge = %n.bridge, error = %e, "cannot join a tenant overlay"),
                        }
                    }
                }
                Err(e) => tracing::warn!(bridge = %n.bridge, error = %e, "cannot set up a tenant bridge"),
            }
        }
        wanted.sort();
        // Bridges of this fleet's range that no instance here needs go away; bridges of
        // other ranges belong to someone else.
        let all: Vec<LinkMessage> = h.link().get().execute().try_collect().await.map_err(nl("list links"))?;
        for m in all.iter().filter(|m| is_bridge(m)) {
            let Some(n) = link_name(m) else { continue };
            let ours = bridge_subnet(&n).is_some_and(|s| range.contains(s));
            if ours && !wanted.contains(&n) {
                h.link().del(m.header.index).execute().await.map_err(nl(format!("delete bridge {n}")))?;
            }
        }
        // Overlay devices of this range that no tenant here needs (its last instance on
        // this host went, or its other hosts did).
        for m in &all {
            let Some(n) = link_name(m) else { continue };
            let ours = n.strip_prefix("hgx").and_then(|hex| bridge_subnet(&format!("hgb{hex}"))).is_some_and(|s| range.contains(s));
            if ours && !overlays.contains(&n) {
                match h.link().del(m.header.index).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(ENODEV) => {}
                    Err(e) => return Err(nl(format!("delete overlay {n}"))(e)),
                }
                self.flooded.lock().await.remove(&n);
            }
        }
        filters.sort_by_key(|f| f.vni);
        let hub = self.hub.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let rules = nft::Rules { bridges: wanted.clone(), overlays: filters, hub };
        let mut applied = self.applied.lock().await;
        if applied.as_ref() != Some(&rules) || (!wanted.is_empty() && !nft::present(&self.table).await) {
            nft::apply(&self.table, range, &rules).await?;
            *applied = Some(rules);
        }
        if !wanted.is_empty() {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(sys("enable ip_forward"))?;
        }
        Ok(())
    }

    async fn release(&self, place: HostNetwork) -> Result<(), NetError> {
        // Every step runs even if an earlier one fails; the first error is returned.
        self.spares.clear().await;
        let mut pins: Result<(), NetError> = Ok(());
        for sid in self.attached().await.unwrap_or_default() {
            pins = pins.and(self.detach(&sid).await);
        }
        let spares = pins.and(self.remove_spares());
        let rules = match place {
            HostNetwork::Shared => nft::remove(&self.table).await,
            HostNetwork::Separate => Ok(()),
        };
        spares.and(rules)
    }

    async fn wired(&self) -> Result<std::collections::HashSet<String>, NetError> {
        let h = connect().await?;
        let all: Vec<LinkMessage> = h.link().get().execute().try_collect().await.map_err(nl("list links"))?;
        Ok(all.iter().filter_map(link_name).filter(|n| n.starts_with("hv")).collect())
    }

    async fn attached(&self) -> Result<Vec<SandboxId>, NetError> {
        let mut all = self.sandboxes_in(NETNS_DIR);
        all.extend(self.sandboxes_in(pinned::USERNS_DIR));
        all.sort();
        all.dedup();
        Ok(all)
    }

    async fn user_namespaces(&self) -> Result<Vec<SandboxId>, NetError> {
        Ok(self.sandboxes_in(pinned::USERNS_DIR))
    }

    async fn inspect(&self) -> Result<NetReport, NetError> {
        let h = connect().await?;
        let all: Vec<LinkMessage> = h.link().get().execute().try_collect().await.map_err(nl("list links"))?;
        let addrs: Vec<_> = h.address().get().execute().try_collect().await.map_err(nl("list addresses"))?;
        let mut r = NetReport::default();
        let name_of = |idx: u32| all.iter().find(|m| m.header.index == idx).and_then(link_name);
        for m in &all {
            let Some(name) = link_name(m) else { continue };
            if is_bridge(m) && name.starts_with("hgb") {
                let addresses = addrs
                    .iter()
                    .filter(|a| a.header.index == m.header.index)
                    .filter_map(|a| {
                        a.attributes.iter().find_map(|x| match x {
                            AddressAttribute::Address(ip) => Some(format!("{ip}/{}", a.header.prefix_len)),
                            _ => None,
                        })
                    })
                    .collect();
                r.bridges.push(BridgeReport { name, addresses, up: m.header.flags.contains(LinkFlags::Up) });
            } else if name.starts_with("hv") {
                r.veths.push((name, controller(m).and_then(name_of)));
            }
        }
        r.namespaces = self.sandboxes_in(NETNS_DIR).into_iter().map(String::from).collect();
        let rules = nft::found(&self.table).await.unwrap_or_default();
        r.rules_present = rules.complete;
        r.overlay_peers = rules.overlay_peers.into_iter().map(|(vni, peers)| (vni, peers.iter().map(Ipv4Addr::to_string).collect())).collect();
        r.sandbox_vxlan_dropped = rules.sandbox_vxlan_dropped;
        r.ip_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|s| s.trim() == "1");
        Ok(r)
    }
}
