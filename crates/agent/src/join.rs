//! `hangar agent join`: trade a one-time token for a host certificate.

use crate::identity::{AgentPaths, Identity};
use anyhow::{bail, Context, Result};
use hangar_client::HostClient;
use hangar_types::protocol::JoinRequest;

/// Joins the hub at `hub_url` with `token`; `names` are the DNS names/IPs the agent's
/// endpoint will be reached at. Refuses to overwrite an existing identity.
pub async fn join(paths: &AgentPaths, hub_url: &str, token: &str, names: Vec<String>) -> Result<Identity> {
    if paths.is_joined() {
        bail!("{} already holds a joined host identity: remove it first to join again", paths.root.display());
    }
    let pin = token.rsplit('.').next().filter(|p| token.starts_with("hjt1.") && p.len() >= 16);
    let Some(pin) = pin else {
        bail!("the join token is malformed: use the token printed by `hangar host add NAME` (it starts with hjt1.)");
    };
    crate::files::ensure_dir(&paths.root, crate::files::TRAVERSE_DIR).with_context(|| format!("cannot create {}", paths.root.display()))?;
    let (csr_pem, key_pem) = hangar_tls::generate_csr("hangar-agent")?;
    let resp = HostClient::join(hub_url, &JoinRequest { join_token: token.to_string(), csr_pem, names }, pin)
        .await
        .context("join failed")?;
    hangar_tls::write_private(&paths.key(), &key_pem)?;
    std::fs::write(paths.cert(), &resp.cert_pem)?;
    std::fs::write(paths.ca(), &resp.ca_pem)?;
    let id = Identity { host_id: resp.host_id, host: resp.host, hub_url: hub_url.to_string(), hub_client_fingerprint: resp.hub_client_fingerprint };
    // The identity goes last: its presence means the join completed.
    hangar_tls::write_private(&paths.identity(), &serde_json::to_string_pretty(&id)?)?;
    Ok(id)
}
