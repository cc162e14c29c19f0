//! Interactive sessions (`instance exec -it`, the SSH gateway): the hub checks the
//! caller and the instance, opens the session on the instance's agent over mutual TLS,
//! and hands back the upgraded stream; from then on it only copies bytes (the frames
//! are the client's and the agent's business, see `hangar_types::session`).

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::Hub;
use hangar_client::session::Upgraded;
use hangar_types::session::SessionRequest;
use hangar_types::Name;

impl Hub {
    /// Opens a session in a running instance; the caller copies bytes to and from it.
    /// A tenant sees other tenants' instances as not found, like everywhere else.
    pub async fn session_open(&self, p: &Principal, tenant: &Name, name: &Name, req: &SessionRequest) -> HubResult<Upgraded> {
        req.validate().map_err(HubError::invalid)?;
        let inst = self.instance_get(p, tenant, name).await?;
        Self::require_running(&inst, "open a session in")?;
        let (agent, sandbox) = self.agent_for(&inst).await?;
        let res = agent.session(&sandbox, req).await;
        // The command line can hold secrets: record only its program name.
        let program = req.command.first().cloned().unwrap_or_default();
        let result = match &res {
            Ok(_) => "ok",
            Err(_) => "error",
        };
        let detail = match &res {
            Ok(_) => format!("{program}{}", if req.tty { " (tty)" } else { "" }),
            Err(e) => format!("{program}: {e}"),
        };
        self.event(&p.actor(), Some(&inst.tenant), format!("instance/{}/{}", inst.tenant, inst.name), "instance.session", result, Some(detail)).await;
        Ok(res?)
    }
}
