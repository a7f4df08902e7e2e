//! The runner API (`/api/runner/v1`): what `gantry-runner` calls while it executes a stage
//! attempt. Every call is authorised by the attempt's token; a runner of an earlier attempt
//! gets 409 so it stops instead of overwriting the current one.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use gantry_runner::wire::{
    self, Completion, HeartbeatReply, LogAck, LogTail, Outcome, StepFinished, StepReport,
    StepStarted,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::engine::Engine;
use crate::store::{self, StageRunId, StageStatus, artifacts, logs, stages};
use crate::token::Grant;

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/spec", get(spec))
        .route("/logs", post(append_logs))
        .route("/steps", post(step_reports))
        .route("/steps/start", post(step_started))
        .route("/steps/finish", post(step_finished))
        .route("/heartbeat", post(heartbeat))
        .route(
            "/artifacts/{id}",
            get(download_artifact).put(upload_artifact),
        )
        .route("/complete", post(complete))
        .layer(axum::extract::DefaultBodyLimit::max(
            wire::MAX_LOG_BATCH_BYTES + 1024,
        ))
}

/// The verified token of the calling runner.
pub struct RunnerGrant(pub Grant);

impl FromRequestParts<Arc<Engine>> for RunnerGrant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, engine: &Arc<Engine>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::Unauthorized("missing `Authorization: Bearer <runner token>`".into())
            })?;
        let token = header.strip_prefix("Bearer ").ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
        })?;
        let grant = engine
            .tokens
            .verify(token, chrono::Utc::now().timestamp())
            .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        Ok(RunnerGrant(grant))
    }
}

fn stale(grant: &Grant) -> ApiError {
    ApiError::Conflict(format!(
        "attempt {} of stage run {} is no longer current",
        grant.attempt, grant.stage_run
    ))
}

/// Fails unless the grant's attempt is the stage's current, running attempt.
async fn current(engine: &Engine, grant: &Grant) -> Result<stages::StageRunRow, ApiError> {
    let row = stages::get(&engine.store.pool, grant.stage_run).await?;
    if row.attempt != grant.attempt || row.status != StageStatus::Running {
        return Err(stale(grant));
    }
    Ok(row)
}

async fn spec(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
) -> Result<Json<wire::StageSpec>, ApiError> {
    let row = current(&engine, &grant).await?;
    match crate::spec::build(&engine, &row).await {
        Ok(spec) => Ok(Json(spec)),
        // The stage's own inputs are wrong (a secret that does not exist, a template without
        // a value, registry credentials that are not a docker config.json): no runner can do
        // better, so the attempt fails with the reason, where the user sees it, instead of as
        // "the runner ended without reporting".
        Err(crate::run::RunError::BadRequest(why)) => {
            let mut tx = engine.store.pool.begin().await?;
            stages::finish_attempt(
                &mut tx,
                grant.stage_run,
                grant.attempt,
                StageStatus::Failed,
                Some(&why),
            )
            .await?;
            store::wake(&mut *tx).await?;
            tx.commit().await?;
            Err(ApiError::Conflict(why))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct LogQuery {
    first_seq: u64,
}

async fn append_logs(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
    Query(query): Query<LogQuery>,
    body: String,
) -> Result<Response, ApiError> {
    if query.first_seq == 0 {
        return Err(ApiError::BadRequest("line numbers start at 1".into()));
    }
    let lines = wire::count_batch_lines(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut tx = engine.store.pool.begin().await?;
    let appended = logs::append(
        &mut tx,
        grant.stage_run,
        grant.attempt,
        query.first_seq,
        lines,
        &body,
    )
    .await?;
    tx.commit().await?;
    Ok(match appended {
        logs::Appended::Acked { acked } => {
            engine.metrics.add_log_bytes(body.len());
            Json(LogAck { acked }).into_response()
        }
        logs::Appended::Gap { acked } => {
            (StatusCode::CONFLICT, Json(LogAck { acked })).into_response()
        }
        logs::Appended::Stale => return Err(stale(&grant)),
    })
}

async fn step_reports(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
    Json(reports): Json<Vec<StepReport>>,
) -> Result<StatusCode, ApiError> {
    current(&engine, &grant).await?;
    let mut tx = engine.store.pool.begin().await?;
    record_steps(&mut tx, &grant, &reports).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /steps/start` of runners that report one step call at a time.
async fn step_started(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
    Json(step): Json<StepStarted>,
) -> Result<StatusCode, ApiError> {
    current(&engine, &grant).await?;
    let mut tx = engine.store.pool.begin().await?;
    record_steps(&mut tx, &grant, &[StepReport::Started(step)]).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /steps/finish` of runners that report one step call at a time.
async fn step_finished(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
    Json(step): Json<StepFinished>,
) -> Result<StatusCode, ApiError> {
    current(&engine, &grant).await?;
    let mut tx = engine.store.pool.begin().await?;
    record_steps(&mut tx, &grant, &[StepReport::Finished(step)]).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Records step reports in order; each is idempotent, so a resent report changes nothing.
async fn record_steps(
    tx: &mut sqlx::PgConnection,
    grant: &Grant,
    reports: &[StepReport],
) -> Result<(), ApiError> {
    let index = |i: u32| i32::try_from(i).unwrap_or(i32::MAX);
    for report in reports {
        match report {
            StepReport::Started(step) => {
                let started_at = step
                    .started_ms
                    .and_then(chrono::DateTime::from_timestamp_millis);
                stages::step_started(
                    &mut *tx,
                    grant.stage_run,
                    grant.attempt,
                    index(step.index),
                    &step.name,
                    i64::try_from(step.first_line).unwrap_or(i64::MAX),
                    started_at,
                )
                .await?;
            }
            StepReport::Finished(step) => {
                stages::step_finished(
                    &mut *tx,
                    grant.stage_run,
                    grant.attempt,
                    index(step.index),
                    step.exit_code,
                    i64::try_from(step.duration_ms).unwrap_or(i64::MAX),
                )
                .await?;
            }
        }
    }
    Ok(())
}

async fn heartbeat(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
) -> Result<Json<HeartbeatReply>, ApiError> {
    match stages::heartbeat(&engine.store.pool, grant.stage_run, grant.attempt).await? {
        Some(cancel) => Ok(Json(HeartbeatReply { cancel })),
        None => Err(stale(&grant)),
    }
}

/// Whether the calling attempt may read artifacts kept by `owner` (a stage of its own run, or
/// one whose result its run reused).
async fn may_read(engine: &Engine, grant: &Grant, owner: StageRunId) -> Result<bool, ApiError> {
    let me = stages::get(&engine.store.pool, grant.stage_run).await?;
    let all = stages::for_run(&engine.store.pool, me.run_id).await?;
    Ok(all
        .iter()
        .any(|s| s.id == owner || s.reused_from == Some(owner)))
}

async fn download_artifact(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("`{id}` is not an artifact id")))?;
    let artifact = artifacts::get(&engine.store.pool, id).await?;
    if !may_read(&engine, &grant, artifact.stage_run_id).await? {
        return Err(ApiError::NotFound(format!("artifact {id} not found")));
    }
    let pool = engine.store.pool.clone();
    let stream = artifact_chunks(pool, id);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/gzip")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Streams an artifact one stored chunk at a time, so memory stays at one chunk.
pub(crate) fn artifact_chunks(
    pool: sqlx::PgPool,
    id: i64,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send {
    futures_util::stream::unfold(Some(0i32), move |seq| {
        let pool = pool.clone();
        async move {
            let seq = seq?;
            match artifacts::chunk(&pool, id, seq).await {
                Ok(Some(data)) => Some((Ok(data), Some(seq + 1))),
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(e)), None)),
            }
        }
    })
}

async fn upload_artifact(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
    Path(name): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    current(&engine, &grant).await?;
    let mut tx = engine.store.pool.begin().await?;
    let id = artifacts::begin(&mut tx, grant.stage_run, &name).await?;
    let mut stream = body.into_data_stream();
    let mut pending: Vec<u8> = Vec::with_capacity(artifacts::CHUNK_BYTES);
    let mut hasher = Sha256::new();
    let mut size: i64 = 0;
    let mut seq = 0i32;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| ApiError::BadRequest(format!("reading the upload: {e}")))?;
        hasher.update(&piece);
        size += i64::try_from(piece.len()).unwrap_or(0);
        pending.extend_from_slice(&piece);
        while pending.len() >= artifacts::CHUNK_BYTES {
            let rest = pending.split_off(artifacts::CHUNK_BYTES);
            artifacts::add_chunk(&mut *tx, id, seq, &pending).await?;
            seq += 1;
            pending = rest;
        }
    }
    if !pending.is_empty() {
        artifacts::add_chunk(&mut *tx, id, seq, &pending).await?;
    }
    artifacts::complete(&mut *tx, id, size, &hex::encode(hasher.finalize())).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn complete(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
    Json(completion): Json<Completion>,
) -> Result<StatusCode, ApiError> {
    let mut status = match completion.outcome {
        Outcome::Succeeded => StageStatus::Succeeded,
        Outcome::Failed => StageStatus::Failed,
        Outcome::Cancelled => StageStatus::Cancelled,
        Outcome::TimedOut => StageStatus::TimedOut,
    };
    let mut reason = completion.reason.clone();
    // Asked before the transaction: the executor may take a moment to answer.
    if status == StageStatus::Cancelled {
        let row = stages::get(&engine.store.pool, grant.stage_run).await?;
        if !row.cancel_requested
            && let Some((why_status, why)) = stopped_from_outside(&engine, &row).await
        {
            (status, reason) = (why_status, Some(why));
        }
    }
    // The tail, the step reports and the end are one transaction: a completion is either
    // recorded whole or not at all, and a resent one finds everything already there.
    let mut tx = engine.store.pool.begin().await?;
    if let Some(tail) = &completion.tail {
        append_tail(&engine, &mut tx, &grant, tail).await?;
    }
    record_steps(&mut tx, &grant, &completion.steps).await?;
    let row = stages::get(&mut *tx, grant.stage_run).await?;
    if u64::try_from(row.log_lines).unwrap_or(0) < completion.lines && row.attempt == grant.attempt
    {
        return Err(ApiError::Conflict(format!(
            "{} log lines were reported but only {} stored; send the rest first",
            completion.lines, row.log_lines
        )));
    }
    if let (Outcome::Succeeded, Some(image)) = (completion.outcome, &completion.image) {
        stages::set_image(&mut *tx, grant.stage_run, grant.attempt, image).await?;
    }
    let ended = stages::finish_attempt(
        &mut tx,
        grant.stage_run,
        grant.attempt,
        status,
        reason.as_deref(),
    )
    .await?;
    store::wake(&mut *tx).await?;
    tx.commit().await?;
    match ended {
        Some(s) => {
            // This process's scheduler need not wait for its own NOTIFY to come back round.
            engine.wake.notify_one();
            engine
                .metrics
                .stage_duration
                .observe_between(row.started_at, Some(chrono::Utc::now()));
            tracing::info!(stage = %row.key, attempt = grant.attempt, status = s.as_str(), "stage attempt completed");
            Ok(StatusCode::NO_CONTENT)
        }
        // Completing twice (a retried request) is fine if it is the same attempt.
        None if row.attempt == grant.attempt && row.status.is_terminal() => {
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(stale(&grant)),
    }
}

/// Stores the log lines a completion carries, like a log batch.
async fn append_tail(
    engine: &Engine,
    tx: &mut sqlx::PgConnection,
    grant: &Grant,
    tail: &LogTail,
) -> Result<(), ApiError> {
    if tail.first_seq == 0 {
        return Err(ApiError::BadRequest("line numbers start at 1".into()));
    }
    let lines =
        wire::count_batch_lines(&tail.lines).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if lines == 0 {
        return Ok(());
    }
    match logs::append(
        tx,
        grant.stage_run,
        grant.attempt,
        tail.first_seq,
        lines,
        &tail.lines,
    )
    .await?
    {
        logs::Appended::Acked { .. } => {
            engine.metrics.add_log_bytes(tail.lines.len());
            Ok(())
        }
        logs::Appended::Gap { acked } => Err(ApiError::Conflict(format!(
            "the completion's log lines start at line {} but only lines up to {acked} are stored",
            tail.first_seq
        ))),
        logs::Appended::Stale => Err(stale(grant)),
    }
}

/// A runner that stops as cancelled although nobody cancelled its stage was stopped from
/// outside (its pod deleted, its Job past its deadline): the executor may tell why, and that
/// is the stage's outcome rather than a cancel.
async fn stopped_from_outside(
    engine: &Engine,
    row: &stages::StageRunRow,
) -> Option<(StageStatus, String)> {
    let (name, handle) = (row.executor.as_deref()?, row.executor_handle.as_deref()?);
    let executor = engine.executor(name)?;
    // A Job's executor learns of the deletion or deadline from its watch, which may lag the
    // runner's SIGTERM by a moment: look again for a little while.
    let looks = if executor.wants_pod() { 20 } else { 1 };
    for _ in 0..looks {
        match executor.observe(handle).await {
            Ok(crate::executor::Observation::Failed { reason, timed_out }) => {
                let status = if timed_out {
                    StageStatus::TimedOut
                } else {
                    StageStatus::Failed
                };
                return Some((status, reason));
            }
            Ok(crate::executor::Observation::Running) if looks > 1 => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            _ => return None,
        }
    }
    None
}
