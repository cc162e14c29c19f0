//! REST routes of /v1, their OpenAPI description, and the extractors that turn every
//! bad request into `{code, message}`.

use crate::auth::{authenticate, authenticate_host, Principal};
use crate::error::{HubError, HubResult};
use crate::Hub;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use hangar_store::HostRecord;
use hangar_tls::serve::PeerInfo;
use hangar_types::api::*;
use hangar_types::protocol::{AgentReport, DesiredDoc, JoinRequest, JoinResponse, PROTOCOL_VERSION};
use hangar_types::{ApiError, Transition};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

pub type AppState = Arc<Hub>;

impl FromRequestParts<AppState> for Principal {
    type Rejection = HubError;
    async fn from_request_parts(parts: &mut Parts, hub: &AppState) -> Result<Self, HubError> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        authenticate(hub.store.as_ref(), &hub.token_cache, header).await
    }
}

/// A caller authenticated by its host certificate.
pub struct HostCaller(pub HostRecord);

impl FromRequestParts<AppState> for HostCaller {
    type Rejection = HubError;
    async fn from_request_parts(parts: &mut Parts, hub: &AppState) -> Result<Self, HubError> {
        let fp = parts.extensions.get::<PeerInfo>().and_then(|c| c.fingerprint.clone());
        Ok(HostCaller(authenticate_host(hub.store.as_ref(), fp.as_deref()).await?))
    }
}

/// JSON body whose rejections (syntax, unknown or missing fields) are `{code, message}`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = HubError;
    async fn from_request(req: Request, state: &S) -> Result<Self, HubError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(HubError::invalid(format!("request body: {}", rej.body_text()))),
        }
    }
}

/// Query string with the same error shape.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = HubError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HubError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rej) => Err(HubError::invalid(format!("query: {}", rej.body_text()))),
        }
    }
}

type Accepted = (StatusCode, Json<Operation>);

fn accepted(op: Operation) -> Accepted {
    (StatusCode::ACCEPTED, Json(op))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "hangar hub API", description = "Control plane of a hangar fleet. Errors are `{code, message}`."),
    paths(
        info, openapi_json, tenant_create, tenant_list, tenant_info, tenant_destroy,
        instance_create, instance_list_tenant, instance_list_all, instance_get, instance_delete,
        instance_start, instance_stop, instance_warm, instance_resume, instance_exec, instance_logs, instance_stats,
        instance_sleep, pool_create, pool_list, pool_info, pool_scale, pool_delete,
        operation_get, operation_wait, events, net_verify, token_create, host_add, host_list, host_get,
        host_drain, host_undrain, host_stop, host_start, host_remove, host_status, host_desired,
        agent_ca, agent_join, agent_desired, agent_report,
    ),
    components(schemas(ApiError, hangar_types::ErrorCode)),
    modifiers(&SecurityAddon)
)]
pub struct ApiDoc;

struct SecurityAddon;
impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme("token", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// The OpenAPI document as committed in docs/openapi.json.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

pub fn router(hub: AppState) -> Router {
    let t = "/v1/tenants/{tenant}/instances/{name}";
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/v1/tenants", post(tenant_create).get(tenant_list))
        .route("/v1/tenants/{tenant}", get(tenant_info).delete(tenant_destroy))
        .route("/v1/tenants/{tenant}/instances", post(instance_create).get(instance_list_tenant))
        .route("/v1/instances", get(instance_list_all))
        .route(t, get(instance_get).delete(instance_delete))
        .route(&format!("{t}/start"), post(instance_start))
        .route(&format!("{t}/stop"), post(instance_stop))
        .route(&format!("{t}/warm"), post(instance_warm))
        .route(&format!("{t}/resume"), post(instance_resume))
        .route(&format!("{t}/sleep"), post(instance_sleep))
        .route("/v1/tenants/{tenant}/pools", post(pool_create).get(pool_list))
        .route("/v1/tenants/{tenant}/pools/{name}", get(pool_info).delete(pool_delete))
        .route("/v1/tenants/{tenant}/pools/{name}/scale", post(pool_scale))
        .route(&format!("{t}/exec"), post(instance_exec))
        .route(&format!("{t}/logs"), get(instance_logs))
        .route(&format!("{t}/stats"), get(instance_stats))
        .route("/v1/operations/{id}", get(operation_get))
        .route("/v1/operations/{id}/wait", get(operation_wait))
        .route("/v1/events", get(events))
        .route("/v1/network/verify", get(net_verify))
        .route("/v1/tokens", post(token_create))
        .route("/v1/hosts", post(host_add).get(host_list))
        .route("/v1/hosts/{name}", get(host_get).delete(host_remove))
        .route("/v1/hosts/{name}/drain", post(host_drain))
        .route("/v1/hosts/{name}/undrain", post(host_undrain))
        .route("/v1/hosts/{name}/stop", post(host_stop))
        .route("/v1/hosts/{name}/start", post(host_start))
        .route("/v1/hosts/{name}/status", get(host_status))
        .route("/v1/hosts/{name}/desired", get(host_desired))
        .route("/v1/agent/ca", get(agent_ca))
        .route("/v1/agent/join", post(agent_join))
        .route("/v1/agent/desired", get(agent_desired))
        .route("/v1/agent/report", post(agent_report))
        .fallback(|| async { HubError::not_found("no such API route: see /v1/openapi.json") })
        .with_state(hub)
}

#[utoipa::path(get, path = "/v1/info", responses((status = 200, body = HubInfo)))]
async fn info() -> Json<HubInfo> {
    Json(HubInfo { version: env!("CARGO_PKG_VERSION").into(), api_version: "v1".into(), protocol_version: PROTOCOL_VERSION })
}

#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "this document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}

#[utoipa::path(post, path = "/v1/tenants", request_body = TenantCreate, security(("token" = [])),
    responses((status = 200, body = Tenant), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn tenant_create(State(hub): State<AppState>, p: Principal, ApiJson(req): ApiJson<TenantCreate>) -> HubResult<Json<Tenant>> {
    Ok(Json(hub.tenant_create(&p, req).await?))
}

#[utoipa::path(get, path = "/v1/tenants", security(("token" = [])), responses((status = 200, body = Vec<Tenant>)))]
async fn tenant_list(State(hub): State<AppState>, p: Principal) -> HubResult<Json<Vec<Tenant>>> {
    Ok(Json(hub.tenant_list(&p).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}", security(("token" = [])), params(("tenant" = String, Path)),
    responses((status = 200, body = TenantInfo), (status = 404, body = ApiError)))]
async fn tenant_info(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>) -> HubResult<Json<TenantInfo>> {
    Ok(Json(hub.tenant_info(&p, &tenant).await?))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}", security(("token" = [])), params(("tenant" = String, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn tenant_destroy(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>) -> HubResult<Json<Tenant>> {
    Ok(Json(hub.tenant_destroy(&p, &tenant).await?))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/instances", request_body = InstanceCreate, security(("token" = [])),
    params(("tenant" = String, Path)),
    responses((status = 202, body = Operation), (status = 400, body = ApiError), (status = 422, body = ApiError), (status = 503, body = ApiError)))]
async fn instance_create(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>, ApiJson(req): ApiJson<InstanceCreate>) -> HubResult<Accepted> {
    Ok(accepted(hub.instance_create(&p, &tenant, req).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances", security(("token" = [])), params(("tenant" = String, Path), InstanceQuery),
    responses((status = 200, body = Vec<Instance>)))]
async fn instance_list_tenant(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>, ApiQuery(q): ApiQuery<InstanceQuery>) -> HubResult<Json<Vec<Instance>>> {
    Ok(Json(hub.instance_list(&p, Some(&tenant), q.pool.as_deref()).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct InstanceQuery {
    /// Only members of this pool.
    pool: Option<String>,
}

#[utoipa::path(get, path = "/v1/instances", security(("token" = [])), responses((status = 200, body = Vec<Instance>)))]
async fn instance_list_all(State(hub): State<AppState>, p: Principal) -> HubResult<Json<Vec<Instance>>> {
    Ok(Json(hub.instance_list(&p, None, None).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances/{name}", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)), responses((status = 200, body = Instance), (status = 404, body = ApiError)))]
async fn instance_get(State(hub): State<AppState>, p: Principal, Path((tenant, name)): Path<(String, String)>) -> HubResult<Json<Instance>> {
    Ok(Json(hub.instance_get(&p, &tenant, &name).await?))
}

macro_rules! instance_action {
    ($fn:ident, $method:ident, $suffix:literal, $t:expr) => {
        #[utoipa::path($method, path = concat!("/v1/tenants/{tenant}/instances/{name}", $suffix), security(("token" = [])),
            params(("tenant" = String, Path), ("name" = String, Path)),
            responses((status = 202, body = Operation), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
        async fn $fn(State(hub): State<AppState>, p: Principal, Path((tenant, name)): Path<(String, String)>) -> HubResult<Accepted> {
            Ok(accepted(hub.instance_request(&p, &tenant, &name, $t).await?))
        }
    };
}

instance_action!(instance_start, post, "/start", Transition::Start);
instance_action!(instance_stop, post, "/stop", Transition::Stop);
instance_action!(instance_warm, post, "/warm", Transition::Warm);
instance_action!(instance_resume, post, "/resume", Transition::Resume);
instance_action!(instance_sleep, post, "/sleep", Transition::Sleep);
instance_action!(instance_delete, delete, "", Transition::Delete);

#[utoipa::path(post, path = "/v1/tenants/{tenant}/pools", request_body = PoolCreate, security(("token" = [])), params(("tenant" = String, Path)),
    responses((status = 200, body = PoolInfo), (status = 400, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
async fn pool_create(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>, ApiJson(req): ApiJson<PoolCreate>) -> HubResult<Json<PoolInfo>> {
    Ok(Json(hub.pool_create(&p, &tenant, req).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/pools", security(("token" = [])), params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<PoolInfo>)))]
async fn pool_list(State(hub): State<AppState>, p: Principal, Path(tenant): Path<String>) -> HubResult<Json<Vec<PoolInfo>>> {
    Ok(Json(hub.pool_list(&p, &tenant).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/pools/{name}", security(("token" = [])), params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = PoolInfo), (status = 404, body = ApiError)))]
async fn pool_info(State(hub): State<AppState>, p: Principal, Path((tenant, name)): Path<(String, String)>) -> HubResult<Json<PoolInfo>> {
    Ok(Json(hub.pool_info(&p, &tenant, &name).await?))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/pools/{name}/scale", request_body = PoolScale, security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = PoolInfo, description = "new counts stored; `actions` is what the first pass did, `pool.last_error` why it stopped"),
        (status = 404, body = ApiError), (status = 422, body = ApiError)))]
async fn pool_scale(State(hub): State<AppState>, p: Principal, Path((tenant, name)): Path<(String, String)>, ApiJson(req): ApiJson<PoolScale>) -> HubResult<Json<PoolInfo>> {
    Ok(Json(hub.pool_scale(&p, &tenant, &name, req).await?))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/pools/{name}", security(("token" = [])), params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = PoolInfo), (status = 404, body = ApiError)))]
async fn pool_delete(State(hub): State<AppState>, p: Principal, Path((tenant, name)): Path<(String, String)>) -> HubResult<Json<PoolInfo>> {
    Ok(Json(hub.pool_delete(&p, &tenant, &name).await?))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/instances/{name}/exec", request_body = ExecRequest, security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = ExecResult), (status = 409, body = ApiError), (status = 503, body = ApiError)))]
async fn instance_exec(State(hub): State<AppState>, p: Principal, Path((tenant, name)): Path<(String, String)>, ApiJson(req): ApiJson<ExecRequest>) -> HubResult<Json<ExecResult>> {
    Ok(Json(hub.instance_exec(&p, &tenant, &name, req).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    /// How many of the last lines (default 100).
    lines: Option<u32>,
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances/{name}/logs", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path), LogsQuery), responses((status = 200, body = InstanceLogs)))]
async fn instance_logs(State(hub): State<AppState>, p: Principal, Path((tenant, name)): Path<(String, String)>, ApiQuery(q): ApiQuery<LogsQuery>) -> HubResult<Json<InstanceLogs>> {
    Ok(Json(hub.instance_logs(&p, &tenant, &name, q.lines.unwrap_or(100)).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/instances/{name}/stats", security(("token" = [])),
    params(("tenant" = String, Path), ("name" = String, Path)), responses((status = 200, body = InstanceStats), (status = 409, body = ApiError)))]
async fn instance_stats(State(hub): State<AppState>, p: Principal, Path((tenant, name)): Path<(String, String)>) -> HubResult<Json<InstanceStats>> {
    Ok(Json(hub.instance_stats(&p, &tenant, &name).await?))
}

#[utoipa::path(get, path = "/v1/operations/{id}", security(("token" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Operation), (status = 404, body = ApiError)))]
async fn operation_get(State(hub): State<AppState>, p: Principal, Path(id): Path<String>) -> HubResult<Json<Operation>> {
    Ok(Json(hub.operation_get(&p, &id).await?))
}

#[utoipa::path(get, path = "/v1/operations/{id}/wait", security(("token" = [])), params(("id" = String, Path), WaitQuery),
    responses((status = 200, body = Operation, description = "the operation, final or not once the timeout passed")))]
async fn operation_wait(State(hub): State<AppState>, p: Principal, Path(id): Path<String>, ApiQuery(q): ApiQuery<WaitQuery>) -> HubResult<Json<Operation>> {
    Ok(Json(hub.operation_wait(&p, &id, Duration::from_secs(q.timeout.unwrap_or(30))).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    tenant: Option<String>,
    /// The newest N events (default 100).
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/events", security(("token" = [])), params(EventsQuery), responses((status = 200, body = Vec<Event>)))]
async fn events(State(hub): State<AppState>, p: Principal, ApiQuery(q): ApiQuery<EventsQuery>) -> HubResult<Json<Vec<Event>>> {
    Ok(Json(hub.events(&p, q.tenant.as_deref(), q.limit.unwrap_or(100)).await?))
}

#[utoipa::path(get, path = "/v1/network/verify", security(("token" = [])),
    responses((status = 200, body = hangar_types::net::NetVerifyReport), (status = 403, body = ApiError)))]
async fn net_verify(State(hub): State<AppState>, p: Principal) -> HubResult<Json<hangar_types::net::NetVerifyReport>> {
    Ok(Json(hub.net_verify(&p).await?))
}

#[utoipa::path(post, path = "/v1/tokens", request_body = TokenCreate, security(("token" = [])),
    responses((status = 200, body = TokenCreated), (status = 403, body = ApiError)))]
async fn token_create(State(hub): State<AppState>, p: Principal, ApiJson(req): ApiJson<TokenCreate>) -> HubResult<Json<TokenCreated>> {
    Ok(Json(hub.token_create(&p, req).await?))
}

#[utoipa::path(post, path = "/v1/hosts", request_body = HostAdd, security(("token" = [])),
    responses((status = 200, body = HostJoinToken), (status = 409, body = ApiError)))]
async fn host_add(State(hub): State<AppState>, p: Principal, ApiJson(req): ApiJson<HostAdd>) -> HubResult<Json<HostJoinToken>> {
    Ok(Json(hub.host_add(&p, req).await?))
}

#[utoipa::path(get, path = "/v1/hosts", security(("token" = [])), responses((status = 200, body = Vec<Host>)))]
async fn host_list(State(hub): State<AppState>, p: Principal) -> HubResult<Json<Vec<Host>>> {
    Ok(Json(hub.host_list(&p).await?))
}

#[utoipa::path(get, path = "/v1/hosts/{name}", security(("token" = [])), params(("name" = String, Path)),
    responses((status = 200, body = Host), (status = 404, body = ApiError)))]
async fn host_get(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<Host>> {
    Ok(Json(hub.host_get(&p, &name).await?))
}

macro_rules! host_action {
    ($fn:ident, $suffix:literal, $call:expr) => {
        #[utoipa::path(post, path = concat!("/v1/hosts/{name}/", $suffix), security(("token" = [])), params(("name" = String, Path)),
            responses((status = 200, body = Host), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 503, body = ApiError)))]
        async fn $fn(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<Host>> {
            let f = $call;
            Ok(Json(f(hub, p, name).await?))
        }
    };
}

host_action!(host_drain, "drain", |hub: AppState, p: Principal, name: String| async move { hub.host_drain(&p, &name, true).await });
host_action!(host_undrain, "undrain", |hub: AppState, p: Principal, name: String| async move { hub.host_drain(&p, &name, false).await });
host_action!(host_stop, "stop", |hub: AppState, p: Principal, name: String| async move { hub.host_stop(&p, &name).await });
host_action!(host_start, "start", |hub: AppState, p: Principal, name: String| async move { hub.host_start(&p, &name).await });

#[utoipa::path(delete, path = "/v1/hosts/{name}", security(("token" = [])), params(("name" = String, Path)),
    responses((status = 200, body = Host), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn host_remove(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<Host>> {
    Ok(Json(hub.host_remove(&p, &name).await?))
}

#[utoipa::path(get, path = "/v1/hosts/{name}/status", security(("token" = [])), params(("name" = String, Path)),
    responses((status = 200, body = NodeStatus, description = "read live from the host's agent"), (status = 503, body = ApiError)))]
async fn host_status(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<NodeStatus>> {
    Ok(Json(hub.host_status(&p, &name).await?))
}

#[utoipa::path(get, path = "/v1/hosts/{name}/desired", security(("token" = [])), params(("name" = String, Path)),
    responses((status = 200, body = DesiredDoc), (status = 404, body = ApiError)))]
async fn host_desired(State(hub): State<AppState>, p: Principal, Path(name): Path<String>) -> HubResult<Json<DesiredDoc>> {
    Ok(Json(hub.host_desired(&p, &name).await?))
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
struct DesiredQuery {
    /// Answer once the host's generation is above this.
    after: Option<i64>,
    /// Seconds to hold the request (max 60).
    wait: Option<u64>,
}

#[utoipa::path(get, path = "/v1/agent/desired", params(DesiredQuery), description = "mTLS: host certificate required",
    responses((status = 200, body = DesiredDoc), (status = 401, body = ApiError)))]
async fn agent_desired(State(hub): State<AppState>, HostCaller(host): HostCaller, ApiQuery(q): ApiQuery<DesiredQuery>) -> HubResult<Json<DesiredDoc>> {
    Ok(Json(hub.desired_long_poll(&host, q.after.unwrap_or(-1), Duration::from_secs(q.wait.unwrap_or(0))).await?))
}

#[utoipa::path(post, path = "/v1/agent/report", request_body = AgentReport, description = "mTLS: host certificate required",
    responses((status = 200, description = "applied"), (status = 401, body = ApiError)))]
async fn agent_report(State(hub): State<AppState>, HostCaller(host): HostCaller, ApiJson(report): ApiJson<AgentReport>) -> HubResult<Json<serde_json::Value>> {
    hub.report(host, report).await?;
    Ok(Json(serde_json::json!({"ok": true})))
}
