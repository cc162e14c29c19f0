//! [`TransferStore`] on SQLite.

use super::{backend, unique, Cols, Nanos, SqliteStore};
use crate::{Result, TransferRecord, TransferStore};
use async_trait::async_trait;
use hangar_types::transfer::{TransferId, TransferObject, TransferState};
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;
use time::OffsetDateTime;

fn state_str(s: TransferState) -> &'static str {
    match s {
        TransferState::Expected => "expected",
        TransferState::Running => "running",
        TransferState::Done => "done",
        TransferState::Failed => "failed",
    }
}

fn transfer_row(row: &SqliteRow) -> Result<TransferRecord> {
    let c = Cols::new(row, "transfers");
    let state: String = c.get("state")?;
    let state = match state.as_str() {
        "expected" => TransferState::Expected,
        "running" => TransferState::Running,
        "done" => TransferState::Done,
        "failed" => TransferState::Failed,
        other => return Err(c.corrupt("state", format!("unknown transfer state '{other}'"))),
    };
    let bytes: i64 = c.get("bytes")?;
    let finished: Option<Nanos> = c.get("finished_at")?;
    Ok(TransferRecord {
        id: c.parse("id")?,
        source: c.parse("source_host")?,
        target: c.parse("target_host")?,
        object: c.json::<TransferObject>("object")?,
        expires_at: c.time("expires_at")?,
        state,
        bytes: u64::try_from(bytes).map_err(|e| c.corrupt("bytes", e))?,
        sha256: c.get("sha256")?,
        error: c.get("error")?,
        created_at: c.time("created_at")?,
        finished_at: finished.map(|n| n.0),
    })
}

#[async_trait]
impl TransferStore for SqliteStore {
    async fn insert_transfer(&self, t: &TransferRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO transfers (id, source_host, target_host, object, expires_at, state, bytes, sha256, error, created_at, finished_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .bind(t.id.to_string())
        .bind(t.source.to_string())
        .bind(t.target.to_string())
        .bind(Json(&t.object))
        .bind(Nanos(t.expires_at))
        .bind(state_str(t.state))
        .bind(i64::try_from(t.bytes).unwrap_or(i64::MAX))
        .bind(&t.sha256)
        .bind(&t.error)
        .bind(Nanos(t.created_at))
        .bind(t.finished_at.map(Nanos))
        .execute(&self.pool)
        .await
        .map_err(unique("insert transfer", format!("transfer {}", t.id)))?;
        Ok(())
    }

    async fn get_transfer(&self, id: TransferId) -> Result<Option<TransferRecord>> {
        self.one(sqlx::query("SELECT * FROM transfers WHERE id = ?1").bind(id.to_string()), "get transfer", transfer_row).await
    }

    async fn set_transfer_progress(&self, id: TransferId, bytes: u64) -> Result<bool> {
        let done = sqlx::query("UPDATE transfers SET state = 'running', bytes = MAX(bytes, ?2) WHERE id = ?1 AND state IN ('expected', 'running')")
            .bind(id.to_string())
            .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(backend("record transfer progress"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn finish_transfer(&self, id: TransferId, state: TransferState, sha256: Option<&str>, error: Option<&str>) -> Result<bool> {
        let done = sqlx::query("UPDATE transfers SET state = ?2, sha256 = ?3, error = ?4, finished_at = ?5 WHERE id = ?1 AND state IN ('expected', 'running')")
            .bind(id.to_string())
            .bind(state_str(state))
            .bind(sha256)
            .bind(error)
            .bind(Nanos(OffsetDateTime::now_utc()))
            .execute(&self.pool)
            .await
            .map_err(backend("finish transfer"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_open_transfers(&self) -> Result<Vec<TransferRecord>> {
        self.all(sqlx::query("SELECT * FROM transfers WHERE state IN ('expected', 'running') ORDER BY created_at, id"), "list open transfers", transfer_row).await
    }
}
