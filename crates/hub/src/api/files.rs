//! /v1/tenants/{tenant}/instances/{name}/files (download, upload) and /v1/files/copy.

use super::{tenant_and, ApiJson, ApiQuery, ApiRoutes, AppState};
use crate::{HubResult, Principal};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use hangar_client::files::ByteStream;
use hangar_types::files::{CopyRequest, CopyResult, FilesQuery, FilesWritten, TAR_MEDIA_TYPE};
use hangar_types::ApiError;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(files_download, files_upload)).routes(routes!(files_copy))
}

/// A tar stream of a path under `/home` (the instance's volume): modes, mtimes, owners
/// as ids inside the instance. Directories only with `recursive`.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances/{name}/files", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path), FilesQuery),
    responses((status = 200, content_type = "application/x-tar", body = String, description = "a tar stream"),
        (status = 400, body = ApiError, description = "the path is outside the volume, holds '..', leads out through a symlink, is a device file, fifo or socket, or is a directory without `recursive`"),
        (status = 404, body = ApiError, description = "no such tenant, instance or path"), (status = 409, body = ApiError, description = "the instance is being deleted"),
        (status = 503, body = ApiError, description = "the instance's host cannot be reached")))]
async fn files_download(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, ApiQuery(q): ApiQuery<FilesQuery>) -> HubResult<Response> {
    let (tenant, name) = tenant_and("instance", names)?;
    let stream = hub.files_download(&p, &tenant, &name, &q).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, TAR_MEDIA_TYPE)], axum::body::Body::from_stream(stream)).into_response())
}

/// Writes a tar stream (files, directories, symlinks) at a path under `/home`: into it
/// if it is a directory, else as it (its parent must exist). Owners map into the
/// instance's ids (0 is its root). Nothing changes unless the whole stream arrives and
/// fits: a file never replaces a directory, directories merge only with `recursive`.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/instances/{name}/files", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path), FilesQuery),
    request_body(content = String, content_type = "application/x-tar", description = "a tar stream"),
    responses((status = 200, body = FilesWritten),
        (status = 400, body = ApiError, description = "the path is outside the volume, holds '..' or leads out through a symlink; the stream is not valid tar, was cut off, or holds a device file, fifo, hard link, or a directory without `recursive`"),
        (status = 404, body = ApiError, description = "no such tenant or instance, or the destination's directory does not exist"),
        (status = 409, body = ApiError, description = "an existing directory would be replaced (or merged into without `recursive`), or the instance is being deleted"),
        (status = 422, body = ApiError, description = "the instance's volume is full"), (status = 503, body = ApiError, description = "the instance's host cannot be reached")))]
async fn files_upload(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, ApiQuery(q): ApiQuery<FilesQuery>, body: axum::body::Body) -> HubResult<Json<FilesWritten>> {
    let (tenant, name) = tenant_and("instance", names)?;
    let tar: ByteStream = Box::pin(body.into_data_stream().map(|r| r.map_err(std::io::Error::other)));
    Ok(Json(hub.files_upload(&p, &tenant, &name, &q, tar).await?))
}

/// Copies a path of one instance into another (or the same): a reflink copy when both
/// are on one host, else streamed from host to host through the hub. Between tenants
/// only with an admin token.
#[utoipa::path(post, path = "/v1/files/copy", request_body = CopyRequest, security(("token" = [])),
    responses((status = 200, body = CopyResult),
        (status = 400, body = ApiError, description = "a path is outside the volume, holds '..', leads out through a symlink, or is a device file, fifo or socket; a directory without `recursive`"),
        (status = 403, body = ApiError, description = "the instances are in different tenants and the token is not an admin token"),
        (status = 404, body = ApiError, description = "no such tenant, instance or source path, or the destination's directory does not exist"),
        (status = 409, body = ApiError, description = "an existing directory would be replaced (or merged into without `recursive`)"),
        (status = 422, body = ApiError, description = "the target's volume is full"), (status = 503, body = ApiError, description = "a host cannot be reached")))]
async fn files_copy(State(hub): State<AppState>, p: Principal, ApiJson(req): ApiJson<CopyRequest>) -> HubResult<Json<CopyResult>> {
    Ok(Json(hub.files_copy(&p, &req).await?))
}
