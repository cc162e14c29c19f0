//! Who is calling: bearer tokens for users (admin or one tenant), client certificates
//! for hosts. Tokens are stored hashed; a token scoped to one tenant sees other tenants
//! as not found, so names do not leak. A token's role is checked here, once for every
//! route ([`Access`]): a `viewer` token may only read, whatever handler a request reaches.

use crate::error::{HubError, HubResult};
use hangar_store::HostRecord;
use hangar_types::api::TokenRole;
use hangar_types::{ErrorCode, Name, TokenId};
use time::OffsetDateTime;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The verified caller of a user API request.
#[derive(Clone, Debug, PartialEq)]
pub enum Principal {
    Admin,
    Tenant(Name),
}

impl Principal {
    /// The actor string recorded in events.
    pub fn actor(&self) -> String {
        match self {
            Principal::Admin => "admin".into(),
            Principal::Tenant(t) => format!("tenant:{t}"),
        }
    }

    /// Fails with not_found (not forbidden) for a tenant the caller may not see.
    pub fn check_tenant(&self, tenant: &Name) -> HubResult<()> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Tenant(t) if t == tenant => Ok(()),
            Principal::Tenant(_) => Err(HubError::not_found(format!("tenant '{tenant}' not found"))),
        }
    }

    pub fn require_admin(&self) -> HubResult<()> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Tenant(_) => Err(HubError::new(ErrorCode::Forbidden, "this needs an admin token")),
        }
    }
}

/// What a request would do, for the role check in [`crate::Hub::authenticate`].
#[derive(Clone, Copy, Debug)]
pub enum Access<'a> {
    /// An API route: its method and its route template, e.g.
    /// `/v1/tenants/{tenant}/instances/{name}/files`.
    Route(&'a axum::http::Method, &'a str),
    /// The HTTP proxy into a workload (whatever it does there is the workload's to say).
    Proxy,
}

/// GET routes a viewer may not use: they hand out a workload's data or keys, not the
/// control plane's state.
pub const VIEWER_DENIED_READS: &[&str] = &[
    "/v1/tenants/{tenant}/instances/{name}/files",
    "/v1/tenants/{tenant}/backup-key",
];

impl Access<'_> {
    /// Whether a read-only (`viewer`) token may do this: GET and HEAD, but not
    /// [`VIEWER_DENIED_READS`]; never the proxy.
    pub fn read_only(&self) -> bool {
        match self {
            Access::Route(m, route) => (**m == axum::http::Method::GET || **m == axum::http::Method::HEAD) && !VIEWER_DENIED_READS.contains(route),
            Access::Proxy => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Access::Route(m, route) => format!("{m} {route}"),
            Access::Proxy => "reach a workload through the proxy".into(),
        }
    }
}

/// SHA-256 hex of a secret: what the store keeps instead of the secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh random secret with a prefix that says what it is (`hat_` admin/tenant API
/// token, `hjt1` join token), so leaked secrets are recognisable.
pub fn new_secret(prefix: &str) -> String {
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}

impl crate::Hub {
    /// Resolves an `Authorization: Bearer` header to a principal: from the token cache
    /// when the token was verified before and no token was removed since (on any hub:
    /// the store's token epoch says), else from the store. Expired tokens are refused at
    /// once; failures leave a rate-limited `auth.fail` event with the source address,
    /// never the presented secret; each token is held to its request rate. A `viewer`
    /// token is refused (403, naming its role) anything `access` says is not a read.
    pub async fn authenticate(&self, header: Option<&str>, peer: Option<std::net::SocketAddr>, access: Access<'_>) -> HubResult<Principal> {
        match self.authenticate_token(header).await {
            Ok((id, p, role)) => {
                self.auth_guard.admit(&id)?;
                if role == TokenRole::Viewer && !access.read_only() {
                    return Err(HubError::new(
                        ErrorCode::Forbidden,
                        format!("this token's role is viewer (read-only): it may not {}; use a tenant or admin token", access.describe()),
                    ));
                }
                Ok(p)
            }
            Err(e) => {
                if e.0.code == ErrorCode::Unauthenticated {
                    self.auth_failed(peer, &e.0.message).await;
                }
                Err(e)
            }
        }
    }

    async fn authenticate_token(&self, header: Option<&str>) -> HubResult<(TokenId, Principal, TokenRole)> {
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| HubError::new(ErrorCode::Unauthenticated, "missing bearer token: pass --token or set HANGAR_TOKEN"))?;
        let hash = hash_secret(token);
        let now = OffsetDateTime::now_utc();
        let expired = || HubError::new(ErrorCode::Unauthenticated, "token expired: ask an admin for a new one (`hangar token create`)");
        let epoch = self.store.token_epoch().await?;
        let cache = &self.token_cache;
        if let Some(hit) = cache.get(&hash, epoch) {
            if hit.expires_at.is_some_and(|at| at <= now) {
                return Err(expired());
            }
            if cache.due_for_touch(&hash) {
                let _ = self.store.touch_token(&hit.id, now).await;
            }
            return Ok((hit.id, hit.principal, hit.role));
        }
        match self.store.find_token(&hash).await? {
            Some(rec) => {
                if rec.expires_at.is_some_and(|at| at <= now) {
                    return Err(expired());
                }
                let p = match rec.tenant {
                    None => Principal::Admin,
                    Some(t) => Principal::Tenant(t),
                };
                let _ = self.store.touch_token(&rec.id, now).await;
                cache.insert(hash, CachedToken { id: rec.id.clone(), principal: p.clone(), role: rec.role, expires_at: rec.expires_at }, epoch);
                Ok((rec.id, p, rec.role))
            }
            None => Err(HubError::new(ErrorCode::Unauthenticated, "invalid token")),
        }
    }

    /// Resolves a TLS client certificate fingerprint to the host it was issued to (its
    /// current certificate, or the renewed one, which then becomes its only one).
    pub async fn authenticate_host(&self, fingerprint: Option<&str>, peer: Option<std::net::SocketAddr>) -> HubResult<HostRecord> {
        let r = async {
            let fp = fingerprint.ok_or_else(|| HubError::new(ErrorCode::Unauthenticated, "agent calls need a client certificate: join the host first"))?;
            if let Some(h) = self.store.get_host_by_fingerprint(fp).await? {
                return Ok(h);
            }
            self.store.promote_host_cert(fp).await?.ok_or_else(|| HubError::new(ErrorCode::Unauthenticated, "unknown client certificate (a removed host, or a certificate that was renewed)"))
        }
        .await;
        match &r {
            Err(e) if e.0.code == ErrorCode::Unauthenticated => self.auth_failed(peer, &e.0.message).await,
            _ => {}
        }
        r
    }

    /// Records a failed authentication, at most [`AUTH_EVENTS_PER_MINUTE`] a minute; the
    /// ones over are counted and summed up in the next minute's first event.
    pub(crate) async fn auth_failed(&self, peer: Option<std::net::SocketAddr>, why: &str) {
        let Some(suppressed) = self.auth_guard.failure_event_allowed() else { return };
        let from = peer.map(|a| a.ip().to_string()).unwrap_or_else(|| "unknown".into());
        let mut msg = format!("{why} (from {from})");
        if suppressed > 0 {
            msg.push_str(&format!("; {suppressed} more failed authentications before this one were not recorded"));
        }
        self.event("anonymous", None, format!("peer/{from}"), "auth.fail", "error", Some(msg)).await;
    }
}

/// A verified token as the cache keeps it.
#[derive(Clone, Debug)]
pub(crate) struct CachedToken {
    id: TokenId,
    principal: Principal,
    role: TokenRole,
    expires_at: Option<OffsetDateTime>,
}

/// Tokens already verified, by hash: good while the store's token epoch is the one they
/// were read at (anything that removes tokens moves it, on any hub), so a removed token
/// is refused at once everywhere. [`TokenCache::invalidate`] also empties it locally.
/// The proxy keeps its proxy tokens in one too (`T` = the token's record).
pub(crate) struct TokenCache<T = CachedToken> {
    inner: std::sync::Mutex<CacheInner<T>>,
}

impl<T> Default for TokenCache<T> {
    fn default() -> Self {
        TokenCache { inner: std::sync::Mutex::new(CacheInner { store_epoch: 0, local_epoch: 0, entries: Default::default() }) }
    }
}

struct CacheInner<T> {
    /// The store's token epoch the entries were read at.
    store_epoch: u64,
    /// Local invalidations: a lookup that raced one does not enter the cache.
    local_epoch: u64,
    entries: std::collections::HashMap<String, (T, std::time::Instant)>,
}

/// More distinct tokens than this and the cache starts over.
const TOKEN_CACHE_MAX: usize = 4096;
/// How often a token's last use is written at most.
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl<T: Clone> TokenCache<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, hash: &str, store_epoch: u64) -> Option<T> {
        let mut g = self.lock();
        if g.store_epoch != store_epoch {
            g.store_epoch = store_epoch;
            g.local_epoch += 1;
            g.entries.clear();
            return None;
        }
        g.entries.get(hash).map(|(t, _)| t.clone())
    }

    fn due_for_touch(&self, hash: &str) -> bool {
        let mut g = self.lock();
        match g.entries.get_mut(hash) {
            Some((_, at)) if at.elapsed() >= TOUCH_EVERY => {
                *at = std::time::Instant::now();
                true
            }
            _ => false,
        }
    }

    pub(crate) fn insert(&self, hash: String, t: T, store_epoch: u64) {
        let mut g = self.lock();
        if g.store_epoch != store_epoch {
            return;
        }
        if g.entries.len() >= TOKEN_CACHE_MAX {
            g.entries.clear();
        }
        g.entries.insert(hash, (t, std::time::Instant::now()));
    }

    /// Forgets every cached token (before and after the store removes some).
    pub fn invalidate(&self) {
        let mut g = self.lock();
        g.local_epoch += 1;
        // Forces the next lookup to re-read the store's epoch into a fresh cache.
        g.store_epoch = u64::MAX;
        g.entries.clear();
    }
}

/// How many failed authentications a minute become events.
pub const AUTH_EVENTS_PER_MINUTE: u32 = 20;

/// Per-token request rates and the budget of failed-authentication events.
pub(crate) struct AuthGuard {
    /// Requests a second a token may make on average, and in a burst.
    rate: f64,
    burst: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<TokenId, (f64, std::time::Instant)>>,
    failures: std::sync::Mutex<(std::time::Instant, u32, u32)>,
}

impl AuthGuard {
    pub(crate) fn new(rate: f64, burst: f64) -> AuthGuard {
        AuthGuard { rate, burst, buckets: Default::default(), failures: std::sync::Mutex::new((std::time::Instant::now(), 0, 0)) }
    }

    /// Takes one request from the token's bucket, or answers 429 saying when to retry.
    fn admit(&self, id: &TokenId) -> HubResult<()> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = std::time::Instant::now();
        let mut g = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() > TOKEN_CACHE_MAX {
            g.clear();
        }
        let (level, at) = g.entry(id.clone()).or_insert((self.burst, now));
        *level = (*level + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - *level) / self.rate).ceil().max(1.0) as u64;
        Err(HubError::new(ErrorCode::TooManyRequests, format!("token {id} is over its rate of {} requests a second: retry in {wait}s", self.rate)))
    }

    /// Whether a failed authentication may become an event now; with how many were
    /// left out before it.
    fn failure_event_allowed(&self) -> Option<u32> {
        let mut g = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (start, recorded, suppressed) = &mut *g;
        if start.elapsed() >= std::time::Duration::from_secs(60) {
            *start = std::time::Instant::now();
            *recorded = 0;
        }
        if *recorded >= AUTH_EVENTS_PER_MINUTE {
            *suppressed += 1;
            return None;
        }
        *recorded += 1;
        Some(std::mem::take(suppressed))
    }
}
