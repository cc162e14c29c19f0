//! API tokens: an admin token, or one scoped to a tenant, either of them possibly
//! read-only (role `viewer`, checked in [`crate::auth`]), optionally expiring. Only the
//! hash is stored; the secret is shown once, at creation. Revoking removes the token
//! and moves the store's token epoch in one transaction, so every hub's cache drops it
//! at once (see [`crate::auth::TokenCache`]).

use crate::auth::{hash_secret, new_secret, Principal};
use crate::error::{HubError, HubResult};
use crate::Hub;
use hangar_store::TokenRecord;
use hangar_types::api::{Token, TokenCreate, TokenCreated, TokenRole};
use hangar_types::{ErrorCode, TokenId};
use time::OffsetDateTime;

/// The longest `ttl_secs` a token may ask for (ten years).
pub const TOKEN_TTL_MAX_SECS: u64 = 10 * 365 * 24 * 3600;
/// The longest description kept.
pub const TOKEN_DESCRIPTION_MAX: usize = 200;

impl Hub {
    pub async fn token_create(&self, p: &Principal, req: TokenCreate) -> HubResult<TokenCreated> {
        p.require_admin()?;
        let role = match (req.role, &req.tenant) {
            (None | Some(TokenRole::Admin), None) => TokenRole::Admin,
            (None | Some(TokenRole::Tenant), Some(_)) => TokenRole::Tenant,
            (Some(TokenRole::Viewer), _) => TokenRole::Viewer,
            (Some(TokenRole::Admin), Some(_)) => {
                return Err(HubError::new(ErrorCode::Unprocessable, "role: an admin token has no tenant: leave out tenant, or ask for role tenant or viewer"))
            }
            (Some(TokenRole::Tenant), None) => return Err(HubError::new(ErrorCode::Unprocessable, "tenant: a tenant token needs the tenant it is for")),
        };
        if let Some(t) = &req.tenant {
            self.tenant_get(p, t).await?;
        }
        if req.ttl_secs.is_some_and(|s| s == 0 || s > TOKEN_TTL_MAX_SECS) {
            return Err(HubError::invalid(format!("ttl_secs: must be between 1 and {TOKEN_TTL_MAX_SECS} (ten years)")));
        }
        if req.description.as_ref().is_some_and(|d| d.chars().count() > TOKEN_DESCRIPTION_MAX) {
            return Err(HubError::invalid(format!("description: at most {TOKEN_DESCRIPTION_MAX} characters")));
        }
        let secret = new_secret("hat_");
        let now = OffsetDateTime::now_utc();
        let rec = TokenRecord {
            id: TokenId::new(),
            hash: hash_secret(&secret),
            tenant: req.tenant.clone(),
            role,
            description: req.description,
            created_at: now,
            expires_at: req.ttl_secs.map(|s| now + time::Duration::seconds(s as i64)),
            last_used_at: None,
        };
        self.store.insert_token(&rec).await?;
        let mut scope = req.tenant.as_ref().map(|t| format!("tenant {t}")).unwrap_or_else(|| "admin".into());
        scope.push_str(&format!(", role {}", role.as_str()));
        if let Some(s) = req.ttl_secs {
            scope.push_str(&format!(", expires in {s}s"));
        }
        self.event(&p.actor(), req.tenant.as_ref(), format!("token/{}", rec.id), "token.create", "ok", Some(scope)).await;
        Ok(TokenCreated { id: rec.id, tenant: req.tenant, role, token: secret, expires_at: rec.expires_at })
    }

    /// Every token (admins), never a secret or hash; expired ones too, until revoked.
    pub async fn token_list(&self, p: &Principal) -> HubResult<Vec<Token>> {
        p.require_admin()?;
        Ok(self.store.list_tokens().await?.into_iter().map(token_view).collect())
    }

    /// Removes a token; it is refused at once on every hub sharing the store.
    pub async fn token_revoke(&self, p: &Principal, id: &str) -> HubResult<Token> {
        self.token_revoke_by(p, id, None).await
    }

    /// Revokes a token, but not the one the request presents (`bearer`, the whole
    /// `Authorization` header): a caller revoking its own token would lock itself out,
    /// and with the last admin token everyone. Revoke it with another admin token.
    pub async fn token_revoke_by(&self, p: &Principal, id: &str, bearer: Option<&str>) -> HubResult<Token> {
        p.require_admin()?;
        let id: TokenId = id.parse().map_err(|e| HubError::invalid(format!("id: {e}")))?;
        let rec = self.store.list_tokens().await?.into_iter().find(|t| t.id == id).ok_or_else(|| HubError::not_found(format!("token '{id}' not found")))?;
        let presented = bearer.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).map(hash_secret);
        if presented.as_deref() == Some(rec.hash.as_str()) {
            return Err(HubError::new(
                ErrorCode::Conflict,
                format!("token '{id}' is the one this request uses: create another admin token (`hangar token create`) and revoke this one with it"),
            ));
        }
        self.token_cache.invalidate();
        let removed = self.store.delete_token(&id).await?;
        self.token_cache.invalidate();
        if !removed {
            return Err(HubError::not_found(format!("token '{id}' not found")));
        }
        self.event(&p.actor(), rec.tenant.as_ref(), format!("token/{id}"), "token.revoke", "ok", None).await;
        Ok(token_view(rec))
    }
}

fn token_view(t: TokenRecord) -> Token {
    Token { id: t.id, tenant: t.tenant, role: t.role, description: t.description, created_at: t.created_at, expires_at: t.expires_at, last_used_at: t.last_used_at }
}
