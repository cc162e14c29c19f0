//! Operations: what an accepted request is waiting for (an instance reaching a state),
//! settled by the host's observations, cancelled when superseded, failed by the
//! monitor when they time out.

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::Hub;
use hangar_types::api::{Instance, Operation, OperationStatus};
use hangar_types::{InstanceId, InstanceState, Name, ObservedState, OperationId};
use std::time::Duration;
use time::OffsetDateTime;

/// The observed state that confirms an instance reached `state`.
pub fn confirming_observation(state: InstanceState) -> Option<ObservedState> {
    match state {
        InstanceState::Created | InstanceState::Stopped | InstanceState::Sleeping => Some(ObservedState::Stopped),
        InstanceState::Running => Some(ObservedState::Running),
        InstanceState::Warm => Some(ObservedState::Warm),
        _ => None,
    }
}

impl Hub {
    pub(crate) async fn operation_new(&self, kind: &str, inst: &Instance, target: InstanceState) -> HubResult<Operation> {
        let now = OffsetDateTime::now_utc();
        let op = Operation {
            id: OperationId::new(),
            kind: kind.to_string(),
            tenant: Some(inst.tenant.clone()),
            target: format!("{}/{}", inst.tenant, inst.name),
            instance_id: Some(inst.id),
            target_state: Some(target),
            status: OperationStatus::Running,
            error: None,
            created_at: now,
            updated_at: now,
            progress: None,
        };
        self.store.insert_operation(&op).await?;
        Ok(op)
    }

    /// An operation that no instance request supersedes (no instance id): backups,
    /// evacuations. Its runner finishes it.
    pub(crate) async fn operation_unbound(&self, kind: &str, tenant: Option<&Name>, target: String) -> HubResult<Operation> {
        let op = Operation::running(kind, tenant.cloned(), target);
        self.store.insert_operation(&op).await?;
        Ok(op)
    }

    pub(crate) async fn cancel_operations(&self, id: InstanceId, why: &str) -> HubResult<()> {
        for op in self.store.running_operations(Some(id)).await? {
            self.store.finish_operation(op.id, OperationStatus::Cancelled, Some(why)).await?;
            self.op_waiters.wake(op.id);
        }
        self.coord.notifier.operations_changed();
        Ok(())
    }

    /// Finishes the running operations of an instance whose outcome is now known.
    pub(crate) async fn settle_operations(&self, id: InstanceId) -> HubResult<()> {
        let ops = self.store.running_operations(Some(id)).await?;
        if ops.is_empty() {
            return Ok(());
        }
        let inst = self.store.get_instance_by_id(id).await?;
        for op in ops {
            let outcome = match (&inst, op.target_state) {
                (None, Some(InstanceState::Deleted)) => Some((OperationStatus::Succeeded, None)),
                (None, _) => Some((OperationStatus::Failed, Some("the instance was deleted".to_string()))),
                (Some(i), Some(target)) if i.state == target && i.observed == confirming_observation(target).unwrap_or(ObservedState::Gone) => {
                    Some((OperationStatus::Succeeded, None))
                }
                (Some(i), Some(target)) if i.state == InstanceState::Failed && target != InstanceState::Failed => {
                    Some((OperationStatus::Failed, Some(i.error.clone().unwrap_or_else(|| "the host reported a failure".into()))))
                }
                (Some(i), Some(InstanceState::Running)) if i.state == InstanceState::Stopped => Some((
                    OperationStatus::Failed,
                    Some(i.error.clone().unwrap_or_else(|| "the workload exited right after it started: see `hangar instance logs`".into())),
                )),
                _ => None,
            };
            if let Some((status, err)) = outcome {
                self.store.finish_operation(op.id, status, err.as_deref()).await?;
                self.op_waiters.wake(op.id);
            }
        }
        self.coord.notifier.operations_changed();
        Ok(())
    }

    pub async fn operation_get(&self, p: &Principal, id: OperationId) -> HubResult<Operation> {
        let not_found = || HubError::not_found(format!("operation {id} not found"));
        // A tenant sees its operations by its id: not those of an earlier tenant that
        // had its name.
        let op = match p {
            Principal::Admin => self.store.get_operation(id).await?,
            Principal::Tenant(t) => self.store.get_operation_of_tenant(id, t).await?,
        };
        op.ok_or_else(not_found)
    }

    /// Waits until the operation is final or `timeout` passes; answers its state either way.
    /// Woken only when this operation finishes on this hub (not by every operation);
    /// re-reads every [`OPERATION_RECHECK`] for what another hub or the monitor finished.
    pub async fn operation_wait(&self, p: &Principal, id: OperationId, timeout: Duration) -> HubResult<Operation> {
        let deadline = tokio::time::Instant::now() + timeout.min(Duration::from_secs(300));
        let mut rx = self.op_waiters.watch(id);
        let r = async {
            loop {
                let op = self.operation_get(p, id).await?;
                if op.status.is_final() || tokio::time::Instant::now() >= deadline {
                    return Ok(op);
                }
                let until = deadline.min(tokio::time::Instant::now() + OPERATION_RECHECK);
                let _ = tokio::time::timeout_at(until, rx.changed()).await;
            }
        }
        .await;
        drop(rx);
        self.op_waiters.release(id);
        r
    }

    /// How many operations have someone waiting on them (tests, diagnostics).
    pub fn operations_waited_on(&self) -> usize {
        self.op_waiters.len()
    }
}

/// How often a waiter re-reads its operation without a wake-up.
pub const OPERATION_RECHECK: Duration = Duration::from_secs(5);

/// One wake-up channel per operation someone waits on.
#[derive(Default)]
pub(crate) struct OperationWaiters(std::sync::Mutex<std::collections::HashMap<OperationId, tokio::sync::watch::Sender<()>>>);

impl OperationWaiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<OperationId, tokio::sync::watch::Sender<()>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watch(&self, id: OperationId) -> tokio::sync::watch::Receiver<()> {
        self.lock().entry(id).or_insert_with(|| tokio::sync::watch::channel(()).0).subscribe()
    }

    pub(crate) fn wake(&self, id: OperationId) {
        if let Some(tx) = self.lock().get(&id) {
            tx.send_replace(());
        }
    }

    /// Forgets the channel once nobody waits on it.
    fn release(&self, id: OperationId) {
        let mut g = self.lock();
        if g.get(&id).is_some_and(|tx| tx.receiver_count() == 0) {
            g.remove(&id);
        }
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}
