//! Issue 13: operation waiters are woken by their own operation, not by every one.

use hangar_hub::{Hub, HubConfig, HubKeys, Principal};
use hangar_store::contract::fixtures;
use hangar_store::HostRecord;
use hangar_types::api::*;
use hangar_types::{Name, Transition};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_wakes_for_its_operation_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = hangar_store::open(&dir.path().join("hub.db").to_string_lossy()).await.unwrap();
    let ca = Arc::new(hangar_tls::Ca::generate("test").unwrap());
    let keys = HubKeys { server: ca.issue_server("hub", &["localhost".into()]).unwrap(), client: ca.issue_client("hub").unwrap(), ca };
    let hub = Hub::new(store, keys, HubConfig::default());
    let rec = HostRecord { state: HostState::Ready, capacity: Capacity { vcpus: 2, mem_mib: 8192, disk_mib: 100_000 }, join_token_hash: None, endpoint: Some("https://127.0.0.1:1".into()), provider: None, cert_fingerprint: Some("fp".into()), last_heartbeat: Some(time::OffsetDateTime::now_utc()), ..fixtures::host("node-a") };
    hub.store.insert_host(&rec).await.unwrap();
    hub.tenant_create(&Principal::Admin, TenantCreate { name: name("acme"), quotas: None, isolated: false, net_prefix: None }).await.unwrap();
    let mut ops = vec![];
    for n in ["a", "b"] {
        let create: InstanceCreate = serde_json::from_value(serde_json::json!({"name": n, "image": "host", "vcpus": 1, "mem_mib": 64, "disk_mib": 64})).unwrap();
        hub.instance_create(&Principal::Admin, &name("acme"), create).await.unwrap();
        ops.push(hub.instance_request(&Principal::Admin, &name("acme"), &name(n), Transition::Start).await.unwrap());
    }
    let wait = |id| {
        let hub = hub.clone();
        tokio::spawn(async move { hub.operation_wait(&Principal::Admin, id, Duration::from_secs(60)).await.unwrap() })
    };
    let (wa, wb) = (wait(ops[0].id), wait(ops[1].id));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hub.operations_waited_on(), 2);
    // A newer request on `a` cancels its start: only a's waiter answers, at once.
    let t = Instant::now();
    hub.instance_request(&Principal::Admin, &name("acme"), &name("a"), Transition::Stop).await.unwrap();
    let done = wa.await.unwrap();
    assert!(done.status.is_final(), "{done:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "the waiter was not woken by its operation: {:?}", t.elapsed());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!wb.is_finished(), "b's waiter answered though its operation runs on");
    assert_eq!(hub.operations_waited_on(), 1, "a finished wait leaves no channel behind");
    wb.abort();
}
