//! The audit log as users read it: a tenant sees its own events, an admin all.

use crate::auth::Principal;
use crate::error::HubResult;
use crate::Hub;
use hangar_types::api::Event;
use hangar_types::Name;

impl Hub {
    /// The newest `limit` events (1..=10,000), of one tenant or all the caller may see.
    pub async fn events(&self, p: &Principal, tenant: Option<&Name>, limit: u32) -> HubResult<Vec<Event>> {
        if !(1..=10_000).contains(&limit) {
            return Err(crate::HubError::invalid(format!("limit: must be between 1 and 10000, got {limit}")));
        }
        match (tenant, p) {
            (Some(t), _) => {
                let t = self.tenant_get(p, t).await?;
                Ok(self.store.list_events(Some(&t.name), limit).await?)
            }
            (None, Principal::Tenant(t)) => Ok(self.store.list_events(Some(t), limit).await?),
            (None, Principal::Admin) => Ok(self.store.list_events(None, limit).await?),
        }
    }
}
