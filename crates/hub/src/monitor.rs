//! Background duties of the hub: marking silent hosts stale and failing operations that
//! outlived their timeout. Both only act on what the store and the clock say; a failed
//! call to a host never changes recorded state by itself.

use crate::Hub;
use hangar_types::api::{HostState, OperationStatus};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Runs the checks every `tick` until the task is dropped.
pub async fn run(hub: Arc<Hub>, tick: Duration) {
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
    for listed in hub.store.list_hosts().await? {
        let silent = listed.last_heartbeat.is_some_and(|t| now - t > stale_after);
        if listed.state != HostState::Ready || !silent {
            continue;
        }
        // Re-read under the host's lock: a report may have landed since the listing.
        let _g = hub.host_lock(&listed.name).lock_owned().await;
        let Some(mut h) = hub.store.get_host_by_id(listed.id).await? else { continue };
        let silent = h.last_heartbeat.is_some_and(|t| now - t > stale_after);
        if h.state == HostState::Ready && silent {
            h.state = HostState::Stale;
            hub.store.update_host(&h).await?;
            let last = h.last_heartbeat.map(|t| (now - t).whole_seconds()).unwrap_or(0);
            hub.event("hub", None, format!("host/{}", h.name), "host.state", "ok", Some(format!("ready -> stale: no report for {last}s"))).await;
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
