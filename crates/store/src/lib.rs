//! The hub's store: the only place desired state lives.
//!
//! [`Store`] is the narrow interface the hub uses; [`SqliteStore`] is the embedded
//! implementation (WAL, migrations). A PostgreSQL implementation is a new file that
//! implements the same trait; nothing above this crate speaks SQL.

use async_trait::async_trait;
use hangar_types::api::{Capacity, Event, HostState, Instance, Operation, OperationStatus, Pool, Tenant};
use hangar_types::{HostId, InstanceId, Name, OperationId};
use std::sync::Arc;
use time::OffsetDateTime;

mod sqlite;
pub use sqlite::SqliteStore;

/// Errors of the store, with the failing step as context.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique name or key is taken; the string names what.
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    /// No block of free net ids for the subnet asked for is left in the cluster range.
    #[error("no free tenant network of that size left: the cluster range holds {0} /24s, and they are taken (a smaller net_prefix, or deleting a tenant, frees room)")]
    NetworksExhausted(u32),
    #[error("store failed while trying to {context}")]
    Backend {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("store migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A row that does not parse back into its type: a bug or a hand-edited database.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A host as the hub records it, secrets included (never serialized to users).
#[derive(Clone, Debug, PartialEq)]
pub struct HostRecord {
    pub id: HostId,
    pub name: Name,
    pub state: HostState,
    pub capacity: Capacity,
    pub endpoint: Option<String>,
    pub drivers: Vec<String>,
    pub agent_version: Option<String>,
    pub last_heartbeat: Option<OffsetDateTime>,
    /// SHA-256 (hex) of the one-time join token, until it is used.
    pub join_token_hash: Option<String>,
    /// SHA-256 (hex) of the DER of the host's client certificate, once joined.
    pub cert_fingerprint: Option<String>,
    /// Generation of this host's desired-state document; bumped on every change to it.
    pub desired_generation: i64,
    pub created_at: OffsetDateTime,
    /// The provider that made it (`local`), if one did.
    pub provider: Option<String>,
}

/// An API token; only its hash is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    /// SHA-256 (hex) of the secret.
    pub hash: String,
    /// None: admin scope.
    pub tenant: Option<Name>,
    pub description: Option<String>,
    pub created_at: OffsetDateTime,
}

/// A new audit event; the store assigns id and time.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub actor: String,
    pub tenant: Option<Name>,
    pub object: String,
    pub action: String,
    pub result: String,
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstanceFilter {
    pub tenant: Option<Name>,
    pub host: Option<Name>,
    /// Members of this pool (of `tenant`).
    pub pool: Option<Name>,
}

impl InstanceFilter {
    pub fn tenant(t: &Name) -> Self {
        InstanceFilter { tenant: Some(t.clone()), ..Default::default() }
    }
    pub fn host(h: &Name) -> Self {
        InstanceFilter { host: Some(h.clone()), ..Default::default() }
    }
    pub fn pool(t: &Name, p: &Name) -> Self {
        InstanceFilter { tenant: Some(t.clone()), pool: Some(p.clone()), ..Default::default() }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- tenants ----
    /// Inserts a tenant, allocating atomically the smallest free aligned block of net
    /// ids in `1..=max_net_id` for its `net_prefix` (the given `net_id` is ignored).
    /// Returns the stored tenant.
    async fn insert_tenant(&self, tenant: &Tenant, max_net_id: u32) -> Result<Tenant>;
    async fn get_tenant(&self, name: &Name) -> Result<Option<Tenant>>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;
    /// Deletes a tenant and its tokens. Returns false if it did not exist.
    async fn delete_tenant(&self, name: &Name) -> Result<bool>;

    // ---- hosts ----
    async fn insert_host(&self, host: &HostRecord) -> Result<()>;
    async fn get_host(&self, name: &Name) -> Result<Option<HostRecord>>;
    async fn get_host_by_id(&self, id: HostId) -> Result<Option<HostRecord>>;
    async fn get_host_by_fingerprint(&self, fingerprint: &str) -> Result<Option<HostRecord>>;
    async fn list_hosts(&self) -> Result<Vec<HostRecord>>;
    /// Replaces every field of an existing host (by id).
    async fn update_host(&self, host: &HostRecord) -> Result<()>;
    /// Atomically clears the join token whose hash matches and records the certificate
    /// fingerprint; returns the host, or None if no host holds that token (used or wrong).
    async fn consume_join_token(&self, token_hash: &str, cert_fingerprint: &str) -> Result<Option<HostRecord>>;
    async fn delete_host(&self, id: HostId) -> Result<bool>;

    // ---- instances ----
    /// Inserts a new instance; AlreadyExists if `tenant/name` is taken.
    async fn insert_instance(&self, instance: &Instance) -> Result<()>;
    /// Replaces an existing instance (by id). NotFound if it is gone.
    async fn update_instance(&self, instance: &Instance) -> Result<()>;
    async fn get_instance(&self, tenant: &Name, name: &Name) -> Result<Option<Instance>>;
    async fn get_instance_by_id(&self, id: InstanceId) -> Result<Option<Instance>>;
    /// Ordered by tenant, then name.
    async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>>;
    async fn delete_instance(&self, id: InstanceId) -> Result<bool>;

    /// A value from one monotonic counter shared by instance and host generations.
    async fn next_generation(&self) -> Result<i64>;

    // ---- pools ----
    /// AlreadyExists if `tenant/name` is taken.
    async fn insert_pool(&self, pool: &Pool) -> Result<()>;
    /// Replaces an existing pool (by tenant and name). NotFound if it is gone.
    async fn update_pool(&self, pool: &Pool) -> Result<()>;
    async fn get_pool(&self, tenant: &Name, name: &Name) -> Result<Option<Pool>>;
    /// Ordered by tenant, then name; of one tenant if given.
    async fn list_pools(&self, tenant: Option<&Name>) -> Result<Vec<Pool>>;
    async fn delete_pool(&self, tenant: &Name, name: &Name) -> Result<bool>;

    // ---- operations ----
    async fn insert_operation(&self, op: &Operation) -> Result<()>;
    async fn get_operation(&self, id: OperationId) -> Result<Option<Operation>>;
    /// Sets status and error (and updated_at) of an operation.
    async fn finish_operation(&self, id: OperationId, status: OperationStatus, error: Option<&str>) -> Result<()>;
    /// Operations still running, oldest first; optionally only those of one instance.
    async fn running_operations(&self, instance: Option<InstanceId>) -> Result<Vec<Operation>>;

    // ---- events ----
    async fn insert_event(&self, event: &NewEvent) -> Result<Event>;
    /// The newest `limit` events (of one tenant if given), returned oldest first.
    async fn list_events(&self, tenant: Option<&Name>, limit: u32) -> Result<Vec<Event>>;

    // ---- tokens ----
    async fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>>;
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    async fn delete_token(&self, id: &str) -> Result<bool>;
}

/// Opens a store from a URL: `sqlite:///abs/path.db` or a plain file path.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    Ok(Arc::new(SqliteStore::open(std::path::Path::new(path)).await?))
}
