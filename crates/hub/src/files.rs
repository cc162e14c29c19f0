//! `hangar cp` through the hub: uploads and downloads stream between the caller and the
//! instance's agent (tar, never held whole here); instance-to-instance copies are a
//! reflink copy on the host when both volumes are on one host, and otherwise a
//! host-to-host transfer (`transfer`, object `Files`): the source agent streams the tar
//! straight to the target agent, no byte through the hub. Paths are checked here
//! (`types::files::volume_path`) and again, beneath the volume, by the agent.
//!
//! Copies between tenants need an admin token: a tenant token is refused with 403
//! naming both tenants (it reveals nothing of the other tenant: the check comes
//! before any lookup). Uploads and copies leave an event; a refused or broken write
//! changes nothing on the host (the agent stages it first).

use crate::auth::Principal;
use crate::error::{HubError, HubResult};
use crate::Hub;
use hangar_client::files::ByteStream;
use hangar_types::api::Instance;
use hangar_types::files::{volume_path, AgentCopy, AgentCopyEnd, AgentFilesCheck, AgentFilesQuery, CopyRequest, CopyResult, CopyVia, FilesQuery, FilesWritten};
use hangar_types::transfer::TransferObject;
use hangar_types::{ErrorCode, InstanceState, Name};

fn relative(field: &str, path: &str) -> HubResult<String> {
    volume_path(path).map_err(|m| HubError::invalid(format!("{field}: {m}")))
}

fn uid_base(inst: &Instance) -> HubResult<u32> {
    inst.ids.map(|r| r.base).ok_or_else(|| HubError::new(ErrorCode::IllegalTransition, format!("instance '{}/{}' has no uid range yet: retry once it is created", inst.tenant, inst.name)))
}

/// An agent endpoint (`https://127.0.0.1:7000`) only this machine can reach.
fn on_loopback(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or_default();
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The name a copy of `rel` (relative to the volume) carries: its last component.
fn top_name(rel: &str) -> String {
    rel.trim_end_matches('/').rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or(&hangar_types::files::VOLUME_MOUNT[1..]).to_string()
}

fn object(inst: &Instance) -> String {
    format!("instance/{}/{}", inst.tenant, inst.name)
}

impl Hub {
    /// An instance whose volume a copy may read or write.
    async fn copy_instance(&self, p: &Principal, tenant: &Name, name: &Name) -> HubResult<Instance> {
        let inst = self.instance_get(p, tenant, name).await?;
        if inst.state == InstanceState::Deleted {
            return Err(HubError::new(ErrorCode::IllegalTransition, format!("instance '{}/{}' is being deleted", inst.tenant, inst.name)));
        }
        Ok(inst)
    }

    /// A tar stream of `q.path` in the instance (a directory only with `recursive`).
    pub async fn files_download(&self, p: &Principal, tenant: &Name, name: &Name, q: &FilesQuery) -> HubResult<ByteStream> {
        let path = relative("path", &q.path)?;
        let inst = self.copy_instance(p, tenant, name).await?;
        let (agent, sandbox) = self.agent_for(&inst).await?;
        Ok(agent.files_read(&sandbox, &AgentFilesQuery { path, recursive: q.recursive, uid_base: uid_base(&inst)? }).await?)
    }

    /// Writes a tar stream into the instance at `q.path`.
    pub async fn files_upload(&self, p: &Principal, tenant: &Name, name: &Name, q: &FilesQuery, tar: ByteStream) -> HubResult<FilesWritten> {
        let path = relative("path", &q.path)?;
        let inst = self.copy_instance(p, tenant, name).await?;
        let r = async {
            let (agent, sandbox) = self.agent_for(&inst).await?;
            Ok(agent.files_write(&sandbox, &AgentFilesQuery { path: path.clone(), recursive: q.recursive, uid_base: uid_base(&inst)? }, tar).await?)
        }
        .await;
        self.copy_event(p, &inst, "files.upload", &format!("upload to {}", q.path), &r).await;
        r
    }

    /// Copies `req.from` into `req.to`: on one host a reflink copy there, across hosts
    /// the source agent's stream relayed into the target's.
    pub async fn files_copy(&self, p: &Principal, req: &CopyRequest) -> HubResult<CopyResult> {
        if req.from.tenant != req.to.tenant && !matches!(p, Principal::Admin) {
            return Err(HubError::new(
                ErrorCode::Forbidden,
                format!("copying between tenants ('{}' to '{}') needs an admin token; a tenant token copies only within its own tenant", req.from.tenant, req.to.tenant),
            ));
        }
        let (from_path, to_path) = (relative("from.path", &req.from.path)?, relative("to.path", &req.to.path)?);
        let from = self.copy_instance(p, &req.from.tenant, &req.from.instance).await?;
        let to = self.copy_instance(p, &req.to.tenant, &req.to.instance).await?;
        let (from_q, to_q) = (
            AgentFilesQuery { path: from_path, recursive: req.recursive, uid_base: uid_base(&from)? },
            AgentFilesQuery { path: to_path, recursive: req.recursive, uid_base: uid_base(&to)? },
        );
        let r: HubResult<CopyResult> = async {
            let (src, src_sandbox) = self.agent_for(&from).await?;
            if from.host.is_some() && from.host == to.host {
                let end = |sandbox, q: &AgentFilesQuery| AgentCopyEnd { sandbox, path: q.path.clone(), uid_base: q.uid_base };
                let req = AgentCopy { from: end(src_sandbox, &from_q), to: end(to.id.sandbox_id(), &to_q), recursive: req.recursive };
                return Ok(CopyResult { via: CopyVia::Reflink, written: src.files_copy_local(&req).await? });
            }
            let (dst, dst_sandbox) = self.agent_for(&to).await?;
            // Refusals (4xx) before a ticket is issued: the source checks its whole
            // tree, the target where the copy's top entry would go.
            let check = |q: &AgentFilesQuery, top: Option<String>, top_dir| AgentFilesCheck { path: q.path.clone(), recursive: q.recursive, uid_base: q.uid_base, top, top_dir };
            let checked = src.files_check(&src_sandbox, &check(&from_q, None, false)).await?;
            dst.files_check(&dst_sandbox, &check(&to_q, Some(top_name(&from_q.path)), checked.top_dir)).await?;
            let (src_host, src_endpoint) = self.placed_host(&from).await?;
            let (dst_host, dst_endpoint) = self.placed_host(&to).await?;
            for (host, endpoint) in [(&src_host, &src_endpoint), (&dst_host, &dst_endpoint)] {
                if on_loopback(endpoint) {
                    return Err(HubError::new(
                        ErrorCode::Unavailable,
                        format!("host '{}' serves its agent endpoint on loopback ({endpoint}), which another host cannot reach: copy across hosts between hosts that reach each other", host.name),
                    ));
                }
            }
            let end = |sandbox, q: &AgentFilesQuery| AgentCopyEnd { sandbox, path: q.path.clone(), uid_base: q.uid_base };
            let object = TransferObject::Files { from: end(src_sandbox, &from_q), to: end(dst_sandbox, &to_q), recursive: req.recursive };
            self.transfer(&src_host, &dst_host, object, &mut |_| {}).await?;
            Ok(CopyResult { via: CopyVia::Transfer, written: checked.written })
        }
        .await;
        let what = format!("copy from {}/{}:{}", from.tenant, from.name, req.from.path);
        self.copy_event(p, &to, "files.copy", &format!("{what} to {}", req.to.path), &r.as_ref().map(|c| c.written).map_err(|e: &HubError| HubError(e.0.clone()))).await;
        r
    }

    async fn copy_event(&self, p: &Principal, inst: &Instance, action: &str, what: &str, r: &HubResult<FilesWritten>) {
        let (result, message) = match r {
            Ok(w) => ("ok", format!("{what}: {} entries, {} bytes", w.entries, w.bytes)),
            Err(e) => ("error", format!("{what}: {}", e.0.message)),
        };
        self.event(&p.actor(), Some(&inst.tenant), object(inst), action, result, Some(message)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints_and_top_names() {
        assert!(on_loopback("https://127.0.0.1:7000") && on_loopback("https://[::1]:7000") && on_loopback("https://localhost:7000"));
        assert!(!on_loopback("https://10.240.0.2:7000") && !on_loopback("https://node-b.example:7000"));
        assert_eq!((top_name("a/b/"), top_name("f"), top_name("")), ("b".to_string(), "f".to_string(), "home".to_string()));
    }
}
