//! Webhook deliveries: stored before they are answered, processed afterwards (by whichever
//! engine claims them), and kept with what they led to.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::{PipelineId, ProjectId, Result, RunId, StoreError};
use crate::store::repos::RepoId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "delivery_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Received,
    Triggered,
    Ignored,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Received => "received",
            DeliveryStatus::Triggered => "triggered",
            DeliveryStatus::Ignored => "ignored",
            DeliveryStatus::Failed => "failed",
        }
    }
}

pub struct NewDelivery<'a> {
    pub provider: &'a str,
    pub delivery_key: &'a str,
    pub repository: Option<RepoId>,
    pub pipeline: Option<PipelineId>,
    pub event: &'a str,
    pub payload: &'a [u8],
    /// Deliveries decided at once (pings, generic hooks) are stored already processed.
    pub status: DeliveryStatus,
    pub summary: Option<&'a str>,
}

/// Stores a delivery. `None` when one with the same provider and delivery id exists: a
/// redelivery, answered without being processed again.
pub async fn insert(db: impl PgExecutor<'_>, d: NewDelivery<'_>) -> Result<Option<i64>> {
    Ok(sqlx::query!(
        r#"WITH stored AS (
             INSERT INTO deliveries (provider, delivery_key, repository_id, pipeline_id, event, payload, status, summary, processed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $7 = 'received'::delivery_status THEN NULL ELSE now() END)
             ON CONFLICT (provider, delivery_key) DO NOTHING
             RETURNING id, status)
           -- In the same statement, so a stored delivery always wakes some engine's processor.
           SELECT id AS "id!", (CASE WHEN status = 'received' THEN pg_notify('gantry_deliveries', '') END) IS NULL AS quiet
           FROM stored"#,
        d.provider,
        d.delivery_key,
        d.repository.map(|r| r.0),
        d.pipeline.map(|p| p.0),
        d.event,
        d.payload,
        d.status as DeliveryStatus,
        d.summary,
    )
    .fetch_optional(db)
    .await?
    .map(|r| r.id))
}

/// Stores deliveries in one statement (each needs a repository; all distinct by provider and
/// delivery id), in order. For each: its id, or `None` when one with the same provider and
/// delivery id existed (a redelivery). Wakes some engine's processor once if any is new.
pub async fn insert_many(
    db: impl PgExecutor<'_>,
    batch: &[NewDelivery<'_>],
) -> Result<Vec<Option<i64>>> {
    let providers: Vec<&str> = batch.iter().map(|d| d.provider).collect();
    let keys: Vec<&str> = batch.iter().map(|d| d.delivery_key).collect();
    let repositories: Vec<i64> = batch
        .iter()
        .map(|d| d.repository.map_or(0, |r| r.0))
        .collect();
    let events: Vec<&str> = batch.iter().map(|d| d.event).collect();
    let payloads: Vec<&[u8]> = batch.iter().map(|d| d.payload).collect();
    let statuses: Vec<&str> = batch.iter().map(|d| d.status.as_str()).collect();
    let summaries: Vec<&str> = batch.iter().map(|d| d.summary.unwrap_or("")).collect();
    let rows = sqlx::query!(
        r#"WITH input AS (
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::bytea[], $6::text[], $7::text[])
               WITH ORDINALITY AS i(provider, delivery_key, repository_id, event, payload, status, summary, ord)
           ), stored AS (
             INSERT INTO deliveries (provider, delivery_key, repository_id, event, payload, status, summary, processed_at)
             SELECT provider, delivery_key, repository_id, event, payload, status::delivery_status,
                    NULLIF(summary, ''), CASE WHEN status = 'received' THEN NULL ELSE now() END
             FROM input ORDER BY ord
             ON CONFLICT (provider, delivery_key) DO NOTHING
             RETURNING id, provider, delivery_key, status
           ), woken AS (
             -- In the same statement, so stored deliveries always wake some engine's processor.
             SELECT pg_notify('gantry_deliveries', '') FROM stored WHERE status = 'received' LIMIT 1
           )
           SELECT s.id AS "id?", (SELECT count(*) FROM woken) AS "woken!"
           FROM input i LEFT JOIN stored s ON s.provider = i.provider AND s.delivery_key = i.delivery_key
           ORDER BY i.ord"#,
        &providers as &[&str],
        &keys as &[&str],
        &repositories,
        &events as &[&str],
        &payloads as &[&[u8]],
        &statuses as &[&str],
        &summaries as &[&str],
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// The id of the earlier delivery a redelivery repeats.
pub async fn find_key(
    db: impl PgExecutor<'_>,
    provider: &str,
    delivery_key: &str,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM deliveries WHERE provider = $1 AND delivery_key = $2",
        provider,
        delivery_key
    )
    .fetch_optional(db)
    .await?)
}

/// A delivery waiting to be processed.
pub struct Pending {
    pub id: i64,
    pub provider: String,
    pub repository_id: Option<RepoId>,
    pub event: String,
    pub payload: Vec<u8>,
    pub attempts: i32,
}

/// Up to `limit` waiting deliveries, without locking them, taking turns between repositories:
/// the oldest of each repository first, then the second oldest of each, and so on. One
/// repository's flood of deliveries therefore never holds back another's: a push to a quiet
/// repository is in the next batch, however many are queued elsewhere. They come in that
/// order (turns), so a caller that takes only some of them keeps the fairness.
///
/// The repositories with waiting deliveries are found by a loose index scan (one index probe
/// per repository, not a pass over every waiting row), so a backlog of thousands costs no more
/// to look into than a few. Deliveries in `held` (those this engine's other processors have
/// taken up) are passed over.
pub async fn peek(db: impl PgExecutor<'_>, limit: i64, held: &[i64]) -> Result<Vec<Pending>> {
    let waiting = sqlx::query_as!(
        Pending,
        r#"WITH RECURSIVE repos AS (
               (SELECT repository_id FROM deliveries WHERE status = 'received'
                  AND repository_id IS NOT NULL ORDER BY repository_id LIMIT 1)
               UNION ALL
               SELECT (SELECT d.repository_id FROM deliveries d WHERE d.status = 'received'
                         AND d.repository_id > r.repository_id ORDER BY d.repository_id LIMIT 1)
               FROM repos r WHERE r.repository_id IS NOT NULL
           )
           SELECT w.id AS "id!", w.provider AS "provider!",
                  w.repository_id AS "repository_id: RepoId", w.event AS "event!",
                  w.payload AS "payload!", w.attempts AS "attempts!"
           FROM repos r
           CROSS JOIN LATERAL (
               SELECT d.id, d.provider, d.repository_id, d.event, d.payload, d.attempts,
                      row_number() OVER (ORDER BY d.id) AS turn
               FROM deliveries d
               WHERE d.status = 'received' AND d.repository_id = r.repository_id
                 AND d.id <> ALL($2)
               ORDER BY d.id LIMIT $1) w
           WHERE r.repository_id IS NOT NULL
           ORDER BY w.turn, w.id
           LIMIT $1"#,
        limit,
        held
    )
    .fetch_all(db)
    .await?;
    Ok(waiting)
}

/// Claims those of `ids` that are still waiting and not locked by another engine; the rows
/// stay locked until the transaction ends, so engines sharing the database each process a
/// delivery once.
pub async fn claim(tx: &mut sqlx::PgConnection, ids: &[i64]) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar!(
        r#"UPDATE deliveries SET attempts = attempts + 1
           WHERE id IN (SELECT id FROM deliveries WHERE id = ANY($1) AND status = 'received'
                        FOR UPDATE SKIP LOCKED)
           RETURNING id"#,
        ids
    )
    .fetch_all(&mut *tx)
    .await?)
}

/// Records the outcome of processed deliveries, in one statement: (id, status, summary).
pub async fn finish_all(
    db: impl PgExecutor<'_>,
    outcomes: &[(i64, DeliveryStatus, String)],
) -> Result<()> {
    let ids: Vec<i64> = outcomes.iter().map(|o| o.0).collect();
    let statuses: Vec<String> = outcomes.iter().map(|o| o.1.as_str().to_owned()).collect();
    let summaries: Vec<String> = outcomes.iter().map(|o| o.2.clone()).collect();
    sqlx::query!(
        "UPDATE deliveries d SET status = u.status::delivery_status, summary = u.summary, processed_at = now()
         FROM UNNEST($1::int8[], $2::text[], $3::text[]) AS u(id, status, summary)
         WHERE d.id = u.id",
        &ids,
        &statuses,
        &summaries
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Links a run to the delivery that started it.
pub async fn link_run(db: impl PgExecutor<'_>, delivery: i64, run: RunId) -> Result<()> {
    sqlx::query!(
        "UPDATE runs SET delivery_id = $1 WHERE id = $2",
        delivery,
        run.0
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A webhook delivery and what it led to (without the payload).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryRow {
    pub id: i64,
    pub provider: String,
    pub delivery_key: String,
    #[schema(required)]
    pub repository: Option<String>,
    #[schema(required)]
    pub project: Option<String>,
    pub event: String,
    pub status: DeliveryStatus,
    #[schema(required)]
    pub summary: Option<String>,
    pub received_at: DateTime<Utc>,
    #[schema(required)]
    pub processed_at: Option<DateTime<Utc>>,
    /// Runs it started, as (run id, pipeline name, run number).
    pub runs: Vec<DeliveryRun>,
}

/// A run the delivery started.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryRun {
    pub id: RunId,
    pub pipeline: String,
    pub number: i32,
    pub status: crate::store::RunStatus,
}

struct Bare {
    id: i64,
    provider: String,
    delivery_key: String,
    repository: Option<String>,
    project: Option<String>,
    event: String,
    status: DeliveryStatus,
    summary: Option<String>,
    received_at: DateTime<Utc>,
    processed_at: Option<DateTime<Utc>>,
}

/// Deliveries with their repository and project names; `$tail` filters and orders.
macro_rules! select_deliveries {
    ($tail:literal $(, $arg:expr)*) => {
        sqlx::query_as!(
            Bare,
            r#"SELECT d.id, d.provider, d.delivery_key, r.full_name AS "repository?", pr.name AS "project?",
                      d.event, d.status AS "status: DeliveryStatus", d.summary, d.received_at, d.processed_at
               FROM deliveries d
               LEFT JOIN repositories r ON r.id = d.repository_id
               LEFT JOIN pipelines p ON p.id = d.pipeline_id
               LEFT JOIN projects pr ON pr.id = COALESCE(r.project_id, p.project_id) "# + $tail
            $(, $arg)*
        )
    };
}

/// The project's newest deliveries (of its repositories and its generic hooks), newest first.
pub async fn list(db: &sqlx::PgPool, project: ProjectId, limit: i64) -> Result<Vec<DeliveryRow>> {
    let bare = select_deliveries!(
        "WHERE COALESCE(r.project_id, p.project_id) = $1 ORDER BY d.id DESC LIMIT $2",
        project.0,
        limit
    )
    .fetch_all(db)
    .await?;
    with_runs(db, bare).await
}

pub async fn get(db: &sqlx::PgPool, id: i64) -> Result<DeliveryRow> {
    let bare = select_deliveries!("WHERE d.id = $1", id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("delivery {id}")))?;
    Ok(with_runs(db, vec![bare]).await?.remove(0))
}

async fn with_runs(db: &sqlx::PgPool, bare: Vec<Bare>) -> Result<Vec<DeliveryRow>> {
    let ids: Vec<i64> = bare.iter().map(|b| b.id).collect();
    let runs = sqlx::query!(
        r#"SELECT r.delivery_id AS "delivery_id!", r.id AS "id: RunId", p.name AS pipeline, r.number,
                  r.status AS "status: crate::store::RunStatus"
           FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
           WHERE r.delivery_id = ANY($1) ORDER BY r.id"#,
        &ids
    )
    .fetch_all(db)
    .await?;
    Ok(bare
        .into_iter()
        .map(|b| DeliveryRow {
            runs: runs
                .iter()
                .filter(|r| r.delivery_id == b.id)
                .map(|r| DeliveryRun {
                    id: r.id,
                    pipeline: r.pipeline.clone(),
                    number: r.number,
                    status: r.status,
                })
                .collect(),
            id: b.id,
            provider: b.provider,
            delivery_key: b.delivery_key,
            repository: b.repository,
            project: b.project,
            event: b.event,
            status: b.status,
            summary: b.summary,
            received_at: b.received_at,
            processed_at: b.processed_at,
        })
        .collect())
}

/// Empties the payloads of up to `limit` processed deliveries received before `before`;
/// returns how many. The rows are locked only for this one statement (SKIP LOCKED: a row in
/// use elsewhere is left for the next round).
pub async fn prune_payloads(
    db: impl PgExecutor<'_>,
    before: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> Result<u64> {
    let done = sqlx::query!(
        "UPDATE deliveries SET payload = ''::bytea, payload_pruned_at = now()
         WHERE id IN (SELECT id FROM deliveries
                      WHERE payload_pruned_at IS NULL AND received_at < $1
                        AND status <> 'received'
                      ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        before,
        limit
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
