//! /v1/tenants/{tenant}/instances/{name}/session: an interactive session, upgraded from
//! HTTP/1.1 (`Upgrade: hangar-session`) and spliced to the instance's agent.

use super::{tenant_and, ApiRoutes, AppState};
use crate::{HubError, HubResult, Principal};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use hangar_types::session::{SessionRequest, UPGRADE_PROTOCOL};
use hangar_types::ApiError;
use utoipa_axum::routes;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(instance_session))
}

/// Runs a command in the instance with a PTY (`tty`) or pipes. The request needs
/// `Connection: upgrade` and `Upgrade: hangar-session` over HTTP/1.1; on 101 the
/// connection carries session frames both ways (see `hangar_types::session`): stdin,
/// stdin EOF and resizes in; stdout, stderr, an error and the exit status out.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/instances/{name}/session", request_body = SessionRequest, security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 101, description = "switching to the session's frames"), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 429, body = ApiError), (status = 503, body = ApiError)))]
async fn instance_session(State(hub): State<AppState>, p: Principal, Path(names): Path<(String, String)>, mut req: Request) -> HubResult<Response> {
    let (tenant, name) = tenant_and("instance", names)?;
    let asked = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    // An upgrade exists only in HTTP/1.1 (HTTP/2 would need extended CONNECT).
    if !asked.eq_ignore_ascii_case(UPGRADE_PROTOCOL) || req.version() != axum::http::Version::HTTP_11 {
        return Err(HubError::invalid(format!("a session needs the header 'Upgrade: {UPGRADE_PROTOCOL}' over HTTP/1.1")));
    }
    let client = hyper::upgrade::on(&mut req);
    let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.map_err(|e| HubError::invalid(format!("request body: {e}")))?;
    let sreq: SessionRequest = serde_json::from_slice(&body).map_err(|e| HubError::invalid(format!("request body: {e}")))?;
    let mut agent = hub.session_open(&p, &tenant, &name, &sreq).await?;
    tokio::spawn(async move {
        match client.await {
            Ok(u) => {
                let mut client = hyper_util::rt::TokioIo::new(u);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut agent).await;
            }
            Err(e) => tracing::debug!(error = %e, "session upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, UPGRADE_PROTOCOL)
        .body(axum::body::Body::empty())
        .map_err(|e| HubError::internal(e.to_string()))
}
