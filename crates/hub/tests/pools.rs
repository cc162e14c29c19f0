//! The hub's pool reconciler and scheduler over three hosts whose agents are played by
//! the test: each "agent" reads its host's desired document from the hub and reports
//! that it did exactly that. (The real agents, sandboxes and namespaces are exercised by
//! `crates/cli/tests/e2e_fleet.rs`; this file pins the decisions: scaling order, spread,
//! quotas, hold-off, drain, staleness.)

use hangar_hub::{Hub, HubConfig, HubKeys, Principal};
use hangar_store::{HostRecord, InstanceFilter};
use hangar_types::api::*;
use hangar_types::protocol::{AgentReport, ObservedInstance, PROTOCOL_VERSION};
use hangar_types::{DesiredState, ErrorCode, Generation, HostId, InstanceState, Name, ObservedState, Transition};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

async fn hub(cfg: HubConfig) -> (tempfile::TempDir, Arc<Hub>) {
    let dir = tempfile::tempdir().unwrap();
    let store = hangar_store::open(&dir.path().join("hub.db").to_string_lossy()).await.unwrap();
    let ca = hangar_tls::Ca::generate("test").unwrap();
    let keys = HubKeys { server: ca.issue_server("hub", &["localhost".into()]).unwrap(), client: ca.issue_client("hub").unwrap(), ca: Arc::new(ca) };
    let hub = Hub::new(store, keys, cfg);
    for h in ["node-a", "node-b", "node-c"] {
        let rec = HostRecord {
            id: HostId::new(),
            name: name(h),
            state: HostState::Ready,
            capacity: Capacity { vcpus: 2, mem_mib: 8192, disk_mib: 100_000 },
            endpoint: Some("https://127.0.0.1:1".into()),
            drivers: vec![],
            agent_version: None,
            last_heartbeat: Some(OffsetDateTime::now_utc()),
            join_token_hash: None,
            cert_fingerprint: Some(format!("fp-{h}")),
            desired_generation: Generation::ZERO,
            created_at: OffsetDateTime::now_utc(),
            provider: None,
        };
        hub.store.insert_host(&rec).await.unwrap();
    }
    let quotas = Quotas { max_vcpus: 16, max_mem_mib: 4096, max_running: 8, max_instances: 12, max_disk_gib: 10 };
    hub.tenant_create(&Principal::Admin, TenantCreate { name: name("acme"), quotas: Some(quotas), isolated: false, net_prefix: None }).await.unwrap();
    (dir, hub)
}

/// One convergence pass of a host's (played) agent: does what the document says.
async fn agent_pass(hub: &Hub, host: &str) {
    let rec = hub.store.get_host(&name(host)).await.unwrap().unwrap();
    let doc = hub.desired_doc(&rec).await.unwrap();
    let instances = doc
        .instances
        .iter()
        .map(|d| ObservedInstance {
            id: d.id,
            state: match d.desired {
                DesiredState::Running => ObservedState::Running,
                DesiredState::Warm => ObservedState::Warm,
                DesiredState::Stopped => ObservedState::Stopped,
                DesiredState::Deleted => ObservedState::Gone,
            },
            generation: d.generation,
            error: None,
            snapshots: None,
        })
        .collect();
    let report = AgentReport {
        schema_version: PROTOCOL_VERSION,
        agent_version: "test".into(),
        capacity: rec.capacity,
        endpoint: "https://127.0.0.1:1".into(),
        drivers: vec![],
        instances,
    };
    hub.report(rec, report).await.unwrap();
}

/// Agents and pool passes until the pool converged (bounded).
async fn converge(hub: &Hub, hosts: &[&str]) -> PoolInfo {
    for _ in 0..20 {
        for h in hosts {
            agent_pass(hub, h).await;
        }
        hub.reconcile_pools().await.unwrap();
        let info = hub.pool_info(&Principal::Admin, &name("acme"), &name("workers")).await.unwrap();
        if info.converged {
            return info;
        }
    }
    panic!("pool did not converge: {:?}", hub.pool_info(&Principal::Admin, &name("acme"), &name("workers")).await.unwrap());
}

fn pool_req(counts: PoolCounts) -> PoolCreate {
    PoolCreate::new(name("workers"), name("worker"), InstanceSpec { image: ImageRef::Host, vcpus: 1, mem_mib: 64, disk_mib: 64, command: vec![], env: Default::default(), secrets: vec![] }, counts)
}

fn scale(running: u32, warm: u32, sleeping: u32) -> PoolScale {
    PoolScale { running: Some(running), warm: Some(warm), sleeping: Some(sleeping) }
}

async fn members(hub: &Hub) -> Vec<Instance> {
    hub.store.list_instances(&InstanceFilter::pool(&name("acme"), &name("workers"))).await.unwrap()
}

#[tokio::test]
async fn pools_scale_up_spread_and_scale_down_newest_first() {
    let (_d, hub) = hub(HubConfig::default()).await;
    let all = ["node-a", "node-b", "node-c"];
    let info = hub.pool_create(&Principal::Admin, &name("acme"), pool_req(PoolCounts { running: 2, warm: 0, sleeping: 0 })).await.unwrap();
    assert_eq!(info.actions.len(), 2, "{:?}", info.actions);
    converge(&hub, &all).await;

    let info = hub.pool_scale(&Principal::Admin, &name("acme"), &name("workers"), scale(4, 2, 1)).await.unwrap();
    assert!(!info.actions.is_empty());
    let info = converge(&hub, &all).await;
    assert_eq!((info.actual.running, info.actual.warm, info.actual.sleeping), (4, 2, 1));
    // Spread: seven members over three equal hosts, no host with more than three.
    assert_eq!(info.hosts.len(), 3, "{:?}", info.hosts);
    for (h, t) in &info.hosts {
        let n = t.running + t.warm + t.sleeping;
        assert!((2..=3).contains(&n), "host {h} holds {n}: {:?}", info.hosts);
    }

    // Adding running resumes warm members first: no new member is made.
    let before: Vec<_> = members(&hub).await.into_iter().map(|m| m.id).collect();
    let info = hub.pool_scale(&Principal::Admin, &name("acme"), &name("workers"), scale(6, 0, 1)).await.unwrap();
    assert!(info.actions.iter().all(|a| a.starts_with("resume")), "{:?}", info.actions);
    converge(&hub, &all).await;
    let after: Vec<_> = members(&hub).await.into_iter().map(|m| m.id).collect();
    assert_eq!(before.len(), after.len());

    // Scale down: the newest go, the oldest stays.
    let oldest = members(&hub).await.into_iter().min_by_key(|m| m.created_at).unwrap();
    hub.pool_scale(&Principal::Admin, &name("acme"), &name("workers"), scale(1, 0, 0)).await.unwrap();
    let info = converge(&hub, &all).await;
    assert_eq!((info.actual.running, info.actual.warm, info.actual.sleeping), (1, 0, 0));
    assert_eq!(members(&hub).await[0].id, oldest.id);

    // Events record the decisions.
    let ev = hub.events(&Principal::Admin, Some(&name("acme")), 1000).await.unwrap();
    assert!(ev.iter().any(|e| e.action == "pool.scale"));
    assert!(ev.iter().any(|e| e.action == "pool.reconcile" && e.actor == "pool:acme/workers"));
    assert!(ev.iter().any(|e| e.action == "instance.create" && e.message.as_deref().is_some_and(|m| m.contains("placed on host"))));
}

#[tokio::test]
async fn scaling_beyond_quota_names_the_quota_and_changes_nothing() {
    let (_d, hub) = hub(HubConfig::default()).await;
    hub.pool_create(&Principal::Admin, &name("acme"), pool_req(PoolCounts { running: 2, warm: 0, sleeping: 0 })).await.unwrap();
    let e = hub.pool_scale(&Principal::Admin, &name("acme"), &name("workers"), scale(9, 0, 0)).await.unwrap_err();
    assert_eq!(e.0.code, ErrorCode::QuotaExceeded);
    assert!(e.0.message.contains("max_running is 8"), "{}", e.0.message);
    let e = hub.pool_scale(&Principal::Admin, &name("acme"), &name("workers"), scale(2, 0, 11)).await.unwrap_err();
    assert!(e.0.message.contains("max_instances is 12"), "{}", e.0.message);
    let info = hub.pool_info(&Principal::Admin, &name("acme"), &name("workers")).await.unwrap();
    assert_eq!(info.pool.counts, PoolCounts { running: 2, warm: 0, sleeping: 0 });
    // A tenant token of another tenant does not see the pool.
    hub.tenant_create(&Principal::Admin, TenantCreate { name: name("beta"), quotas: None, isolated: false, net_prefix: None }).await.unwrap();
    let e = hub.pool_info(&Principal::Tenant(name("beta")), &name("acme"), &name("workers")).await.unwrap_err();
    assert_eq!(e.0.code, ErrorCode::NotFound);
}

#[tokio::test]
async fn a_manual_stop_holds_the_pool_off_that_member() {
    let cfg = HubConfig { pool_hold: Duration::from_secs(2), ..HubConfig::default() };
    let (_d, hub) = hub(cfg).await;
    let all = ["node-a", "node-b", "node-c"];
    hub.pool_create(&Principal::Admin, &name("acme"), pool_req(PoolCounts { running: 2, warm: 0, sleeping: 0 })).await.unwrap();
    converge(&hub, &all).await;
    let m = members(&hub).await.remove(0);
    hub.instance_request(&Principal::Admin, &name("acme"), &m.name, Transition::Stop).await.unwrap();
    for h in all {
        agent_pass(&hub, h).await;
    }
    hub.reconcile_pools().await.unwrap();
    let now = members(&hub).await;
    let held = now.iter().find(|i| i.id == m.id).unwrap();
    assert_eq!(held.state, InstanceState::Stopped, "the pool undid a manual stop at once");
    // A replacement keeps the running count.
    assert_eq!(now.iter().filter(|i| i.state.counts_as_running()).count(), 2);
    // After the hold, the surplus stopped member is removed.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    converge(&hub, &all).await;
    assert!(members(&hub).await.iter().all(|i| i.id != m.id));
}

#[tokio::test]
async fn draining_a_host_moves_pool_members_off_it() {
    let (_d, hub) = hub(HubConfig::default()).await;
    let all = ["node-a", "node-b", "node-c"];
    hub.pool_create(&Principal::Admin, &name("acme"), pool_req(PoolCounts { running: 3, warm: 0, sleeping: 0 })).await.unwrap();
    converge(&hub, &all).await;
    assert!(members(&hub).await.iter().any(|i| i.host.as_ref().is_some_and(|h| h.as_str() == "node-a")));
    hub.host_drain(&Principal::Admin, &name("node-a"), true).await.unwrap();
    let info = converge(&hub, &all).await;
    assert_eq!(info.actual.running, 3);
    assert!(members(&hub).await.iter().all(|i| i.host.as_ref().is_some_and(|h| h.as_str() != "node-a")), "{:?}", info.hosts);
    // Nothing new lands on a draining host.
    let e = hub.host_drain(&Principal::Admin, &name("node-x"), true).await.unwrap_err();
    assert_eq!(e.0.code, ErrorCode::NotFound);
    hub.host_drain(&Principal::Admin, &name("node-a"), false).await.unwrap();
}

#[tokio::test]
async fn a_silent_host_goes_stale_its_instances_unknown_and_not_replaced() {
    let cfg = HubConfig { stale_after: Duration::from_millis(300), ..HubConfig::default() };
    let (_d, hub) = hub(cfg).await;
    let all = ["node-a", "node-b", "node-c"];
    hub.pool_create(&Principal::Admin, &name("acme"), pool_req(PoolCounts { running: 3, warm: 0, sleeping: 0 })).await.unwrap();
    converge(&hub, &all).await;
    let before = members(&hub).await;
    // node-c stops reporting; the others keep on.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for h in ["node-a", "node-b"] {
        agent_pass(&hub, h).await;
    }
    hangar_hub::monitor::Monitor::default().check_once(&hub).await.unwrap();
    let c = hub.store.get_host(&name("node-c")).await.unwrap().unwrap();
    assert_eq!(c.state, HostState::Stale);
    let after = members(&hub).await;
    let on_c: Vec<_> = after.iter().filter(|i| i.host.as_ref().is_some_and(|h| h.as_str() == "node-c")).collect();
    assert!(!on_c.is_empty());
    assert!(on_c.iter().all(|i| i.observed == ObservedState::Unknown && i.state == InstanceState::Running));
    hub.reconcile_pools().await.unwrap();
    assert_eq!(members(&hub).await.len(), before.len(), "a stale host's members were duplicated");
    // node-c reports again: ready, its members adopted as they are.
    agent_pass(&hub, "node-c").await;
    assert_eq!(hub.store.get_host(&name("node-c")).await.unwrap().unwrap().state, HostState::Ready);
    let info = converge(&hub, &all).await;
    assert_eq!(info.actual.running, 3);
    assert_eq!(members(&hub).await.iter().map(|i| i.id).collect::<Vec<_>>(), before.iter().map(|i| i.id).collect::<Vec<_>>());
}

/// A tenant asked for a /23 hands out addresses past the first /24, wires instances with
/// its prefix, and a prefix out of range is a 400 naming the field.
#[tokio::test]
async fn a_bigger_tenant_subnet_hands_out_addresses_past_its_first_24() {
    let (_dir, hub) = hub(HubConfig::default()).await;
    let bad = hub.tenant_create(&Principal::Admin, TenantCreate { name: name("wide"), quotas: None, isolated: false, net_prefix: Some(19) }).await.unwrap_err();
    assert_eq!(bad.0.code, ErrorCode::InvalidArgument, "{bad:?}");
    assert!(bad.0.message.contains("net_prefix"), "{}", bad.0.message);
    let quotas = Quotas { max_vcpus: 1000, max_mem_mib: 1_000_000, max_running: 300, max_instances: 300, max_disk_gib: 1000 };
    let t = hub.tenant_create(&Principal::Admin, TenantCreate { name: name("wide"), quotas: Some(quotas), isolated: false, net_prefix: Some(23) }).await.unwrap();
    assert_eq!((t.net_id, t.net_prefix), (2, 23), "acme holds net id 1: a /23 starts at the next aligned block");
    for k in 0..256 {
        let req = InstanceCreate {
            name: name(&format!("w{k}")),
            image: "host".parse().unwrap(),
            vcpus: 1,
            mem_mib: 16,
            disk_mib: 16,
            command: vec![],
            env: Default::default(),
            start: false,
            host: None,
            secrets: vec![],
        };
        hub.instance_create(&Principal::Admin, &name("wide"), req).await.unwrap();
    }
    let mut addrs: Vec<std::net::Ipv4Addr> =
        hub.store.list_instances(&InstanceFilter::tenant(&name("wide"))).await.unwrap().into_iter().filter_map(|i| i.address).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 256);
    let range = HubConfig::default().cluster_range;
    assert_eq!(addrs[0], range.host(2, 2));
    assert_eq!(addrs[255], range.host(2, 257), "the 256th address is in the second /24");
    // The agents get the /23 and its one gateway.
    let host = hub.store.get_host(&name("node-a")).await.unwrap().unwrap();
    let doc = hub.desired_doc(&host).await.unwrap();
    let net = doc.instances.iter().find_map(|d| d.network.clone()).expect("an instance on node-a");
    assert_eq!((net.prefix_len, net.gateway), (23, range.gateway(2)));
}
