//! /v1/tenants

use super::{ApiJson, ApiQuery, ApiRoutes, AppState};
use crate::{parse_name, HubResult, Principal};
use axum::extract::{Path, State};
use axum::Json;
use hangar_types::api::{Tenant, TenantCreate, TenantInfo};
use hangar_types::ApiError;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(tenant_create, tenant_list)).routes(routes!(tenant_info, tenant_destroy))
}

#[utoipa::path(post, path = "/v1/tenants", request_body = TenantCreate, security(("token" = [])),
    responses((status = 200, body = Tenant), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn tenant_create(State(hub): State<AppState>, p: Principal, ApiJson(req): ApiJson<TenantCreate>) -> HubResult<Json<Tenant>> {
    Ok(Json(hub.tenant_create(&p, req).await?))
}

#[utoipa::path(get, path = "/v1/tenants", security(("token" = [])), responses((status = 200, body = Vec<Tenant>)))]
async fn tenant_list(State(hub): State<AppState>, p: Principal) -> HubResult<Json<Vec<Tenant>>> {
    Ok(Json(hub.tenant_list(&p).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}", security(("token" = [])), params(("tenant" = String, Path)),
    responses((status = 200, body = TenantInfo), (status = 404, body = ApiError)))]
async fn tenant_info(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>) -> HubResult<Json<TenantInfo>> {
    let tenant = parse_name("tenant", &tenant)?;
    Ok(Json(hub.tenant_info(&p, &tenant).await?))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DestroyQuery {
    /// Delete the tenant's pools and instances first (waiting for their hosts), then the tenant.
    #[serde(default)]
    force: bool,
    /// With force: how long to wait for the hosts, in seconds (default 120, at most 600).
    #[param(maximum = 600)]
    wait_secs: Option<u64>,
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}", security(("token" = [])), params(("tenant" = String, Path), DestroyQuery),
    responses((status = 200, body = Tenant), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError, description = "not empty (without force)"), (status = 429, body = ApiError),
        (status = 503, body = ApiError, description = "force: hosts have not confirmed every deletion within the wait; run again")))]
async fn tenant_destroy(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>, ApiQuery(q): ApiQuery<DestroyQuery>) -> HubResult<Json<Tenant>> {
    let tenant = parse_name("tenant", &tenant)?;
    if q.wait_secs.is_some_and(|w| w > 600) {
        return Err(crate::HubError::invalid("wait_secs: at most 600 seconds"));
    }
    if q.force {
        let wait = std::time::Duration::from_secs(q.wait_secs.unwrap_or(120));
        return Ok(Json(hub.tenant_destroy_force(&p, &tenant, wait).await?));
    }
    Ok(Json(hub.tenant_destroy(&p, &tenant).await?))
}
