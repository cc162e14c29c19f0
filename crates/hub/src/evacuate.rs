//! Evacuating a host (`hangar host evacuate`): every instance on it moves to another
//! host through the move mechanism ([`Hub::move_start`], see `moves`), at most
//! `parallel` at once, each to the host the placement picks for it.
//!
//! The host is drained first, so nothing new lands there and the placement never picks
//! it. The evacuation is an operation (kind `host.evacuate`, no instance: instance
//! requests never supersede it) with one recorded item per instance that was on the
//! host when it began: waiting, moving (its move's id and target), moved or failed
//! (why). A hub that restarts resumes it from the items (run by the monitor with the
//! moves): an item whose move started but was not recorded yet is found again by the
//! instance's newest move from this host. The moves themselves resume on their own.

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::Hub;
use hangar_store::{EvacuationItemRecord, EvacuationRecord, HostStateChange, InstanceFilter, InstanceVersion};
use hangar_types::api::{HostState, OperationStatus};
use hangar_types::moves::{Evacuation, EvacuationItem, EvacuationOutcome, HostEvacuate, InstanceMove, MovePhase, EVACUATE_PARALLEL_MAX};
use hangar_types::{ErrorCode, InstanceState, Name, OperationId};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

/// The operation kind that tracks an evacuation.
pub const KIND: &str = "host.evacuate";
/// Evacuations this process runs now, so the monitor does not start a second runner.
static RUNNING: Mutex<Option<HashSet<OperationId>>> = Mutex::new(None);
/// How long an instance that cannot move yet (starting, stopping, its host not
/// answering) is retried before its part fails.
const SETTLE_MAX: time::Duration = time::Duration::minutes(2);
/// How often a runner looks at its moves.
const PASS: Duration = Duration::from_millis(500);

fn item_view(i: &EvacuationItemRecord, phase: Option<MovePhase>) -> EvacuationItem {
    EvacuationItem {
        tenant: i.tenant.clone(),
        instance: i.name.clone(),
        state: i.state,
        outcome: i.outcome,
        target: i.target.clone(),
        move_id: i.move_id.clone(),
        phase,
        error: i.error.clone(),
    }
}

/// Whether a refusal of a move may pass by itself (the instance settles, its host
/// answers again): retried until [`SETTLE_MAX`].
fn passing(e: &HubError) -> bool {
    matches!(e.0.code, ErrorCode::IllegalTransition | ErrorCode::Unavailable | ErrorCode::Timeout) || (e.0.code == ErrorCode::Conflict && e.0.message.contains("is being moved already"))
}

impl Hub {
    /// Checks, drains the host, records the evacuation and starts it (the answer comes
    /// at once; [`Hub::evacuation_status`] follows it). Admin only.
    pub async fn evacuate_start(self: &Arc<Self>, p: &Principal, host: &Name, req: HostEvacuate) -> HubResult<Evacuation> {
        p.require_admin()?;
        if !(1..=EVACUATE_PARALLEL_MAX).contains(&req.parallel) {
            return Err(HubError::invalid(format!("parallel: give 1 to {EVACUATE_PARALLEL_MAX} moves at once, got {}", req.parallel)));
        }
        let h = self.store.get_host(host).await?.ok_or_else(|| HubError::not_found(format!("host '{host}' not found")))?;
        if !matches!(h.state, HostState::Ready | HostState::Draining) {
            return Err(HubError::new(
                ErrorCode::IllegalTransition,
                format!("host '{host}' is {}: its instances are sent from it, so it must be ready or draining (start it first)", h.state.as_str()),
            ));
        }
        if h.endpoint.is_none() {
            return Err(HubError::new(ErrorCode::Unavailable, format!("host '{host}' has not reported an endpoint: its instances are sent from it")));
        }
        let others = self.store.list_hosts().await?.into_iter().filter(|o| o.name != *host && o.state == HostState::Ready && o.endpoint.is_some()).count();
        if others == 0 {
            return Err(HubError::new(
                ErrorCode::Conflict,
                format!("host '{host}' is the only ready host: no other host can take its instances; add one (`hangar host add`) or undrain one first"),
            ));
        }
        if let Some(op) = self.store.latest_evacuation(host).await?
            && self.store.get_operation(op).await?.is_some_and(|o| !o.status.is_final())
        {
            return Err(HubError::new(ErrorCode::Conflict, format!("host '{host}' is being evacuated already (operation {op})")));
        }
        // Drained first: nothing new lands there, and the placement never picks it.
        if self.change_host_state(h.id, &HostStateChange::to(HostState::Draining).from(&[HostState::Ready, HostState::Draining])).await?.is_none() {
            return Err(HubError::new(ErrorCode::Conflict, format!("host '{host}' changed state meanwhile: ask again")));
        }
        let instances: Vec<_> = self.store.list_instances(&InstanceFilter::host(host)).await?.into_iter().filter(|i| i.state != InstanceState::Deleted).collect();
        let op = self.operation_unbound(KIND, None, format!("host/{host}")).await?;
        let items: Vec<EvacuationItemRecord> = instances
            .iter()
            .map(|i| EvacuationItemRecord {
                instance: i.id,
                tenant: i.tenant.clone(),
                name: i.name.clone(),
                state: i.state,
                outcome: EvacuationOutcome::Waiting,
                target: None,
                move_id: None,
                error: None,
            })
            .collect();
        let now = op.created_at;
        let e = EvacuationRecord { operation: op.id, host: host.clone(), parallel: req.parallel, created_at: now };
        self.store.insert_evacuation(&e, &items).await?;
        // Pool members wait their turn held: the pool reconciler does not delete them
        // from the draining host meanwhile (each move holds its own until it ends).
        for i in instances.iter().filter(|i| i.pool.is_some()) {
            self.set_held(i.id, Some(now + crate::moves::HOLD)).await;
        }
        self.event(&p.actor(), None, format!("host/{host}"), KIND, "accepted", Some(format!("{} instance(s), {} at once; operation {}", items.len(), req.parallel, op.id))).await;
        let view = self.evacuation_view(op.id).await;
        self.evacuate_spawn(op.id);
        view
    }

    /// The host's newest evacuation.
    pub async fn evacuation_status(&self, p: &Principal, host: &Name) -> HubResult<Evacuation> {
        p.require_admin()?;
        self.store.get_host(host).await?.ok_or_else(|| HubError::not_found(format!("host '{host}' not found")))?;
        let op = self.store.latest_evacuation(host).await?.ok_or_else(|| HubError::not_found(format!("host '{host}' was never evacuated")))?;
        self.evacuation_view(op).await
    }

    async fn evacuation_view(&self, op: OperationId) -> HubResult<Evacuation> {
        let (e, items) = self.store.get_evacuation(op).await?.ok_or_else(|| HubError::not_found(format!("evacuation {op} not found")))?;
        let status = self.store.get_operation(op).await?.map(|o| o.status).unwrap_or(OperationStatus::Failed);
        let mut views = Vec::with_capacity(items.len());
        for i in &items {
            let phase = match (&i.move_id, i.outcome) {
                (Some(id), EvacuationOutcome::Moving) => self.store.get_move(id).await?.map(|m| m.phase),
                _ => None,
            };
            views.push(item_view(i, phase));
        }
        Ok(Evacuation {
            operation_id: op,
            host: e.host,
            parallel: e.parallel,
            status,
            items: views,
            created_at: e.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        })
    }

    /// Runs every evacuation no runner of this process follows (after a restart: from
    /// its recorded items). Called with the moves' resume by the monitor.
    pub async fn evacuate_resume(self: &Arc<Self>) -> HubResult<usize> {
        let open: Vec<_> = self.store.running_operations(None).await?.into_iter().filter(|o| o.kind == KIND).collect();
        for op in &open {
            self.evacuate_spawn(op.id);
        }
        Ok(open.len())
    }

    fn evacuate_spawn(self: &Arc<Self>, op: OperationId) {
        if !RUNNING.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashSet::new).insert(op) {
            return;
        }
        let hub = self.clone();
        tokio::spawn(async move {
            if let Err(e) = hub.evacuate_run(op).await {
                tracing::warn!(operation = %op, error = %e.0.message, "evacuation interrupted; the monitor resumes it");
            }
            RUNNING.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashSet::new).remove(&op);
        });
    }

    /// One evacuation to its end: follows the moves that run, starts waiting ones while
    /// fewer than `parallel` run, and finishes the operation once every item ended.
    async fn evacuate_run(self: &Arc<Self>, op: OperationId) -> HubResult<()> {
        loop {
            crate::failpoint::hit("evacuate-hub-pass");
            if self.store.get_operation(op).await?.is_none_or(|o| o.status.is_final()) {
                return Ok(());
            }
            let Some((e, items)) = self.store.get_evacuation(op).await? else {
                return self.evacuate_finish(op, None, OperationStatus::Failed, Some("the hub stopped before it recorded what to move".into())).await;
            };
            let mut moving = 0;
            let mut waiting = vec![];
            for mut item in items.iter().filter(|i| !i.outcome.is_final()).cloned() {
                self.evacuate_follow(&e, &mut item).await?;
                match item.outcome {
                    EvacuationOutcome::Moving => moving += 1,
                    EvacuationOutcome::Waiting => waiting.push(item),
                    _ => {}
                }
            }
            for mut item in waiting {
                if moving >= e.parallel as usize {
                    break;
                }
                if self.evacuate_one(&e, &mut item).await? == EvacuationOutcome::Moving {
                    moving += 1;
                }
            }
            let (_, items) = self.store.get_evacuation(op).await?.ok_or_else(|| HubError::not_found(format!("evacuation {op} is gone")))?;
            if items.iter().all(|i| i.outcome.is_final()) {
                let failed: Vec<String> = items.iter().filter(|i| i.outcome == EvacuationOutcome::Failed).map(|i| format!("{}/{}: {}", i.tenant, i.name, i.error.as_deref().unwrap_or("failed"))).collect();
                let (status, error) = if failed.is_empty() {
                    (OperationStatus::Succeeded, None)
                } else {
                    (OperationStatus::Failed, Some(format!("{} of {} instance(s) stay on host {}: {}", failed.len(), items.len(), e.host, failed.join("; "))))
                };
                return self.evacuate_finish(op, Some(&e.host), status, error).await;
            }
            tokio::time::sleep(PASS).await;
        }
    }

    async fn evacuate_finish(&self, op: OperationId, host: Option<&Name>, status: OperationStatus, error: Option<String>) -> HubResult<()> {
        self.store.finish_operation(op, status, error.as_deref()).await?;
        self.op_waiters.wake(op);
        self.coord.notifier.operations_changed();
        let object = host.map(|h| format!("host/{h}")).unwrap_or_else(|| format!("operation/{op}"));
        let result = if status == OperationStatus::Succeeded { "ok" } else { "error" };
        self.event("hub", None, object, KIND, result, error).await;
        Ok(())
    }

    /// Brings an item up to date with its move: moved or failed once the move ended; a
    /// waiting item whose move started before a restart recorded it gets that move.
    async fn evacuate_follow(&self, e: &EvacuationRecord, item: &mut EvacuationItemRecord) -> HubResult<()> {
        let m = match &item.move_id {
            Some(id) => self.store.get_move(id).await?,
            None => self.store.latest_move(item.instance).await?.filter(|m| m.source == e.host && (!m.phase.is_final() || m.created_at >= e.created_at)),
        };
        let Some(m) = m else { return Ok(()) };
        let before = item.clone();
        item.move_id = Some(m.id.clone());
        item.target = Some(m.target.clone());
        match m.phase {
            MovePhase::Done => item.outcome = EvacuationOutcome::Moved,
            MovePhase::RolledBack => {
                item.outcome = EvacuationOutcome::Failed;
                item.error = Some(format!("the move to host {} rolled back: {}", m.target, m.error.as_deref().unwrap_or("no reason recorded")));
            }
            _ => item.outcome = EvacuationOutcome::Moving,
        }
        if *item != before {
            self.store.set_evacuation_item(e.operation, item).await?;
        }
        Ok(())
    }

    /// Starts the move of one waiting item to the host the placement picks for it.
    /// Its new outcome: moving, failed (why recorded), or still waiting (a refusal that
    /// may pass, within [`SETTLE_MAX`]).
    async fn evacuate_one(self: &Arc<Self>, e: &EvacuationRecord, item: &mut EvacuationItemRecord) -> HubResult<EvacuationOutcome> {
        let r = async {
            let inst = self.store.get_instance_by_id(item.instance).await?.ok_or_else(|| HubError::not_found("deleted during the evacuation"))?;
            if inst.host.as_ref() != Some(&e.host) {
                return Ok(None);
            }
            let to = self.place(&inst.spec, None).await.map_err(|err| HubError::new(err.0.code, format!("no host can take it: {}", err.0.message)))?;
            if to.name == e.host {
                return Err(HubError::new(ErrorCode::Conflict, format!("the placement picked host {} itself", e.host)));
            }
            let st = self.move_start(&Principal::Admin, &inst.tenant, &inst.name, InstanceMove::to(to.name.clone())).await?;
            // Started, not yet recorded here: a restart finds it by the instance's move.
            crate::failpoint::hit("evacuate-hub-move-started");
            Ok(Some(st))
        }
        .await;
        match r {
            Ok(Some(st)) => {
                item.outcome = EvacuationOutcome::Moving;
                item.target = Some(st.target);
                item.move_id = Some(st.id);
            }
            Ok(None) => {
                // Moved off by someone else meanwhile: off the host all the same.
                let inst = self.store.get_instance_by_id(item.instance).await?;
                item.outcome = EvacuationOutcome::Moved;
                item.target = inst.and_then(|i| i.host);
            }
            Err(err) if passing(&err) && OffsetDateTime::now_utc() - e.created_at < SETTLE_MAX => {
                tracing::info!(operation = %e.operation, instance = %item.name, error = %err.0.message, "evacuation: not movable yet, retried");
                return Ok(EvacuationOutcome::Waiting);
            }
            Err(err) => {
                item.outcome = EvacuationOutcome::Failed;
                item.error = Some(err.0.message);
                self.set_held(item.instance, None).await;
            }
        }
        self.store.set_evacuation_item(e.operation, item).await?;
        Ok(item.outcome)
    }

    /// Sets or clears an instance's hold from the pool reconciler (a few tries against
    /// concurrent writes).
    pub(crate) async fn set_held(&self, id: hangar_types::InstanceId, until: Option<OffsetDateTime>) {
        for _ in 0..5 {
            let Ok(Some(read)) = self.store.get_instance_by_id(id).await else { return };
            let mut next = read.clone();
            next.held_until = until;
            if self.store.update_instance_if(&next, InstanceVersion::of(&read), None).await.is_ok() {
                return;
            }
        }
    }
}
