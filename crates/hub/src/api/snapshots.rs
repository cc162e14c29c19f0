//! /v1/tenants/{tenant}/instances/{name}/snapshots and .../snapshot-schedule

use super::{tenant_and, ApiJson, ApiRoutes, AppState, HostCaller};
use crate::{HubResult, Principal};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hangar_types::api::{Snapshot, SnapshotCreate, SnapshotRestore, SnapshotRestored, SnapshotScheduleInfo, SnapshotScheduleSet};
use hangar_types::snapshots::SnapshotAdmission;
use hangar_types::ApiError;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(routes!(snapshot_create, snapshot_list))
        .routes(routes!(snapshot_delete))
        .routes(routes!(snapshot_restore))
        .routes(routes!(snapshot_schedule_get, snapshot_schedule_set))
        .routes(routes!(agent_snapshot_admission))
}

/// Asked by a host before each scheduled snapshot: refused (422, and an event on the
/// instance) while the tenant is at its disk quota, as a snapshot by hand would be.
#[utoipa::path(post, path = "/v1/agent/instances/{id}/snapshot-admission", params(("id" = String, Path)),
    description = "mTLS: host certificate required. Whether the calling host may take a scheduled snapshot of an instance placed on it now.",
    responses((status = 200, body = SnapshotAdmission), (status = 400, body = ApiError, description = "id is not an instance id"), (status = 401, body = ApiError),
        (status = 404, body = ApiError, description = "no such instance on the calling host"), (status = 422, body = ApiError, description = "the tenant is at its disk quota: skip this slot")))]
async fn agent_snapshot_admission(State(hub): State<AppState>, HostCaller(host): HostCaller, Path(id): Path<String>) -> HubResult<Json<SnapshotAdmission>> {
    let id: hangar_types::InstanceId = id.parse().map_err(|_| crate::HubError::invalid(format!("id: '{id}' is not an instance id")))?;
    hub.snapshot_admission(&host, id).await?;
    Ok(Json(SnapshotAdmission { admitted: true }))
}

/// A read-only snapshot of the instance's volume, taken at once on its host.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/instances/{name}/snapshots", request_body = SnapshotCreate, security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 201, body = Snapshot), (status = 400, body = ApiError, description = "bad snapshot name"),
        (status = 404, body = ApiError, description = "no such tenant or instance"), (status = 409, body = ApiError, description = "a snapshot of that name exists, or the instance is being deleted"),
        (status = 422, body = ApiError, description = "over the tenant's disk quota (snapshots count)"), (status = 503, body = ApiError, description = "the instance's host cannot be reached")))]
async fn snapshot_create(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, ApiJson(req): ApiJson<SnapshotCreate>) -> HubResult<(StatusCode, Json<Snapshot>)> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok((StatusCode::CREATED, Json(hub.snapshot_create(&p, &tenant, &name, req).await?)))
}

/// The instance's snapshots, oldest first (backups' temporary ones are not shown).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances/{name}/snapshots", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Vec<Snapshot>), (status = 404, body = ApiError)))]
async fn snapshot_list(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>) -> HubResult<Json<Vec<Snapshot>>> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(Json(hub.snapshot_list(&p, &tenant, &name).await?))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/instances/{name}/snapshots/{snapshot}", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path), ("snapshot" = String, Path)),
    responses((status = 200, body = Snapshot, description = "the deleted snapshot"), (status = 404, body = ApiError, description = "no such tenant, instance or snapshot"),
        (status = 503, body = ApiError, description = "the instance's host cannot be reached")))]
async fn snapshot_delete(State(hub): State<AppState>, p: Principal, Path((tenant, name, snapshot)): Path<(String, String, String)>) -> HubResult<Json<Snapshot>> {
    let (tenant, name) = tenant_and("instance", (tenant, name))?;
    Ok(Json(hub.snapshot_delete(&p, &tenant, &name, &snapshot).await?))
}

/// Replaces the instance's volume by the snapshot. The instance must be stopped, or
/// `force` stops it, restores and starts it again (`operation` is that start).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/instances/{name}/snapshots/{snapshot}/restore", request_body = SnapshotRestore, security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path), ("snapshot" = String, Path)),
    responses((status = 200, body = SnapshotRestored), (status = 404, body = ApiError, description = "no such tenant, instance or snapshot"),
        (status = 409, body = ApiError, description = "the instance runs and `force` is not set"), (status = 503, body = ApiError, description = "the host cannot be reached, or the instance did not stop")))]
async fn snapshot_restore(
    State(hub): State<AppState>,
    p: Principal,
    Path((tenant, name, snapshot)): Path<(String, String, String)>,
    ApiJson(req): ApiJson<SnapshotRestore>,
) -> HubResult<Json<SnapshotRestored>> {
    let (tenant, name) = tenant_and("instance", (tenant, name))?;
    Ok(Json(hub.snapshot_restore(&p, &tenant, &name, &snapshot, req).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances/{name}/snapshot-schedule", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = SnapshotScheduleInfo), (status = 404, body = ApiError)))]
async fn snapshot_schedule_get(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>) -> HubResult<Json<SnapshotScheduleInfo>> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(Json(hub.snapshot_schedule_get(&p, &tenant, &name).await?))
}

/// Scheduled snapshots, taken and pruned by the instance's host.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/instances/{name}/snapshot-schedule", request_body = SnapshotScheduleSet, security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = SnapshotScheduleInfo), (status = 400, body = ApiError, description = "the schedule is not understood"), (status = 404, body = ApiError)))]
async fn snapshot_schedule_set(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, ApiJson(req): ApiJson<SnapshotScheduleSet>) -> HubResult<Json<SnapshotScheduleInfo>> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(Json(hub.snapshot_schedule_set(&p, &tenant, &name, req).await?))
}
