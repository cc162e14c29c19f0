//! The agent's on-disk identity: which hub, which host, and the certificate it joined
//! with. Written once by `hangar agent join`, read by every later start.

use anyhow::{Context, Result};
use hangar_types::{HostId, Name};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub host_id: HostId,
    pub host: Name,
    pub hub_url: String,
    /// The only client certificate the agent's endpoint accepts: the hub's.
    pub hub_client_fingerprint: String,
}

/// Where an agent keeps its files.
#[derive(Clone, Debug)]
pub struct AgentPaths {
    pub root: PathBuf,
}

impl AgentPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        AgentPaths { root: root.into() }
    }
    pub fn identity(&self) -> PathBuf {
        self.root.join("identity.json")
    }
    pub fn cert(&self) -> PathBuf {
        self.root.join("host.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.root.join("host.key")
    }
    pub fn ca(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    /// A renewed certificate and its key, together in one file (written atomically) until
    /// both are in place: [`AgentPaths::complete_renewal`].
    pub fn renewed(&self) -> PathBuf {
        self.root.join("host.next.pem")
    }

    /// Keeps a renewed certificate and key: first together in one file, then each in its
    /// place. A kill at any point leaves either the old pair or the renewed file, which
    /// the next start (or this call) finishes installing.
    pub fn install_renewal(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        hangar_tls::write_private(&self.renewed(), &format!("{cert_pem}\n{key_pem}"))?;
        self.complete_renewal()
    }

    /// Finishes installing a renewed certificate a kill interrupted; nothing if none.
    pub fn complete_renewal(&self) -> Result<()> {
        let Ok(both) = std::fs::read_to_string(self.renewed()) else { return Ok(()) };
        let Some(at) = both.find("-----BEGIN PRIVATE KEY-----").or_else(|| both.find("-----BEGIN EC PRIVATE KEY-----")) else {
            anyhow::bail!("{} holds no private key: remove it to keep the current certificate", self.renewed().display());
        };
        let (cert, key) = both.split_at(at);
        hangar_tls::write_private(&self.key(), key)?;
        hangar_tls::write_private(&self.cert(), cert.trim_end())?;
        std::fs::remove_file(self.renewed())?;
        Ok(())
    }
    /// The last desired-state document, kept so a restart without the hub changes nothing.
    pub fn desired(&self) -> PathBuf {
        self.root.join("desired.json")
    }
    /// The drivers the dir was last opened with (`drivers::DriverConfig`).
    pub fn drivers(&self) -> PathBuf {
        self.root.join("drivers.json")
    }
    pub fn runtime_root(&self) -> PathBuf {
        self.root.join("runtime")
    }
    pub fn bundles(&self) -> PathBuf {
        self.root.join("bundles")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn log_file(&self, sandbox: &hangar_types::SandboxId) -> PathBuf {
        self.logs().join(format!("{sandbox}.log"))
    }
    pub fn storage(&self) -> PathBuf {
        self.root.join("storage")
    }
    /// Registered tar images, extracted once each (`crate::images`).
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Takes the dir's exclusive lock, held for as long as the returned guard lives:
    /// one agent (daemon or one-shot reconcile) per dir at a time.
    pub fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>> {
        std::fs::create_dir_all(&self.root).with_context(|| format!("cannot create {}", self.root.display()))?;
        let p = self.root.join("agent.lock");
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&p).with_context(|| format!("cannot open {}", p.display()))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            anyhow::anyhow!("another hangar agent works on {} ({e}): stop it first, or give it the document through its hub", self.root.display())
        })?;
        self.secure().with_context(|| format!("cannot set the file modes in {}", self.root.display()))?;
        Ok(lock)
    }

    /// Sets the modes of the dir's layout (see [`crate::files`]), also on files an
    /// older agent made: keys, identity, desired documents, bundles' `config.json` and
    /// workload logs 0600; the logs dir 0700; the dirs sandboxes' roots and volumes lie
    /// below 0711. Runs once per agent start, never on the start path.
    pub fn secure(&self) -> std::io::Result<()> {
        use crate::files::{ensure_dir, make_private, PRIVATE_DIR, TRAVERSE_DIR};
        ensure_dir(&self.root, TRAVERSE_DIR)?;
        ensure_dir(&self.bundles(), TRAVERSE_DIR)?;
        ensure_dir(&self.logs(), PRIVATE_DIR)?;
        ensure_dir(&self.images(), TRAVERSE_DIR)?;
        let desired_tmp = self.desired().with_extension("json.tmp");
        for f in [self.identity(), self.key(), self.desired(), desired_tmp, self.renewed()] {
            make_private(&f)?;
        }
        for e in std::fs::read_dir(self.logs())?.flatten() {
            make_private(&e.path())?;
        }
        for e in std::fs::read_dir(self.bundles())?.flatten() {
            make_private(&e.path().join("config.json"))?;
        }
        Ok(())
    }

    pub fn is_joined(&self) -> bool {
        self.identity().exists() && self.cert().exists() && self.key().exists()
    }

    /// The host whose sandboxes this dir holds, which names its namespaces and rules:
    /// the joined identity's, else (a one-shot reconcile has no identity) that of the
    /// last desired document.
    pub fn owner(&self) -> Option<HostId> {
        self.load().map(|(id, ..)| id.host_id).ok().or_else(|| Some(self.last_desired()?.ok()?.host_id))
    }

    /// The last desired document converged to; None if there is none.
    pub fn last_desired(&self) -> Option<Result<hangar_types::protocol::DesiredDoc, serde_json::Error>> {
        let text = std::fs::read_to_string(self.desired()).ok()?;
        Some(serde_json::from_str(&text))
    }

    pub fn load(&self) -> Result<(Identity, String, String, String)> {
        self.complete_renewal()?;
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("cannot read {}: has this host joined? run `hangar agent join`", p.display()));
        let id: Identity = serde_json::from_str(&read(&self.identity())?).with_context(|| format!("{} is not a valid identity file", self.identity().display()))?;
        Ok((id, read(&self.ca())?, read(&self.cert())?, read(&self.key())?))
    }
}
