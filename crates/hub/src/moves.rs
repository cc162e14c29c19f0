//! Moving an instance to another host (`hangar instance move`), in phases recorded in
//! the store before each is acted on (`hangar_types::moves::MovePhase`), so a hub that
//! restarts continues from the last one ([`Hub::move_resume`], run by the monitor):
//!
//! 1. `sending`: a read-only snapshot (`mv-1`) of the volume goes to the target while
//!    the instance keeps running (a full `btrfs send`);
//! 2. `stopping`: the instance is stopped on the source (the state machine's stop);
//! 3. `final`: a second snapshot (`mv-2`) goes, incrementally from the first;
//! 4. `staged`: the target holds `mv-2`, checked, and makes the volume from it;
//! 5. `switched`: one store transaction places the instance on the target (same id,
//!    name, address, volume identity, uid range, secrets, tokens) and bumps both hosts;
//! 6. `started`: the target reports the instance in its previous state; then the
//!    source's copy is removed by the source agent, which refuses while the instance is
//!    still in its desired document.
//!
//! Before the switch the source owns the instance and any failure rolls back (the
//! target drops what it got, the instance returns to its state on the source); from
//! the switch on the target owns it and only the cleanup is left to finish. A member of
//! a pool is held (`held_until`) for the whole move, so the pool reconciler leaves it.

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::{Hub, LockKey};
use hangar_store::{HostRecord, InstanceVersion, MoveRecord};
use hangar_types::api::Instance;
use hangar_types::api::OperationStatus;
use hangar_types::moves::{InstanceMove, MovePhase, MoveStatus, MoveVia, KEEP_SOURCE_MAX_SECS};
use hangar_types::transfer::{StagedAdopt, TransferObject};
use hangar_types::{ErrorCode, InstanceState, Name, ObservedState, OperationId, SnapshotId, Transition, VolumeId};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Moves this process runs now (by id), so the monitor does not start a second runner.
static RUNNING: Mutex<Option<HashSet<String>>> = Mutex::new(None);
/// How long a host may take to report the instance stopped, or started on the target.
const OBSERVE_MAX: Duration = Duration::from_secs(120);
/// How long the source may take to apply its new document before its copy is removed.
const CLEANUP_MAX: Duration = Duration::from_secs(300);
/// How long a pool member stays held: longer than any move; cleared at its end.
pub(crate) const HOLD: time::Duration = time::Duration::days(1);

const FIRST: &str = "mv-1";
const LAST: &str = "mv-2";

fn snap(name: &str) -> SnapshotId {
    name.parse().expect("a valid snapshot id")
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// What users see of a move.
pub fn status(m: &MoveRecord) -> MoveStatus {
    MoveStatus {
        id: m.id.clone(),
        tenant: m.tenant.clone(),
        instance: m.name.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        phase: m.phase,
        via: m.via,
        previous_state: m.previous_state,
        bytes: m.bytes,
        downtime_ms: m.downtime_ms,
        error: m.error.clone(),
        created_at: rfc3339(m.created_at),
        finished_at: m.finished_at.map(rfc3339),
    }
}

/// The state an instance that was in `prev` gets on the target, and what its host
/// reports once it is there.
fn restored(prev: InstanceState) -> (InstanceState, ObservedState) {
    match prev {
        InstanceState::Running | InstanceState::Starting => (InstanceState::Starting, ObservedState::Running),
        InstanceState::Warm => (InstanceState::Warm, ObservedState::Warm),
        other => (other, ObservedState::Stopped),
    }
}

/// Whether the instance runs in `prev` (and so is stopped for the final pass).
fn runs(prev: InstanceState) -> bool {
    matches!(prev, InstanceState::Running | InstanceState::Starting | InstanceState::Warm)
}

impl Hub {
    /// Checks a move of `tenant/name` to `req.to`, records it and starts it (the answer
    /// comes at once; [`Hub::move_status`] follows it). Admin only: hosts are the
    /// operator's.
    pub async fn move_start(self: &Arc<Self>, p: &Principal, tenant: &Name, name: &Name, req: InstanceMove) -> HubResult<MoveStatus> {
        p.require_admin()?;
        if req.keep_source_secs > KEEP_SOURCE_MAX_SECS {
            return Err(HubError::invalid(format!("keep_source_secs: at most {KEEP_SOURCE_MAX_SECS} (7 days), got {}", req.keep_source_secs)));
        }
        let ten = self.tenant_get(p, tenant).await?;
        let _tg = self.lock(LockKey::Tenant(ten.name.clone())).await;
        let inst = self.instance_get(p, tenant, name).await?;
        let _ig = self.lock(LockKey::Instance(inst.id)).await;
        let inst = self.store.get_instance_by_id(inst.id).await?.ok_or_else(|| HubError::not_found(format!("instance '{tenant}/{name}' not found")))?;
        let source = inst.host.clone().ok_or_else(|| HubError::new(ErrorCode::Unavailable, format!("instance '{tenant}/{name}' is not placed on a host")))?;
        if source == req.to {
            return Err(HubError::invalid(format!("to: instance '{tenant}/{name}' is on host '{source}' already: name another host")));
        }
        if !matches!(inst.state, InstanceState::Running | InstanceState::Warm | InstanceState::Stopped | InstanceState::Sleeping | InstanceState::Created) {
            return Err(HubError::new(ErrorCode::IllegalTransition, format!("instance '{tenant}/{name}' is {}: a move needs it running, warm, sleeping or stopped; wait until it settles", inst.state)));
        }
        if let Some(m) = self.store.latest_move(inst.id).await?.filter(|m| !m.phase.is_final()) {
            return Err(HubError::new(ErrorCode::Conflict, format!("instance '{tenant}/{name}' is being moved already (move {}, {} to {}, {})", m.id, m.source, m.target, m.phase)));
        }
        // A move through the transfer carries the snapshots (btrfs sends them); a backup
        // holds only the volume's tree.
        let snaps = self.snapshot_list(p, tenant, name).await?;
        if req.via == MoveVia::Backup && !snaps.is_empty() {
            let names: Vec<&str> = snaps.iter().map(|s| s.name.as_str()).collect();
            return Err(HubError::new(ErrorCode::Conflict, format!("instance '{tenant}/{name}' has snapshots ({}), which a move --via backup cannot carry: move it without --via, or delete them first (`hangar snapshot delete`)", names.join(", "))));
        }
        self.check_move_target(&inst, &req.to).await?;
        if req.via == MoveVia::Backup && self.store.get_backup_settings(&inst.tenant).await?.target.is_none() {
            return Err(HubError::new(
                ErrorCode::Conflict,
                format!("backup target: tenant '{tenant}' has none, and a move --via backup goes through it: set one with `hangar tenant update {tenant} --backup-target NAME`"),
            ));
        }
        let src = self.store.get_host(&source).await?.ok_or_else(|| HubError::new(ErrorCode::Unavailable, format!("host '{source}' is not known")))?;
        if src.endpoint.is_none() {
            return Err(HubError::new(ErrorCode::Unavailable, format!("host '{source}' has not reported an endpoint: the source must be reachable to send the volume")));
        }
        let now = OffsetDateTime::now_utc();
        let m = MoveRecord {
            id: uuid::Uuid::new_v4().to_string(),
            instance: inst.id,
            tenant: inst.tenant.clone(),
            name: inst.name.clone(),
            source,
            target: req.to.clone(),
            previous_state: inst.state,
            phase: MovePhase::Sending,
            via: req.via,
            bytes: 0,
            downtime_ms: None,
            keep_source_until: (req.keep_source_secs > 0).then(|| now + time::Duration::seconds(req.keep_source_secs as i64)),
            error: None,
            created_at: now,
            finished_at: None,
        };
        self.store.insert_move(&m).await.map_err(|e| match e {
            hangar_store::StoreError::AlreadyExists(_) => HubError::new(ErrorCode::Conflict, format!("instance '{tenant}/{name}' is being moved already")),
            e => e.into(),
        })?;
        // Held for the whole move: the pool reconciler neither replaces nor moves it.
        let mut held = inst.clone();
        held.held_until = Some(now + HOLD);
        self.store.update_instance_if(&held, InstanceVersion::of(&inst), None).await?;
        self.event(&p.actor(), Some(&inst.tenant), format!("instance/{}/{}", inst.tenant, inst.name), "instance.move", "accepted", Some(format!("from host {} to {} via {}", m.source, m.target, m.via))).await;
        self.move_spawn(m.clone());
        Ok(status(&m))
    }

    /// 4xx naming why `to` cannot take `inst`: unknown, not ready (draining, stale...),
    /// no endpoint, or no room.
    async fn check_move_target(&self, inst: &Instance, to: &Name) -> HubResult<HostRecord> {
        let host = self.place(&inst.spec, Some(to)).await.map_err(|e| HubError::new(e.0.code, format!("to: {}", e.0.message)))?;
        if host.endpoint.is_none() {
            return Err(HubError::new(ErrorCode::Unavailable, format!("to: host '{to}' has not reported an endpoint yet")));
        }
        Ok(host)
    }

    /// The instance's newest move.
    pub async fn move_status(&self, p: &Principal, tenant: &Name, name: &Name) -> HubResult<MoveStatus> {
        let inst = self.instance_get(p, tenant, name).await?;
        let m = self.store.latest_move(inst.id).await?.ok_or_else(|| HubError::not_found(format!("instance '{tenant}/{name}' was never moved")))?;
        Ok(status(&m))
    }

    /// Runs every open move no runner of this process follows (after a restart: from
    /// its recorded phase), and every open evacuation (`evacuate`). Called by the monitor.
    pub async fn move_resume(self: &Arc<Self>) -> HubResult<usize> {
        let open = self.store.list_open_moves().await?;
        let n = open.len();
        for m in open {
            self.move_spawn(m);
        }
        Ok(n + self.evacuate_resume().await?)
    }

    fn move_spawn(self: &Arc<Self>, m: MoveRecord) {
        {
            let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
            if !running.get_or_insert_with(HashSet::new).insert(m.id.clone()) {
                return;
            }
        }
        let hub = self.clone();
        tokio::spawn(async move {
            let id = m.id.clone();
            if let Err(e) = hub.move_run(m).await {
                tracing::warn!(r#move = %id, error = %e.0.message, "move interrupted; the monitor resumes it");
            }
            RUNNING.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashSet::new).remove(&id);
        });
    }

    async fn host_named(&self, name: &Name) -> HubResult<HostRecord> {
        self.store.get_host(name).await?.ok_or_else(|| HubError::new(ErrorCode::Unavailable, format!("host '{name}' is not known")))
    }

    async fn agent_of(&self, host: &HostRecord) -> HubResult<hangar_client::AgentClient> {
        let endpoint = host.endpoint.clone().ok_or_else(|| HubError::new(ErrorCode::Unavailable, format!("host '{}' has no endpoint", host.name)))?;
        self.agent_client(host, &endpoint).await
    }

    /// Records the step from `m.phase` to `to`; a lost step (another runner moved it)
    /// ends this runner.
    async fn step(&self, m: &mut MoveRecord, to: MovePhase, error: Option<&str>) -> HubResult<()> {
        if !self.store.set_move_phase(&m.id, m.phase, to, m.bytes, m.downtime_ms, error).await? {
            return Err(HubError::new(ErrorCode::Conflict, format!("move {} left phase {} elsewhere", m.id, m.phase)));
        }
        tracing::info!(r#move = %m.id, from = %m.phase, to = %to, "move phase");
        m.phase = to;
        m.error = error.map(str::to_string);
        Ok(())
    }

    /// One move from its recorded phase to its end. Errors before the switch roll it
    /// back; after it (and while rolling back) they end this runner, and the monitor
    /// starts another from the recorded phase.
    async fn move_run(self: &Arc<Self>, mut m: MoveRecord) -> HubResult<()> {
        let mut stopped_at: Option<Instant> = None;
        loop {
            crate::failpoint::hit(&format!("move-hub-{}", m.phase));
            let r = match m.phase {
                MovePhase::Sending if m.via == MoveVia::Backup => self.move_backup(&mut m).await.map(|_| MovePhase::Stopping),
                MovePhase::Sending => self.move_send_first(&mut m).await.map(|_| MovePhase::Stopping),
                MovePhase::Stopping => {
                    stopped_at = Some(Instant::now());
                    self.move_stop(&m).await.map(|_| MovePhase::Final)
                }
                MovePhase::Final if m.via == MoveVia::Backup => self.move_backup(&mut m).await.map(|_| MovePhase::Staged),
                MovePhase::Final => self.move_send_final(&mut m).await.map(|_| MovePhase::Staged),
                MovePhase::Staged => match self.move_switch(&mut m).await {
                    Ok(()) => continue,
                    Err(e) => Err(e),
                },
                MovePhase::Switched => {
                    self.move_wait_started(&m).await?;
                    m.downtime_ms = stopped_at.map(|t| t.elapsed().as_millis() as u64);
                    self.step(&mut m, MovePhase::Started, None).await?;
                    continue;
                }
                MovePhase::Started => {
                    // The route gate opened: peers now lead to the target (again after a
                    // restart, so no host keeps the old ones).
                    self.move_routes_changed(&m.tenant).await?;
                    self.move_cleanup(&m).await?;
                    self.step(&mut m, MovePhase::Done, None).await?;
                    self.move_unhold(&m).await;
                    let down = m.downtime_ms.map(|d| format!(", {d} ms down")).unwrap_or_default();
                    self.event("hub", Some(&m.tenant), format!("instance/{}/{}", m.tenant, m.name), "instance.move", "ok", Some(format!("now on host {}{down}", m.target))).await;
                    return Ok(());
                }
                MovePhase::RollingBack => {
                    self.move_rollback(&m).await?;
                    let why = m.error.clone();
                    self.step(&mut m, MovePhase::RolledBack, why.as_deref()).await?;
                    self.move_unhold(&m).await;
                    self.event("hub", Some(&m.tenant), format!("instance/{}/{}", m.tenant, m.name), "instance.move", "error", Some(format!("rolled back, still on host {}: {}", m.source, why.unwrap_or_default()))).await;
                    return Ok(());
                }
                MovePhase::Done | MovePhase::RolledBack => return Ok(()),
            };
            match r {
                Ok(next) => self.step(&mut m, next, None).await?,
                Err(e) if e.0.code == ErrorCode::Conflict && e.0.message.contains("elsewhere") => return Err(e),
                Err(e) => {
                    tracing::warn!(r#move = %m.id, phase = %m.phase, error = %e.0.message, "move failed; rolling back");
                    let why = format!("{}: {}", m.phase, e.0.message);
                    self.step(&mut m, MovePhase::RollingBack, Some(&why)).await?;
                }
            }
        }
    }

    /// The user's snapshots of the moved instance (they go with it), oldest first, as
    /// the source holds them now (a schedule's newest may not be in the store yet).
    async fn move_user_snapshots(&self, m: &MoveRecord) -> HubResult<Vec<String>> {
        let src = self.host_named(&m.source).await?;
        let mut held = self.agent_of(&src).await?.snapshot_list(&m.instance.sandbox_id()).await?;
        held.sort_by(|a, b| (a.created_unix, &a.name).cmp(&(b.created_unix, &b.name)));
        Ok(held.into_iter().map(|s| s.name.to_string()).filter(|n| !n.starts_with(hangar_types::snapshots::MOVE_PREFIX)).collect())
    }

    /// The first pass, while the instance runs: the user's snapshots, each from the one
    /// before (the first in full), then `mv-1` from the newest of them.
    async fn move_send_first(&self, m: &mut MoveRecord) -> HubResult<()> {
        let mut parent: Option<String> = None;
        for s in self.move_user_snapshots(m).await? {
            self.move_send(m, &s, parent.as_deref()).await?;
            parent = Some(s);
        }
        self.move_send(m, FIRST, parent.as_deref()).await
    }

    /// The final pass, the instance stopped: snapshots taken since the first pass (a
    /// schedule's), then `mv-2`, each from `mv-1`.
    async fn move_send_final(&self, m: &mut MoveRecord) -> HubResult<()> {
        for s in self.move_user_snapshots(m).await? {
            self.move_send(m, &s, Some(FIRST)).await?;
        }
        self.move_send(m, LAST, Some(FIRST)).await
    }

    /// A snapshot `name` of the volume on the source, sent to the target (from
    /// `parent` when the target holds it staged, in full otherwise): the move's own
    /// (`mv-`, taken here) or one of the user's. Already staged: nothing to do.
    async fn move_send(&self, m: &mut MoveRecord, name: &str, parent: Option<&str>) -> HubResult<()> {
        let (src, dst) = (self.host_named(&m.source).await?, self.host_named(&m.target).await?);
        let (sa, da) = (self.agent_of(&src).await?, self.agent_of(&dst).await?);
        let sandbox = m.instance.sandbox_id();
        let volume = VolumeId::from(&sandbox);
        if parent.is_none() {
            // A fresh start: nothing of an earlier attempt stays on the target (a volume
            // left by one would be taken for this one's by the adopt).
            da.transfer_discard(&volume).await?;
            self.move_remove_copy(&dst.name, m, OBSERVE_MAX).await?;
        }
        let staged = da.transfer_staged(&volume).await?;
        if staged.contains(&snap(name)) {
            return Ok(());
        }
        // Snapshots an interrupted attempt took may hold less than now: taken again.
        // The final one, once taken, is current: the instance stays stopped until the switch.
        if name == FIRST {
            sa.moved_snapshots_remove(&sandbox).await?;
        }
        if name.starts_with(hangar_types::snapshots::MOVE_PREFIX) {
            match sa.snapshot_create(&sandbox, &hangar_types::snapshots::AgentSnapshotCreate { name: snap(name) }).await {
                Err(hangar_client::ClientError::Api(e)) if name == LAST && matches!(e.code, ErrorCode::AlreadyExists | ErrorCode::Conflict) => {}
                r => r.map(drop)?,
            }
        }
        crate::failpoint::hit(&format!("move-hub-snapshot-{name}"));
        let parent = parent.map(snap).filter(|p| staged.contains(p));
        // The pass's bytes reach the move's record about every second while it runs (so
        // `instance move --wait` shows a rate, not 0 until the pass ends), through the
        // phase write with the phase unchanged: bytes only go up there, and a runner
        // that lost the move writes nothing.
        let base = m.bytes;
        let live = std::sync::atomic::AtomicU64::new(base);
        let mut on_progress = |s: &hangar_types::transfer::TransferStatus| live.store(base + s.bytes, std::sync::atomic::Ordering::Relaxed);
        let pass = self.transfer(&src, &dst, TransferObject::VolumeSnapshot { volume, snapshot: snap(name), parent }, &mut on_progress);
        tokio::pin!(pass);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut written = base;
        let st = loop {
            tokio::select! {
                r = &mut pass => break r?,
                _ = tick.tick() => {
                    let now = live.load(std::sync::atomic::Ordering::Relaxed);
                    if now > written {
                        self.store.set_move_phase(&m.id, m.phase, m.phase, now, None, None).await?;
                        written = now;
                    }
                }
            }
        };
        m.bytes = live.load(std::sync::atomic::Ordering::Relaxed).max(base + st.bytes);
        Ok(())
    }

    /// A backup of the volume on the source (the tenant's target), while the instance
    /// runs (`sending`) or once it is stopped (`final`: only what changed is uploaded).
    async fn move_backup(self: &Arc<Self>, m: &mut MoveRecord) -> HubResult<()> {
        let inst = self.store.get_instance_by_id(m.instance).await?.ok_or_else(|| HubError::not_found(format!("instance {} is gone", m.instance)))?;
        let op = self.backup_start("hub", inst, false).await?;
        self.move_job(op.id).await?;
        crate::failpoint::hit(&format!("move-hub-backed-up-{}", m.phase));
        let b = self.store.list_backups_of(m.instance).await?.pop().ok_or_else(|| HubError::internal("the backup succeeded but is not recorded"))?;
        m.bytes += b.added_bytes;
        Ok(())
    }

    /// The target's volume made afresh (anything an earlier attempt left goes first)
    /// and filled from the instance's newest backup, the one taken once it was stopped.
    async fn move_restore_target(self: &Arc<Self>, m: &MoveRecord, dst: &HostRecord, da: &hangar_client::AgentClient, inst: &Instance) -> HubResult<()> {
        let sandbox = m.instance.sandbox_id();
        let backup = self.store.list_backups_of(m.instance).await?.pop().ok_or_else(|| HubError::new(ErrorCode::Conflict, "no backup of the instance to restore on the target"))?;
        self.move_remove_copy(&dst.name, m, OBSERVE_MAX).await?;
        da.moved_volume_create(&sandbox, inst.spec.disk_mib).await?;
        let op = self.backup_restore_on(da.clone(), inst, &backup).await?;
        self.move_job(op.id).await
    }

    /// Until the backup operation `id` ends; an error unless it succeeded.
    async fn move_job(&self, id: OperationId) -> HubResult<()> {
        loop {
            let op = self.store.get_operation(id).await?.ok_or_else(|| HubError::internal(format!("operation {id} is gone")))?;
            match op.status {
                OperationStatus::Running => tokio::time::sleep(Duration::from_millis(300)).await,
                OperationStatus::Succeeded => return Ok(()),
                _ => return Err(HubError::new(ErrorCode::Unavailable, format!("{} ({id}) {}: {}", op.kind, op.status.as_str(), op.error.unwrap_or_default()))),
            }
        }
    }

    /// Stops a running instance on the source through the state machine, until its
    /// host reports it stopped.
    async fn move_stop(self: &Arc<Self>, m: &MoveRecord) -> HubResult<()> {
        let inst = self.store.get_instance_by_id(m.instance).await?.ok_or_else(|| HubError::not_found(format!("instance {} is gone", m.instance)))?;
        if runs(m.previous_state) && !matches!(inst.state, InstanceState::Stopping | InstanceState::Stopped) {
            let ten = self.store.get_tenant(&m.tenant).await?.ok_or_else(|| HubError::not_found(format!("tenant '{}' is gone", m.tenant)))?;
            let _tg = self.lock(LockKey::Tenant(ten.name.clone())).await;
            self.request_locked("hub", &ten, m.instance, Transition::Stop, Some(OffsetDateTime::now_utc() + HOLD)).await?;
        }
        if runs(m.previous_state) {
            self.wait_observed(m, &m.source, ObservedState::Stopped).await?;
        }
        Ok(())
    }

    /// Until the instance, placed on `host`, is reported `want` at its generation.
    async fn wait_observed(&self, m: &MoveRecord, host: &Name, want: ObservedState) -> HubResult<()> {
        let deadline = Instant::now() + OBSERVE_MAX;
        loop {
            let inst = self.store.get_instance_by_id(m.instance).await?.ok_or_else(|| HubError::not_found(format!("instance {} is gone", m.instance)))?;
            if inst.host.as_ref() == Some(host) && inst.observed == want && !matches!(inst.state, InstanceState::Starting | InstanceState::Stopping) {
                return Ok(());
            }
            if inst.state == InstanceState::Failed {
                return Err(HubError::new(ErrorCode::Unavailable, format!("instance failed on host {host}: {}", inst.error.unwrap_or_default())));
            }
            if Instant::now() > deadline {
                return Err(HubError::new(ErrorCode::Timeout, format!("host {host} did not report the instance {want} within {} s", OBSERVE_MAX.as_secs())));
            }
            // Often: the instance is down for as long as this waits (a store read each).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Checks the target holds the final snapshot, makes the volume from it, and
    /// switches the placement in one transaction.
    async fn move_switch(self: &Arc<Self>, m: &mut MoveRecord) -> HubResult<()> {
        let dst = self.host_named(&m.target).await?;
        let da = self.agent_of(&dst).await?;
        let sandbox = m.instance.sandbox_id();
        let volume = VolumeId::from(&sandbox);
        let inst = self.store.get_instance_by_id(m.instance).await?.ok_or_else(|| HubError::not_found(format!("instance {} is gone", m.instance)))?;
        match m.via {
            MoveVia::Transfer => {
                let staged = da.transfer_staged(&volume).await?;
                if staged.contains(&snap(LAST)) {
                    da.transfer_adopt(&volume, &StagedAdopt { snapshot: snap(LAST), size_mib: inst.spec.disk_mib }).await?;
                }
                // Adopted now or by an earlier attempt (adopt drops the staging): the
                // target's volume must exist before it is told to run the instance.
                crate::failpoint::hit("move-hub-adopted");
            }
            MoveVia::Backup => {
                self.move_restore_target(m, &dst, &da, &inst).await?;
                crate::failpoint::hit("move-hub-restored");
            }
        }
        let (to_state, _) = restored(m.previous_state);
        let _ig = self.lock(LockKey::Instance(inst.id)).await;
        let read = self.store.get_instance_by_id(m.instance).await?.ok_or_else(|| HubError::not_found(format!("instance {} is gone", m.instance)))?;
        let mut next = read.clone();
        next.host = Some(m.target.clone());
        next.state = to_state;
        next.desired = to_state.desired();
        next.observed = ObservedState::Unknown;
        next.error = None;
        next.generation = self.store.next_generation().await?;
        next.updated_at = OffsetDateTime::now_utc();
        let bumped = self.store.switch_move(&m.id, &next, InstanceVersion::of(&read), &m.source).await.map_err(|e| match e {
            hangar_store::StoreError::Conflict(w) if w.starts_with("move ") => HubError::new(ErrorCode::Conflict, format!("move {} left phase staged elsewhere", m.id)),
            e => e.into(),
        })?;
        m.phase = MovePhase::Switched;
        for b in bumped {
            self.host_bumped(Some(b));
        }
        Ok(())
    }

    /// Until the target reports the instance in its previous state. A start that
    /// failed on the target is left to the user (the target owns it now).
    async fn move_wait_started(&self, m: &MoveRecord) -> HubResult<()> {
        let (_, want) = restored(m.previous_state);
        self.wait_observed(m, &m.target, want).await
    }

    /// Removes the source's copy (after `keep_source_until`), once the source applied
    /// a document without the instance.
    async fn move_cleanup(&self, m: &MoveRecord) -> HubResult<()> {
        if let Some(until) = m.keep_source_until {
            let wait = until - OffsetDateTime::now_utc();
            if wait.is_positive() {
                tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
            }
        }
        self.move_remove_copy(&m.source, m, CLEANUP_MAX).await
    }

    /// Removes what `host` holds of the moved instance once its agent has applied the
    /// host's current document without it (an agent that just restarted has not yet:
    /// retried for up to `max`).
    async fn move_remove_copy(&self, host: &Name, m: &MoveRecord, max: Duration) -> HubResult<()> {
        let sandbox = m.instance.sandbox_id();
        let deadline = Instant::now() + max;
        loop {
            let h = self.host_named(host).await?;
            let r = async { self.agent_of(&h).await?.moved_remove(&sandbox, h.desired_generation.get()).await.map_err(HubError::from) }.await;
            match r {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// Undoes a move that failed before the switch: the instance is asked back into
    /// its previous state on the source, the target drops what it got, and the move's
    /// snapshots go. Every step must succeed (an agent that is down fails it: the
    /// monitor retries), so nothing of the move is left behind.
    async fn move_rollback(self: &Arc<Self>, m: &MoveRecord) -> HubResult<()> {
        self.move_restore_source(m).await?;
        let sandbox = m.instance.sandbox_id();
        let volume = VolumeId::from(&sandbox);
        let dst = self.host_named(&m.target).await?;
        let da = self.agent_of(&dst).await?;
        da.transfer_discard(&volume).await?;
        // A volume adopted before the switch failed: the target's document never held
        // the instance, so its agent removes it.
        da.moved_remove(&sandbox, dst.desired_generation.get()).await?;
        let sa = self.agent_of(&self.host_named(&m.source).await?).await?;
        sa.moved_snapshots_remove(&sandbox).await?;
        Ok(())
    }

    /// The instance back in its previous state on the source, if the move stopped it
    /// (a stop its host never confirmed included: the hub decides, the host follows).
    async fn move_restore_source(&self, m: &MoveRecord) -> HubResult<()> {
        if !runs(m.previous_state) {
            return Ok(());
        }
        let _ig = self.lock(LockKey::Instance(m.instance)).await;
        let Some(read) = self.store.get_instance_by_id(m.instance).await? else { return Ok(()) };
        if read.host.as_ref() != Some(&m.source) || !matches!(read.state, InstanceState::Stopping | InstanceState::Stopped) {
            return Ok(());
        }
        let (to, _) = restored(m.previous_state);
        let mut next = read.clone();
        next.state = to;
        next.desired = to.desired();
        next.observed = ObservedState::Unknown;
        next.error = None;
        next.generation = self.store.next_generation().await?;
        next.updated_at = OffsetDateTime::now_utc();
        let bumped = self.store.update_instance_if(&next, InstanceVersion::of(&read), Some(&m.source)).await?;
        self.host_bumped(bumped);
        Ok(())
    }

    /// The route gate: instances whose placement switched to a move's target that has
    /// not reported them there yet, and the host routes still lead to (the source).
    /// Overlay peers follow these until the move reaches `started`.
    pub(crate) async fn move_routes(&self) -> HubResult<std::collections::HashMap<hangar_types::InstanceId, Name>> {
        Ok(self.store.list_open_moves().await?.into_iter().filter(|m| m.phase == MovePhase::Switched).map(|m| (m.instance, m.source)).collect())
    }

    /// Every host with an instance of the tenant gets a new document: the route gate
    /// opened (or closed), so their overlay peers changed.
    async fn move_routes_changed(&self, tenant: &Name) -> HubResult<()> {
        let all = self.store.list_instances(&hangar_store::InstanceFilter::tenant(tenant)).await?;
        let mut hosts: Vec<&Name> = all.iter().filter_map(|i| i.host.as_ref()).collect();
        hosts.sort();
        hosts.dedup();
        for h in hosts {
            self.bump_host(h).await?;
        }
        Ok(())
    }

    /// Lets the pool reconciler see the instance again.
    async fn move_unhold(&self, m: &MoveRecord) {
        self.set_held(m.instance, None).await;
    }
}
