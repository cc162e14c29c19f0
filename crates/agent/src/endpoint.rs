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
use crate::drivers::runtime::{logs, LogLimits};
use hangar_types::api::{ExecRequest, ExecResult, InstanceLogs, InstanceStats, LogsQuery, LOGS_MAX_BYTES};
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
    /// Where the workload logs rotate (the runtime's limits), to read them back.
    pub logs: LogLimits,
    pub exec: ExecLimits,
    /// Execs running now, per sandbox (entries at zero are removed).
    pub execs_running: Arc<std::sync::Mutex<std::collections::HashMap<SandboxId, usize>>>,
    /// Snapshots of this host's volumes (the hub's calls, the schedules, the reports).
    pub snapshots: crate::snapshots::Snapshots,
}

/// An exec's timeout when it names none.
const DEFAULT_EXEC_TIMEOUT_SECS: u64 = 60;

/// What one exec may ask of this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecLimits {
    /// The largest `timeout_secs` accepted.
    pub timeout_max_secs: u64,
    /// Execs running at once in one sandbox; one more is a 429.
    pub max_concurrent: usize,
}

impl Default for ExecLimits {
    fn default() -> Self {
        ExecLimits { timeout_max_secs: 3600, max_concurrent: 8 }
    }
}

/// One running exec of a sandbox, counted until dropped.
struct ExecSlot {
    running: Arc<std::sync::Mutex<std::collections::HashMap<SandboxId, usize>>>,
    id: SandboxId,
}

impl ExecSlot {
    fn take(st: &EndpointState, id: &SandboxId) -> Result<ExecSlot, EpError> {
        let mut running = st.execs_running.lock().unwrap_or_else(|p| p.into_inner());
        let n = running.entry(id.clone()).or_insert(0);
        if *n >= st.exec.max_concurrent {
            return Err(EpError(ApiError::new(
                ErrorCode::TooManyRequests,
                format!("{} commands already run in this instance, the most this host allows at once: retry when one has finished", st.exec.max_concurrent),
            )));
        }
        *n += 1;
        Ok(ExecSlot { running: st.execs_running.clone(), id: id.clone() })
    }
}

impl Drop for ExecSlot {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.id);
            }
        }
    }
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

pub(crate) struct EpError(pub(crate) ApiError);

impl IntoResponse for EpError {
    fn into_response(self) -> Response {
        (StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(self.0)).into_response()
    }
}

impl From<RuntimeError> for EpError {
    fn from(e: RuntimeError) -> Self {
        let code = match e {
            RuntimeError::NotFound(_) => ErrorCode::NotFound,
            RuntimeError::ExecTimeout { .. } => ErrorCode::Timeout,
            _ => ErrorCode::Internal,
        };
        EpError(ApiError::new(code, e.to_string()))
    }
}

/// `?wait_ms=N` on a status route: a long-poll, answered as soon as the work ends or
/// after N ms (at most 10 s) with its progress, so the hub sees a finished job or
/// transfer at once without polling often. Without it, at once.
#[derive(serde::Deserialize)]
pub(crate) struct LongPoll {
    wait_ms: Option<u64>,
}

impl LongPoll {
    const MAX: std::time::Duration = std::time::Duration::from_secs(10);

    /// Until `done` is set, or the wait asked for is over.
    pub(crate) async fn until(&self, mut done: tokio::sync::watch::Receiver<bool>) {
        if let Some(ms) = self.wait_ms {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(ms).min(Self::MAX), done.wait_for(|d| *d)).await;
        }
    }
}

pub(crate) fn check_peer(st: &EndpointState, peer: &PeerInfo) -> Result<(), EpError> {
    if peer.fingerprint.as_deref() == Some(st.hub_fingerprint.as_str()) {
        return Ok(());
    }
    Err(EpError(ApiError::new(ErrorCode::Unauthenticated, "only the hub may call this endpoint")))
}

pub(crate) fn sandbox_id(id: String) -> Result<SandboxId, EpError> {
    id.parse().map_err(|_| EpError(ApiError::invalid(format!("'{id}' is not a sandbox id"))))
}

pub fn router(st: EndpointState) -> Router {
    Router::new()
        .route("/v1/sandboxes/{id}/exec", post(exec))
        .route("/v1/sandboxes/{id}/logs", get(logs))
        .route("/v1/sandboxes/{id}/stats", get(stats))
        .route("/v1/network", get(network))
        .route("/v1/status", get(status))
        .merge(crate::snapshots::routes())
        .merge(crate::copy::routes(st.volumes.clone()))
        .merge(crate::moves::routes())
        .route("/v1/sandboxes/{id}/session", post(session))
        .with_state(st.clone())
        .merge(crate::backups::router(st.volumes, st.hub_fingerprint))
}

async fn exec(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>, Json(mut req): Json<ExecRequest>) -> Result<Json<ExecResult>, EpError> {
    check_peer(&st, &peer)?;
    let id = sandbox_id(id)?;
    // Checked here too: this host's limits are its own, whatever the caller checked.
    req.validate(st.exec.timeout_max_secs).map_err(|m| EpError(ApiError::invalid(m)))?;
    req.timeout_secs = Some(req.timeout_secs.unwrap_or(DEFAULT_EXEC_TIMEOUT_SECS).min(st.exec.timeout_max_secs));
    let _slot = ExecSlot::take(&st, &id)?;
    Ok(Json(st.runtime.exec(&id, &req).await?))
}

/// The last lines (`tail`), or those after a cursor (`after`, waiting up to `wait`
/// seconds for some), read from the end of the log and its rotated files: never the
/// whole log, never more than [`LOGS_MAX_BYTES`].
async fn logs(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>, Query(q): Query<LogsQuery>) -> Result<Json<InstanceLogs>, EpError> {
    check_peer(&st, &peer)?;
    let id = sandbox_id(id)?;
    let log = st.paths.log_file(&id);
    let files = st.logs.files;
    let Some(cursor) = q.after.clone() else {
        let n = q.tail_lines() as usize;
        let read = tokio::task::spawn_blocking(move || logs::tail(&log, n, files, LOGS_MAX_BYTES)).await;
        return match read {
            Ok(Ok(l)) => Ok(Json(l)),
            Ok(Err(e)) => Err(EpError(ApiError::internal(format!("cannot read the log of {id}: {e}")))),
            Err(e) => Err(EpError(ApiError::internal(e.to_string()))),
        };
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(q.wait_secs());
    loop {
        let (log, at) = (log.clone(), cursor.clone());
        let read = tokio::task::spawn_blocking(move || logs::after(&log, &at, files, LOGS_MAX_BYTES)).await.map_err(|e| EpError(ApiError::internal(e.to_string())))?;
        let got = read.map_err(|m| EpError(ApiError::invalid(m)))?;
        if !got.lines.is_empty() || got.cursor.as_deref() != Some(cursor.as_str()) || tokio::time::Instant::now() >= deadline {
            return Ok(Json(got));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
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

/// An interactive session (`crate::session`): checked like an exec (the hub's
/// certificate, the request, the sandbox's exec slot, held for the session's life),
/// then `101 Switching Protocols` and frames on the same connection.
async fn session(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>, mut req: axum::extract::Request) -> Result<Response, EpError> {
    use hangar_types::session::{SessionRequest, UPGRADE_PROTOCOL};
    check_peer(&st, &peer)?;
    let id = sandbox_id(id)?;
    let asked = req.headers().get(axum::http::header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    // An upgrade exists only in HTTP/1.1 (HTTP/2 would need extended CONNECT).
    if !asked.eq_ignore_ascii_case(UPGRADE_PROTOCOL) || req.version() != axum::http::Version::HTTP_11 {
        return Err(EpError(ApiError::invalid(format!("a session needs the header 'Upgrade: {UPGRADE_PROTOCOL}' over HTTP/1.1"))));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.map_err(|e| EpError(ApiError::invalid(format!("request body: {e}"))))?;
    let sreq: SessionRequest = serde_json::from_slice(&body).map_err(|e| EpError(ApiError::invalid(format!("request body: {e}"))))?;
    sreq.validate().map_err(|m| EpError(ApiError::invalid(m)))?;
    let slot = ExecSlot::take(&st, &id)?;
    let process = st.runtime.session(&id, &sreq).await?;
    tokio::spawn(async move {
        let _slot = slot;
        match upgrade.await {
            Ok(u) => crate::session::run(hyper_util::rt::TokioIo::new(u), process).await,
            Err(e) => {
                tracing::debug!(error = %e, "session upgrade failed");
                process.files.kill_process();
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(axum::http::header::CONNECTION, "upgrade")
        .header(axum::http::header::UPGRADE, UPGRADE_PROTOCOL)
        .body(axum::body::Body::empty())
        .map_err(|e| EpError(ApiError::internal(e.to_string())))
}
