//! What the hub is: its version and this API's document.

use super::ApiRoutes;
use axum::Json;
use hangar_types::api::HubInfo;
use hangar_types::protocol::PROTOCOL_VERSION;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(info)).routes(routes!(openapi_json))
}

#[utoipa::path(get, path = "/v1/info", responses((status = 200, body = HubInfo)))]
async fn info() -> Json<HubInfo> {
    Json(HubInfo { version: env!("CARGO_PKG_VERSION").into(), api_version: "v1".into(), protocol_version: PROTOCOL_VERSION })
}

#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "this document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi_document())
}

