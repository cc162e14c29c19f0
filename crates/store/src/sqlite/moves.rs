//! [`MoveStore`] on SQLite.

use super::{backend, bump_in, unique, update_instance_in, Cols, Nanos, SqliteStore};
use crate::{EvacuationItemRecord, EvacuationRecord, InstanceVersion, MoveRecord, MoveStore, Result, StoreError};
use async_trait::async_trait;
use hangar_types::api::Instance;
use hangar_types::moves::{EvacuationOutcome, MovePhase, MoveVia};
use hangar_types::{Generation, HostId, InstanceId, Name, OperationId};
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

fn move_row(row: &SqliteRow) -> Result<MoveRecord> {
    let c = Cols::new(row, "moves");
    let phase: String = c.get("phase")?;
    let phase = MovePhase::parse(&phase).ok_or_else(|| c.corrupt("phase", format!("unknown move phase '{phase}'")))?;
    let via: String = c.get("via")?;
    let via = MoveVia::parse(&via).ok_or_else(|| c.corrupt("via", format!("unknown move way '{via}'")))?;
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
        via,
        bytes: u64::try_from(bytes).map_err(|e| c.corrupt("bytes", e))?,
        downtime_ms: downtime.map(|d| u64::try_from(d).unwrap_or(0)),
        keep_source_until: keep.map(|n| n.0),
        error: c.get("error")?,
        created_at: c.time("created_at")?,
        finished_at: finished.map(|n| n.0),
    })
}

fn evacuation_row(row: &SqliteRow) -> Result<EvacuationRecord> {
    let c = Cols::new(row, "evacuations");
    let parallel: i64 = c.get("parallel")?;
    Ok(EvacuationRecord {
        operation: c.parse("operation_id")?,
        host: c.parse("host")?,
        parallel: u32::try_from(parallel).map_err(|e| c.corrupt("parallel", e))?,
        created_at: c.time("created_at")?,
    })
}

fn evacuation_item_row(row: &SqliteRow) -> Result<EvacuationItemRecord> {
    let c = Cols::new(row, "evacuation_items");
    let outcome: String = c.get("outcome")?;
    Ok(EvacuationItemRecord {
        instance: c.parse("instance_id")?,
        tenant: c.parse("tenant")?,
        name: c.parse("name")?,
        state: c.parse("state")?,
        outcome: EvacuationOutcome::parse(&outcome).ok_or_else(|| c.corrupt("outcome", format!("unknown evacuation outcome '{outcome}'")))?,
        target: c.parse_opt("target_host")?,
        move_id: c.get("move_id")?,
        error: c.get("error")?,
    })
}

#[async_trait]
impl MoveStore for SqliteStore {
    async fn insert_move(&self, m: &MoveRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO moves (id, instance_id, tenant, name, source_host, target_host, previous_state, phase, bytes, downtime_ms, keep_source_until, error, created_at, finished_at, via) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
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
        .bind(m.via.as_str())
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

    async fn insert_evacuation(&self, e: &EvacuationRecord, items: &[EvacuationItemRecord]) -> Result<()> {
        const CONTEXT: &str = "insert an evacuation";
        let mut tx = self.pool.begin().await.map_err(backend(CONTEXT))?;
        sqlx::query("INSERT INTO evacuations (operation_id, host, parallel, created_at) VALUES (?1, ?2, ?3, ?4)")
            .bind(e.operation.to_string())
            .bind(e.host.as_str())
            .bind(i64::from(e.parallel))
            .bind(Nanos(e.created_at))
            .execute(&mut *tx)
            .await
            .map_err(unique(CONTEXT, format!("evacuation {}", e.operation)))?;
        for i in items {
            sqlx::query(
                "INSERT INTO evacuation_items (operation_id, instance_id, tenant, name, state, outcome, target_host, move_id, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .bind(e.operation.to_string())
            .bind(i.instance.to_string())
            .bind(i.tenant.as_str())
            .bind(i.name.as_str())
            .bind(i.state.as_str())
            .bind(i.outcome.as_str())
            .bind(i.target.as_ref().map(Name::as_str))
            .bind(&i.move_id)
            .bind(&i.error)
            .execute(&mut *tx)
            .await
            .map_err(backend(CONTEXT))?;
        }
        tx.commit().await.map_err(backend(CONTEXT))
    }

    async fn get_evacuation(&self, operation: OperationId) -> Result<Option<(EvacuationRecord, Vec<EvacuationItemRecord>)>> {
        let Some(e) = self.one(sqlx::query("SELECT * FROM evacuations WHERE operation_id = ?1").bind(operation.to_string()), "get an evacuation", evacuation_row).await? else {
            return Ok(None);
        };
        let rows = sqlx::query("SELECT * FROM evacuation_items WHERE operation_id = ?1 ORDER BY tenant, name")
            .bind(operation.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(backend("list an evacuation's instances"))?;
        Ok(Some((e, rows.iter().map(evacuation_item_row).collect::<Result<_>>()?)))
    }

    async fn latest_evacuation(&self, host: &Name) -> Result<Option<OperationId>> {
        let q = sqlx::query("SELECT * FROM evacuations WHERE host = ?1 ORDER BY created_at DESC LIMIT 1").bind(host.as_str());
        Ok(self.one(q, "get a host's evacuation", evacuation_row).await?.map(|e| e.operation))
    }

    async fn set_evacuation_item(&self, operation: OperationId, item: &EvacuationItemRecord) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE evacuation_items SET outcome = ?3, target_host = ?4, move_id = ?5, error = ?6 \
             WHERE operation_id = ?1 AND instance_id = ?2 AND outcome NOT IN ('moved', 'failed')",
        )
        .bind(operation.to_string())
        .bind(item.instance.to_string())
        .bind(item.outcome.as_str())
        .bind(item.target.as_ref().map(Name::as_str))
        .bind(&item.move_id)
        .bind(&item.error)
        .execute(&self.pool)
        .await
        .map_err(backend("set an evacuation's instance"))?;
        Ok(done.rows_affected() == 1)
    }
}
