//! The hub-agent protocol: the desired-state document a host converges to and the
//! report it sends back.
//!
//! Versioning rule: `PROTOCOL_VERSION` changes only for incompatible changes. Adding an
//! optional field is compatible and does not bump it; agents and hubs reject documents
//! of another major version with a clear error instead of guessing.

use crate::api::{Capacity, InstanceSpec};
use crate::ids::{HostId, InstanceId};
use crate::names::Name;
use crate::state::{DesiredState, ObservedState};
use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 1;

/// Everything one host must make true.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DesiredDoc {
    pub schema_version: u32,
    pub host: Name,
    pub host_id: HostId,
    /// Increases whenever anything in this document changes.
    pub generation: i64,
    pub instances: Vec<DesiredInstance>,
    /// The range tenant networks come from: hangar bridges inside it that no instance
    /// needs are removed from the host.
    #[serde(default)]
    pub cluster_range: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DesiredInstance {
    pub id: InstanceId,
    pub tenant: Name,
    pub name: Name,
    pub spec: InstanceSpec,
    pub desired: DesiredState,
    /// The instance's generation; echoed back in reports.
    pub generation: i64,
    /// Its tenant network; absent for instances without one.
    #[serde(default)]
    pub network: Option<crate::net::NetSpec>,
}

/// What a host observed: sent after every convergence pass and as the heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct ObservedInstance {
    pub id: InstanceId,
    pub state: ObservedState,
    /// The generation the host last acted on.
    pub generation: i64,
    pub error: Option<String>,
}

/// The agent's join request: a one-time token and a CSR for its certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
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
