//! Two hubs on one store, each with its own in-process coordination (no lock shared):
//! what the store's compare-and-swap and narrow writes must keep correct by themselves.

use hangar_hub::{Hub, HubConfig, HubKeys, Principal};
use hangar_store::contract::fixtures;
use hangar_store::HostRecord;
use hangar_types::api::*;
use hangar_types::{ErrorCode, InstanceState, Name, Transition};
use std::sync::Arc;
use time::OffsetDateTime;

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

/// Two hubs sharing one store file, with one ready host and tenant `acme`.
async fn two_hubs() -> (tempfile::TempDir, Arc<Hub>, Arc<Hub>) {
    let dir = tempfile::tempdir().unwrap();
    let store = hangar_store::open(&dir.path().join("hub.db").to_string_lossy()).await.unwrap();
    let ca = Arc::new(hangar_tls::Ca::generate("test").unwrap());
    let keys = HubKeys { server: ca.issue_server("hub", &["localhost".into()]).unwrap(), client: ca.issue_client("hub").unwrap(), ca };
    let (a, b) = (Hub::new(store.clone(), keys.clone(), HubConfig::default()), Hub::new(store, keys, HubConfig::default()));
    let rec = HostRecord {
        state: HostState::Ready,
        endpoint: Some("https://127.0.0.1:1".into()),
        last_heartbeat: Some(OffsetDateTime::now_utc()),
        join_token_hash: None,
        cert_fingerprint: Some("fp-a".into()),
        provider: None,
        ..fixtures::host("node-a")
    };
    a.store.insert_host(&rec).await.unwrap();
    let quotas = Quotas { max_vcpus: 100, max_mem_mib: 100_000, max_running: 50, max_instances: 50, max_disk_gib: 100 };
    a.tenant_create(&Principal::Admin, TenantCreate { name: name("acme"), quotas: Some(quotas), isolated: false, net_prefix: None }).await.unwrap();
    (dir, a, b)
}

/// Serially, of several starts of a created instance exactly one is accepted (the rest
/// find it starting). Two hubs racing must not both accept one: a start decided on a
/// stale read is refused with a conflict, never written over the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_requests_on_two_hubs_are_accepted_once() {
    let (_dir, a, b) = two_hubs().await;
    for round in 0..10 {
        let inst = name(&format!("web-{round}"));
        // As a client sends it: a small created (not started) instance, placed by the hub.
        let create: InstanceCreate =
            serde_json::from_value(serde_json::json!({"name": inst, "image": "host", "vcpus": 1, "mem_mib": 64, "disk_mib": 64})).unwrap();
        a.instance_create(&Principal::Admin, &name("acme"), create).await.unwrap();
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let hub = if i % 2 == 0 { a.clone() } else { b.clone() };
                let inst = inst.clone();
                tokio::spawn(async move { hub.instance_request(&Principal::Admin, &name("acme"), &inst, Transition::Start).await })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => accepted += 1,
                Err(e) => assert!(matches!(e.0.code, ErrorCode::Conflict | ErrorCode::IllegalTransition), "round {round}: {:?}", e.0),
            }
        }
        assert_eq!(accepted, 1, "round {round}: a start was accepted by both hubs");
        let stored = a.instance_get(&Principal::Admin, &name("acme"), &inst).await.unwrap();
        assert_eq!(stored.state, InstanceState::Starting);
        // The host was told in the same write: its generation is not behind the instance's.
        let host = a.store.get_host(&name("node-a")).await.unwrap().unwrap();
        assert!(host.desired_generation > stored.generation, "host {} vs instance {}", host.desired_generation, stored.generation);
    }
}
