//! Uid ranges through the hub's create path: disjoint across tenants, kept through
//! stop and start, in the host's desired document, freed once an instance is deleted,
//! and a clear no_capacity (with nothing created) when none is free. The sandboxes that
//! run in them are exercised by `crates/cli/tests/hostile_sandbox.rs`.

use hangar_hub::{Hub, HubConfig, HubKeys, Principal};
use hangar_store::HostRecord;
use hangar_types::api::*;
use hangar_types::idmap::{IdPool, IdRange, IDS_PER_SANDBOX};
use hangar_types::protocol::{AgentReport, ObservedInstance, PROTOCOL_VERSION};
use hangar_types::{ErrorCode, Generation, HostId, Name, ObservedState, Transition};
use std::sync::Arc;
use time::OffsetDateTime;

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

/// A hub with room for two uid ranges, one ready host and tenants acme and zeta.
async fn two_range_hub() -> (tempfile::TempDir, Arc<Hub>) {
    let dir = tempfile::tempdir().unwrap();
    let store = hangar_store::open(&dir.path().join("hub.db").to_string_lossy()).await.unwrap();
    let ca = hangar_tls::Ca::generate("test").unwrap();
    let keys = HubKeys { server: ca.issue_server("hub", &["localhost".into()]).unwrap(), client: ca.issue_client("hub").unwrap(), ca: Arc::new(ca) };
    let hub = Hub::new(store, keys, HubConfig { uid_ranges: IdPool::new(1 << 20, 2).unwrap(), ..HubConfig::default() });
    let now = OffsetDateTime::now_utc();
    let host = HostRecord {
        id: HostId::new(),
        name: name("node-a"),
        state: HostState::Ready,
        capacity: Capacity { vcpus: 8, mem_mib: 8192, disk_mib: 100_000 },
        endpoint: Some("https://127.0.0.1:1".into()),
        drivers: vec![],
        agent_version: None,
        last_heartbeat: Some(now),
        join_token_hash: None,
        cert_fingerprint: Some("fp".into()),
        desired_generation: Generation::ZERO,
        created_at: now,
        provider: None,
    };
    hub.store.insert_host(&host).await.unwrap();
    for t in ["acme", "zeta"] {
        hub.tenant_create(&Principal::Admin, TenantCreate { name: name(t), quotas: None, isolated: false, net_prefix: None }).await.unwrap();
    }
    (dir, hub)
}

fn create(n: &str) -> InstanceCreate {
    InstanceCreate { name: name(n), image: ImageRef::Host, vcpus: 1, mem_mib: 64, disk_mib: 64, command: vec![], env: Default::default(), start: false, host: None, secrets: vec![] }
}

async fn ids_of(hub: &Hub, t: &str, n: &str) -> Option<IdRange> {
    hub.store.get_instance(&name(t), &name(n)).await.unwrap().unwrap().ids
}

/// The host reports every instance of its document as the document wants it.
async fn agent_pass(hub: &Hub) {
    let rec = hub.store.get_host(&name("node-a")).await.unwrap().unwrap();
    let doc = hub.desired_doc(&rec).await.unwrap();
    let instances = doc
        .instances
        .iter()
        .map(|d| {
            let state = match d.desired {
                hangar_types::DesiredState::Deleted => ObservedState::Gone,
                hangar_types::DesiredState::Running => ObservedState::Running,
                _ => ObservedState::Stopped,
            };
            ObservedInstance { id: d.id, state, generation: d.generation, error: None, snapshots: None }
        })
        .collect();
    let report = AgentReport { schema_version: PROTOCOL_VERSION, agent_version: "test".into(), capacity: rec.capacity, endpoint: "https://127.0.0.1:1".into(), drivers: vec![], instances };
    hub.report(rec, report).await.unwrap();
}

#[tokio::test]
async fn uid_ranges_are_disjoint_kept_freed_and_exhaustion_is_a_clear_error() {
    let (_d, hub) = two_range_hub().await;
    let admin = Principal::Admin;
    hub.instance_create(&admin, &name("acme"), create("a")).await.unwrap();
    hub.instance_create(&admin, &name("zeta"), create("b")).await.unwrap();
    let (a, b) = (ids_of(&hub, "acme", "a").await.unwrap(), ids_of(&hub, "zeta", "b").await.unwrap());
    assert_eq!((a, b), (IdRange::at(1 << 20), IdRange::at((1 << 20) + IDS_PER_SANDBOX)), "the lowest free ranges, one per instance");
    assert!(!a.overlaps(&b));

    // Every range is held: a clear error naming the cause, and no instance made.
    let e = hub.instance_create(&admin, &name("acme"), create("c")).await.unwrap_err().0;
    assert_eq!(e.code, ErrorCode::NoCapacity, "{}", e.message);
    assert!(e.message.contains("no free uid range") && e.message.contains("1048576..1179647"), "{}", e.message);
    assert!(hub.store.get_instance(&name("acme"), &name("c")).await.unwrap().is_none(), "nothing half-created");

    // Kept through start and stop, and sent to the host.
    for t in [Transition::Start, Transition::Stop] {
        hub.instance_request(&admin, &name("acme"), &name("a"), t).await.unwrap();
        agent_pass(&hub).await;
        assert_eq!(ids_of(&hub, "acme", "a").await, Some(a));
    }
    let doc = hub.desired_doc(&hub.store.get_host(&name("node-a")).await.unwrap().unwrap()).await.unwrap();
    assert_eq!(doc.instances.iter().find(|d| d.name.as_str() == "a").unwrap().ids, Some(a));

    // Deleted (the host confirms): its range goes to the next instance.
    hub.instance_request(&admin, &name("acme"), &name("a"), Transition::Delete).await.unwrap();
    agent_pass(&hub).await;
    hub.instance_create(&admin, &name("zeta"), create("c")).await.unwrap();
    assert_eq!(ids_of(&hub, "zeta", "c").await, Some(a));
}
