//! /v1/operations

use super::{ApiQuery, ApiRoutes, AppState};
use crate::{HubError, HubResult, Principal};
use axum::extract::{Path, State};
use axum::Json;
use hangar_types::api::{Operation, WaitQuery};
use hangar_types::{ApiError, OperationId};
use std::time::Duration;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(operation_get)).routes(routes!(operation_wait))
}

fn operation_id(id: &str) -> Result<OperationId, HubError> {
    id.parse().map_err(|_| HubError::invalid(format!("'{id}' is not an operation id (a UUID)")))
}

#[utoipa::path(get, path = "/v1/operations/{id}", security(("token" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Operation), (status = 404, body = ApiError)))]
async fn operation_get(State(hub): State<AppState>, p: Principal, Path(id): Path<String>) -> HubResult<Json<Operation>> {
    Ok(Json(hub.operation_get(&p, operation_id(&id)?).await?))
}

#[utoipa::path(get, path = "/v1/operations/{id}/wait", security(("token" = [])), params(("id" = String, Path), WaitQuery),
    responses((status = 200, body = Operation, description = "the operation, final or not once the timeout passed")))]
async fn operation_wait(State(hub): State<AppState>, p: Principal, Path(id): Path<String>, ApiQuery(q): ApiQuery<WaitQuery>) -> HubResult<Json<Operation>> {
    Ok(Json(hub.operation_wait(&p, operation_id(&id)?, Duration::from_secs(q.timeout.unwrap_or(30))).await?))
}
