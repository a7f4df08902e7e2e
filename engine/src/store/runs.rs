//! Runs: one execution of one pipeline version, numbered per pipeline.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::{PipelineId, Result, RunId, RunStatus, StoreError, VersionId};

/// One execution of one pipeline version.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Run)]
pub struct RunRow {
    pub id: RunId,
    pub pipeline_id: PipelineId,
    pub project: String,
    pub pipeline: String,
    pub version_id: VersionId,
    /// Numbered per pipeline from 1.
    pub number: i32,
    /// What started it: manual, push, schedule, rerun, ...
    pub trigger: String,
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub params: serde_json::Value,
    // Documented as `RunContext` by `http::openapi` (the store does not import `run`).
    #[schema(value_type = Object)]
    pub context: serde_json::Value,
    pub status: RunStatus,
    /// Why the run ended as it did.
    #[schema(required)]
    pub reason: Option<String>,
    pub cancel_requested: bool,
    #[schema(required)]
    pub rerun_of: Option<RunId>,
    pub created_at: DateTime<Utc>,
    #[schema(required)]
    pub started_at: Option<DateTime<Utc>>,
    #[schema(required)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Who or what started the run: a user, the webhook's sender, `schedule`.
    #[schema(required)]
    pub triggered_by: Option<String>,
    /// Who cancelled it (a user; `concurrency` for a newer run of its group).
    #[schema(required)]
    pub cancelled_by: Option<String>,
}

impl RunRow {
    /// What started the run, and who: `manual by alice`, `push by octocat`, `schedule`.
    pub fn trigger_text(&self) -> String {
        describe_trigger(&self.trigger, self.triggered_by.as_deref())
    }
}

/// `trigger` with ` by WHO` when someone is known (a schedule is its own cause).
pub fn describe_trigger(trigger: &str, by: Option<&str>) -> String {
    match by {
        Some(by) if !by.is_empty() && by != trigger => format!("{trigger} by {by}"),
        _ => trigger.to_owned(),
    }
}

pub struct NewRun<'a> {
    pub pipeline: PipelineId,
    pub version: VersionId,
    pub trigger: &'a str,
    pub params: &'a serde_json::Value,
    pub context: &'a serde_json::Value,
    pub concurrency_group: Option<&'a str>,
    pub rerun_of: Option<RunId>,
    pub triggered_by: Option<&'a str>,
    /// The webhook delivery that started it.
    pub delivery: Option<i64>,
    pub stages: &'a [NewStage],
}

/// One planned stage instance to store with a new run.
pub struct NewStage {
    pub key: String,
    pub plan_index: i32,
    pub needs: Vec<i32>,
    pub finally: bool,
    pub allow_failure: bool,
    pub max_attempts: i32,
    pub timeout_secs: Option<i32>,
}

/// Creates the run and its stage rows in the caller's transaction ([`create_many`] of one).
pub async fn create(tx: &mut sqlx::PgConnection, run: NewRun<'_>) -> Result<(RunId, i32)> {
    create_many(tx, std::slice::from_ref(&run))
        .await?
        .pop()
        .ok_or_else(|| StoreError::NotFound("the run just created".into()))
}

/// Creates runs and their stage rows in the caller's transaction, in four statements however
/// many there are (and one more per pipeline), answering (id, number) in the order given.
///
/// The run numbers come from the pipeline row, whose update serialises everything that starts
/// runs of that pipeline until the transaction ends (so numbers have no gaps). Taking them for
/// all of the runs at once, and last, is what keeps that short: a delivery processor's batch
/// holds the row for these few statements and its commit, not for all of its work.
pub async fn create_many(
    tx: &mut sqlx::PgConnection,
    runs: &[NewRun<'_>],
) -> Result<Vec<(RunId, i32)>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    // Pipeline by pipeline in id order: two transactions starting runs of the same two
    // pipelines lock their rows in the same order, never each waiting for the other.
    let mut by_pipeline: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
    for (i, run) in runs.iter().enumerate() {
        by_pipeline.entry(run.pipeline.0).or_default().push(i);
    }
    let mut numbers = vec![0; runs.len()];
    for (pipeline, indices) in &by_pipeline {
        let count = i32::try_from(indices.len()).unwrap_or(i32::MAX);
        let last = sqlx::query_scalar!(
            "UPDATE pipelines SET last_run_number = last_run_number + $2 WHERE id = $1 RETURNING last_run_number",
            pipeline,
            count
        )
        .fetch_one(&mut *tx)
        .await?;
        for (n, &i) in (last - count + 1..).zip(indices) {
            numbers[i] = n;
        }
    }
    let pipelines: Vec<i64> = runs.iter().map(|r| r.pipeline.0).collect();
    let versions: Vec<i64> = runs.iter().map(|r| r.version.0).collect();
    let triggers: Vec<&str> = runs.iter().map(|r| r.trigger).collect();
    let params: Vec<&serde_json::Value> = runs.iter().map(|r| r.params).collect();
    let contexts: Vec<&serde_json::Value> = runs.iter().map(|r| r.context).collect();
    let groups: Vec<Option<&str>> = runs.iter().map(|r| r.concurrency_group).collect();
    let rerun_of: Vec<Option<i64>> = runs.iter().map(|r| r.rerun_of.map(|r| r.0)).collect();
    let by: Vec<Option<&str>> = runs.iter().map(|r| r.triggered_by).collect();
    let deliveries: Vec<Option<i64>> = runs.iter().map(|r| r.delivery).collect();
    // Inserted in the order given, so a later run of a concurrency group has the higher id.
    let created = sqlx::query!(
        r#"INSERT INTO runs (pipeline_id, version_id, number, trigger, params, context, concurrency_group,
                             rerun_of, triggered_by, delivery_id)
           SELECT p, v, n, t, pa, c, g, r, b, d
           FROM UNNEST($1::int8[], $2::int8[], $3::int4[], $4::text[], $5::jsonb[], $6::jsonb[],
                       $7::text[], $8::int8[], $9::text[], $10::int8[])
                WITH ORDINALITY AS u(p, v, n, t, pa, c, g, r, b, d, o)
           ORDER BY o
           RETURNING id AS "id: RunId", pipeline_id, number"#,
        &pipelines,
        &versions,
        &numbers,
        &triggers as &[&str],
        &params as &[&serde_json::Value],
        &contexts as &[&serde_json::Value],
        &groups as &[Option<&str>],
        &rerun_of as &[Option<i64>],
        &by as &[Option<&str>],
        &deliveries as &[Option<i64>],
    )
    .fetch_all(&mut *tx)
    .await?;
    // RETURNING promises no order: (pipeline, number) is the row's key.
    let ids: std::collections::HashMap<(i64, i32), RunId> = created
        .into_iter()
        .map(|row| ((row.pipeline_id, row.number), row.id))
        .collect();
    let mut answer = Vec::with_capacity(runs.len());
    for (run, &number) in runs.iter().zip(&numbers) {
        let id = ids
            .get(&(run.pipeline.0, number))
            .copied()
            .ok_or_else(|| StoreError::NotFound(format!("run #{number} just created")))?;
        answer.push((id, number));
    }
    let mut run_ids = Vec::new();
    let mut keys = Vec::new();
    let mut indices = Vec::new();
    // Postgres arrays cannot be ragged, so needs travel as text (`{1,2}`) and are cast back.
    let mut needs = Vec::new();
    let mut finally = Vec::new();
    let mut allow = Vec::new();
    let mut attempts = Vec::new();
    let mut timeouts: Vec<Option<i32>> = Vec::new();
    for (run, (id, _)) in runs.iter().zip(&answer) {
        for stage in run.stages {
            run_ids.push(id.0);
            keys.push(stage.key.as_str());
            indices.push(stage.plan_index);
            let items: Vec<String> = stage.needs.iter().map(i32::to_string).collect();
            needs.push(format!("{{{}}}", items.join(",")));
            finally.push(stage.finally);
            allow.push(stage.allow_failure);
            attempts.push(stage.max_attempts);
            timeouts.push(stage.timeout_secs);
        }
    }
    sqlx::query!(
        r#"INSERT INTO stage_runs (run_id, key, plan_index, needs, finally, allow_failure, max_attempts, timeout_secs)
           SELECT r, k, i, n::int[], f, a, m, t
           FROM UNNEST($1::int8[], $2::text[], $3::int[], $4::text[], $5::bool[], $6::bool[], $7::int[], $8::int[])
                AS s(r, k, i, n, f, a, m, t)"#,
        &run_ids,
        &keys as &[&str],
        &indices,
        &needs,
        &finally,
        &allow,
        &attempts,
        &timeouts as &[Option<i32>],
    )
    .execute(&mut *tx)
    .await?;
    Ok(answer)
}

macro_rules! select_runs {
    ($tail:literal $(, $arg:expr)*) => {
        sqlx::query_as!(
            RunRow,
            r#"SELECT r.id AS "id: RunId", r.pipeline_id AS "pipeline_id: PipelineId", pr.name AS project,
                      p.name AS pipeline, r.version_id AS "version_id: VersionId", r.number, r.trigger,
                      r.params, r.context, r.status AS "status: RunStatus", r.reason, r.cancel_requested,
                      r.rerun_of AS "rerun_of: RunId", r.created_at, r.started_at, r.finished_at,
                      r.triggered_by, r.cancelled_by
               FROM runs r JOIN pipelines p ON p.id = r.pipeline_id JOIN projects pr ON pr.id = p.project_id "# + $tail
            $(, $arg)*
        )
    };
}

pub async fn get(db: impl PgExecutor<'_>, id: RunId) -> Result<RunRow> {
    select_runs!("WHERE r.id = $1", id.0)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("run {id}")))
}

/// Run `number` of a pipeline (the `#N` people see), as `PIPELINE#N` names it.
pub async fn by_number(
    db: impl PgExecutor<'_>,
    pipeline: PipelineId,
    number: i32,
) -> Result<RunRow> {
    select_runs!(
        "WHERE r.pipeline_id = $1 AND r.number = $2",
        pipeline.0,
        number
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("run #{number}")))
}

/// Newest first; `before` pages backwards by id; `projects` (names) limits the runs to those
/// projects (`None`: every project).
pub async fn list(
    db: impl PgExecutor<'_>,
    pipeline: Option<PipelineId>,
    before: Option<RunId>,
    limit: i64,
    projects: Option<&[String]>,
) -> Result<Vec<RunRow>> {
    let rows = select_runs!(
        "WHERE ($1::bigint IS NULL OR r.pipeline_id = $1) AND ($2::bigint IS NULL OR r.id < $2)
           AND ($4::text[] IS NULL OR pr.name = ANY($4))
         ORDER BY r.id DESC LIMIT $3",
        pipeline.map(|p| p.0),
        before.map(|b| b.0),
        limit,
        projects
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// Locks the next run to advance, taking turns between pipelines: the oldest dirty run of the
/// first pipeline after `after` (the one served last), wrapping round. A flood of runs in one
/// pipeline is thus advanced one run per turn, and another pipeline's run waits for one turn,
/// not for the flood. Clears its dirty flag; the caller advances it in the same transaction.
/// Returns the run and its pipeline.
pub async fn lock_next_dirty(
    tx: &mut sqlx::PgConnection,
    after: PipelineId,
) -> Result<Option<(RunId, PipelineId)>> {
    // SKIP LOCKED: several engine processes share the database; a run another one is
    // advancing right now is simply left to it.
    let next = sqlx::query!(
        r#"UPDATE runs SET dirty = false
           WHERE id = (SELECT id FROM runs WHERE dirty AND pipeline_id > $1
                       ORDER BY pipeline_id, id LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING id AS "id: RunId", pipeline_id AS "pipeline_id: PipelineId""#,
        after.0
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = next {
        return Ok(Some((row.id, row.pipeline_id)));
    }
    let first = sqlx::query!(
        r#"UPDATE runs SET dirty = false
           WHERE id = (SELECT id FROM runs WHERE dirty
                       ORDER BY pipeline_id, id LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING id AS "id: RunId", pipeline_id AS "pipeline_id: PipelineId""#
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(first.map(|row| (row.id, row.pipeline_id)))
}

/// How many runs of `run`'s project are running, for the project-level guard. The count is
/// taken under a lock on the project held until the transaction ends, so two engines starting
/// runs of one project at once count each other's.
pub async fn running_in_project(tx: &mut sqlx::PgConnection, run: RunId) -> Result<i64> {
    let project = sqlx::query_scalar!(
        "SELECT p.project_id FROM runs r JOIN pipelines p ON p.id = r.pipeline_id WHERE r.id = $1",
        run.0
    )
    .fetch_one(&mut *tx)
    .await?;
    // Advisory lock class 1: a project's starting runs.
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(1, $1::int4)",
        i32::try_from(project).unwrap_or(i32::MAX)
    )
    .execute(&mut *tx)
    .await?;
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
           WHERE p.project_id = $1 AND r.status = 'running'"#,
        project
    )
    .fetch_one(&mut *tx)
    .await?)
}

/// When a run ends, the oldest runs of its project that wait to start may be able to: they
/// are advanced again (those still held back by something else wait on).
pub async fn wake_waiting_in_project(db: impl PgExecutor<'_>, ended: RunId) -> Result<()> {
    sqlx::query!(
        // Pipeline by pipeline through `runs_held`: the oldest held runs of each, then the
        // oldest of those. Reading the project's runs instead costs a scan of every run a
        // flood queued, once per run that ends.
        "UPDATE runs SET dirty = true WHERE id IN (
             SELECT h.id FROM pipelines p
             CROSS JOIN LATERAL (
                 SELECT r.id FROM runs r
                 WHERE r.pipeline_id = p.id AND r.status = 'queued' AND NOT r.dirty AND r.id <> $1
                 ORDER BY r.id LIMIT 8) h
             WHERE p.project_id = (SELECT p2.project_id FROM runs e
                                   JOIN pipelines p2 ON p2.id = e.pipeline_id WHERE e.id = $1)
             ORDER BY h.id LIMIT 8)",
        ended.0
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn mark_dirty(db: impl PgExecutor<'_>, id: RunId) -> Result<()> {
    sqlx::query!("UPDATE runs SET dirty = true WHERE id = $1", id.0)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_status(
    db: impl PgExecutor<'_>,
    id: RunId,
    status: RunStatus,
    reason: Option<&str>,
) -> Result<()> {
    sqlx::query!(
        r#"UPDATE runs SET status = $2::run_status, reason = COALESCE($3, reason),
               started_at = CASE WHEN $2::run_status <> 'queued' THEN COALESCE(started_at, now()) ELSE started_at END,
               finished_at = CASE WHEN $2::run_status IN ('succeeded', 'failed', 'cancelled', 'timed_out') THEN now() ELSE NULL END
           WHERE id = $1"#,
        id.0,
        status as RunStatus,
        reason
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Asks for the run to stop; the scheduler cancels its stages. Returns false if it had ended.
/// What asking to cancel a run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelRequest {
    /// The run is now being cancelled: its regular stages stop, its `finally` stages still run
    /// (each for at most [`FINALLY_GRACE_SECS`]).
    First,
    /// It was already being cancelled: the caller should stop its `finally` stages too.
    Again,
    /// The run had already ended.
    Ended,
}

/// How long each `finally` stage of a cancelled run may take: cleanup runs, but a cancel still
/// ends the run within a bounded time.
pub const FINALLY_GRACE_SECS: i32 = 600;

/// Marks the run as being cancelled by `by` (the first canceller is kept), and bounds the
/// time its `finally` stages may take.
pub async fn request_cancel(
    db: &mut sqlx::PgConnection,
    id: RunId,
    by: Option<&str>,
) -> Result<CancelRequest> {
    let before = sqlx::query_scalar!(
        "WITH old AS (SELECT id, cancel_requested FROM runs WHERE id = $1 FOR UPDATE)
         UPDATE runs r SET cancel_requested = true, dirty = true,
                           cancelled_by = COALESCE(r.cancelled_by, $2)
         FROM old WHERE r.id = old.id AND r.status IN ('queued', 'running')
         RETURNING old.cancel_requested",
        id.0,
        by
    )
    .fetch_optional(&mut *db)
    .await?;
    let Some(already) = before else {
        return Ok(CancelRequest::Ended);
    };
    sqlx::query!(
        "UPDATE stage_runs SET timeout_secs = LEAST(COALESCE(timeout_secs, $2), $2)
         WHERE run_id = $1 AND finally AND status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled', 'timed_out')",
        id.0,
        FINALLY_GRACE_SECS
    )
    .execute(&mut *db)
    .await?;
    Ok(if already {
        CancelRequest::Again
    } else {
        CancelRequest::First
    })
}

/// Active runs of the same concurrency group older than `id`, for cancel-in-progress.
pub async fn older_active_in_group(
    db: impl PgExecutor<'_>,
    pipeline: PipelineId,
    group: &str,
    id: RunId,
) -> Result<Vec<RunId>> {
    let ids = sqlx::query_scalar!(
        r#"SELECT id AS "id: RunId" FROM runs
           WHERE pipeline_id = $1 AND concurrency_group = $2 AND id < $3
             AND status IN ('queued', 'running') AND NOT cancel_requested"#,
        pipeline.0,
        group,
        id.0
    )
    .fetch_all(db)
    .await?;
    Ok(ids)
}

/// Run counts by status, for /metrics.
pub async fn count_by_status(db: impl PgExecutor<'_>) -> Result<Vec<(RunStatus, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT status AS "status: RunStatus", count(*) AS "n!" FROM runs GROUP BY status"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
}

/// An older run of the same concurrency group that has not ended, which `id` must wait for.
pub async fn blocking_in_group(db: impl PgExecutor<'_>, id: RunId) -> Result<Option<RunId>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT o.id AS "id: RunId" FROM runs r
           JOIN runs o ON o.pipeline_id = r.pipeline_id AND o.concurrency_group = r.concurrency_group
           WHERE r.id = $1 AND r.concurrency_group IS NOT NULL AND o.concurrency_group IS NOT NULL
             AND o.id < r.id AND o.status IN ('queued', 'running')
           ORDER BY o.id LIMIT 1"#,
        id.0
    )
    .fetch_optional(db)
    .await?)
}

/// When a run ends, the runs of its concurrency group waiting for it may start.
pub async fn wake_group(db: impl PgExecutor<'_>, ended: RunId) -> Result<()> {
    sqlx::query!(
        "UPDATE runs n SET dirty = true FROM runs e
         WHERE e.id = $1 AND e.concurrency_group IS NOT NULL AND n.concurrency_group IS NOT NULL
           AND n.pipeline_id = e.pipeline_id AND n.concurrency_group = e.concurrency_group
           AND n.status = 'queued' AND n.id <> e.id",
        ended.0
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A run that failed before it had stages: its pipeline file does not parse. It is stored
/// finished, with the problems as its reason, so the failure is visible like any run's.
pub async fn create_failed(
    tx: &mut sqlx::PgConnection,
    pipeline: PipelineId,
    version: VersionId,
    trigger: &str,
    context: &serde_json::Value,
    reason: &str,
) -> Result<(RunId, i32)> {
    let number = sqlx::query_scalar!(
        "UPDATE pipelines SET last_run_number = last_run_number + 1 WHERE id = $1 RETURNING last_run_number",
        pipeline.0
    )
    .fetch_one(&mut *tx)
    .await?;
    let id = sqlx::query_scalar!(
        r#"INSERT INTO runs (pipeline_id, version_id, number, trigger, context, status, reason, dirty,
                             started_at, finished_at)
           VALUES ($1, $2, $3, $4, $5, 'failed', $6, false, now(), now()) RETURNING id AS "id: RunId""#,
        pipeline.0,
        version.0,
        number,
        trigger,
        context,
        reason,
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok((id, number))
}

/// A run whose commit status the provider has not been told yet.
#[derive(Clone, Debug)]
pub struct StatusDue {
    pub id: RunId,
    pub pipeline: String,
    pub number: i32,
    pub status: RunStatus,
    pub reason: Option<String>,
    pub context: serde_json::Value,
    pub reported: Option<String>,
    pub attempts: i32,
    pub repository_id: i64,
}

/// Leases, for `lease_secs`, the oldest run whose commit status lags behind its state for each
/// repository not in `busy` (at most `limit` repositories): one report per repository at a
/// time, every repository in turn, so one repository's backlog or hanging API holds back no
/// other. Runs about a repository's commit (started by a webhook, a schedule or by hand) only.
/// `state_of` in SQL mirrors `commit_status::state_for`: pending while queued or running.
pub async fn lease_statuses_due(
    db: impl PgExecutor<'_>,
    busy: &[i64],
    limit: i64,
    lease_secs: f64,
) -> Result<Vec<StatusDue>> {
    Ok(sqlx::query_as!(
        StatusDue,
        // Repository by repository (a registered few), each one's oldest due run through
        // `runs_status_due`: the cost is per repository and pipeline, not per run waiting, so a
        // flood of queued runs does not make every pass read them all.
        r#"WITH due AS (
               SELECT oldest.id
               FROM repositories g
               CROSS JOIN LATERAL (
                   SELECT d.id FROM pipelines p
                   CROSS JOIN LATERAL (
                       SELECT r.id FROM runs r
                       WHERE r.pipeline_id = p.id
                         AND (r.context ? 'repository_id') AND r.status_attempts < 8
                         AND r.status_reported IS DISTINCT FROM 'final'
                         AND r.status_reported IS DISTINCT FROM
                             (CASE WHEN r.status IN ('queued', 'running') THEN 'pending' ELSE 'final' END)
                         AND (r.status_next_at IS NULL OR r.status_next_at <= now())
                         AND (r.status_lease_until IS NULL OR r.status_lease_until < now())
                       ORDER BY r.id LIMIT 1) d
                   WHERE p.repository_id = g.id
                   ORDER BY d.id LIMIT 1) oldest
               WHERE g.id <> ALL($1)
               ORDER BY oldest.id
               LIMIT $2)
           UPDATE runs r SET status_lease_until = now() + make_interval(secs => $3)
           FROM pipelines p
           WHERE r.id IN (SELECT id FROM due) AND p.id = r.pipeline_id
             AND (r.status_lease_until IS NULL OR r.status_lease_until < now())
           RETURNING r.id AS "id: RunId", p.name AS pipeline, r.number,
                     r.status AS "status: RunStatus", r.reason, r.context,
                     r.status_reported AS reported, r.status_attempts AS attempts,
                     p.repository_id AS "repository_id!""#,
        busy,
        limit,
        lease_secs
    )
    .fetch_all(db)
    .await?)
}

/// The run's status now (a report computes what to post at the moment it posts, not when the
/// run was picked, so a run that ended meanwhile is never reported as pending).
pub async fn status_now(db: impl PgExecutor<'_>, id: RunId) -> Result<(RunStatus, Option<String>)> {
    let row = sqlx::query!(
        r#"SELECT status AS "status: RunStatus", reason FROM runs WHERE id = $1"#,
        id.0
    )
    .fetch_one(db)
    .await?;
    Ok((row.status, row.reason))
}

/// Whether a newer run of the same pipeline about the same commit has had a status reported:
/// this run's (older) state must then not be posted over it.
pub async fn superseded_status(db: impl PgExecutor<'_>, id: RunId) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (
               SELECT 1 FROM runs r JOIN runs n ON n.pipeline_id = r.pipeline_id
                 AND n.context->>'commit_sha' = r.context->>'commit_sha'
               WHERE r.id = $1 AND n.id > r.id AND n.status_reported IS NOT NULL
           ) AS "superseded!""#,
        id.0
    )
    .fetch_one(db)
    .await?)
}

/// Records a report (ending the lease). A `final` report is never replaced by `pending`.
pub async fn status_reported(db: impl PgExecutor<'_>, id: RunId, reported: &str) -> Result<()> {
    sqlx::query!(
        "UPDATE runs SET status_reported = CASE WHEN status_reported = 'final' THEN 'final' ELSE $2 END,
                         status_attempts = 0, status_next_at = NULL, status_error = NULL,
                         status_lease_until = NULL
         WHERE id = $1",
        id.0,
        reported
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A failed report: tried again after a growing delay, up to a limit.
pub async fn status_failed(
    db: impl PgExecutor<'_>,
    id: RunId,
    error: &str,
    retry_secs: f64,
) -> Result<()> {
    sqlx::query!(
        "UPDATE runs SET status_attempts = status_attempts + 1, status_error = $2,
                         status_next_at = now() + make_interval(secs => $3),
                         status_lease_until = NULL WHERE id = $1",
        id.0,
        error,
        retry_secs
    )
    .execute(db)
    .await?;
    Ok(())
}
