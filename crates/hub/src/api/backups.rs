//! /v1/backup-targets, /v1/tenants/{tenant}/backup-*, /v1/tenants/{tenant}/instances/{name}/backups,
//! /v1/backup-operations, /v1/backup-purges

use super::{accepted, tenant_and, Accepted, ApiJson, ApiQuery, ApiRoutes, AppState};
use crate::{parse_name, HubError, HubResult, Principal};
use axum::extract::{Path, State};
use axum::Json;
use hangar_types::api::Operation;
use hangar_types::backups::*;
use hangar_types::{ApiError, OperationId};
use serde::Deserialize;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(routes!(target_add, target_list))
        .routes(routes!(target_remove))
        .routes(routes!(target_check))
        .routes(routes!(tenant_target_set))
        .routes(routes!(tenant_policy_set))
        .routes(routes!(tenant_settings))
        .routes(routes!(tenant_key))
        .routes(routes!(backup_create, backup_list))
        .routes(routes!(backup_files))
        .routes(routes!(backup_find))
        .routes(routes!(backup_restore))
        .routes(routes!(backup_check))
        .routes(routes!(purge_schedule))
        .routes(routes!(purge_list))
        .routes(routes!(purge_cancel))
        .routes(routes!(progress_get))
        .routes(routes!(progress_cancel))
}

fn operation_id(id: &str) -> Result<OperationId, HubError> {
    id.parse().map_err(|_| HubError::invalid(format!("'{id}' is not an operation id (a UUID)")))
}

#[utoipa::path(post, path = "/v1/backup-targets", request_body = BackupTargetAdd, security(("token" = [])),
    responses((status = 200, body = BackupTarget), (status = 400, body = ApiError, description = "bad location, or the target failed its check (credentials, bucket, permission)"),
        (status = 403, body = ApiError), (status = 409, body = ApiError), (status = 503, body = ApiError, description = "the target's endpoint is unreachable")))]
async fn target_add(State(hub): State<AppState>, p: Principal, ApiJson(req): ApiJson<BackupTargetAdd>) -> HubResult<Json<BackupTarget>> {
    Ok(Json(hub.backup_target_add(&p, req).await?))
}

#[utoipa::path(get, path = "/v1/backup-targets", security(("token" = [])), responses((status = 200, body = Vec<BackupTarget>), (status = 403, body = ApiError)))]
async fn target_list(State(hub): State<AppState>, p: Principal) -> HubResult<Json<Vec<BackupTarget>>> {
    Ok(Json(hub.backup_target_list(&p).await?))
}

#[utoipa::path(delete, path = "/v1/backup-targets/{name}", security(("token" = [])), params(("name" = String, Path)),
    responses((status = 200, body = BackupTarget), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn target_remove(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<BackupTarget>> {
    Ok(Json(hub.backup_target_remove(&p, &parse_name("name", &name)?).await?))
}

#[utoipa::path(post, path = "/v1/backup-targets/{name}/check", security(("token" = [])), params(("name" = String, Path)),
    responses((status = 200, body = BackupTarget), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 503, body = ApiError)))]
async fn target_check(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<BackupTarget>> {
    Ok(Json(hub.backup_target_check(&p, &parse_name("name", &name)?).await?))
}

#[utoipa::path(put, path = "/v1/tenants/{tenant}/backup-target", request_body = BackupTargetSet, security(("token" = [])), params(("tenant" = String, Path)),
    responses((status = 200, body = BackupSettings), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "no backup target has that name")))]
async fn tenant_target_set(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>, ApiJson(req): ApiJson<BackupTargetSet>) -> HubResult<Json<BackupSettings>> {
    Ok(Json(hub.backup_target_set(&p, &parse_name("tenant", &tenant)?, req).await?))
}

#[utoipa::path(put, path = "/v1/tenants/{tenant}/backup-policy", request_body = BackupPolicy, security(("token" = [])), params(("tenant" = String, Path)),
    responses((status = 200, body = BackupSettings), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn tenant_policy_set(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>, ApiJson(req): ApiJson<BackupPolicy>) -> HubResult<Json<BackupSettings>> {
    Ok(Json(hub.backup_policy_set(&p, &parse_name("tenant", &tenant)?, req).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/backup-settings", security(("token" = [])), params(("tenant" = String, Path)),
    responses((status = 200, body = BackupSettings), (status = 404, body = ApiError)))]
async fn tenant_settings(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>) -> HubResult<Json<BackupSettings>> {
    Ok(Json(hub.backup_settings(&p, &parse_name("tenant", &tenant)?).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/backup-key", security(("token" = [])), params(("tenant" = String, Path)),
    responses((status = 200, body = BackupKey, description = "the repository location and password (admins only)"), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn tenant_key(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>) -> HubResult<Json<BackupKey>> {
    Ok(Json(hub.backup_key(&p, &parse_name("tenant", &tenant)?).await?))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/instances/{name}/backups", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 202, body = Operation), (status = 404, body = ApiError), (status = 409, body = ApiError, description = "the tenant has no backup target"), (status = 503, body = ApiError)))]
async fn backup_create(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>) -> HubResult<Accepted> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(accepted(hub.backup_create(&p, &tenant, &name).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances/{name}/backups", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)), responses((status = 200, body = Vec<Backup>), (status = 404, body = ApiError)))]
async fn backup_list(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>) -> HubResult<Json<Vec<Backup>>> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(Json(hub.backup_list(&p, &tenant, &name).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FilesQuery {
    /// A directory (its entries) or a file (itself), relative to the volume's root; the
    /// root if left out.
    path: Option<String>,
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances/{name}/backups/{backup}/files", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path), ("backup" = String, Path, description = "a backup id or a unique prefix"), FilesQuery),
    responses((status = 200, body = Vec<BackupFile>), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn backup_files(State(hub): State<AppState>, p: Principal, Path((tenant, name, backup)): Path<(String, String, String)>, ApiQuery(q): ApiQuery<FilesQuery>) -> HubResult<Json<Vec<BackupFile>>> {
    let (tenant, name) = tenant_and("instance", (tenant, name))?;
    Ok(Json(hub.backup_files(&p, &tenant, &name, &backup, q.path.as_deref().unwrap_or("")).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FindQuery {
    /// A file name pattern (`*`, `?`, `[..]`), 1-255 characters, no `/`.
    name: String,
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances/{name}/backup-files", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path), FindQuery),
    responses((status = 200, body = Vec<BackupFound>, description = "matches in every backup, newest first, at most 1000"), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn backup_find(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, ApiQuery(q): ApiQuery<FindQuery>) -> HubResult<Json<Vec<BackupFound>>> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(Json(hub.backup_find(&p, &tenant, &name, &q.name).await?))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/instances/{name}/backups/restore", request_body = BackupRestore, security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 202, body = Operation), (status = 400, body = ApiError), (status = 404, body = ApiError, description = "no such backup, or the path is not in it"),
        (status = 409, body = ApiError, description = "the instance runs and force is not set"), (status = 422, body = ApiError), (status = 503, body = ApiError)))]
async fn backup_restore(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, ApiJson(req): ApiJson<BackupRestore>) -> HubResult<Accepted> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(accepted(hub.backup_restore(&p, &tenant, &name, req).await?))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/instances/{name}/backups/check", request_body = BackupCheck, security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 202, body = Operation), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 503, body = ApiError)))]
async fn backup_check(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, ApiJson(req): ApiJson<BackupCheck>) -> HubResult<Accepted> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(accepted(hub.backup_check(&p, &tenant, &name, req).await?))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/instances/{name}/backups/purge", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = BackupPurge, description = "the purge, due after the hub's purge delay"), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn purge_schedule(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>) -> HubResult<Json<BackupPurge>> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(Json(hub.backup_purge_schedule(&p, &tenant, &name).await?))
}

#[utoipa::path(get, path = "/v1/backup-purges", security(("token" = [])), responses((status = 200, body = Vec<BackupPurge>, description = "purges the caller may see, by due time")))]
async fn purge_list(State(hub): State<AppState>, p: Principal) -> HubResult<Json<Vec<BackupPurge>>> {
    Ok(Json(hub.backup_purge_list(&p).await?))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/backup-purges/{name}", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path, description = "the deleted instance's name")),
    responses((status = 200, body = BackupPurge), (status = 404, body = ApiError)))]
async fn purge_cancel(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>) -> HubResult<Json<BackupPurge>> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(Json(hub.backup_purge_cancel(&p, &tenant, &name).await?))
}

#[utoipa::path(get, path = "/v1/backup-operations/{id}", security(("token" = [])), params(("id" = String, Path)),
    responses((status = 200, body = BackupProgress), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn progress_get(State(hub): State<AppState>, p: Principal, Path(id): Path<String>) -> HubResult<Json<BackupProgress>> {
    Ok(Json(hub.backup_progress(&p, operation_id(&id)?).await?))
}

#[utoipa::path(post, path = "/v1/backup-operations/{id}/cancel", security(("token" = [])), params(("id" = String, Path)),
    responses((status = 200, body = BackupProgress), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn progress_cancel(State(hub): State<AppState>, p: Principal, Path(id): Path<String>) -> HubResult<Json<BackupProgress>> {
    Ok(Json(hub.backup_cancel(&p, operation_id(&id)?).await?))
}
