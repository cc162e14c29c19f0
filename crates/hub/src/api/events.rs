//! /v1/events

use super::{ApiQuery, ApiRoutes, AppState};
use crate::{parse_name, HubResult, Principal};
use axum::extract::State;
use axum::Json;
use hangar_types::api::Event;
use serde::Deserialize;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(events))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    #[param(value_type = Option<hangar_types::Name>)]
    tenant: Option<String>,
    /// The newest N events (default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/events", security(("token" = [])), params(EventsQuery), responses((status = 200, body = Vec<Event>)))]
async fn events(State(hub): State<AppState>, p: Principal, ApiQuery(q): ApiQuery<EventsQuery>) -> HubResult<Json<Vec<Event>>> {
    let tenant = q.tenant.as_deref().map(|t| parse_name("tenant", t)).transpose()?;
    Ok(Json(hub.events(&p, tenant.as_ref(), q.limit.unwrap_or(100)).await?))
}
