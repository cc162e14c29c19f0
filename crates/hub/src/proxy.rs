//! The HTTP proxy: `/proxy/{tenant}/{instance}/{port}/...` on the hub's listener,
//! forwarded over mutual TLS to the agent of the instance's host, which forwards it to
//! the sandbox's address on its tenant bridge ([`hangar_tls::forward`] on both legs:
//! HTTP/1.1, bodies streaming both ways, upgrades such as websockets spliced).
//!
//! Allowed with a proxy token for exactly that tenant, instance (by id: a later
//! instance of the same name is another) and port, unexpired and not revoked; or with
//! an API token that may see the tenant. Proxy tokens come as `Authorization: Bearer`,
//! once as `?token=` (answered with a cookie scoped to the proxied path), or as that
//! cookie; API tokens only in the header, so they never land in a cookie or a URL.
//! The workload sees neither the `Authorization` header nor the cookie, nor any
//! hop-by-hop header.

use crate::auth::{hash_secret, new_secret, Principal};
use crate::error::{HubError, HubResult};
use crate::Hub;
use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use axum::response::IntoResponse;
use hangar_store::ProxyTokenRecord;
use hangar_types::access::{proxy_path, ProxyTokenCreate, ProxyTokenCreated, ProxyTokenInfo, PROXY_COOKIE, PROXY_TOKEN_PREFIX};
use hangar_types::api::Instance;
use hangar_types::{ErrorCode, InstanceState, Name, ObservedState};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// How long the hub waits for an agent's TCP and TLS handshake.
const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a route (the instance, running, and its host's endpoint) read for one
/// request serves the next ones. Short, and only a shortcut: the agent forwards only
/// to sandboxes its last desired document wants running, so an instance stopped
/// meanwhile is refused there (503), never reached; that refusal drops the route and
/// the request is answered from the store (409 for a stopped instance).
const ROUTE_TTL: Duration = Duration::from_secs(1);

/// A connection to an agent's endpoint, its socket read a buffer at a time
/// ([`hangar_tls::stream`]), not 4 KiB at a time.
type AgentStream = tokio_rustls::client::TlsStream<tokio::io::BufReader<tokio::net::TcpStream>>;

/// Routes kept at most; past it the map starts over.
const ROUTES_MAX: usize = 4096;

/// What the proxy keeps between requests: a request that finds all three pays one
/// store read (the token epoch) and no handshake.
#[derive(Default)]
pub struct ProxyState {
    /// Idle connections to agents, by endpoint.
    pool: hangar_tls::forward::Pool,
    /// Proxy tokens verified before, by hash, good while the store's token epoch has
    /// not moved (revoking one moves it, on any hub), so a revocation is seen at once.
    tokens: crate::auth::TokenCache<ProxyTokenRecord>,
    /// Routes of running instances by (tenant, instance), each with when it was read.
    routes: std::sync::Mutex<std::collections::HashMap<(Name, Name), Arc<Route>>>,
    /// Agents' endpoints served in this process (`hangar up`'s own host), by URL.
    local: hangar_tls::serve::LocalEndpoints,
}

/// Where a running instance's proxied requests go.
struct Route {
    inst: Instance,
    host: hangar_store::HostRecord,
    endpoint: String,
    read_at: std::time::Instant,
}

fn info(r: &ProxyTokenRecord) -> ProxyTokenInfo {
    ProxyTokenInfo { id: r.id.clone(), tenant: r.tenant.clone(), instance: r.instance.clone(), port: r.port, created_at: r.created_at, expires_at: r.expires_at }
}

/// Where a proxied request goes, parsed from the path.
pub struct ProxyTarget {
    pub tenant: Name,
    pub instance: Name,
    pub port: u16,
}

impl ProxyTarget {
    pub fn parse(tenant: &str, instance: &str, port: &str) -> HubResult<ProxyTarget> {
        let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| HubError::invalid(format!("port: '{port}' is not a port (1-65535)")))?;
        Ok(ProxyTarget { tenant: crate::parse_name("tenant", tenant)?, instance: crate::parse_name("instance", instance)?, port })
    }
}

fn unauthenticated(message: &str) -> HubError {
    HubError::new(ErrorCode::Unauthenticated, message)
}

/// A proxy token from the query (`token=`) and the query without it.
fn query_token(query: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(q) = query else { return (None, None) };
    let mut token = None;
    let kept: Vec<&str> = q
        .split('&')
        .filter(|kv| match kv.strip_prefix("token=") {
            Some(t) => {
                token = Some(t.to_string());
                false
            }
            None => true,
        })
        .collect();
    (token, (!kept.is_empty()).then(|| kept.join("&")))
}

/// The proxy cookie's value, and the `Cookie` header without it (None if nothing
/// else is left).
fn split_cookie(headers: &axum::http::HeaderMap) -> (Option<String>, Option<String>) {
    let mut token = None;
    let mut rest = vec![];
    for v in headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()) {
        for c in v.split(';').map(str::trim).filter(|c| !c.is_empty()) {
            match c.strip_prefix(PROXY_COOKIE).and_then(|r| r.strip_prefix('=')) {
                Some(t) => token = Some(t.to_string()),
                None => rest.push(c.to_string()),
            }
        }
    }
    (token, (!rest.is_empty()).then(|| rest.join("; ")))
}

impl Hub {
    pub async fn proxy_token_create(&self, p: &Principal, tenant: &Name, name: &Name, req: ProxyTokenCreate) -> HubResult<ProxyTokenCreated> {
        let ttl = req.ttl().map_err(HubError::invalid)?;
        let inst = self.instance_get(p, tenant, name).await?;
        let secret = new_secret(PROXY_TOKEN_PREFIX);
        let now = OffsetDateTime::now_utc();
        let rec = ProxyTokenRecord {
            id: new_secret("ptk-")[..16].to_string(),
            hash: hash_secret(&secret),
            tenant: inst.tenant.clone(),
            instance: inst.name.clone(),
            instance_id: inst.id,
            port: req.port,
            created_at: now,
            expires_at: now + time::Duration::seconds(ttl as i64),
        };
        self.store.insert_proxy_token(&rec).await?;
        self.event(&p.actor(), Some(&inst.tenant), format!("instance/{}/{}", inst.tenant, inst.name), "proxy_token.create", "ok", Some(format!("{} port {} for {ttl}s", rec.id, rec.port))).await;
        Ok(ProxyTokenCreated { info: info(&rec), token: secret, path: proxy_path(&inst.tenant, &inst.name, req.port) })
    }

    pub async fn proxy_token_list(&self, p: &Principal, tenant: &Name, name: &Name) -> HubResult<Vec<ProxyTokenInfo>> {
        let inst = self.instance_get(p, tenant, name).await?;
        Ok(self.store.list_proxy_tokens(&inst.tenant, Some(&inst.name)).await?.iter().map(info).collect())
    }

    pub async fn proxy_token_revoke(&self, p: &Principal, tenant: &Name, name: &Name, id: &str) -> HubResult<ProxyTokenInfo> {
        let inst = self.instance_get(p, tenant, name).await?;
        let mine = self.store.list_proxy_tokens(&inst.tenant, Some(&inst.name)).await?.into_iter().find(|t| t.id == id);
        let Some(rec) = mine else {
            return Err(HubError::not_found(format!("proxy token '{id}' of instance '{}/{}' not found", inst.tenant, inst.name)));
        };
        if !self.store.delete_proxy_token(&inst.tenant, id).await? {
            return Err(HubError::not_found(format!("proxy token '{id}' of instance '{}/{}' not found", inst.tenant, inst.name)));
        }
        self.event(&p.actor(), Some(&inst.tenant), format!("instance/{}/{}", inst.tenant, inst.name), "proxy_token.revoke", "ok", Some(id.to_string())).await;
        Ok(info(&rec))
    }

    /// A proxy token's record, from the cache while the token epoch stands.
    async fn proxy_token_find(&self, token: &str) -> HubResult<ProxyTokenRecord> {
        let hash = hash_secret(token);
        let epoch = self.store.token_epoch().await?;
        if let Some(rec) = self.proxy.tokens.get(&hash, epoch) {
            return Ok(rec);
        }
        let rec = self.store.find_proxy_token(&hash).await?.ok_or_else(|| unauthenticated("invalid or revoked proxy token"))?;
        self.proxy.tokens.insert(hash, rec.clone(), epoch);
        Ok(rec)
    }

    /// Where a proxied request may go with `token`, or why not.
    async fn proxy_authorize(&self, t: &ProxyTarget, token: &str, from_header: bool) -> HubResult<Arc<Route>> {
        if token.starts_with(PROXY_TOKEN_PREFIX) {
            let rec = self.proxy_token_find(token).await?;
            if rec.expires_at <= OffsetDateTime::now_utc() {
                return Err(unauthenticated("this proxy token has expired: issue a new one with `hangar instance proxy-token`"));
            }
            if rec.tenant != t.tenant || rec.instance != t.instance || rec.port != t.port {
                return Err(unauthenticated("this proxy token is for another instance or port"));
            }
            let gone = || unauthenticated("the instance this proxy token was issued for is gone");
            let route = self.proxy_route(t, None).await.map_err(|e| if e.0.code == ErrorCode::NotFound { gone() } else { e })?;
            return if route.inst.id == rec.instance_id { Ok(route) } else { Err(gone()) };
        }
        if !from_header {
            return Err(unauthenticated("only proxy tokens may be passed in ?token= or a cookie; send API tokens as `Authorization: Bearer`"));
        }
        let p = self.authenticate(Some(&format!("Bearer {token}")), None, crate::auth::Access::Proxy).await?;
        p.check_tenant(&t.tenant)?;
        self.proxy_route(t, Some(&p)).await
    }

    /// The route to a running instance: kept for [`ROUTE_TTL`], else read (the instance
    /// as `p` sees it, or as it is) and kept if it runs.
    async fn proxy_route(&self, t: &ProxyTarget, p: Option<&Principal>) -> HubResult<Arc<Route>> {
        let key = (t.tenant.clone(), t.instance.clone());
        let routes = || self.proxy.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = routes().get(&key).filter(|r| r.read_at.elapsed() < ROUTE_TTL) {
            return Ok(r.clone());
        }
        let inst = match p {
            Some(p) => self.instance_get(p, &t.tenant, &t.instance).await?,
            None => self.store.get_instance(&t.tenant, &t.instance).await?.ok_or_else(|| HubError::not_found(format!("instance '{}/{}' not found", t.tenant, t.instance)))?,
        };
        if !(inst.state == InstanceState::Running && inst.observed == ObservedState::Running) {
            return Err(HubError::new(
                ErrorCode::IllegalTransition,
                format!("instance '{}/{}' is {} (observed {}): start it to reach port {}", inst.tenant, inst.name, inst.state, inst.observed, t.port),
            ));
        }
        let (host, endpoint) = self.placed_host(&inst).await?;
        let route = Arc::new(Route { inst, host, endpoint, read_at: std::time::Instant::now() });
        let mut all = routes();
        if all.len() >= ROUTES_MAX {
            all.clear();
        }
        all.insert(key, route.clone());
        Ok(route)
    }

    /// Forwards one proxied request; every refusal is `{code, message}`.
    pub async fn proxy(&self, t: ProxyTarget, req: Request<Body>) -> Response<Body> {
        match self.proxy_inner(t, req).await {
            Ok(r) => r,
            Err(e) => {
                let mut r = e.into_response();
                if r.status() == StatusCode::UNAUTHORIZED {
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"hangar proxy\""));
                }
                r
            }
        }
    }

    async fn proxy_inner(&self, t: ProxyTarget, mut req: Request<Body>) -> HubResult<Response<Body>> {
        let bearer = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|h| h.strip_prefix("Bearer ")).map(|t| t.trim().to_string());
        let (query_tok, query) = query_token(req.uri().query());
        let (cookie_tok, cookies) = split_cookie(req.headers());
        let (token, from_header) = match (bearer, &query_tok, cookie_tok) {
            (Some(b), _, _) => (b, true),
            (None, Some(q), _) => (q.clone(), false),
            (None, None, Some(c)) => (c, false),
            (None, None, None) => return Err(unauthenticated("this proxy needs a token: `Authorization: Bearer TOKEN` or ?token=TOKEN (see `hangar instance proxy-token`)")),
        };
        let asked_at = std::time::Instant::now();
        let route = self.proxy_authorize(&t, &token, from_header).await?;
        let (inst, host, endpoint) = (&route.inst, &route.host, route.endpoint.as_str());

        let prefix = proxy_path(&t.tenant, &t.instance, t.port);
        // The rest of the path as it came (still percent-encoded), not as decoded.
        let rest = hangar_tls::forward::path_after(req.uri().path(), 4).to_string();
        let path = format!("/v1/sandboxes/{}/proxy/{}/{rest}{}", inst.id.sandbox_id(), t.port, query.as_deref().map(|q| format!("?{q}")).unwrap_or_default());
        if let Some(host) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            req.headers_mut().entry(header::HOST).or_insert(host);
        }
        *req.uri_mut() = path.parse::<Uri>().map_err(|e| HubError::invalid(format!("path: {e}")))?;
        let h = req.headers_mut();
        let upgrade = hangar_tls::forward::is_upgrade(h);
        hangar_tls::forward::strip_hop_by_hop(h, upgrade);
        h.remove(header::AUTHORIZATION);
        h.remove(header::COOKIE);
        if let Some(c) = cookies.and_then(|c| HeaderValue::from_str(&c).ok()) {
            h.insert(header::COOKIE, c);
        }
        if let Ok(v) = HeaderValue::from_str(prefix.trim_end_matches('/')) {
            h.insert("x-forwarded-prefix", v);
        }
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let mut resp = match self.proxy.local.get(endpoint) {
            Some(local) => local.call(req).await,
            None => self.proxy_over_tls(host, endpoint, req, upgrade).await?,
        };
        // A kept route may be older than a stop: the agent then refuses (503). The store
        // says why (stopped: 409 "start it"); if it still has the instance running, the
        // answer stands.
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE && route.read_at < asked_at {
            self.proxy.routes.lock().unwrap_or_else(|e| e.into_inner()).remove(&(t.tenant.clone(), t.instance.clone()));
            self.proxy_route(&t, None).await?;
        }
        if let (Some(q), false) = (query_tok, from_header) {
            let cookie = format!("{PROXY_COOKIE}={q}; Path={prefix}; HttpOnly; Secure; SameSite=Lax");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        Ok(resp)
    }

    /// The proxied request sent to the agent at `endpoint` on a kept connection (or a
    /// new one), its answer streamed back.
    async fn proxy_over_tls(&self, host: &hangar_store::HostRecord, endpoint: &str, req: Request<Body>, upgrade: bool) -> HubResult<Response<Body>> {
        let failed = |e: hangar_tls::forward::ForwardError| HubError::new(ErrorCode::Unavailable, format!("host '{}' did not answer the proxied request: {e}", host.name));
        let pooled = if upgrade { None } else { self.proxy.pool.take(endpoint) };
        let (mut sender, fresh) = match pooled {
            Some(s) => (s, false),
            None => (hangar_tls::forward::handshake(self.connect_agent(host, endpoint).await?).await.map_err(failed)?, true),
        };
        let resp = match hangar_tls::forward::send_on(&mut sender, req).await {
            Ok(r) => r,
            // A kept connection the agent closed meanwhile: the request was not sent,
            // so it goes again on a new one.
            Err((_, Some(req))) if !fresh => {
                sender = hangar_tls::forward::handshake(self.connect_agent(host, endpoint).await?).await.map_err(failed)?;
                hangar_tls::forward::send_on(&mut sender, req).await.map_err(|(e, _)| failed(e))?
            }
            Err((e, _)) => return Err(failed(e)),
        };
        if !upgrade {
            self.proxy.pool.put(endpoint, sender);
        }
        Ok(resp)
    }

    /// The registry `hangar up`'s agent serves its endpoint in, for this hub.
    pub fn local_endpoints(&self) -> hangar_tls::serve::LocalEndpoints {
        self.proxy.local.clone()
    }

    async fn connect_agent(&self, agent_host: &hangar_store::HostRecord, endpoint: &str) -> HubResult<AgentStream> {
        let unavailable = |m: String| HubError::new(ErrorCode::Unavailable, m);
        let uri: Uri = endpoint.parse().map_err(|e| unavailable(format!("agent endpoint '{endpoint}': {e}")))?;
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(443);
        let server_name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| unavailable(format!("agent endpoint '{endpoint}': {e}")))?;
        let mut tls = self.agent_tls(agent_host).await?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            connector.connect(server_name, hangar_tls::stream::buffered(tcp)).await
        };
        match tokio::time::timeout(AGENT_CONNECT_TIMEOUT, connect).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(unavailable(format!("cannot reach the agent at {endpoint}: {e}"))),
            Err(_) => Err(unavailable(format!("the agent at {endpoint} did not answer within {}s", AGENT_CONNECT_TIMEOUT.as_secs()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_leaves_the_query() {
        assert_eq!(query_token(None), (None, None));
        assert_eq!(query_token(Some("token=hpt_x")), (Some("hpt_x".into()), None));
        assert_eq!(query_token(Some("a=1&token=hpt_x&b=2")), (Some("hpt_x".into()), Some("a=1&b=2".into())));
        assert_eq!(query_token(Some("a=1")), (None, Some("a=1".into())));
    }

    #[test]
    fn the_cookie_leaves_the_cookie_header() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; hangar_proxy_token=hpt_y; b=2"));
        assert_eq!(split_cookie(&h), (Some("hpt_y".into()), Some("a=1; b=2".into())));
        h.insert(header::COOKIE, HeaderValue::from_static("hangar_proxy_token=hpt_y"));
        assert_eq!(split_cookie(&h), (Some("hpt_y".into()), None));
    }

    #[test]
    fn targets_parse_with_named_errors() {
        assert!(ProxyTarget::parse("acme", "web", "8080").is_ok());
        assert!(ProxyTarget::parse("acme", "web", "0").err().unwrap().0.message.contains("port"));
        assert!(ProxyTarget::parse("acme", "web", "99999").err().unwrap().0.message.contains("port"));
        assert!(ProxyTarget::parse("Acme", "web", "80").err().unwrap().0.message.contains("tenant"));
    }
}
