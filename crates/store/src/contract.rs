//! The behaviour every [`Store`] implementation must have, as async functions a test
//! suite calls on a fresh, empty store (compiled with the `contract` feature).
//!
//! Each function takes the store as `Arc<dyn Store>` (concurrency checks spawn tasks on
//! it) and panics on the first deviation. [`store_contract_tests!`](crate::store_contract_tests)
//! turns the whole list into one `#[tokio::test]` per behaviour for a given factory, so
//! a new implementation (PostgreSQL next) gets the suite with one line:
//!
//! ```text
//! async fn fresh() -> (tempfile::TempDir, Arc<dyn Store>) { ... }
//! hangar_store::store_contract_tests!(fresh());
//! ```
//!
//! What stays out: durability across reopening, migrations and file formats, which only
//! the implementation's own tests can check.

use crate::{
    BackupProgressRecord, BackupSettingsRecord, BackupTargetRecord, HostRecord, HostReport, HostStateChange, InstanceFilter, InstanceVersion,
    ProxyTokenRecord, SecretRecord, Store, StoreError, TokenRecord,
};
use hangar_types::backups::{Backup, BackupFile, BackupFileKind, BackupPolicy, BackupPurge, BackupSchedule};
use fixtures::*;
use hangar_types::api::{Capacity, HostState, Image, ImageKind, Instance, Operation, OperationStatus, Pool, PoolCounts, Tenant};
use hangar_types::{DesiredState, Generation, HostId, InstanceId, InstanceState, Name, ObservedState, OperationId};
use std::collections::BTreeSet;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// Defines one `#[tokio::test]` per behaviour of [`contract`](crate::contract), each on a
/// store made by `$factory`: an async expression giving `(guard, Arc<dyn Store>)`, the
/// guard (a temporary directory, a database handle) living as long as the test. The
/// calling crate needs tokio with its test macro.
#[macro_export]
macro_rules! store_contract_tests {
    ($factory:expr) => {
        $crate::store_contract_tests!(@each $factory;
            tenant_net_ids_follow_the_smallest_free_rule,
            tenant_subnets_of_several_sizes_take_aligned_blocks,
            concurrent_tenant_inserts_of_mixed_sizes_never_overlap,
            concurrent_tenant_inserts_never_share_a_net_id,
            deleting_a_tenant_deletes_its_tokens_only,
            the_isolated_flag_persists,
            hosts_insert_get_find_delete,
            join_tokens_are_single_use,
            a_join_token_raced_by_many_agents_admits_one,
            join_tokens_are_renewed_only_before_joining,
            host_generation_bumps_are_distinct_and_only_grow,
            host_reports_write_only_what_the_host_says,
            host_state_changes_apply_only_when_allowed,
            concurrent_host_state_changes_admit_one,
            host_providers_are_recorded,
            instances_insert_get_update_delete,
            instances_list_by_tenant_and_host,
            instance_addresses_are_unique_per_tenant,
            instance_uid_ranges_are_unique_kept_and_freed_on_delete,
            instance_updates_refuse_a_stale_version,
            concurrent_instance_updates_admit_one,
            instance_writes_bump_their_host_atomically,
            marking_a_hosts_instances_unknown_touches_only_observed,
            generations_are_unique_and_increasing,
            pools_round_trip_and_filter_members,
            pool_counts_change_only_from_the_expected_counts,
            pool_last_errors_are_recorded_alone,
            operations_run_and_finish,
            events_newest_limit_oldest_first,
            tokens_insert_find_list_delete,
            images_insert_get_list_delete,
            snapshots_insert_list_size_tombstone_remove,
            snapshots_and_schedules_go_with_their_instance,
            secrets_put_replace_list_delete,
            proxy_tokens_insert_find_list_delete,
            deleting_a_tenant_deletes_its_secrets_and_proxy_tokens,
            deleting_a_proxy_token_moves_the_token_epoch,
            ssh_keys_insert_list_delete_and_go_with_their_tenant,
            backup_targets_insert_get_list_delete,
            backup_settings_default_set_and_one_password,
            backup_runs_are_marked_once,
            backups_and_their_index_are_recorded_whole,
            backup_index_of_100k_files_lists_and_finds,
            backup_progress_and_cancel_requests,
            backup_purges_schedule_list_take,
            host_certificates_renew_through_a_staged_fingerprint,
            a_cert_rotation_request_ends_with_the_promoted_renewal,
            token_roles_round_trip,
            a_tenant_destroy_is_marked_once_and_its_progress_kept,
            join_token_expiries_round_trip,
            removing_tokens_moves_the_token_epoch_and_uses_are_recorded,
            a_new_tenant_with_an_old_name_sees_no_old_event_or_operation,
            transfers_progress_only_up_and_finish_once,
            moves_one_open_per_instance_and_the_switch_is_one_write,
            evacuations_record_items_and_ended_items_stay,
        );
    };
    (@each $factory:expr; $($behaviour:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $behaviour() {
                let (_guard, store) = $factory.await;
                $crate::contract::$behaviour(store).await;
            }
        )*
    };
}

/// Records the behaviours use, public so an implementation's own tests (durability,
/// corrupt rows) build the same ones.
pub mod fixtures {
    use crate::{HostRecord, NewEvent, TokenRecord};
    use hangar_types::api::{Capacity, HostState, ImageRef, Instance, InstanceSpec, Operation, OperationStatus, Quotas, Tenant};
    use hangar_types::{DesiredState, Generation, HostId, InstanceId, InstanceState, Name, ObservedState, OperationId, TenantId};
    use std::collections::BTreeMap;
    use time::macros::datetime;
    use time::{Duration, OffsetDateTime};

    pub fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    /// A time with nanoseconds and a non-UTC offset, `n` seconds after a fixed instant:
    /// stored times must round-trip exactly.
    pub fn at(n: i64) -> OffsetDateTime {
        datetime!(2025-03-04 05:06:07.123456789 +02:00) + Duration::seconds(n)
    }

    /// A tenant whose name ending in `-iso` makes it isolated.
    pub fn tenant(n: &str) -> Tenant {
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

    /// A joining host whose join token hash is `join-<n>`.
    pub fn host(n: &str) -> HostRecord {
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
            desired_generation: Generation::ZERO,
            created_at: at(1),
            provider: Some("local".into()),
        }
    }

    pub fn instance(tenant: &str, n: &str, host: Option<&str>) -> Instance {
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
                secrets: vec![],
            },
            host: host.map(name),
            state: InstanceState::Created,
            desired: DesiredState::Stopped,
            observed: ObservedState::Unknown,
            generation: Generation::new(1),
            error: None,
            created_at: at(2),
            updated_at: at(3),
            address: None,
            pool: None,
            held_until: None,
            ids: None,
        }
    }

    /// A running operation on `acme/web`, created `created` seconds after [`at`]'s origin.
    pub fn operation(instance_id: Option<InstanceId>, created: i64) -> Operation {
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
            progress: None,
        }
    }

    /// A token whose hash is `hash-<id>`.
    pub fn token(id: &str, tenant: Option<&str>, created: i64) -> TokenRecord {
        TokenRecord {
            id: id.parse().expect("a valid token id"),
            hash: format!("hash-{id}"),
            tenant: tenant.map(name),
            role: if tenant.is_some() { hangar_types::api::TokenRole::Tenant } else { hangar_types::api::TokenRole::Admin },
            description: Some(format!("token {id}")),
            created_at: at(created),
            expires_at: None,
            last_used_at: None,
        }
    }

    pub fn event(tenant: Option<&str>, object: &str) -> NewEvent {
        NewEvent {
            actor: "admin".into(),
            tenant: tenant.map(name),
            object: object.into(),
            action: "instance.create".into(),
            result: "ok".into(),
            message: None,
        }
    }
}

/// Runs `n` copies of `task` at once, each given its index; their results in index order.
async fn concurrently<T, F, Fut>(store: &Arc<dyn Store>, n: usize, task: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Arc<dyn Store>, usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(task(store.clone(), i))).collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.expect("a concurrent task panicked"));
    }
    out
}

// ---- tenants ----

/// A script of inserts and deletes against a range of three networks, with the outcome
/// each step must have: smallest free id, reuse after delete, exhaustion, duplicates.
pub async fn tenant_net_ids_follow_the_smallest_free_rule(store: Arc<dyn Store>) {
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
pub async fn tenant_subnets_of_several_sizes_take_aligned_blocks(store: Arc<dyn Store>) {
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
pub async fn concurrent_tenant_inserts_of_mixed_sizes_never_overlap(store: Arc<dyn Store>) {
    let results = concurrently(&store, 30, |store, i| async move {
        let t = Tenant { net_prefix: 22 + (i % 3) as u8, ..tenant(&format!("t{i}")) };
        store.insert_tenant(&t, 64).await
    })
    .await;
    let mut blocks: Vec<(u32, u32)> = vec![];
    for r in results {
        match r {
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

/// Many tasks allocating at once get distinct, dense net ids, and exactly the surplus fail.
pub async fn concurrent_tenant_inserts_never_share_a_net_id(store: Arc<dyn Store>) {
    let results =
        concurrently(&store, 50, |store, i| async move { store.insert_tenant(&tenant(&format!("t{i}")), 40).await }).await;
    let (mut ids, mut exhausted) = (Vec::new(), 0);
    for r in results {
        match r {
            Ok(t) => ids.push(t.net_id),
            Err(StoreError::NetworksExhausted(40)) => exhausted += 1,
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=40).collect::<Vec<_>>());
    assert_eq!(exhausted, 10);
}

pub async fn deleting_a_tenant_deletes_its_tokens_only(store: Arc<dyn Store>) {
    for n in ["acme", "beta"] {
        store.insert_tenant(&tenant(n), 10).await.unwrap();
    }
    for t in [token("t1", Some("acme"), 1), token("t2", Some("beta"), 2), token("t3", None, 3)] {
        store.insert_token(&t).await.unwrap();
    }
    assert!(store.delete_tenant(&name("acme")).await.unwrap());
    let left: Vec<String> = store.list_tokens().await.unwrap().into_iter().map(|t| t.id.into()).collect();
    assert_eq!(left, ["t2", "t3"]);
}

pub async fn the_isolated_flag_persists(store: Arc<dyn Store>) {
    store.insert_tenant(&tenant("a-iso"), 10).await.unwrap();
    store.insert_tenant(&tenant("b"), 10).await.unwrap();
    assert!(store.get_tenant(&name("a-iso")).await.unwrap().unwrap().isolated);
    assert!(!store.get_tenant(&name("b")).await.unwrap().unwrap().isolated);
}

// ---- hosts ----

pub async fn hosts_insert_get_find_delete(store: Arc<dyn Store>) {
    let (a, b) = (host("node-a"), host("node-b"));
    store.insert_host(&b).await.unwrap();
    store.insert_host(&a).await.unwrap();

    let dup = HostRecord { id: HostId::new(), ..a.clone() };
    assert!(matches!(store.insert_host(&dup).await, Err(StoreError::AlreadyExists(w)) if w == "host 'node-a'"));

    assert_eq!(store.get_host(&name("node-a")).await.unwrap().as_ref(), Some(&a));
    assert_eq!(store.get_host_by_id(b.id).await.unwrap().as_ref(), Some(&b));
    assert_eq!(store.get_host(&name("node-c")).await.unwrap(), None);
    assert_eq!(store.get_host_by_id(HostId::new()).await.unwrap(), None);
    assert_eq!(store.list_hosts().await.unwrap(), [a.clone(), b.clone()]);

    // A host is found by the certificate it joined with, and a certificate names one host.
    let joined = store.consume_join_token("join-node-a", "fp-a").await.unwrap().unwrap();
    assert_eq!(store.get_host_by_fingerprint("fp-a").await.unwrap(), Some(joined));
    assert_eq!(store.get_host_by_fingerprint("fp-x").await.unwrap(), None);
    let clash = store.consume_join_token("join-node-b", "fp-a").await;
    assert!(matches!(&clash, Err(StoreError::AlreadyExists(_))), "{clash:?}");
    assert_eq!(store.get_host_by_id(b.id).await.unwrap().as_ref(), Some(&b));

    assert!(store.delete_host(a.id).await.unwrap());
    assert!(!store.delete_host(a.id).await.unwrap());
    assert_eq!(store.list_hosts().await.unwrap(), [b]);
}

pub async fn join_tokens_are_single_use(store: Arc<dyn Store>) {
    let h = host("node-a");
    store.insert_host(&h).await.unwrap();

    assert_eq!(store.consume_join_token("wrong", "fp").await.unwrap(), None);
    let joined = store.consume_join_token("join-node-a", "fp").await.unwrap().unwrap();
    assert_eq!(joined, HostRecord { join_token_hash: None, cert_fingerprint: Some("fp".into()), ..h });
    assert_eq!(store.consume_join_token("join-node-a", "fp2").await.unwrap(), None);
    assert_eq!(store.get_host_by_fingerprint("fp").await.unwrap(), Some(joined));
}

pub async fn a_join_token_raced_by_many_agents_admits_one(store: Arc<dyn Store>) {
    store.insert_host(&host("node-a")).await.unwrap();
    let results = concurrently(&store, 20, |store, i| async move {
        store.consume_join_token("join-node-a", &format!("fp{i}")).await.unwrap()
    })
    .await;
    assert_eq!(results.iter().filter(|r| r.is_some()).count(), 1);
}

pub async fn join_tokens_are_renewed_only_before_joining(store: Arc<dyn Store>) {
    let (a, b, c) = (host("node-a"), host("node-b"), host("node-c"));
    for h in [&a, &b, &c] {
        store.insert_host(h).await.unwrap();
    }

    assert!(store.renew_join_token(a.id, "fresh-a").await.unwrap());
    let renewed = store.get_host_by_id(a.id).await.unwrap().unwrap();
    assert_eq!(renewed, HostRecord { join_token_hash: Some("fresh-a".into()), ..a.clone() });
    // The old token is dead, the new one joins.
    assert_eq!(store.consume_join_token("join-node-a", "fp-a").await.unwrap(), None);
    assert!(store.consume_join_token("fresh-a", "fp-a").await.unwrap().is_some());
    // A joined host keeps no join token.
    assert!(!store.renew_join_token(a.id, "again").await.unwrap());
    assert_eq!(store.get_host_by_id(a.id).await.unwrap().unwrap().join_token_hash, None);
    // A token hash names one host.
    let taken = store.renew_join_token(c.id, "join-node-b").await;
    assert!(matches!(&taken, Err(StoreError::AlreadyExists(_))), "{taken:?}");
    assert_eq!(store.get_host_by_id(c.id).await.unwrap(), Some(c));
    assert!(matches!(store.renew_join_token(HostId::new(), "x").await, Err(StoreError::NotFound(_))));
}

/// Desired generations come from the shared counter, so they never repeat across
/// concurrent bumps and never go backwards.
pub async fn host_generation_bumps_are_distinct_and_only_grow(store: Arc<dyn Store>) {
    let h = host("node-a");
    store.insert_host(&h).await.unwrap();
    let before = store.next_generation().await.unwrap();

    let bumps = concurrently(&store, 20, |store, _| async move {
        store.bump_host_generation(&name("node-a")).await.unwrap().expect("the host exists")
    })
    .await;
    assert!(bumps.iter().all(|&(id, _)| id == h.id), "{bumps:?}");
    let generations: BTreeSet<Generation> = bumps.iter().map(|&(_, g)| g).collect();
    assert_eq!(generations.len(), 20, "two bumps got the same generation: {bumps:?}");
    assert!(generations.iter().all(|&g| g > before), "{generations:?} after {before}");
    // The last bump to commit holds the largest value: the host's generation only grew.
    let stored = store.get_host_by_id(h.id).await.unwrap().unwrap().desired_generation;
    assert_eq!(Some(&stored), generations.last());

    // Instance generations and host generations come from one counter.
    let next = store.next_generation().await.unwrap();
    assert!(next > stored);
    let (_, after) = store.bump_host_generation(&name("node-a")).await.unwrap().unwrap();
    assert!(after > next);
    assert_eq!(store.bump_host_generation(&name("node-x")).await.unwrap(), None);
}

pub async fn host_reports_write_only_what_the_host_says(store: Arc<dyn Store>) {
    let h = HostRecord { state: HostState::Stale, desired_generation: Generation::new(9), ..host("node-a") };
    store.insert_host(&h).await.unwrap();
    let report = HostReport {
        at: at(100),
        capacity: Capacity { vcpus: 4, mem_mib: 2048, disk_mib: 500 },
        endpoint: "10.0.0.2:7443".into(),
        drivers: vec!["runtime=crun".into()],
        agent_version: "0.2.0".into(),
    };
    let want = HostRecord {
        last_heartbeat: Some(report.at),
        capacity: report.capacity,
        endpoint: Some(report.endpoint.clone()),
        drivers: report.drivers.clone(),
        agent_version: Some(report.agent_version.clone()),
        ..h.clone()
    };
    assert_eq!(store.record_host_report(h.id, &report).await.unwrap(), want);
    assert_eq!(store.get_host_by_id(h.id).await.unwrap(), Some(want));

    // A bump between reading and reporting is kept: a report never writes a generation.
    let (_, generation) = store.bump_host_generation(&h.name).await.unwrap().unwrap();
    let later = HostReport { at: at(110), ..report.clone() };
    let stored = store.record_host_report(h.id, &later).await.unwrap();
    assert_eq!((stored.desired_generation, stored.state, stored.last_heartbeat), (generation, HostState::Stale, Some(at(110))));

    assert!(matches!(store.record_host_report(HostId::new(), &report).await, Err(StoreError::NotFound(_))));
}

pub async fn host_state_changes_apply_only_when_allowed(store: Arc<dyn Store>) {
    let h = HostRecord { state: HostState::Ready, last_heartbeat: Some(at(10)), ..host("node-a") };
    let quiet = host("node-q"); // never heard from
    store.insert_host(&h).await.unwrap();
    store.insert_host(&quiet).await.unwrap();
    let state = |id| {
        let store = store.clone();
        async move { store.get_host_by_id(id).await.unwrap().unwrap().state }
    };
    let ready_or_draining = [HostState::Ready, HostState::Draining];

    // Cases in order, each on the state the previous left: (change, moved from, state after).
    let cases = [
        (HostStateChange::to(HostState::Draining).from(&ready_or_draining), Some(HostState::Ready), HostState::Draining),
        (HostStateChange::to(HostState::Ready).from(&[HostState::Joining]), None, HostState::Draining),
        // Heard at 10: not silent since 10, silent since 11.
        (HostStateChange::to(HostState::Stale).from(&ready_or_draining).if_silent_since(at(10)), None, HostState::Draining),
        (HostStateChange::to(HostState::Stale).from(&ready_or_draining).if_silent_since(at(11)), Some(HostState::Draining), HostState::Stale),
        (HostStateChange::to(HostState::Stopped), Some(HostState::Stale), HostState::Stopped),
        (HostStateChange::to(HostState::Offline), Some(HostState::Stopped), HostState::Offline),
    ];
    for (i, (change, moved_from, after)) in cases.into_iter().enumerate() {
        assert_eq!(store.change_host_state(h.id, &change).await.unwrap(), moved_from, "case {i}: {change:?}");
        assert_eq!(state(h.id).await, after, "case {i}");
    }
    // Nothing but the state changed.
    let stored = store.get_host_by_id(h.id).await.unwrap().unwrap();
    assert_eq!(stored, HostRecord { state: HostState::Offline, ..h });

    // A host never heard from is never silent.
    let silent = HostStateChange::to(HostState::Stale).if_silent_since(at(1000));
    assert_eq!(store.change_host_state(quiet.id, &silent).await.unwrap(), None);
    assert_eq!(state(quiet.id).await, HostState::Joining);

    assert!(matches!(store.change_host_state(HostId::new(), &HostStateChange::to(HostState::Ready)).await, Err(StoreError::NotFound(_))));
}

/// Two deciders racing on the same condition: exactly one moves the host.
pub async fn concurrent_host_state_changes_admit_one(store: Arc<dyn Store>) {
    let h = HostRecord { state: HostState::Stale, ..host("node-a") };
    store.insert_host(&h).await.unwrap();
    let id = h.id;
    let moved = concurrently(&store, 10, move |store, i| async move {
        let to = if i % 2 == 0 { HostState::Offline } else { HostState::Missing };
        store.change_host_state(id, &HostStateChange::to(to).from(&[HostState::Stale])).await.unwrap()
    })
    .await;
    assert_eq!(moved.iter().filter(|m| m.is_some()).count(), 1, "{moved:?}");
}

pub async fn host_providers_are_recorded(store: Arc<dyn Store>) {
    let h = HostRecord { provider: None, ..host("node-a") };
    store.insert_host(&h).await.unwrap();
    store.set_host_provider(h.id, Some("local")).await.unwrap();
    assert_eq!(store.get_host_by_id(h.id).await.unwrap(), Some(HostRecord { provider: Some("local".into()), ..h.clone() }));
    store.set_host_provider(h.id, None).await.unwrap();
    assert_eq!(store.get_host_by_id(h.id).await.unwrap(), Some(h));
    assert!(matches!(store.set_host_provider(HostId::new(), None).await, Err(StoreError::NotFound(_))));
}

// ---- instances ----

pub async fn instances_insert_get_update_delete(store: Arc<dyn Store>) {
    let web = instance("acme", "web", Some("node-a"));
    store.insert_instance(&web, None).await.unwrap();

    let dup = Instance { id: InstanceId::new(), ..web.clone() };
    assert!(matches!(store.insert_instance(&dup, None).await, Err(StoreError::AlreadyExists(w)) if w == "instance 'acme/web'"));

    assert_eq!(store.get_instance(&name("acme"), &name("web")).await.unwrap().as_ref(), Some(&web));
    assert_eq!(store.get_instance_by_id(web.id).await.unwrap().as_ref(), Some(&web));
    assert_eq!(store.get_instance(&name("beta"), &name("web")).await.unwrap(), None);

    let running = Instance {
        state: InstanceState::Running,
        desired: DesiredState::Running,
        observed: ObservedState::Running,
        generation: Generation::new(2),
        error: Some("a warning".into()),
        host: None,
        updated_at: at(90),
        ..web.clone()
    };
    assert_eq!(store.update_instance_if(&running, InstanceVersion::of(&web), None).await.unwrap(), None);
    assert_eq!(store.get_instance_by_id(web.id).await.unwrap(), Some(running.clone()));

    assert!(store.delete_instance(web.id).await.unwrap());
    assert!(!store.delete_instance(web.id).await.unwrap());
    let gone = store.update_instance_if(&running, InstanceVersion::of(&running), None).await;
    assert!(matches!(&gone, Err(StoreError::NotFound(w)) if w == "instance 'acme/web'"), "{gone:?}");
}

pub async fn instances_list_by_tenant_and_host(store: Arc<dyn Store>) {
    // Inserted out of order: listing sorts by tenant, then name.
    for (t, n, h) in [("beta", "db", Some("node-a")), ("acme", "web", Some("node-b")), ("acme", "api", Some("node-a")), ("acme", "new", None)] {
        store.insert_instance(&instance(t, n, h), None).await.unwrap();
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
        let got: Vec<String> =
            store.list_instances(&filter).await.unwrap().into_iter().map(|i| format!("{}/{}", i.tenant, i.name)).collect();
        assert_eq!(got, want, "filter {filter:?}");
    }
}

/// An address is never handed out twice within a tenant, whatever the hub does.
pub async fn instance_addresses_are_unique_per_tenant(store: Arc<dyn Store>) {
    let addr = |s: &str| Some(s.parse::<std::net::Ipv4Addr>().unwrap());
    let a = Instance { address: addr("10.240.1.2"), ..instance("acme", "a", None) };
    store.insert_instance(&a, None).await.unwrap();
    assert_eq!(store.get_instance_by_id(a.id).await.unwrap().unwrap().address, addr("10.240.1.2"));
    let b = Instance { address: addr("10.240.1.2"), ..instance("acme", "b", None) };
    assert!(matches!(store.insert_instance(&b, None).await, Err(StoreError::AlreadyExists(_))));
    let c = Instance { address: addr("10.240.1.2"), ..instance("zeta", "c", None) };
    store.insert_instance(&c, None).await.unwrap();
    // Several instances without an address are fine.
    store.insert_instance(&instance("acme", "x", None), None).await.unwrap();
    let y = instance("acme", "y", None);
    store.insert_instance(&y, None).await.unwrap();
    // Nor can an update take an address another instance of the tenant holds.
    let taken = Instance { address: addr("10.240.1.2"), ..y.clone() };
    assert!(matches!(store.update_instance_if(&taken, InstanceVersion::of(&y), None).await, Err(StoreError::AlreadyExists(_))));
}

/// A uid range is held by one live instance at a time, across tenants; a collision is
/// a Conflict (the hub picks again), updates never change it, and a deleted instance's
/// range is free again.
pub async fn instance_uid_ranges_are_unique_kept_and_freed_on_delete(store: Arc<dyn Store>) {
    use hangar_types::idmap::IdRange;
    let r = Some(IdRange::at(1 << 20));
    let a = Instance { ids: r, ..instance("acme", "a", None) };
    store.insert_instance(&a, None).await.unwrap();
    assert_eq!(store.get_instance_by_id(a.id).await.unwrap().unwrap().ids, r);
    let b = Instance { ids: r, ..instance("zeta", "b", None) };
    assert!(matches!(store.insert_instance(&b, None).await, Err(StoreError::Conflict(_))), "another tenant cannot share it");
    assert!(store.get_instance(&name("zeta"), &name("b")).await.unwrap().is_none(), "nothing half-made");
    // Instances without a range (none yet) do not collide.
    store.insert_instance(&instance("acme", "x", None), None).await.unwrap();
    store.insert_instance(&instance("acme", "y", None), None).await.unwrap();
    // An update writes everything else but keeps the range.
    let moved = Instance { ids: Some(IdRange::at(2 << 20)), state: InstanceState::Stopped, generation: a.generation.next(), ..a.clone() };
    store.update_instance_if(&moved, InstanceVersion::of(&a), None).await.unwrap();
    let read = store.get_instance_by_id(a.id).await.unwrap().unwrap();
    assert_eq!((read.state, read.ids), (InstanceState::Stopped, r));
    // Deleted: the range is free for the next instance.
    let deleted = Instance { state: InstanceState::Deleted, generation: read.generation.next(), ..read.clone() };
    store.update_instance_if(&deleted, InstanceVersion::of(&read), None).await.unwrap();
    store.insert_instance(&b, None).await.unwrap();
    assert_eq!(store.get_instance_by_id(b.id).await.unwrap().unwrap().ids, r);
}

/// A compare-and-swap on (generation, state): what was decided from a stale read is
/// refused with Conflict and leaves the row alone.
pub async fn instance_updates_refuse_a_stale_version(store: Arc<dyn Store>) {
    let read = instance("acme", "web", Some("node-a"));
    store.insert_instance(&read, None).await.unwrap();
    let version = InstanceVersion::of(&read);

    let started = Instance {
        state: InstanceState::Starting,
        desired: DesiredState::Running,
        generation: Generation::new(store.next_generation().await.unwrap().get() + 100),
        held_until: Some(at(50)),
        updated_at: at(40),
        ..read.clone()
    };
    store.update_instance_if(&started, version, None).await.unwrap();
    assert_eq!(store.get_instance_by_id(read.id).await.unwrap().as_ref(), Some(&started));

    // Decided from the first read: both the generation and the state moved since.
    let stopped = Instance { state: InstanceState::Stopped, generation: started.generation.next(), ..read.clone() };
    let refused = store.update_instance_if(&stopped, version, None).await;
    assert!(matches!(&refused, Err(StoreError::Conflict(w)) if w == "instance 'acme/web'"), "{refused:?}");
    // Same generation, but the state moved (an observation landed): refused too.
    let same_generation = InstanceVersion { state: InstanceState::Created, ..InstanceVersion::of(&started) };
    assert!(matches!(store.update_instance_if(&stopped, same_generation, None).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.get_instance_by_id(read.id).await.unwrap().as_ref(), Some(&started));

    // Identity and creation time are never rewritten.
    let renamed = Instance { tenant: name("beta"), name: name("other"), created_at: at(99), error: Some("e".into()), ..started.clone() };
    store.update_instance_if(&renamed, InstanceVersion::of(&started), None).await.unwrap();
    assert_eq!(store.get_instance_by_id(read.id).await.unwrap(), Some(Instance { error: Some("e".into()), ..started.clone() }));

    assert!(store.delete_instance(read.id).await.unwrap());
    assert!(matches!(store.update_instance_if(&started, InstanceVersion::of(&started), None).await, Err(StoreError::NotFound(_))));
}

/// Many deciders that read the same version: exactly one write lands.
pub async fn concurrent_instance_updates_admit_one(store: Arc<dyn Store>) {
    let read = instance("acme", "web", Some("node-a"));
    store.insert_instance(&read, None).await.unwrap();
    let results = concurrently(&store, 10, |store, i| {
        let read = read.clone();
        async move {
            let next = Instance { generation: Generation::new(read.generation.get() + 1 + i as i64), state: InstanceState::Starting, ..read.clone() };
            store.update_instance_if(&next, InstanceVersion::of(&read), None).await.map(|_| next.generation)
        }
    })
    .await;
    let won: Vec<Generation> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(_) | Err(StoreError::Conflict(_)))), "{results:?}");
    assert_eq!(store.get_instance_by_id(read.id).await.unwrap().unwrap().generation, won[0]);
}

/// An instance write that asks for it bumps its host's desired generation in the same
/// transaction: both land, or (a duplicate, a stale version, a taken address) neither.
/// So no crash between the two can leave a decision the host is never told about.
pub async fn instance_writes_bump_their_host_atomically(store: Arc<dyn Store>) {
    let h = host("node-a");
    store.insert_host(&h).await.unwrap();
    let generation = |store: Arc<dyn Store>| async move { store.get_host_by_id(h.id).await.unwrap().unwrap().desired_generation };
    let node_a = name("node-a");
    let before = store.next_generation().await.unwrap();

    let web = Instance { address: Some([10, 240, 1, 2].into()), ..instance("acme", "web", Some("node-a")) };
    let (id, first) = store.insert_instance(&web, Some(&node_a)).await.unwrap().expect("the host exists");
    assert_eq!((id, generation(store.clone()).await), (h.id, first));
    assert!(first > before, "{first} after {before}");
    // Without a bump, or with an unknown host, the instance is written and no host moves.
    let db = instance("acme", "db", Some("node-a"));
    assert_eq!(store.insert_instance(&db, None).await.unwrap(), None);
    let far = instance("acme", "far", Some("node-x"));
    assert_eq!(store.insert_instance(&far, Some(&name("node-x"))).await.unwrap(), None);
    assert!(store.get_instance_by_id(far.id).await.unwrap().is_some());
    assert_eq!(generation(store.clone()).await, first);

    // Refused writes bump nothing.
    let dup = Instance { id: InstanceId::new(), ..db.clone() };
    assert!(matches!(store.insert_instance(&dup, Some(&node_a)).await, Err(StoreError::AlreadyExists(_))));
    let stale = InstanceVersion { generation: db.generation.next(), ..InstanceVersion::of(&db) };
    let started = Instance { state: InstanceState::Starting, generation: db.generation.next().next(), ..db.clone() };
    assert!(matches!(store.update_instance_if(&started, stale, Some(&node_a)).await, Err(StoreError::Conflict(_))));
    let taken = Instance { address: web.address, ..started.clone() };
    assert!(matches!(store.update_instance_if(&taken, InstanceVersion::of(&db), Some(&node_a)).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(generation(store.clone()).await, first);
    assert_eq!(store.get_instance_by_id(db.id).await.unwrap().as_ref(), Some(&db));

    let (_, second) = store.update_instance_if(&started, InstanceVersion::of(&db), Some(&node_a)).await.unwrap().unwrap();
    assert!(second > first);
    assert_eq!(generation(store.clone()).await, second);
    assert_eq!(store.get_instance_by_id(db.id).await.unwrap(), Some(started));

    // Concurrent writes with bumps: distinct generations, and the host keeps the largest.
    let bumps = concurrently(&store, 10, |store, i| async move {
        let member = instance("acme", &format!("m{i}"), Some("node-a"));
        store.insert_instance(&member, Some(&name("node-a"))).await.unwrap().unwrap().1
    })
    .await;
    let distinct: BTreeSet<Generation> = bumps.iter().copied().collect();
    assert_eq!(distinct.len(), 10, "{bumps:?}");
    assert_eq!(Some(&generation(store.clone()).await), distinct.last());
}

pub async fn marking_a_hosts_instances_unknown_touches_only_observed(store: Arc<dyn Store>) {
    let on_a = |n: &str, observed| Instance { observed, state: InstanceState::Running, ..instance("acme", n, Some("node-a")) };
    let (web, db, idle) = (on_a("web", ObservedState::Running), on_a("db", ObservedState::Failed), on_a("idle", ObservedState::Unknown));
    let elsewhere = Instance { observed: ObservedState::Running, ..instance("acme", "far", Some("node-b")) };
    for i in [&web, &db, &idle, &elsewhere] {
        store.insert_instance(i, None).await.unwrap();
    }
    assert_eq!(store.mark_host_instances_unknown(&name("node-a")).await.unwrap(), 2);
    for i in [&web, &db, &idle] {
        let unknown = Instance { observed: ObservedState::Unknown, ..i.clone() };
        assert_eq!(store.get_instance_by_id(i.id).await.unwrap(), Some(unknown));
    }
    assert_eq!(store.get_instance_by_id(elsewhere.id).await.unwrap().as_ref(), Some(&elsewhere));
    assert_eq!(store.mark_host_instances_unknown(&name("node-a")).await.unwrap(), 0);
    assert_eq!(store.mark_host_instances_unknown(&name("node-x")).await.unwrap(), 0);
    // The version did not move: a decision made before the marking still lands.
    let next = Instance { generation: web.generation.next(), ..web.clone() };
    store.update_instance_if(&next, InstanceVersion::of(&web), None).await.unwrap();
}

/// One counter for instance and host generations: unique under concurrency, and each
/// value is greater than every one handed out before it.
pub async fn generations_are_unique_and_increasing(store: Arc<dyn Store>) {
    let got = concurrently(&store, 50, |store, _| async move { store.next_generation().await.unwrap() }).await;
    let distinct: BTreeSet<Generation> = got.iter().copied().collect();
    assert_eq!(distinct.len(), 50, "{got:?}");
    assert!(distinct.iter().all(|&g| g > Generation::ZERO));
    let next = store.next_generation().await.unwrap();
    assert!(distinct.iter().all(|&g| g < next), "{next} after {distinct:?}");
}

// ---- pools ----

fn pool(counts: PoolCounts) -> Pool {
    Pool {
        tenant: name("acme"),
        name: name("workers"),
        role: name("worker"),
        spec: instance("acme", "x", None).spec,
        counts,
        last_error: None,
        created_at: at(1),
        updated_at: at(1),
    }
}

pub async fn pools_round_trip_and_filter_members(store: Arc<dyn Store>) {
    let pool = pool(PoolCounts { running: 4, warm: 2, sleeping: 1 });
    store.insert_pool(&pool).await.unwrap();
    assert!(matches!(store.insert_pool(&pool).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(store.get_pool(&name("acme"), &name("workers")).await.unwrap(), Some(pool.clone()));
    assert_eq!(store.get_pool(&name("acme"), &name("idlers")).await.unwrap(), None);
    let scaled = store.set_pool_counts_if(&pool.tenant, &pool.name, pool.counts, PoolCounts { running: 0, warm: 0, sleeping: 3 }).await.unwrap();
    assert!(store.set_pool_last_error(&pool.tenant, &pool.name, Some("quota")).await.unwrap());
    let scaled = Pool { last_error: Some("quota".into()), ..scaled };
    assert_eq!(store.list_pools(Some(&name("acme"))).await.unwrap(), vec![scaled.clone()]);
    assert_eq!(store.list_pools(None).await.unwrap(), vec![scaled.clone()]);
    assert!(store.list_pools(Some(&name("beta"))).await.unwrap().is_empty());

    let member = Instance { pool: Some(name("workers")), held_until: Some(at(5)), ..instance("acme", "workers-1", Some("node-a")) };
    store.insert_instance(&member, None).await.unwrap();
    store.insert_instance(&instance("acme", "loose", Some("node-a")), None).await.unwrap();
    let members = store.list_instances(&InstanceFilter::pool(&name("acme"), &name("workers"))).await.unwrap();
    assert_eq!(members, vec![member]);

    assert!(store.delete_pool(&name("acme"), &name("workers")).await.unwrap());
    assert!(!store.delete_pool(&name("acme"), &name("workers")).await.unwrap());
    assert!(store.get_pool(&name("acme"), &name("workers")).await.unwrap().is_none());
}

/// A scale decided against counts that moved meanwhile is refused with Conflict.
pub async fn pool_counts_change_only_from_the_expected_counts(store: Arc<dyn Store>) {
    let counts = |running, warm, sleeping| PoolCounts { running, warm, sleeping };
    let p = Pool { last_error: Some("quota".into()), ..pool(counts(1, 1, 1)) };
    store.insert_pool(&p).await.unwrap();
    let before = OffsetDateTime::now_utc() - Duration::seconds(1);

    let stored = store.set_pool_counts_if(&p.tenant, &p.name, counts(1, 1, 1), counts(5, 0, 2)).await.unwrap();
    assert!(stored.updated_at >= before, "{stored:?}");
    assert_eq!(stored, Pool { counts: counts(5, 0, 2), updated_at: stored.updated_at, ..p.clone() });
    assert_eq!(store.get_pool(&p.tenant, &p.name).await.unwrap(), Some(stored.clone()));

    let stale = store.set_pool_counts_if(&p.tenant, &p.name, counts(1, 1, 1), counts(9, 9, 9)).await;
    assert!(matches!(&stale, Err(StoreError::Conflict(w)) if w == "pool 'acme/workers'"), "{stale:?}");
    assert_eq!(store.get_pool(&p.tenant, &p.name).await.unwrap(), Some(stored));
    assert!(matches!(
        store.set_pool_counts_if(&p.tenant, &name("idlers"), counts(1, 1, 1), counts(0, 0, 0)).await,
        Err(StoreError::NotFound(_))
    ));

    // Of many scales from the same counts, one lands.
    let results = concurrently(&store, 8, |store, i| async move {
        store.set_pool_counts_if(&name("acme"), &name("workers"), counts(5, 0, 2), counts(i as u32, 0, 0)).await
    })
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
}

pub async fn pool_last_errors_are_recorded_alone(store: Arc<dyn Store>) {
    let p = pool(PoolCounts { running: 2, warm: 0, sleeping: 0 });
    store.insert_pool(&p).await.unwrap();
    assert!(store.set_pool_last_error(&p.tenant, &p.name, Some("no capacity")).await.unwrap());
    let failed = Pool { last_error: Some("no capacity".into()), ..p.clone() };
    assert_eq!(store.get_pool(&p.tenant, &p.name).await.unwrap(), Some(failed));
    assert!(store.set_pool_last_error(&p.tenant, &p.name, None).await.unwrap());
    assert_eq!(store.get_pool(&p.tenant, &p.name).await.unwrap(), Some(p.clone()));
    assert!(!store.set_pool_last_error(&p.tenant, &name("idlers"), Some("x")).await.unwrap());
}

// ---- operations ----

pub async fn operations_run_and_finish(store: Arc<dyn Store>) {
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

pub async fn events_newest_limit_oldest_first(store: Arc<dyn Store>) {
    let before = OffsetDateTime::now_utc();
    // Objects e0..e5 with these tenants.
    let tenants = [Some("acme"), None, Some("beta"), Some("acme"), Some("acme"), None];
    // Events belong to the tenant by id (see a_new_tenant_with_an_old_name_sees_no_old_event_or_operation).
    for t in ["acme", "beta"] {
        store.insert_tenant(&tenant(t), 100).await.unwrap();
    }
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

pub async fn tokens_insert_find_list_delete(store: Arc<dyn Store>) {
    let (admin, acme) = (token("t-admin", None, 5), token("t-acme", Some("acme"), 1));
    store.insert_token(&admin).await.unwrap();
    store.insert_token(&acme).await.unwrap();

    for dup in [TokenRecord { id: "other".parse().unwrap(), ..acme.clone() }, TokenRecord { hash: "new".into(), ..acme.clone() }] {
        assert!(matches!(store.insert_token(&dup).await, Err(StoreError::AlreadyExists(_))), "{dup:?}");
    }
    assert_eq!(store.find_token("hash-t-admin").await.unwrap().as_ref(), Some(&admin));
    assert_eq!(store.find_token("nope").await.unwrap(), None);
    assert_eq!(store.list_tokens().await.unwrap(), [acme.clone(), admin.clone()]);

    assert!(store.delete_token(&acme.id).await.unwrap());
    assert!(!store.delete_token(&acme.id).await.unwrap());
    assert_eq!(store.find_token("hash-t-acme").await.unwrap(), None);
    assert_eq!(store.list_tokens().await.unwrap(), [admin]);
}

// ---- images ----

pub async fn images_insert_get_list_delete(store: Arc<dyn Store>) {
    let tar = Image { name: name("alpine"), kind: ImageKind::Tar, path: "/srv/images/alpine.tar".into(), sha256: Some("ab".repeat(32)), size_bytes: 3 << 20, created_at: at(2) };
    let dir = Image { name: name("base"), kind: ImageKind::Dir, path: "/srv/rootfs".into(), sha256: None, size_bytes: 0, created_at: at(1) };
    store.insert_image(&tar).await.unwrap();
    store.insert_image(&dir).await.unwrap();
    assert!(matches!(store.insert_image(&tar).await, Err(StoreError::AlreadyExists(w)) if w == "image 'alpine'"));
    assert_eq!(store.get_image(&name("alpine")).await.unwrap(), Some(tar.clone()));
    assert_eq!(store.get_image(&name("nope")).await.unwrap(), None);
    assert_eq!(store.list_images().await.unwrap(), vec![tar.clone(), dir.clone()]);
    assert!(store.delete_image(&name("alpine")).await.unwrap());
    assert!(!store.delete_image(&name("alpine")).await.unwrap());
    assert_eq!(store.list_images().await.unwrap(), vec![dir]);
}

// ---- snapshots ----

fn snap(instance: InstanceId, n: &str, created: i64) -> crate::SnapshotRecord {
    crate::SnapshotRecord { instance_id: instance, name: name(n), created_at: at(created), referenced_bytes: Some(1 << 20), exclusive_bytes: None, scheduled: n.starts_with("auto-"), deleted_at: None }
}

pub async fn snapshots_insert_list_size_tombstone_remove(store: Arc<dyn Store>) {
    use crate::SnapshotFilter;
    let (web, db) = (instance("acme", "web", Some("node-a")), instance("beta", "db", Some("node-b")));
    store.insert_instance(&web, None).await.unwrap();
    store.insert_instance(&db, None).await.unwrap();
    let (a, b, c) = (snap(web.id, "before", 1), snap(web.id, "auto-20261130-120000", 2), snap(db.id, "before", 3));
    for s in [&a, &b, &c] {
        store.insert_snapshot(s).await.unwrap();
    }
    assert!(matches!(store.insert_snapshot(&a).await, Err(StoreError::AlreadyExists(w)) if w == "snapshot 'before'"));
    let names = |v: Vec<crate::SnapshotRecord>| v.into_iter().map(|s| format!("{}:{}", s.instance_id == web.id, s.name)).collect::<Vec<_>>();
    let list = |f: SnapshotFilter| {
        let store = store.clone();
        async move { names(store.list_snapshots(&f).await.unwrap()) }
    };
    assert_eq!(list(SnapshotFilter { instance: Some(web.id), ..Default::default() }).await, ["true:auto-20261130-120000", "true:before"]);
    assert_eq!(list(SnapshotFilter { tenant: Some(name("beta")), ..Default::default() }).await, ["false:before"]);
    assert_eq!(list(SnapshotFilter { host: Some(name("node-a")), ..Default::default() }).await, ["true:auto-20261130-120000", "true:before"]);
    assert_eq!(list(SnapshotFilter { host: Some(name("node-c")), ..Default::default() }).await, Vec::<String>::new());
    // Rows read back whole.
    let got = store.list_snapshots(&SnapshotFilter { instance: Some(web.id), ..Default::default() }).await.unwrap();
    assert_eq!(got, [b.clone(), a.clone()]);

    assert!(store.set_snapshot_sizes(web.id, &name("before"), Some(5), Some(3)).await.unwrap());
    assert!(!store.set_snapshot_sizes(web.id, &name("nope"), Some(5), Some(3)).await.unwrap());
    let got = store.list_snapshots(&SnapshotFilter { instance: Some(web.id), ..Default::default() }).await.unwrap();
    assert_eq!((got[1].referenced_bytes, got[1].exclusive_bytes), (Some(5), Some(3)));

    // A tombstone is listed only when asked for, takes no sizes, and a new snapshot of
    // the same name replaces it.
    assert!(store.tombstone_snapshot(web.id, &name("before"), at(9)).await.unwrap());
    assert!(!store.tombstone_snapshot(web.id, &name("before"), at(10)).await.unwrap());
    assert!(!store.set_snapshot_sizes(web.id, &name("before"), Some(5), Some(3)).await.unwrap());
    assert_eq!(list(SnapshotFilter { instance: Some(web.id), ..Default::default() }).await, ["true:auto-20261130-120000"]);
    let all = store.list_snapshots(&SnapshotFilter { instance: Some(web.id), tombstones: true, ..Default::default() }).await.unwrap();
    assert_eq!(all.iter().map(|s| (s.name.as_str(), s.deleted_at)).collect::<Vec<_>>(), [("auto-20261130-120000", None), ("before", Some(at(9)))]);
    let again = snap(web.id, "before", 11);
    store.insert_snapshot(&again).await.unwrap();
    let got = store.list_snapshots(&SnapshotFilter { instance: Some(web.id), ..Default::default() }).await.unwrap();
    assert_eq!(got[1], again);

    assert!(store.remove_snapshot(web.id, &name("before")).await.unwrap());
    assert!(!store.remove_snapshot(web.id, &name("before")).await.unwrap());
    let mut rest = list(SnapshotFilter::default()).await;
    rest.sort();
    assert_eq!(rest, ["false:before", "true:auto-20261130-120000"]);
}

pub async fn snapshots_and_schedules_go_with_their_instance(store: Arc<dyn Store>) {
    use hangar_types::snapshots::SnapshotSchedule;
    let (web, db) = (instance("acme", "web", Some("node-a")), instance("acme", "db", Some("node-b")));
    store.insert_instance(&web, None).await.unwrap();
    store.insert_instance(&db, None).await.unwrap();
    let hourly = SnapshotSchedule { every_secs: 3600, keep: 24 };
    let minutely = SnapshotSchedule { every_secs: 60, keep: 2 };
    store.set_snapshot_schedule(web.id, Some(minutely)).await.unwrap();
    store.set_snapshot_schedule(web.id, Some(hourly)).await.unwrap();
    store.set_snapshot_schedule(db.id, Some(minutely)).await.unwrap();
    let mut want = vec![(web.id, hourly), (db.id, minutely)];
    want.sort_by_key(|(i, _)| i.to_string());
    assert_eq!(store.list_snapshot_schedules(None).await.unwrap(), want);
    assert_eq!(store.list_snapshot_schedules(Some(&name("node-a"))).await.unwrap(), [(web.id, hourly)]);
    store.set_snapshot_schedule(db.id, None).await.unwrap();
    store.set_snapshot_schedule(db.id, None).await.unwrap();
    assert_eq!(store.list_snapshot_schedules(None).await.unwrap(), [(web.id, hourly)]);
    let gone = InstanceId::new();
    assert!(matches!(store.set_snapshot_schedule(gone, Some(hourly)).await, Err(StoreError::NotFound(_))));

    store.insert_snapshot(&snap(web.id, "before", 1)).await.unwrap();
    store.insert_snapshot(&snap(db.id, "before", 1)).await.unwrap();
    store.tombstone_snapshot(db.id, &name("before"), at(2)).await.unwrap();
    assert!(store.delete_instance(web.id).await.unwrap());
    assert!(store.delete_instance(db.id).await.unwrap());
    assert!(store.list_snapshots(&crate::SnapshotFilter { tombstones: true, ..Default::default() }).await.unwrap().is_empty());
    assert!(store.list_snapshot_schedules(None).await.unwrap().is_empty());
}

// ---- secrets and proxy tokens ----

fn secret(tenant: &str, n: &str, version: i64, sealed: &[u8], t: i64) -> SecretRecord {
    SecretRecord { tenant: name(tenant), name: name(n), sealed: sealed.to_vec(), size_bytes: sealed.len() as u64, version, created_at: at(t), updated_at: at(t) }
}

pub async fn secrets_put_replace_list_delete(store: Arc<dyn Store>) {
    let a = secret("acme", "db", 5, b"sealed-1", 1);
    store.put_secret(&a).await.unwrap();
    store.put_secret(&secret("acme", "api", 6, b"x", 2)).await.unwrap();
    store.put_secret(&secret("other", "db", 7, b"y", 3)).await.unwrap();
    assert_eq!(store.get_secret(&name("acme"), &name("db")).await.unwrap(), Some(a.clone()));
    // A new value replaces value, size, version and update time; creation stays.
    let b = SecretRecord { sealed: b"sealed-two".to_vec(), size_bytes: 10, version: 9, updated_at: at(4), created_at: at(4), ..a.clone() };
    store.put_secret(&b).await.unwrap();
    let got = store.get_secret(&name("acme"), &name("db")).await.unwrap().unwrap();
    assert_eq!(got, SecretRecord { created_at: at(1), ..b });
    let names: Vec<String> = store.list_secrets(&name("acme")).await.unwrap().into_iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["api", "db"]);
    assert!(store.delete_secret(&name("acme"), &name("db")).await.unwrap());
    assert!(!store.delete_secret(&name("acme"), &name("db")).await.unwrap());
    assert_eq!(store.get_secret(&name("acme"), &name("db")).await.unwrap(), None);
    assert_eq!(store.list_secrets(&name("other")).await.unwrap().len(), 1, "another tenant's secret of the same name stays");
}

fn proxy_token(id: &str, tenant: &str, instance: &str, port: u16, t: i64) -> ProxyTokenRecord {
    ProxyTokenRecord {
        id: id.into(),
        hash: format!("{id:0>64}"),
        tenant: name(tenant),
        instance: name(instance),
        instance_id: InstanceId::new(),
        port,
        created_at: at(t),
        expires_at: at(t + 3600),
    }
}

pub async fn proxy_tokens_insert_find_list_delete(store: Arc<dyn Store>) {
    let a = proxy_token("p1", "acme", "web", 8080, 1);
    let b = proxy_token("p2", "acme", "db", 5432, 2);
    let c = proxy_token("p3", "acme", "web", 80, 3);
    for t in [&a, &b, &c, &proxy_token("p4", "other", "web", 80, 4)] {
        store.insert_proxy_token(t).await.unwrap();
    }
    assert!(matches!(store.insert_proxy_token(&a).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(store.find_proxy_token(&a.hash).await.unwrap(), Some(a.clone()));
    assert_eq!(store.find_proxy_token("nope").await.unwrap(), None);
    assert_eq!(store.list_proxy_tokens(&name("acme"), None).await.unwrap(), vec![a.clone(), b.clone(), c.clone()]);
    assert_eq!(store.list_proxy_tokens(&name("acme"), Some(&name("web"))).await.unwrap(), vec![a.clone(), c.clone()]);
    assert!(!store.delete_proxy_token(&name("other"), "p1").await.unwrap(), "a token is deleted only within its tenant");
    assert!(store.delete_proxy_token(&name("acme"), "p1").await.unwrap());
    assert_eq!(store.find_proxy_token(&a.hash).await.unwrap(), None);
}

pub async fn deleting_a_proxy_token_moves_the_token_epoch(store: Arc<dyn Store>) {
    store.insert_proxy_token(&proxy_token("p1", "acme", "web", 8080, 1)).await.unwrap();
    let e0 = store.token_epoch().await.unwrap();
    store.insert_proxy_token(&proxy_token("p2", "acme", "web", 8080, 2)).await.unwrap();
    assert_eq!(store.token_epoch().await.unwrap(), e0, "adding a proxy token invalidates nothing");
    assert!(store.delete_proxy_token(&name("acme"), "p1").await.unwrap());
    assert!(store.token_epoch().await.unwrap() > e0, "a revoked proxy token must leave every hub's cache at once");
}

pub async fn deleting_a_tenant_deletes_its_secrets_and_proxy_tokens(store: Arc<dyn Store>) {
    for t in ["acme", "other"] {
        store.insert_tenant(&tenant(t), 4000).await.unwrap();
        store.put_secret(&secret(t, "db", 1, b"x", 1)).await.unwrap();
        store.insert_proxy_token(&proxy_token(&format!("tok-{t}"), t, "web", 80, 1)).await.unwrap();
    }
    assert!(store.delete_tenant(&name("acme")).await.unwrap());
    assert!(store.list_secrets(&name("acme")).await.unwrap().is_empty());
    assert!(store.list_proxy_tokens(&name("acme"), None).await.unwrap().is_empty());
    assert_eq!(store.list_secrets(&name("other")).await.unwrap().len(), 1);
    assert_eq!(store.list_proxy_tokens(&name("other"), None).await.unwrap().len(), 1);
}

// ---- ssh keys ----

pub async fn ssh_keys_insert_list_delete_and_go_with_their_tenant(store: Arc<dyn Store>) {
    use hangar_types::api::SshKey;
    let acme = store.insert_tenant(&tenant("acme"), 100).await.unwrap();
    store.insert_tenant(&tenant("beta"), 100).await.unwrap();
    let key = |t: &str, n: &str, blob: &str| SshKey {
        tenant: name(t),
        name: name(n),
        algorithm: "ssh-ed25519".into(),
        public_key: format!("ssh-ed25519 {blob}"),
        fingerprint: format!("SHA256:{blob}"),
        comment: "me@laptop".into(),
        created_at: at(1),
    };
    let laptop = key("acme", "laptop", "AAAA1");
    store.insert_ssh_key(&laptop).await.unwrap();
    store.insert_ssh_key(&key("acme", "desk", "AAAA2")).await.unwrap();
    // The same name, or the same key under another name: refused, nothing changed.
    assert!(matches!(store.insert_ssh_key(&key("acme", "laptop", "AAAA3")).await, Err(StoreError::AlreadyExists(_))));
    assert!(matches!(store.insert_ssh_key(&key("acme", "other", "AAAA1")).await, Err(StoreError::AlreadyExists(_))));
    // Another tenant may register the same key.
    store.insert_ssh_key(&key("beta", "laptop", "AAAA1")).await.unwrap();
    let names = |v: Vec<SshKey>| v.into_iter().map(|k| k.name.to_string()).collect::<Vec<_>>();
    assert_eq!(store.list_ssh_keys(&name("acme")).await.unwrap()[1], laptop);
    assert_eq!(names(store.list_ssh_keys(&name("acme")).await.unwrap()), ["desk", "laptop"]);
    assert!(store.delete_ssh_key(&name("acme"), &name("desk")).await.unwrap());
    assert!(!store.delete_ssh_key(&name("acme"), &name("desk")).await.unwrap());
    assert_eq!(names(store.list_ssh_keys(&name("acme")).await.unwrap()), ["laptop"]);
    // A tenant deleted and made again starts with no keys.
    assert!(store.delete_tenant(&acme.name).await.unwrap());
    store.insert_tenant(&tenant("acme"), 100).await.unwrap();
    assert!(store.list_ssh_keys(&name("acme")).await.unwrap().is_empty());
    assert_eq!(names(store.list_ssh_keys(&name("beta")).await.unwrap()), ["laptop"]);
}

// ---- backups ----

fn backup_record(id: &str, instance: &str, instance_id: InstanceId, created: i64) -> Backup {
    Backup { id: id.into(), tenant: name("acme"), instance: name(instance), instance_id, target: name("local"), created_at: at(created), bytes: 10, files: 2, dirs: 1, added_bytes: 5, id_base: Some(1 << 20) }
}

fn backup_file(path: &str, kind: BackupFileKind) -> BackupFile {
    BackupFile { path: path.into(), size: path.len() as u64, mtime: Some(at(3)), kind }
}

pub async fn backup_targets_insert_get_list_delete(store: Arc<dyn Store>) {
    let t = |n: &str| BackupTargetRecord { name: name(n), location: format!("dir:/srv/{n}"), sealed_spec: "00ff".into(), created_at: at(1) };
    store.insert_backup_target(&t("b")).await.unwrap();
    store.insert_backup_target(&t("a")).await.unwrap();
    assert!(matches!(store.insert_backup_target(&t("a")).await, Err(StoreError::AlreadyExists(w)) if w == "backup target 'a'"));
    assert_eq!(store.get_backup_target(&name("a")).await.unwrap(), Some(t("a")));
    assert_eq!(store.list_backup_targets().await.unwrap(), vec![t("a"), t("b")]);
    store.set_backup_target(&name("acme"), Some(&name("a"))).await.unwrap();
    assert_eq!(store.backup_target_users(&name("a")).await.unwrap(), vec![name("acme")]);
    assert!(store.backup_target_users(&name("b")).await.unwrap().is_empty());
    assert!(store.delete_backup_target(&name("b")).await.unwrap());
    assert!(!store.delete_backup_target(&name("b")).await.unwrap());
}

pub async fn backup_settings_default_set_and_one_password(store: Arc<dyn Store>) {
    assert_eq!(store.get_backup_settings(&name("acme")).await.unwrap(), BackupSettingsRecord::default());
    let policy = BackupPolicy { keep_daily: Some(7), keep_weekly: Some(4), schedule: Some(BackupSchedule::Daily), ..Default::default() };
    store.set_backup_policy(&name("acme"), &policy).await.unwrap();
    store.set_backup_target(&name("acme"), Some(&name("local"))).await.unwrap();
    // Concurrent first uses agree on one password: the first stored wins.
    let acme = name("acme");
    let (a, b) = tokio::join!(store.init_backup_password(&acme, "sealed-1"), store.init_backup_password(&acme, "sealed-2"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert_eq!(store.init_backup_password(&name("acme"), "sealed-3").await.unwrap(), a);
    let s = store.get_backup_settings(&name("acme")).await.unwrap();
    assert_eq!((s.target, s.policy, s.sealed_password), (Some(name("local")), policy, Some(a)));
    store.set_backup_target(&name("acme"), None).await.unwrap();
    assert_eq!(store.get_backup_settings(&name("acme")).await.unwrap().target, None);
    assert_eq!(store.list_backup_settings().await.unwrap().len(), 1);
}

pub async fn backup_runs_are_marked_once(store: Arc<dyn Store>) {
    let acme = name("acme");
    let (a, b) = tokio::join!(store.mark_backup_run(&acme, None, at(1)), store.mark_backup_run(&acme, None, at(2)));
    assert_eq!([a.unwrap(), b.unwrap()].iter().filter(|x| **x).count(), 1, "two hubs started one scheduled run");
    let last = store.get_backup_settings(&name("acme")).await.unwrap().last_run_at;
    assert!(!store.mark_backup_run(&name("acme"), None, at(3)).await.unwrap());
    assert!(store.mark_backup_run(&name("acme"), last, at(3)).await.unwrap());
}

pub async fn backups_and_their_index_are_recorded_whole(store: Arc<dyn Store>) {
    let web = InstanceId::new();
    let b1 = backup_record("aa11", "web", web, 1);
    let files = vec![backup_file("home", BackupFileKind::Dir), backup_file("home/notes.md", BackupFileKind::File), backup_file("home/link", BackupFileKind::Symlink)];
    store.insert_backup(&b1, &files).await.unwrap();
    // A second backup with a duplicate entry records nothing of itself.
    let b2 = backup_record("aa22", "web", web, 2);
    let dup = vec![backup_file("x", BackupFileKind::File), backup_file("x", BackupFileKind::File)];
    assert!(store.insert_backup(&b2, &dup).await.is_err());
    assert_eq!(store.list_backups(&name("acme"), &name("web")).await.unwrap(), vec![b1.clone()]);
    assert!(store.list_backup_files("aa22", "").await.unwrap().is_empty());
    store.insert_backup(&b2, &files[..1]).await.unwrap();
    assert!(matches!(store.insert_backup(&b2, &[]).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(store.list_backups_of(web).await.unwrap(), vec![b1.clone(), b2.clone()]);
    assert_eq!(store.find_backups(&name("acme"), &name("web"), "aa").await.unwrap().len(), 2);
    assert_eq!(store.find_backups(&name("acme"), &name("web"), "aa1").await.unwrap(), vec![b1.clone()]);
    assert!(store.find_backups(&name("acme"), &name("other"), "aa1").await.unwrap().is_empty());
    assert_eq!(store.list_backup_files("aa11", "").await.unwrap(), vec![files[0].clone()]);
    assert_eq!(store.list_backup_files("aa11", "home").await.unwrap(), vec![files[2].clone(), files[1].clone()]);
    assert_eq!(store.get_backup_file("aa11", "/home/notes.md").await.unwrap(), Some(files[1].clone()));
    assert_eq!(store.get_backup_file("aa11", "home/nope").await.unwrap(), None);
    let found = store.find_backup_files(&name("acme"), &name("web"), "*.md", 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].backup.as_str(), &found[0].file), ("aa11", &files[1]));
    assert_eq!(store.delete_backups(&["aa11".into(), "gone".into()]).await.unwrap(), 1);
    assert!(store.list_backup_files("aa11", "home").await.unwrap().is_empty());
    assert_eq!(store.list_backups(&name("acme"), &name("web")).await.unwrap(), vec![b2]);
}

/// Measures nothing (the machines are shared), but 100,000 rows must go in and come
/// back through the indexed queries.
pub async fn backup_index_of_100k_files_lists_and_finds(store: Arc<dyn Store>) {
    let files: Vec<BackupFile> = (0..100_000).map(|i| backup_file(&format!("d{:03}/f{i}.txt", i % 1000), BackupFileKind::File)).collect();
    store.insert_backup(&backup_record("bb", "web", InstanceId::new(), 1), &files).await.unwrap();
    assert_eq!(store.list_backup_files("bb", "d007").await.unwrap().len(), 100);
    let found = store.find_backup_files(&name("acme"), &name("web"), "f9999?.txt", 1000).await.unwrap();
    assert_eq!(found.len(), 10);
    assert_eq!(store.find_backup_files(&name("acme"), &name("web"), "*.txt", 1000).await.unwrap().len(), 1000, "the limit holds");
}

pub async fn backup_progress_and_cancel_requests(store: Arc<dyn Store>) {
    let op = OperationId::new();
    assert_eq!(store.get_backup_progress(op).await.unwrap(), None);
    assert!(!store.request_backup_cancel(op).await.unwrap());
    store.set_backup_progress(op, &BackupProgressRecord::default()).await.unwrap();
    assert!(store.request_backup_cancel(op).await.unwrap());
    // Progress written after a cancel request keeps it.
    store.set_backup_progress(op, &BackupProgressRecord { files: 3, bytes: 300, total_bytes: Some(900), ..Default::default() }).await.unwrap();
    let p = store.get_backup_progress(op).await.unwrap().unwrap();
    assert_eq!((p.files, p.bytes, p.total_bytes, p.cancel_requested), (3, 300, Some(900), true));
    assert!(p.updated_at.is_some());
}

pub async fn backup_purges_schedule_list_take(store: Arc<dyn Store>) {
    let purge = |n: &str, due: i64| BackupPurge { tenant: name("acme"), instance: name(n), instance_id: InstanceId::new(), target: name("local"), due_at: at(due) };
    let (late, early) = (purge("web", 20), purge("db", 10));
    store.schedule_backup_purge(&late).await.unwrap();
    store.schedule_backup_purge(&early).await.unwrap();
    assert!(matches!(store.schedule_backup_purge(&late).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(store.list_backup_purges().await.unwrap(), vec![early.clone(), late.clone()]);
    // Taken once: a second taker (another hub) gets nothing.
    assert_eq!(store.take_backup_purge(&name("acme"), &name("web")).await.unwrap(), Some(late));
    assert_eq!(store.take_backup_purge(&name("acme"), &name("web")).await.unwrap(), None);
    assert_eq!(store.list_backup_purges().await.unwrap(), vec![early]);
}

// ---- control plane safety (issue 13) ----

pub async fn host_certificates_renew_through_a_staged_fingerprint(store: Arc<dyn Store>) {
    let h = host("node-a");
    store.insert_host(&h).await.unwrap();
    store.consume_join_token("join-node-a", "fp-1").await.unwrap().unwrap();
    // Staging needs the current fingerprint: a renewal raced by another is refused.
    assert!(!store.stage_host_cert(h.id, "fp-x", "fp-2").await.unwrap());
    assert!(store.stage_host_cert(h.id, "fp-1", "fp-2").await.unwrap());
    assert_eq!(store.host_cert_next(h.id).await.unwrap().as_deref(), Some("fp-2"));
    // Both work until the new one is used; then only the new one.
    assert_eq!(store.get_host_by_fingerprint("fp-1").await.unwrap().unwrap().id, h.id);
    assert_eq!(store.get_host_by_fingerprint("fp-2").await.unwrap(), None);
    let promoted = store.promote_host_cert("fp-2").await.unwrap().unwrap();
    assert_eq!(promoted.cert_fingerprint.as_deref(), Some("fp-2"));
    assert_eq!(store.host_cert_next(h.id).await.unwrap(), None);
    assert_eq!(store.get_host_by_fingerprint("fp-1").await.unwrap(), None);
    assert_eq!(store.promote_host_cert("fp-2").await.unwrap(), None);
    assert_eq!(store.host_cert_next(HostId::new()).await.unwrap(), None);
}

pub async fn a_cert_rotation_request_ends_with_the_promoted_renewal(store: Arc<dyn Store>) {
    let h = host("node-a");
    store.insert_host(&h).await.unwrap();
    store.consume_join_token("join-node-a", "fp-1").await.unwrap().unwrap();
    assert_eq!(store.cert_rotation(h.id).await.unwrap(), None);
    // Only the current certificate can be asked to go.
    assert!(!store.request_cert_rotation(h.id, "fp-x").await.unwrap());
    assert!(!store.request_cert_rotation(HostId::new(), "fp-1").await.unwrap());
    assert!(store.request_cert_rotation(h.id, "fp-1").await.unwrap());
    assert_eq!(store.cert_rotation(h.id).await.unwrap().as_deref(), Some("fp-1"));
    // Staged: still asked (the agent has not used the new one yet); promoted: done.
    assert!(store.stage_host_cert(h.id, "fp-1", "fp-2").await.unwrap());
    assert_eq!(store.cert_rotation(h.id).await.unwrap().as_deref(), Some("fp-1"));
    store.promote_host_cert("fp-2").await.unwrap().unwrap();
    assert_eq!(store.cert_rotation(h.id).await.unwrap(), None);
}

pub async fn join_token_expiries_round_trip(store: Arc<dyn Store>) {
    let h = host("node-a");
    store.insert_host(&h).await.unwrap();
    assert_eq!(store.join_token_expiry(h.id).await.unwrap(), None);
    store.set_join_token_expiry(h.id, Some(at(30))).await.unwrap();
    assert_eq!(store.join_token_expiry(h.id).await.unwrap(), Some(at(30)));
    assert!(matches!(store.set_join_token_expiry(HostId::new(), None).await, Err(StoreError::NotFound(_))));
}

pub async fn removing_tokens_moves_the_token_epoch_and_uses_are_recorded(store: Arc<dyn Store>) {
    let e0 = store.token_epoch().await.unwrap();
    let t = TokenRecord { expires_at: Some(at(60)), ..token("t-acme", Some("acme"), 1) };
    store.insert_token(&t).await.unwrap();
    assert_eq!(store.token_epoch().await.unwrap(), e0, "adding a token invalidates nothing");
    assert_eq!(store.find_token("hash-t-acme").await.unwrap(), Some(t.clone()));
    assert!(store.touch_token(&t.id, at(9)).await.unwrap());
    assert_eq!(store.find_token("hash-t-acme").await.unwrap().unwrap().last_used_at, Some(at(9)));
    assert!(store.delete_token(&t.id).await.unwrap());
    let e1 = store.token_epoch().await.unwrap();
    assert!(e1 > e0);
    assert!(!store.touch_token(&t.id, at(10)).await.unwrap());
    store.insert_tenant(&tenant("acme"), 100).await.unwrap();
    store.insert_token(&token("t-2", Some("acme"), 2)).await.unwrap();
    store.delete_tenant(&name("acme")).await.unwrap();
    assert!(store.token_epoch().await.unwrap() > e1, "deleting a tenant removes its tokens");
}

pub async fn a_new_tenant_with_an_old_name_sees_no_old_event_or_operation(store: Arc<dyn Store>) {
    store.insert_tenant(&tenant("acme"), 100).await.unwrap();
    store.insert_event(&event(Some("acme"), "instance/acme/old")).await.unwrap();
    let op = Operation { tenant: Some(name("acme")), ..operation(None, 1) };
    store.insert_operation(&op).await.unwrap();
    assert_eq!(store.list_events(Some(&name("acme")), 10).await.unwrap().len(), 1);
    assert_eq!(store.get_operation_of_tenant(op.id, &name("acme")).await.unwrap().map(|o| o.id), Some(op.id));
    assert_eq!(store.get_operation_of_tenant(op.id, &name("other")).await.unwrap(), None);

    store.delete_tenant(&name("acme")).await.unwrap();
    store.insert_tenant(&tenant("acme"), 100).await.unwrap();
    assert!(store.list_events(Some(&name("acme")), 10).await.unwrap().is_empty(), "the new acme sees the old one's events");
    assert_eq!(store.get_operation_of_tenant(op.id, &name("acme")).await.unwrap(), None, "the new acme reads the old one's operation");
    // Admins still see the history.
    assert_eq!(store.list_events(None, 10).await.unwrap().len(), 1);
    assert!(store.get_operation(op.id).await.unwrap().is_some());
    store.insert_event(&event(Some("acme"), "instance/acme/new")).await.unwrap();
    let mine = store.list_events(Some(&name("acme")), 10).await.unwrap();
    assert_eq!(mine.iter().map(|e| e.object.as_str()).collect::<Vec<_>>(), ["instance/acme/new"]);
}

// ---- host-to-host transfers (issue 15) ----

pub async fn transfers_progress_only_up_and_finish_once(store: Arc<dyn Store>) {
    use crate::TransferRecord;
    use hangar_types::transfer::{TransferId, TransferObject, TransferState};
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let object = TransferObject::VolumeSnapshot { volume: "v1".parse().unwrap(), snapshot: "s1".parse().unwrap(), parent: None };
    let t = TransferRecord::issued(TransferId::new(), HostId::new(), HostId::new(), object, now, now + time::Duration::seconds(120));
    store.insert_transfer(&t).await.unwrap();
    assert!(matches!(store.insert_transfer(&t).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(store.get_transfer(t.id).await.unwrap().unwrap(), t);
    assert_eq!(store.list_open_transfers().await.unwrap(), vec![t.clone()]);
    // Progress only goes up, and makes it running.
    assert!(store.set_transfer_progress(t.id, 500).await.unwrap());
    assert!(store.set_transfer_progress(t.id, 300).await.unwrap());
    let got = store.get_transfer(t.id).await.unwrap().unwrap();
    assert_eq!((got.state, got.bytes), (TransferState::Running, 500));
    // Ended once: a second end (another hub) and later progress change nothing.
    assert!(store.finish_transfer(t.id, TransferState::Done, Some("abc"), None).await.unwrap());
    assert!(!store.finish_transfer(t.id, TransferState::Failed, None, Some("late")).await.unwrap());
    assert!(!store.set_transfer_progress(t.id, 900).await.unwrap());
    let got = store.get_transfer(t.id).await.unwrap().unwrap();
    assert_eq!((got.state, got.bytes, got.sha256.as_deref(), got.error), (TransferState::Done, 500, Some("abc"), None));
    assert!(got.finished_at.is_some());
    assert!(store.list_open_transfers().await.unwrap().is_empty());
    assert!(store.get_transfer(TransferId::new()).await.unwrap().is_none());
}

// ---- moves of instances between hosts (issue 15) ----

pub async fn moves_one_open_per_instance_and_the_switch_is_one_write(store: Arc<dyn Store>) {
    use crate::{InstanceVersion, MoveRecord};
    use hangar_types::moves::MovePhase;
    use hangar_types::InstanceState;
    let (a, b) = (fixtures::host("node-a"), fixtures::host("node-b"));
    store.insert_host(&a).await.unwrap();
    store.insert_host(&b).await.unwrap();
    let inst = fixtures::instance("acme", "web", Some("node-a"));
    store.insert_instance(&inst, None).await.unwrap();
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let m = MoveRecord {
        id: "7f1c1d4e-0000-4000-8000-000000000001".into(),
        instance: inst.id,
        tenant: inst.tenant.clone(),
        name: inst.name.clone(),
        source: a.name.clone(),
        target: b.name.clone(),
        previous_state: InstanceState::Running,
        phase: MovePhase::Sending,
        via: hangar_types::moves::MoveVia::Backup,
        bytes: 0,
        downtime_ms: None,
        keep_source_until: None,
        error: None,
        created_at: now,
        finished_at: None,
    };
    store.insert_move(&m).await.unwrap();
    assert_eq!(store.get_move(&m.id).await.unwrap().unwrap(), m);
    // A second open move of the same instance is refused.
    let second = MoveRecord { id: "7f1c1d4e-0000-4000-8000-000000000002".into(), ..m.clone() };
    assert!(matches!(store.insert_move(&second).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(store.list_open_moves().await.unwrap(), vec![m.clone()]);
    // Phases move only from the phase named; bytes only up.
    assert!(store.set_move_phase(&m.id, MovePhase::Sending, MovePhase::Stopping, 100, None, None).await.unwrap());
    assert!(!store.set_move_phase(&m.id, MovePhase::Sending, MovePhase::Final, 50, None, None).await.unwrap());
    assert!(store.set_move_phase(&m.id, MovePhase::Stopping, MovePhase::Final, 50, None, None).await.unwrap());
    // The switch refused before `staged`: nothing written.
    let mut next = inst.clone();
    next.host = Some(b.name.clone());
    next.generation = store.next_generation().await.unwrap();
    assert!(matches!(store.switch_move(&m.id, &next, InstanceVersion::of(&inst), &a.name).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.get_instance_by_id(inst.id).await.unwrap().unwrap().host, Some(a.name.clone()));
    assert!(store.set_move_phase(&m.id, MovePhase::Final, MovePhase::Staged, 150, None, None).await.unwrap());
    // A stale instance version: refused, the move stays staged.
    let stale = InstanceVersion { generation: hangar_types::Generation::new(12345), state: inst.state };
    assert!(matches!(store.switch_move(&m.id, &next, stale, &a.name).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.get_move(&m.id).await.unwrap().unwrap().phase, MovePhase::Staged);
    // The switch: instance on the target, both hosts bumped, move switched, at once.
    let (ga, gb) = (store.get_host(&a.name).await.unwrap().unwrap().desired_generation, store.get_host(&b.name).await.unwrap().unwrap().desired_generation);
    let bumped = store.switch_move(&m.id, &next, InstanceVersion::of(&inst), &a.name).await.unwrap();
    assert_eq!(bumped.len(), 2);
    assert_eq!(store.get_instance_by_id(inst.id).await.unwrap().unwrap().host, Some(b.name.clone()));
    assert!(store.get_host(&a.name).await.unwrap().unwrap().desired_generation > ga);
    assert!(store.get_host(&b.name).await.unwrap().unwrap().desired_generation > gb);
    let got = store.get_move(&m.id).await.unwrap().unwrap();
    assert_eq!((got.phase, got.bytes), (MovePhase::Switched, 150));
    // Done: closed, and the instance may move again.
    assert!(store.set_move_phase(&m.id, MovePhase::Switched, MovePhase::Done, 0, Some(1200), None).await.unwrap());
    let got = store.latest_move(inst.id).await.unwrap().unwrap();
    assert_eq!((got.phase, got.downtime_ms, got.finished_at.is_some()), (MovePhase::Done, Some(1200), true));
    assert!(store.list_open_moves().await.unwrap().is_empty());
    store.insert_move(&MoveRecord { created_at: now + time::Duration::seconds(1), ..second }).await.unwrap();
    assert_eq!(store.latest_move(inst.id).await.unwrap().unwrap().id, "7f1c1d4e-0000-4000-8000-000000000002");
}

pub async fn evacuations_record_items_and_ended_items_stay(store: Arc<dyn Store>) {
    use crate::{EvacuationItemRecord, EvacuationRecord};
    use hangar_types::moves::EvacuationOutcome;
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let host: Name = "node-a".parse().unwrap();
    let (web, db) = (fixtures::instance("acme", "web", Some("node-a")), fixtures::instance("acme", "db", Some("node-a")));
    let item = |i: &hangar_types::api::Instance| EvacuationItemRecord {
        instance: i.id,
        tenant: i.tenant.clone(),
        name: i.name.clone(),
        state: InstanceState::Running,
        outcome: EvacuationOutcome::Waiting,
        target: None,
        move_id: None,
        error: None,
    };
    let e = EvacuationRecord { operation: OperationId::new(), host: host.clone(), parallel: 2, created_at: now };
    assert!(store.latest_evacuation(&host).await.unwrap().is_none());
    store.insert_evacuation(&e, &[item(&web), item(&db)]).await.unwrap();
    let (got, items) = store.get_evacuation(e.operation).await.unwrap().unwrap();
    assert_eq!(got, e);
    // By name: db first.
    assert_eq!(items, vec![item(&db), item(&web)]);
    assert_eq!(store.latest_evacuation(&host).await.unwrap(), Some(e.operation));
    let later = EvacuationRecord { operation: OperationId::new(), created_at: now + time::Duration::seconds(1), ..e.clone() };
    store.insert_evacuation(&later, &[]).await.unwrap();
    assert_eq!(store.latest_evacuation(&host).await.unwrap(), Some(later.operation));
    // An item moves on until it ends; then it stays as it ended.
    let moving = EvacuationItemRecord { outcome: EvacuationOutcome::Moving, target: Some("node-b".parse().unwrap()), move_id: Some("m1".into()), ..item(&web) };
    assert!(store.set_evacuation_item(e.operation, &moving).await.unwrap());
    let moved = EvacuationItemRecord { outcome: EvacuationOutcome::Moved, ..moving.clone() };
    assert!(store.set_evacuation_item(e.operation, &moved).await.unwrap());
    let failed = EvacuationItemRecord { outcome: EvacuationOutcome::Failed, error: Some("late".into()), ..moving };
    assert!(!store.set_evacuation_item(e.operation, &failed).await.unwrap());
    let (_, items) = store.get_evacuation(e.operation).await.unwrap().unwrap();
    assert_eq!(items[1], moved);
    // An instance that is not in the evacuation: nothing written.
    assert!(!store.set_evacuation_item(later.operation, &moved).await.unwrap());
    assert!(store.get_evacuation(OperationId::new()).await.unwrap().is_none());
}

pub async fn token_roles_round_trip(store: Arc<dyn Store>) {
    use hangar_types::api::TokenRole;
    store.insert_tenant(&tenant("acme"), 100).await.unwrap();
    let admin_viewer = TokenRecord { role: TokenRole::Viewer, ..token("t-view", None, 1) };
    let tenant_viewer = TokenRecord { role: TokenRole::Viewer, ..token("t-view-acme", Some("acme"), 2) };
    let plain = token("t-acme", Some("acme"), 3);
    for t in [&admin_viewer, &tenant_viewer, &plain] {
        store.insert_token(t).await.unwrap();
        assert_eq!(store.find_token(&t.hash).await.unwrap().as_ref(), Some(t));
    }
    assert_eq!(store.list_tokens().await.unwrap(), vec![admin_viewer, tenant_viewer, plain]);
}

pub async fn a_tenant_destroy_is_marked_once_and_its_progress_kept(store: Arc<dyn Store>) {
    use hangar_types::api::OperationProgress;
    store.insert_tenant(&tenant("acme"), 100).await.unwrap();
    store.insert_tenant(&tenant("beta"), 101).await.unwrap();
    let op = Operation { tenant: Some(name("acme")), kind: "tenant.destroy".into(), instance_id: None, target_state: None, ..operation(None, 1) };
    store.insert_operation(&op).await.unwrap();
    assert_eq!(store.tenant_destroys().await.unwrap(), vec![]);
    assert_eq!(store.mark_tenant_destroy(&name("acme"), op.id).await.unwrap(), Some(op.id));
    // A second destroy finds the first one's operation.
    assert_eq!(store.mark_tenant_destroy(&name("acme"), OperationId::new()).await.unwrap(), Some(op.id));
    assert_eq!(store.mark_tenant_destroy(&name("nope"), OperationId::new()).await.unwrap(), None);
    assert_eq!(store.tenant_destroys().await.unwrap(), vec![(name("acme"), op.id)]);
    assert_eq!(store.tenant_destroy_of(&name("acme")).await.unwrap(), Some(op.id));
    assert_eq!(store.tenant_destroy_of(&name("beta")).await.unwrap(), None);
    assert_eq!(store.tenant_destroy_of(&name("nope")).await.unwrap(), None);
    let p = OperationProgress { done: 2, total: 5, what: "pools and instances removed".into() };
    store.set_operation_progress(op.id, &p).await.unwrap();
    assert_eq!(store.get_operation(op.id).await.unwrap().unwrap().progress, Some(p));
    // The mark goes with the row.
    assert!(store.delete_tenant(&name("acme")).await.unwrap());
    assert_eq!(store.tenant_destroys().await.unwrap(), vec![]);
}

#[cfg(test)]
mod tests {
    /// Every behaviour is listed in `store_contract_tests!`: one left out would silently
    /// never run against any implementation.
    #[test]
    fn every_behaviour_is_in_the_test_macro() {
        let src = include_str!("contract.rs");
        let (macro_body, rest) = src.split_once("pub mod fixtures").unwrap();
        let behaviours: Vec<&str> = rest
            .lines()
            .filter_map(|l| l.strip_prefix("pub async fn "))
            .map(|l| l.split('(').next().unwrap())
            .collect();
        assert!(behaviours.len() > 20, "{behaviours:?}");
        for b in behaviours {
            assert!(macro_body.contains(&format!("            {b},\n")), "{b} is missing from store_contract_tests!");
        }
    }
}
