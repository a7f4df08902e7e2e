//! The public JSON API (`/api/v1`). Handlers are thin: parse, check the caller's permission
//! (`access::require`, the same check the UI makes), call the domain, map the result.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use super::error::Input;
use super::error::{ApiError, ErrorBody, Path, Query, Text};
use super::openapi::{
    ArtifactPath, Conflict, DeploymentPath, Forbidden, Gzip, Internal, LastEventId, NotFound,
    PipelinePath, ProjectPath, RunNumberPath, RunPath, SecretPath, SecretValue, SseEvent,
    StagePath, Unauthorized, Unprocessable,
};
use super::users;
use crate::access::{self, Action, Principal};
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
        .route(
            "/projects/{project}/pipelines/{name}/runs/{number}",
            get(get_run_by_number),
        )
        .route("/projects/{project}/secrets", get(list_secrets))
        .route("/projects/{project}/secrets/{name}", put(put_secret))
        .route("/runs", get(list_runs))
        .route("/runs/{id}", get(get_run))
        .route("/runs/{id}/cancel", post(cancel_run))
        .route("/runs/{id}/rerun", post(rerun))
        .route("/runs/{id}/artifacts", get(run_artifacts))
        .route("/runs/{id}/artifacts/{artifact}", get(download_artifact))
        .route("/runs/{id}/events", get(run_events))
        .route("/runs/{id}/stages/{key}", get(get_stage))
        .route("/runs/{id}/stages/{key}/cancel", post(cancel_stage))
        .route("/runs/{id}/stages/{key}/approve", post(approve))
        .route("/runs/{id}/stages/{key}/reject", post(reject))
        .route("/runs/{id}/stages/{key}/logs", get(stage_logs))
        .route("/runs/{id}/stages/{key}/logs/stream", get(follow_logs))
        .route("/me", get(users::me))
        .route("/projects", get(users::projects))
        .route("/projects/{project}", put(users::put_project))
        .route("/projects/{project}/members", get(users::members))
        .route(
            "/projects/{project}/members/{user}",
            put(users::put_member).delete(users::remove_member),
        )
        .route("/users", get(users::list_users).post(users::create_user))
        .route("/users/{name}/password", put(users::set_password))
        .route("/tokens", get(users::list_tokens).post(users::create_token))
        .route("/tokens/{id}", delete(users::delete_token))
        .route("/projects/{project}/deployments", get(deployment_targets))
        .route(
            "/projects/{project}/deployments/{namespace}/{name}/history",
            get(deployment_history),
        )
        .route(
            "/projects/{project}/deployments/{namespace}/{name}/undo",
            post(deployment_undo),
        )
        .fallback(no_such_route)
}

/// A path under `/api/v1` that no route takes (an empty segment, say) answers with the JSON
/// error like every other 404: axum's own has no body and no content type.
async fn no_such_route(axum::extract::OriginalUri(uri): axum::extract::OriginalUri) -> ApiError {
    ApiError::NotFound(format!("no API route is {}", uri.path()))
}

/// Loads a run and checks that `who` may do `action` in its project.
pub async fn authorized_run(
    engine: &Engine,
    who: &Principal,
    id: &str,
    action: Action,
) -> Result<(runs::RunRow, access::Granted), ApiError> {
    let run = runs::get(&engine.store.pool, run_id(id)?).await?;
    let granted = access::require(&engine.store.pool, who, &run.project, action).await?;
    Ok((run, granted))
}

fn cluster(engine: &Engine) -> Result<&kube::Client, ApiError> {
    engine
        .kube
        .as_ref()
        .ok_or_else(|| crate::deploy::DeployError::NoCluster.into())
}

/// The Deployments the project's pipelines roll out to.
#[utoipa::path(
    get, path = "/projects/{project}/deployments", tag = "deployments", operation_id = "deploymentTargets",
    summary = "The Deployments the project's pipelines roll out to.",
    params(ProjectPath),
    responses(
        (status = 200, description = "The Deployments.", body = Vec<crate::deploy::Target>),
        (status = 404, response = NotFound),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn deployment_targets(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(project): Path<String>,
) -> Result<Json<Vec<crate::deploy::Target>>, ApiError> {
    access::require(&engine.store.pool, &who, &project, Action::Read).await?;
    Ok(Json(crate::deploy::targets(&engine, &project).await?))
}

/// Checks `action` in `project`, and that a pipeline of the project deploys to the
/// Deployment: a project's members steer only their own Deployments.
pub(crate) async fn authorized_deployment<'e>(
    engine: &'e Engine,
    who: &Principal,
    project: &str,
    namespace: &str,
    name: &str,
    action: Action,
) -> Result<&'e kube::Client, ApiError> {
    access::require(&engine.store.pool, who, project, action).await?;
    let targets = crate::deploy::targets(engine, project).await?;
    if !targets
        .iter()
        .any(|t| t.namespace == namespace && t.deployment == name)
    {
        return Err(ApiError::NotFound(format!(
            "no pipeline of project `{project}` deploys to {namespace}/{name}"
        )));
    }
    cluster(engine)
}

/// `kubectl rollout history`: the Deployment's revisions, oldest first.
#[utoipa::path(
    get, path = "/projects/{project}/deployments/{namespace}/{name}/history", tag = "deployments", operation_id = "deploymentHistory",
    summary = "A Deployment's revisions (`kubectl rollout history`), oldest first.",
    params(DeploymentPath),
    responses(
        (status = 200, description = "The revisions.", body = Vec<crate::deploy::history::Revision>),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn deployment_history(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((project, namespace, name)): Path<(String, String, String)>,
) -> Result<Json<Vec<crate::deploy::history::Revision>>, ApiError> {
    let client =
        authorized_deployment(&engine, &who, &project, &namespace, &name, Action::Read).await?;
    Ok(Json(
        crate::deploy::history::history(client, &namespace, &name).await?,
    ))
}

#[derive(Deserialize, Default, ToSchema)]
pub(crate) struct UndoRequest {
    /// The revision to go back to; 0 (the default): the one before the current.
    #[serde(default)]
    #[schema(minimum = 0, default = 0)]
    to_revision: i64,
}

/// `kubectl rollout undo [--to-revision N]`.
#[utoipa::path(
    post, path = "/projects/{project}/deployments/{namespace}/{name}/undo", tag = "deployments", operation_id = "undoDeployment",
    summary = "Roll a Deployment back to an earlier revision (`kubectl rollout undo`).",
    params(DeploymentPath),
    request_body(content = Option<UndoRequest>, description = "The revision to go back to."),
    responses(
        (status = 200, description = "What was put back.", body = crate::deploy::history::Undone),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn deployment_undo(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((project, namespace, name)): Path<(String, String, String)>,
    body: Option<Input<UndoRequest>>,
) -> Result<Json<crate::deploy::history::Undone>, ApiError> {
    let client =
        authorized_deployment(&engine, &who, &project, &namespace, &name, Action::Deploy).await?;
    let request = body.map(|Input(b)| b).unwrap_or_default();
    if request.to_revision < 0 {
        return Err(ApiError::BadRequest(
            "`to_revision` must be 0 (the previous revision) or a revision number".into(),
        ));
    }
    Ok(Json(
        crate::deploy::history::undo(client, &namespace, &name, request.to_revision).await?,
    ))
}

fn run_id(text: &str) -> Result<RunId, ApiError> {
    text.parse()
        .map(RunId)
        .map_err(|_| ApiError::BadRequest(format!("`{text}` is not a run id")))
}

#[utoipa::path(
    get, path = "/pipelines", tag = "pipelines", operation_id = "listPipelines",
    summary = "Every pipeline of every project, with its newest version.",
    responses(
        (status = 200, description = "The pipelines.", body = Vec<pipelines::PipelineRow>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn list_pipelines(
    State(engine): State<Arc<Engine>>,
    who: Principal,
) -> Result<Json<Vec<pipelines::PipelineRow>>, ApiError> {
    let visible = access::readable_projects(&engine.store.pool, &who).await?;
    Ok(Json(
        pipelines::list(&engine.store.pool, visible.as_deref()).await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ApplyQuery {
    /// The file name shown in validation messages (default `.gantry.yaml`).
    file: Option<String>,
}

/// Body: the pipeline YAML.
#[utoipa::path(
    post, path = "/projects/{project}/pipelines", tag = "pipelines", operation_id = "applyPipeline",
    summary = "Validate a pipeline file and store it as its pipeline's newest version (unless it is identical to the newest). Creates the project and pipeline if needed.",
    params(ProjectPath, ApplyQuery),
    request_body(
        description = "The pipeline file (YAML).",
        content((String = "application/yaml"), (String = "text/plain"))
    ),
    responses(
        (status = 201, description = "Stored as a new version.", body = run::Applied),
        (status = 200, description = "Identical to the newest version; nothing stored.", body = run::Applied),
        (status = 422, description = "The file is not a valid pipeline: `problems` lists every problem as `FILE:LINE:COL: message`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn apply_pipeline(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(project): Path<String>,
    Query(query): Query<ApplyQuery>,
    Text(yaml): Text,
) -> Result<(StatusCode, Json<run::Applied>), ApiError> {
    access::require(&engine.store.pool, &who, &project, Action::EditPipeline).await?;
    let file = query.file.as_deref().unwrap_or(".gantry.yaml");
    let applied = run::apply(&engine, &project, file, &yaml).await?;
    let status = if applied.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(applied)))
}

#[utoipa::path(
    post, path = "/projects/{project}/pipelines/{name}/runs", tag = "runs", operation_id = "triggerRun",
    summary = "Start a run of the pipeline's newest version.",
    params(PipelinePath),
    request_body(
        content = Option<TriggerRequest>,
        description = "Params and the event the run is about (default: a manual run with the params' defaults)."
    ),
    responses(
        (status = 201, description = "The run was created.", body = run::Triggered),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn trigger(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((project, name)): Path<(String, String)>,
    body: Option<Input<TriggerRequest>>,
) -> Result<(StatusCode, Json<run::Triggered>), ApiError> {
    access::require(&engine.store.pool, &who, &project, Action::Trigger).await?;
    let request = body.map(|Input(b)| b).unwrap_or_default();
    let by = who.user().map(|u| u.name.as_str());
    let triggered = run::trigger_by(&engine, &project, &name, "manual", request, by).await?;
    Ok((StatusCode::CREATED, Json(triggered)))
}

/// A page of runs, newest first.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Page {
    /// Only runs with a smaller id (to page backwards).
    before: Option<i64>,
    /// How many runs (1-500, default 50).
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
}

/// Which runs `GET /runs` lists.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunFilter {
    /// Only runs of the pipeline with this id.
    pipeline: Option<i64>,
    /// Only runs of this project (the caller must be able to read it).
    project: Option<String>,
}

impl Page {
    /// The page size asked for (default 50): 1 to 500, anything else is refused.
    fn limit(&self) -> Result<i64, ApiError> {
        page_limit(self.limit)
    }
}

/// A page size: 1 to 500, 50 when not given.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(50),
        Some(n @ 1..=500) => Ok(n),
        Some(other) => Err(ApiError::BadRequest(format!(
            "limit is {other}; give 1 to 500"
        ))),
    }
}

#[utoipa::path(
    get, path = "/projects/{project}/pipelines/{name}/runs", tag = "runs", operation_id = "listPipelineRuns",
    summary = "Runs of one pipeline, newest first.",
    params(PipelinePath, Page),
    responses(
        (status = 200, description = "The runs.", body = Vec<runs::RunRow>),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn pipeline_runs(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((project, name)): Path<(String, String)>,
    Query(page): Query<Page>,
) -> Result<Json<Vec<runs::RunRow>>, ApiError> {
    access::require(&engine.store.pool, &who, &project, Action::Read).await?;
    let pipeline = pipelines::find(&engine.store.pool, &project, &name).await?;
    let rows = runs::list(
        &engine.store.pool,
        Some(pipeline.id),
        page.before.map(RunId),
        page.limit()?,
        None,
    )
    .await?;
    Ok(Json(rows))
}

#[utoipa::path(
    get, path = "/runs", tag = "runs", operation_id = "listRuns",
    summary = "Runs of every pipeline the caller may read (or of one project), newest first.",
    params(Page, RunFilter),
    responses(
        (status = 200, description = "The runs.", body = Vec<runs::RunRow>),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn list_runs(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Query(page): Query<Page>,
    Query(filter): Query<RunFilter>,
) -> Result<Json<Vec<runs::RunRow>>, ApiError> {
    let limit = page.limit()?;
    let visible = match &filter.project {
        // One project: the caller must be able to read it (an unreadable one is refused, not
        // shown as empty).
        Some(project) => {
            access::require(&engine.store.pool, &who, project, Action::Read).await?;
            Some(vec![project.clone()])
        }
        None => access::readable_projects(&engine.store.pool, &who).await?,
    };
    Ok(Json(
        runs::list(
            &engine.store.pool,
            filter.pipeline.map(PipelineId),
            page.before.map(RunId),
            limit,
            visible.as_deref(),
        )
        .await?,
    ))
}

/// A run with its stages.
#[derive(Serialize, ToSchema)]
#[schema(as = RunDetail)]
pub(crate) struct RunView {
    #[serde(flatten)]
    run: runs::RunRow,
    /// The `description` of the pipeline version the run ran.
    #[schema(required)]
    description: Option<String>,
    stages: Vec<stages::StageRunRow>,
}

impl RunView {
    async fn of(engine: &Engine, run: runs::RunRow) -> Result<RunView, ApiError> {
        let stages = stages::for_run(&engine.store.pool, run.id).await?;
        let description = engine
            .plan(run.version_id)
            .await?
            .pipeline
            .description
            .clone();
        Ok(RunView {
            run,
            description,
            stages,
        })
    }
}

#[utoipa::path(
    get, path = "/runs/{id}", tag = "runs", operation_id = "getRun",
    summary = "A run with its stages.",
    params(RunPath),
    responses(
        (status = 200, description = "The run.", body = RunView),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn get_run(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let (run, _) = authorized_run(&engine, &who, &id, Action::Read).await?;
    Ok(Json(RunView::of(&engine, run).await?))
}

/// `PIPELINE#N`: a run by the number its pipeline gave it, readable by whoever may read
/// `GET /runs/{id}`.
#[utoipa::path(
    get, path = "/projects/{project}/pipelines/{name}/runs/{number}", tag = "runs", operation_id = "getRunByNumber",
    summary = "A run with its stages, by the number its pipeline gave it (`#N` in the web UI), for whoever may read `GET /runs/{id}`.",
    params(RunNumberPath),
    responses(
        (status = 200, description = "The run.", body = RunView),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn get_run_by_number(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((project, name, number)): Path<(String, String, String)>,
) -> Result<Json<RunView>, ApiError> {
    let number: i32 = number
        .trim_start_matches('#')
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("`{number}` is not a run number")))?;
    access::require(&engine.store.pool, &who, &project, Action::Read).await?;
    let pipeline = pipelines::find(&engine.store.pool, &project, &name).await?;
    let run = runs::by_number(&engine.store.pool, pipeline.id, number)
        .await
        .map_err(|e| match e {
            store::StoreError::NotFound(_) => {
                ApiError::NotFound(format!("pipeline {project}/{name} has no run #{number}"))
            }
            other => other.into(),
        })?;
    Ok(Json(RunView::of(&engine, run).await?))
}

/// A stage with its steps.
#[derive(Serialize, ToSchema)]
#[schema(as = StageDetail)]
pub(crate) struct StageView {
    #[serde(flatten)]
    stage: stages::StageRunRow,
    steps: Vec<stages::StepRow>,
}

#[utoipa::path(
    get, path = "/runs/{id}/stages/{key}", tag = "runs", operation_id = "getStage",
    summary = "One stage of a run with the steps of all its attempts.",
    params(StagePath),
    responses(
        (status = 200, description = "The stage.", body = StageView),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn get_stage(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<StageView>, ApiError> {
    let (run, _) = authorized_run(&engine, &who, &id, Action::Read).await?;
    let stage = stages::find(&engine.store.pool, run.id, &key).await?;
    let steps = stages::steps(&engine.store.pool, stage.id).await?;
    Ok(Json(StageView { stage, steps }))
}

#[utoipa::path(
    post, path = "/runs/{id}/cancel", tag = "runs", operation_id = "cancelRun",
    summary = "Cancel a run: stages not started are cancelled, running ones are stopped.",
    params(RunPath),
    responses(
        (status = 202, description = "Cancelling."),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn cancel_run(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (run, _) = authorized_run(&engine, &who, &id, Action::Cancel).await?;
    let by = who.user().map(|u| u.name.as_str());
    run::cancel(&engine, run.id, None, by).await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(
    post, path = "/runs/{id}/stages/{key}/cancel", tag = "runs", operation_id = "cancelStage",
    summary = "Cancel one stage: a running attempt is stopped, a waiting stage is cancelled.",
    params(StagePath),
    responses(
        (status = 202, description = "Cancelling."),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn cancel_stage(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (run, _) = authorized_run(&engine, &who, &id, Action::Cancel).await?;
    let stage = stages::find(&engine.store.pool, run.id, &key).await?;
    let by = who.user().map(|u| u.name.as_str());
    run::cancel(&engine, run.id, Some(stage.id), by).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, Default, ToSchema)]
#[schema(as = RerunRequest)]
pub(crate) struct RerunBody {
    /// Keep the results of stages that succeeded.
    #[serde(default)]
    #[schema(default = false)]
    failed_only: bool,
}

/// The body approve and reject take, and ignore: the signed-in caller is recorded as the one
/// who decided.
#[derive(ToSchema)]
pub struct ApprovalRequest {
    /// Ignored: the signed-in caller is recorded as the one who decided.
    pub by: Option<String>,
}

#[utoipa::path(
    post, path = "/runs/{id}/rerun", tag = "runs", operation_id = "rerunRun",
    summary = "Start a new run of the same pipeline version, params and commit.",
    params(RunPath),
    request_body(content = Option<RerunBody>, description = "Whether to rerun only what did not succeed."),
    responses(
        (status = 201, description = "The new run.", body = run::Triggered),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn rerun(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(id): Path<String>,
    body: Option<Input<RerunBody>>,
) -> Result<(StatusCode, Json<run::Triggered>), ApiError> {
    let (run, _) = authorized_run(&engine, &who, &id, Action::Rerun).await?;
    let body = body.map(|Input(b)| b).unwrap_or_default();
    let by = who.user().map(|u| u.name.as_str());
    let triggered = run::rerun(&engine, run.id, body.failed_only, by).await?;
    Ok((StatusCode::CREATED, Json(triggered)))
}

#[utoipa::path(
    post, path = "/runs/{id}/stages/{key}/approve", tag = "runs", operation_id = "approveStage",
    summary = "Approve a stage waiting for approval.",
    params(StagePath),
    request_body(content = Option<ApprovalRequest>, description = "Who decides."),
    responses(
        (status = 204, description = "Approved; the stage goes on."),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn approve(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    decide(&engine, &who, &id, &key, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/runs/{id}/stages/{key}/reject", tag = "runs", operation_id = "rejectStage",
    summary = "Reject a stage waiting for approval (it fails).",
    params(StagePath),
    request_body(content = Option<ApprovalRequest>, description = "Who decides."),
    responses(
        (status = 204, description = "Rejected; the stage failed."),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn reject(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    decide(&engine, &who, &id, &key, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Approve and reject differ only in the verdict; the signed-in user is recorded as the one
/// who decided. The stage's `approvers` (users, `role:NAME`) say who may; without them it
/// takes the Approve action (maintainers).
pub async fn decide(
    engine: &Engine,
    who: &Principal,
    id: &str,
    key: &str,
    approve: bool,
) -> Result<(), ApiError> {
    let (run, granted) = authorized_run(engine, who, id, Action::Read).await?;
    let approvers = approvers_of(engine, &run, key).await?;
    let user = who.require_user(true)?;
    if !access::may_approve(who, granted.role, &approvers) {
        return Err(ApiError::Forbidden(if approvers.is_empty() {
            format!(
                "`{}` may not approve stages in project `{}` (that needs the maintainer role)",
                user.name, run.project
            )
        } else {
            format!(
                "`{}` may not decide stage `{key}` (approvers: {})",
                user.name,
                approvers.join(", ")
            )
        }));
    }
    run::decide_approval(engine, run.id, key, &user.name, approve).await?;
    Ok(())
}

/// The `approvers` of a run's stage (empty when it names none or has no approval).
pub async fn approvers_of(
    engine: &Engine,
    run: &runs::RunRow,
    key: &str,
) -> Result<Vec<String>, ApiError> {
    let stage = stages::find(&engine.store.pool, run.id, key).await?;
    let plan = engine.plan(run.version_id).await?;
    let index = usize::try_from(stage.plan_index).unwrap_or(usize::MAX);
    Ok(plan
        .stages
        .get(index)
        .and_then(|p| plan.stage(p).approval.as_ref())
        .map(|a| a.approvers.clone())
        .unwrap_or_default())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// Which attempt (default: the current one).
    #[param(minimum = 1)]
    attempt: Option<i32>,
    /// Start after this line number (`Last-Event-ID` wins if both are given).
    #[param(minimum = 0)]
    after: Option<i64>,
}

impl LogQuery {
    /// The attempt asked for, or `current` (attempts count from 1), and the line to follow
    /// from (0: the start).
    fn checked(&self, current: i32) -> Result<(i32, Option<i64>), ApiError> {
        let attempt = match self.attempt {
            None => current.max(1),
            Some(n) if n >= 1 => n,
            Some(n) => {
                return Err(ApiError::BadRequest(format!(
                    "attempt is {n}; attempts count from 1"
                )));
            }
        };
        match self.after {
            Some(n) if n < 0 => Err(ApiError::BadRequest(format!(
                "after is {n}; give a line number (0 for the start)"
            ))),
            after => Ok((attempt, after)),
        }
    }
}

/// Whose log a stage shows: a stage reused by a rerun shows the run that actually ran it.
fn log_owner(stage: &stages::StageRunRow) -> store::StageRunId {
    stage.reused_from.unwrap_or(stage.id)
}

#[utoipa::path(
    get, path = "/runs/{id}/stages/{key}/logs", tag = "logs", operation_id = "getStageLog",
    summary = "The text of one attempt's log, streamed.",
    params(
        StagePath,
        ("attempt" = Option<i32>, Query, minimum = 1, description = "Which attempt (default: the current one)."),
    ),
    responses(
        (status = 200, description = "The log's lines, each ending in a newline.", body = String, content_type = "text/plain"),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn stage_logs(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((id, key)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let (run, _) = authorized_run(&engine, &who, &id, Action::Read).await?;
    let stage = stages::find(&engine.store.pool, run.id, &key).await?;
    let (attempt, _) = query.checked(stage.attempt)?;
    let body = super::logs::plain(Arc::clone(&engine), log_owner(&stage), attempt);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

#[utoipa::path(
    get, path = "/runs/{id}/stages/{key}/logs/stream", tag = "logs", operation_id = "followStageLog",
    summary = "Follow one attempt's log live over Server-Sent Events.",
    params(StagePath, LogQuery, LastEventId),
    responses(
        (status = 200,
            description = "An event stream. Each line is an event whose `id` is its line number and whose `data` is a `LogLine` as JSON; reconnect with `Last-Event-ID` to resume. Once the attempt has ended and every line was sent, an `end` event (data `{}`) closes the stream.",
            content((SseEvent = "text/event-stream",
                extensions(("x-event-data" = json!({ "$ref": "#/components/schemas/LogLine" })))))),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn follow_logs(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((id, key)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (run, _) = authorized_run(&engine, &who, &id, Action::Read).await?;
    let stage = stages::find(&engine.store.pool, run.id, &key).await?;
    let (attempt, after) = query.checked(stage.attempt)?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or(after)
        .unwrap_or(0);
    Ok(super::logs::follow(Arc::clone(&engine), log_owner(&stage), attempt, after).into_response())
}

#[utoipa::path(
    get, path = "/runs/{id}/artifacts", tag = "runs", operation_id = "listArtifacts",
    summary = "The artifacts the run's stages kept (including those a rerun reused).",
    params(RunPath),
    responses(
        (status = 200, description = "The artifacts.", body = Vec<store::artifacts::ArtifactRow>),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn run_artifacts(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Vec<store::artifacts::ArtifactRow>>, ApiError> {
    let (run, _) = authorized_run(&engine, &who, &id, Action::Read).await?;
    let rows = stages::for_run(&engine.store.pool, run.id).await?;
    let ids: Vec<i64> = rows
        .iter()
        .map(|s| s.reused_from.unwrap_or(s.id).0)
        .collect();
    Ok(Json(
        store::artifacts::of_stages(&engine.store.pool, &ids).await?,
    ))
}

/// One artifact of the run (a tar.gz of what the stage kept), streamed one stored chunk at a
/// time, with its SHA-256 in `X-Checksum-Sha256` so a download can be checked.
#[utoipa::path(
    get, path = "/runs/{id}/artifacts/{artifact}", tag = "runs", operation_id = "downloadArtifact",
    summary = "Download one artifact of the run: a tar.gz of the paths the stage kept, its SHA-256 in the `X-Checksum-Sha256` header.",
    params(ArtifactPath),
    responses(
        (status = 200, description = "The artifact.", body = inline(Gzip), content_type = "application/gzip",
            headers(("X-Checksum-Sha256" = String, description = "The SHA-256 of the body, hex."))),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn download_artifact(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((id, artifact)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (run, _) = authorized_run(&engine, &who, &id, Action::Read).await?;
    let not_found = || ApiError::NotFound(format!("run {} has no artifact {artifact}", run.id));
    let artifact_id: i64 = artifact.parse().map_err(|_| not_found())?;
    let rows = stages::for_run(&engine.store.pool, run.id).await?;
    let found = store::artifacts::get(&engine.store.pool, artifact_id)
        .await
        .ok()
        .filter(|a| {
            // Only the run's own stages' artifacts (and those a rerun reused) are its.
            rows.iter()
                .any(|s| s.reused_from.unwrap_or(s.id) == a.stage_run_id)
        })
        .ok_or_else(not_found)?;
    let stage = rows
        .iter()
        .find(|s| s.reused_from.unwrap_or(s.id) == found.stage_run_id)
        .map(|s| s.key.as_str())
        .unwrap_or("stage");
    let file = format!(
        "{}-run{}-{stage}-{}.tar.gz",
        run.pipeline, run.number, found.name
    )
    .chars()
    .map(|c| {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
            c
        } else {
            '_'
        }
    })
    .collect::<String>();
    let mut headers = vec![
        (header::CONTENT_TYPE, "application/gzip".to_owned()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        ),
        (header::CONTENT_LENGTH, found.size.to_string()),
    ];
    if let Some(sha) = &found.sha256 {
        headers.push((
            header::HeaderName::from_static("x-checksum-sha256"),
            sha.clone(),
        ));
    }
    let mut response =
        axum::body::Body::from_stream(crate::artifact::chunks(engine.store.pool.clone(), found.id))
            .into_response();
    for (name, value) in headers {
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

#[utoipa::path(
    get, path = "/runs/{id}/events", tag = "runs", operation_id = "listRunEvents",
    summary = "What happened in the run, oldest first: triggered, stages queued, started, ended, approved or rejected (and by whom), cancelled, the run's end.",
    params(RunPath),
    responses(
        (status = 200, description = "The events.", body = Vec<store::events::EventRow>),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn run_events(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Vec<store::events::EventRow>>, ApiError> {
    let (run, _) = authorized_run(&engine, &who, &id, Action::Read).await?;
    Ok(Json(
        store::events::for_run(&engine.store.pool, run.id).await?,
    ))
}

#[utoipa::path(
    get, path = "/projects/{project}/secrets", tag = "secrets", operation_id = "listSecrets",
    summary = "The names of a project's secrets (values are never returned).",
    params(ProjectPath),
    responses(
        (status = 200, description = "The secrets.", body = Vec<store::secrets::SecretInfo>),
        (status = 404, response = NotFound),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn list_secrets(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(project): Path<String>,
) -> Result<Json<Vec<store::secrets::SecretInfo>>, ApiError> {
    access::require(&engine.store.pool, &who, &project, Action::ListSecrets).await?;
    let project = pipelines::project_id(&engine.store.pool, &project).await?;
    Ok(Json(
        store::secrets::list(&engine.store.pool, project).await?,
    ))
}

/// Body: the secret's value. Secrets are write-only: no route returns a value.
/// The shortest secret value accepted.
pub const MIN_SECRET_CHARS: usize = 4;

#[utoipa::path(
    put, path = "/projects/{project}/secrets/{name}", tag = "secrets", operation_id = "putSecret",
    summary = "Create or replace a secret. The value is stored encrypted and is write-only.",
    params(SecretPath),
    request_body(
        content = inline(SecretValue), content_type = "text/plain",
        description = "The secret's value, as is: at least 4 characters (a shorter value could not be masked in logs)."
    ),
    responses(
        (status = 204, description = "Stored."),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn put_secret(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((project, name)): Path<(String, String)>,
    Text(value): Text,
) -> Result<StatusCode, ApiError> {
    access::require(&engine.store.pool, &who, &project, Action::WriteSecret).await?;
    // The project is created with its first secret: its name must be one a project may have.
    if !crate::pipeline::decode::is_valid_name(&project) {
        return Err(ApiError::BadRequest(format!(
            "project name `{project}` is not valid"
        )));
    }
    if !crate::pipeline::decode::is_valid_name(&name) {
        return Err(ApiError::BadRequest(format!(
            "secret name `{name}` is not valid"
        )));
    }
    // A value this short cannot be masked in logs without hiding every such run of letters of
    // every log (and an empty one is a mistake, not a secret).
    if value.chars().count() < MIN_SECRET_CHARS {
        return Err(ApiError::BadRequest(format!(
            "secret `{name}` has {} characters; a secret needs at least {MIN_SECRET_CHARS}, or it could not be masked in logs",
            value.chars().count()
        )));
    }
    let project = pipelines::ensure_project(&engine.store.pool, &project).await?;
    let (nonce, ciphertext) = engine.secrets.encrypt(value.as_bytes());
    store::secrets::put(&engine.store.pool, project, &name, &nonce, &ciphertext).await?;
    Ok(StatusCode::NO_CONTENT)
}
