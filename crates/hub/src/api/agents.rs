//! /v1/agent: the hub-agent protocol (join with a one-time token, then mTLS).

use super::{ApiJson, ApiQuery, ApiRoutes, AppState, HostCaller};
use crate::HubResult;
use axum::extract::State;
use axum::Json;
use hangar_tls::serve::PeerInfo;
use hangar_types::protocol::{AgentReport, DesiredDoc, JoinRequest, JoinResponse, RenewRequest, RenewResponse};
use hangar_types::{ApiError, Generation};
use serde::Deserialize;
use std::time::Duration;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(agent_ca)).routes(routes!(agent_join)).routes(routes!(agent_desired)).routes(routes!(agent_report)).routes(routes!(agent_renew))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct CaDoc {
    ca_pem: String,
}

#[utoipa::path(get, path = "/v1/agent/ca", responses((status = 200, body = CaDoc, description = "the fleet CA; joining agents check it against the pin in their token")))]
async fn agent_ca(State(hub): State<AppState>) -> Json<CaDoc> {
    Json(CaDoc { ca_pem: hub.keys.ca.cert_pem().to_string() })
}

#[utoipa::path(post, path = "/v1/agent/join", request_body = JoinRequest,
    responses((status = 200, body = JoinResponse), (status = 401, body = ApiError)))]
async fn agent_join(State(hub): State<AppState>, conn: Option<axum::Extension<PeerInfo>>, ApiJson(req): ApiJson<JoinRequest>) -> HubResult<Json<JoinResponse>> {
    let ip = conn.map(|c| c.addr.ip());
    Ok(Json(hub.join(req, ip).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DesiredQuery {
    /// Answer once the host's generation is above this.
    #[param(value_type = Option<i64>)]
    after: Option<Generation>,
    /// Seconds to hold the request (max 60).
    wait: Option<u64>,
}

#[utoipa::path(get, path = "/v1/agent/desired", params(DesiredQuery), description = "mTLS: host certificate required",
    responses((status = 200, body = DesiredDoc), (status = 401, body = ApiError)))]
async fn agent_desired(State(hub): State<AppState>, HostCaller(host): HostCaller, ApiQuery(q): ApiQuery<DesiredQuery>) -> HubResult<Json<DesiredDoc>> {
    Ok(Json(hub.desired_long_poll(&host, q.after, Duration::from_secs(q.wait.unwrap_or(0))).await?))
}

#[utoipa::path(post, path = "/v1/agent/report", request_body = AgentReport, description = "mTLS: host certificate required",
    responses((status = 200, description = "applied"), (status = 401, body = ApiError)))]
async fn agent_report(State(hub): State<AppState>, HostCaller(host): HostCaller, ApiJson(report): ApiJson<AgentReport>) -> HubResult<Json<serde_json::Value>> {
    hub.report(host, report).await?;
    Ok(Json(serde_json::json!({"ok": true})))
}

#[utoipa::path(post, path = "/v1/agent/renew", request_body = RenewRequest, description = "mTLS: host certificate required; a new certificate for a new key",
    responses((status = 200, body = RenewResponse), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 409, body = ApiError)))]
async fn agent_renew(State(hub): State<AppState>, conn: Option<axum::Extension<PeerInfo>>, HostCaller(host): HostCaller, ApiJson(req): ApiJson<RenewRequest>) -> HubResult<Json<RenewResponse>> {
    // The certificate this call came with: the one the renewed certificate replaces.
    let presented = conn.and_then(|c| c.fingerprint.clone()).unwrap_or_default();
    Ok(Json(hub.renew_host_cert(&host, &presented, req).await?))
}
