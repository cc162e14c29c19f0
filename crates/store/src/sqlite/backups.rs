//! [`BackupStore`] on SQLite.

use super::{backend, unique, Cols, Nanos, SqliteStore};
use crate::{BackupProgressRecord, BackupSettingsRecord, BackupStore, BackupTargetRecord, Result, StoreError};
use async_trait::async_trait;
use hangar_types::backups::{Backup, BackupFile, BackupFound, BackupPolicy, BackupPurge};
use hangar_types::{InstanceId, Name, OperationId};
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;
use time::OffsetDateTime;

/// Index rows per INSERT statement.
const FILES_PER_STATEMENT: usize = 10_000;

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn u64_col(c: &Cols<'_>, column: &str) -> Result<u64> {
    let n: i64 = c.get(column)?;
    u64::try_from(n).map_err(|e| c.corrupt(column, e))
}

fn target_row(row: &SqliteRow) -> Result<BackupTargetRecord> {
    let c = Cols::new(row, "backup_targets");
    Ok(BackupTargetRecord { name: c.parse("name")?, location: c.get("location")?, sealed_spec: c.get("sealed_spec")?, created_at: c.time("created_at")? })
}

fn settings_row(row: &SqliteRow) -> Result<(Name, BackupSettingsRecord)> {
    let c = Cols::new(row, "backup_settings");
    let last: Option<Nanos> = c.get("last_run_at")?;
    Ok((
        c.parse("tenant")?,
        BackupSettingsRecord {
            target: c.parse_opt("target")?,
            sealed_password: c.get("sealed_password")?,
            policy: c.json::<BackupPolicy>("policy")?,
            last_run_at: last.map(|n| n.0),
        },
    ))
}

fn backup_row(row: &SqliteRow) -> Result<Backup> {
    let c = Cols::new(row, "backups");
    let id_base: Option<i64> = c.get("id_base")?;
    Ok(Backup {
        id: c.get("id")?,
        tenant: c.parse("tenant")?,
        instance: c.parse("instance")?,
        instance_id: c.parse("instance_id")?,
        target: c.parse("target")?,
        created_at: c.time("created_at")?,
        bytes: u64_col(&c, "bytes")?,
        files: u64_col(&c, "files")?,
        dirs: u64_col(&c, "dirs")?,
        added_bytes: u64_col(&c, "added_bytes")?,
        id_base: id_base.map(|b| u32::try_from(b).map_err(|e| c.corrupt("id_base", e))).transpose()?,
    })
}

fn file_row(row: &SqliteRow) -> Result<BackupFile> {
    let c = Cols::new(row, "backup_files");
    let mtime: Option<Nanos> = c.get("mtime")?;
    Ok(BackupFile { path: c.get("path")?, size: u64_col(&c, "size")?, mtime: mtime.map(|n| n.0), kind: c.parse("kind")? })
}

fn found_row(row: &SqliteRow) -> Result<BackupFound> {
    let c = Cols::new(row, "backup_files");
    Ok(BackupFound { backup: c.get("backup_id")?, backup_time: c.time("backup_time")?, file: file_row(row)? })
}

fn progress_row(row: &SqliteRow) -> Result<BackupProgressRecord> {
    let c = Cols::new(row, "backup_progress");
    let total: Option<i64> = c.get("total_bytes")?;
    let cancel: i64 = c.get("cancel_requested")?;
    Ok(BackupProgressRecord {
        files: u64_col(&c, "files")?,
        bytes: u64_col(&c, "bytes")?,
        total_bytes: total.map(|t| u64::try_from(t).unwrap_or(0)),
        cancel_requested: cancel != 0,
        updated_at: Some(c.time("updated_at")?),
    })
}

fn purge_row(row: &SqliteRow) -> Result<BackupPurge> {
    let c = Cols::new(row, "backup_purges");
    Ok(BackupPurge { tenant: c.parse("tenant")?, instance: c.parse("instance")?, instance_id: c.parse("instance_id")?, target: c.parse("target")?, due_at: c.time("due_at")? })
}

/// The directory holding `path` ('' at the root) and its last part.
fn parent_and_name(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl SqliteStore {
    /// Makes the tenant's settings row if it has none.
    async fn settings_row_exists(&self, tenant: &Name) -> Result<()> {
        sqlx::query("INSERT INTO backup_settings (tenant) VALUES (?1) ON CONFLICT (tenant) DO NOTHING")
            .bind(tenant.as_str())
            .execute(&self.pool)
            .await
            .map_err(backend("create backup settings"))?;
        Ok(())
    }
}

#[async_trait]
impl BackupStore for SqliteStore {
    async fn insert_backup_target(&self, t: &BackupTargetRecord) -> Result<()> {
        sqlx::query("INSERT INTO backup_targets (name, location, sealed_spec, created_at) VALUES (?1, ?2, ?3, ?4)")
            .bind(t.name.as_str())
            .bind(&t.location)
            .bind(&t.sealed_spec)
            .bind(Nanos(t.created_at))
            .execute(&self.pool)
            .await
            .map_err(unique("insert backup target", format!("backup target '{}'", t.name)))?;
        Ok(())
    }

    async fn get_backup_target(&self, name: &Name) -> Result<Option<BackupTargetRecord>> {
        self.one(sqlx::query("SELECT * FROM backup_targets WHERE name = ?1").bind(name.as_str()), "get backup target", target_row).await
    }

    async fn list_backup_targets(&self) -> Result<Vec<BackupTargetRecord>> {
        self.all(sqlx::query("SELECT * FROM backup_targets ORDER BY name"), "list backup targets", target_row).await
    }

    async fn delete_backup_target(&self, name: &Name) -> Result<bool> {
        self.delete(sqlx::query("DELETE FROM backup_targets WHERE name = ?1").bind(name.as_str()), "delete backup target").await
    }

    async fn backup_target_users(&self, name: &Name) -> Result<Vec<Name>> {
        let rows = self.all(sqlx::query("SELECT * FROM backup_settings WHERE target = ?1 ORDER BY tenant").bind(name.as_str()), "list backup target users", settings_row).await?;
        Ok(rows.into_iter().map(|(t, _)| t).collect())
    }

    async fn get_backup_settings(&self, tenant: &Name) -> Result<BackupSettingsRecord> {
        let row = self.one(sqlx::query("SELECT * FROM backup_settings WHERE tenant = ?1").bind(tenant.as_str()), "get backup settings", settings_row).await?;
        Ok(row.map(|(_, s)| s).unwrap_or_default())
    }

    async fn list_backup_settings(&self) -> Result<Vec<(Name, BackupSettingsRecord)>> {
        self.all(sqlx::query("SELECT * FROM backup_settings ORDER BY tenant"), "list backup settings", settings_row).await
    }

    async fn set_backup_target(&self, tenant: &Name, target: Option<&Name>) -> Result<()> {
        self.settings_row_exists(tenant).await?;
        let q = sqlx::query("UPDATE backup_settings SET target = ?2 WHERE tenant = ?1").bind(tenant.as_str()).bind(target.map(Name::as_str));
        self.update_one(q, "set backup target", format!("backup settings of '{tenant}'")).await
    }

    async fn set_backup_policy(&self, tenant: &Name, policy: &BackupPolicy) -> Result<()> {
        self.settings_row_exists(tenant).await?;
        let q = sqlx::query("UPDATE backup_settings SET policy = ?2 WHERE tenant = ?1").bind(tenant.as_str()).bind(Json(policy));
        self.update_one(q, "set backup policy", format!("backup settings of '{tenant}'")).await
    }

    async fn init_backup_password(&self, tenant: &Name, sealed: &str) -> Result<String> {
        self.settings_row_exists(tenant).await?;
        sqlx::query("UPDATE backup_settings SET sealed_password = ?2 WHERE tenant = ?1 AND sealed_password IS NULL")
            .bind(tenant.as_str())
            .bind(sealed)
            .execute(&self.pool)
            .await
            .map_err(backend("set backup password"))?;
        self.get_backup_settings(tenant)
            .await?
            .sealed_password
            .ok_or_else(|| StoreError::NotFound(format!("backup password of '{tenant}'")))
    }

    async fn mark_backup_run(&self, tenant: &Name, expected: Option<OffsetDateTime>, at: OffsetDateTime) -> Result<bool> {
        self.settings_row_exists(tenant).await?;
        let done = sqlx::query("UPDATE backup_settings SET last_run_at = ?3 WHERE tenant = ?1 AND last_run_at IS ?2")
            .bind(tenant.as_str())
            .bind(expected.map(Nanos))
            .bind(Nanos(at))
            .execute(&self.pool)
            .await
            .map_err(backend("mark a scheduled backup run"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_backup(&self, b: &Backup, files: &[BackupFile]) -> Result<()> {
        const CONTEXT: &str = "record a backup";
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend(CONTEXT))?;
        sqlx::query("INSERT INTO backups (id, tenant, instance, instance_id, target, created_at, bytes, files, dirs, added_bytes, id_base) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)")
            .bind(&b.id)
            .bind(b.tenant.as_str())
            .bind(b.instance.as_str())
            .bind(b.instance_id.to_string())
            .bind(b.target.as_str())
            .bind(Nanos(b.created_at))
            .bind(to_i64(b.bytes))
            .bind(to_i64(b.files))
            .bind(to_i64(b.dirs))
            .bind(to_i64(b.added_bytes))
            .bind(b.id_base.map(i64::from))
            .execute(&mut *tx)
            .await
            .map_err(unique(CONTEXT, format!("backup '{}'", b.id)))?;
        // One JSON array per statement, unpacked by SQLite: binding hundreds of
        // thousands of parameters one by one is what makes big indexes slow.
        for chunk in files.chunks(FILES_PER_STATEMENT) {
            let rows: Vec<(&str, &str, &str, i64, Option<i64>, &str)> = chunk
                .iter()
                .map(|f| {
                    let (parent, name) = parent_and_name(&f.path);
                    let mtime = f.mtime.and_then(|t| i64::try_from(t.unix_timestamp_nanos()).ok());
                    (f.path.as_str(), parent, name, to_i64(f.size), mtime, f.kind.as_str())
                })
                .collect();
            sqlx::query(
                "INSERT INTO backup_files (backup_id, path, parent, name, size, mtime, kind) \
                 SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), \
                 json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]') FROM json_each(?2)",
            )
            .bind(&b.id)
            .bind(Json(rows))
            .execute(&mut *tx)
            .await
            .map_err(unique(CONTEXT, format!("an entry of backup '{}'", b.id)))?;
        }
        tx.commit().await.map_err(backend(CONTEXT))
    }

    async fn list_backups(&self, tenant: &Name, instance: &Name) -> Result<Vec<Backup>> {
        let q = sqlx::query("SELECT * FROM backups WHERE tenant = ?1 AND instance = ?2 ORDER BY created_at, id").bind(tenant.as_str()).bind(instance.as_str());
        self.all(q, "list backups", backup_row).await
    }

    async fn list_backups_of(&self, instance_id: InstanceId) -> Result<Vec<Backup>> {
        let q = sqlx::query("SELECT * FROM backups WHERE instance_id = ?1 ORDER BY created_at, id").bind(instance_id.to_string());
        self.all(q, "list backups", backup_row).await
    }

    async fn find_backups(&self, tenant: &Name, instance: &Name, prefix: &str) -> Result<Vec<Backup>> {
        let q = sqlx::query("SELECT * FROM backups WHERE tenant = ?1 AND instance = ?2 AND substr(id, 1, length(?3)) = ?3 ORDER BY created_at, id")
            .bind(tenant.as_str())
            .bind(instance.as_str())
            .bind(prefix);
        self.all(q, "find backups", backup_row).await
    }

    async fn delete_backups(&self, ids: &[String]) -> Result<u64> {
        const CONTEXT: &str = "delete backups";
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend(CONTEXT))?;
        let mut n = 0;
        for id in ids {
            sqlx::query("DELETE FROM backup_files WHERE backup_id = ?1").bind(id).execute(&mut *tx).await.map_err(backend(CONTEXT))?;
            n += sqlx::query("DELETE FROM backups WHERE id = ?1").bind(id).execute(&mut *tx).await.map_err(backend(CONTEXT))?.rows_affected();
        }
        tx.commit().await.map_err(backend(CONTEXT))?;
        Ok(n)
    }

    async fn list_backup_files(&self, backup_id: &str, dir: &str) -> Result<Vec<BackupFile>> {
        let q = sqlx::query("SELECT * FROM backup_files WHERE backup_id = ?1 AND parent = ?2 ORDER BY name").bind(backup_id).bind(dir.trim_matches('/'));
        self.all(q, "list backup files", file_row).await
    }

    async fn get_backup_file(&self, backup_id: &str, path: &str) -> Result<Option<BackupFile>> {
        let q = sqlx::query("SELECT * FROM backup_files WHERE backup_id = ?1 AND path = ?2").bind(backup_id).bind(path.trim_matches('/'));
        self.one(q, "get backup file", file_row).await
    }

    async fn find_backup_files(&self, tenant: &Name, instance: &Name, glob: &str, limit: u32) -> Result<Vec<BackupFound>> {
        let q = sqlx::query(
            "SELECT f.*, b.created_at AS backup_time FROM backups b JOIN backup_files f ON f.backup_id = b.id \
             WHERE b.tenant = ?1 AND b.instance = ?2 AND f.name GLOB ?3 ORDER BY b.created_at DESC, f.path LIMIT ?4",
        )
        .bind(tenant.as_str())
        .bind(instance.as_str())
        .bind(glob)
        .bind(i64::from(limit));
        self.all(q, "find backup files", found_row).await
    }

    async fn set_backup_progress(&self, op: OperationId, p: &BackupProgressRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO backup_progress (operation_id, files, bytes, total_bytes, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (operation_id) DO UPDATE SET files = ?2, bytes = ?3, total_bytes = ?4, updated_at = ?5",
        )
        .bind(op.to_string())
        .bind(to_i64(p.files))
        .bind(to_i64(p.bytes))
        .bind(p.total_bytes.map(to_i64))
        .bind(Nanos(OffsetDateTime::now_utc()))
        .execute(&self.pool)
        .await
        .map_err(backend("record backup progress"))?;
        Ok(())
    }

    async fn request_backup_cancel(&self, op: OperationId) -> Result<bool> {
        let done = sqlx::query("UPDATE backup_progress SET cancel_requested = 1 WHERE operation_id = ?1")
            .bind(op.to_string())
            .execute(&self.pool)
            .await
            .map_err(backend("request a backup cancel"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_backup_progress(&self, op: OperationId) -> Result<Option<BackupProgressRecord>> {
        self.one(sqlx::query("SELECT * FROM backup_progress WHERE operation_id = ?1").bind(op.to_string()), "get backup progress", progress_row).await
    }

    async fn schedule_backup_purge(&self, p: &BackupPurge) -> Result<()> {
        sqlx::query("INSERT INTO backup_purges (instance_id, tenant, instance, target, due_at) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(p.instance_id.to_string())
            .bind(p.tenant.as_str())
            .bind(p.instance.as_str())
            .bind(p.target.as_str())
            .bind(Nanos(p.due_at))
            .execute(&self.pool)
            .await
            .map_err(unique("schedule a backup purge", format!("purge of '{}/{}'", p.tenant, p.instance)))?;
        Ok(())
    }

    async fn list_backup_purges(&self) -> Result<Vec<BackupPurge>> {
        self.all(sqlx::query("SELECT * FROM backup_purges ORDER BY due_at, tenant, instance"), "list backup purges", purge_row).await
    }

    async fn take_backup_purge(&self, tenant: &Name, instance: &Name) -> Result<Option<BackupPurge>> {
        let q = sqlx::query("DELETE FROM backup_purges WHERE tenant = ?1 AND instance = ?2 RETURNING *").bind(tenant.as_str()).bind(instance.as_str());
        self.one(q, "take a backup purge", purge_row).await
    }
}
