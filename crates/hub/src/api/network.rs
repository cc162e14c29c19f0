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
async fn net_verify(State(hub): State<AppState>, p: Principal, uri: axum::http::Uri, headers: axum::http::HeaderMap) -> HubResult<Json<NetVerifyReport>> {
    // The port this request reached the hub on (HTTP/2 carries it in the URI, HTTP/1.1
    // in the Host header): the one sandboxes must not reach.
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).and_then(|h| h.rsplit_once(':')).and_then(|(_, p)| p.parse().ok());
    let port = uri.port_u16().or(host);
    Ok(Json(hub.net_verify(&p, port).await?))
}
