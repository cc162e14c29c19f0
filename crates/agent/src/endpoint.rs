//! The agent's mTLS endpoint: exec, logs and stats of this host's sandboxes, for the hub
//! only (its client certificate is pinned by fingerprint at join).

use crate::drivers::network::NetworkDriver;
use crate::drivers::runtime::{Runtime, RuntimeError};
use crate::drivers::volume::VolumeDriver;
use crate::host::meminfo_mib;
use crate::identity::AgentPaths;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hangar_tls::serve::PeerInfo;
use hangar_types::api::{ExecRequest, ExecResult, InstanceLogs, InstanceStats};
use hangar_types::{ApiError, ErrorCode, SandboxId, VolumeId};
use std::sync::Arc;

#[derive(Clone)]
pub struct EndpointState {
    pub paths: AgentPaths,
    pub runtime: Arc<dyn Runtime>,
    pub volumes: Arc<dyn VolumeDriver>,
    pub network: Arc<dyn NetworkDriver>,
    pub hub_fingerprint: String,
    /// What the last convergence pass found; the daemon updates it after every pass.
    pub last_pass: Arc<std::sync::Mutex<LastPass>>,
}

/// The daemon's latest view of its host, served by `GET /v1/status`.
#[derive(Clone, Debug, Default)]
pub struct LastPass {
    pub host: String,
    pub capacity: hangar_types::api::Capacity,
    pub drivers: Vec<String>,
    pub generation: hangar_types::Generation,
    pub instances: Vec<hangar_types::api::NodeInstance>,
}

struct EpError(ApiError);

impl IntoResponse for EpError {
    fn into_response(self) -> Response {
        (StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(self.0)).into_response()
    }
}

impl From<RuntimeError> for EpError {
    fn from(e: RuntimeError) -> Self {
        let code = if matches!(e, RuntimeError::NotFound(_)) { ErrorCode::NotFound } else { ErrorCode::Internal };
        EpError(ApiError::new(code, e.to_string()))
    }
}

fn check_peer(st: &EndpointState, peer: &PeerInfo) -> Result<(), EpError> {
    if peer.fingerprint.as_deref() == Some(st.hub_fingerprint.as_str()) {
        return Ok(());
    }
    Err(EpError(ApiError::new(ErrorCode::Unauthenticated, "only the hub may call this endpoint")))
}

fn sandbox_id(id: String) -> Result<SandboxId, EpError> {
    id.parse().map_err(|_| EpError(ApiError::invalid(format!("'{id}' is not a sandbox id"))))
}

pub fn router(st: EndpointState) -> Router {
    Router::new()
        .route("/v1/sandboxes/{id}/exec", post(exec))
        .route("/v1/sandboxes/{id}/logs", get(logs))
        .route("/v1/sandboxes/{id}/stats", get(stats))
        .route("/v1/network", get(network))
        .route("/v1/status", get(status))
        .with_state(st)
}

async fn exec(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>, Json(req): Json<ExecRequest>) -> Result<Json<ExecResult>, EpError> {
    check_peer(&st, &peer)?;
    let id = sandbox_id(id)?;
    Ok(Json(st.runtime.exec(&id, &req).await?))
}

#[derive(serde::Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
}

async fn logs(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>, Query(q): Query<LogsQuery>) -> Result<Json<InstanceLogs>, EpError> {
    check_peer(&st, &peer)?;
    let id = sandbox_id(id)?;
    let n = q.lines.unwrap_or(100);
    let text = tokio::fs::read(st.paths.log_file(&id)).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    let lines = all[all.len().saturating_sub(n)..].iter().map(|s| s.to_string()).collect();
    Ok(Json(InstanceLogs { lines }))
}

async fn stats(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>) -> Result<Json<InstanceStats>, EpError> {
    check_peer(&st, &peer)?;
    let id = sandbox_id(id)?;
    let mut s = st.runtime.stats(&id).await?;
    s.disk_used_bytes = st.volumes.usage_bytes(&VolumeId::from(&id)).await.ok().flatten();
    Ok(Json(s))
}

async fn network(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>) -> Result<Json<hangar_types::net::NetReport>, EpError> {
    check_peer(&st, &peer)?;
    st.network.inspect().await.map(Json).map_err(|e| EpError(ApiError::internal(e.to_string())))
}

fn proc_first_line(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default().lines().next().unwrap_or_default().trim().to_string()
}

async fn status(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>) -> Result<Json<hangar_types::api::NodeStatus>, EpError> {
    check_peer(&st, &peer)?;
    let last = st.last_pass.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut instances = last.instances;
    for i in instances.iter_mut().filter(|i| matches!(i.observed, hangar_types::ObservedState::Running | hangar_types::ObservedState::Warm)) {
        if let Ok(s) = st.runtime.stats(&i.id.sandbox_id()).await {
            i.memory_bytes = Some(s.memory_bytes);
            i.pids = Some(s.pids);
        }
    }
    let load: Vec<f64> = proc_first_line("/proc/loadavg").split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
    let uptime = proc_first_line("/proc/uptime").split_whitespace().next().and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    Ok(Json(hangar_types::api::NodeStatus {
        host: last.host,
        hostname: proc_first_line("/proc/sys/kernel/hostname"),
        kernel: proc_first_line("/proc/sys/kernel/osrelease"),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: uptime as u64,
        load: [load.first().copied().unwrap_or(0.0), load.get(1).copied().unwrap_or(0.0), load.get(2).copied().unwrap_or(0.0)],
        mem_total_mib: meminfo_mib("MemTotal:"),
        mem_available_mib: meminfo_mib("MemAvailable:"),
        capacity: last.capacity,
        drivers: last.drivers,
        generation: last.generation,
        instances,
    }))
}
