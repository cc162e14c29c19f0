//! The HTTP API: one module per capability, each registering its routes through
//! [`ApiRoutes`], which only takes routes made by `utoipa_axum::routes!` from handlers
//! described with `#[utoipa::path]`; so no route exists without being in the OpenAPI
//! document. Handlers authenticate (the [`Principal`] and [`HostCaller`] extractors),
//! parse path and query values into typed ones, and call the capability on [`Hub`];
//! the capability authorizes, locks, stores, decides and leaves events.
//! Every bad request is answered as `{code, message}`.

mod agents;
mod backups;
mod contract;
mod events;
mod files;
mod hosts;
mod images;
mod instances;
mod meta;
mod network;
mod operations;
mod pools;
mod snapshots;
mod moves;
mod proxy;
mod secrets;
mod sessions;
mod ssh_keys;
mod tenants;
mod tokens;

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::Hub;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::{Json, Router};
use hangar_store::HostRecord;
use hangar_tls::serve::PeerInfo;
use hangar_types::api::Operation;
use hangar_types::ApiError;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

pub type AppState = Arc<Hub>;

impl FromRequestParts<AppState> for Principal {
    type Rejection = HubError;
    async fn from_request_parts(parts: &mut Parts, hub: &AppState) -> Result<Self, HubError> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        // The route's template, so the role check sees `{tenant}`, not a tenant's name.
        let route = parts.extensions.get::<axum::extract::MatchedPath>().map(|m| m.as_str()).unwrap_or(parts.uri.path());
        hub.authenticate(header, parts.extensions.get::<PeerInfo>().map(|c| c.addr), crate::auth::Access::Route(&parts.method, route)).await
    }
}

/// A caller authenticated by its host certificate.
pub struct HostCaller(pub HostRecord);

impl FromRequestParts<AppState> for HostCaller {
    type Rejection = HubError;
    async fn from_request_parts(parts: &mut Parts, hub: &AppState) -> Result<Self, HubError> {
        let peer = parts.extensions.get::<PeerInfo>();
        let fp = peer.and_then(|c| c.fingerprint.clone());
        Ok(HostCaller(hub.authenticate_host(fp.as_deref(), peer.map(|c| c.addr)).await?))
    }
}

/// JSON body whose rejections (syntax, unknown or missing fields) are `{code, message}`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = HubError;
    async fn from_request(req: Request, state: &S) -> Result<Self, HubError> {
        match Json::<serde_json::Value>::from_request(req, state).await {
            // Every request body is an object (serde would also read a struct from an array).
            Ok(Json(v)) if !v.is_object() => Err(HubError::invalid("request body: must be a JSON object")),
            Ok(Json(mut v)) => {
                contract::integral_numbers(&mut v);
                serde_path_to_error::deserialize(v).map(ApiJson).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if path == "." { HubError::invalid(format!("request body: {inner}")) } else { HubError::invalid(format!("request body: {path}: {inner}")) }
                })
            }
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

pub(crate) type Accepted = (StatusCode, Json<Operation>);

pub(crate) fn accepted(op: Operation) -> Accepted {
    (StatusCode::ACCEPTED, Json(op))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "hangar hub API", description = "Control plane of a hangar fleet. Errors are `{code, message}`."),
    components(schemas(ApiError, hangar_types::ErrorCode)),
    modifiers(&SecurityAddon)
)]
struct ApiDoc;

struct SecurityAddon;
impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme("token", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// Routes with their OpenAPI description. The only way in is [`ApiRoutes::routes`]
/// with the output of `utoipa_axum::routes!`; it also keeps the table of what it
/// registered, for tests to check against the committed document.
pub struct ApiRoutes {
    router: OpenApiRouter<AppState>,
    table: Vec<(String, String)>,
}

impl ApiRoutes {
    fn new() -> ApiRoutes {
        ApiRoutes { router: OpenApiRouter::with_openapi(ApiDoc::openapi()), table: vec![] }
    }

    /// Handlers of one path (`routes!(a, b)` with a and b on the same path).
    fn routes(mut self, routes: UtoipaMethodRouter<AppState>) -> ApiRoutes {
        let paths = &routes.1.paths;
        assert_eq!(paths.len(), 1, "one routes!() per path, or each path gets every handler");
        for (path, item) in paths {
            let methods = serde_json::to_value(item).ok().and_then(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>())).unwrap_or_default();
            for m in methods.into_iter().filter(|m| HTTP_METHODS.contains(&m.as_str())) {
                self.table.push((m.to_uppercase(), path.clone()));
            }
        }
        self.router = self.router.routes(routes);
        self
    }

    fn merge(mut self, other: ApiRoutes) -> ApiRoutes {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }
}

const HTTP_METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Every route of the API.
fn api() -> ApiRoutes {
    [
        meta::routes(),
        tenants::routes(),
        instances::routes(),
        pools::routes(),
        operations::routes(),
        events::routes(),
        network::routes(),
        tokens::routes(),
        hosts::routes(),
        agents::routes(),
        images::routes(),
        snapshots::routes(),
        secrets::routes(),
        proxy::routes(),
        sessions::routes(),
        ssh_keys::routes(),
        backups::routes(),
        files::routes(),
        moves::routes(),
    ]
        .into_iter()
        .fold(ApiRoutes::new(), ApiRoutes::merge)
}

/// The (METHOD, path) pairs the router serves, as registered.
pub fn route_table() -> Vec<(String, String)> {
    let mut t = api().table;
    t.sort();
    t
}

/// The OpenAPI document as committed in docs/openapi.json.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut doc = api().router.into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    // Operations list their (no) tags, as the document always did.
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.options, &mut item.head, &mut item.patch, &mut item.trace].into_iter().flatten() {
            op.tags.get_or_insert_with(Vec::new);
        }
    }
    contract::complete(&mut doc);
    doc
}

pub fn router(hub: AppState) -> Router {
    let (router, _) = api().router.split_for_parts();
    // The HTTP proxy: the workload's own HTTP, so not in the OpenAPI document (see `proxy`).
    let router = router.merge(proxy::proxy_router());
    router.fallback(|| async { HubError::not_found("no such API route: see /v1/openapi.json") }).with_state(hub)
}

/// `{tenant}` and the name after it (`what`: instance, pool) from a path, parsed.
fn tenant_and(what: &str, (tenant, name): (String, String)) -> HubResult<(hangar_types::Name, hangar_types::Name)> {
    Ok((crate::parse_name("tenant", &tenant)?, crate::parse_name(what, &name)?))
}
