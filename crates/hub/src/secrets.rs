//! Secrets: values a tenant stores once and its instances see read-only at
//! `/run/secrets/<name>`.
//!
//! Sealed at rest with AES-256-GCM (aws-lc-rs) under a key file in the hub's data dir
//! (`secrets.key`, 0600, made on first use); the tenant and name are the additional
//! data, so a sealed value moved to another row does not open. The store, events and
//! desired documents carry names, sizes and versions only. An agent gets the values
//! over mutual TLS (`GET /v1/agent/instances/{id}/secrets`) for an instance placed on
//! it that is to run; a changed or deleted secret bumps the generation of every host
//! with an instance naming it, so running instances see the change within one
//! reconcile pass.

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::Hub;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine;
use hangar_store::{HostRecord, InstanceFilter, SecretRecord};
use hangar_types::access::{check_secret_value, AgentSecret, AgentSecrets, SecretInfo, SecretStamp};
use hangar_types::api::Instance;
use hangar_types::{DesiredState, ErrorCode, InstanceId, InstanceState, Name};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use time::OffsetDateTime;

/// Where the sealing key lives and, once read or made, the key.
#[derive(Default)]
pub struct SecretKey {
    path: OnceLock<PathBuf>,
    key: Mutex<Option<[u8; 32]>>,
}

impl SecretKey {
    /// The key's bytes: read from the file, or made (random, 0600, never replaced) if
    /// there is none.
    fn bytes(&self) -> HubResult<[u8; 32]> {
        let mut cached = self.key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = *cached {
            return Ok(k);
        }
        let path = self.path.get().ok_or_else(|| HubError::new(ErrorCode::Unavailable, "this hub has no secrets key configured: serve it with `hangar hub serve`"))?;
        let k = load_or_make_key(path).map_err(|e| HubError::internal(format!("secrets key {}: {e}", path.display())))?;
        *cached = Some(k);
        Ok(k)
    }
}

fn load_or_make_key(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read(path) {
        Ok(b) => return b.try_into().map_err(|b: Vec<u8>| std::io::Error::other(format!("holds {} bytes, not 32: restore the hub's key file", b.len()))),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let mut k = [0u8; 32];
    aws_lc_rs::rand::fill(&mut k).map_err(|_| std::io::Error::other("no randomness"))?;
    // create_new: two hubs starting together never overwrite each other's key.
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut f) => {
            f.write_all(&k)?;
            f.sync_all()?;
            Ok(k)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_make_key(path),
        Err(e) => Err(e),
    }
}

fn aad(tenant: &Name, name: &Name) -> Vec<u8> {
    format!("hangar-secret-v1\0{tenant}\0{name}").into_bytes()
}

fn sealing_key(k: [u8; 32]) -> HubResult<LessSafeKey> {
    Ok(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k).map_err(|_| HubError::internal("secrets key rejected by AES-256-GCM"))?))
}

fn seal(k: [u8; 32], tenant: &Name, name: &Name, value: &[u8]) -> HubResult<Vec<u8>> {
    seal_with(k, &aad(tenant, name), value)
}

fn open(k: [u8; 32], rec: &SecretRecord) -> HubResult<Vec<u8>> {
    open_with(k, &aad(&rec.tenant, &rec.name), &rec.sealed)
        .ok_or_else(|| HubError::internal(format!("secret '{}/{}' does not open with this hub's key: was secrets.key replaced?", rec.tenant, rec.name)))
}

/// Nonce followed by ciphertext and tag of `value`, bound to `aad` (so a sealed value
/// moved to another row does not open). The one sealing of the hub: tenant secrets
/// here, backup passwords and target credentials in `backups`.
fn seal_with(k: [u8; 32], aad: &[u8], value: &[u8]) -> HubResult<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| HubError::internal("no randomness for a nonce"))?;
    let mut buf = value.to_vec();
    sealing_key(k)?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
        .map_err(|_| HubError::internal("sealing failed"))?;
    let mut out = nonce.to_vec();
    out.extend(buf);
    Ok(out)
}

/// The plain value, or None if `sealed` was not made by [`seal_with`] with this key and `aad`.
fn open_with(k: [u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = sealed.to_vec();
    let plain = sealing_key(k).ok()?.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?;
    Some(plain.to_vec())
}

/// Instances that still count as using a secret: every one not on its way out.
fn users<'a>(instances: &'a [Instance], name: &Name) -> Vec<&'a Instance> {
    instances.iter().filter(|i| i.state != InstanceState::Deleted && i.spec.secrets.contains(name)).collect()
}

impl Hub {
    /// `value` sealed under the hub's key (`secrets.key`), bound to `aad`.
    pub(crate) fn seal_value(&self, aad: &str, value: &[u8]) -> HubResult<Vec<u8>> {
        seal_with(self.secret_key.bytes()?, aad.as_bytes(), value)
    }

    /// A value [`Hub::seal_value`] sealed with the same `aad`; None if it does not open.
    pub(crate) fn open_value(&self, aad: &str, sealed: &[u8]) -> HubResult<Option<Vec<u8>>> {
        Ok(open_with(self.secret_key.bytes()?, aad.as_bytes(), sealed))
    }

    /// Where the sealing key is (made there on first use).
    pub fn use_secrets_key(&self, path: PathBuf) {
        let _ = self.secret_key.path.set(path);
    }

    pub async fn secret_set(&self, p: &Principal, tenant: &Name, name: &Name, value_b64: &str) -> HubResult<SecretInfo> {
        let t = self.tenant_get(p, tenant).await?;
        let value = base64::engine::general_purpose::STANDARD.decode(value_b64.trim()).map_err(|e| HubError::invalid(format!("value_b64: not base64 ({e})")))?;
        check_secret_value(&value).map_err(HubError::invalid)?;
        let sealed = seal(self.secret_key.bytes()?, &t.name, name, &value)?;
        let now = OffsetDateTime::now_utc();
        let version = self.store.next_generation().await?.get();
        let created_at = self.store.get_secret(&t.name, name).await?.map(|s| s.created_at).unwrap_or(now);
        let rec = SecretRecord { tenant: t.name.clone(), name: name.clone(), sealed, size_bytes: value.len() as u64, version, created_at, updated_at: now };
        self.store.put_secret(&rec).await?;
        let instances = self.store.list_instances(&InstanceFilter { tenant: Some(t.name.clone()), ..Default::default() }).await?;
        let used: Vec<&Instance> = users(&instances, name);
        self.bump_hosts_of(&used).await;
        self.event(&p.actor(), Some(&t.name), format!("secret/{}/{name}", t.name), "secret.set", "ok", Some(format!("{} bytes, version {version}", value.len()))).await;
        Ok(info(&rec, &instances))
    }

    pub async fn secret_list(&self, p: &Principal, tenant: &Name) -> HubResult<Vec<SecretInfo>> {
        let t = self.tenant_get(p, tenant).await?;
        let instances = self.store.list_instances(&InstanceFilter { tenant: Some(t.name.clone()), ..Default::default() }).await?;
        Ok(self.store.list_secrets(&t.name).await?.iter().map(|s| info(s, &instances)).collect())
    }

    /// Refused (409) while an instance names it, unless `force`; forced, those
    /// instances lose the file within one reconcile pass.
    pub async fn secret_delete(&self, p: &Principal, tenant: &Name, name: &Name, force: bool) -> HubResult<SecretInfo> {
        let t = self.tenant_get(p, tenant).await?;
        let Some(rec) = self.store.get_secret(&t.name, name).await? else {
            return Err(HubError::not_found(format!("secret '{}/{name}' not found", t.name)));
        };
        let instances = self.store.list_instances(&InstanceFilter { tenant: Some(t.name.clone()), ..Default::default() }).await?;
        let used = users(&instances, name);
        if !used.is_empty() && !force {
            let names: Vec<&str> = used.iter().map(|i| i.name.as_str()).collect();
            return Err(HubError::new(
                ErrorCode::Conflict,
                format!("secret '{}/{name}' is used by instance(s) {}: delete them first, or pass force (--force) to delete it anyway", t.name, names.join(", ")),
            ));
        }
        // A pool naming it would make members without it (even with no member now).
        let pools: Vec<String> = self.store.list_pools(Some(&t.name)).await?.into_iter().filter(|pl| pl.spec.secrets.contains(name)).map(|pl| pl.name.to_string()).collect();
        if !pools.is_empty() && !force {
            return Err(HubError::new(
                ErrorCode::Conflict,
                format!("secret '{}/{name}' is named by pool(s) {}: delete them first, or pass force (--force) to delete it anyway", t.name, pools.join(", ")),
            ));
        }
        self.store.delete_secret(&t.name, name).await?;
        self.bump_hosts_of(&used).await;
        let note = (!used.is_empty()).then(|| format!("forced; was used by {}", used.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")));
        self.event(&p.actor(), Some(&t.name), format!("secret/{}/{name}", t.name), "secret.delete", "ok", note).await;
        Ok(info(&rec, &instances))
    }

    /// Fails with `secrets` named if a secret the spec names does not exist.
    pub(crate) async fn check_secrets_exist(&self, tenant: &Name, secrets: &[Name]) -> HubResult<()> {
        for n in secrets {
            if self.store.get_secret(tenant, n).await?.is_none() {
                return Err(HubError::new(hangar_types::ErrorCode::Conflict, format!("secrets: tenant '{tenant}' has no secret '{n}': create it with `hangar secret set {tenant}/{n} --from-file FILE`")));
            }
        }
        Ok(())
    }

    /// The stamps (name, version) of the secrets each instance names that exist, for
    /// desired documents.
    pub(crate) async fn secret_stamps(&self, instances: &[Instance]) -> HubResult<HashMap<InstanceId, Vec<SecretStamp>>> {
        let tenants: BTreeSet<&Name> = instances.iter().filter(|i| !i.spec.secrets.is_empty()).map(|i| &i.tenant).collect();
        let mut versions: HashMap<(Name, Name), i64> = HashMap::new();
        for t in tenants {
            for s in self.store.list_secrets(t).await? {
                versions.insert((s.tenant, s.name), s.version);
            }
        }
        Ok(instances
            .iter()
            .filter(|i| !i.spec.secrets.is_empty())
            .map(|i| {
                let stamps = i.spec.secrets.iter().filter_map(|n| versions.get(&(i.tenant.clone(), n.clone())).map(|v| SecretStamp { name: n.clone(), version: *v })).collect();
                (i.id, stamps)
            })
            .collect())
    }

    /// The values for the agent of the host `id` is placed on, while it is to run or be
    /// warm there; any other host is told the instance is not found.
    pub async fn agent_secrets(&self, host: &HostRecord, id: InstanceId) -> HubResult<AgentSecrets> {
        let inst = self
            .store
            .get_instance_by_id(id)
            .await?
            .filter(|i| i.host.as_ref() == Some(&host.name))
            .ok_or_else(|| HubError::not_found(format!("instance {id} is not placed on host '{}'", host.name)))?;
        if !matches!(inst.state.desired(), DesiredState::Running | DesiredState::Warm) {
            return Err(HubError::new(ErrorCode::IllegalTransition, format!("instance '{}/{}' is {}: secrets go only to instances that run", inst.tenant, inst.name, inst.state)));
        }
        let k = self.secret_key.bytes()?;
        let mut out = vec![];
        for n in &inst.spec.secrets {
            if let Some(rec) = self.store.get_secret(&inst.tenant, n).await? {
                let value = open(k, &rec)?;
                out.push(AgentSecret { name: n.clone(), version: rec.version, value_b64: base64::engine::general_purpose::STANDARD.encode(value) });
            }
        }
        Ok(AgentSecrets { secrets: out })
    }

    async fn bump_hosts_of(&self, instances: &[&Instance]) {
        let hosts: BTreeSet<&Name> = instances.iter().filter_map(|i| i.host.as_ref()).collect();
        for h in hosts {
            if let Err(e) = self.bump_host(h).await {
                tracing::warn!(host = %h, error = %e.0.message, "cannot tell a host about a changed secret; its next document will carry it");
            }
        }
    }
}

fn info(s: &SecretRecord, instances: &[Instance]) -> SecretInfo {
    SecretInfo {
        tenant: s.tenant.clone(),
        name: s.name.clone(),
        size_bytes: s.size_bytes,
        version: s.version,
        created_at: s.created_at,
        updated_at: s.updated_at,
        used_by: users(instances, &s.name).into_iter().map(|i| i.name.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_row() {
        let (acme, other): (Name, Name) = ("acme".parse().unwrap(), "other".parse().unwrap());
        let db: Name = "db".parse().unwrap();
        let k = [7u8; 32];
        let sealed = seal(k, &acme, &db, b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "the value is not in the sealed bytes");
        let rec = SecretRecord { tenant: acme.clone(), name: db.clone(), sealed, size_bytes: 7, version: 1, created_at: OffsetDateTime::UNIX_EPOCH, updated_at: OffsetDateTime::UNIX_EPOCH };
        assert_eq!(open(k, &rec).unwrap(), b"hunter2");
        assert!(open([8u8; 32], &rec).is_err(), "another key");
        assert!(open(k, &SecretRecord { tenant: other, ..rec.clone() }).is_err(), "moved to another tenant's row");
        assert_ne!(seal(k, &acme, &db, b"hunter2").unwrap(), rec.sealed, "a fresh nonce each time");
    }

    #[test]
    fn the_key_file_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let a = load_or_make_key(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_make_key(&path).unwrap(), a);
        std::fs::write(&path, b"short").unwrap();
        assert!(load_or_make_key(&path).unwrap_err().to_string().contains("not 32"));
    }
}
