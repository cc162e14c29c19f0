//! The route gate of moves: once a move switched an instance's placement to its target,
//! the overlay peers of the tenant's other hosts still lead to the source until the
//! move records that the target reported the instance (`started`); only then do they
//! lead to the target. Desired documents built by the hub from the store, three hosts
//! with underlay addresses, the move's phases written as the move runner writes them.

use hangar_hub::{Hub, HubConfig, HubKeys, Principal};
use hangar_store::{HostRecord, InstanceVersion, MoveRecord};
use hangar_types::api::*;
use hangar_types::moves::{MovePhase, MoveVia};
use hangar_types::{Generation, HostId, InstanceState, Name};
use std::net::Ipv4Addr;
use std::sync::Arc;
use time::OffsetDateTime;

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

async fn hub_with_hosts(hosts: &[(&str, &str)]) -> (tempfile::TempDir, Arc<Hub>) {
    let dir = tempfile::tempdir().unwrap();
    let store = hangar_store::open(&dir.path().join("hub.db").to_string_lossy()).await.unwrap();
    let ca = hangar_tls::Ca::generate("test").unwrap();
    let keys = HubKeys { server: ca.issue_server("hub", &["localhost".into()]).unwrap(), client: ca.issue_client("hub").unwrap(), ca: Arc::new(ca) };
    let hub = Hub::new(store, keys, HubConfig::default());
    let now = OffsetDateTime::now_utc();
    for (n, endpoint) in hosts {
        let host = HostRecord {
            id: HostId::new(),
            name: name(n),
            state: HostState::Ready,
            capacity: Capacity { vcpus: 8, mem_mib: 8192, disk_mib: 100_000 },
            endpoint: Some(endpoint.to_string()),
            drivers: vec![],
            agent_version: None,
            last_heartbeat: Some(now),
            join_token_hash: None,
            cert_fingerprint: Some(format!("fp-{n}")),
            desired_generation: Generation::ZERO,
            created_at: now,
            provider: None,
        };
        hub.store.insert_host(&host).await.unwrap();
    }
    hub.tenant_create(&Principal::Admin, TenantCreate { name: name("acme"), quotas: None, isolated: false, net_prefix: None }).await.unwrap();
    (dir, hub)
}

fn create(n: &str, host: &str) -> InstanceCreate {
    InstanceCreate { name: name(n), image: ImageRef::Host, vcpus: 1, mem_mib: 64, disk_mib: 64, command: vec![], env: Default::default(), start: false, host: Some(name(host)), secrets: vec![] }
}

/// The overlay peers of tenant acme in `host`'s desired document.
async fn peers(hub: &Hub, host: &str) -> Vec<Ipv4Addr> {
    let rec = hub.store.get_host(&name(host)).await.unwrap().unwrap();
    let doc = hub.desired_doc(&rec).await.unwrap();
    doc.instances.iter().filter(|i| i.tenant.as_str() == "acme").find_map(|i| i.network.as_ref()?.overlay.as_ref().map(|o| o.peers.clone())).unwrap_or_default()
}

#[tokio::test]
async fn peers_follow_a_moved_instance_only_once_its_target_reported_it() {
    let (a, b, c) = (Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(10, 9, 0, 2), Ipv4Addr::new(10, 9, 0, 3));
    let (_dir, hub) = hub_with_hosts(&[("node-a", "https://10.9.0.1:7000"), ("node-b", "https://10.9.0.2:7000"), ("node-c", "https://10.9.0.3:7000")]).await;
    hub.instance_create(&Principal::Admin, &name("acme"), create("web", "node-a")).await.unwrap();
    hub.instance_create(&Principal::Admin, &name("acme"), create("db", "node-c")).await.unwrap();
    assert_eq!(peers(&hub, "node-c").await, vec![a]);

    // A move of web from node-a to node-b, up to its switch.
    let web = hub.store.get_instance(&name("acme"), &name("web")).await.unwrap().unwrap();
    let m = MoveRecord {
        id: "0b0e0f00-0000-4000-8000-000000000001".into(),
        instance: web.id,
        tenant: web.tenant.clone(),
        name: web.name.clone(),
        source: name("node-a"),
        target: name("node-b"),
        previous_state: InstanceState::Created,
        phase: MovePhase::Sending,
        via: MoveVia::Transfer,
        bytes: 0,
        downtime_ms: None,
        keep_source_until: None,
        error: None,
        created_at: OffsetDateTime::now_utc(),
        finished_at: None,
    };
    hub.store.insert_move(&m).await.unwrap();
    for (from, to) in [(MovePhase::Sending, MovePhase::Stopping), (MovePhase::Stopping, MovePhase::Final), (MovePhase::Final, MovePhase::Staged)] {
        assert!(hub.store.set_move_phase(&m.id, from, to, 0, None, None).await.unwrap());
    }
    let mut next = web.clone();
    next.host = Some(name("node-b"));
    next.generation = hub.store.next_generation().await.unwrap();
    hub.store.switch_move(&m.id, &next, InstanceVersion::of(&web), &name("node-a")).await.unwrap();
    assert_eq!(hub.store.get_instance(&name("acme"), &name("web")).await.unwrap().unwrap().host, Some(name("node-b")));

    // Switched, not yet reported by the target: routes still lead to the source.
    assert_eq!(peers(&hub, "node-c").await, vec![a], "peers switched before the target reported the instance");
    assert_eq!(peers(&hub, "node-b").await, vec![a, c]);

    // The target reported it (the runner records `started`): peers lead to the target.
    assert!(hub.store.set_move_phase(&m.id, MovePhase::Switched, MovePhase::Started, 0, None, None).await.unwrap());
    assert_eq!(peers(&hub, "node-c").await, vec![b]);
    assert_eq!(peers(&hub, "node-b").await, vec![c]);
    assert!(hub.store.set_move_phase(&m.id, MovePhase::Started, MovePhase::Done, 0, None, None).await.unwrap());
    assert_eq!(peers(&hub, "node-c").await, vec![b]);
}
