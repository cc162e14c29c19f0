//! [`SqliteStore`]: the embedded store, one SQLite file in WAL mode.
//!
//! How it stays correct under many concurrent tasks:
//! - Every write that must be atomic is a single statement (`INSERT ... SELECT`,
//!   `UPDATE ... RETURNING`) or an `IMMEDIATE` transaction. SQLite serializes writers,
//!   and the busy timeout makes a writer queue instead of failing. A *deferred*
//!   transaction that reads before it writes could instead fail with `SQLITE_BUSY`
//!   without waiting, which is why none is used.
//! - Net ids and generations are computed inside the writing statement, so two tasks
//!   can never be handed the same value.
//! - A compare-and-swap is one `UPDATE ... WHERE <expected values>`; when it changes no
//!   row, a second look tells Conflict (the row is there) from NotFound. That look is
//!   only for the error's kind: the write itself was already refused atomically.
//! - An instance write that bumps its host runs in one `IMMEDIATE` transaction with the
//!   bump ([`bump_in`]), so a crash leaves both or neither.
//!
//! Storage formats (see `migrations/0001_init.sql`): ids and names are text, enums are
//! their lowercase API spelling, composite values are JSON text, and timestamps are
//! INTEGER unix nanoseconds in UTC, which round-trip `OffsetDateTime` exactly (the
//! offset is normalized to UTC; `OffsetDateTime` equality compares instants, so values
//! read back compare equal). Times outside 1678..2262 do not fit and fail to encode.
//!
//! Migrations: sqlx's `migrate!` macro needs the `macros` feature, which the workspace
//! leaves off. The SQL files are embedded with `include_str!` and run by sqlx's own
//! [`Migrator`] instead, which records them in the same `_sqlx_migrations` table with
//! the same checksums as `migrate!` would, so switching to the macro later is seamless.

use hangar_types::snapshots::SnapshotSchedule;
use crate::{
    HostRecord, HostReport, HostStateChange, InstanceFilter, InstanceVersion, NewEvent, ProxyTokenRecord, Result, SecretRecord,
    SnapshotFilter, SnapshotRecord, Store, StoreError, TokenRecord,
};
use async_trait::async_trait;
use hangar_types::api::{Event, HostState, Image, Instance, Operation, OperationStatus, Pool, PoolCounts, Tenant};
use hangar_types::{DesiredState, Generation, HostId, InstanceId, Name, ObservedState, OperationId, TokenId};
use serde::de::DeserializeOwned;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteArgumentsBuffer, SqliteConnectOptions, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous, SqliteTypeInfo, SqliteValueRef,
};
use sqlx::types::Json;
use sqlx::{Decode, Encode, Row, SqlSafeStr, Type};
use std::fmt::Display;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

mod backups;
mod transfers;
mod moves;

/// How long a writer waits for another writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite has one writer at a time; a few connections let readers run beside it.
const MAX_CONNECTIONS: u32 = 4;

/// The schema, oldest first. Append new files; never edit one that has shipped (its
/// checksum is recorded and a changed file makes `open` fail).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "instance address", include_str!("../migrations/0002_instance_address.sql")),
    (3, "tenant isolated", include_str!("../migrations/0003_tenant_isolated.sql")),
    (4, "pools", include_str!("../migrations/0004_pools.sql")),
    (5, "tenant net prefix", include_str!("../migrations/0005_tenant_net_prefix.sql")),
    (6, "uid ranges", include_str!("../migrations/0006_uid_ranges.sql")),
    (7, "images", include_str!("../migrations/0007_images.sql")),
    (8, "snapshots", include_str!("../migrations/0008_snapshots.sql")),
    (10, "secrets and proxy tokens", include_str!("../migrations/0010_secrets_proxy_tokens.sql")),
    (11, "ssh keys", include_str!("../migrations/0011_ssh_keys.sql")),
    (9, "backups", include_str!("../migrations/0009_backups.sql")),
    (12, "control safety", include_str!("../migrations/0012_control_safety.sql")),
    (13, "tenant ids", include_str!("../migrations/0013_tenant_ids.sql")),
    (14, "transfers", include_str!("../migrations/0014_transfers.sql")),
    (19, "moves", include_str!("../migrations/0019_moves.sql")),
    (20, "evacuations", include_str!("../migrations/0020_evacuations.sql")),
    (21, "cert rotation and viewer tokens", include_str!("../migrations/0021_cert_rotation_viewer.sql")),
];

/// The store on one SQLite database; cheap to clone (it is a connection pool).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        private_files(path).map_err(|e| StoreError::Backend { context: "make the database file private (0600)", source: Box::new(e) })?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across process crashes in WAL mode; only an OS crash or
            // power loss can drop the last transactions, which the hub reconciles anyway.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(backend("open the database"))?;
        Self::migrate(pool).await
    }

    /// A private in-memory database, for tests.
    pub async fn open_in_memory() -> Result<SqliteStore> {
        // An in-memory database lives exactly as long as its connection: keep a single
        // one that is never retired, and let concurrent callers queue for it.
        let options = SqliteConnectOptions::new().in_memory(true).foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(backend("open an in-memory database"))?;
        Self::migrate(pool).await
    }

    /// Closes every connection, waiting for them to finish; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(pool: SqlitePool) -> Result<SqliteStore> {
        let migrations = MIGRATIONS
            .iter()
            .map(|&(version, name, sql)| {
                Migration::new(version, name.into(), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect();
        Migrator::with_migrations(migrations).run(&pool).await.map_err(|e| StoreError::Migrate(e.into()))?;
        Ok(SqliteStore { pool })
    }

    /// Runs a statement that must change exactly one row; NotFound otherwise.
    async fn update_one(&self, query: Q<'_>, context: &'static str, what: String) -> Result<()> {
        let done = query.execute(&self.pool).await.map_err(unique(context, what.clone()))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(what));
        }
        Ok(())
    }

    /// Whether the `SELECT 1 ...` query finds a row.
    async fn exists(&self, query: Q<'_>, context: &'static str) -> Result<bool> {
        Ok(query.fetch_optional(&self.pool).await.map_err(backend(context))?.is_some())
    }

    /// Why a compare-and-swap changed nothing: Conflict if `exists` finds the row (so
    /// its expected version did not match), NotFound if it is gone.
    async fn missed(&self, exists: Q<'_>, context: &'static str, what: String) -> StoreError {
        match self.exists(exists, context).await {
            Ok(true) => StoreError::Conflict(what),
            Ok(false) => StoreError::NotFound(what),
            Err(e) => e,
        }
    }

    /// Runs a delete; whether it removed anything.
    async fn delete(&self, query: Q<'_>, context: &'static str) -> Result<bool> {
        let done = query.execute(&self.pool).await.map_err(backend(context))?;
        Ok(done.rows_affected() > 0)
    }

    /// Fetches at most one row and maps it.
    async fn one<T>(&self, query: Q<'_>, context: &'static str, map: fn(&SqliteRow) -> Result<T>) -> Result<Option<T>> {
        query.fetch_optional(&self.pool).await.map_err(backend(context))?.as_ref().map(map).transpose()
    }

    /// Fetches every row and maps it.
    async fn all<T>(&self, query: Q<'_>, context: &'static str, map: fn(&SqliteRow) -> Result<T>) -> Result<Vec<T>> {
        query.fetch_all(&self.pool).await.map_err(backend(context))?.iter().map(map).collect()
    }
}

/// A query with its arguments bound, as `sqlx::query(..).bind(..)` builds it.
type Q<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments>;

#[async_trait]
impl Store for SqliteStore {
    async fn insert_tenant(&self, tenant: &Tenant, max_net_id: u32) -> Result<Tenant> {
        // An IMMEDIATE transaction holds the write lock from its first read, so the
        // blocks it sees taken are still all that is taken when it inserts: concurrent
        // inserts cannot pick overlapping net ids.
        const CONTEXT: &str = "insert tenant";
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend(CONTEXT))?;
        let taken: Vec<(u32, u8)> = sqlx::query("SELECT net_id, net_prefix FROM tenants")
            .fetch_all(&mut *tx)
            .await
            .map_err(backend(CONTEXT))?
            .iter()
            .map(|r| Ok((r.try_get::<u32, _>("net_id")?, r.try_get::<u8, _>("net_prefix")?)))
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(backend(CONTEXT))?;
        let exists = sqlx::query("SELECT 1 FROM tenants WHERE name = ?1").bind(tenant.name.as_str()).fetch_optional(&mut *tx).await.map_err(backend(CONTEXT))?;
        if exists.is_some() {
            return Err(StoreError::AlreadyExists(format!("tenant '{}'", tenant.name)));
        }
        let net_id = hangar_types::net::first_free_net_id(&taken, tenant.net_prefix, max_net_id).ok_or(StoreError::NetworksExhausted(max_net_id))?;
        sqlx::query("INSERT INTO tenants (id, name, quotas, net_id, created_at, isolated, net_prefix) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .bind(tenant.id.to_string())
            .bind(tenant.name.as_str())
            .bind(Json(&tenant.quotas))
            .bind(net_id)
            .bind(Nanos(tenant.created_at))
            .bind(tenant.isolated)
            .bind(tenant.net_prefix)
            .execute(&mut *tx)
            .await
            .map_err(unique(CONTEXT, format!("tenant '{}'", tenant.name)))?;
        tx.commit().await.map_err(backend(CONTEXT))?;
        Ok(Tenant { net_id, ..tenant.clone() })
    }

    async fn get_tenant(&self, name: &Name) -> Result<Option<Tenant>> {
        let q = sqlx::query("SELECT * FROM tenants WHERE name = ?1").bind(name.as_str());
        self.one(q, "get tenant", tenant_row).await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.all(sqlx::query("SELECT * FROM tenants ORDER BY name"), "list tenants", tenant_row).await
    }

    async fn delete_tenant(&self, name: &Name) -> Result<bool> {
        const CONTEXT: &str = "delete tenant";
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend(CONTEXT))?;
        sqlx::query("DELETE FROM tokens WHERE tenant = ?1")
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend(CONTEXT))?;
        // A tenant's secrets and proxy tokens go with it.
        for table in ["DELETE FROM secrets WHERE tenant = ?1", "DELETE FROM proxy_tokens WHERE tenant = ?1"] {
            sqlx::query(table).bind(name.as_str()).execute(&mut *tx).await.map_err(backend(CONTEXT))?;
        }
        // A tenant made again under this name must not inherit the old one's SSH keys.
        sqlx::query("DELETE FROM ssh_keys WHERE tenant = ?1").bind(name.as_str()).execute(&mut *tx).await.map_err(backend(CONTEXT))?;
        bump_token_epoch(&mut tx, CONTEXT).await?;
        let done = sqlx::query("DELETE FROM tenants WHERE name = ?1")
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend(CONTEXT))?;
        tx.commit().await.map_err(backend(CONTEXT))?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_host(&self, host: &HostRecord) -> Result<()> {
        let q = bind_host(sqlx::query(
                "INSERT INTO hosts (id, name, state, capacity, endpoint, drivers, agent_version, last_heartbeat,
                 join_token_hash, cert_fingerprint, desired_generation, created_at, provider)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            ), host);
        q.execute(&self.pool).await.map_err(unique("insert host", format!("host '{}'", host.name)))?;
        Ok(())
    }

    async fn get_host(&self, name: &Name) -> Result<Option<HostRecord>> {
        let q = sqlx::query("SELECT * FROM hosts WHERE name = ?1").bind(name.as_str());
        self.one(q, "get host", host_row).await
    }

    async fn get_host_by_id(&self, id: HostId) -> Result<Option<HostRecord>> {
        let q = sqlx::query("SELECT * FROM hosts WHERE id = ?1").bind(id.to_string());
        self.one(q, "get host by id", host_row).await
    }

    async fn get_host_by_fingerprint(&self, fingerprint: &str) -> Result<Option<HostRecord>> {
        let q = sqlx::query("SELECT * FROM hosts WHERE cert_fingerprint = ?1").bind(fingerprint);
        self.one(q, "get host by certificate fingerprint", host_row).await
    }

    async fn list_hosts(&self) -> Result<Vec<HostRecord>> {
        self.all(sqlx::query("SELECT * FROM hosts ORDER BY name"), "list hosts", host_row).await
    }

    async fn consume_join_token(&self, token_hash: &str, cert_fingerprint: &str) -> Result<Option<HostRecord>> {
        // Clearing the hash in the same statement that matches it makes the token
        // single-use even when two agents present it at once.
        let rows = sqlx::query(
            "UPDATE hosts SET join_token_hash = NULL, cert_fingerprint = ?2
             WHERE join_token_hash = ?1 RETURNING *",
        )
        .bind(token_hash)
        .bind(cert_fingerprint)
        .fetch_all(&self.pool)
        .await
        .map_err(unique("consume join token", format!("host with certificate fingerprint {cert_fingerprint}")))?;
        rows.first().map(host_row).transpose()
    }

    async fn bump_host_generation(&self, name: &Name) -> Result<Option<(HostId, Generation)>> {
        const CONTEXT: &str = "bump a host's desired generation";
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend(CONTEXT))?;
        let bumped = bump_in(&mut tx, name).await?;
        tx.commit().await.map_err(backend(CONTEXT))?;
        Ok(bumped)
    }

    async fn record_host_report(&self, id: HostId, report: &HostReport) -> Result<HostRecord> {
        let rows = sqlx::query(
            "UPDATE hosts SET last_heartbeat = ?2, capacity = ?3, endpoint = ?4, drivers = ?5, agent_version = ?6
             WHERE id = ?1 RETURNING *",
        )
        .bind(id.to_string())
        .bind(Nanos(report.at))
        .bind(Json(&report.capacity))
        .bind(&report.endpoint)
        .bind(Json(&report.drivers))
        .bind(&report.agent_version)
        .fetch_all(&self.pool)
        .await
        .map_err(backend("record a host's report"))?;
        rows.first().map(host_row).transpose()?.ok_or_else(|| StoreError::NotFound(format!("host {id}")))
    }

    async fn change_host_state(&self, id: HostId, change: &HostStateChange) -> Result<Option<HostState>> {
        // The rule is checked in Rust on a row read inside the IMMEDIATE transaction,
        // which holds the write lock: nothing can change the row between read and write.
        const CONTEXT: &str = "change a host's state";
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend(CONTEXT))?;
        let row = sqlx::query("SELECT state, last_heartbeat FROM hosts WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend(CONTEXT))?
            .ok_or_else(|| StoreError::NotFound(format!("host {id}")))?;
        let c = Cols::new(&row, "hosts");
        let from: HostState = c.parse("state")?;
        let last_heartbeat = c.get::<Option<Nanos>>("last_heartbeat")?.map(|n| n.0);
        if !change.allows(from, last_heartbeat) {
            return Ok(None);
        }
        sqlx::query("UPDATE hosts SET state = ?2 WHERE id = ?1")
            .bind(id.to_string())
            .bind(change.to.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend(CONTEXT))?;
        tx.commit().await.map_err(backend(CONTEXT))?;
        Ok(Some(from))
    }

    async fn renew_join_token(&self, id: HostId, token_hash: &str) -> Result<bool> {
        const CONTEXT: &str = "renew a join token";
        let done = sqlx::query("UPDATE hosts SET join_token_hash = ?2 WHERE id = ?1 AND cert_fingerprint IS NULL")
            .bind(id.to_string())
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map_err(unique(CONTEXT, "a host with that join token".into()))?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        match self.exists(sqlx::query("SELECT 1 FROM hosts WHERE id = ?1").bind(id.to_string()), CONTEXT).await? {
            true => Ok(false),
            false => Err(StoreError::NotFound(format!("host {id}"))),
        }
    }

    async fn set_host_provider(&self, id: HostId, provider: Option<&str>) -> Result<()> {
        let q = sqlx::query("UPDATE hosts SET provider = ?2 WHERE id = ?1").bind(id.to_string()).bind(provider);
        self.update_one(q, "set a host's provider", format!("host {id}")).await
    }

    async fn delete_host(&self, id: HostId) -> Result<bool> {
        self.delete(sqlx::query("DELETE FROM hosts WHERE id = ?1").bind(id.to_string()), "delete host").await
    }

    async fn insert_instance(&self, instance: &Instance, bump: Option<&Name>) -> Result<Option<(HostId, Generation)>> {
        const CONTEXT: &str = "insert instance";
        let q = bind_instance(
            sqlx::query(
                "INSERT INTO instances (id, tenant, name, spec, host, state, desired, observed, generation, error, created_at, updated_at, address,
                 pool, held_until, uid_base)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            ),
            instance,
        )
        .bind(instance.ids.map(|r| r.base));
        let what = format!("instance '{}/{}'", instance.tenant, instance.name);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend(CONTEXT))?;
        q.execute(&mut *tx).await.map_err(|e| match (&e, instance.ids) {
            // Another instance took these ids since the caller looked: it may pick again.
            (sqlx::Error::Database(d), Some(r)) if d.is_unique_violation() && d.message().contains("uid_base") => StoreError::Conflict(format!("uid range {r}")),
            _ => unique(CONTEXT, what)(e),
        })?;
        let bumped = match bump {
            Some(host) => bump_in(&mut tx, host).await?,
            None => None,
        };
        tx.commit().await.map_err(backend(CONTEXT))?;
        Ok(bumped)
    }

    async fn update_instance_if(&self, instance: &Instance, expected: InstanceVersion, bump: Option<&Name>) -> Result<Option<(HostId, Generation)>> {
        const CONTEXT: &str = "update instance";
        let what = format!("instance '{}/{}'", instance.tenant, instance.name);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend(CONTEXT))?;
        if !update_instance_in(&mut tx, instance, expected, CONTEXT, &what).await? {
            // Rolled back on drop; the look that names the error reads committed state.
            drop(tx);
            let exists = sqlx::query("SELECT 1 FROM instances WHERE id = ?1").bind(instance.id.to_string());
            return Err(self.missed(exists, CONTEXT, what).await);
        }
        let bumped = match bump {
            Some(host) => bump_in(&mut tx, host).await?,
            None => None,
        };
        tx.commit().await.map_err(backend(CONTEXT))?;
        Ok(bumped)
    }

    async fn mark_host_instances_unknown(&self, host: &Name) -> Result<u32> {
        let unknown = ObservedState::Unknown.as_str();
        let done = sqlx::query("UPDATE instances SET observed = ?2 WHERE host = ?1 AND observed <> ?2")
            .bind(host.as_str())
            .bind(unknown)
            .execute(&self.pool)
            .await
            .map_err(backend("mark a host's instances unknown"))?;
        // A host holds far fewer than 2^32 instances; saturate rather than wrap.
        Ok(u32::try_from(done.rows_affected()).unwrap_or(u32::MAX))
    }

    async fn get_instance(&self, tenant: &Name, name: &Name) -> Result<Option<Instance>> {
        let q = sqlx::query("SELECT * FROM instances WHERE tenant = ?1 AND name = ?2")
            .bind(tenant.as_str())
            .bind(name.as_str());
        self.one(q, "get instance", instance_row).await
    }

    async fn get_instance_by_id(&self, id: InstanceId) -> Result<Option<Instance>> {
        let q = sqlx::query("SELECT * FROM instances WHERE id = ?1").bind(id.to_string());
        self.one(q, "get instance by id", instance_row).await
    }

    async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>> {
        let q = sqlx::query(
            "SELECT * FROM instances WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR host = ?2)
             AND (?3 IS NULL OR pool = ?3) ORDER BY tenant, name",
        )
        .bind(filter.tenant.as_ref().map(Name::as_str))
        .bind(filter.host.as_ref().map(Name::as_str))
        .bind(filter.pool.as_ref().map(Name::as_str));
        self.all(q, "list instances", instance_row).await
    }

    async fn delete_instance(&self, id: InstanceId) -> Result<bool> {
        self.delete(sqlx::query("DELETE FROM instances WHERE id = ?1").bind(id.to_string()), "delete instance").await
    }

    async fn next_generation(&self) -> Result<Generation> {
        advance_generation(&self.pool).await
    }

    async fn insert_pool(&self, pool: &Pool) -> Result<()> {
        let q = bind_pool(
            sqlx::query(
                "INSERT INTO pools (tenant, name, role, spec, running, warm, sleeping, last_error, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            ),
            pool,
        );
        q.execute(&self.pool).await.map_err(unique("insert pool", format!("pool '{}/{}'", pool.tenant, pool.name)))?;
        Ok(())
    }

    async fn set_pool_counts_if(&self, tenant: &Name, name: &Name, expected: PoolCounts, counts: PoolCounts) -> Result<Pool> {
        const CONTEXT: &str = "scale pool";
        let rows = sqlx::query(
            "UPDATE pools SET running = ?3, warm = ?4, sleeping = ?5, updated_at = ?6
             WHERE tenant = ?1 AND name = ?2 AND running = ?7 AND warm = ?8 AND sleeping = ?9 RETURNING *",
        )
        .bind(tenant.as_str())
        .bind(name.as_str())
        .bind(i64::from(counts.running))
        .bind(i64::from(counts.warm))
        .bind(i64::from(counts.sleeping))
        .bind(Nanos(OffsetDateTime::now_utc()))
        .bind(i64::from(expected.running))
        .bind(i64::from(expected.warm))
        .bind(i64::from(expected.sleeping))
        .fetch_all(&self.pool)
        .await
        .map_err(backend(CONTEXT))?;
        if let Some(row) = rows.first() {
            return pool_row(row);
        }
        let what = format!("pool '{tenant}/{name}'");
        let exists = sqlx::query("SELECT 1 FROM pools WHERE tenant = ?1 AND name = ?2").bind(tenant.as_str()).bind(name.as_str());
        Err(self.missed(exists, CONTEXT, what).await)
    }

    async fn set_pool_last_error(&self, tenant: &Name, name: &Name, error: Option<&str>) -> Result<bool> {
        let done = sqlx::query("UPDATE pools SET last_error = ?3 WHERE tenant = ?1 AND name = ?2")
            .bind(tenant.as_str())
            .bind(name.as_str())
            .bind(error)
            .execute(&self.pool)
            .await
            .map_err(backend("record a pool's last error"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_pool(&self, tenant: &Name, name: &Name) -> Result<Option<Pool>> {
        let q = sqlx::query("SELECT * FROM pools WHERE tenant = ?1 AND name = ?2").bind(tenant.as_str()).bind(name.as_str());
        self.one(q, "get pool", pool_row).await
    }

    async fn list_pools(&self, tenant: Option<&Name>) -> Result<Vec<Pool>> {
        let q = sqlx::query("SELECT * FROM pools WHERE (?1 IS NULL OR tenant = ?1) ORDER BY tenant, name").bind(tenant.map(Name::as_str));
        self.all(q, "list pools", pool_row).await
    }

    async fn delete_pool(&self, tenant: &Name, name: &Name) -> Result<bool> {
        self.delete(sqlx::query("DELETE FROM pools WHERE tenant = ?1 AND name = ?2").bind(tenant.as_str()).bind(name.as_str()), "delete pool").await
    }

    async fn insert_operation(&self, op: &Operation) -> Result<()> {
        // The tenant's id as of now: a later tenant of the same name is another tenant.
        sqlx::query(
            "INSERT INTO operations (id, kind, tenant, target, instance_id, target_state, status, error, created_at, updated_at, tenant_id, progress)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, (SELECT id FROM tenants WHERE name = ?3), ?11)",
        )
            .bind(op.id.to_string())
            .bind(&op.kind)
            .bind(op.tenant.as_ref().map(Name::as_str))
            .bind(&op.target)
            .bind(op.instance_id.map(|i| i.to_string()))
            .bind(op.target_state.map(|s| s.as_str()))
            .bind(op.status.as_str())
            .bind(op.error.as_deref())
            .bind(Nanos(op.created_at))
            .bind(Nanos(op.updated_at))
            .bind(op.progress.as_ref().map(|p| serde_json::to_string(p).unwrap_or_default()))
            .execute(&self.pool)
            .await
            .map_err(unique("insert operation", format!("operation {}", op.id)))?;
        Ok(())
    }

    async fn get_operation(&self, id: OperationId) -> Result<Option<Operation>> {
        let q = sqlx::query("SELECT * FROM operations WHERE id = ?1").bind(id.to_string());
        self.one(q, "get operation", operation_row).await
    }

    async fn finish_operation(&self, id: OperationId, status: OperationStatus, error: Option<&str>) -> Result<()> {
        let q = sqlx::query("UPDATE operations SET status = ?2, error = ?3, updated_at = ?4 WHERE id = ?1")
            .bind(id.to_string())
            .bind(status.as_str())
            .bind(error)
            .bind(Nanos(OffsetDateTime::now_utc()));
        self.update_one(q, "finish operation", format!("operation {id}")).await
    }

    async fn running_operations(&self, instance: Option<InstanceId>) -> Result<Vec<Operation>> {
        // `id` breaks ties of equal timestamps; UUIDv7 ids sort by creation too.
        let q = sqlx::query(
            "SELECT * FROM operations WHERE status = 'running' AND (?1 IS NULL OR instance_id = ?1)
             ORDER BY created_at, id",
        )
        .bind(instance.map(|i| i.to_string()));
        self.all(q, "list running operations", operation_row).await
    }

    async fn insert_event(&self, event: &NewEvent) -> Result<Event> {
        let time = OffsetDateTime::now_utc();
        let rows = sqlx::query(
            "INSERT INTO events (time, actor, tenant, object, action, result, message, tenant_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, (SELECT id FROM tenants WHERE name = ?3)) RETURNING id",
        )
        .bind(Nanos(time))
        .bind(&event.actor)
        .bind(event.tenant.as_ref().map(Name::as_str))
        .bind(&event.object)
        .bind(&event.action)
        .bind(&event.result)
        .bind(event.message.as_deref())
        .fetch_all(&self.pool)
        .await
        .map_err(backend("insert event"))?;
        let row = rows.first().ok_or_else(|| StoreError::Corrupt {
            table: "events",
            detail: "insert returned no id".into(),
        })?;
        Ok(Event {
            id: Cols::new(row, "events").get("id")?,
            time,
            actor: event.actor.clone(),
            tenant: event.tenant.clone(),
            object: event.object.clone(),
            action: event.action.clone(),
            result: event.result.clone(),
            message: event.message.clone(),
        })
    }

    async fn list_events(&self, tenant: Option<&Name>, limit: u32) -> Result<Vec<Event>> {
        // The inner query picks the newest `limit`; the outer one puts them oldest first.
        let q = sqlx::query(
            "SELECT * FROM (
                 SELECT * FROM events WHERE (?1 IS NULL OR tenant_id = (SELECT id FROM tenants WHERE name = ?1)) ORDER BY id DESC LIMIT ?2
             ) ORDER BY id",
        )
        .bind(tenant.map(Name::as_str))
        .bind(limit);
        self.all(q, "list events", event_row).await
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<()> {
        sqlx::query("INSERT INTO tokens (id, hash, tenant, description, created_at, expires_at, last_used_at, role) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
            .bind(token.id.as_str())
            .bind(&token.hash)
            .bind(token.tenant.as_ref().map(Name::as_str))
            .bind(token.description.as_deref())
            .bind(Nanos(token.created_at))
            .bind(token.expires_at.map(Nanos))
            .bind(token.last_used_at.map(Nanos))
            .bind(token.role.as_str())
            .execute(&self.pool)
            .await
            .map_err(unique("insert token", format!("token '{}'", token.id)))?;
        Ok(())
    }

    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let q = sqlx::query("SELECT * FROM tokens WHERE hash = ?1").bind(hash);
        self.one(q, "find token", token_row).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.all(sqlx::query("SELECT * FROM tokens ORDER BY created_at, id"), "list tokens", token_row).await
    }

    async fn delete_token(&self, id: &TokenId) -> Result<bool> {
        const CONTEXT: &str = "delete token";
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend(CONTEXT))?;
        let done = sqlx::query("DELETE FROM tokens WHERE id = ?1").bind(id.as_str()).execute(&mut *tx).await.map_err(backend(CONTEXT))?;
        bump_token_epoch(&mut tx, CONTEXT).await?;
        tx.commit().await.map_err(backend(CONTEXT))?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_image(&self, image: &Image) -> Result<()> {
        sqlx::query("INSERT INTO images (name, kind, path, sha256, size_bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .bind(image.name.as_str())
            .bind(image.kind.as_str())
            .bind(&image.path)
            .bind(image.sha256.as_deref())
            .bind(i64::try_from(image.size_bytes).unwrap_or(i64::MAX))
            .bind(Nanos(image.created_at))
            .execute(&self.pool)
            .await
            .map_err(unique("insert image", format!("image '{}'", image.name)))?;
        Ok(())
    }

    async fn get_image(&self, name: &Name) -> Result<Option<Image>> {
        self.one(sqlx::query("SELECT * FROM images WHERE name = ?1").bind(name.as_str()), "get image", image_row).await
    }

    async fn list_images(&self) -> Result<Vec<Image>> {
        self.all(sqlx::query("SELECT * FROM images ORDER BY name"), "list images", image_row).await
    }

    async fn delete_image(&self, name: &Name) -> Result<bool> {
        self.delete(sqlx::query("DELETE FROM images WHERE name = ?1").bind(name.as_str()), "delete image").await
    }

    async fn insert_snapshot(&self, s: &SnapshotRecord) -> Result<()> {
        // One statement: a tombstone of the name is replaced, a live row is a conflict
        // (the WHERE of the upsert leaves it untouched and no row changes).
        let done = sqlx::query(
            "INSERT INTO snapshots (instance_id, name, created_at, referenced_bytes, exclusive_bytes, scheduled, deleted_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)
             ON CONFLICT (instance_id, name) DO UPDATE SET created_at = excluded.created_at, referenced_bytes = excluded.referenced_bytes,
               exclusive_bytes = excluded.exclusive_bytes, scheduled = excluded.scheduled, deleted_at = NULL
             WHERE snapshots.deleted_at IS NOT NULL",
        )
        .bind(s.instance_id.to_string())
        .bind(s.name.as_str())
        .bind(Nanos(s.created_at))
        .bind(s.referenced_bytes.map(bytes_col))
        .bind(s.exclusive_bytes.map(bytes_col))
        .bind(s.scheduled)
        .execute(&self.pool)
        .await
        .map_err(backend("insert snapshot"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists(format!("snapshot '{}'", s.name)));
        }
        Ok(())
    }

    async fn list_snapshots(&self, f: &SnapshotFilter) -> Result<Vec<SnapshotRecord>> {
        let q = sqlx::query(
            "SELECT s.* FROM snapshots s JOIN instances i ON i.id = s.instance_id
             WHERE (?1 IS NULL OR s.instance_id = ?1) AND (?2 IS NULL OR i.tenant = ?2) AND (?3 IS NULL OR i.host = ?3)
               AND (?4 OR s.deleted_at IS NULL)
             ORDER BY s.instance_id, s.name",
        )
        .bind(f.instance.map(|i| i.to_string()))
        .bind(f.tenant.as_ref().map(Name::as_str))
        .bind(f.host.as_ref().map(Name::as_str))
        .bind(f.tombstones);
        self.all(q, "list snapshots", snapshot_row).await
    }

    async fn set_snapshot_sizes(&self, instance: InstanceId, name: &Name, referenced: Option<u64>, exclusive: Option<u64>) -> Result<bool> {
        let q = sqlx::query("UPDATE snapshots SET referenced_bytes = ?3, exclusive_bytes = ?4 WHERE instance_id = ?1 AND name = ?2 AND deleted_at IS NULL")
            .bind(instance.to_string())
            .bind(name.as_str())
            .bind(referenced.map(bytes_col))
            .bind(exclusive.map(bytes_col));
        self.delete(q, "set snapshot sizes").await
    }

    async fn tombstone_snapshot(&self, instance: InstanceId, name: &Name, at: OffsetDateTime) -> Result<bool> {
        let q = sqlx::query("UPDATE snapshots SET deleted_at = ?3 WHERE instance_id = ?1 AND name = ?2 AND deleted_at IS NULL")
            .bind(instance.to_string())
            .bind(name.as_str())
            .bind(Nanos(at));
        self.delete(q, "delete snapshot").await
    }

    async fn remove_snapshot(&self, instance: InstanceId, name: &Name) -> Result<bool> {
        let q = sqlx::query("DELETE FROM snapshots WHERE instance_id = ?1 AND name = ?2").bind(instance.to_string()).bind(name.as_str());
        self.delete(q, "remove snapshot").await
    }

    async fn set_snapshot_schedule(&self, instance: InstanceId, schedule: Option<SnapshotSchedule>) -> Result<()> {
        let q = match schedule {
            Some(s) => sqlx::query(
                "INSERT INTO snapshot_schedules (instance_id, every_secs, keep) VALUES (?1, ?2, ?3)
                 ON CONFLICT (instance_id) DO UPDATE SET every_secs = excluded.every_secs, keep = excluded.keep",
            )
            .bind(instance.to_string())
            .bind(i64::try_from(s.every_secs).unwrap_or(i64::MAX))
            .bind(s.keep),
            None => sqlx::query("DELETE FROM snapshot_schedules WHERE instance_id = ?1").bind(instance.to_string()),
        };
        match q.execute(&self.pool).await {
            // The instance is gone (its foreign key).
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Err(StoreError::NotFound(format!("instance {instance}"))),
            r => r.map(|_| ()).map_err(backend("set snapshot schedule")),
        }
    }

    async fn list_snapshot_schedules(&self, host: Option<&Name>) -> Result<Vec<(InstanceId, SnapshotSchedule)>> {
        let q = sqlx::query(
            "SELECT s.* FROM snapshot_schedules s JOIN instances i ON i.id = s.instance_id WHERE (?1 IS NULL OR i.host = ?1) ORDER BY s.instance_id",
        )
        .bind(host.map(Name::as_str));
        self.all(q, "list snapshot schedules", |row| {
            let c = Cols::new(row, "snapshot_schedules");
            let every: i64 = c.get("every_secs")?;
            Ok((c.parse("instance_id")?, SnapshotSchedule { every_secs: u64::try_from(every).map_err(|e| c.corrupt("every_secs", e))?, keep: c.get("keep")? }))
        })
        .await
    }

    async fn put_secret(&self, secret: &SecretRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO secrets (tenant, name, sealed, size_bytes, version, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (tenant, name) DO UPDATE SET sealed = excluded.sealed, size_bytes = excluded.size_bytes, version = excluded.version, updated_at = excluded.updated_at",
        )
        .bind(secret.tenant.as_str())
        .bind(secret.name.as_str())
        .bind(&secret.sealed)
        .bind(i64::try_from(secret.size_bytes).unwrap_or(i64::MAX))
        .bind(secret.version)
        .bind(Nanos(secret.created_at))
        .bind(Nanos(secret.updated_at))
        .execute(&self.pool)
        .await
        .map_err(backend("put secret"))?;
        Ok(())
    }

    async fn get_secret(&self, tenant: &Name, name: &Name) -> Result<Option<SecretRecord>> {
        self.one(sqlx::query("SELECT * FROM secrets WHERE tenant = ?1 AND name = ?2").bind(tenant.as_str()).bind(name.as_str()), "get secret", secret_row).await
    }

    async fn list_secrets(&self, tenant: &Name) -> Result<Vec<SecretRecord>> {
        self.all(sqlx::query("SELECT * FROM secrets WHERE tenant = ?1 ORDER BY name").bind(tenant.as_str()), "list secrets", secret_row).await
    }

    async fn delete_secret(&self, tenant: &Name, name: &Name) -> Result<bool> {
        self.delete(sqlx::query("DELETE FROM secrets WHERE tenant = ?1 AND name = ?2").bind(tenant.as_str()).bind(name.as_str()), "delete secret").await
    }

    async fn insert_proxy_token(&self, token: &ProxyTokenRecord) -> Result<()> {
        sqlx::query("INSERT INTO proxy_tokens (id, hash, tenant, instance, instance_id, port, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
            .bind(&token.id)
            .bind(&token.hash)
            .bind(token.tenant.as_str())
            .bind(token.instance.as_str())
            .bind(token.instance_id.to_string())
            .bind(i64::from(token.port))
            .bind(Nanos(token.created_at))
            .bind(Nanos(token.expires_at))
            .execute(&self.pool)
            .await
            .map_err(unique("insert proxy token", format!("proxy token '{}'", token.id)))?;
        Ok(())
    }

    async fn find_proxy_token(&self, hash: &str) -> Result<Option<ProxyTokenRecord>> {
        self.one(sqlx::query("SELECT * FROM proxy_tokens WHERE hash = ?1").bind(hash), "find proxy token", proxy_token_row).await
    }

    async fn list_proxy_tokens(&self, tenant: &Name, instance: Option<&Name>) -> Result<Vec<ProxyTokenRecord>> {
        let q = sqlx::query("SELECT * FROM proxy_tokens WHERE tenant = ?1 AND (?2 IS NULL OR instance = ?2) ORDER BY created_at, id")
            .bind(tenant.as_str())
            .bind(instance.map(Name::as_str));
        self.all(q, "list proxy tokens", proxy_token_row).await
    }

    async fn delete_proxy_token(&self, tenant: &Name, id: &str) -> Result<bool> {
        const CONTEXT: &str = "delete proxy token";
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend(CONTEXT))?;
        let done = sqlx::query("DELETE FROM proxy_tokens WHERE tenant = ?1 AND id = ?2").bind(tenant.as_str()).bind(id).execute(&mut *tx).await.map_err(backend(CONTEXT))?;
        bump_token_epoch(&mut tx, CONTEXT).await?;
        tx.commit().await.map_err(backend(CONTEXT))?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_ssh_key(&self, key: &hangar_types::api::SshKey) -> Result<()> {
        sqlx::query("INSERT INTO ssh_keys (tenant, name, algorithm, public_key, fingerprint, comment, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .bind(key.tenant.as_str())
            .bind(key.name.as_str())
            .bind(&key.algorithm)
            .bind(&key.public_key)
            .bind(&key.fingerprint)
            .bind(&key.comment)
            .bind(Nanos(key.created_at))
            .execute(&self.pool)
            .await
            .map_err(unique("insert ssh key", format!("ssh key '{}' or key {} of tenant '{}'", key.name, key.fingerprint, key.tenant)))?;
        Ok(())
    }

    async fn list_ssh_keys(&self, tenant: &Name) -> Result<Vec<hangar_types::api::SshKey>> {
        self.all(sqlx::query("SELECT * FROM ssh_keys WHERE tenant = ?1 ORDER BY name").bind(tenant.as_str()), "list ssh keys", ssh_key_row).await
    }

    async fn delete_ssh_key(&self, tenant: &Name, name: &Name) -> Result<bool> {
        self.delete(sqlx::query("DELETE FROM ssh_keys WHERE tenant = ?1 AND name = ?2").bind(tenant.as_str()).bind(name.as_str()), "delete ssh key").await
    }

    async fn stage_host_cert(&self, id: HostId, current: &str, next: &str) -> Result<bool> {
        let q = sqlx::query("UPDATE hosts SET cert_fingerprint_next = ?3 WHERE id = ?1 AND cert_fingerprint = ?2").bind(id.to_string()).bind(current).bind(next);
        let done = q.execute(&self.pool).await.map_err(unique("stage a host certificate", format!("host with certificate fingerprint {next}")))?;
        Ok(done.rows_affected() > 0)
    }

    async fn host_cert_next(&self, id: HostId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT cert_fingerprint_next FROM hosts WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend("read a staged host certificate"))?;
        row.map(|r| Cols::new(&r, "hosts").get::<Option<String>>("cert_fingerprint_next")).transpose().map(Option::flatten)
    }

    async fn promote_host_cert(&self, next: &str) -> Result<Option<HostRecord>> {
        let rows = sqlx::query("UPDATE hosts SET cert_fingerprint = cert_fingerprint_next, cert_fingerprint_next = NULL WHERE cert_fingerprint_next = ?1 RETURNING *")
            .bind(next)
            .fetch_all(&self.pool)
            .await
            .map_err(backend("promote a host certificate"))?;
        rows.first().map(host_row).transpose()
    }

    async fn mark_tenant_destroy(&self, name: &Name, op: OperationId) -> Result<Option<OperationId>> {
        let q = sqlx::query("UPDATE tenants SET destroy_operation = COALESCE(destroy_operation, ?2) WHERE name = ?1 RETURNING destroy_operation").bind(name.as_str()).bind(op.to_string());
        let row = q.fetch_optional(&self.pool).await.map_err(backend("mark a tenant destroy"))?;
        row.map(|r| Cols::new(&r, "tenants").parse("destroy_operation")).transpose()
    }

    async fn tenant_destroys(&self) -> Result<Vec<(Name, OperationId)>> {
        let q = sqlx::query("SELECT name, destroy_operation FROM tenants WHERE destroy_operation IS NOT NULL ORDER BY name");
        self.all(q, "list tenant destroys", |r| {
            let c = Cols::new(r, "tenants");
            Ok((c.parse("name")?, c.parse("destroy_operation")?))
        })
        .await
    }

    async fn tenant_destroy_of(&self, name: &Name) -> Result<Option<OperationId>> {
        let q = sqlx::query("SELECT destroy_operation FROM tenants WHERE name = ?1 AND destroy_operation IS NOT NULL").bind(name.as_str());
        self.one(q, "read a tenant's destroy", |r| Cols::new(r, "tenants").parse("destroy_operation")).await
    }

    async fn set_operation_progress(&self, id: OperationId, progress: &hangar_types::api::OperationProgress) -> Result<()> {
        let json = serde_json::to_string(progress).map_err(|e| StoreError::Corrupt { table: "operations", detail: e.to_string() })?;
        let q = sqlx::query("UPDATE operations SET progress = ?2, updated_at = ?3 WHERE id = ?1").bind(id.to_string()).bind(json).bind(Nanos(OffsetDateTime::now_utc()));
        self.update_one(q, "set an operation's progress", format!("operation {id}")).await
    }

    async fn request_cert_rotation(&self, id: HostId, current: &str) -> Result<bool> {
        let q = sqlx::query("UPDATE hosts SET cert_rotate_from = ?2 WHERE id = ?1 AND cert_fingerprint = ?2").bind(id.to_string()).bind(current);
        Ok(q.execute(&self.pool).await.map_err(backend("request a host certificate rotation"))?.rows_affected() > 0)
    }

    async fn cert_rotation(&self, id: HostId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT cert_rotate_from FROM hosts WHERE id = ?1 AND cert_rotate_from = cert_fingerprint")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend("read a host certificate rotation"))?;
        row.map(|r| Cols::new(&r, "hosts").get::<Option<String>>("cert_rotate_from")).transpose().map(Option::flatten)
    }

    async fn set_join_token_expiry(&self, id: HostId, at: Option<OffsetDateTime>) -> Result<()> {
        let q = sqlx::query("UPDATE hosts SET join_token_expires_at = ?2 WHERE id = ?1").bind(id.to_string()).bind(at.map(Nanos));
        self.update_one(q, "set a join token's expiry", format!("host {id}")).await
    }

    async fn join_token_expiry(&self, id: HostId) -> Result<Option<OffsetDateTime>> {
        let row = sqlx::query("SELECT join_token_expires_at FROM hosts WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend("read a join token's expiry"))?;
        Ok(row.map(|r| Cols::new(&r, "hosts").get::<Option<Nanos>>("join_token_expires_at")).transpose()?.flatten().map(|n| n.0))
    }

    async fn get_operation_of_tenant(&self, id: OperationId, tenant: &Name) -> Result<Option<Operation>> {
        let q = sqlx::query("SELECT * FROM operations WHERE id = ?1 AND tenant_id = (SELECT id FROM tenants WHERE name = ?2)").bind(id.to_string()).bind(tenant.as_str());
        self.one(q, "get a tenant's operation", operation_row).await
    }

    async fn token_epoch(&self) -> Result<u64> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'token_epoch'").fetch_optional(&self.pool).await.map_err(backend("read the token epoch"))?;
        let row = row.ok_or_else(|| StoreError::Corrupt { table: "meta", detail: "the 'token_epoch' counter row is missing".into() })?;
        Ok(Cols::new(&row, "meta").get::<i64>("value")? as u64)
    }

    async fn touch_token(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool> {
        let done = sqlx::query("UPDATE tokens SET last_used_at = ?2 WHERE id = ?1")
            .bind(id.as_str())
            .bind(Nanos(at))
            .execute(&self.pool)
            .await
            .map_err(backend("record a token's use"))?;
        Ok(done.rows_affected() > 0)
    }
}

/// Byte counts are INTEGER (i64); beyond it (never, for a volume) saturates.
fn bytes_col(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn snapshot_row(row: &SqliteRow) -> Result<SnapshotRecord> {
    let c = Cols::new(row, "snapshots");
    let bytes = |col: &str| -> Result<Option<u64>> {
        let v: Option<i64> = c.get(col)?;
        v.map(|v| u64::try_from(v).map_err(|e| c.corrupt(col, e))).transpose()
    };
    let deleted: Option<Nanos> = c.get("deleted_at")?;
    Ok(SnapshotRecord {
        instance_id: c.parse("instance_id")?,
        name: c.parse("name")?,
        created_at: c.time("created_at")?,
        referenced_bytes: bytes("referenced_bytes")?,
        exclusive_bytes: bytes("exclusive_bytes")?,
        scheduled: c.get("scheduled")?,
        deleted_at: deleted.map(|n| n.0),
    })
}

/// Moves the token epoch (see [`Store::token_epoch`]) inside a transaction that removes tokens.
async fn bump_token_epoch(tx: &mut sqlx::Transaction<'_, Sqlite>, context: &'static str) -> Result<()> {
    sqlx::query("UPDATE meta SET value = value + 1 WHERE key = 'token_epoch'").execute(&mut **tx).await.map_err(backend(context))?;
    Ok(())
}

fn secret_row(row: &SqliteRow) -> Result<SecretRecord> {
    let c = Cols::new(row, "secrets");
    let size: i64 = c.get("size_bytes")?;
    Ok(SecretRecord {
        tenant: c.parse("tenant")?,
        name: c.parse("name")?,
        sealed: c.get("sealed")?,
        size_bytes: u64::try_from(size).map_err(|e| c.corrupt("size_bytes", e))?,
        version: c.get("version")?,
        created_at: c.time("created_at")?,
        updated_at: c.time("updated_at")?,
    })
}

fn proxy_token_row(row: &SqliteRow) -> Result<ProxyTokenRecord> {
    let c = Cols::new(row, "proxy_tokens");
    let port: i64 = c.get("port")?;
    Ok(ProxyTokenRecord {
        id: c.get("id")?,
        hash: c.get("hash")?,
        tenant: c.parse("tenant")?,
        instance: c.parse("instance")?,
        instance_id: c.parse("instance_id")?,
        port: u16::try_from(port).map_err(|e| c.corrupt("port", e))?,
        created_at: c.time("created_at")?,
        expires_at: c.time("expires_at")?,
    })
}

/// Gives host `name` a fresh value of the generation counter as its desired generation,
/// inside `tx`, which must hold the write lock (`BEGIN IMMEDIATE`): no other writer can
/// slip a bump in between counter and host, so the host's generation only grows. None,
/// with the counter untouched, if no host has that name.
/// The one conditional write of an instance row, inside `tx`: false when the row is not
/// at `expected` (or gone). ?2, ?3 and ?11 (tenant, name, created_at) are bound but never
/// written.
pub(crate) async fn update_instance_in(tx: &mut sqlx::Transaction<'_, Sqlite>, instance: &Instance, expected: InstanceVersion, context: &'static str, what: &str) -> Result<bool> {
    let q = bind_instance(
        sqlx::query(
            "UPDATE instances SET spec = ?4, host = ?5, state = ?6, desired = ?7, observed = ?8, generation = ?9,
             error = ?10, updated_at = ?12, address = ?13, pool = ?14, held_until = ?15
             WHERE id = ?1 AND generation = ?16 AND state = ?17",
        ),
        instance,
    )
    .bind(expected.generation.get())
    .bind(expected.state.as_str());
    let done = q.execute(&mut **tx).await.map_err(unique(context, what.to_string()))?;
    Ok(done.rows_affected() == 1)
}

async fn bump_in(tx: &mut sqlx::Transaction<'_, Sqlite>, name: &Name) -> Result<Option<(HostId, Generation)>> {
    const CONTEXT: &str = "bump a host's desired generation";
    let host = sqlx::query("SELECT id FROM hosts WHERE name = ?1")
        .bind(name.as_str())
        .fetch_optional(&mut **tx)
        .await
        .map_err(backend(CONTEXT))?;
    let Some(row) = host else { return Ok(None) };
    let id: HostId = Cols::new(&row, "hosts").parse("id")?;
    let generation = advance_generation(&mut **tx).await?;
    sqlx::query("UPDATE hosts SET desired_generation = ?2 WHERE id = ?1")
        .bind(id.to_string())
        .bind(generation.get())
        .execute(&mut **tx)
        .await
        .map_err(backend(CONTEXT))?;
    Ok(Some((id, generation)))
}

/// Increments the generation counter and reads it in one statement: atomic, and
/// persisted for restarts. Runs on the pool or inside a caller's transaction.
async fn advance_generation<'e, E: sqlx::Executor<'e, Database = Sqlite>>(executor: E) -> Result<Generation> {
    let rows = sqlx::query("UPDATE meta SET value = value + 1 WHERE key = 'generation' RETURNING value")
        .fetch_all(executor)
        .await
        .map_err(backend("advance the generation counter"))?;
    let row = rows.first().ok_or_else(|| StoreError::Corrupt {
        table: "meta",
        detail: "the 'generation' counter row is missing".into(),
    })?;
    Cols::new(row, "meta").get("value").map(Generation::new)
}

// ---- binding: one place per table knows the column order of its INSERT and UPDATE ----

fn bind_host<'q>(q: Q<'q>, h: &HostRecord) -> Q<'q> {
    q.bind(h.id.to_string())
        .bind(h.name.as_str())
        .bind(h.state.as_str())
        .bind(Json(&h.capacity))
        .bind(h.endpoint.as_deref())
        .bind(Json(&h.drivers))
        .bind(h.agent_version.as_deref())
        .bind(h.last_heartbeat.map(Nanos))
        .bind(h.join_token_hash.as_deref())
        .bind(h.cert_fingerprint.as_deref())
        .bind(h.desired_generation.get())
        .bind(Nanos(h.created_at))
        .bind(h.provider.as_deref())
}

fn bind_instance<'q>(q: Q<'q>, i: &Instance) -> Q<'q> {
    q.bind(i.id.to_string())
        .bind(i.tenant.as_str())
        .bind(i.name.as_str())
        .bind(Json(&i.spec))
        .bind(i.host.as_ref().map(Name::as_str))
        .bind(i.state.as_str())
        .bind(desired_str(i.desired))
        .bind(i.observed.as_str())
        .bind(i.generation.get())
        .bind(i.error.as_deref())
        .bind(Nanos(i.created_at))
        .bind(Nanos(i.updated_at))
        .bind(i.address.map(|a| a.to_string()))
        .bind(i.pool.as_ref().map(Name::as_str))
        .bind(i.held_until.map(Nanos))
}

fn bind_pool<'q>(q: Q<'q>, p: &Pool) -> Q<'q> {
    q.bind(p.tenant.as_str())
        .bind(p.name.as_str())
        .bind(p.role.as_str())
        .bind(Json(&p.spec))
        .bind(p.counts.running as i64)
        .bind(p.counts.warm as i64)
        .bind(p.counts.sleeping as i64)
        .bind(p.last_error.as_deref())
        .bind(Nanos(p.created_at))
        .bind(Nanos(p.updated_at))
}

// ---- row mapping ----

fn tenant_row(row: &SqliteRow) -> Result<Tenant> {
    let c = Cols::new(row, "tenants");
    Ok(Tenant {
        id: c.parse("id")?,
        name: c.parse("name")?,
        quotas: c.json("quotas")?,
        net_id: c.get("net_id")?,
        net_prefix: c.get("net_prefix")?,
        created_at: c.time("created_at")?,
        isolated: c.get("isolated")?,
    })
}

fn host_row(row: &SqliteRow) -> Result<HostRecord> {
    let c = Cols::new(row, "hosts");
    Ok(HostRecord {
        id: c.parse("id")?,
        name: c.parse("name")?,
        state: c.parse("state")?,
        capacity: c.json("capacity")?,
        endpoint: c.get("endpoint")?,
        drivers: c.json("drivers")?,
        agent_version: c.get("agent_version")?,
        last_heartbeat: c.get::<Option<Nanos>>("last_heartbeat")?.map(|n| n.0),
        join_token_hash: c.get("join_token_hash")?,
        cert_fingerprint: c.get("cert_fingerprint")?,
        desired_generation: Generation::new(c.get("desired_generation")?),
        created_at: c.time("created_at")?,
        provider: c.get("provider")?,
    })
}

fn instance_row(row: &SqliteRow) -> Result<Instance> {
    let c = Cols::new(row, "instances");
    let desired: String = c.get("desired")?;
    Ok(Instance {
        id: c.parse("id")?,
        tenant: c.parse("tenant")?,
        name: c.parse("name")?,
        spec: c.json("spec")?,
        host: c.parse_opt("host")?,
        state: c.parse("state")?,
        desired: desired_from_str(&desired).ok_or_else(|| c.corrupt("desired", format!("unknown state '{desired}'")))?,
        observed: c.parse("observed")?,
        generation: Generation::new(c.get("generation")?),
        error: c.get("error")?,
        created_at: c.time("created_at")?,
        updated_at: c.time("updated_at")?,
        address: c.parse_opt("address")?,
        pool: c.parse_opt("pool")?,
        held_until: c.get::<Option<Nanos>>("held_until")?.map(|n| n.0),
        ids: c.get::<Option<u32>>("uid_base")?.map(hangar_types::idmap::IdRange::at),
    })
}

fn pool_row(row: &SqliteRow) -> Result<Pool> {
    let c = Cols::new(row, "pools");
    let count = |col: &str| -> Result<u32> {
        let v: i64 = c.get(col)?;
        u32::try_from(v).map_err(|e| c.corrupt(col, e))
    };
    Ok(Pool {
        tenant: c.parse("tenant")?,
        name: c.parse("name")?,
        role: c.parse("role")?,
        spec: c.json("spec")?,
        counts: PoolCounts { running: count("running")?, warm: count("warm")?, sleeping: count("sleeping")? },
        last_error: c.get("last_error")?,
        created_at: c.time("created_at")?,
        updated_at: c.time("updated_at")?,
    })
}

fn image_row(row: &SqliteRow) -> Result<Image> {
    let c = Cols::new(row, "images");
    let size: i64 = c.get("size_bytes")?;
    Ok(Image {
        name: c.parse("name")?,
        kind: c.parse("kind")?,
        path: c.get("path")?,
        sha256: c.get("sha256")?,
        size_bytes: u64::try_from(size).map_err(|e| c.corrupt("size_bytes", e))?,
        created_at: c.time("created_at")?,
    })
}

fn ssh_key_row(row: &SqliteRow) -> Result<hangar_types::api::SshKey> {
    let c = Cols::new(row, "ssh_keys");
    Ok(hangar_types::api::SshKey {
        tenant: c.parse("tenant")?,
        name: c.parse("name")?,
        algorithm: c.get("algorithm")?,
        public_key: c.get("public_key")?,
        fingerprint: c.get("fingerprint")?,
        comment: c.get("comment")?,
        created_at: c.time("created_at")?,
    })
}

fn operation_row(row: &SqliteRow) -> Result<Operation> {
    let c = Cols::new(row, "operations");
    Ok(Operation {
        id: c.parse("id")?,
        kind: c.get("kind")?,
        tenant: c.parse_opt("tenant")?,
        target: c.get("target")?,
        instance_id: c.parse_opt("instance_id")?,
        target_state: c.parse_opt("target_state")?,
        status: c.parse("status")?,
        error: c.get("error")?,
        created_at: c.time("created_at")?,
        updated_at: c.time("updated_at")?,
        progress: c.get::<Option<String>>("progress")?.map(|t| serde_json::from_str(&t).map_err(|e| c.corrupt("progress", e))).transpose()?,
    })
}

fn event_row(row: &SqliteRow) -> Result<Event> {
    let c = Cols::new(row, "events");
    Ok(Event {
        id: c.get("id")?,
        time: c.time("time")?,
        actor: c.get("actor")?,
        tenant: c.parse_opt("tenant")?,
        object: c.get("object")?,
        action: c.get("action")?,
        result: c.get("result")?,
        message: c.get("message")?,
    })
}

fn token_row(row: &SqliteRow) -> Result<TokenRecord> {
    let c = Cols::new(row, "tokens");
    let tenant: Option<Name> = c.parse_opt("tenant")?;
    Ok(TokenRecord {
        id: c.parse("id")?,
        hash: c.get("hash")?,
        // Tokens made before roles: admin, or their tenant's.
        role: match c.parse_opt("role")? {
            Some(r) => r,
            None if tenant.is_some() => hangar_types::api::TokenRole::Tenant,
            None => hangar_types::api::TokenRole::Admin,
        },
        tenant,
        description: c.get("description")?,
        created_at: c.time("created_at")?,
        expires_at: c.get::<Option<Nanos>>("expires_at")?.map(|n| n.0),
        last_used_at: c.get::<Option<Nanos>>("last_used_at")?.map(|n| n.0),
    })
}

/// Typed access to the columns of one row; every failure is [`StoreError::Corrupt`].
struct Cols<'r> {
    row: &'r SqliteRow,
    table: &'static str,
}

impl<'r> Cols<'r> {
    fn new(row: &'r SqliteRow, table: &'static str) -> Self {
        Cols { row, table }
    }

    fn corrupt(&self, column: &str, err: impl Display) -> StoreError {
        StoreError::Corrupt { table: self.table, detail: format!("column {column}: {err}") }
    }

    fn get<T: Decode<'r, Sqlite> + Type<Sqlite>>(&self, column: &str) -> Result<T> {
        self.row.try_get(column).map_err(|e| self.corrupt(column, e))
    }

    /// Text parsed with `FromStr`: names, ids and enum states.
    fn parse<T: FromStr<Err: Display>>(&self, column: &str) -> Result<T> {
        let text: String = self.get(column)?;
        text.parse().map_err(|e| self.corrupt(column, e))
    }

    fn parse_opt<T: FromStr<Err: Display>>(&self, column: &str) -> Result<Option<T>> {
        let text: Option<String> = self.get(column)?;
        text.map(|t| t.parse().map_err(|e| self.corrupt(column, e))).transpose()
    }

    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T> {
        Ok(self.get::<Json<T>>(column)?.0)
    }

    fn time(&self, column: &str) -> Result<OffsetDateTime> {
        Ok(self.get::<Nanos>(column)?.0)
    }
}

// ---- errors ----

/// Maps a sqlx error to [`StoreError::Unavailable`] when waiting may cure it (a busy or
/// locked database past the busy timeout, a closed or exhausted pool, lost I/O), else to
/// [`StoreError::Backend`], with what was being done.
fn backend(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| {
        let transient = match &source {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed | sqlx::Error::Io(_) => true,
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6), in their extended forms too.
            sqlx::Error::Database(e) => e.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| matches!(c & 0xff, 5 | 6)),
            _ => false,
        };
        if transient {
            StoreError::Unavailable { context, source: source.into() }
        } else {
            StoreError::Backend { context, source: source.into() }
        }
    }
}

/// Like [`backend`], but a unique-constraint violation means `what` already exists.
fn unique(context: &'static str, what: String) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| match &source {
        sqlx::Error::Database(e) if e.is_unique_violation() => StoreError::AlreadyExists(what),
        _ => backend(context)(source),
    }
}

// ---- column encodings ----

/// `DesiredState` has no string form in hangar-types; this is its serde spelling.
fn desired_str(d: DesiredState) -> &'static str {
    match d {
        DesiredState::Stopped => "stopped",
        DesiredState::Running => "running",
        DesiredState::Warm => "warm",
        DesiredState::Deleted => "deleted",
    }
}

fn desired_from_str(s: &str) -> Option<DesiredState> {
    [DesiredState::Stopped, DesiredState::Running, DesiredState::Warm, DesiredState::Deleted]
        .into_iter()
        .find(|d| desired_str(*d) == s)
}

/// A timestamp stored as INTEGER unix nanoseconds (UTC).
struct Nanos(OffsetDateTime);

impl Type<Sqlite> for Nanos {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Nanos {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        // Fails (surfacing as a Backend error of the statement) only past year 2262.
        let nanos = i64::try_from(self.0.unix_timestamp_nanos())
            .map_err(|_| format!("timestamp {} is outside the storable range 1678..2262", self.0))?;
        <i64 as Encode<Sqlite>>::encode(nanos, buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Nanos {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let nanos = <i64 as Decode<Sqlite>>::decode(value)?;
        Ok(Nanos(OffsetDateTime::from_unix_timestamp_nanos(nanos.into())?))
    }
}

/// The database holds every tenant's commands and environment: its file is 0600 (made
/// so before SQLite opens it, which gives its -wal and -shm files the same mode), and a
/// database an older hub made 0644 is fixed along with its -wal and -shm.
fn private_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if !path.exists() {
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            r => r?,
        }
    }
    Ok(())
}
