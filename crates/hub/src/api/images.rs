//! /v1/images (admins only)

use super::{ApiJson, ApiRoutes, AppState};
use crate::{parse_name, HubResult, Principal};
use axum::extract::{Path, State};
use axum::Json;
use hangar_types::api::{Image, ImageCreate};
use hangar_types::ApiError;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(image_add, image_list)).routes(routes!(image_remove))
}

#[utoipa::path(post, path = "/v1/images", request_body = ImageCreate, security(("token" = [])),
    responses((status = 200, body = Image), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError, description = "nothing of that kind at the path"), (status = 409, body = ApiError)))]
async fn image_add(State(hub): State<AppState>, p: Principal, ApiJson(req): ApiJson<ImageCreate>) -> HubResult<Json<Image>> {
    Ok(Json(hub.image_add(&p, req).await?))
}

#[utoipa::path(get, path = "/v1/images", security(("token" = [])), responses((status = 200, body = Vec<Image>), (status = 403, body = ApiError)))]
async fn image_list(State(hub): State<AppState>, p: Principal) -> HubResult<Json<Vec<Image>>> {
    Ok(Json(hub.image_list(&p).await?))
}

#[utoipa::path(delete, path = "/v1/images/{name}", security(("token" = [])), params(("name" = String, Path)),
    responses((status = 200, body = Image), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn image_remove(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<Image>> {
    Ok(Json(hub.image_remove(&p, &parse_name("image", &name)?).await?))
}
