//! /v1/tenants/{tenant}/instances and /v1/instances

use super::{accepted, tenant_and, Accepted, ApiJson, ApiQuery, ApiRoutes, AppState};
use crate::{parse_name, HubResult, Principal};
use axum::extract::{Path, State};
use axum::Json;
use hangar_types::api::{ExecRequest, ExecResult, Instance, InstanceCreate, InstanceLogs, InstanceStats, LogsQuery, Operation};
use hangar_types::{ApiError, Transition};
use serde::Deserialize;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(routes!(instance_create, instance_list_tenant))
        .routes(routes!(instance_list_all))
        .routes(routes!(instance_get, instance_delete))
        .routes(routes!(instance_start))
        .routes(routes!(instance_stop))
        .routes(routes!(instance_warm))
        .routes(routes!(instance_resume))
        .routes(routes!(instance_sleep))
        .routes(routes!(instance_exec))
        .routes(routes!(instance_logs))
        .routes(routes!(instance_stats))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/instances", request_body = InstanceCreate, security(("token" = [])),
    params(("tenant" = String, Path)),
    responses((status = 202, body = Operation), (status = 400, body = ApiError),
        (status = 409, body = ApiError, description = "the name is taken, the image or a secret it names does not exist, or no ready host has room (no_capacity)"), (status = 422, body = ApiError), (status = 503, body = ApiError)))]
async fn instance_create(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>, ApiJson(req): ApiJson<InstanceCreate>) -> HubResult<Accepted> {
    let tenant = parse_name("tenant", &tenant)?;
    Ok(accepted(hub.instance_create(&p, &tenant, req).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances", security(("token" = [])), params(("tenant" = String, Path), InstanceQuery),
    responses((status = 200, body = Vec<Instance>)))]
async fn instance_list_tenant(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>, ApiQuery(q): ApiQuery<InstanceQuery>) -> HubResult<Json<Vec<Instance>>> {
    let tenant = parse_name("tenant", &tenant)?;
    let pool = q.pool.as_deref().map(|s| parse_name("pool", s)).transpose()?;
    Ok(Json(hub.instance_list(&p, Some(&tenant), pool.as_ref()).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct InstanceQuery {
    /// Only members of this pool.
    pool: Option<String>,
}

#[utoipa::path(get, path = "/v1/instances", security(("token" = [])), responses((status = 200, body = Vec<Instance>)))]
async fn instance_list_all(State(hub): State<AppState>, p: Principal) -> HubResult<Json<Vec<Instance>>> {
    Ok(Json(hub.instance_list(&p, None, None).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances/{name}", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)), responses((status = 200, body = Instance), (status = 404, body = ApiError)))]
async fn instance_get(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>) -> HubResult<Json<Instance>> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(Json(hub.instance_get(&p, &tenant, &name).await?))
}

macro_rules! instance_action {
    ($fn:ident, $method:ident, $suffix:literal, $t:expr) => {
        #[utoipa::path($method, path = concat!("/v1/tenants/{tenant}/instances/{name}", $suffix), security(("token" = [])),
            params(("tenant" = String, Path), ("name" = String, Path)),
            responses((status = 202, body = Operation), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
        async fn $fn(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>) -> HubResult<Accepted> {
            let (tenant, name) = tenant_and("instance", names)?;
            Ok(accepted(hub.instance_request(&p, &tenant, &name, $t).await?))
        }
    };
}

instance_action!(instance_start, post, "/start", Transition::Start);
instance_action!(instance_stop, post, "/stop", Transition::Stop);
instance_action!(instance_warm, post, "/warm", Transition::Warm);
instance_action!(instance_resume, post, "/resume", Transition::Resume);
instance_action!(instance_sleep, post, "/sleep", Transition::Sleep);
instance_action!(instance_delete, delete, "", Transition::Delete);

#[utoipa::path(post, path = "/v1/tenants/{tenant}/instances/{name}/exec", request_body = ExecRequest, security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = ExecResult), (status = 400, body = ApiError), (status = 409, body = ApiError), (status = 429, body = ApiError),
        (status = 503, body = ApiError), (status = 504, body = ApiError)))]
async fn instance_exec(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, ApiJson(req): ApiJson<ExecRequest>) -> HubResult<Json<ExecResult>> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(Json(hub.instance_exec(&p, &tenant, &name, req).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances/{name}/logs", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path), LogsQuery), responses((status = 200, body = InstanceLogs), (status = 400, body = ApiError)))]
async fn instance_logs(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, ApiQuery(q): ApiQuery<LogsQuery>) -> HubResult<Json<InstanceLogs>> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(Json(hub.instance_logs(&p, &tenant, &name, &q).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances/{name}/stats", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)), responses((status = 200, body = InstanceStats), (status = 409, body = ApiError)))]
async fn instance_stats(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>) -> HubResult<Json<InstanceStats>> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(Json(hub.instance_stats(&p, &tenant, &name).await?))
}
