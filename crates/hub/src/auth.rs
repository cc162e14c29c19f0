//! Who is calling: bearer tokens for users (admin or one tenant), client certificates
//! for hosts. Tokens are stored hashed; a token scoped to one tenant sees other tenants
//! as not found, so names do not leak.

use crate::error::{HubError, HubResult};
use hangar_store::{HostRecord, Store};
use hangar_types::{ErrorCode, Name};
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

/// Resolves an `Authorization: Bearer` header to a principal: from `cache` when the
/// token was seen before, else from the store.
pub async fn authenticate(store: &dyn Store, cache: &TokenCache, header: Option<&str>) -> HubResult<Principal> {
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| HubError::new(ErrorCode::Unauthenticated, "missing bearer token: pass --token or set HANGAR_TOKEN"))?;
    let hash = hash_secret(token);
    if let Some(p) = cache.get(&hash) {
        return Ok(p);
    }
    let epoch = cache.epoch();
    match store.find_token(&hash).await? {
        Some(rec) => {
            let p = match rec.tenant {
                None => Principal::Admin,
                Some(t) => Principal::Tenant(t),
            };
            cache.insert(hash, p.clone(), epoch);
            Ok(p)
        }
        None => Err(HubError::new(ErrorCode::Unauthenticated, "invalid token")),
    }
}

/// Tokens already verified, by hash: a store read less on every API call. Anything that
/// removes tokens calls [`TokenCache::invalidate`]; a lookup that raced with it does
/// not enter the cache (its epoch is over), so a removed token never comes back.
#[derive(Default)]
pub struct TokenCache {
    inner: std::sync::Mutex<(u64, std::collections::HashMap<String, Principal>)>,
}

/// More distinct tokens than this and the cache starts over.
const TOKEN_CACHE_MAX: usize = 4096;

impl TokenCache {
    fn get(&self, hash: &str) -> Option<Principal> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1.get(hash).cloned()
    }

    fn epoch(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn insert(&self, hash: String, p: Principal, epoch: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 != epoch {
            return;
        }
        if g.1.len() >= TOKEN_CACHE_MAX {
            g.1.clear();
        }
        g.1.insert(hash, p);
    }

    /// Forgets every cached token (before and after the store removes some).
    pub fn invalidate(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        g.1.clear();
    }
}

/// Resolves a TLS client certificate fingerprint to the host it was issued to.
pub async fn authenticate_host(store: &dyn Store, fingerprint: Option<&str>) -> HubResult<HostRecord> {
    let fp = fingerprint.ok_or_else(|| {
        HubError::new(ErrorCode::Unauthenticated, "agent calls need a client certificate: join the host first")
    })?;
    store
        .get_host_by_fingerprint(fp)
        .await?
        .ok_or_else(|| HubError::new(ErrorCode::Unauthenticated, "unknown client certificate"))
}
