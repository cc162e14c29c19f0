//! /v1/tokens

use super::{ApiJson, ApiRoutes, AppState};
use crate::{HubResult, Principal};
use axum::extract::State;
use axum::Json;
use hangar_types::api::{TokenCreate, TokenCreated};
use hangar_types::ApiError;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(token_create))
}

#[utoipa::path(post, path = "/v1/tokens", request_body = TokenCreate, security(("token" = [])),
    responses((status = 200, body = TokenCreated), (status = 403, body = ApiError)))]
async fn token_create(State(hub): State<AppState>, p: Principal, ApiJson(req): ApiJson<TokenCreate>) -> HubResult<Json<TokenCreated>> {
    Ok(Json(hub.token_create(&p, req).await?))
}
