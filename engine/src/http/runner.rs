//! The runner API (`/api/runner/v1`): what `gantry-runner` calls while it executes a stage
//! attempt. Every call is authorised by the attempt's token; a runner of an earlier attempt
//! gets 409 so it stops instead of overwriting the current one. The handlers only check the
//! token and translate: what the reports mean is [`crate::attempt`] and [`crate::artifact`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gantry_runner::wire::{
    self, Completion, HeartbeatReply, LogAck, StepFinished, StepReport, StepStarted,
};
use serde::Deserialize;

use super::error::ApiError;
use crate::artifact;
use crate::attempt::{self, LogsTaken};
use crate::engine::Engine;
use crate::store::artifacts;
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

async fn spec(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
) -> Result<Json<wire::StageSpec>, ApiError> {
    Ok(Json(attempt::spec(&engine, &grant).await?))
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
    Ok(
        match attempt::append_logs(&engine, &grant, query.first_seq, &body).await? {
            LogsTaken::Acked { acked } => Json(LogAck { acked }).into_response(),
            LogsTaken::Gap { acked } => {
                (StatusCode::CONFLICT, Json(LogAck { acked })).into_response()
            }
        },
    )
}

async fn step_reports(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
    Json(reports): Json<Vec<StepReport>>,
) -> Result<StatusCode, ApiError> {
    attempt::report_steps(&engine, &grant, &reports).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /steps/start` of runners that report one step call at a time.
async fn step_started(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
    Json(step): Json<StepStarted>,
) -> Result<StatusCode, ApiError> {
    attempt::report_steps(&engine, &grant, &[StepReport::Started(step)]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /steps/finish` of runners that report one step call at a time.
async fn step_finished(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
    Json(step): Json<StepFinished>,
) -> Result<StatusCode, ApiError> {
    attempt::report_steps(&engine, &grant, &[StepReport::Finished(step)]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn heartbeat(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let cancel = attempt::heartbeat(&engine, &grant).await?;
    Ok(Json(HeartbeatReply { cancel }))
}

async fn download_artifact(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("`{id}` is not an artifact id")))?;
    let stored = artifacts::get(&engine.store.pool, id).await?;
    if !artifact::readable_by(&engine, &grant, stored.stage_run_id).await? {
        return Err(ApiError::NotFound(format!("artifact {id} not found")));
    }
    let stream = artifact::chunks(engine.store.pool.clone(), id);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/gzip")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn upload_artifact(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
    Path(name): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    artifact::upload(&engine, &grant, &name, body.into_data_stream()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn complete(
    State(engine): State<Arc<Engine>>,
    RunnerGrant(grant): RunnerGrant,
    Json(completion): Json<Completion>,
) -> Result<StatusCode, ApiError> {
    attempt::complete(&engine, &grant, &completion).await?;
    Ok(StatusCode::NO_CONTENT)
}
