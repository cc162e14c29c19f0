//! Snapshots of this host's volumes: what the hub asks for over the endpoint (create,
//! list, delete, restore a stopped sandbox's volume), the schedules of the desired
//! document (taken and pruned here, so they run while the hub is away), and the list
//! every report carries, so the hub's view stays true across restarts and kills.
//!
//! One lock serializes every change (hub calls and the schedule), and the pool is
//! listed at most every [`REFRESH`] unless something changed: a listing is two
//! commands for the whole pool, not one per snapshot. Backups' own snapshots (`bk-`)
//! are neither listed nor pruned here.

use crate::drivers::runtime::{Runtime, SandboxStatus};
use crate::drivers::volume::{SnapshotInfo, VolumeDriver, VolumeError};
use crate::endpoint::{check_peer, sandbox_id, EndpointState, EpError};
use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use hangar_tls::serve::PeerInfo;
use hangar_types::protocol::{DesiredDoc, ObservedSnapshot};
use hangar_types::snapshots::{self as rules, AgentSnapshotCreate, AgentSnapshotRestore};
use hangar_types::{ApiError, DesiredState, ErrorCode, SnapshotId, VolumeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How old a listing may be before a report lists the pool again (sizes move as
/// volumes are written; names change only through this module, which relists).
const REFRESH: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Snapshots {
    volumes: Arc<dyn VolumeDriver>,
    runtime: Arc<dyn Runtime>,
    held: Arc<tokio::sync::Mutex<Held>>,
}

#[derive(Default)]
struct Held {
    /// The last listing and when it was made; none: list again.
    listed: Option<(Instant, Vec<SnapshotInfo>)>,
    /// When the hub last refused a scheduled snapshot of an instance (its tenant at the
    /// disk quota): the schedule skips that slot instead of asking on every pass.
    refused: HashMap<hangar_types::InstanceId, i64>,
}

impl Held {
    async fn infos(&mut self, volumes: &dyn VolumeDriver) -> Result<&[SnapshotInfo], VolumeError> {
        if self.listed.as_ref().is_none_or(|(at, _)| at.elapsed() >= REFRESH) {
            self.listed = Some((Instant::now(), volumes.snapshot_infos().await?));
        }
        Ok(self.listed.as_ref().map(|(_, v)| v.as_slice()).unwrap_or_default())
    }

    async fn of(&mut self, volumes: &dyn VolumeDriver, volume: &VolumeId) -> Result<Vec<SnapshotInfo>, VolumeError> {
        Ok(self.infos(volumes).await?.iter().filter(|i| &i.volume == volume).cloned().collect())
    }
}

fn observed(i: &SnapshotInfo) -> ObservedSnapshot {
    ObservedSnapshot { name: i.id.clone(), created_unix: i.created, referenced_bytes: i.referenced_bytes, exclusive_bytes: i.exclusive_bytes }
}

/// Why a snapshot request was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot '{0}' already exists")]
    Exists(String),
    #[error("no snapshot '{0}'")]
    NoSnapshot(String),
    #[error("sandbox {0} is running: stop it before a restore")]
    Running(String),
    #[error("'{0}' belongs to backups: hangar snapshots leave it alone")]
    Reserved(String),
    #[error(transparent)]
    Volume(#[from] VolumeError),
}

impl Snapshots {
    pub fn new(volumes: Arc<dyn VolumeDriver>, runtime: Arc<dyn Runtime>) -> Snapshots {
        Snapshots { volumes, runtime, held: Default::default() }
    }

    /// Every volume's snapshots (backups' excepted), for the report; none if the pool
    /// cannot be listed now (the hub then keeps what it knows).
    pub async fn observed(&self) -> Option<HashMap<VolumeId, Vec<ObservedSnapshot>>> {
        let mut held = self.held.lock().await;
        match held.infos(self.volumes.as_ref()).await {
            Ok(infos) => {
                let mut by: HashMap<VolumeId, Vec<ObservedSnapshot>> = HashMap::new();
                for i in infos.iter().filter(|i| rules::is_listed(i.id.as_str())) {
                    by.entry(i.volume.clone()).or_default().push(observed(i));
                }
                Some(by)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list snapshots");
                None
            }
        }
    }

    pub async fn list(&self, volume: &VolumeId) -> Result<Vec<ObservedSnapshot>, SnapshotError> {
        let mut held = self.held.lock().await;
        Ok(held.of(self.volumes.as_ref(), volume).await?.iter().filter(|i| rules::is_listed(i.id.as_str())).map(observed).collect())
    }

    pub async fn create(&self, volume: &VolumeId, name: &SnapshotId) -> Result<ObservedSnapshot, SnapshotError> {
        let mut held = self.held.lock().await;
        self.create_locked(&mut held, volume, name).await
    }

    async fn create_locked(&self, held: &mut Held, volume: &VolumeId, name: &SnapshotId) -> Result<ObservedSnapshot, SnapshotError> {
        if self.volumes.list_snapshots(volume).await?.contains(name) {
            return Err(SnapshotError::Exists(name.to_string()));
        }
        self.volumes.snapshot(volume, name).await?;
        held.listed = None;
        let found = held.of(self.volumes.as_ref(), volume).await?.into_iter().find(|i| &i.id == name);
        Ok(found.as_ref().map(observed).unwrap_or(ObservedSnapshot { name: name.clone(), created_unix: None, referenced_bytes: None, exclusive_bytes: None }))
    }

    pub async fn delete(&self, volume: &VolumeId, name: &SnapshotId) -> Result<(), SnapshotError> {
        if !rules::is_listed(name.as_str()) {
            return Err(SnapshotError::Reserved(name.to_string()));
        }
        let mut held = self.held.lock().await;
        if !self.volumes.list_snapshots(volume).await?.contains(name) {
            return Err(SnapshotError::NoSnapshot(name.to_string()));
        }
        self.volumes.delete_snapshot(volume, name).await?;
        held.listed = None;
        Ok(())
    }

    /// Replaces the volume of a sandbox that is not running by the snapshot `name`.
    pub async fn restore(&self, sandbox: &hangar_types::SandboxId, name: &SnapshotId, disk_mib: u64) -> Result<ObservedSnapshot, SnapshotError> {
        let volume = VolumeId::from(sandbox);
        let mut held = self.held.lock().await;
        let status = self.runtime.status(sandbox).await.map_err(|e| VolumeError::Io { context: "sandbox status".into(), source: std::io::Error::other(e.to_string()) })?;
        if !matches!(status, None | Some(SandboxStatus::Stopped)) {
            return Err(SnapshotError::Running(sandbox.to_string()));
        }
        let Some(snap) = held.of(self.volumes.as_ref(), &volume).await?.into_iter().find(|i| &i.id == name) else {
            // The listing may be a few seconds old: ask the driver itself.
            if !self.volumes.list_snapshots(&volume).await?.contains(name) {
                return Err(SnapshotError::NoSnapshot(name.to_string()));
            }
            self.volumes.restore_snapshot(&volume, name, disk_mib).await?;
            held.listed = None;
            return Ok(ObservedSnapshot { name: name.clone(), created_unix: None, referenced_bytes: None, exclusive_bytes: None });
        };
        self.volumes.restore_snapshot(&volume, name, disk_mib).await?;
        held.listed = None;
        Ok(observed(&snap))
    }

    /// Takes the scheduled snapshots that are due at `now` (Unix seconds) and prunes
    /// beyond each schedule's `keep`. Failures are logged and retried on the next pass.
    /// Each snapshot is first admitted by the hub (the tenant's disk quota, which only
    /// the hub knows); a refused slot is skipped (the hub records the event). A hub
    /// that cannot be reached does not stop schedules: the snapshot is taken, and the
    /// quota is checked again at the next slot.
    pub async fn schedule_pass(&self, hub: &hangar_client::HostClient, doc: &DesiredDoc, now: i64) {
        let scheduled: Vec<_> = doc
            .instances
            .iter()
            .filter(|d| d.desired != DesiredState::Deleted)
            .filter_map(|d| Some((d, d.snapshot_schedule?)))
            .collect();
        if scheduled.is_empty() {
            return;
        }
        let mut held = self.held.lock().await;
        for (d, schedule) in scheduled {
            let volume = VolumeId::from(&d.id.sandbox_id());
            if !self.volumes.exists(&volume).await.unwrap_or(false) {
                continue;
            }
            let r: Result<(), SnapshotError> = async {
                let mut names: Vec<String> = held.of(self.volumes.as_ref(), &volume).await?.iter().map(|i| i.id.to_string()).collect();
                let newest = names.iter().filter_map(|n| rules::scheduled_time(n)).max();
                let last_slot = newest.max(held.refused.get(&d.id).copied());
                let admitted = if schedule.due(last_slot, now) {
                    match hub.snapshot_admission(d.id).await {
                        Ok(_) => true,
                        Err(hangar_client::ClientError::Api(e)) => {
                            tracing::info!(instance = %d.id, reason = %e.message, "scheduled snapshot skipped");
                            held.refused.insert(d.id, now);
                            false
                        }
                        Err(e) => {
                            tracing::warn!(instance = %d.id, error = %e, "the hub cannot admit a scheduled snapshot now; taking it");
                            true
                        }
                    }
                } else {
                    false
                };
                if admitted {
                    let name: SnapshotId = rules::scheduled_name(now).parse().map_err(|e: hangar_types::IdError| VolumeError::NotFound(e.to_string()))?;
                    match self.create_locked(&mut held, &volume, &name).await {
                        Ok(_) | Err(SnapshotError::Exists(_)) => names.push(name.to_string()),
                        Err(e) => return Err(e),
                    }
                    tracing::info!(instance = %d.id, snapshot = %name, "scheduled snapshot taken");
                }
                for old in schedule.prune(names.iter().map(String::as_str)) {
                    let Ok(old) = old.parse::<SnapshotId>() else { continue };
                    self.volumes.delete_snapshot(&volume, &old).await?;
                    held.listed = None;
                    tracing::info!(instance = %d.id, snapshot = %old, "scheduled snapshot pruned");
                }
                Ok(())
            }
            .await;
            if let Err(e) = r {
                tracing::warn!(instance = %d.id, error = %e, "snapshot schedule");
            }
        }
    }
}

impl From<SnapshotError> for EpError {
    fn from(e: SnapshotError) -> Self {
        let code = match &e {
            SnapshotError::Exists(_) => ErrorCode::AlreadyExists,
            SnapshotError::NoSnapshot(_) | SnapshotError::Volume(VolumeError::NotFound(_)) => ErrorCode::NotFound,
            SnapshotError::Running(_) => ErrorCode::IllegalTransition,
            SnapshotError::Reserved(_) => ErrorCode::InvalidArgument,
            SnapshotError::Volume(_) => ErrorCode::Internal,
        };
        EpError(ApiError::new(code, e.to_string()))
    }
}

fn snapshot_id(s: &str) -> Result<SnapshotId, EpError> {
    s.parse().map_err(|e: hangar_types::IdError| EpError(ApiError::invalid(e.to_string())))
}

/// The endpoint's snapshot routes (the hub's client certificate only).
pub fn routes() -> Router<EndpointState> {
    Router::new()
        .route("/v1/sandboxes/{id}/snapshots", get(list).post(create))
        .route("/v1/sandboxes/{id}/snapshots/{name}", delete(remove))
        .route("/v1/sandboxes/{id}/snapshots/{name}/restore", post(restore))
}

async fn list(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>) -> Result<Json<Vec<ObservedSnapshot>>, EpError> {
    check_peer(&st, &peer)?;
    let volume = VolumeId::from(&sandbox_id(id)?);
    Ok(Json(st.snapshots.list(&volume).await?))
}

async fn create(
    State(st): State<EndpointState>,
    Extension(peer): Extension<PeerInfo>,
    Path(id): Path<String>,
    Json(req): Json<AgentSnapshotCreate>,
) -> Result<Json<ObservedSnapshot>, EpError> {
    check_peer(&st, &peer)?;
    let volume = VolumeId::from(&sandbox_id(id)?);
    Ok(Json(st.snapshots.create(&volume, &req.name).await?))
}

async fn remove(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>, Path((id, name)): Path<(String, String)>) -> Result<Json<serde_json::Value>, EpError> {
    check_peer(&st, &peer)?;
    let volume = VolumeId::from(&sandbox_id(id)?);
    st.snapshots.delete(&volume, &snapshot_id(&name)?).await?;
    Ok(Json(serde_json::json!({ "deleted": name })))
}

async fn restore(
    State(st): State<EndpointState>,
    Extension(peer): Extension<PeerInfo>,
    Path((id, name)): Path<(String, String)>,
    Json(req): Json<AgentSnapshotRestore>,
) -> Result<Json<ObservedSnapshot>, EpError> {
    check_peer(&st, &peer)?;
    let sandbox = sandbox_id(id)?;
    Ok(Json(st.snapshots.restore(&sandbox, &snapshot_id(&name)?, req.disk_mib).await?))
}
