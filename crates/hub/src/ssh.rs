//! The SSH gateway's side in the hub: the public keys a tenant registered, the
//! gateway's question "may this key reach this instance?", its settings and what
//! clients need to know of it (port, host key). Keys are checked when added (an OpenSSH
//! public key line of a known type whose blob names that type), kept as type and base64
//! blob, and compared as such. The gateway itself is the `hangar-ssh` crate, which
//! `hub serve` wires to [`Hub::ssh_authorize`] and [`Hub::session_open`].

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::Hub;
use base64::Engine;
use hangar_types::api::{SshKey, SshKeyAdd, SSH_KEY_MAX_BYTES};
use hangar_types::Name;
use sha2::Digest;
use time::OffsetDateTime;

/// Where the SSH gateway listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SshListen {
    /// No gateway.
    Off,
    /// This port on the API's address; if it is taken, the hub runs without a gateway
    /// and logs why (so several hubs on one machine still start).
    Default(u16),
    /// Exactly here; the hub refuses to start if it cannot.
    At(std::net::SocketAddr),
}

/// The SSH gateway's settings.
#[derive(Clone, Debug)]
pub struct SshConfig {
    pub listen: SshListen,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: std::time::Duration,
    /// Sessions open at once per tenant through the gateway.
    pub max_sessions_per_tenant: usize,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig { listen: SshListen::Off, idle_timeout: std::time::Duration::from_secs(3600), max_sessions_per_tenant: 32 }
    }
}

/// Key types the gateway verifies (russh with aws-lc-rs), as OpenSSH names them.
const KEY_TYPES: &[&str] = &["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"];

/// A parsed public key line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedKey {
    pub algorithm: String,
    /// `type base64`, the form keys are stored and compared in.
    pub public_key: String,
    pub fingerprint: String,
    pub comment: String,
    /// The SHA-256 of the blob in hex, for default names.
    pub hex: String,
}

/// Parses one OpenSSH public key line; the error says what is wrong with it.
pub fn parse_public_key(line: &str) -> Result<ParsedKey, String> {
    let line = line.trim();
    if line.len() > SSH_KEY_MAX_BYTES {
        return Err(format!("public_key is {} bytes, over the limit of {SSH_KEY_MAX_BYTES}", line.len()));
    }
    if line.contains("PRIVATE KEY") {
        return Err("public_key: this is a private key; give the public one (the .pub file)".into());
    }
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
        return Err("public_key: expected one OpenSSH public key line, 'TYPE BASE64 [COMMENT]' (the .pub file)".into());
    };
    if !KEY_TYPES.contains(&kind) {
        return Err(format!("public_key: key type '{kind}' is not supported (supported: {}); options before the key are not accepted either", KEY_TYPES.join(", ")));
    }
    let blob = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("public_key: the key is not valid base64: {e}"))?;
    let named = blob.get(..4).map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize).and_then(|n| blob.get(4..4 + n));
    if named != Some(kind.as_bytes()) {
        return Err(format!("public_key: the key's data is not a '{kind}' key"));
    }
    if kind == "ssh-ed25519" && blob.len() != 4 + 11 + 4 + 32 {
        return Err("public_key: an ssh-ed25519 key holds 32 bytes; this one is damaged".into());
    }
    let digest = sha2::Sha256::digest(&blob);
    Ok(ParsedKey {
        algorithm: kind.to_string(),
        public_key: format!("{kind} {b64}"),
        fingerprint: format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)),
        comment: parts.collect::<Vec<_>>().join(" "),
        hex: hex::encode(digest),
    })
}

impl Hub {
    pub async fn ssh_key_add(&self, p: &Principal, tenant: &Name, req: SshKeyAdd) -> HubResult<SshKey> {
        let t = self.tenant_get(p, tenant).await?;
        let k = parse_public_key(&req.public_key).map_err(HubError::invalid)?;
        let name = match &req.name {
            Some(n) => crate::parse_name("name", n)?,
            None => crate::parse_name("name", &format!("key-{}", &k.hex[..12]))?,
        };
        let key = SshKey { tenant: t.name.clone(), name, algorithm: k.algorithm, public_key: k.public_key, fingerprint: k.fingerprint, comment: k.comment, created_at: OffsetDateTime::now_utc() };
        self.store.insert_ssh_key(&key).await?;
        self.event(&p.actor(), Some(&t.name), format!("ssh-key/{}/{}", t.name, key.name), "ssh_key.add", "ok", Some(key.fingerprint.clone())).await;
        Ok(key)
    }

    pub async fn ssh_key_list(&self, p: &Principal, tenant: &Name) -> HubResult<Vec<SshKey>> {
        let t = self.tenant_get(p, tenant).await?;
        Ok(self.store.list_ssh_keys(&t.name).await?)
    }

    pub async fn ssh_key_remove(&self, p: &Principal, tenant: &Name, name: &Name) -> HubResult<SshKey> {
        let t = self.tenant_get(p, tenant).await?;
        let key = self
            .store
            .list_ssh_keys(&t.name)
            .await?
            .into_iter()
            .find(|k| &k.name == name)
            .ok_or_else(|| HubError::not_found(format!("ssh key '{name}' of tenant '{}' not found", t.name)))?;
        self.store.delete_ssh_key(&t.name, name).await?;
        self.event(&p.actor(), Some(&t.name), format!("ssh-key/{}/{}", t.name, name), "ssh_key.remove", "ok", Some(key.fingerprint.clone())).await;
        Ok(key)
    }

    /// Records the running gateway (once), for [`Hub::ssh_gateway`].
    pub fn set_ssh_gateway(&self, info: hangar_types::api::SshGateway) {
        let _ = self.ssh_gateway.set(info);
    }

    /// The gateway's port and host key, for any authenticated caller (clients write
    /// their known_hosts from it).
    pub fn ssh_gateway(&self, _p: &Principal) -> hangar_types::api::SshGateway {
        self.ssh_gateway.get().cloned().unwrap_or_default()
    }

    /// The SSH gateway's check: `public_key` (`type base64`) is registered by `tenant`,
    /// which has an instance `instance`. One answer for every refusal (no such tenant,
    /// instance or key), so a refusal does not tell which names exist.
    pub async fn ssh_authorize(&self, tenant: &str, instance: &str, public_key: &str) -> bool {
        let (Ok(tenant), Ok(instance)) = (tenant.parse::<Name>(), instance.parse::<Name>()) else { return false };
        let Ok(keys) = self.store.list_ssh_keys(&tenant).await else { return false };
        if !keys.iter().any(|k| k.public_key == public_key) {
            return false;
        }
        matches!(self.store.get_instance(&tenant, &instance).await, Ok(Some(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop";

    #[test]
    fn a_good_key_parses_with_openssh_fingerprint() {
        let k = parse_public_key(ED).unwrap();
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert_eq!(k.comment, "me@laptop");
        assert!(k.fingerprint.starts_with("SHA256:") && !k.fingerprint.ends_with('='));
        assert_eq!(k.public_key, ED.rsplit_once(' ').unwrap().0);
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        for (line, why) in [
            ("", "expected one"),
            ("ssh-ed25519", "expected one"),
            ("ssh-dss AAAAB3NzaC1kc3M=", "not supported"),
            ("command=\"x\" ssh-ed25519 AAAA", "not supported"),
            ("ssh-ed25519 !!!notbase64", "base64"),
            ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", "not a 'ssh-rsa' key"),
            ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9", "damaged"),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
        ] {
            let e = parse_public_key(line).unwrap_err();
            assert!(e.contains(why), "{line:?}: {e}");
        }
        assert!(parse_public_key(&format!("ssh-rsa {}", "A".repeat(9000))).unwrap_err().contains("limit"));
    }
}
