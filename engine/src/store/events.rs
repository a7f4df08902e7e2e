//! The trail of what happened in a run (triggered, stage queued, approved by, cancelled, ...),
//! written in the same transaction as the change it describes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::{Result, RunId, StageRunId};

/// One entry of a run's trail, written in the same transaction as the change it records.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Event)]
pub struct EventRow {
    pub id: i64,
    /// The stage run it concerns, if any.
    #[schema(required)]
    pub stage_run_id: Option<StageRunId>,
    /// `run` (triggered, cancel requested, ended), `stage` (a status change) or `approval`
    /// (approved or rejected, by whom).
    pub kind: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

pub async fn record(
    db: impl PgExecutor<'_>,
    run: RunId,
    stage: Option<StageRunId>,
    kind: &str,
    message: &str,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO events (run_id, stage_run_id, kind, message) VALUES ($1, $2, $3, $4)",
        run.0,
        stage.map(|s| s.0),
        kind,
        message
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records a run-level event of `kind` for each (run, message), in one statement.
pub async fn record_for_runs(
    db: impl PgExecutor<'_>,
    kind: &str,
    entries: &[(RunId, String)],
) -> Result<()> {
    let runs: Vec<i64> = entries.iter().map(|e| e.0.0).collect();
    let messages: Vec<&str> = entries.iter().map(|e| e.1.as_str()).collect();
    sqlx::query!(
        "INSERT INTO events (run_id, kind, message)
         SELECT r, $1, m FROM UNNEST($2::int8[], $3::text[]) WITH ORDINALITY AS u(r, m, o) ORDER BY o",
        kind,
        &runs,
        &messages as &[&str]
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn for_run(db: impl PgExecutor<'_>, run: RunId) -> Result<Vec<EventRow>> {
    Ok(sqlx::query_as!(
        EventRow,
        r#"SELECT id, stage_run_id AS "stage_run_id: StageRunId", kind, message, at
           FROM events WHERE run_id = $1 ORDER BY id"#,
        run.0
    )
    .fetch_all(db)
    .await?)
}
