//! Stage runs (one row per planned stage instance of a run, reused across retry attempts) and
//! their steps. The scheduler decides transitions; these functions only record them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::{Result, RunId, StageRunId, StageStatus, StoreError};

/// One planned stage instance of a run (the same row across retry attempts).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Stage)]
pub struct StageRunRow {
    pub id: StageRunId,
    pub run_id: RunId,
    pub key: String,
    pub plan_index: i32,
    /// The plan indices of the stages it waits for.
    pub needs: Vec<i32>,
    pub finally: bool,
    pub allow_failure: bool,
    pub status: StageStatus,
    /// The current attempt (0 before the first).
    pub attempt: i32,
    pub max_attempts: i32,
    #[schema(required)]
    pub timeout_secs: Option<i32>,
    #[schema(required)]
    pub executor: Option<String>,
    #[schema(required)]
    pub executor_handle: Option<String>,
    /// The engine process that started the attempt.
    #[schema(required)]
    pub claimed_by: Option<String>,
    pub cancel_requested: bool,
    #[schema(required)]
    pub error: Option<String>,
    /// Who approved the stage (a rejection is in `error`: "rejected by NAME").
    #[schema(required)]
    pub approved_by: Option<String>,
    /// The approval question as asked: `approval.message` with the run's values, set when the
    /// stage began to wait.
    #[schema(required)]
    pub approval_message: Option<String>,
    /// The stage run whose result a rerun reused.
    #[schema(required)]
    pub reused_from: Option<StageRunId>,
    #[schema(required)]
    pub queued_at: Option<DateTime<Utc>>,
    #[schema(required)]
    pub started_at: Option<DateTime<Utc>>,
    #[schema(required)]
    pub finished_at: Option<DateTime<Utc>>,
    #[schema(required)]
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// The image a build stage pushed.
    #[schema(required)]
    pub image: Option<String>,
    pub log_lines: i64,
}

macro_rules! select_stages {
    ($tail:literal $(, $arg:expr)*) => {
        sqlx::query_as!(
            StageRunRow,
            r#"SELECT id AS "id: StageRunId", run_id AS "run_id: RunId", key, plan_index, needs,
                      finally, allow_failure, status AS "status: StageStatus", attempt, max_attempts,
                      timeout_secs, executor, executor_handle, claimed_by, cancel_requested, error,
                      approved_by, approval_message, reused_from AS "reused_from: StageRunId",
                      queued_at, started_at,
                      finished_at, heartbeat_at, image, log_lines
               FROM stage_runs "# + $tail
            $(, $arg)*
        )
    };
}

pub async fn for_run(db: impl PgExecutor<'_>, run: RunId) -> Result<Vec<StageRunRow>> {
    Ok(
        select_stages!("WHERE run_id = $1 ORDER BY plan_index", run.0)
            .fetch_all(db)
            .await?,
    )
}

pub async fn get(db: impl PgExecutor<'_>, id: StageRunId) -> Result<StageRunRow> {
    select_stages!("WHERE id = $1", id.0)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("stage run {id}")))
}

pub async fn find(db: impl PgExecutor<'_>, run: RunId, key: &str) -> Result<StageRunRow> {
    select_stages!("WHERE run_id = $1 AND key = $2", run.0, key)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("stage `{key}` of run {run}")))
}

/// Records a scheduler decision. `queued` stamps `queued_at`; terminal states stamp
/// `finished_at`.
pub async fn set_status(
    db: impl PgExecutor<'_>,
    id: StageRunId,
    status: StageStatus,
    error: Option<&str>,
) -> Result<()> {
    sqlx::query!(
        r#"UPDATE stage_runs SET status = $2::stage_status, error = COALESCE($3, error),
               queued_at = CASE WHEN $2::stage_status IN ('queued', 'waiting_approval') THEN now() ELSE queued_at END,
               finished_at = CASE WHEN $2::stage_status IN ('succeeded', 'failed', 'cancelled', 'skipped', 'timed_out')
                                  THEN now() ELSE finished_at END
           WHERE id = $1"#,
        id.0,
        status as StageStatus,
        error
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A stage attempt this engine has taken from the queue.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: StageRunId,
    pub run_id: RunId,
    pub key: String,
    pub attempt: i32,
    pub timeout_secs: Option<i32>,
    /// When it entered the queue and when it left it (for the queue latency metric).
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
}

/// Claims queued stages for `engine`'s `executor`, as many as its `slots` leave free after the
/// attempts it is already running, projects taking turns, and marks them running with a new
/// attempt number.
pub async fn claim_queued(
    db: impl PgExecutor<'_>,
    engine: &str,
    executor: &str,
    slots: i64,
) -> Result<Vec<Claimed>> {
    // Projects take turns, and a project with fewer stages running goes first: a stage's
    // turn is its place in its project's queue plus the project's stages running now, so
    // when one slot frees up while a flooding project holds every other, the next stage of
    // a project running nothing takes it (by queue order alone, the flood's older stage
    // would, and the other project would wait for a slot after slot).
    // FOR UPDATE SKIP LOCKED: with several engines on one database, each queued stage is
    // taken by exactly one of them, and none waits on rows another is claiming. The free slots are counted in the same statement, which saves the scheduler a
    // round trip per stage.
    let rows = sqlx::query_as!(
        Claimed,
        r#"UPDATE stage_runs SET status = 'running', attempt = attempt + 1, claimed_by = $1,
               executor = $2, executor_handle = NULL, started_at = now(), heartbeat_at = NULL,
               contacted_at = NULL,
               finished_at = NULL, log_lines = 0, log_bytes = 0, cancel_requested = false
           WHERE id IN (SELECT id FROM stage_runs WHERE id IN (
                            SELECT id FROM (
                                SELECT q.id, q.queued_at,
                                       row_number() OVER (PARTITION BY p.project_id
                                                          ORDER BY q.queued_at, q.id)
                                         + COALESCE(busy.running, 0) AS turn
                                FROM stage_runs q
                                JOIN runs r ON r.id = q.run_id
                                JOIN pipelines p ON p.id = r.pipeline_id
                                LEFT JOIN (SELECT bp.project_id, count(*) AS running
                                           FROM stage_runs b
                                           JOIN runs br ON br.id = b.run_id
                                           JOIN pipelines bp ON bp.id = br.pipeline_id
                                           WHERE b.status = 'running'
                                           GROUP BY bp.project_id) busy
                                  ON busy.project_id = p.project_id
                                WHERE q.status = 'queued' AND NOT q.runs_in_engine) waiting
                            ORDER BY turn, queued_at, id
                            LIMIT GREATEST(0, $3 - (SELECT count(*) FROM stage_runs
                                                    WHERE status = 'running' AND claimed_by = $1
                                                      AND executor = $2)))
                        AND status = 'queued'
                        FOR UPDATE SKIP LOCKED)
           RETURNING id AS "id: StageRunId", run_id AS "run_id: RunId", key, attempt, timeout_secs,
                     queued_at, started_at"#,
        engine,
        executor,
        slots
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// Takes up to `limit` queued stages that run in the engine itself (deploys), as
/// [`claim_queued`] does for runner stages.
pub async fn claim_queued_in_engine(
    db: impl PgExecutor<'_>,
    engine: &str,
    executor: &str,
    limit: i64,
) -> Result<Vec<Claimed>> {
    let rows = sqlx::query_as!(
        Claimed,
        r#"UPDATE stage_runs SET status = 'running', attempt = attempt + 1, claimed_by = $1,
               executor = $2, executor_handle = NULL, started_at = now(), heartbeat_at = NULL,
               contacted_at = NULL,
               finished_at = NULL, log_lines = 0, log_bytes = 0, cancel_requested = false
           WHERE id IN (SELECT id FROM stage_runs WHERE status = 'queued' AND runs_in_engine
                        ORDER BY queued_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
           RETURNING id AS "id: StageRunId", run_id AS "run_id: RunId", key, attempt, timeout_secs,
                     queued_at, started_at"#,
        engine,
        executor,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// Marks a stage as one the engine runs itself (before it is first queued).
pub async fn set_runs_in_engine(db: impl PgExecutor<'_>, id: StageRunId) -> Result<()> {
    sqlx::query!(
        "UPDATE stage_runs SET runs_in_engine = true WHERE id = $1",
        id.0
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn set_handle(
    db: impl PgExecutor<'_>,
    id: StageRunId,
    attempt: i32,
    handle: &str,
) -> Result<()> {
    sqlx::query!(
        "UPDATE stage_runs SET executor_handle = $3 WHERE id = $1 AND attempt = $2",
        id.0,
        attempt,
        handle
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records a heartbeat; returns whether the attempt should stop, or `None` if the attempt is
/// not the stage's current running one (a stale runner).
/// The runner's first call (its spec): from now on its silence counts, and its stage's time.
pub async fn contacted(db: impl PgExecutor<'_>, id: StageRunId, attempt: i32) -> Result<()> {
    sqlx::query!(
        "UPDATE stage_runs SET contacted_at = COALESCE(contacted_at, now()), heartbeat_at = now()
         WHERE id = $1 AND attempt = $2 AND status = 'running'",
        id.0,
        attempt
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn heartbeat(
    db: impl PgExecutor<'_>,
    id: StageRunId,
    attempt: i32,
) -> Result<Option<bool>> {
    let cancel = sqlx::query_scalar!(
        "UPDATE stage_runs SET heartbeat_at = now()
         WHERE id = $1 AND attempt = $2 AND status = 'running'
         RETURNING cancel_requested",
        id.0,
        attempt
    )
    .fetch_optional(db)
    .await?;
    Ok(cancel)
}

/// Locks the stage row for a runner call and returns its current attempt and status.
pub async fn lock(
    tx: &mut sqlx::PgConnection,
    id: StageRunId,
) -> Result<(i32, StageStatus, i64, RunId)> {
    lock_run_of(&mut *tx, id).await?;
    let row = sqlx::query!(
        r#"SELECT attempt, status AS "status: StageStatus", log_lines, run_id AS "run_id: RunId"
           FROM stage_runs WHERE id = $1 FOR UPDATE"#,
        id.0
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("stage run {id}")))?;
    Ok((row.attempt, row.status, row.log_lines, row.run_id))
}

/// Records the image a running attempt of an image stage pushed (for
/// `${{ stages.NAME.image }}`); a stale attempt records nothing.
pub async fn set_image(
    db: impl PgExecutor<'_>,
    id: StageRunId,
    attempt: i32,
    image: &str,
) -> Result<()> {
    sqlx::query!(
        "UPDATE stage_runs SET image = $3 WHERE id = $1 AND attempt = $2 AND status = 'running'",
        id.0,
        attempt,
        image
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Locks the run of stage `id` (as for an update of the run's row) and returns it.
///
/// The lock order of runs and their stages: a transaction that changes a stage and then its
/// run (marks it to be looked at again) takes the run's row first, as the scheduler does (it
/// locks a run, then changes its stages) and a cancel does. In the other order a stage ending
/// while the scheduler advances its run, or while the run is cancelled, waits for the run the
/// other holds while holding the stage the other waits for: PostgreSQL ends the deadlock by
/// failing one of them, an error the user or the runner would get.
pub async fn lock_run_of(tx: &mut sqlx::PgConnection, id: StageRunId) -> Result<RunId> {
    sqlx::query_scalar!(
        r#"SELECT r.id AS "id: RunId" FROM runs r JOIN stage_runs s ON s.run_id = r.id
           WHERE s.id = $1 FOR NO KEY UPDATE OF r"#,
        id.0
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("stage run {id}")))
}

/// Ends a running attempt. A failure with attempts left puts the stage back in the queue.
/// Returns the status the stage ends up in.
pub async fn finish_attempt(
    tx: &mut sqlx::PgConnection,
    id: StageRunId,
    attempt: i32,
    outcome: StageStatus,
    error: Option<&str>,
) -> Result<Option<StageStatus>> {
    // The run first (see [`lock_run_of`]); a caller that changed the stage already in this
    // transaction must have taken it before that.
    lock_run_of(&mut *tx, id).await?;
    let row = sqlx::query!(
        r#"SELECT status AS "status: StageStatus", attempt, max_attempts, cancel_requested, run_id
           FROM stage_runs WHERE id = $1 FOR UPDATE"#,
        id.0
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("stage run {id}")))?;
    if row.status != StageStatus::Running || row.attempt != attempt {
        // A stale report (an earlier attempt, or the stage was already ended elsewhere).
        return Ok(None);
    }
    let retry = matches!(outcome, StageStatus::Failed | StageStatus::TimedOut)
        && row.attempt < row.max_attempts
        && !row.cancel_requested;
    let status = if retry { StageStatus::Queued } else { outcome };
    let error = match (retry, error) {
        (true, Some(e)) => Some(format!("attempt {attempt} of {}: {e}", row.max_attempts)),
        (_, e) => e.map(str::to_owned),
    };
    set_status(&mut *tx, id, status, error.as_deref()).await?;
    super::runs::mark_dirty(&mut *tx, RunId(row.run_id)).await?;
    Ok(Some(status))
}

/// Asks running stages of a run (or one stage of it) to stop; their runners see it on their
/// next heartbeat. Returns the stages asked, with their executor handles.
pub async fn request_cancel(
    db: impl PgExecutor<'_>,
    run: RunId,
    only: Option<StageRunId>,
) -> Result<Vec<(StageRunId, i32, Option<String>, Option<String>)>> {
    let rows = sqlx::query!(
        r#"UPDATE stage_runs SET cancel_requested = true
           WHERE run_id = $1 AND ($2::bigint IS NULL OR id = $2) AND status = 'running'
           RETURNING id AS "id: StageRunId", attempt, executor, executor_handle"#,
        run.0,
        only.map(|s| s.0)
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.attempt, r.executor, r.executor_handle))
        .collect())
}

/// Cancels every stage of the run that has not started (pending, queued, waiting for
/// approval), `finally` stages included.
pub async fn cancel_waiting(db: impl PgExecutor<'_>, run: RunId, why: &str) -> Result<u64> {
    Ok(sqlx::query!(
        "UPDATE stage_runs SET status = 'cancelled', error = $2, finished_at = now()
         WHERE run_id = $1 AND status IN ('pending', 'queued', 'waiting_approval')",
        run.0,
        why
    )
    .execute(db)
    .await?
    .rows_affected())
}

/// Asks the running attempts of the run's regular stages to stop (a cancelled run's `finally`
/// stages keep running: they are its cleanup).
pub async fn request_cancel_regular(db: impl PgExecutor<'_>, run: RunId) -> Result<u64> {
    Ok(sqlx::query!(
        "UPDATE stage_runs SET cancel_requested = true
         WHERE run_id = $1 AND status = 'running' AND NOT finally",
        run.0
    )
    .execute(db)
    .await?
    .rows_affected())
}

/// Running attempts whose runner called in once but not since `before`, across all engines.
/// An attempt whose runner has not called in yet is starting (its pod may wait for a node or
/// pull its image for minutes): how long it may take is the executor's to judge.
pub async fn silent_since(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
) -> Result<Vec<StageRunRow>> {
    Ok(select_stages!(
        "WHERE status = 'running' AND heartbeat_at IS NOT NULL AND heartbeat_at < $1 ORDER BY id",
        before
    )
    .fetch_all(db)
    .await?)
}

/// Running attempts this engine started (to re-adopt after a restart).
pub async fn running_claimed_by(db: impl PgExecutor<'_>, engine: &str) -> Result<Vec<StageRunRow>> {
    Ok(select_stages!(
        "WHERE status = 'running' AND claimed_by = $1 ORDER BY id",
        engine
    )
    .fetch_all(db)
    .await?)
}

/// Running attempts past their stage timeout (plus `grace_secs` for the runner to act first),
/// counted from when the runner first called in (the stage's own time, not its pod's wait), or
/// from the start for a stage the engine runs itself.
pub async fn overdue(db: impl PgExecutor<'_>, grace_secs: i32) -> Result<Vec<StageRunRow>> {
    Ok(select_stages!(
        "WHERE status = 'running' AND timeout_secs IS NOT NULL
           AND (CASE WHEN runs_in_engine THEN started_at ELSE contacted_at END)
               + make_interval(secs => timeout_secs + $1) < now() ORDER BY id",
        grace_secs
    )
    .fetch_all(db)
    .await?)
}

/// Approval gates waiting longer than their timeout.
pub async fn waiting_since(db: impl PgExecutor<'_>) -> Result<Vec<StageRunRow>> {
    Ok(
        select_stages!("WHERE status = 'waiting_approval' ORDER BY id")
            .fetch_all(db)
            .await?,
    )
}

/// Which of `runs` wait for a person: they have a stage waiting for approval (the run itself
/// reads `running`; pages say it waits).
pub async fn waiting_for_approval(db: impl PgExecutor<'_>, runs: &[RunId]) -> Result<Vec<RunId>> {
    let ids: Vec<i64> = runs.iter().map(|r| r.0).collect();
    Ok(sqlx::query_scalar!(
        r#"SELECT DISTINCT run_id AS "run_id!: RunId" FROM stage_runs
           WHERE run_id = ANY($1) AND status = 'waiting_approval'"#,
        &ids
    )
    .fetch_all(db)
    .await?)
}

/// Records the approval question as asked, with its references rendered for the run.
pub async fn set_approval_message(
    db: impl PgExecutor<'_>,
    id: StageRunId,
    message: &str,
) -> Result<()> {
    sqlx::query!(
        "UPDATE stage_runs SET approval_message = $2 WHERE id = $1",
        id.0,
        message
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn set_approved_by(db: impl PgExecutor<'_>, id: StageRunId, who: &str) -> Result<()> {
    sqlx::query!(
        "UPDATE stage_runs SET approved_by = $2 WHERE id = $1",
        id.0,
        who
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Copies a stage's result from an earlier run (rerun from the failed stages).
pub async fn reuse_result(
    db: impl PgExecutor<'_>,
    id: StageRunId,
    from: &StageRunRow,
) -> Result<()> {
    sqlx::query!(
        "UPDATE stage_runs SET status = $2, reused_from = $3, image = $4, error = $5,
             started_at = $6, finished_at = $7, attempt = $8
         WHERE id = $1",
        id.0,
        from.status as StageStatus,
        // The stage run that actually ran (and owns the artifacts), not an earlier reuse of
        // it: a rerun of a rerun would otherwise point at a row without artifacts.
        from.reused_from.unwrap_or(from.id).0,
        from.image,
        from.error,
        from.started_at,
        from.finished_at,
        from.attempt,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Stage counts by status, for /metrics.
pub async fn count_by_status(db: impl PgExecutor<'_>) -> Result<Vec<(StageStatus, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT status AS "status: StageStatus", count(*) AS "n!" FROM stage_runs GROUP BY status"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
}

/// One step of one stage attempt.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Step)]
pub struct StepRow {
    pub attempt: i32,
    pub idx: i32,
    pub name: String,
    #[schema(required)]
    pub exit_code: Option<i32>,
    pub started_at: DateTime<Utc>,
    #[schema(required)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The step's first log line.
    #[schema(required)]
    pub first_line: Option<i64>,
}

pub async fn step_started(
    db: impl PgExecutor<'_>,
    id: StageRunId,
    attempt: i32,
    idx: i32,
    name: &str,
    first_line: i64,
    // The runner's clock: its report may arrive a little after the step started.
    started_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO steps (stage_run_id, attempt, idx, name, first_line, started_at)
         VALUES ($1, $2, $3, $4, $5, COALESCE($6, now()))
         ON CONFLICT (stage_run_id, attempt, idx) DO NOTHING",
        id.0,
        attempt,
        idx,
        name,
        first_line,
        started_at
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn step_finished(
    db: impl PgExecutor<'_>,
    id: StageRunId,
    attempt: i32,
    idx: i32,
    exit_code: i32,
    duration_ms: i64,
) -> Result<()> {
    sqlx::query!(
        "UPDATE steps SET exit_code = $4, finished_at = started_at + make_interval(secs => $5::float8 / 1000)
         WHERE stage_run_id = $1 AND attempt = $2 AND idx = $3",
        id.0,
        attempt,
        idx,
        exit_code,
        duration_ms as f64
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn steps(db: impl PgExecutor<'_>, id: StageRunId) -> Result<Vec<StepRow>> {
    Ok(sqlx::query_as!(
        StepRow,
        "SELECT attempt, idx, name, exit_code, started_at, finished_at, first_line
         FROM steps WHERE stage_run_id = $1 ORDER BY attempt, idx",
        id.0
    )
    .fetch_all(db)
    .await?)
}

/// The current attempt and status of each of `ids` that exists (to reconcile Kubernetes Jobs
/// with the attempts they belong to).
pub async fn attempt_states(
    db: impl PgExecutor<'_>,
    ids: &[i64],
) -> Result<Vec<(i64, i32, StageStatus)>> {
    let rows = sqlx::query!(
        r#"SELECT id, attempt, status AS "status: StageStatus" FROM stage_runs WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.attempt, r.status))
        .collect())
}
