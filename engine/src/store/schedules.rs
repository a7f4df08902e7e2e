//! Cron slots: a row per (pipeline, cron expression, slot time) that fired. The primary key
//! makes the claim atomic across engines: the first insert wins, the others see a conflict.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::{PipelineId, Result, RunId};

/// Claims a slot. True for the one engine that gets it.
pub async fn claim(
    db: impl PgExecutor<'_>,
    pipeline: PipelineId,
    cron: &str,
    slot: DateTime<Utc>,
    engine: &str,
) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"INSERT INTO schedule_slots (pipeline_id, cron, slot, claimed_by) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING RETURNING true AS "claimed!""#,
        pipeline.0,
        cron,
        slot,
        engine
    )
    .fetch_optional(db)
    .await?
    .unwrap_or(false))
}

pub async fn set_run(
    db: impl PgExecutor<'_>,
    pipeline: PipelineId,
    cron: &str,
    slot: DateTime<Utc>,
    run: RunId,
) -> Result<()> {
    sqlx::query!(
        "UPDATE schedule_slots SET run_id = $4 WHERE pipeline_id = $1 AND cron = $2 AND slot = $3",
        pipeline.0,
        cron,
        slot,
        run.0
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The newest slot that fired for a pipeline's cron expression.
pub async fn last_slot(
    db: impl PgExecutor<'_>,
    pipeline: PipelineId,
    cron: &str,
) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar!(
        "SELECT max(slot) FROM schedule_slots WHERE pipeline_id = $1 AND cron = $2",
        pipeline.0,
        cron
    )
    .fetch_one(db)
    .await?)
}

/// Slots that fired for a pipeline, oldest first (for tests and the API).
pub async fn fired(
    db: impl PgExecutor<'_>,
    pipeline: PipelineId,
) -> Result<Vec<(String, DateTime<Utc>, Option<RunId>, String)>> {
    Ok(sqlx::query!(
        r#"SELECT cron, slot, run_id AS "run_id: RunId", claimed_by FROM schedule_slots
           WHERE pipeline_id = $1 ORDER BY slot, cron"#,
        pipeline.0
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|r| (r.cron, r.slot, r.run_id, r.claimed_by))
    .collect())
}
