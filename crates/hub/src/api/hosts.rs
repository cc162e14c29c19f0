//! /v1/hosts

use super::{ApiJson, ApiRoutes, AppState};
use crate::{parse_name, HubResult, Principal};
use axum::extract::{Path, State};
use axum::Json;
use hangar_types::api::{Host, HostAdd, HostJoinToken, NodeStatus};
use hangar_types::protocol::DesiredDoc;
use hangar_types::ApiError;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(routes!(host_add, host_list))
        .routes(routes!(host_get, host_remove))
        .routes(routes!(host_drain))
        .routes(routes!(host_undrain))
        .routes(routes!(host_stop))
        .routes(routes!(host_start))
        .routes(routes!(host_status))
        .routes(routes!(host_desired))
        .routes(routes!(host_rotate_cert))
}

#[utoipa::path(post, path = "/v1/hosts", request_body = HostAdd, security(("token" = [])),
    responses((status = 200, body = HostJoinToken), (status = 404, body = ApiError, description = "no such provider on this hub"), (status = 409, body = ApiError)))]
async fn host_add(State(hub): State<AppState>, p: Principal, ApiJson(req): ApiJson<HostAdd>) -> HubResult<Json<HostJoinToken>> {
    Ok(Json(hub.host_add(&p, req).await?))
}

#[utoipa::path(get, path = "/v1/hosts", security(("token" = [])), responses((status = 200, body = Vec<Host>)))]
async fn host_list(State(hub): State<AppState>, p: Principal) -> HubResult<Json<Vec<Host>>> {
    Ok(Json(hub.host_list(&p).await?))
}

#[utoipa::path(get, path = "/v1/hosts/{name}", security(("token" = [])), params(("name" = String, Path)),
    responses((status = 200, body = Host), (status = 404, body = ApiError)))]
async fn host_get(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<Host>> {
    Ok(Json(hub.host_get(&p, &parse_name("host", &name)?).await?))
}

macro_rules! host_action {
    ($fn:ident, $suffix:literal, $call:ident $(, $arg:expr)?) => {
        #[utoipa::path(post, path = concat!("/v1/hosts/{name}/", $suffix), security(("token" = [])), params(("name" = String, Path)),
            responses((status = 200, body = Host), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 503, body = ApiError)))]
        async fn $fn(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<Host>> {
            Ok(Json(hub.$call(&p, &parse_name("host", &name)? $(, $arg)?).await?))
        }
    };
}

host_action!(host_drain, "drain", host_drain, true);
host_action!(host_undrain, "undrain", host_drain, false);
host_action!(host_stop, "stop", host_stop);
host_action!(host_start, "start", host_start);

#[utoipa::path(delete, path = "/v1/hosts/{name}", security(("token" = [])), params(("name" = String, Path)),
    responses((status = 200, body = Host), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn host_remove(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<Host>> {
    Ok(Json(hub.host_remove(&p, &parse_name("host", &name)?).await?))
}

#[utoipa::path(get, path = "/v1/hosts/{name}/status", security(("token" = [])), params(("name" = String, Path)),
    responses((status = 200, body = NodeStatus, description = "read live from the host's agent"),
        (status = 409, body = ApiError, description = "the host has not reported yet (joining, or never started): no agent to ask"),
        (status = 503, body = ApiError, description = "the host's agent does not answer")))]
async fn host_status(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<NodeStatus>> {
    Ok(Json(hub.host_status(&p, &parse_name("host", &name)?).await?))
}

#[utoipa::path(get, path = "/v1/hosts/{name}/desired", security(("token" = [])), params(("name" = String, Path)),
    responses((status = 200, body = DesiredDoc), (status = 404, body = ApiError)))]
async fn host_desired(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<DesiredDoc>> {
    Ok(Json(hub.host_desired(&p, &parse_name("host", &name)?).await?))
}

#[utoipa::path(post, path = "/v1/hosts/{name}/rotate-cert", security(("token" = [])), params(("name" = String, Path)),
    description = "Asks the host's agent to renew its certificate now. The answer comes at once (`cert_rotation_pending`); the rotation is done when `cert_fingerprint` changes: from then on the old certificate is refused.",
    responses((status = 200, body = Host, description = "asked: the host's document tells its agent to renew"),
        (status = 404, body = ApiError), (status = 409, body = ApiError, description = "the host has not joined, or its certificate changed meanwhile")))]
async fn host_rotate_cert(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<Host>> {
    Ok(Json(hub.host_rotate_cert(&p, &parse_name("host", &name)?).await?))
}
