//! /v1/tenants/{tenant}/ssh-keys: the public keys the SSH gateway accepts for a
//! tenant's instances (tenant or admin token); /v1/ssh: the gateway's port and host key.

use super::{tenant_and, ApiJson, ApiRoutes, AppState};
use crate::{parse_name, HubResult, Principal};
use axum::extract::{Path, State};
use axum::Json;
use hangar_types::api::{SshGateway, SshKey, SshKeyAdd};
use hangar_types::ApiError;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(ssh_key_add, ssh_key_list)).routes(routes!(ssh_key_remove)).routes(routes!(ssh_gateway))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/ssh-keys", request_body = SshKeyAdd, security(("token" = [])), params(("tenant" = String, Path)),
    responses((status = 200, body = SshKey), (status = 400, body = ApiError, description = "malformed or unsupported key, bad name"), (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "a key of this name, or this key, is already registered")))]
async fn ssh_key_add(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>, ApiJson(req): ApiJson<SshKeyAdd>) -> HubResult<Json<SshKey>> {
    Ok(Json(hub.ssh_key_add(&p, &parse_name("tenant", &tenant)?, req).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/ssh-keys", security(("token" = [])), params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<SshKey>), (status = 404, body = ApiError)))]
async fn ssh_key_list(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>) -> HubResult<Json<Vec<SshKey>>> {
    Ok(Json(hub.ssh_key_list(&p, &parse_name("tenant", &tenant)?).await?))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/ssh-keys/{name}", security(("token" = [])), params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = SshKey), (status = 404, body = ApiError)))]
async fn ssh_key_remove(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>) -> HubResult<Json<SshKey>> {
    let (tenant, name) = tenant_and("ssh key", names)?;
    Ok(Json(hub.ssh_key_remove(&p, &tenant, &name).await?))
}

#[utoipa::path(get, path = "/v1/ssh", security(("token" = [])), responses((status = 200, body = SshGateway), (status = 401, body = ApiError)))]
async fn ssh_gateway(State(hub): State<AppState>, p: Principal) -> Json<SshGateway> {
    Json(hub.ssh_gateway(&p))
}
