//! /v1/tenants/{tenant}/instances/{name}/move, /v1/hosts/{name}/evacuate

use super::{tenant_and, ApiJson, ApiRoutes, AppState};
use crate::{parse_name, HubResult, Principal};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hangar_types::moves::{Evacuation, HostEvacuate, InstanceMove, MoveStatus};
use hangar_types::ApiError;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(move_start, move_status)).routes(routes!(evacuate_start, evacuation_status))
}

/// Moves the instance to another host (admin only): its volume is sent while it runs,
/// it is stopped, the difference is sent, the placement switches in one transaction
/// (same id, name, address, volume, secrets and tokens) and it starts on the target in
/// the state it had; the source's copy is removed once the target reports it. With
/// `via: backup` the volume goes through the tenant's backup target instead (a backup
/// on the source, a restore on the target), for hosts that cannot reach each other.
/// Answers at once; `GET` on the same path follows the phases.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/instances/{name}/move", request_body = InstanceMove, security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 202, body = MoveStatus, description = "the move started"),
        (status = 400, body = ApiError, description = "`to` names the host the instance is on or no host, or `keep_source_secs` is over 604800"),
        (status = 403, body = ApiError, description = "not an admin token"),
        (status = 404, body = ApiError, description = "no such tenant or instance"),
        (status = 409, body = ApiError, description = "the instance is being moved already, is not settled (starting, stopping, failed, deleted), or has snapshots; or host `to` is draining, stale or offline or has no room for the instance (no_capacity); or `via` is `backup` and the tenant has no backup target"),
        (status = 503, body = ApiError, description = "the source or `to` has no endpoint (unavailable)")))]
async fn move_start(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, ApiJson(req): ApiJson<InstanceMove>) -> HubResult<(StatusCode, Json<MoveStatus>)> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok((StatusCode::ACCEPTED, Json(hub.move_start(&p, &tenant, &name, req).await?)))
}

/// The instance's newest move: phase, bytes sent, downtime once known.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances/{name}/move", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = MoveStatus), (status = 404, body = ApiError, description = "no such tenant or instance, or it was never moved")))]
async fn move_status(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>) -> HubResult<Json<MoveStatus>> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(Json(hub.move_status(&p, &tenant, &name).await?))
}

/// Moves every instance off the host (admin only): drains it, then moves its instances
/// (each with the instance move, in the state it has) to the hosts the placement picks,
/// at most `parallel` at once. Answers at once with the operation that tracks it;
/// `GET` on the same path shows each instance: waiting, moving (its phase), moved to
/// which host, or failed and why.
#[utoipa::path(post, path = "/v1/hosts/{name}/evacuate", request_body = HostEvacuate, security(("token" = [])),
    params(("name" = String, Path)),
    responses((status = 202, body = Evacuation, description = "the host is draining and the evacuation started"),
        (status = 400, body = ApiError, description = "`parallel` is not between 1 and 16"),
        (status = 403, body = ApiError, description = "not an admin token"),
        (status = 404, body = ApiError, description = "no such host"),
        (status = 409, body = ApiError, description = "the host is the only ready one (no other can take its instances), is being evacuated already, or is not ready or draining (stale, offline, stopped)"),
        (status = 503, body = ApiError, description = "the host has not reported an endpoint (unavailable)")))]
async fn evacuate_start(State(hub): State<AppState>, p: Principal, Path(name): Path<String>, ApiJson(req): ApiJson<HostEvacuate>) -> HubResult<(StatusCode, Json<Evacuation>)> {
    Ok((StatusCode::ACCEPTED, Json(hub.evacuate_start(&p, &parse_name("host", &name)?, req).await?)))
}

/// The host's newest evacuation: its operation's status and each instance's outcome.
#[utoipa::path(get, path = "/v1/hosts/{name}/evacuate", security(("token" = [])),
    params(("name" = String, Path)),
    responses((status = 200, body = Evacuation), (status = 403, body = ApiError, description = "not an admin token"),
        (status = 404, body = ApiError, description = "no such host, or it was never evacuated")))]
async fn evacuation_status(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<Evacuation>> {
    Ok(Json(hub.evacuation_status(&p, &parse_name("host", &name)?).await?))
}
