//! Proxy tokens (/v1/tenants/{tenant}/instances/{name}/proxy-tokens) and the proxy
//! itself (`/proxy/{tenant}/{instance}/{port}/...`).
//!
//! The proxy is the one route outside the OpenAPI document on purpose: its methods,
//! bodies and answers are the workload's own HTTP, not hangar's API. Its own refusals
//! are `{code, message}`: 401 without a valid token, 404 for what the token may not
//! see, 409 for an instance that is not running, 502 when the port does not answer,
//! 503 when the host's agent cannot be reached.

use super::{tenant_and, ApiJson, ApiRoutes, AppState};
use crate::proxy::ProxyTarget;
use crate::{HubResult, Principal};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::{Json, Router};
use hangar_types::access::{ProxyTokenCreate, ProxyTokenCreated, ProxyTokenInfo};
use hangar_types::ApiError;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(proxy_token_create, proxy_token_list)).routes(routes!(proxy_token_revoke))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/instances/{name}/proxy-tokens", request_body = ProxyTokenCreate, security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    description = "A token that opens exactly this instance's port through `/proxy/{tenant}/{name}/{port}/`; shown once, stored hashed.",
    responses((status = 200, body = ProxyTokenCreated), (status = 400, body = ApiError, description = "port 0, or ttl_secs 0 or over 30 days"), (status = 404, body = ApiError)))]
async fn proxy_token_create(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, ApiJson(req): ApiJson<ProxyTokenCreate>) -> HubResult<Json<ProxyTokenCreated>> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(Json(hub.proxy_token_create(&p, &tenant, &name, req).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances/{name}/proxy-tokens", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Vec<ProxyTokenInfo>), (status = 404, body = ApiError)))]
async fn proxy_token_list(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>) -> HubResult<Json<Vec<ProxyTokenInfo>>> {
    let (tenant, name) = tenant_and("instance", names)?;
    Ok(Json(hub.proxy_token_list(&p, &tenant, &name).await?))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/instances/{name}/proxy-tokens/{id}", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path), ("id" = String, Path)),
    description = "Revokes a proxy token: refused from the next request on.",
    responses((status = 200, body = ProxyTokenInfo, description = "revoked; what it was"), (status = 404, body = ApiError)))]
async fn proxy_token_revoke(State(hub): State<AppState>, p: Principal, Path((tenant, name, id)): Path<(String, String, String)>) -> HubResult<Json<ProxyTokenInfo>> {
    let (tenant, name) = tenant_and("instance", (tenant, name))?;
    Ok(Json(hub.proxy_token_revoke(&p, &tenant, &name, &id).await?))
}

/// The proxy's routes, any method (the rest of the path is taken from the request as
/// it came, still percent-encoded).
pub(super) fn proxy_router() -> Router<AppState> {
    Router::new().route("/proxy/{tenant}/{instance}/{port}/", any(forward)).route("/proxy/{tenant}/{instance}/{port}/{*rest}", any(forward))
}

async fn forward(State(hub): State<AppState>, Path(p): Path<std::collections::HashMap<String, String>>, req: Request) -> axum::response::Response<Body> {
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    match ProxyTarget::parse(get("tenant"), get("instance"), get("port")) {
        Ok(t) => hub.proxy(t, req).await,
        Err(e) => e.into_response(),
    }
}
