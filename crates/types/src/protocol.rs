//! The hub-agent protocol: the desired-state document a host converges to and the
//! report it sends back.
//!
//! Versioning rule: `PROTOCOL_VERSION` changes only for incompatible changes. Adding an
//! optional field is compatible and does not bump it; agents and hubs reject documents
//! of another major version with a clear error instead of guessing.

use crate::api::{Capacity, InstanceSpec, PoolCounts, Quotas};
use crate::generation::Generation;
use crate::ids::{HostId, InstanceId};
use crate::names::Name;
use crate::state::{DesiredState, ObservedState};
use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 1;

/// Everything one host must make true.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
// Part of the hub-agent protocol: unknown fields (a newer peer's optional ones) are ignored.
pub struct DesiredDoc {
    pub schema_version: u32,
    pub host: Name,
    pub host_id: HostId,
    /// Increases whenever anything in this document changes.
    #[schema(value_type = i64)]
    pub generation: Generation,
    pub instances: Vec<DesiredInstance>,
    /// The range tenant networks come from: hangar bridges inside it that no instance
    /// needs are removed from the host.
    #[serde(default)]
    pub cluster_range: Option<String>,
    /// The tenants of the instances below, with their quotas (checked by
    /// [`DesiredDoc::validate`] before a document is converged to).
    #[serde(default)]
    pub tenants: Vec<DesiredTenant>,
    /// The pools the instances below belong to, with the fleet-wide desired counts.
    #[serde(default)]
    pub pools: Vec<DesiredPool>,
    /// The fingerprint of a host certificate an admin asked to have replaced (`hangar
    /// host rotate-cert`): an agent still presenting it renews now, whatever its expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_cert: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
// Part of the hub-agent protocol: unknown fields (a newer peer's optional ones) are ignored.
pub struct DesiredTenant {
    pub name: Name,
    #[serde(deserialize_with = "known_fields_only")]
    pub quotas: Quotas,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
// Part of the hub-agent protocol: unknown fields (a newer peer's optional ones) are ignored.
pub struct DesiredPool {
    pub tenant: Name,
    pub name: Name,
    pub role: Name,
    #[serde(deserialize_with = "known_fields_only")]
    pub counts: PoolCounts,
}

/// Deserializes an API type that refuses unknown fields in requests (quotas, counts)
/// inside a protocol document, where a newer peer's extra fields must be ignored: keys
/// the type does not have are dropped first. Wrong types still fail, naming the field.
fn known_fields_only<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned + Serialize + Default,
{
    use serde::de::Error;
    let mut v = serde_json::Value::deserialize(d)?;
    if let (Some(o), Ok(serde_json::Value::Object(known))) = (v.as_object_mut(), serde_json::to_value(T::default())) {
        o.retain(|k, _| known.contains_key(k));
    }
    let de = serde_path_to_error::deserialize(v);
    de.map_err(|e| {
        let path = e.path().to_string();
        D::Error::custom(format!("{path}: {}", e.into_inner()))
    })
}

/// A document that cannot be converged to; `field` is its JSON path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DocError {
    pub field: String,
    pub message: String,
}

impl DesiredDoc {
    /// Parses strictly (unknown fields rejected) and validates; errors name the field
    /// by its JSON path, e.g. `instances[2].spec.vcpus`.
    pub fn parse(json: &str) -> Result<DesiredDoc, DocError> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let doc: DesiredDoc = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            DocError { field: if path == "." { "document".into() } else { path }, message: e.into_inner().to_string() }
        })?;
        doc.validate()?;
        Ok(doc)
    }

    /// Checks what parsing cannot: the version, unique instances, known tenants and
    /// pools, sane counts, valid specs, and that each tenant's instances fit its quotas.
    pub fn validate(&self) -> Result<(), DocError> {
        let err = |field: String, message: String| Err(DocError { field, message });
        if self.schema_version != PROTOCOL_VERSION {
            return err("schema_version".into(), format!("version {} is not supported (this hangar speaks {PROTOCOL_VERSION})", self.schema_version));
        }
        for (i, p) in self.pools.iter().enumerate() {
            if p.counts.total() > crate::api::MAX_POOL_SIZE {
                return err(format!("pools[{i}].counts"), format!("running + warm + sleeping is {}; a pool holds at most {}", p.counts.total(), crate::api::MAX_POOL_SIZE));
            }
            if !self.tenants.is_empty() && !self.tenants.iter().any(|t| t.name == p.tenant) {
                return err(format!("pools[{i}].tenant"), format!("tenant '{}' is not in `tenants`", p.tenant));
            }
            if let Some(t) = self.tenants.iter().find(|t| t.name == p.tenant)
                && p.counts.total() > t.quotas.max_instances {
                    return err(
                        format!("pools[{i}].counts"),
                        format!("running + warm + sleeping is {}, over tenant '{}' quota max_instances {}", p.counts.total(), t.name, t.quotas.max_instances),
                    );
                }
        }
        let mut ids = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        let mut ranges: Vec<(usize, crate::idmap::IdRange)> = vec![];
        for (i, d) in self.instances.iter().enumerate() {
            if let Some(r) = d.ids {
                if let Err(e) = r.check() {
                    return err(format!("instances[{i}].ids"), e);
                }
                if let Some((j, _)) = ranges.iter().find(|(_, o)| o.overlaps(&r)) {
                    return err(format!("instances[{i}].ids"), format!("ids {r} overlap those of instances[{j}]: no two sandboxes share ids"));
                }
                ranges.push((i, r));
            }
            if !ids.insert(d.id) {
                return err(format!("instances[{i}].id"), format!("instance {} appears twice", d.id));
            }
            if !names.insert((d.tenant.clone(), d.name.clone())) {
                return err(format!("instances[{i}].name"), format!("{}/{} appears twice", d.tenant, d.name));
            }
            if let Err(e) = d.spec.validate() {
                return err(format!("instances[{i}].spec"), e);
            }
            if !self.tenants.is_empty() && !self.tenants.iter().any(|t| t.name == d.tenant) {
                return err(format!("instances[{i}].tenant"), format!("tenant '{}' is not in `tenants`", d.tenant));
            }
            if let Some(p) = &d.pool
                && !self.pools.iter().any(|x| &x.name == p && x.tenant == d.tenant) {
                    return err(format!("instances[{i}].pool"), format!("pool '{}/{p}' is not in `pools`", d.tenant));
                }
        }
        for (ti, t) in self.tenants.iter().enumerate() {
            let mine: Vec<&DesiredInstance> = self.instances.iter().filter(|d| d.tenant == t.name).collect();
            let active: Vec<&&DesiredInstance> = mine.iter().filter(|d| matches!(d.desired, DesiredState::Running | DesiredState::Warm)).collect();
            let running = mine.iter().filter(|d| d.desired == DesiredState::Running).count() as u32;
            let vcpus: u32 = active.iter().map(|d| d.spec.vcpus).sum();
            let mem: u64 = active.iter().map(|d| d.spec.mem_mib).sum();
            let q = &t.quotas;
            let over = |quota: &str, limit: String, have: String| err(format!("tenants[{ti}].quotas.{quota}"), format!("tenant '{}' has {have} here, over its quota of {limit}", t.name));
            let live = mine.iter().filter(|d| d.desired != DesiredState::Deleted).count() as u32;
            if live > q.max_instances {
                return over("max_instances", q.max_instances.to_string(), format!("{live} instances"));
            }
            if running > q.max_running {
                return over("max_running", q.max_running.to_string(), format!("{running} instances desired running"));
            }
            if vcpus > q.max_vcpus {
                return over("max_vcpus", q.max_vcpus.to_string(), format!("{vcpus} vCPUs running or warm"));
            }
            if mem > q.max_mem_mib {
                return over("max_mem_mib", q.max_mem_mib.to_string(), format!("{mem} MiB running or warm"));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
// Part of the hub-agent protocol: unknown fields (a newer peer's optional ones) are ignored.
pub struct DesiredInstance {
    pub id: InstanceId,
    pub tenant: Name,
    pub name: Name,
    pub spec: InstanceSpec,
    pub desired: DesiredState,
    /// The instance's generation; echoed back in reports.
    #[schema(value_type = i64)]
    pub generation: Generation,
    /// Its tenant network; absent for instances without one.
    #[serde(default)]
    pub network: Option<crate::net::NetSpec>,
    /// The pool it belongs to.
    #[serde(default)]
    pub pool: Option<Name>,
    /// The host uids and gids its user namespace maps 0..size to; kept for the
    /// instance's life (its volume is owned by them). Agents refuse to start an
    /// instance without one.
    #[serde(default)]
    pub ids: Option<crate::idmap::IdRange>,
    /// The registered image `spec.image` names, as the hub resolved it; absent for
    /// `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ResolvedImage>,
    /// Scheduled snapshots of its volume, taken and pruned by the agent; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_schedule: Option<crate::snapshots::SnapshotSchedule>,
    /// The secrets `spec.secrets` names that exist, by name and version: never their
    /// values (this document is kept on disk); the agent fetches those over mTLS
    /// when a version changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::access::SecretStamp>,
}

/// A registered image as a host needs it: what it is and where it lies on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
// Part of the hub-agent protocol: unknown fields (a newer peer's optional ones) are ignored.
pub struct ResolvedImage {
    pub kind: crate::api::ImageKind,
    pub path: String,
    /// A tarball's sha256 (hex), checked before it is extracted.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// What a host observed: sent after every convergence pass and as the heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
// Part of the hub-agent protocol: unknown fields (a newer peer's optional ones) are ignored.
pub struct AgentReport {
    pub schema_version: u32,
    pub agent_version: String,
    pub capacity: Capacity,
    /// `https://ip:port` of the agent's mTLS endpoint.
    pub endpoint: String,
    pub drivers: Vec<String>,
    pub instances: Vec<ObservedInstance>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
// Part of the hub-agent protocol: unknown fields (a newer peer's optional ones) are ignored.
pub struct ObservedInstance {
    pub id: InstanceId,
    pub state: ObservedState,
    /// The generation the host last acted on.
    #[schema(value_type = i64)]
    pub generation: Generation,
    pub error: Option<String>,
    /// The snapshots of its volume the host holds (backups' own excepted); absent from
    /// agents that do not report them, and then the hub keeps what it recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<Vec<ObservedSnapshot>>,
}

/// One snapshot of an instance's volume, as its host sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservedSnapshot {
    #[schema(value_type = String)]
    pub name: crate::ids::SnapshotId,
    /// When it was taken (Unix seconds), if the host can tell.
    #[serde(default)]
    pub created_unix: Option<i64>,
    /// Bytes it refers to (shared with the volume or not).
    #[serde(default)]
    pub referenced_bytes: Option<u64>,
    /// Bytes only it holds: what deleting it frees; counted against the disk quota.
    #[serde(default)]
    pub exclusive_bytes: Option<u64>,
}

/// The agent's join request: a one-time token and a CSR for its certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// `hjt1.<secret>.<ca-pin>` as `hangar host add` prints it.
    #[schema(pattern = "^hjt1\\.[0-9a-f]{1,128}\\.[0-9a-f]{16,64}$")]
    pub join_token: String,
    pub csr_pem: String,
    /// DNS names and IPs the agent's endpoint is reached at (its certificate's SANs).
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JoinResponse {
    pub host_id: HostId,
    pub host: Name,
    pub cert_pem: String,
    pub ca_pem: String,
    /// SHA-256 of the hub's client certificate: the only peer the agent's endpoint accepts.
    pub hub_client_fingerprint: String,
}

/// A joined host asks for a new certificate (over mTLS with its current one) when less
/// than a third of the current one's lifetime is left.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RenewRequest {
    pub csr_pem: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RenewResponse {
    /// Client-auth only, from the hosts' CA; works once the agent presents it, and the
    /// old one stops working then.
    pub cert_pem: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(extra_instance: &str, counts: &str, max_running: u32) -> String {
        format!(
            r#"{{"schema_version":1,"host":"node-b","host_id":"0190f0d2-7a34-7c3e-9b1a-000000000001","generation":3,
               "tenants":[{{"name":"acme","quotas":{{"max_vcpus":8,"max_mem_mib":4096,"max_running":{max_running},"max_instances":10,"max_disk_gib":10}}}}],
               "pools":[{{"tenant":"acme","name":"workers","role":"worker","counts":{counts}}}],
               "instances":[{{"id":"0190f0d2-7a34-7c3e-9b1a-0000000000a1","tenant":"acme","name":"w1","pool":"workers",
                 "spec":{{"image":"host","vcpus":1,"mem_mib":64,"disk_mib":64{extra_instance}}},"desired":"running","generation":3}}]}}"#
        )
    }

    #[test]
    fn a_good_document_parses() {
        let d = DesiredDoc::parse(&doc("", r#"{"running":1}"#, 2)).unwrap();
        assert_eq!(d.pools[0].counts.running, 1);
        assert_eq!(d.instances[0].pool.as_ref().map(|p| p.as_str()), Some("workers"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = DesiredDoc::parse(&doc("", r#"{"running":1}"#, 2).replace(r#""vcpus":1"#, r#""vcpus":"one""#)).unwrap_err();
        assert_eq!(e.field, "instances[0].spec.vcpus", "{e}");
        let e = DesiredDoc::parse(&doc("", r#"{"running":-1}"#, 2)).unwrap_err();
        assert_eq!(e.field, "pools[0].counts", "{e}");
        assert!(e.message.starts_with("running:"), "{e}");
        let e = DesiredDoc::parse(&doc("", r#"{"running":11}"#, 2)).unwrap_err();
        assert_eq!(e.field, "pools[0].counts", "{e}");
        assert!(e.message.contains("max_instances"), "{e}");
        let e = DesiredDoc::parse(&doc("", r#"{"running":1}"#, 0)).unwrap_err();
        assert_eq!(e.field, "tenants[0].quotas.max_running", "{e}");
        let e = DesiredDoc::parse(&doc("", r#"{"running":1}"#, 2).replace("\"schema_version\":1", "\"schema_version\":9")).unwrap_err();
        assert_eq!(e.field, "schema_version", "{e}");
    }

    /// Regression for issue 13: a newer hub's optional field (anywhere in the document,
    /// also inside quotas and counts, which API requests keep strict) is ignored, as the
    /// versioning rule says; today's document still reads the same.
    #[test]
    fn unknown_fields_of_a_newer_peer_are_ignored() {
        let newer = doc(r#","colour":"red""#, r#"{"running":1,"paused":0}"#, 2)
            .replace(r#""max_disk_gib":10"#, r#""max_disk_gib":10,"max_gpus":1"#)
            .replace(r#""generation":3,"#, r#""generation":3,"rollout":{"wave":2},"#);
        let d = DesiredDoc::parse(&newer).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d, DesiredDoc::parse(&doc("", r#"{"running":1}"#, 2)).unwrap());
        let report = r#"{"schema_version":1,"agent_version":"9.9","capacity":{"vcpus":2,"mem_mib":1,"disk_mib":1,"gpus":1},"endpoint":"https://h:1",
            "drivers":[],"instances":[{"id":"0190f0d2-7a34-7c3e-9b1a-0000000000a1","state":"running","generation":3,"error":null,"cpu_ms":5}],"uptime":1}"#;
        let r: AgentReport = serde_json::from_str(report).unwrap();
        assert_eq!(r.instances[0].generation, Generation::new(3));
        // Wrong types still fail.
        assert!(serde_json::from_str::<AgentReport>(&report.replace(r#""generation":3"#, r#""generation":"x""#)).is_err());
    }

    #[test]
    fn id_ranges_are_valid_and_never_shared() {
        // The spec's closing brace comes early, the template's closes `ids`.
        let mut d = DesiredDoc::parse(&doc(r#"},"ids":{"base":1048576,"size":65536"#, r#"{"running":1}"#, 2)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.instances[0].ids, Some(crate::idmap::IdRange::at(1 << 20)));
        let mut other = d.instances[0].clone();
        other.id = "0190f0d2-7a34-7c3e-9b1a-0000000000a2".parse().unwrap();
        other.name = "w2".parse().unwrap();
        other.pool = None;
        other.ids = Some(crate::idmap::IdRange { base: (1 << 20) + 4096, size: 65536 });
        d.instances.push(other);
        let e = d.validate().unwrap_err();
        assert_eq!(e.field, "instances[1].ids", "{e}");
        d.instances[1].ids = Some(crate::idmap::IdRange::at((1 << 20) + crate::idmap::IDS_PER_SANDBOX));
        d.validate().unwrap();
        d.instances[1].ids = Some(crate::idmap::IdRange::at(0));
        assert_eq!(d.validate().unwrap_err().field, "instances[1].ids");
    }

    /// Snapshot fields are optional both ways: documents and reports without them (older
    /// hubs and agents) parse, and they are left out when empty so older peers, which
    /// refuse unknown fields, still parse what newer ones send.
    #[test]
    fn snapshot_fields_are_optional() {
        let mut d = DesiredDoc::parse(&doc("", r#"{"running":1}"#, 2)).unwrap();
        assert_eq!(d.instances[0].snapshot_schedule, None);
        assert!(!serde_json::to_string(&d).unwrap().contains("snapshot_schedule"));
        d.instances[0].snapshot_schedule = Some(crate::snapshots::SnapshotSchedule { every_secs: 60, keep: 2 });
        let back = DesiredDoc::parse(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        let old: ObservedInstance = serde_json::from_str(r#"{"id":"0190f0d2-7a34-7c3e-9b1a-0000000000a1","state":"running","generation":3,"error":null}"#).unwrap();
        assert_eq!(old.snapshots, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("snapshots"));
    }
}
