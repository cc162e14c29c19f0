//! /v1/tokens

use super::{ApiJson, ApiRoutes, AppState};
use crate::{HubResult, Principal};
use axum::extract::{Path, State};
use axum::Json;
use hangar_types::api::{Token, TokenCreate, TokenCreated};
use hangar_types::ApiError;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(token_create, token_list)).routes(routes!(token_revoke))
}

#[utoipa::path(post, path = "/v1/tokens", request_body = TokenCreate, security(("token" = [])),
    responses((status = 200, body = TokenCreated), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError, description = "no such tenant"),
        (status = 422, body = ApiError, description = "role and tenant contradict each other (a tenant token without its tenant, an admin token with one)"), (status = 429, body = ApiError)))]
async fn token_create(State(hub): State<AppState>, p: Principal, ApiJson(req): ApiJson<TokenCreate>) -> HubResult<Json<TokenCreated>> {
    Ok(Json(hub.token_create(&p, req).await?))
}

#[utoipa::path(get, path = "/v1/tokens", security(("token" = [])),
    responses((status = 200, body = Vec<Token>), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 429, body = ApiError)))]
async fn token_list(State(hub): State<AppState>, p: Principal) -> HubResult<Json<Vec<Token>>> {
    Ok(Json(hub.token_list(&p).await?))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", params(("id" = String, Path, description = "the token's id (from `token list`)")), security(("token" = [])),
    responses((status = 200, body = Token, description = "revoked: refused at once on every hub"), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError, description = "the token is the one this request uses"),
        (status = 429, body = ApiError)))]
async fn token_revoke(State(hub): State<AppState>, p: Principal, headers: axum::http::HeaderMap, Path(id): Path<String>) -> HubResult<Json<Token>> {
    let bearer = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    Ok(Json(hub.token_revoke_by(&p, &id, bearer).await?))
}
