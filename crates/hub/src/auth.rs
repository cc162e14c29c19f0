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

/// Resolves an `Authorization: Bearer` header to a principal.
pub async fn authenticate(store: &dyn Store, header: Option<&str>) -> HubResult<Principal> {
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| HubError::new(ErrorCode::Unauthenticated, "missing bearer token: pass --token or set HANGAR_TOKEN"))?;
    match store.find_token(&hash_secret(token)).await? {
        Some(rec) => Ok(match rec.tenant {
            None => Principal::Admin,
            Some(t) => Principal::Tenant(t),
        }),
        None => Err(HubError::new(ErrorCode::Unauthenticated, "invalid token")),
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
