//! Convergence: make this host match a desired-state document, and say what it found.
//!
//! One pass lists the sandboxes once, then acts only on instances whose observed state
//! differs from desired. The agent remembers, per instance, the generation it last acted
//! on and how that ended, so a workload that exited is reported `stopped` rather than
//! restarted in a loop, and a failed start is not retried until the hub asks again.

use crate::drivers::network::NetworkDriver;
use crate::drivers::runtime::{Runtime, SandboxSpec, SandboxStatus};
use crate::drivers::volume::VolumeDriver;
use crate::identity::AgentPaths;
use hangar_types::protocol::{DesiredDoc, DesiredInstance, ObservedInstance};
use hangar_types::{DesiredState, Generation, InstanceId, ObservedState, SandboxId, VolumeId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a workload gets to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Upper bound on tasks forked by one sandbox (its pids cgroup).
const PIDS_LIMIT: u64 = 1024;

/// The longest wait between two attempts at a delete that keeps failing.
const DELETE_RETRY_MAX: Duration = Duration::from_secs(30);
/// Sandboxes run only in user namespaces, on the ids the hub allocated.
fn no_ids() -> String {
    "the hub sent no uid range for this instance: upgrade the hub (sandboxes run only in user namespaces)".into()
}

#[derive(Clone, Debug, PartialEq)]
struct Acted {
    generation: Generation,
    observed: ObservedState,
    error: Option<String>,
    /// Failed deletes: how many in a row, and when the last one ended. A delete is
    /// retried (unlike a failed start) with a growing pause, so a cause removed later
    /// (a mount held inside the volume, an immutable flag) lets it finish by itself.
    delete_failures: u32,
    at: std::time::Instant,
}

impl Acted {
    /// Whether a failed delete should be tried again now: after 1 s, 2 s, 4 s, ... up
    /// to [`DELETE_RETRY_MAX`].
    fn delete_due(&self) -> bool {
        let wait = Duration::from_secs(1u64 << self.delete_failures.saturating_sub(1).min(5)).min(DELETE_RETRY_MAX);
        self.at.elapsed() >= wait
    }
}

pub struct Reconciler {
    pub paths: AgentPaths,
    pub runtime: Arc<dyn Runtime>,
    pub volumes: Arc<dyn VolumeDriver>,
    pub network: Arc<dyn NetworkDriver>,
    acted: Mutex<HashMap<InstanceId, Acted>>,
    /// Bounds how many instances converge at once (each spawns runtime processes).
    parallel: Arc<tokio::sync::Semaphore>,
}

impl Reconciler {
    pub fn new(paths: AgentPaths, runtime: Arc<dyn Runtime>, volumes: Arc<dyn VolumeDriver>, network: Arc<dyn NetworkDriver>) -> Arc<Self> {
        Arc::new(Reconciler { paths, runtime, volumes, network, acted: Mutex::new(HashMap::new()), parallel: Arc::new(tokio::sync::Semaphore::new(8)) })
    }

    fn acted(&self, id: InstanceId) -> Option<Acted> {
        self.acted.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    fn remember(&self, id: InstanceId, a: Acted) {
        self.acted.lock().unwrap_or_else(|p| p.into_inner()).insert(id, a);
    }

    /// One convergence pass over the whole document.
    pub async fn converge(self: &Arc<Self>, doc: &DesiredDoc) -> Vec<ObservedInstance> {
        let listed: HashMap<SandboxId, SandboxStatus> = match self.runtime.list().await {
            Ok(l) => l.into_iter().collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot list sandboxes; reporting nothing this pass");
                return vec![];
            }
        };
        // Sandboxes no desired instance owns are stopped (volumes are kept: only an
        // explicit desired `deleted` ever removes data).
        let wanted: HashSet<SandboxId> = doc.instances.iter().map(|d| d.id.sandbox_id()).collect();
        for orphan in listed.keys().filter(|k| !wanted.contains(*k)) {
            tracing::warn!(sandbox = %orphan, "stopping a sandbox no desired instance owns");
            if let Err(e) = self.runtime.stop(orphan, STOP_GRACE).await {
                tracing::error!(sandbox = %orphan, error = %e, "cannot stop orphan sandbox");
            }
        }
        // One look at the host's links per pass: a veth removed behind our back is
        // re-created for the running instance it belonged to.
        let veths: HashSet<String> = match self.network.wired().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot inspect host networking");
                HashSet::new()
            }
        };
        let mut set = tokio::task::JoinSet::new();
        for d in doc.instances.iter().cloned() {
            let sid = d.id.sandbox_id();
            let status = listed.get(&sid).copied();
            let wired = veths.contains(&hangar_types::net::veth_name(&sid));
            let me = self.clone();
            set.spawn(async move {
                let _permit = me.parallel.clone().acquire_owned().await;
                me.converge_one(&d, status, wired).await
            });
        }
        let mut out = Vec::with_capacity(doc.instances.len());
        while let Some(r) = set.join_next().await {
            match r {
                Ok(o) => out.push(o),
                Err(e) => tracing::error!(error = %e, "convergence task panicked"),
            }
        }
        out
    }

    /// Host-wide networking: bridges and rules for the tenants present, and no
    /// namespace for a sandbox the document does not hold. Run after the report, off the
    /// start path: attaching an instance creates its bridge by itself.
    pub async fn sync_network(&self, doc: &DesiredDoc) {
        let wanted: HashSet<SandboxId> = doc.instances.iter().map(|d| d.id.sandbox_id()).collect();
        match self.network.attached().await {
            Ok(list) => {
                for sid in list.into_iter().filter(|s| !wanted.contains(s)) {
                    if let Err(e) = self.network.detach(&sid).await {
                        tracing::error!(sandbox = %sid, error = %e, "cannot remove a stale network namespace");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list network namespaces"),
        }
        let Some(range) = doc.cluster_range.as_deref().and_then(|r| r.parse::<hangar_types::net::ClusterRange>().ok()) else { return };
        let nets: Vec<_> = doc.instances.iter().filter(|d| d.desired != DesiredState::Deleted).filter_map(|d| d.network.clone()).collect();
        if let Err(e) = self.network.sync(&range, &nets).await {
            tracing::error!(error = %e, "cannot sync tenant networks");
        }
        self.pin_ahead(doc).await;
    }

    /// Off the start path: ready helpers for the next new instances, and the pinned
    /// namespaces (wired) of instances known here that have none yet (created stopped,
    /// or after a reboot), a few per pass, so their start is one `run -d`.
    async fn pin_ahead(&self, doc: &DesiredDoc) {
        const PER_PASS: usize = 4;
        if let Err(e) = self.network.prewarm().await {
            tracing::warn!(error = %e, "cannot make sandbox namespaces ahead");
            return;
        }
        // Only instances with no namespace at all: a half-made pair is remade by the
        // next start, and a sandbox running in a namespace an older agent made is left
        // alone.
        let have: HashSet<SandboxId> = match self.network.attached().await {
            Ok(l) => l.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list sandbox namespaces");
                return;
            }
        };
        let missing = doc.instances.iter().filter(|d| d.desired != DesiredState::Deleted && !have.contains(&d.id.sandbox_id()));
        for (d, net, ids) in missing.filter_map(|d| Some((d, d.network.as_ref()?, d.ids?))).take(PER_PASS) {
            if let Err(e) = self.network.attach(&d.id.sandbox_id(), net, ids).await {
                tracing::warn!(instance = %d.id, error = %e, "cannot make the instance's namespaces ahead");
            }
        }
    }

    async fn converge_one(&self, d: &DesiredInstance, status: Option<SandboxStatus>, wired: bool) -> ObservedInstance {
        let prev = self.acted(d.id).filter(|a| a.generation == d.generation);
        if let (Some(net), Some(ids), Some(SandboxStatus::Running | SandboxStatus::Paused), false) = (&d.network, d.ids, status, wired) {
            tracing::warn!(instance = %d.id, "its veth is gone; wiring it again");
            if let Err(e) = self.network.attach(&d.id.sandbox_id(), net, ids).await {
                tracing::error!(instance = %d.id, error = %e, "cannot re-wire the instance");
            }
        }
        let deleting = d.desired == DesiredState::Deleted;
        if let Some(p) = prev.as_ref().filter(|p| deleting && p.observed == ObservedState::Failed && !p.delete_due()) {
            return ObservedInstance { id: d.id, state: p.observed, generation: d.generation, error: p.error.clone(), snapshots: None };
        }
        let (observed, error) = match self.act(d, status, prev.as_ref()).await {
            Ok(o) => (o, None),
            Err(e) if deleting => {
                let e = format!("delete failed, retrying: {e}");
                tracing::error!(instance = %d.id, error = %e, "cannot delete the instance yet");
                (ObservedState::Failed, Some(e))
            }
            Err(e) => {
                tracing::error!(instance = %d.id, error = %e, "convergence failed");
                (ObservedState::Failed, Some(e))
            }
        };
        let failed_deletes = prev.as_ref().filter(|p| p.observed == ObservedState::Failed).map_or(0, |p| p.delete_failures);
        let delete_failures = if deleting && observed == ObservedState::Failed { failed_deletes + 1 } else { 0 };
        let a = Acted { generation: d.generation, observed, error: error.clone(), delete_failures, at: std::time::Instant::now() };
        if d.desired == DesiredState::Deleted && observed == ObservedState::Gone {
            self.acted.lock().unwrap_or_else(|p| p.into_inner()).remove(&d.id);
        } else {
            self.remember(d.id, a);
        }
        ObservedInstance { id: d.id, state: observed, generation: d.generation, error, snapshots: None }
    }

    /// The instance's volume, made if missing and owned by its sandbox's ids.
    async fn ensure_volume(&self, volume: &VolumeId, d: &DesiredInstance) -> Result<std::path::PathBuf, String> {
        let ids = d.ids.ok_or_else(no_ids)?;
        let home = self.volumes.ensure(volume, d.spec.disk_mib).await.map_err(|e| e.to_string())?;
        crate::drivers::volume::own_root(&home, ids).await.map_err(|e| e.to_string())?;
        Ok(home)
    }

    /// Makes one instance match; returns what it now is. Errors are user-facing strings.
    async fn act(&self, d: &DesiredInstance, status: Option<SandboxStatus>, prev: Option<&Acted>) -> Result<ObservedState, String> {
        use ObservedState as O;
        use SandboxStatus as S;
        let sid = d.id.sandbox_id();
        // The instance's volume is named by its sandbox.
        let volume = VolumeId::from(&sid);
        // Already failed at this generation: do not retry until the hub asks again
        // (deletes excepted: they are retried, see `Acted::delete_due`).
        if let Some(p) = prev.filter(|p| p.observed == O::Failed && d.desired != DesiredState::Deleted) {
            return Err(p.error.clone().unwrap_or_else(|| "failed".into()));
        }
        let running = matches!(status, Some(S::Running));
        let paused = matches!(status, Some(S::Paused));
        match d.desired {
            DesiredState::Deleted => {
                if status.is_some() {
                    self.runtime.stop(&sid, STOP_GRACE).await.map_err(|e| e.to_string())?;
                }
                self.network.detach(&sid).await.map_err(|e| e.to_string())?;
                self.volumes.delete(&volume).await.map_err(|e| e.to_string())?;
                crate::drivers::runtime::logs::remove_logs(&self.paths.log_file(&sid));
                Ok(O::Gone)
            }
            DesiredState::Stopped => {
                if prev.is_none() {
                    self.ensure_volume(&volume, d).await?;
                }
                if status.is_some() {
                    self.runtime.stop(&sid, STOP_GRACE).await.map_err(|e| e.to_string())?;
                }
                Ok(O::Stopped)
            }
            DesiredState::Running | DesiredState::Warm => {
                let want_warm = d.desired == DesiredState::Warm;
                if running && !want_warm {
                    return Ok(O::Running);
                }
                if paused && want_warm {
                    return Ok(O::Warm);
                }
                if paused {
                    self.runtime.resume(&sid).await.map_err(|e| e.to_string())?;
                    return Ok(O::Running);
                }
                if running {
                    self.runtime.pause(&sid).await.map_err(|e| e.to_string())?;
                    return Ok(O::Warm);
                }
                // Not running. If we already started it for this generation, it exited:
                // report that instead of restarting it behind the user's back.
                if prev.is_some_and(|p| matches!(p.observed, O::Running | O::Warm | O::Stopped)) {
                    if status.is_some() {
                        self.runtime.stop(&sid, STOP_GRACE).await.map_err(|e| e.to_string())?;
                    }
                    return Ok(O::Stopped);
                }
                let t0 = std::time::Instant::now();
                let ids = d.ids.ok_or_else(no_ids)?;
                // The volume and the sandbox's pinned namespaces (made ahead when the
                // instance was known before, else from a ready helper) side by side:
                // they do not depend on each other. Then one `run -d` joins both.
                let pinned = async {
                    match &d.network {
                        Some(net) => self.network.attach(&sid, net, ids).await.map(Some).map_err(|e| format!("network: {e}")),
                        None => Ok(None),
                    }
                };
                let (home, join) = tokio::join!(self.ensure_volume(&volume, d), pinned);
                let (home, join) = (home?, join?);
                let spec = SandboxSpec {
                    id: sid.clone(),
                    image: crate::images::resolve(&self.paths, d).await?,
                    home_dir: home,
                    vcpus: d.spec.vcpus,
                    mem_mib: d.spec.mem_mib,
                    pids_limit: PIDS_LIMIT,
                    command: d.spec.command.clone(),
                    env: d.spec.env.clone(),
                    hostname: d.name.to_string(),
                    log_path: self.paths.log_file(&sid),
                    ids,
                    secrets_dir: crate::secrets::sandbox_dir(&self.paths, d),
                    join,
                };
                let t1 = std::time::Instant::now();
                self.runtime.start(&spec).await.map_err(|e| e.to_string())?;
                tracing::debug!(instance = %d.id, volume_and_network_ms = (t1 - t0).as_secs_f64() * 1e3, runtime_ms = t1.elapsed().as_secs_f64() * 1e3, "started");
                if want_warm {
                    self.runtime.pause(&sid).await.map_err(|e| e.to_string())?;
                    return Ok(O::Warm);
                }
                match self.runtime.status(&sid).await.map_err(|e| e.to_string())? {
                    Some(S::Running) => Ok(O::Running),
                    Some(S::Paused) => Ok(O::Warm),
                    _ => Ok(O::Stopped),
                }
            }
        }
    }
}
