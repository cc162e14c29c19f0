//! /v1/tenants/{tenant}/secrets and the agent's /v1/agent/instances/{id}/secrets

use super::{ApiJson, ApiQuery, ApiRoutes, AppState, HostCaller};
use crate::{parse_name, HubError, HubResult, Principal};
use axum::extract::{Path, State};
use axum::Json;
use hangar_types::access::{parse_secret_name, AgentSecrets, SecretInfo, SecretSet};
use hangar_types::{ApiError, InstanceId};
use serde::Deserialize;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(secret_list)).routes(routes!(secret_set, secret_delete)).routes(routes!(agent_secrets))
}

fn secret_path(names: (String, String)) -> HubResult<(hangar_types::Name, hangar_types::Name)> {
    let tenant = parse_name("tenant", &names.0)?;
    let name = parse_secret_name(&names.1).map_err(HubError::invalid)?;
    Ok((tenant, name))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/secrets", security(("token" = [])), params(("tenant" = String, Path)),
    description = "The tenant's secrets: names, sizes, versions and the instances that name them; never values.",
    responses((status = 200, body = Vec<SecretInfo>), (status = 404, body = ApiError)))]
async fn secret_list(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>) -> HubResult<Json<Vec<SecretInfo>>> {
    let tenant = parse_name("tenant", &tenant)?;
    Ok(Json(hub.secret_list(&p, &tenant).await?))
}

#[utoipa::path(put, path = "/v1/tenants/{tenant}/secrets/{name}", request_body = SecretSet, security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path, description = "a-z, 0-9 and '-', 1-63 characters, starting with a letter")),
    description = "Creates or replaces a secret (at most 64 KiB once decoded). Running instances that name it see the new value within one reconcile pass.",
    responses((status = 200, body = SecretInfo), (status = 400, body = ApiError, description = "bad name, not base64, or over 64 KiB"), (status = 404, body = ApiError), (status = 503, body = ApiError)))]
async fn secret_set(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, ApiJson(req): ApiJson<SecretSet>) -> HubResult<Json<SecretInfo>> {
    let (tenant, name) = secret_path(names)?;
    Ok(Json(hub.secret_set(&p, &tenant, &name, &req.value_b64).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// Delete it even if instances name it (they lose the file within one reconcile pass).
    #[serde(default)]
    force: bool,
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/secrets/{name}", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path), DeleteQuery),
    responses((status = 200, body = SecretInfo, description = "deleted; what it was"), (status = 404, body = ApiError), (status = 409, body = ApiError, description = "instances name it; pass force=true")))]
async fn secret_delete(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, ApiQuery(q): ApiQuery<DeleteQuery>) -> HubResult<Json<SecretInfo>> {
    let (tenant, name) = secret_path(names)?;
    Ok(Json(hub.secret_delete(&p, &tenant, &name, q.force).await?))
}

#[utoipa::path(get, path = "/v1/agent/instances/{id}/secrets", params(("id" = String, Path)),
    description = "mTLS: host certificate required. The values of the secrets an instance placed on the calling host names, while it is to run.",
    responses((status = 200, body = AgentSecrets), (status = 401, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn agent_secrets(State(hub): State<AppState>, HostCaller(host): HostCaller, Path(id): Path<String>) -> HubResult<Json<AgentSecrets>> {
    let id: InstanceId = id.parse().map_err(|_| HubError::invalid(format!("id: '{id}' is not an instance id")))?;
    Ok(Json(hub.agent_secrets(&host, id).await?))
}

