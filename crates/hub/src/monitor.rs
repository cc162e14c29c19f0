//! Background duties of the hub: marking silent hosts stale (then offline after repeated
//! confirmations), failing operations that outlived their timeout, reconciling pools and
//! checking providers. They only act on what the store, the clock and the providers say;
//! a failed call to a host never changes recorded state by itself.

use crate::Hub;
use hangar_types::api::{HostState, OperationStatus};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Runs the checks every `tick` until the task is dropped.
pub async fn run(hub: Arc<Hub>, tick: Duration) {
    // Pools and providers on their own cadence, so a slow pass never delays staleness.
    let pools = {
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(hub.config.pool_interval);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = iv.tick() => {}
                    _ = hub.pool_wake.notified() => {}
                }
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
            }
        })
    };
    let providers = {
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_secs(5));
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                iv.tick().await;
                if let Err(e) = hub.check_providers().await {
                    tracing::warn!(error = ?e, "provider check failed");
                }
            }
        })
    };
    struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.iter().for_each(|t| t.abort());
        }
    }
    let _tasks = AbortOnDrop(vec![pools, providers]);
    let mut iv = tokio::time::interval(tick);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        iv.tick().await;
        if let Err(e) = check_once(&hub).await {
            tracing::warn!(error = ?e, "monitor pass failed");
        }
    }
}

pub async fn check_once(hub: &Hub) -> crate::HubResult<()> {
    let now = OffsetDateTime::now_utc();
    let stale_after = time::Duration::try_from(hub.config.stale_after).unwrap_or(time::Duration::seconds(15));
    let offline_after = time::Duration::try_from(hub.config.offline_after).unwrap_or(time::Duration::minutes(5));
    for listed in hub.store.list_hosts().await? {
        let silent_for = |h: &hangar_store::HostRecord| h.last_heartbeat.map(|t| now - t).unwrap_or(time::Duration::ZERO);
        // Draining hosts go stale too: a drained host that dies is still dead.
        let may_go_stale = matches!(listed.state, HostState::Ready | HostState::Draining);
        if may_go_stale && silent_for(&listed) > stale_after {
            // Re-read under the host's lock: a report may have landed since the listing.
            let g = hub.host_lock(&listed.name).lock_owned().await;
            let Some(mut h) = hub.store.get_host_by_id(listed.id).await? else { continue };
            if matches!(h.state, HostState::Ready | HostState::Draining) && silent_for(&h) > stale_after {
                let from = h.state;
                h.state = HostState::Stale;
                hub.store.update_host(&h).await?;
                drop(g);
                let unknown = hub.mark_unknown(&h.name).await?;
                hub.event(
                    "hub",
                    None,
                    format!("host/{}", h.name),
                    "host.state",
                    "ok",
                    Some(format!("{} -> stale: no report for {}s; {unknown} instance(s) now unknown, kept", from.as_str(), silent_for(&h).whole_seconds())),
                )
                .await;
            }
            continue;
        }
        // Offline only after `confirmations` consecutive checks past the threshold.
        if listed.state == HostState::Stale {
            let confirmed = {
                let mut m = hub.offline_confirmations.lock().unwrap_or_else(|e| e.into_inner());
                let c = m.entry(listed.name.clone()).or_insert(0);
                *c = if silent_for(&listed) > offline_after { *c + 1 } else { 0 };
                *c >= hub.config.confirmations
            };
            if confirmed {
                let _g = hub.host_lock(&listed.name).lock_owned().await;
                let Some(mut h) = hub.store.get_host_by_id(listed.id).await? else { continue };
                if h.state == HostState::Stale && silent_for(&h) > offline_after {
                    h.state = HostState::Offline;
                    hub.store.update_host(&h).await?;
                    hub.offline_confirmations.lock().unwrap_or_else(|e| e.into_inner()).remove(&h.name);
                    hub.event("hub", None, format!("host/{}", h.name), "host.state", "ok", Some(format!("stale -> offline: no report for {}s, confirmed {} times", silent_for(&h).whole_seconds(), hub.config.confirmations))).await;
                }
            }
        }
    }
    let op_timeout = time::Duration::try_from(hub.config.operation_timeout).unwrap_or(time::Duration::minutes(5));
    for op in hub.store.running_operations(None).await? {
        if now - op.created_at > op_timeout {
            let msg = format!("timed out after {}s waiting for the host to confirm", op_timeout.whole_seconds());
            hub.store.finish_operation(op.id, OperationStatus::Failed, Some(&msg)).await?;
            hub.event("hub", op.tenant.as_ref(), format!("operation/{}", op.id), &op.kind, "error", Some(msg)).await;
            hub.notify_ops();
        }
    }
    Ok(())
}
