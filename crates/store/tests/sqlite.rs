//! `SqliteStore` on real database files: the store contract (`hangar_store::contract`)
//! on a fresh file and in memory, then what only SQLite can be asked (durability across
//! reopening, corrupt rows, in-memory mode, URLs, dense generations).
//!
//! Each test opens its own file in a temporary directory; durability tests drop or
//! close the store and open the same file again.

use hangar_store::contract::fixtures::*;
use hangar_store::{HostRecord, InstanceFilter, SqliteStore, Store, StoreError};
use hangar_types::Generation;
use std::sync::Arc;
use tempfile::TempDir;

async fn store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(&dir).await;
    (dir, store)
}

async fn reopen(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("hub.db")).await.unwrap()
}

mod contract_on_a_file {
    use super::*;

    async fn fresh() -> (TempDir, Arc<dyn Store>) {
        let (dir, store) = store().await;
        (dir, Arc::new(store))
    }

    hangar_store::store_contract_tests!(fresh());
}

mod contract_in_memory {
    use super::*;

    async fn fresh() -> ((), Arc<dyn Store>) {
        ((), Arc::new(SqliteStore::open_in_memory().await.unwrap()))
    }

    hangar_store::store_contract_tests!(fresh());
}

// ---- generations ----

/// Beyond the contract: SQLite hands out generations densely from 1, and the counter
/// survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn generations_are_dense_and_persist() {
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
    assert_eq!(got, (1..=50).map(Generation::new).collect::<Vec<_>>());
    assert_eq!(store.next_generation().await.unwrap(), Generation::new(51));
    store.close().await;
    drop(store);

    let store = reopen(&dir).await;
    assert_eq!(store.next_generation().await.unwrap(), Generation::new(52));
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
        store.insert_instance(&i, None).await.unwrap();
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
        assert_eq!(store.next_generation().await.unwrap(), g.next());
    }
}

/// A row that no longer parses is reported as corrupt, naming table and column.
#[tokio::test]
async fn unparsable_rows_are_corrupt() {
    let (dir, store) = store().await;
    store.insert_host(&host("node-a")).await.unwrap();
    store.insert_instance(&instance("acme", "web", None), None).await.unwrap();

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
        assert_eq!(store.next_generation().await.unwrap(), Generation::new(1), "{url}");
    }
}


/// A store that was closed says so as Unavailable (a caller may retry elsewhere or
/// later), not as a bare backend failure.
#[tokio::test]
async fn a_closed_store_is_unavailable() {
    let (_dir, store) = store().await;
    store.close().await;
    match store.get_host(&name("node-a")).await {
        Err(StoreError::Unavailable { context: "get host", .. }) => {}
        other => panic!("expected unavailable, got {other:?}"),
    }
}

/// The database holds every tenant's commands and env: private to the hub, also a file
/// an older hub left world-readable.
#[tokio::test]
async fn the_database_and_its_wal_and_shm_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let (dir, s) = store().await;
    s.insert_tenant(&tenant("acme"), 4096).await.unwrap();
    let db = dir.path().join("hub.db");
    for f in ["hub.db", "hub.db-wal", "hub.db-shm"] {
        assert_eq!(mode(&dir.path().join(f)), 0o600, "{f}");
    }
    s.close().await;
    for f in ["hub.db", "hub.db-wal", "hub.db-shm"] {
        let p = dir.path().join(f);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let s = reopen(&dir).await;
    s.insert_tenant(&tenant("beta"), 4096).await.unwrap();
    assert_eq!(mode(&db), 0o600);
    for f in ["hub.db-wal", "hub.db-shm"] {
        assert_eq!(mode(&dir.path().join(f)), 0o600, "{f} after reopen");
    }
}
