//! API tokens: an admin token, or one scoped to a tenant. Only the hash is stored; the
//! secret is shown once, at creation.

use crate::auth::{hash_secret, new_secret, Principal};
use crate::error::HubResult;
use crate::Hub;
use hangar_store::TokenRecord;
use hangar_types::api::{TokenCreate, TokenCreated};
use hangar_types::TokenId;
use time::OffsetDateTime;

impl Hub {
    pub async fn token_create(&self, p: &Principal, req: TokenCreate) -> HubResult<TokenCreated> {
        p.require_admin()?;
        if let Some(t) = &req.tenant {
            self.tenant_get(p, t).await?;
        }
        let secret = new_secret("hat_");
        let rec = TokenRecord {
            id: TokenId::new(),
            hash: hash_secret(&secret),
            tenant: req.tenant.clone(),
            description: req.description,
            created_at: OffsetDateTime::now_utc(),
        };
        self.store.insert_token(&rec).await?;
        let scope = req.tenant.as_ref().map(|t| format!("tenant {t}")).unwrap_or_else(|| "admin".into());
        self.event(&p.actor(), req.tenant.as_ref(), format!("token/{}", rec.id), "token.create", "ok", Some(scope)).await;
        Ok(TokenCreated { id: rec.id, tenant: req.tenant, token: secret })
    }
}
