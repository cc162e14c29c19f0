//! [`MoveStore`] on SQLite.

use super::{backend, bump_in, unique, update_instance_in, Cols, Nanos, SqliteStore};
use crate::{InstanceVersion, MoveRecord, MoveStore, Result, StoreError};
use async_trait::async_trait;
use hangar_types::api::Instance;
use hangar_types::moves::MovePhase;
use hangar_types::{Generation, HostId, InstanceId, Name};
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

fn move_row(row: &SqliteRow) -> Result<MoveRecord> {
    let c = Cols::new(row, "moves");
    let phase: String = c.get("phase")?;
    let phase = MovePhase::parse(&phase).ok_or_else(|| c.corrupt("phase", format!("unknown move phase '{phase}'")))?;
    let bytes: i64 = c.get("bytes")?;
    let downtime: Option<i64> = c.get("downtime_ms")?;
    let keep: Option<Nanos> = c.get("keep_source_until")?;
    let finished: Option<Nanos> = c.get("finished_at")?;
    Ok(MoveRecord {
        id: c.get("id")?,
        instance: c.parse("instance_id")?,
        tenant: c.parse("tenant")?,
        name: c.parse("name")?,
        source: c.parse("source_host")?,
        target: c.parse("target_host")?,
        previous_state: c.parse("previous_state")?,
        phase,
        bytes: u64::try_from(bytes).map_err(|e| c.corrupt("bytes", e))?,
        downtime_ms: downtime.map(|d| u64::try_from(d).unwrap_or(0)),
        keep_source_until: keep.map(|n| n.0),
        error: c.get("error")?,
        created_at: c.time("created_at")?,
        finished_at: finished.map(|n| n.0),
    })
}

#[async_trait]
impl MoveStore for SqliteStore {
    async fn insert_move(&self, m: &MoveRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO moves (id, instance_id, tenant, name, source_host, target_host, previous_state, phase, bytes, downtime_ms, keep_source_until, error, created_at, finished_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )
        .bind(&m.id)
        .bind(m.instance.to_string())
        .bind(m.tenant.as_str())
        .bind(m.name.as_str())
        .bind(m.source.as_str())
        .bind(m.target.as_str())
        .bind(m.previous_state.as_str())
        .bind(m.phase.as_str())
        .bind(i64::try_from(m.bytes).unwrap_or(i64::MAX))
        .bind(m.downtime_ms.map(|d| i64::try_from(d).unwrap_or(i64::MAX)))
        .bind(m.keep_source_until.map(Nanos))
        .bind(&m.error)
        .bind(Nanos(m.created_at))
        .bind(m.finished_at.map(Nanos))
        .execute(&self.pool)
        .await
        .map_err(unique("insert move", format!("a move of instance '{}/{}'", m.tenant, m.name)))?;
        Ok(())
    }

    async fn get_move(&self, id: &str) -> Result<Option<MoveRecord>> {
        self.one(sqlx::query("SELECT * FROM moves WHERE id = ?1").bind(id.to_string()), "get move", move_row).await
    }

    async fn latest_move(&self, instance: InstanceId) -> Result<Option<MoveRecord>> {
        let q = sqlx::query("SELECT * FROM moves WHERE instance_id = ?1 ORDER BY created_at DESC LIMIT 1").bind(instance.to_string());
        self.one(q, "get an instance's move", move_row).await
    }

    async fn list_open_moves(&self) -> Result<Vec<MoveRecord>> {
        let rows = sqlx::query("SELECT * FROM moves WHERE phase NOT IN ('done', 'rolled_back') ORDER BY created_at")
            .fetch_all(&self.pool)
            .await
            .map_err(backend("list open moves"))?;
        rows.iter().map(move_row).collect()
    }

    async fn set_move_phase(&self, id: &str, from: MovePhase, to: MovePhase, bytes: u64, downtime_ms: Option<u64>, error: Option<&str>) -> Result<bool> {
        let finished = to.is_final().then(|| Nanos(OffsetDateTime::now_utc()));
        let done = sqlx::query(
            "UPDATE moves SET phase = ?3, bytes = MAX(bytes, ?4), downtime_ms = COALESCE(?5, downtime_ms), error = ?6, finished_at = ?7 WHERE id = ?1 AND phase = ?2",
        )
        .bind(id.to_string())
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
        .bind(downtime_ms.map(|d| i64::try_from(d).unwrap_or(i64::MAX)))
        .bind(error)
        .bind(finished)
        .execute(&self.pool)
        .await
        .map_err(backend("set a move's phase"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn switch_move(&self, id: &str, instance: &Instance, expected: InstanceVersion, source: &Name) -> Result<Vec<(HostId, Generation)>> {
        const CONTEXT: &str = "switch a moved instance's host";
        let what = format!("instance '{}/{}'", instance.tenant, instance.name);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend(CONTEXT))?;
        let phase = sqlx::query("UPDATE moves SET phase = 'switched' WHERE id = ?1 AND phase = 'staged'").bind(id.to_string()).execute(&mut *tx).await.map_err(backend(CONTEXT))?;
        if phase.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("move {id}")));
        }
        if !update_instance_in(&mut tx, instance, expected, CONTEXT, &what).await? {
            return Err(StoreError::Conflict(what));
        }
        let mut bumped = vec![];
        for host in [Some(source), instance.host.as_ref()].into_iter().flatten() {
            bumped.extend(bump_in(&mut tx, host).await?);
        }
        tx.commit().await.map_err(backend(CONTEXT))?;
        Ok(bumped)
    }
}
