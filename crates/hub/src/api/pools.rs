//! /v1/tenants/{tenant}/pools

use super::{tenant_and, ApiJson, ApiRoutes, AppState};
use crate::{parse_name, HubResult, Principal};
use axum::extract::{Path, State};
use axum::Json;
use hangar_types::api::{PoolCreate, PoolInfo, PoolScale};
use hangar_types::ApiError;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(pool_create, pool_list)).routes(routes!(pool_info, pool_delete)).routes(routes!(pool_scale))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/pools", request_body = PoolCreate, security(("token" = [])), params(("tenant" = String, Path)),
    responses((status = 200, body = PoolInfo), (status = 400, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
async fn pool_create(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>, ApiJson(req): ApiJson<PoolCreate>) -> HubResult<Json<PoolInfo>> {
    let tenant = parse_name("tenant", &tenant)?;
    Ok(Json(hub.pool_create(&p, &tenant, req).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/pools", security(("token" = [])), params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<PoolInfo>)))]
async fn pool_list(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>) -> HubResult<Json<Vec<PoolInfo>>> {
    let tenant = parse_name("tenant", &tenant)?;
    Ok(Json(hub.pool_list(&p, &tenant).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/pools/{name}", security(("token" = [])), params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = PoolInfo), (status = 404, body = ApiError)))]
async fn pool_info(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>) -> HubResult<Json<PoolInfo>> {
    let (tenant, name) = tenant_and("pool", names)?;
    Ok(Json(hub.pool_info(&p, &tenant, &name).await?))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/pools/{name}/scale", request_body = PoolScale, security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = PoolInfo, description = "new counts stored; `actions` is what the first pass did, `pool.last_error` why it stopped"),
        (status = 404, body = ApiError), (status = 422, body = ApiError)))]
async fn pool_scale(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, ApiJson(req): ApiJson<PoolScale>) -> HubResult<Json<PoolInfo>> {
    let (tenant, name) = tenant_and("pool", names)?;
    Ok(Json(hub.pool_scale(&p, &tenant, &name, req).await?))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/pools/{name}", security(("token" = [])), params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = PoolInfo), (status = 404, body = ApiError)))]
async fn pool_delete(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>) -> HubResult<Json<PoolInfo>> {
    let (tenant, name) = tenant_and("pool", names)?;
    Ok(Json(hub.pool_delete(&p, &tenant, &name).await?))
}
