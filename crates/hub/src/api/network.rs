//! /v1/network

use super::{ApiRoutes, AppState};
use crate::{HubResult, Principal};
use axum::extract::State;
use axum::Json;
use hangar_types::net::NetVerifyReport;
use hangar_types::ApiError;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(net_verify))
}

#[utoipa::path(get, path = "/v1/network/verify", security(("token" = [])),
    responses((status = 200, body = hangar_types::net::NetVerifyReport), (status = 403, body = ApiError)))]
async fn net_verify(State(hub): State<AppState>, p: Principal) -> HubResult<Json<NetVerifyReport>> {
    Ok(Json(hub.net_verify(&p).await?))
}
