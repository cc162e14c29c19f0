//! Behaviour of `SqliteStore` against the `Store` contract, on real database files.
//!
//! Each test opens its own file in a temporary directory; durability tests drop or
//! close the store and open the same file again. Timestamps carry nanoseconds and a
//! non-UTC offset on purpose, to prove they round-trip exactly.

use hangar_store::{HostRecord, InstanceFilter, NewEvent, SqliteStore, Store, StoreError, TokenRecord};
use hangar_types::api::{
    Capacity, HostState, ImageRef, Instance, InstanceSpec, Operation, OperationStatus, Pool, PoolCounts, Quotas, Tenant,
};
use hangar_types::{DesiredState, HostId, InstanceId, InstanceState, Name, ObservedState, OperationId, TenantId};
use std::collections::BTreeMap;
use std::sync::Arc;
use tempfile::TempDir;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

// ---- fixtures ----

async fn store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(&dir).await;
    (dir, store)
}

async fn reopen(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("hub.db")).await.unwrap()
}

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

/// A time with nanoseconds and a non-UTC offset, `n` seconds after a fixed instant.
fn at(n: i64) -> OffsetDateTime {
    datetime!(2025-03-04 05:06:07.123456789 +02:00) + Duration::seconds(n)
}

fn tenant(n: &str) -> Tenant {
    Tenant {
        id: TenantId::new(),
        name: name(n),
        quotas: Quotas { max_vcpus: 3, ..Quotas::default() },
        net_id: 0, // ignored: the store allocates it
        net_prefix: 24,
        created_at: at(0),
        isolated: n.ends_with("-iso"),
    }
}

fn host(n: &str) -> HostRecord {
    HostRecord {
        id: HostId::new(),
        name: name(n),
        state: HostState::Joining,
        capacity: Capacity { vcpus: 8, mem_mib: 16384, disk_mib: 100_000 },
        endpoint: None,
        drivers: vec!["runtime=runc".into(), "volume=btrfs".into()],
        agent_version: None,
        last_heartbeat: None,
        join_token_hash: Some(format!("join-{n}")),
        cert_fingerprint: None,
        desired_generation: 0,
        created_at: at(1),
        provider: Some("local".into()),
    }
}

fn instance(tenant: &str, n: &str, host: Option<&str>) -> Instance {
    Instance {
        id: InstanceId::new(),
        tenant: name(tenant),
        name: name(n),
        spec: InstanceSpec {
            image: ImageRef::Dir("/srv/rootfs".into()),
            vcpus: 2,
            mem_mib: 512,
            disk_mib: 1024,
            command: vec!["sleep".into(), "1".into()],
            env: BTreeMap::from([("A".into(), "b".into())]),
        },
        host: host.map(name),
        state: InstanceState::Created,
        desired: DesiredState::Stopped,
        observed: ObservedState::Unknown,
        generation: 1,
        error: None,
        created_at: at(2),
        updated_at: at(3),
        address: None,
        pool: None,
        held_until: None,
    }
}

fn operation(instance_id: Option<InstanceId>, created: i64) -> Operation {
    Operation {
        id: OperationId::new(),
        kind: "instance.start".into(),
        tenant: Some(name("acme")),
        target: "acme/web".into(),
        instance_id,
        target_state: Some(InstanceState::Running),
        status: OperationStatus::Running,
        error: None,
        created_at: at(created),
        updated_at: at(created),
    }
}

fn token(id: &str, tenant: Option<&str>, created: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        hash: format!("hash-{id}"),
        tenant: tenant.map(name),
        description: Some(format!("token {id}")),
        created_at: at(created),
    }
}

fn event(tenant: Option<&str>, object: &str) -> NewEvent {
    NewEvent {
        actor: "admin".into(),
        tenant: tenant.map(name),
        object: object.into(),
        action: "instance.create".into(),
        result: "ok".into(),
        message: None,
    }
}

// ---- tenants ----

/// A script of inserts and deletes against a range of three networks, with the outcome
/// each step must have: smallest free id, reuse after delete, exhaustion, duplicates.
#[tokio::test]
async fn tenant_net_ids_follow_the_smallest_free_rule() {
    enum Step {
        Insert(&'static str, Result<u32, &'static str>),
        Delete(&'static str, bool),
    }
    use Step::*;
    let script = [
        Insert("a", Ok(1)),
        Insert("b", Ok(2)),
        Insert("c", Ok(3)),
        Insert("d", Err("exhausted")),
        Delete("b", true),
        Delete("b", false),
        Insert("d", Ok(2)),
        Insert("a", Err("exists")),
        Delete("a", true),
        Insert("e", Ok(1)),
        // Both taken and full: the name conflict is the more useful answer.
        Insert("c", Err("exists")),
        Insert("f", Err("exhausted")),
    ];
    let (_dir, store) = store().await;
    for (i, step) in script.into_iter().enumerate() {
        match step {
            Insert(n, want) => {
                let t = tenant(n);
                match (store.insert_tenant(&t, 3).await, want) {
                    (Ok(got), Ok(net_id)) => {
                        assert_eq!(got, Tenant { net_id, ..t }, "step {i}");
                        assert_eq!(store.get_tenant(&name(n)).await.unwrap(), Some(got), "step {i}");
                    }
                    (Err(StoreError::NetworksExhausted(3)), Err("exhausted")) => {}
                    (Err(StoreError::AlreadyExists(what)), Err("exists")) => assert_eq!(what, format!("tenant '{n}'")),
                    (got, want) => panic!("step {i}: insert {n}: got {got:?}, want {want:?}"),
                }
            }
            Delete(n, want) => assert_eq!(store.delete_tenant(&name(n)).await.unwrap(), want, "step {i}"),
        }
    }
    let listed: Vec<(String, u32)> =
        store.list_tenants().await.unwrap().into_iter().map(|t| (t.name.to_string(), t.net_id)).collect();
    assert_eq!(listed, [("c".into(), 3), ("d".into(), 2), ("e".into(), 1)]);
    assert_eq!(store.get_tenant(&name("a")).await.unwrap(), None);
}

/// Bigger subnets take an aligned block of net ids; /24s fill the holes around them.
#[tokio::test]
async fn tenant_subnets_of_several_sizes_take_aligned_blocks() {
    let (_dir, store) = store().await;
    let sized = |n: &str, p: u8| Tenant { net_prefix: p, ..tenant(n) };
    let mut got = vec![];
    for (n, p) in [("a", 24), ("b", 22), ("c", 24), ("d", 23), ("e", 24)] {
        let t = store.insert_tenant(&sized(n, p), 9).await.unwrap();
        assert_eq!(store.get_tenant(&name(n)).await.unwrap().unwrap().net_prefix, p);
        got.push((n, t.net_id));
    }
    assert_eq!(got, [("a", 1), ("b", 4), ("c", 2), ("d", 8), ("e", 3)]);
    assert!(matches!(store.insert_tenant(&sized("f", 22), 9).await, Err(StoreError::NetworksExhausted(9))));
    assert!(matches!(store.insert_tenant(&sized("f", 24), 9).await, Err(StoreError::NetworksExhausted(9))));
    // Freeing the /22 makes room for one again.
    assert!(store.delete_tenant(&name("b")).await.unwrap());
    assert_eq!(store.insert_tenant(&sized("f", 22), 9).await.unwrap().net_id, 4);
}

/// Concurrent inserts of mixed sizes never get overlapping blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_tenant_inserts_of_mixed_sizes_never_overlap() {
    let (_dir, store) = store().await;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..30u8)
        .map(|i| {
            let store = store.clone();
            let t = Tenant { net_prefix: 22 + i % 3, ..tenant(&format!("t{i}")) };
            tokio::spawn(async move { store.insert_tenant(&t, 64).await })
        })
        .collect();
    let mut blocks: Vec<(u32, u32)> = vec![];
    for task in tasks {
        match task.await.unwrap() {
            Ok(t) => blocks.push((t.net_id, t.net_id + (1 << (24 - t.net_prefix)) - 1)),
            Err(StoreError::NetworksExhausted(64)) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    blocks.sort_unstable();
    assert!(blocks.len() >= 20, "{blocks:?}");
    assert!(blocks.windows(2).all(|w| w[0].1 < w[1].0), "overlap: {blocks:?}");
    assert!(blocks.iter().all(|&(a, b)| a >= 1 && b <= 64));
}

#[tokio::test]
async fn deleting_a_tenant_deletes_its_tokens_only() {
    let (_dir, store) = store().await;
    for n in ["acme", "beta"] {
        store.insert_tenant(&tenant(n), 10).await.unwrap();
    }
    for t in [token("t1", Some("acme"), 1), token("t2", Some("beta"), 2), token("t3", None, 3)] {
        store.insert_token(&t).await.unwrap();
    }
    assert!(store.delete_tenant(&name("acme")).await.unwrap());
    let left: Vec<String> = store.list_tokens().await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(left, ["t2", "t3"]);
}

/// Many tasks allocating at once get distinct, dense net ids, and exactly the surplus fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_tenant_inserts_never_share_a_net_id() {
    let (_dir, store) = store().await;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.insert_tenant(&tenant(&format!("t{i}")), 40).await })
        })
        .collect();
    let (mut ids, mut exhausted) = (Vec::new(), 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(t) => ids.push(t.net_id),
            Err(StoreError::NetworksExhausted(40)) => exhausted += 1,
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=40).collect::<Vec<_>>());
    assert_eq!(exhausted, 10);
}

// ---- hosts ----

#[tokio::test]
async fn hosts_insert_get_update_delete() {
    let (_dir, store) = store().await;
    let (a, b) = (host("node-a"), host("node-b"));
    store.insert_host(&b).await.unwrap();
    store.insert_host(&a).await.unwrap();

    let dup = HostRecord { id: HostId::new(), ..a.clone() };
    assert!(matches!(store.insert_host(&dup).await, Err(StoreError::AlreadyExists(w)) if w == "host 'node-a'"));

    assert_eq!(store.get_host(&name("node-a")).await.unwrap().as_ref(), Some(&a));
    assert_eq!(store.get_host_by_id(b.id).await.unwrap().as_ref(), Some(&b));
    assert_eq!(store.get_host(&name("node-c")).await.unwrap(), None);
    assert_eq!(store.list_hosts().await.unwrap(), [a.clone(), b.clone()]);

    let updated = HostRecord {
        state: HostState::Ready,
        endpoint: Some("10.0.0.1:7443".into()),
        agent_version: Some("0.1.0".into()),
        last_heartbeat: Some(at(60)),
        join_token_hash: None,
        cert_fingerprint: Some("fp-a".into()),
        desired_generation: 7,
        ..a.clone()
    };
    store.update_host(&updated).await.unwrap();
    assert_eq!(store.get_host_by_id(a.id).await.unwrap(), Some(updated.clone()));
    assert_eq!(store.get_host_by_fingerprint("fp-a").await.unwrap(), Some(updated));
    assert_eq!(store.get_host_by_fingerprint("fp-x").await.unwrap(), None);

    // A certificate identifies one host.
    let clash = HostRecord { cert_fingerprint: Some("fp-a".into()), ..b.clone() };
    assert!(matches!(store.update_host(&clash).await, Err(StoreError::AlreadyExists(_))));

    let gone = host("node-z");
    assert!(matches!(store.update_host(&gone).await, Err(StoreError::NotFound(w)) if w == "host 'node-z'"));

    assert!(store.delete_host(a.id).await.unwrap());
    assert!(!store.delete_host(a.id).await.unwrap());
    assert_eq!(store.list_hosts().await.unwrap(), [b]);
}

#[tokio::test]
async fn join_tokens_are_single_use() {
    let (_dir, store) = store().await;
    let h = host("node-a");
    store.insert_host(&h).await.unwrap();

    assert_eq!(store.consume_join_token("wrong", "fp").await.unwrap(), None);
    let joined = store.consume_join_token("join-node-a", "fp").await.unwrap().unwrap();
    assert_eq!(joined, HostRecord { join_token_hash: None, cert_fingerprint: Some("fp".into()), ..h });
    assert_eq!(store.consume_join_token("join-node-a", "fp2").await.unwrap(), None);
    assert_eq!(store.get_host_by_fingerprint("fp").await.unwrap(), Some(joined));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_join_token_raced_by_many_agents_admits_one() {
    let (_dir, store) = store().await;
    store.insert_host(&host("node-a")).await.unwrap();
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.consume_join_token("join-node-a", &format!("fp{i}")).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap().is_some());
    }
    assert_eq!(winners, 1);
}

// ---- instances ----

#[tokio::test]
async fn instances_insert_get_update_delete() {
    let (_dir, store) = store().await;
    let web = instance("acme", "web", Some("node-a"));
    store.insert_instance(&web).await.unwrap();

    let dup = Instance { id: InstanceId::new(), ..web.clone() };
    assert!(matches!(store.insert_instance(&dup).await, Err(StoreError::AlreadyExists(w)) if w == "instance 'acme/web'"));

    assert_eq!(store.get_instance(&name("acme"), &name("web")).await.unwrap().as_ref(), Some(&web));
    assert_eq!(store.get_instance_by_id(web.id).await.unwrap().as_ref(), Some(&web));
    assert_eq!(store.get_instance(&name("beta"), &name("web")).await.unwrap(), None);

    let running = Instance {
        state: InstanceState::Running,
        desired: DesiredState::Running,
        observed: ObservedState::Running,
        generation: 2,
        error: Some("a warning".into()),
        host: None,
        updated_at: at(90),
        ..web.clone()
    };
    store.update_instance(&running).await.unwrap();
    assert_eq!(store.get_instance_by_id(web.id).await.unwrap(), Some(running.clone()));

    assert!(store.delete_instance(web.id).await.unwrap());
    assert!(!store.delete_instance(web.id).await.unwrap());
    assert!(matches!(store.update_instance(&running).await, Err(StoreError::NotFound(w)) if w == "instance 'acme/web'"));
}

#[tokio::test]
async fn instances_list_by_tenant_and_host() {
    let (_dir, store) = store().await;
    // Inserted out of order: listing sorts by tenant, then name.
    for (t, n, h) in [("beta", "db", Some("node-a")), ("acme", "web", Some("node-b")), ("acme", "api", Some("node-a")), ("acme", "new", None)] {
        store.insert_instance(&instance(t, n, h)).await.unwrap();
    }
    let cases: [(Option<&str>, Option<&str>, &[&str]); 6] = [
        (None, None, &["acme/api", "acme/new", "acme/web", "beta/db"]),
        (Some("acme"), None, &["acme/api", "acme/new", "acme/web"]),
        (None, Some("node-a"), &["acme/api", "beta/db"]),
        (Some("beta"), Some("node-a"), &["beta/db"]),
        (Some("beta"), Some("node-b"), &[]),
        (Some("gamma"), None, &[]),
    ];
    for (tenant, host, want) in cases {
        let filter = InstanceFilter { tenant: tenant.map(name), host: host.map(name), pool: None };
        let got: Vec<String> = store
            .list_instances(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|i| format!("{}/{}", i.tenant, i.name))
            .collect();
        assert_eq!(got, want, "filter {filter:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn generations_are_unique_increasing_and_persist() {
    let (dir, store) = store().await;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.next_generation().await.unwrap() })
        })
        .collect();
    let mut got = Vec::new();
    for task in tasks {
        got.push(task.await.unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, (1..=50).collect::<Vec<i64>>());
    assert_eq!(store.next_generation().await.unwrap(), 51);
    store.close().await;
    drop(store);

    let store = reopen(&dir).await;
    assert_eq!(store.next_generation().await.unwrap(), 52);
}

// ---- operations ----

#[tokio::test]
async fn operations_run_and_finish() {
    let (_dir, store) = store().await;
    let (x, y) = (InstanceId::new(), InstanceId::new());
    // Inserted out of creation order: listing sorts by created_at.
    let late_x = operation(Some(x), 30);
    let early_y = operation(Some(y), 10);
    let early_x = operation(Some(x), 20);
    let admin = Operation { tenant: None, instance_id: None, target_state: None, ..operation(None, 40) };
    for op in [&late_x, &early_y, &early_x, &admin] {
        store.insert_operation(op).await.unwrap();
    }
    assert!(matches!(store.insert_operation(&admin).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(store.get_operation(admin.id).await.unwrap().as_ref(), Some(&admin));

    let ids = |ops: Vec<Operation>| ops.into_iter().map(|o| o.id).collect::<Vec<_>>();
    assert_eq!(ids(store.running_operations(None).await.unwrap()), [early_y.id, early_x.id, late_x.id, admin.id]);
    assert_eq!(ids(store.running_operations(Some(x)).await.unwrap()), [early_x.id, late_x.id]);

    let before = OffsetDateTime::now_utc();
    store.finish_operation(early_x.id, OperationStatus::Failed, Some("no capacity")).await.unwrap();
    store.finish_operation(admin.id, OperationStatus::Succeeded, None).await.unwrap();
    let failed = store.get_operation(early_x.id).await.unwrap().unwrap();
    assert_eq!((failed.status, failed.error.as_deref()), (OperationStatus::Failed, Some("no capacity")));
    assert!(failed.updated_at >= before && failed.created_at == early_x.created_at);
    assert_eq!(ids(store.running_operations(None).await.unwrap()), [early_y.id, late_x.id]);
    assert_eq!(ids(store.running_operations(Some(x)).await.unwrap()), [late_x.id]);

    assert!(matches!(
        store.finish_operation(OperationId::new(), OperationStatus::Cancelled, None).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.get_operation(OperationId::new()).await.unwrap(), None);
}

// ---- events ----

#[tokio::test]
async fn events_newest_limit_oldest_first() {
    let (_dir, store) = store().await;
    let before = OffsetDateTime::now_utc();
    // Objects e0..e5 with these tenants.
    let tenants = [Some("acme"), None, Some("beta"), Some("acme"), Some("acme"), None];
    let mut inserted = Vec::new();
    for (i, t) in tenants.iter().enumerate() {
        let e = store.insert_event(&event(*t, &format!("e{i}"))).await.unwrap();
        assert_eq!((e.tenant.as_ref().map(Name::as_str), e.object.as_str()), (*t, format!("e{i}").as_str()));
        assert!(e.time >= before);
        inserted.push(e);
    }
    assert!(inserted.windows(2).all(|w| w[0].id < w[1].id), "ids increase");

    let cases: [(Option<&str>, u32, &[&str]); 6] = [
        (None, 100, &["e0", "e1", "e2", "e3", "e4", "e5"]),
        (None, 3, &["e3", "e4", "e5"]),
        (Some("acme"), 100, &["e0", "e3", "e4"]),
        (Some("acme"), 2, &["e3", "e4"]),
        (Some("beta"), 1, &["e2"]),
        (Some("acme"), 0, &[]),
    ];
    for (tenant, limit, want) in cases {
        let got = store.list_events(tenant.map(name).as_ref(), limit).await.unwrap();
        let objects: Vec<&str> = got.iter().map(|e| e.object.as_str()).collect();
        assert_eq!(objects, want, "tenant {tenant:?}, limit {limit}");
        // What is read back is exactly what insert_event returned.
        for e in &got {
            assert_eq!(Some(e), inserted.iter().find(|i| i.id == e.id));
        }
    }
}

// ---- tokens ----

#[tokio::test]
async fn tokens_insert_find_list_delete() {
    let (_dir, store) = store().await;
    let (admin, acme) = (token("t-admin", None, 5), token("t-acme", Some("acme"), 1));
    store.insert_token(&admin).await.unwrap();
    store.insert_token(&acme).await.unwrap();

    for dup in [TokenRecord { id: "other".into(), ..acme.clone() }, TokenRecord { hash: "new".into(), ..acme.clone() }] {
        assert!(matches!(store.insert_token(&dup).await, Err(StoreError::AlreadyExists(_))), "{dup:?}");
    }
    assert_eq!(store.find_token("hash-t-admin").await.unwrap().as_ref(), Some(&admin));
    assert_eq!(store.find_token("nope").await.unwrap(), None);
    assert_eq!(store.list_tokens().await.unwrap(), [acme.clone(), admin.clone()]);

    assert!(store.delete_token("t-acme").await.unwrap());
    assert!(!store.delete_token("t-acme").await.unwrap());
    assert_eq!(store.find_token("hash-t-acme").await.unwrap(), None);
    assert_eq!(store.list_tokens().await.unwrap(), [admin]);
}

// ---- durability and robustness ----

/// Everything written before the store goes away is there after reopening the file,
/// whether the store was closed or merely dropped.
#[tokio::test]
async fn everything_survives_reopen() {
    for close in [true, false] {
        let (dir, store) = store().await;
        let t = store.insert_tenant(&tenant("acme"), 10).await.unwrap();
        let h = HostRecord { last_heartbeat: Some(at(9)), ..host("node-a") };
        let i = instance("acme", "web", Some("node-a"));
        let o = operation(Some(i.id), 4);
        let k = token("t1", Some("acme"), 6);
        store.insert_host(&h).await.unwrap();
        store.insert_instance(&i).await.unwrap();
        store.insert_operation(&o).await.unwrap();
        store.insert_token(&k).await.unwrap();
        let e = store.insert_event(&event(Some("acme"), "instance/acme/web")).await.unwrap();
        let g = store.next_generation().await.unwrap();
        if close {
            store.close().await;
        }
        drop(store);

        let store = reopen(&dir).await;
        assert_eq!(store.list_tenants().await.unwrap(), [t], "close={close}");
        assert_eq!(store.list_hosts().await.unwrap(), [h]);
        assert_eq!(store.list_instances(&InstanceFilter::default()).await.unwrap(), [i]);
        assert_eq!(store.running_operations(None).await.unwrap(), [o]);
        assert_eq!(store.list_tokens().await.unwrap(), [k]);
        assert_eq!(store.list_events(None, 10).await.unwrap(), [e]);
        assert_eq!(store.next_generation().await.unwrap(), g + 1);
    }
}

/// A row that no longer parses is reported as corrupt, naming table and column.
#[tokio::test]
async fn unparsable_rows_are_corrupt() {
    let (dir, store) = store().await;
    store.insert_host(&host("node-a")).await.unwrap();
    store.insert_instance(&instance("acme", "web", None)).await.unwrap();

    // Damage rows behind the store's back, as a hand edit would.
    let path = dir.path().join("hub.db");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for sql in ["UPDATE hosts SET state = 'melted'", "UPDATE instances SET spec = '{\"not\": \"a spec\"}'"] {
        sqlx::Executor::execute(&mut conn, sql).await.unwrap();
    }

    match store.get_host(&name("node-a")).await {
        Err(StoreError::Corrupt { table: "hosts", detail }) => assert!(detail.contains("state"), "{detail}"),
        other => panic!("expected corrupt host, got {other:?}"),
    }
    match store.list_instances(&InstanceFilter::default()).await {
        Err(StoreError::Corrupt { table: "instances", detail }) => assert!(detail.contains("spec"), "{detail}"),
        other => panic!("expected corrupt instance, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_store_works_and_serializes_writers() {
    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.insert_tenant(&tenant(&format!("t{i}")), 100).await.unwrap().net_id })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
    assert_eq!(store.list_tenants().await.unwrap().len(), 20);
}

/// The `open` URL helper accepts both spellings.
#[tokio::test]
async fn open_accepts_url_and_path() {
    let dir = tempfile::tempdir().unwrap();
    for url in [format!("sqlite://{}", dir.path().join("a.db").display()), dir.path().join("b.db").display().to_string()] {
        let store = hangar_store::open(&url).await.unwrap();
        assert_eq!(store.next_generation().await.unwrap(), 1, "{url}");
    }
}

/// An address is never handed out twice within a tenant, whatever the hub does.
#[tokio::test]
async fn instance_addresses_are_unique_per_tenant() {
    let (_dir, store) = store().await;
    let addr = |s: &str| Some(s.parse::<std::net::Ipv4Addr>().unwrap());
    let mut a = instance("acme", "a", None);
    a.address = addr("10.240.1.2");
    store.insert_instance(&a).await.unwrap();
    assert_eq!(store.get_instance_by_id(a.id).await.unwrap().unwrap().address, addr("10.240.1.2"));
    let mut b = instance("acme", "b", None);
    b.address = addr("10.240.1.2");
    assert!(matches!(store.insert_instance(&b).await, Err(StoreError::AlreadyExists(_))));
    let mut c = instance("zeta", "c", None);
    c.address = addr("10.240.1.2");
    store.insert_instance(&c).await.unwrap();
    // Several instances without an address are fine.
    store.insert_instance(&instance("acme", "x", None)).await.unwrap();
    store.insert_instance(&instance("acme", "y", None)).await.unwrap();
}

#[tokio::test]
async fn the_isolated_flag_persists() {
    let (_dir, store) = store().await;
    store.insert_tenant(&tenant("a-iso"), 10).await.unwrap();
    store.insert_tenant(&tenant("b"), 10).await.unwrap();
    assert!(store.get_tenant(&name("a-iso")).await.unwrap().unwrap().isolated);
    assert!(!store.get_tenant(&name("b")).await.unwrap().unwrap().isolated);
}

#[tokio::test]
async fn pools_round_trip_and_filter_members() {
    let (_dir, store) = store().await;
    let pool = Pool {
        tenant: name("acme"),
        name: name("workers"),
        role: name("worker"),
        spec: instance("acme", "x", None).spec,
        counts: PoolCounts { running: 4, warm: 2, sleeping: 1 },
        last_error: None,
        created_at: at(1),
        updated_at: at(1),
    };
    store.insert_pool(&pool).await.unwrap();
    assert!(matches!(store.insert_pool(&pool).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(store.get_pool(&name("acme"), &name("workers")).await.unwrap(), Some(pool.clone()));
    let scaled = Pool { counts: PoolCounts { running: 0, warm: 0, sleeping: 3 }, last_error: Some("quota".into()), updated_at: at(2), ..pool.clone() };
    store.update_pool(&scaled).await.unwrap();
    assert_eq!(store.list_pools(Some(&name("acme"))).await.unwrap(), vec![scaled.clone()]);
    assert!(store.list_pools(Some(&name("beta"))).await.unwrap().is_empty());

    let member = Instance { pool: Some(name("workers")), held_until: Some(at(5)), ..instance("acme", "workers-1", Some("node-a")) };
    store.insert_instance(&member).await.unwrap();
    store.insert_instance(&instance("acme", "loose", Some("node-a"))).await.unwrap();
    let members = store.list_instances(&InstanceFilter::pool(&name("acme"), &name("workers"))).await.unwrap();
    assert_eq!(members, vec![member]);

    assert!(store.delete_pool(&name("acme"), &name("workers")).await.unwrap());
    assert!(!store.delete_pool(&name("acme"), &name("workers")).await.unwrap());
    assert!(matches!(store.update_pool(&scaled).await, Err(StoreError::NotFound(_))));
}
