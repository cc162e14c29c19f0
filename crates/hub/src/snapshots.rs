//! Snapshots of instance volumes: create, list, delete and restore as calls to the
//! instance's agent, recorded only once the host has done them (a failed call changes
//! no recorded state), each leaving an operation and an event; schedules kept in the
//! store and sent in the host's desired document; and the host's reports, which are
//! the truth about which snapshots exist (scheduled ones appear, pruned ones go, sizes
//! move), applied by [`plan_rows`].
//!
//! Quota: a tenant's snapshots count against its disk quota by their exclusive bytes
//! (`quota::add_snapshots` in [`Hub::usage`]), and a new one needs room
//! (`quota::Demand::snapshot`).

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::{Hub, LockKey};
use hangar_store::{HostRecord, SnapshotFilter, SnapshotRecord};
use hangar_types::api::{Instance, OperationStatus, Snapshot, SnapshotCreate, SnapshotRestore, SnapshotRestored, SnapshotScheduleInfo, SnapshotScheduleSet};
use hangar_types::protocol::{ObservedInstance, ObservedSnapshot};
use hangar_types::quota::{self, Demand};
use hangar_types::snapshots::{self as rules, AgentSnapshotCreate, AgentSnapshotRestore, SnapshotSchedule};
use hangar_types::{ErrorCode, InstanceId, InstanceState, Name, SnapshotId, Transition};
use std::collections::HashMap;
use std::time::Duration;
use time::OffsetDateTime;

/// How long a report may lag behind a create or delete the hub made: within it, a
/// report without a new snapshot does not remove its row, and one that still has a
/// deleted snapshot does not bring it back.
pub const REPORT_GRACE: Duration = Duration::from_secs(30);
/// How long a forced restore waits for the instance to stop.
const STOP_WAIT: Duration = Duration::from_secs(120);

fn doc(inst: &Instance, r: &SnapshotRecord) -> Snapshot {
    Snapshot {
        instance: format!("{}/{}", inst.tenant, inst.name),
        name: r.name.clone(),
        created_at: r.created_at,
        referenced_bytes: r.referenced_bytes,
        exclusive_bytes: r.exclusive_bytes,
        scheduled: r.scheduled,
    }
}

/// What a report changes in the rows of one instance.
#[derive(Clone, Debug, PartialEq)]
pub enum RowChange {
    /// The host holds one the hub has no row for (a scheduled one, or one whose row
    /// was lost).
    Insert(SnapshotRecord),
    Sizes { name: Name, referenced: Option<u64>, exclusive: Option<u64> },
    /// Gone from the host (pruned, or deleted by hand on it), or a tombstone past its grace.
    Remove(Name),
}

/// The changes that make an instance's rows (live and tombstones) what its host holds,
/// at `now`. Rows younger than `grace` stay although the report lacks them, and
/// tombstones keep a reported snapshot out for as long; names that are no [`Name`] or
/// belong to backups are ignored. Pure.
pub fn plan_rows(instance: InstanceId, rows: &[SnapshotRecord], held: &[ObservedSnapshot], now: OffsetDateTime, grace: Duration) -> Vec<RowChange> {
    let mut out = vec![];
    let old = |t: OffsetDateTime| now - t >= grace;
    // Removals first: a list read between two of these writes never shows more
    // snapshots than the host holds (a schedule's new one before its pruned one goes).
    for r in rows.iter().filter(|r| !held.iter().any(|h| h.name.as_str() == r.name.as_str())) {
        let since = r.deleted_at.unwrap_or(r.created_at);
        if old(since) {
            out.push(RowChange::Remove(r.name.clone()));
        }
    }
    for h in held.iter().filter(|h| rules::is_listed(h.name.as_str())) {
        let Ok(name) = h.name.as_str().parse::<Name>() else { continue };
        match rows.iter().find(|r| r.name == name) {
            None => out.push(RowChange::Insert(record(instance, name, h, now))),
            Some(r) if r.deleted_at.is_some_and(old) => out.push(RowChange::Insert(record(instance, name, h, now))),
            Some(r) if r.deleted_at.is_none() && (r.referenced_bytes, r.exclusive_bytes) != (h.referenced_bytes, h.exclusive_bytes) => {
                out.push(RowChange::Sizes { name, referenced: h.referenced_bytes, exclusive: h.exclusive_bytes })
            }
            Some(_) => {}
        }
    }
    out
}

fn record(instance: InstanceId, name: Name, h: &ObservedSnapshot, now: OffsetDateTime) -> SnapshotRecord {
    let created_at = h.created_unix.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()).unwrap_or(now);
    SnapshotRecord {
        instance_id: instance,
        scheduled: rules::is_scheduled(name.as_str()),
        name,
        created_at,
        referenced_bytes: h.referenced_bytes,
        exclusive_bytes: h.exclusive_bytes,
        deleted_at: None,
    }
}

impl Hub {
    /// The exclusive bytes of a tenant's snapshots, for its disk quota.
    pub(crate) async fn snapshot_bytes(&self, tenant: &Name) -> HubResult<u64> {
        let rows = self.store.list_snapshots(&SnapshotFilter { tenant: Some(tenant.clone()), ..Default::default() }).await?;
        Ok(rows.iter().filter_map(|r| r.exclusive_bytes).sum())
    }

    async fn snapshot_row(&self, inst: &Instance, name: &str) -> HubResult<SnapshotRecord> {
        let missing = || HubError::not_found(format!("snapshot '{name}' of instance '{}/{}' not found: see `hangar snapshot list {}/{}`", inst.tenant, inst.name, inst.tenant, inst.name));
        let name: Name = name.parse().map_err(|_| missing())?;
        let rows = self.store.list_snapshots(&SnapshotFilter { instance: Some(inst.id), ..Default::default() }).await?;
        rows.into_iter().find(|r| r.name == name).ok_or_else(missing)
    }

    /// An operation that is over as soon as it is recorded (snapshot calls are done
    /// when the host answers), for the instance's history.
    async fn snapshot_operation(&self, kind: &str, inst: &Instance, error: Option<&str>) -> HubResult<()> {
        let op = self.operation_new(kind, inst, inst.state).await?;
        let status = if error.is_some() { OperationStatus::Failed } else { OperationStatus::Succeeded };
        self.store.finish_operation(op.id, status, error).await?;
        self.coord.notifier.operations_changed();
        Ok(())
    }

    /// Records how a call to the host ended (operation and event) and passes its result on.
    async fn snapshot_done<T>(&self, p: &Principal, inst: &Instance, action: &str, what: &str, r: HubResult<T>) -> HubResult<T> {
        let object = format!("instance/{}/{}", inst.tenant, inst.name);
        match &r {
            Ok(_) => {
                self.snapshot_operation(action, inst, None).await?;
                self.event(&p.actor(), Some(&inst.tenant), object, action, "ok", Some(what.to_string())).await;
            }
            Err(e) => {
                let msg = format!("{what}: {}", e.0.message);
                self.snapshot_operation(action, inst, Some(&msg)).await?;
                self.event(&p.actor(), Some(&inst.tenant), object, action, "error", Some(msg)).await;
            }
        }
        r
    }

    /// Whether `host` may take a scheduled snapshot of instance `id` now: the same quota
    /// check as `snapshot_create`. A refusal leaves an event on the instance (the host
    /// asks once per schedule slot), so a tenant sees why its schedule skipped.
    pub async fn snapshot_admission(&self, host: &HostRecord, id: InstanceId) -> HubResult<()> {
        let inst = match self.store.get_instance_by_id(id).await? {
            Some(i) if i.host.as_ref() == Some(&host.name) => i,
            _ => return Err(HubError::not_found(format!("instance {id} is not on host '{}'", host.name))),
        };
        let t = self.tenant_get(&Principal::Admin, &inst.tenant).await?;
        let usage = self.usage(&t.name, None).await?;
        if let Err(e) = quota::check(&t.quotas, &usage, &Demand::snapshot()) {
            let msg = format!("scheduled snapshot skipped: {}", e.snapshot_message(t.name.as_str()));
            self.event("hub", Some(&t.name), format!("instance/{}/{}", inst.tenant, inst.name), "snapshot.schedule", "skipped", Some(msg.clone())).await;
            return Err(HubError::new(ErrorCode::QuotaExceeded, msg));
        }
        Ok(())
    }

    pub async fn snapshot_create(&self, p: &Principal, tenant: &Name, instance: &Name, req: SnapshotCreate) -> HubResult<Snapshot> {
        let t = self.tenant_get(p, tenant).await?;
        let now = OffsetDateTime::now_utc();
        let name = match &req.name {
            Some(n) => rules::check_user_name(n).map_err(HubError::invalid)?,
            None => rules::manual_name(now.unix_timestamp()).parse().map_err(|e: hangar_types::NameError| HubError::internal(e.to_string()))?,
        };
        let _tg = self.lock(LockKey::Tenant(t.name.clone())).await;
        let inst = self.instance_get(p, tenant, instance).await?;
        if matches!(inst.state, InstanceState::Deleted) {
            return Err(HubError::new(ErrorCode::IllegalTransition, format!("instance '{}/{}' is being deleted", inst.tenant, inst.name)));
        }
        // A move sends the snapshots that exist when it passes: one made while it runs
        // could miss the target and go with the source's copy.
        if let Some(m) = self.store.latest_move(inst.id).await?.filter(|m| !m.phase.is_final()) {
            return Err(HubError::new(ErrorCode::Conflict, format!("instance '{}/{}' is being moved (move {}, {}): take the snapshot once it ended", inst.tenant, inst.name, m.id, m.phase)));
        }
        if self.snapshot_row(&inst, name.as_str()).await.is_ok() {
            return Err(HubError::new(ErrorCode::AlreadyExists, format!("snapshot '{name}' of instance '{}/{}' already exists: choose another --name", inst.tenant, inst.name)));
        }
        let usage = self.usage(&t.name, None).await?;
        quota::check(&t.quotas, &usage, &Demand::snapshot()).map_err(|e| HubError::new(ErrorCode::QuotaExceeded, e.snapshot_message(t.name.as_str())))?;
        let what = format!("snapshot {name}");
        let r = async {
            let (agent, sandbox) = self.agent_for(&inst).await?;
            let id: SnapshotId = name.as_str().parse().map_err(|e: hangar_types::IdError| HubError::internal(e.to_string()))?;
            Ok(agent.snapshot_create(&sandbox, &AgentSnapshotCreate { name: id }).await?)
        }
        .await;
        let held = self.snapshot_done(p, &inst, "snapshot.create", &what, r).await?;
        let mut row = record(inst.id, name, &held, now);
        row.created_at = now;
        match self.store.insert_snapshot(&row).await {
            // A report already brought it in: it is the same snapshot.
            Err(hangar_store::StoreError::AlreadyExists(_)) => {}
            r => r?,
        }
        Ok(doc(&inst, &row))
    }

    pub async fn snapshot_list(&self, p: &Principal, tenant: &Name, instance: &Name) -> HubResult<Vec<Snapshot>> {
        let inst = self.instance_get(p, tenant, instance).await?;
        let mut rows = self.store.list_snapshots(&SnapshotFilter { instance: Some(inst.id), ..Default::default() }).await?;
        rows.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        Ok(rows.iter().map(|r| doc(&inst, r)).collect())
    }

    pub async fn snapshot_delete(&self, p: &Principal, tenant: &Name, instance: &Name, name: &str) -> HubResult<Snapshot> {
        let t = self.tenant_get(p, tenant).await?;
        let _tg = self.lock(LockKey::Tenant(t.name.clone())).await;
        let inst = self.instance_get(p, tenant, instance).await?;
        let row = self.snapshot_row(&inst, name).await?;
        let r = async {
            let (agent, sandbox) = self.agent_for(&inst).await?;
            let id: SnapshotId = row.name.as_str().parse().map_err(|e: hangar_types::IdError| HubError::internal(e.to_string()))?;
            match agent.snapshot_delete(&sandbox, &id).await {
                // Already gone from the host: the row was all that was left.
                Err(hangar_client::ClientError::Api(e)) if e.code == ErrorCode::NotFound => Ok(()),
                r => r.map(|_| ()).map_err(HubError::from),
            }
        }
        .await;
        self.snapshot_done(p, &inst, "snapshot.delete", &format!("snapshot {}", row.name), r).await?;
        self.store.tombstone_snapshot(inst.id, &row.name, OffsetDateTime::now_utc()).await?;
        Ok(doc(&inst, &row))
    }

    /// Replaces the instance's volume by the snapshot. A running instance is refused
    /// unless `force`: then it is stopped (waiting until its host confirms), restored
    /// and started again; if the restore fails it is started again all the same.
    pub async fn snapshot_restore(&self, p: &Principal, tenant: &Name, instance: &Name, name: &str, req: SnapshotRestore) -> HubResult<SnapshotRestored> {
        let t = self.tenant_get(p, tenant).await?;
        let _tg = self.lock(LockKey::Tenant(t.name.clone())).await;
        let inst = self.instance_get(p, tenant, instance).await?;
        let row = self.snapshot_row(&inst, name).await?;
        let stopped = matches!(inst.state, InstanceState::Created | InstanceState::Stopped);
        if !stopped && !req.force {
            return Err(HubError::new(
                ErrorCode::IllegalTransition,
                format!("instance '{}/{}' is {}: stop it first, or give --force to stop it, restore and start it again", inst.tenant, inst.name, inst.state),
            ));
        }
        if !stopped {
            let op = self.request_locked(&p.actor(), &t, inst.id, Transition::Stop, None).await?;
            let done = self.operation_wait(p, op.id, STOP_WAIT).await?;
            if done.status != OperationStatus::Succeeded {
                return Err(HubError::new(
                    ErrorCode::Unavailable,
                    format!("instance '{}/{}' did not stop for the restore ({}): nothing was restored", inst.tenant, inst.name, done.error.unwrap_or_else(|| format!("{:?}", done.status).to_lowercase())),
                ));
            }
        }
        let inst = self.instance_get(p, tenant, instance).await?;
        let r = async {
            let (agent, sandbox) = self.agent_for(&inst).await?;
            let id: SnapshotId = row.name.as_str().parse().map_err(|e: hangar_types::IdError| HubError::internal(e.to_string()))?;
            Ok(agent.snapshot_restore(&sandbox, &id, &AgentSnapshotRestore { disk_mib: inst.spec.disk_mib }).await?)
        }
        .await;
        let what = format!("restored from snapshot {}{}", row.name, if stopped { "" } else { " (stopped for it, started again)" });
        let r = self.snapshot_done(p, &inst, "snapshot.restore", &what, r).await;
        let operation = match stopped {
            true => None,
            false => Some(self.request_locked(&p.actor(), &t, inst.id, Transition::Start, None).await?),
        };
        r?;
        Ok(SnapshotRestored { snapshot: doc(&inst, &row), restarted: !stopped, operation })
    }

    pub async fn snapshot_schedule_get(&self, p: &Principal, tenant: &Name, instance: &Name) -> HubResult<SnapshotScheduleInfo> {
        let inst = self.instance_get(p, tenant, instance).await?;
        let schedule = self.store.list_snapshot_schedules(inst.host.as_ref()).await?.into_iter().find(|(i, _)| *i == inst.id).map(|(_, s)| s.to_string());
        Ok(SnapshotScheduleInfo { instance: format!("{}/{}", inst.tenant, inst.name), schedule })
    }

    /// Sets or clears the schedule and tells the instance's host (a new desired document).
    pub async fn snapshot_schedule_set(&self, p: &Principal, tenant: &Name, instance: &Name, req: SnapshotScheduleSet) -> HubResult<SnapshotScheduleInfo> {
        let schedule = SnapshotSchedule::parse(&req.schedule).map_err(HubError::invalid)?;
        let inst = self.instance_get(p, tenant, instance).await?;
        let _ig = self.lock(LockKey::Instance(inst.id)).await;
        self.store.set_snapshot_schedule(inst.id, schedule).await?;
        if let Some(h) = &inst.host {
            self.bump_host(h).await?;
        }
        let text = schedule.map(|s| s.to_string());
        self.event(&p.actor(), Some(&inst.tenant), format!("instance/{}/{}", inst.tenant, inst.name), "snapshot.schedule", "ok", Some(text.clone().unwrap_or_else(|| "off".into()))).await;
        Ok(SnapshotScheduleInfo { instance: format!("{}/{}", inst.tenant, inst.name), schedule: text })
    }

    /// Applies the snapshots a host reports for its instances (those it placed there
    /// and still has); writes only what changed.
    pub(crate) async fn observe_snapshots(&self, host: &HostRecord, placed: &HashMap<InstanceId, Instance>, observed: &[ObservedInstance]) -> HubResult<()> {
        let reported: Vec<(&ObservedInstance, &Vec<ObservedSnapshot>)> =
            observed.iter().filter(|o| placed.get(&o.id).is_some_and(|i| i.state != InstanceState::Deleted)).filter_map(|o| Some((o, o.snapshots.as_ref()?))).collect();
        if reported.is_empty() {
            return Ok(());
        }
        let rows = self.store.list_snapshots(&SnapshotFilter { host: Some(host.name.clone()), tombstones: true, ..Default::default() }).await?;
        let now = OffsetDateTime::now_utc();
        for (o, held) in reported {
            let mine: Vec<SnapshotRecord> = rows.iter().filter(|r| r.instance_id == o.id).cloned().collect();
            for change in plan_rows(o.id, &mine, held, now, REPORT_GRACE) {
                let r = match &change {
                    RowChange::Insert(rec) => {
                        let _ = self.store.remove_snapshot(o.id, &rec.name).await?;
                        self.store.insert_snapshot(rec).await
                    }
                    RowChange::Sizes { name, referenced, exclusive } => self.store.set_snapshot_sizes(o.id, name, *referenced, *exclusive).await.map(|_| ()),
                    RowChange::Remove(name) => self.store.remove_snapshot(o.id, name).await.map(|_| ()),
                };
                match r {
                    // A create of the hub's own landed in between: it is the same snapshot.
                    Err(hangar_store::StoreError::AlreadyExists(_)) => {}
                    r => r?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + s).unwrap()
    }
    fn row(name: &str, created: i64, excl: Option<u64>, deleted: Option<i64>) -> SnapshotRecord {
        SnapshotRecord {
            instance_id: InstanceId::new(),
            name: name.parse().unwrap(),
            created_at: at(created),
            referenced_bytes: Some(10),
            exclusive_bytes: excl,
            scheduled: name.starts_with("auto-"),
            deleted_at: deleted.map(at),
        }
    }
    fn held(name: &str, excl: Option<u64>) -> ObservedSnapshot {
        ObservedSnapshot { name: name.parse().unwrap(), created_unix: Some(at(5).unix_timestamp()), referenced_bytes: Some(10), exclusive_bytes: excl }
    }
    const GRACE: Duration = Duration::from_secs(30);

    fn plan(rows: &[SnapshotRecord], held: &[ObservedSnapshot], now: i64) -> Vec<String> {
        plan_rows(InstanceId::new(), rows, held, at(now), GRACE)
            .into_iter()
            .map(|c| match c {
                RowChange::Insert(r) => format!("insert {} scheduled={} at={}", r.name, r.scheduled, (r.created_at - at(0)).whole_seconds()),
                RowChange::Sizes { name, exclusive, .. } => format!("sizes {name} {exclusive:?}"),
                RowChange::Remove(n) => format!("remove {n}"),
            })
            .collect()
    }

    #[test]
    fn reports_bring_rows_to_what_the_host_holds() {
        // (what, rows, held, now, changes)
        type Case = (&'static str, Vec<SnapshotRecord>, Vec<ObservedSnapshot>, i64, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            ("settled: nothing to write", vec![row("a", 0, Some(1), None)], vec![held("a", Some(1))], 100, vec![]),
            ("a scheduled one appears", vec![], vec![held("auto-20261130-120000", Some(0))], 100, vec!["insert auto-20261130-120000 scheduled=true at=5"]),
            ("sizes move", vec![row("a", 0, Some(1), None)], vec![held("a", Some(7))], 100, vec!["sizes a Some(7)"]),
            ("pruned on the host", vec![row("auto-20261130-120000", 0, None, None)], vec![], 100, vec!["remove auto-20261130-120000"]),
            (
                "a schedule's turn: the pruned one goes before the new one comes",
                vec![row("auto-20261130-120000", 0, None, None), row("auto-20261130-120100", 0, None, None)],
                vec![held("auto-20261130-120100", None), held("auto-20261130-120200", None)],
                100,
                vec!["remove auto-20261130-120000", "insert auto-20261130-120200 scheduled=true at=5"],
            ),
            ("a report older than a fresh create keeps its row", vec![row("a", 90, None, None)], vec![], 100, vec![]),
            ("a report older than a delete does not revive it", vec![row("a", 0, None, Some(90))], vec![held("a", None)], 100, vec![]),
            ("still there long after a delete: the host is right", vec![row("a", 0, None, Some(10))], vec![held("a", None)], 100, vec!["insert a scheduled=false at=5"]),
            ("old tombstones go", vec![row("a", 0, None, Some(10)), row("b", 0, None, Some(90))], vec![], 100, vec!["remove a"]),
            ("backups' own and odd names are not recorded", vec![], vec![held("bk-1", None), held("9lives", None)], 100, vec![]),
        ];
        for (what, rows, h, now, want) in cases {
            assert_eq!(plan(&rows, &h, now), want, "{what}");
        }
    }
}
