//! The public JSON API (`/api/v1`). Handlers are thin: parse, call the domain, map the result.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::engine::Engine;
use crate::run::{self, TriggerRequest};
use crate::store::{self, PipelineId, RunId, pipelines, runs, stages};

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/pipelines", get(list_pipelines))
        .route("/projects/{project}/pipelines", post(apply_pipeline))
        .route(
            "/projects/{project}/pipelines/{name}/runs",
            post(trigger).get(pipeline_runs),
        )
        .route("/projects/{project}/secrets", get(list_secrets))
        .route("/projects/{project}/secrets/{name}", put(put_secret))
        .route("/runs", get(list_runs))
        .route("/runs/{id}", get(get_run))
        .route("/runs/{id}/cancel", post(cancel_run))
        .route("/runs/{id}/rerun", post(rerun))
        .route("/runs/{id}/artifacts", get(run_artifacts))
        .route("/runs/{id}/stages/{key}", get(get_stage))
        .route("/runs/{id}/stages/{key}/cancel", post(cancel_stage))
        .route("/runs/{id}/stages/{key}/approve", post(approve))
        .route("/runs/{id}/stages/{key}/reject", post(reject))
        .route("/runs/{id}/stages/{key}/logs", get(stage_logs))
        .route("/runs/{id}/stages/{key}/logs/stream", get(follow_logs))
}

fn run_id(text: &str) -> Result<RunId, ApiError> {
    text.parse()
        .map(RunId)
        .map_err(|_| ApiError::BadRequest(format!("`{text}` is not a run id")))
}

async fn list_pipelines(
    State(engine): State<Arc<Engine>>,
) -> Result<Json<Vec<pipelines::PipelineRow>>, ApiError> {
    Ok(Json(pipelines::list(&engine.store.pool).await?))
}

#[derive(Deserialize)]
struct ApplyQuery {
    /// The file name shown in validation messages.
    file: Option<String>,
}

/// Body: the pipeline YAML.
async fn apply_pipeline(
    State(engine): State<Arc<Engine>>,
    Path(project): Path<String>,
    Query(query): Query<ApplyQuery>,
    yaml: String,
) -> Result<(StatusCode, Json<run::Applied>), ApiError> {
    let file = query.file.as_deref().unwrap_or(".gantry.yaml");
    let applied = run::apply(&engine, &project, file, &yaml).await?;
    let status = if applied.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(applied)))
}

async fn trigger(
    State(engine): State<Arc<Engine>>,
    Path((project, name)): Path<(String, String)>,
    body: Option<Json<TriggerRequest>>,
) -> Result<(StatusCode, Json<run::Triggered>), ApiError> {
    let request = body.map(|Json(b)| b).unwrap_or_default();
    let triggered = run::trigger(&engine, &project, &name, "manual", request).await?;
    Ok((StatusCode::CREATED, Json(triggered)))
}

#[derive(Deserialize)]
struct Page {
    before: Option<i64>,
    limit: Option<i64>,
    pipeline: Option<i64>,
}

async fn pipeline_runs(
    State(engine): State<Arc<Engine>>,
    Path((project, name)): Path<(String, String)>,
    Query(page): Query<Page>,
) -> Result<Json<Vec<runs::RunRow>>, ApiError> {
    let pipeline = pipelines::find(&engine.store.pool, &project, &name).await?;
    let rows = runs::list(
        &engine.store.pool,
        Some(pipeline.id),
        page.before.map(RunId),
        page.limit.unwrap_or(50).clamp(1, 500),
    )
    .await?;
    Ok(Json(rows))
}

async fn list_runs(
    State(engine): State<Arc<Engine>>,
    Query(page): Query<Page>,
) -> Result<Json<Vec<runs::RunRow>>, ApiError> {
    Ok(Json(
        runs::list(
            &engine.store.pool,
            page.pipeline.map(PipelineId),
            page.before.map(RunId),
            page.limit.unwrap_or(50).clamp(1, 500),
        )
        .await?,
    ))
}

#[derive(Serialize)]
struct RunView {
    #[serde(flatten)]
    run: runs::RunRow,
    stages: Vec<stages::StageRunRow>,
}

async fn get_run(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let id = run_id(&id)?;
    let run = runs::get(&engine.store.pool, id).await?;
    let stages = stages::for_run(&engine.store.pool, id).await?;
    Ok(Json(RunView { run, stages }))
}

#[derive(Serialize)]
struct StageView {
    #[serde(flatten)]
    stage: stages::StageRunRow,
    steps: Vec<stages::StepRow>,
}

async fn get_stage(
    State(engine): State<Arc<Engine>>,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<StageView>, ApiError> {
    let stage = stages::find(&engine.store.pool, run_id(&id)?, &key).await?;
    let steps = stages::steps(&engine.store.pool, stage.id).await?;
    Ok(Json(StageView { stage, steps }))
}

async fn cancel_run(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    run::cancel(&engine, run_id(&id)?, None).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn cancel_stage(
    State(engine): State<Arc<Engine>>,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = run_id(&id)?;
    let stage = stages::find(&engine.store.pool, id, &key).await?;
    run::cancel(&engine, id, Some(stage.id)).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, Default)]
struct RerunBody {
    #[serde(default)]
    failed_only: bool,
}

async fn rerun(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    body: Option<Json<RerunBody>>,
) -> Result<(StatusCode, Json<run::Triggered>), ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let triggered = run::rerun(&engine, run_id(&id)?, body.failed_only).await?;
    Ok((StatusCode::CREATED, Json(triggered)))
}

#[derive(Deserialize, Default)]
struct ApprovalBody {
    /// Who decides (until users arrive with the access-control issue, the caller names itself).
    by: Option<String>,
}

async fn approve(
    State(engine): State<Arc<Engine>>,
    Path((id, key)): Path<(String, String)>,
    body: Option<Json<ApprovalBody>>,
) -> Result<StatusCode, ApiError> {
    record_approval(&engine, &id, &key, body, true).await
}

async fn reject(
    State(engine): State<Arc<Engine>>,
    Path((id, key)): Path<(String, String)>,
    body: Option<Json<ApprovalBody>>,
) -> Result<StatusCode, ApiError> {
    record_approval(&engine, &id, &key, body, false).await
}

/// Approve and reject differ only in the verdict.
async fn record_approval(
    engine: &Engine,
    id: &str,
    key: &str,
    body: Option<Json<ApprovalBody>>,
    approve: bool,
) -> Result<StatusCode, ApiError> {
    let by = body
        .and_then(|Json(b)| b.by)
        .unwrap_or_else(|| "anonymous".into());
    run::decide_approval(engine, run_id(id)?, key, &by, approve).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct LogQuery {
    /// Which attempt (default: the current one).
    attempt: Option<i32>,
    /// Follow from after this line (SSE clients send `Last-Event-ID` instead).
    after: Option<i64>,
}

/// Whose log a stage shows: a stage reused by a rerun shows the run that actually ran it.
fn log_owner(stage: &stages::StageRunRow) -> store::StageRunId {
    stage.reused_from.unwrap_or(stage.id)
}

async fn stage_logs(
    State(engine): State<Arc<Engine>>,
    Path((id, key)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let stage = stages::find(&engine.store.pool, run_id(&id)?, &key).await?;
    let attempt = query.attempt.unwrap_or(stage.attempt.max(1));
    let body = super::logs::plain(Arc::clone(&engine), log_owner(&stage), attempt);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

async fn follow_logs(
    State(engine): State<Arc<Engine>>,
    Path((id, key)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let stage = stages::find(&engine.store.pool, run_id(&id)?, &key).await?;
    let attempt = query.attempt.unwrap_or(stage.attempt.max(1));
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or(query.after)
        .unwrap_or(0);
    Ok(super::logs::follow(Arc::clone(&engine), log_owner(&stage), attempt, after).into_response())
}

async fn run_artifacts(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<store::artifacts::ArtifactRow>>, ApiError> {
    let rows = stages::for_run(&engine.store.pool, run_id(&id)?).await?;
    let ids: Vec<i64> = rows
        .iter()
        .map(|s| s.reused_from.unwrap_or(s.id).0)
        .collect();
    Ok(Json(
        store::artifacts::of_stages(&engine.store.pool, &ids).await?,
    ))
}

async fn list_secrets(
    State(engine): State<Arc<Engine>>,
    Path(project): Path<String>,
) -> Result<Json<Vec<store::secrets::SecretInfo>>, ApiError> {
    let project = pipelines::project_id(&engine.store.pool, &project).await?;
    Ok(Json(
        store::secrets::list(&engine.store.pool, project).await?,
    ))
}

/// Body: the secret's value. Secrets are write-only: no route returns a value.
async fn put_secret(
    State(engine): State<Arc<Engine>>,
    Path((project, name)): Path<(String, String)>,
    value: String,
) -> Result<StatusCode, ApiError> {
    if !crate::pipeline::decode::is_valid_name(&name) {
        return Err(ApiError::BadRequest(format!(
            "secret name `{name}` is not valid"
        )));
    }
    let project = pipelines::ensure_project(&engine.store.pool, &project).await?;
    let (nonce, ciphertext) = engine.secrets.encrypt(value.as_bytes());
    store::secrets::put(&engine.store.pool, project, &name, &nonce, &ciphertext).await?;
    Ok(StatusCode::NO_CONTENT)
}
