//! The hub's store: the only place desired state lives.
//!
//! [`Store`] is the narrow interface the hub uses; [`SqliteStore`] is the embedded
//! implementation (WAL, migrations). A PostgreSQL implementation is a new file that
//! implements the same trait and passes the same [`contract`] suite (feature
//! `contract`); nothing above this crate speaks SQL, and [`StoreError`] names no
//! backend type.
//!
//! Writes are narrow or conditional, so that several hubs on one database stay correct
//! without locks in any one of them: a counter bump, a heartbeat that writes only what
//! the host says, a state move that applies only from the states it names, and
//! compare-and-swap updates that fail with [`StoreError::Conflict`] when the row moved
//! since it was read. There is no whole-row update: each write names what it changes.
//!
//! A write that changes what a host must do (an instance inserted or updated) can bump
//! that host's desired generation in the same transaction (the `bump` argument), so no
//! crash between the two leaves a decision the host's agent is never told about.

use async_trait::async_trait;
use hangar_types::api::{Capacity, Event, HostState, Image, Instance, Operation, OperationStatus, Pool, PoolCounts, Tenant};
use hangar_types::snapshots::SnapshotSchedule;
use hangar_types::{Generation, HostId, InstanceId, InstanceState, Name, OperationId, TokenId};
use std::sync::Arc;
use time::OffsetDateTime;

mod sqlite;
pub use sqlite::SqliteStore;
mod backups;
mod transfers;
pub use backups::{BackupProgressRecord, BackupSettingsRecord, BackupStore, BackupTargetRecord};
pub use transfers::{TransferRecord, TransferStore};
mod moves;
pub use moves::{EvacuationItemRecord, EvacuationRecord, MoveRecord, MoveStore};

#[cfg(feature = "contract")]
pub mod contract;

/// The cause of a [`StoreError`], whatever the backend (sqlx, a driver, I/O).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the store, with the failing step as context. Backend types never appear
/// here: the cause is kept as a boxed `#[source]`, so callers match on what happened,
/// not on which database said it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique name or key is taken; the string names what.
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A compare-and-swap lost: the row changed since the caller read it. The string
    /// names what; reading it again and retrying (or giving up) is the caller's choice.
    #[error("{0} changed since it was read: read it again and retry")]
    Conflict(String),
    /// No block of free net ids for the subnet asked for is left in the cluster range.
    #[error("no free tenant network of that size left: the cluster range holds {0} /24s, and they are taken (a smaller net_prefix, or deleting a tenant, frees room)")]
    NetworksExhausted(u32),
    /// The database could not be reached in time (busy, closed, connection lost): the
    /// same call may succeed later.
    #[error("store unavailable while trying to {context}: retry later")]
    Unavailable {
        context: &'static str,
        #[source]
        source: BoxError,
    },
    /// Any other failure of the database.
    #[error("store failed while trying to {context}")]
    Backend {
        context: &'static str,
        #[source]
        source: BoxError,
    },
    /// The schema could not be brought up to date (a newer or hand-edited database).
    #[error("store migration failed")]
    Migrate(#[source] BoxError),
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
    pub desired_generation: Generation,
    pub created_at: OffsetDateTime,
    /// The provider that made it (`local`), if one did.
    pub provider: Option<String>,
}

/// An API token; only its hash is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRecord {
    pub id: TokenId,
    /// SHA-256 (hex) of the secret.
    pub hash: String,
    /// None: admin scope.
    pub tenant: Option<Name>,
    /// What it may do within that scope (`viewer`: read-only).
    pub role: hangar_types::api::TokenRole,
    pub description: Option<String>,
    pub created_at: OffsetDateTime,
    /// None: never expires.
    pub expires_at: Option<OffsetDateTime>,
    /// Recorded at most about once a minute per token (see the hub's token cache).
    pub last_used_at: Option<OffsetDateTime>,
}

/// A tenant's secret, sealed by the hub: the store never sees the value.
#[derive(Clone, PartialEq)]
pub struct SecretRecord {
    pub tenant: Name,
    pub name: Name,
    /// Nonce and ciphertext, as the hub's sealing made them.
    pub sealed: Vec<u8>,
    pub size_bytes: u64,
    /// From the generation counter: a changed value has a higher one.
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretRecord {{ {}/{} v{} {} bytes }}", self.tenant, self.name, self.version, self.size_bytes)
    }
}

/// A proxy token: opens one port of one instance; only its hash is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyTokenRecord {
    pub id: String,
    /// SHA-256 (hex) of the secret.
    pub hash: String,
    pub tenant: Name,
    pub instance: Name,
    pub instance_id: InstanceId,
    pub port: u16,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
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

/// What a host's report says about the host itself; recording it never touches the
/// host's state, desired generation or credentials.
#[derive(Clone, Debug, PartialEq)]
pub struct HostReport {
    /// When the report arrived: the host's new `last_heartbeat`.
    pub at: OffsetDateTime,
    pub capacity: Capacity,
    pub endpoint: String,
    pub drivers: Vec<String>,
    pub agent_version: String,
}

/// A conditional move of a host's state, checked and applied atomically by the store.
#[derive(Clone, Debug, PartialEq)]
pub struct HostStateChange {
    pub to: HostState,
    /// Only from one of these states; None: from any state.
    pub from: Option<Vec<HostState>>,
    /// Only a host heard from at all, and last before this instant (a silent host).
    pub heard_before: Option<OffsetDateTime>,
}

impl HostStateChange {
    /// A move to `to` from any state.
    pub fn to(to: HostState) -> Self {
        HostStateChange { to, from: None, heard_before: None }
    }
    /// Only from one of `states`.
    pub fn from(self, states: &[HostState]) -> Self {
        HostStateChange { from: Some(states.to_vec()), ..self }
    }
    /// Only if the host's last heartbeat is older than `instant` (never heard: no move).
    pub fn if_silent_since(self, instant: OffsetDateTime) -> Self {
        HostStateChange { heard_before: Some(instant), ..self }
    }
    /// Whether a host in `state`, last heard at `last_heartbeat`, may make this move.
    /// Every implementation decides with this one rule.
    pub fn allows(&self, state: HostState, last_heartbeat: Option<OffsetDateTime>) -> bool {
        let from_ok = self.from.as_ref().is_none_or(|f| f.contains(&state));
        let silent_ok = match self.heard_before {
            None => true,
            Some(cutoff) => last_heartbeat.is_some_and(|t| t < cutoff),
        };
        from_ok && silent_ok
    }
}

/// What a compare-and-swap of an instance expects still to find: the generation and the
/// state the caller read. Every change of desired state bumps the generation, and every
/// observation that matters moves the state, so a match means nobody decided anything
/// about the instance since. `observed` alone is not part of it: marking instances
/// unknown must not make the next decision about them fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceVersion {
    pub generation: Generation,
    pub state: InstanceState,
}

impl InstanceVersion {
    /// The version of an instance as read.
    pub fn of(instance: &Instance) -> Self {
        InstanceVersion { generation: instance.generation, state: instance.state }
    }
}

#[async_trait]
pub trait Store: BackupStore + TransferStore + MoveStore + Send + Sync + 'static {
    // ---- tenants ----
    /// Inserts a tenant, allocating atomically the smallest free aligned block of net
    /// ids in `1..=max_net_id` for its `net_prefix` (the given `net_id` is ignored).
    /// Returns the stored tenant.
    async fn insert_tenant(&self, tenant: &Tenant, max_net_id: u32) -> Result<Tenant>;
    async fn get_tenant(&self, name: &Name) -> Result<Option<Tenant>>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;
    /// Deletes a tenant and its tokens. Returns false if it did not exist.
    async fn delete_tenant(&self, name: &Name) -> Result<bool>;
    /// Marks the tenant as being destroyed by operation `op`, unless a destroy is marked
    /// already; the operation in effect (None: no such tenant).
    async fn mark_tenant_destroy(&self, name: &Name, op: OperationId) -> Result<Option<OperationId>>;
    /// Tenants marked by [`Store::mark_tenant_destroy`], with their operations.
    async fn tenant_destroys(&self) -> Result<Vec<(Name, OperationId)>>;
    /// The operation destroying tenant `name`, if one is marked.
    async fn tenant_destroy_of(&self, name: &Name) -> Result<Option<OperationId>>;
    async fn set_operation_progress(&self, id: OperationId, progress: &hangar_types::api::OperationProgress) -> Result<()>;

    // ---- hosts ----
    async fn insert_host(&self, host: &HostRecord) -> Result<()>;
    async fn get_host(&self, name: &Name) -> Result<Option<HostRecord>>;
    async fn get_host_by_id(&self, id: HostId) -> Result<Option<HostRecord>>;
    async fn get_host_by_fingerprint(&self, fingerprint: &str) -> Result<Option<HostRecord>>;
    async fn list_hosts(&self) -> Result<Vec<HostRecord>>;
    /// Gives the host a fresh value of the generation counter as its desired generation,
    /// atomically: concurrent bumps get distinct values, and the host's generation only
    /// grows. Returns the host's id and new generation, or None if no host has that name.
    async fn bump_host_generation(&self, name: &Name) -> Result<Option<(HostId, Generation)>>;
    /// Records a report's heartbeat and what it says about the host (capacity, endpoint,
    /// drivers, agent version); never writes state, desired generation or credentials.
    /// Returns the host as stored after. NotFound if it is gone.
    async fn record_host_report(&self, id: HostId, report: &HostReport) -> Result<HostRecord>;
    /// Moves the host's state if `change` allows it (see [`HostStateChange::allows`]),
    /// deciding and writing in one atomic step. Returns the state it moved from, or None
    /// if the change did not apply. NotFound if the host is gone.
    async fn change_host_state(&self, id: HostId, change: &HostStateChange) -> Result<Option<HostState>>;
    /// Sets a new join token on a host that has not joined yet; false if it has joined
    /// (holds a certificate fingerprint). NotFound if it is gone.
    async fn renew_join_token(&self, id: HostId, token_hash: &str) -> Result<bool>;
    /// Records which provider made the host. NotFound if it is gone.
    async fn set_host_provider(&self, id: HostId, provider: Option<&str>) -> Result<()>;
    /// Atomically clears the join token whose hash matches and records the certificate
    /// fingerprint; returns the host, or None if no host holds that token (used or wrong).
    async fn consume_join_token(&self, token_hash: &str, cert_fingerprint: &str) -> Result<Option<HostRecord>>;
    async fn delete_host(&self, id: HostId) -> Result<bool>;

    // ---- instances ----
    /// Inserts a new instance; AlreadyExists if `tenant/name` is taken. With `bump`, the
    /// same transaction bumps that host's desired generation as
    /// [`Store::bump_host_generation`] does and returns what it returns (None if no host
    /// has that name: the instance is inserted all the same). Without, returns None.
    async fn insert_instance(&self, instance: &Instance, bump: Option<&Name>) -> Result<Option<(HostId, Generation)>>;
    /// Writes every field of an instance but its id, tenant, name and creation time, only
    /// if the stored instance still has the `expected` version (compare-and-swap).
    /// Conflict if it moved, NotFound if it is gone; either way nothing is written and no
    /// host is bumped. `bump` and the result as for [`Store::insert_instance`].
    async fn update_instance_if(&self, instance: &Instance, expected: InstanceVersion, bump: Option<&Name>) -> Result<Option<(HostId, Generation)>>;
    /// Sets `observed` to unknown on every instance placed on `host` that is not already;
    /// returns how many changed. Touches nothing else (not the version).
    async fn mark_host_instances_unknown(&self, host: &Name) -> Result<u32>;
    async fn get_instance(&self, tenant: &Name, name: &Name) -> Result<Option<Instance>>;
    async fn get_instance_by_id(&self, id: InstanceId) -> Result<Option<Instance>>;
    /// Ordered by tenant, then name.
    async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>>;
    async fn delete_instance(&self, id: InstanceId) -> Result<bool>;

    /// A value from one monotonic counter shared by instance and host generations.
    async fn next_generation(&self) -> Result<Generation>;

    // ---- pools ----
    /// AlreadyExists if `tenant/name` is taken.
    async fn insert_pool(&self, pool: &Pool) -> Result<()>;
    /// Sets a pool's desired counts (and `updated_at` to now) only if they are still
    /// `expected`, the counts the caller checked its quotas against (compare-and-swap).
    /// Returns the stored pool. Conflict if the counts moved, NotFound if it is gone.
    async fn set_pool_counts_if(&self, tenant: &Name, name: &Name, expected: PoolCounts, counts: PoolCounts) -> Result<Pool>;
    /// Records the error of the pool's last reconcile pass (None clears it); touches
    /// nothing else. Returns false if the pool is gone.
    async fn set_pool_last_error(&self, tenant: &Name, name: &Name, error: Option<&str>) -> Result<bool>;
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
    async fn delete_token(&self, id: &TokenId) -> Result<bool>;

    // ---- images (registered by admins) ----
    /// AlreadyExists if the name is taken.
    async fn insert_image(&self, image: &Image) -> Result<()>;
    async fn get_image(&self, name: &Name) -> Result<Option<Image>>;
    /// By name.
    async fn list_images(&self) -> Result<Vec<Image>>;
    async fn delete_image(&self, name: &Name) -> Result<bool>;

    // ---- snapshots (of instance volumes) ----
    /// A live snapshot row; replaces a tombstone of the same name. AlreadyExists if a
    /// live one has that name.
    async fn insert_snapshot(&self, snapshot: &SnapshotRecord) -> Result<()>;
    /// Rows by instance then name; tombstones only with `filter.tombstones`.
    async fn list_snapshots(&self, filter: &SnapshotFilter) -> Result<Vec<SnapshotRecord>>;
    /// Sets a live row's sizes; whether there was one.
    async fn set_snapshot_sizes(&self, instance: InstanceId, name: &Name, referenced: Option<u64>, exclusive: Option<u64>) -> Result<bool>;
    /// Turns a live row into a tombstone at `at`; whether there was one.
    async fn tombstone_snapshot(&self, instance: InstanceId, name: &Name, at: OffsetDateTime) -> Result<bool>;
    /// Removes a row, live or tombstone; whether there was one.
    async fn remove_snapshot(&self, instance: InstanceId, name: &Name) -> Result<bool>;
    /// Sets (Some) or clears (None) an instance's snapshot schedule.
    async fn set_snapshot_schedule(&self, instance: InstanceId, schedule: Option<SnapshotSchedule>) -> Result<()>;
    /// Every schedule, of the instances on `host` or of all.
    async fn list_snapshot_schedules(&self, host: Option<&Name>) -> Result<Vec<(InstanceId, SnapshotSchedule)>>;

    // ---- secrets (sealed by the hub) and proxy tokens ----
    /// Inserts, or replaces the value, size, version and update time of, a secret;
    /// its creation time stays.
    async fn put_secret(&self, secret: &SecretRecord) -> Result<()>;
    async fn get_secret(&self, tenant: &Name, name: &Name) -> Result<Option<SecretRecord>>;
    /// A tenant's secrets, by name.
    async fn list_secrets(&self, tenant: &Name) -> Result<Vec<SecretRecord>>;
    async fn delete_secret(&self, tenant: &Name, name: &Name) -> Result<bool>;
    /// AlreadyExists if the id or hash is taken.
    async fn insert_proxy_token(&self, token: &ProxyTokenRecord) -> Result<()>;
    async fn find_proxy_token(&self, hash: &str) -> Result<Option<ProxyTokenRecord>>;
    /// A tenant's proxy tokens (of one instance, if named), oldest first.
    async fn list_proxy_tokens(&self, tenant: &Name, instance: Option<&Name>) -> Result<Vec<ProxyTokenRecord>>;
    /// Deletes a proxy token and moves the token epoch in the same transaction, so the
    /// hubs' proxy caches drop it at once.
    async fn delete_proxy_token(&self, tenant: &Name, id: &str) -> Result<bool>;

    // ssh keys (the SSH gateway)
    /// AlreadyExists if the tenant has a key of this name or this very key.
    async fn insert_ssh_key(&self, key: &hangar_types::api::SshKey) -> Result<()>;
    /// A tenant's keys, by name.
    async fn list_ssh_keys(&self, tenant: &Name) -> Result<Vec<hangar_types::api::SshKey>>;
    async fn delete_ssh_key(&self, tenant: &Name, name: &Name) -> Result<bool>;

    // ---- control plane safety (issue 13): certificate renewal, expiries, revocation ----
    /// Records `next` as the host's renewed certificate, only while its current one is
    /// `current` (compare-and-swap); the current one keeps working until
    /// [`Store::promote_host_cert`]. False if the host moved on or is gone.
    async fn stage_host_cert(&self, id: HostId, current: &str, next: &str) -> Result<bool>;
    /// The renewed certificate a host has not used yet.
    async fn host_cert_next(&self, id: HostId) -> Result<Option<String>>;
    /// Makes the staged certificate with fingerprint `next` the host's only one, in one
    /// statement; returns the host, or None if no host has it staged.
    async fn promote_host_cert(&self, next: &str) -> Result<Option<HostRecord>>;
    /// Asks for the host's certificate `current` to be replaced (`host rotate-cert`),
    /// only while it is the host's current one; false if it is not (or the host is gone).
    async fn request_cert_rotation(&self, id: HostId, current: &str) -> Result<bool>;
    /// The fingerprint of the certificate the host was asked to replace, while it is
    /// still the current one (a promoted renewal ends the request by itself).
    async fn cert_rotation(&self, id: HostId) -> Result<Option<String>>;
    /// Sets when the host's join token stops working (None: never).
    async fn set_join_token_expiry(&self, id: HostId, at: Option<OffsetDateTime>) -> Result<()>;
    async fn join_token_expiry(&self, id: HostId) -> Result<Option<OffsetDateTime>>;
    /// A counter that [`Store::delete_token`] and [`Store::delete_tenant`] bump in the
    /// transaction that removes tokens: caches of verified tokens are good only while it
    /// has not moved.
    async fn token_epoch(&self) -> Result<u64>;
    /// Records a token's last use; false if it is gone.
    async fn touch_token(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool>;
    /// The operation if it belongs to the tenant named `tenant` now (by the tenant's id:
    /// an operation of an earlier tenant with that name is not found). Events are kept
    /// the same way: [`Store::list_events`] of a tenant lists only the current one's.
    async fn get_operation_of_tenant(&self, id: OperationId, tenant: &Name) -> Result<Option<Operation>>;
}

/// One snapshot of an instance's volume as the hub records it.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotRecord {
    pub instance_id: InstanceId,
    pub name: Name,
    pub created_at: OffsetDateTime,
    pub referenced_bytes: Option<u64>,
    pub exclusive_bytes: Option<u64>,
    pub scheduled: bool,
    /// Set on a tombstone: when it was deleted.
    pub deleted_at: Option<OffsetDateTime>,
}

/// Which snapshot rows to list: all conditions given must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnapshotFilter {
    pub instance: Option<InstanceId>,
    pub tenant: Option<Name>,
    /// Of the instances placed on this host.
    pub host: Option<Name>,
    /// Tombstones too.
    pub tombstones: bool,
}

/// Opens a store from a URL: `sqlite:///abs/path.db` or a plain file path.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    Ok(Arc::new(SqliteStore::open(std::path::Path::new(path)).await?))
}
