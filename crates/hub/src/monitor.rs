//! Background duties of the hub: marking silent hosts stale (then offline after repeated
//! confirmations), failing operations that outlived their timeout, reconciling pools and
//! checking providers. They only act on what the store, the clock and the providers say;
//! a failed call to a host never changes recorded state by itself.
//!
//! Each loop does a pass only while it holds its lease (`monitor`, `pools`,
//! `providers`), so of several hubs on one store one leads each loop.

use crate::Hub;
use hangar_store::HostStateChange;
use hangar_types::Name;
use std::collections::HashMap;
use std::future::Future;
use hangar_types::api::{HostState, OperationStatus};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Runs the checks every `tick` until the task is dropped; pools and providers on their
/// own cadence, so a slow pass never delays staleness.
pub async fn run(hub: Arc<Hub>, tick: Duration) {
    let pools = tokio::spawn(led(hub.clone(), "pools", hub.config.pool_interval, true, |hub: Arc<Hub>| async move {
        // Batch after batch while a pool has steps left.
        loop {
            match hub.reconcile_pools().await {
                Ok(true) => tokio::task::yield_now().await,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = ?e, "pool pass failed");
                    break;
                }
            }
        }
    }));
    let providers = tokio::spawn(led(hub.clone(), "providers", Duration::from_secs(5), false, |hub: Arc<Hub>| async move {
        if let Err(e) = hub.check_providers().await {
            tracing::warn!(error = ?e, "provider check failed");
        }
    }));
    let backups = tokio::spawn(led(hub.clone(), "backups", Duration::from_secs(2), false, |hub: Arc<Hub>| async move {
        if let Err(e) = hub.backup_pass().await {
            tracing::warn!(error = ?e, "backup pass failed");
        }
    }));
    // Moves a restarted hub (or a runner that gave up) left open (crate::moves).
    let moves = tokio::spawn(led(hub.clone(), "moves", Duration::from_secs(2), false, |hub: Arc<Hub>| async move {
        if let Err(e) = hub.move_resume().await {
            tracing::warn!(error = ?e, "move resume failed");
        }
    }));
    struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.iter().for_each(|t| t.abort());
        }
    }
    let _tasks = AbortOnDrop(vec![pools, providers, backups, moves]);
    let monitor = Arc::new(tokio::sync::Mutex::new(Monitor::default()));
    led(hub, "monitor", tick, false, move |hub: Arc<Hub>| {
        let monitor = monitor.clone();
        async move {
            if let Err(e) = monitor.lock().await.check_once(&hub).await {
                tracing::warn!(error = ?e, "monitor pass failed");
            }
        }
    })
    .await
}

/// Runs `pass` every `every` (and, with `on_pool_wake`, whenever pools are woken) while
/// this loop holds the lease of `role`.
async fn led<F, Fut>(hub: Arc<Hub>, role: &'static str, every: Duration, on_pool_wake: bool, pass: F)
where
    F: Fn(Arc<Hub>) -> Fut,
    Fut: Future<Output = ()>,
{
    let me = uuid::Uuid::new_v4();
    // Long enough to outlast a slow pass; a hub that stops renewing loses it soon after.
    let ttl = (every * 3).max(Duration::from_secs(15));
    let mut iv = tokio::time::interval(every);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if on_pool_wake {
            tokio::select! {
                _ = iv.tick() => {}
                _ = hub.coord.notifier.pools_woken() => {}
            }
        } else {
            iv.tick().await;
        }
        if hub.coord.lease.hold(role, me, ttl).await {
            pass(hub.clone()).await;
        }
    }
}

/// What the monitor remembers between passes.
#[derive(Default)]
pub struct Monitor {
    /// Consecutive checks that found a stale host past `offline_after`.
    offline_confirmations: HashMap<Name, u32>,
}

impl Monitor {
    /// One pass: staleness, offline confirmations, operation timeouts.
    pub async fn check_once(&mut self, hub: &Hub) -> crate::HubResult<()> {
        let now = OffsetDateTime::now_utc();
        let stale_after = time::Duration::try_from(hub.config.stale_after).unwrap_or(time::Duration::seconds(15));
        let offline_after = time::Duration::try_from(hub.config.offline_after).unwrap_or(time::Duration::minutes(5));
        for listed in hub.store.list_hosts().await? {
            let silent_for = |h: &hangar_store::HostRecord| h.last_heartbeat.map(|t| now - t).unwrap_or(time::Duration::ZERO);
            // Draining hosts go stale too: a drained host that dies is still dead.
            let may_go_stale = matches!(listed.state, HostState::Ready | HostState::Draining);
            if may_go_stale && silent_for(&listed) > stale_after {
                // The store checks state and silence again as it writes: a report that
                // landed since the listing keeps the host as it is.
                let change = HostStateChange::to(HostState::Stale)
                    .from(&[HostState::Ready, HostState::Draining])
                    .if_silent_since(now - stale_after);
                if let Some(from) = hub.change_host_state(listed.id, &change).await? {
                    let unknown = hub.mark_unknown(&listed.name).await?;
                    hub.event(
                        "hub",
                        None,
                        format!("host/{}", listed.name),
                        "host.state",
                        "ok",
                        Some(format!("{} -> stale: no report for {}s; {unknown} instance(s) now unknown, kept", from.as_str(), silent_for(&listed).whole_seconds())),
                    )
                    .await;
                }
                continue;
            }
            // Offline only after `confirmations` consecutive checks past the threshold.
            if listed.state == HostState::Stale {
                let confirmed = {
                    let c = self.offline_confirmations.entry(listed.name.clone()).or_insert(0);
                    *c = if silent_for(&listed) > offline_after { *c + 1 } else { 0 };
                    *c >= hub.config.confirmations
                };
                if confirmed {
                    let change = HostStateChange::to(HostState::Offline).from(&[HostState::Stale]).if_silent_since(now - offline_after);
                    if hub.change_host_state(listed.id, &change).await?.is_some() {
                        self.offline_confirmations.remove(&listed.name);
                        hub.event("hub", None, format!("host/{}", listed.name), "host.state", "ok", Some(format!("stale -> offline: no report for {}s, confirmed {} times", silent_for(&listed).whole_seconds(), hub.config.confirmations))).await;
                    }
                }
            }
        }
        let op_timeout = time::Duration::try_from(hub.config.operation_timeout).unwrap_or(time::Duration::minutes(5));
        for op in hub.store.running_operations(None).await? {
            // Backup operations run as long as their data needs; the backup loop fails
            // those whose progress stopped. Evacuations end with their moves; a tenant
            // destroy runs until its hosts confirm.
            if !op.kind.starts_with("backup.") && op.kind != crate::evacuate::KIND && op.kind != "tenant.destroy" && now - op.created_at > op_timeout {
                let msg = format!("timed out after {}s waiting for the host to confirm", op_timeout.whole_seconds());
                hub.store.finish_operation(op.id, OperationStatus::Failed, Some(&msg)).await?;
                hub.op_waiters.wake(op.id);
                hub.event("hub", op.tenant.as_ref(), format!("operation/{}", op.id), &op.kind, "error", Some(msg)).await;
                hub.coord.notifier.operations_changed();
            }
        }
        // Transfer tickets no hub followed to their end (crate::transfer).
        if let Err(e) = hub.transfer_expire().await {
            tracing::warn!(error = %e.0.message, "cannot expire transfer tickets");
        }
        Ok(())
    }
}
