//! The source's side of a move: once the hub has placed an instance on another host,
//! `DELETE /v1/moved/{sandbox}?generation=G` removes what is left of it here (volume,
//! its snapshots, logs). Refused (409) unless this agent has applied a desired document
//! of generation `G` or later that does not hold the instance and no sandbox of it
//! runs: an instance still placed here is never removed, whatever the caller says.
//!
//! The target's side of a move through a backup (`--via backup`):
//! `POST /v1/moved/{sandbox}/volume?size_mib=N` makes the (empty) volume the hub's
//! restore job then fills; a move that rolls back removes it with the `DELETE` above.

use crate::endpoint::{check_peer, sandbox_id, EndpointState, EpError};
use axum::extract::{Path, Query, State};
use axum::routing::{delete, post};
use axum::{Extension, Json, Router};
use hangar_tls::serve::PeerInfo;
use hangar_types::{ApiError, ErrorCode, VolumeId};

#[derive(serde::Deserialize)]
struct After {
    generation: i64,
}

pub fn routes() -> Router<EndpointState> {
    Router::new()
        .route("/v1/moved/{id}", delete(remove))
        .route("/v1/moved/{id}/snapshots", delete(remove_snapshots))
        .route("/v1/moved/{id}/volume", post(make_volume))
}

#[derive(serde::Deserialize)]
struct Size {
    size_mib: u64,
}

/// Makes the sandbox's volume (empty, limited to `size_mib`) if it is not here yet.
async fn make_volume(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>, Query(q): Query<Size>) -> Result<Json<serde_json::Value>, EpError> {
    check_peer(&st, &peer)?;
    let volume = VolumeId::from(&sandbox_id(id)?);
    if q.size_mib == 0 {
        return Err(EpError(ApiError::new(ErrorCode::InvalidArgument, "size_mib: must be at least 1")));
    }
    st.volumes.ensure(&volume, q.size_mib).await.map_err(|e| EpError(ApiError::internal(format!("cannot make volume {volume}: {e}"))))?;
    Ok(Json(serde_json::json!({ "volume": volume.to_string() })))
}

/// Removes the snapshots a move took of the sandbox's volume (`mv-`): what a move that
/// rolled back leaves on its source, and what a new attempt takes again.
async fn remove_snapshots(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, EpError> {
    check_peer(&st, &peer)?;
    let volume = VolumeId::from(&sandbox_id(id)?);
    let all = st.volumes.list_snapshots(&volume).await.map_err(|e| EpError(ApiError::internal(e.to_string())))?;
    let mut removed = vec![];
    for s in all.into_iter().filter(|s| s.as_str().starts_with(hangar_types::snapshots::MOVE_PREFIX)) {
        st.volumes.delete_snapshot(&volume, &s).await.map_err(|e| EpError(ApiError::internal(format!("cannot remove snapshot {s}: {e}"))))?;
        removed.push(s.to_string());
    }
    Ok(Json(serde_json::json!({ "removed": removed })))
}

async fn remove(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>, Query(q): Query<After>) -> Result<Json<serde_json::Value>, EpError> {
    check_peer(&st, &peer)?;
    let sid = sandbox_id(id)?;
    let conflict = |m: String| EpError(ApiError::new(ErrorCode::Conflict, m));
    {
        let lp = st.last_pass.lock().unwrap_or_else(|e| e.into_inner());
        // The caller names the host's current generation: an agent that has not applied
        // it (just restarted: none yet) cannot tell what it holds. A host never bumped
        // (generation 0) was never given an instance.
        if lp.generation.get() < q.generation {
            return Err(conflict(format!("this host has applied generation {} of its desired state, not yet {}: retry", lp.generation.get(), q.generation)));
        }
        if lp.instances.iter().any(|i| i.id.sandbox_id() == sid) {
            return Err(conflict(format!("instance {sid} is placed on this host: it is not removed")));
        }
    }
    let listed = st.runtime.list().await.map_err(EpError::from)?;
    if listed.iter().any(|(s, _)| *s == sid) {
        return Err(conflict(format!("a sandbox of {sid} still runs here: retry once it is stopped")));
    }
    st.volumes.delete(&VolumeId::from(&sid)).await.map_err(|e| EpError(ApiError::internal(format!("cannot remove the volume of {sid}: {e}"))))?;
    crate::drivers::runtime::logs::remove_logs(&st.paths.log_file(&sid));
    Ok(Json(serde_json::json!({ "removed": sid.to_string() })))
}
