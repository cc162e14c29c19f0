//! /v1/tenants

use super::{ApiJson, ApiQuery, ApiRoutes, AppState};
use crate::{parse_name, HubResult, Principal};
use axum::extract::{Path, State};
use axum::Json;
use hangar_types::api::{Operation, Tenant, TenantCreate, TenantInfo};
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
    responses((status = 200, body = TenantInfo), (status = 404, body = ApiError, description = "no such tenant, or it is being destroyed (`destroy --force` under way)")))]
async fn tenant_info(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>) -> HubResult<Json<TenantInfo>> {
    let tenant = parse_name("tenant", &tenant)?;
    Ok(Json(hub.tenant_info(&p, &tenant).await?))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DestroyQuery {
    /// Delete the tenant's pools and instances first, then the tenant, as one operation.
    #[serde(default)]
    force: bool,
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}", security(("token" = [])), params(("tenant" = String, Path), DestroyQuery),
    responses((status = 200, body = Tenant, description = "destroyed (an empty tenant, without force)"),
        (status = 202, body = Operation, description = "force: the destroy's operation (`tenant.destroy`); its progress counts pools and instances removed, and it goes on after a hub restart"),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError, description = "not empty (without force)"), (status = 429, body = ApiError)))]
async fn tenant_destroy(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>, ApiQuery(q): ApiQuery<DestroyQuery>) -> HubResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let tenant = parse_name("tenant", &tenant)?;
    if q.force {
        return Ok(super::accepted(hub.tenant_destroy_force(&p, &tenant).await?).into_response());
    }
    Ok(Json(hub.tenant_destroy(&p, &tenant).await?).into_response())
}
