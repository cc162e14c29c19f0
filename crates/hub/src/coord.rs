//! The coordination seam: everything hub requests and background loops agree on besides
//! the store. Keyed [`Locks`] serialize multi-step decisions about one instance or tenant
//! and a provider's actions on one host; a [`Notifier`] carries wake-ups (a host's new desired generation, operations
//! that may have finished, pool steps left); a [`Lease`] lets one hub lead each
//! background loop. Each is a trait with an in-process implementation, which is all one
//! hub needs; hubs sharing a PostgreSQL store would implement them on it (advisory locks,
//! LISTEN/NOTIFY, a lease row).
//!
//! No lock protects a store write by itself: hosts and pools change only through the
//! store's narrow and conditional writes, and instances through its compare-and-swap, so
//! a lock here only keeps one hub from deciding twice on the same reading. Without it
//! (two hubs), the loser's write fails with a conflict instead of overwriting.

use hangar_types::{Generation, HostId, InstanceId, Name};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What a lock serializes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LockKey {
    /// Requests and observations on one instance: each runs the state machine on the
    /// instance as read and writes the outcome; serialized, they never lose to each
    /// other's compare-and-swap.
    Instance(InstanceId),
    /// Quota checks and the changes they allow: the check reads every instance of the
    /// tenant, which no single row's compare-and-swap covers.
    Tenant(Name),
    /// A provider's actions on one host: a start waits for a stop in progress.
    Provider(Name),
}

/// Holds a lock until dropped.
pub struct LockGuard(#[allow(dead_code)] Box<dyn Send + Sync>);

#[async_trait::async_trait]
pub trait Locks: Send + Sync + 'static {
    /// Waits for and takes the lock of `key`.
    async fn lock(&self, key: LockKey) -> LockGuard;
    /// `key` is not used again (its instance is gone): its lock may be dropped.
    fn forget(&self, key: &LockKey);
}

/// Locks of one hub process.
#[derive(Default)]
pub struct LocalLocks {
    map: Mutex<HashMap<LockKey, Arc<tokio::sync::Mutex<()>>>>,
}

#[async_trait::async_trait]
impl Locks for LocalLocks {
    async fn lock(&self, key: LockKey) -> LockGuard {
        let m = self.map.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default().clone();
        LockGuard(Box::new(m.lock_owned().await))
    }

    fn forget(&self, key: &LockKey) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// Wake-ups between requests, reports and loops.
#[async_trait::async_trait]
pub trait Notifier: Send + Sync + 'static {
    /// A host's desired generation is now `generation`: wakes its long-poll.
    fn host_changed(&self, host: HostId, generation: Generation);
    fn watch_host(&self, host: HostId) -> watch::Receiver<Generation>;
    /// Some operation may have finished.
    fn operations_changed(&self);
    fn watch_operations(&self) -> watch::Receiver<u64>;
    /// A pool has steps left for the pool loop.
    fn wake_pools(&self);
    /// Returns at the next [`Notifier::wake_pools`] (or at once if one is pending).
    async fn pools_woken(&self);
}

/// Wake-ups inside one hub process.
pub struct LocalNotifier {
    hosts: Mutex<HashMap<HostId, watch::Sender<Generation>>>,
    operations: watch::Sender<u64>,
    pools: tokio::sync::Notify,
}

impl Default for LocalNotifier {
    fn default() -> Self {
        LocalNotifier { hosts: Mutex::default(), operations: watch::channel(0).0, pools: tokio::sync::Notify::new() }
    }
}

impl LocalNotifier {
    fn host_sender(&self, host: HostId) -> watch::Sender<Generation> {
        let mut map = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(host).or_insert_with(|| watch::channel(Generation::ZERO).0).clone()
    }
}

#[async_trait::async_trait]
impl Notifier for LocalNotifier {
    fn host_changed(&self, host: HostId, generation: Generation) {
        self.host_sender(host).send_replace(generation);
    }

    fn watch_host(&self, host: HostId) -> watch::Receiver<Generation> {
        self.host_sender(host).subscribe()
    }

    fn operations_changed(&self) {
        self.operations.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn watch_operations(&self) -> watch::Receiver<u64> {
        self.operations.subscribe()
    }

    fn wake_pools(&self) {
        self.pools.notify_one();
    }

    async fn pools_woken(&self) {
        self.pools.notified().await;
    }
}

/// Leadership of a background loop (`monitor`, `pools`, `providers`): among the loops
/// of that name, only the holder of the lease does a pass.
#[async_trait::async_trait]
pub trait Lease: Send + Sync + 'static {
    /// Takes or renews `role` for `holder` for `ttl`; false while another holder's lease
    /// on it has not expired.
    async fn hold(&self, role: &str, holder: uuid::Uuid, ttl: Duration) -> bool;
    /// Gives `role` up if `holder` has it.
    async fn release(&self, role: &str, holder: uuid::Uuid);
}

/// Leases among the loops of one hub process.
#[derive(Default)]
pub struct LocalLease {
    held: Mutex<HashMap<String, (uuid::Uuid, Instant)>>,
}

#[async_trait::async_trait]
impl Lease for LocalLease {
    async fn hold(&self, role: &str, holder: uuid::Uuid, ttl: Duration) -> bool {
        let mut map = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match map.get(role) {
            Some((h, until)) if *h != holder && *until > now => false,
            _ => {
                map.insert(role.to_string(), (holder, now + ttl));
                true
            }
        }
    }

    async fn release(&self, role: &str, holder: uuid::Uuid) {
        let mut map = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(role).is_some_and(|(h, _)| *h == holder) {
            map.remove(role);
        }
    }
}

/// The hub's coordination: locks, wake-ups and leases.
#[derive(Clone)]
pub struct Coordination {
    pub locks: Arc<dyn Locks>,
    pub notifier: Arc<dyn Notifier>,
    pub lease: Arc<dyn Lease>,
}

impl Coordination {
    /// For a hub that is the only one on its store.
    pub fn in_process() -> Coordination {
        Coordination { locks: Arc::new(LocalLocks::default()), notifier: Arc::new(LocalNotifier::default()), lease: Arc::new(LocalLease::default()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_held_by_one_at_a_time_and_other_keys_are_free() {
        let locks = Arc::new(LocalLocks::default());
        let t: Name = "acme".parse().unwrap();
        let g = locks.lock(LockKey::Tenant(t.clone())).await;
        // Another key, even with the same name, is independent.
        let _h = tokio::time::timeout(Duration::from_secs(1), locks.lock(LockKey::Provider(t.clone()))).await.expect("other key is free");
        let waiting = tokio::spawn({
            let locks = locks.clone();
            let t = t.clone();
            async move { locks.lock(LockKey::Tenant(t)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a held key was taken twice");
        drop(g);
        tokio::time::timeout(Duration::from_secs(1), waiting).await.expect("released key is taken").unwrap();
    }

    #[tokio::test]
    async fn wake_ups_reach_their_watchers() {
        let n = LocalNotifier::default();
        let host = HostId::new();
        let mut rx = n.watch_host(host);
        n.host_changed(host, Generation::new(7));
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), Generation::new(7));
        let mut ops = n.watch_operations();
        n.operations_changed();
        ops.changed().await.unwrap();
        // A wake before the wait is not lost.
        n.wake_pools();
        tokio::time::timeout(Duration::from_secs(1), n.pools_woken()).await.expect("pending wake");
    }

    #[tokio::test]
    async fn one_holder_leads_until_it_releases_or_its_lease_expires() {
        let l = LocalLease::default();
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        assert!(l.hold("monitor", a, Duration::from_secs(60)).await);
        assert!(!l.hold("monitor", b, Duration::from_secs(60)).await);
        assert!(l.hold("pools", b, Duration::from_secs(60)).await, "roles are separate");
        assert!(l.hold("monitor", a, Duration::from_secs(60)).await, "the holder renews");
        l.release("monitor", b).await; // not b's: no effect
        assert!(!l.hold("monitor", b, Duration::from_secs(60)).await);
        l.release("monitor", a).await;
        assert!(l.hold("monitor", b, Duration::from_millis(1)).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(l.hold("monitor", a, Duration::from_secs(60)).await, "an expired lease is taken over");
    }
}
