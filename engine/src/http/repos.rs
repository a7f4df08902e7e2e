//! Repositories and webhook deliveries in the API: register a repository (maintainers),
//! list them, and see every delivery with what it led to (anyone who may read the project).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Path, Query};
use super::openapi::{
    Conflict, DeliveryPath, Forbidden, Internal, NotFound, ProjectPath, Unauthorized, Unprocessable,
};
use crate::access::{self, Action, Principal};
use crate::engine::Engine;
use crate::store::{deliveries, pipelines, repos};
use crate::webhook::{Provider, arming};

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/projects/{project}/repositories", post(register).get(list))
        .route("/projects/{project}/deliveries", get(list_deliveries))
        .route("/deliveries/{id}", get(get_delivery))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = RepositoryRegistration)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// github, gitlab, gitea (or forgejo).
    #[schema(schema_with = provider_schema)]
    pub provider: String,
    /// `owner/name` as the provider names it.
    #[schema(pattern = "/")]
    pub full_name: String,
    /// An https://, http://, git:// or ssh:// URL, or a local path.
    #[schema(pattern = "^(https://|http://|git://|ssh://|file://|/)")]
    pub clone_url: String,
    /// The secret configured on the provider's webhook (write-only).
    #[schema(min_length = 8, write_only)]
    pub webhook_secret: String,
    /// A project secret holding an access token (clones, commit statuses).
    #[serde(default)]
    pub token_secret: Option<String>,
    /// The provider's API base; default from the provider and clone URL.
    #[serde(default)]
    pub api_url: Option<String>,
    /// Default `.gantry.yaml`, `.gantry/*.yaml`.
    #[serde(default)]
    pub pipeline_files: Option<Vec<String>>,
    #[serde(default)]
    pub default_branch: Option<String>,
    #[serde(default)]
    #[schema(default = false)]
    pub submodules: bool,
}

/// `provider`'s names: a string, not a `Provider`, so that an unknown one is answered with
/// the names there are.
fn provider_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["github", "gitlab", "gitea", "forgejo"]))
        .build()
}

/// A registered repository, with the URL to configure as its webhook.
#[derive(Serialize, ToSchema)]
#[schema(as = RegisteredRepository)]
pub struct Registered {
    #[serde(flatten)]
    pub repo: repos::RepoRow,
    pub webhook_url: String,
    /// The `on.schedule` of the pipeline files at the head of the default branch, armed now:
    /// a line per pipeline.
    pub schedules: Vec<String>,
    /// Why the pipeline files could not be read to arm their schedules (the registration
    /// stands; the next push to the default branch arms them). Only when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedules_error: Option<String>,
}

#[utoipa::path(
    post, path = "/projects/{project}/repositories", tag = "webhooks", operation_id = "registerRepository",
    summary = "Register a Git repository (or update its registration): pipelines are read from its files at each webhook's commit. Maintainers only. The webhook secret is write-only.",
    params(ProjectPath),
    request_body = Registration,
    responses(
        (status = 201, description = "Registered.", body = Registered),
        (status = 200, description = "Updated.", body = Registered),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn register(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(project): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    // Permission first: a caller who may not register learns nothing from the body's errors.
    access::require(&engine.store.pool, &who, &project, Action::EditPipeline).await?;
    // The project is created with its first repository: its name must be one a project may
    // have.
    if !crate::pipeline::decode::is_valid_name(&project) {
        return Err(ApiError::BadRequest(format!(
            "project name `{project}` is not valid"
        )));
    }
    let reg: Registration = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the registration is not valid: {e}")))?;
    let provider = Provider::parse(&reg.provider).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "provider `{}` is not one of github, gitlab, gitea, forgejo",
            reg.provider
        ))
    })?;
    if !reg.full_name.contains('/') {
        return Err(ApiError::BadRequest(format!(
            "full_name `{}` must be `owner/name` as the provider names the repository",
            reg.full_name
        )));
    }
    if reg.webhook_secret.len() < 8 {
        return Err(ApiError::BadRequest(
            "webhook_secret must be at least 8 characters".into(),
        ));
    }
    if !["https://", "http://", "git://", "ssh://", "file://", "/"]
        .iter()
        .any(|p| reg.clone_url.starts_with(p))
    {
        return Err(ApiError::BadRequest(format!(
            "clone_url `{}` must be an https://, http://, git:// or ssh:// URL (or a local path)",
            reg.clone_url
        )));
    }
    let files = reg
        .pipeline_files
        .unwrap_or_else(|| vec![".gantry.yaml".into(), ".gantry/*.yaml".into()]);
    if files.is_empty()
        || files
            .iter()
            .any(|f| f.is_empty() || f.starts_with('/') || f.contains(".."))
    {
        return Err(ApiError::BadRequest(
            "pipeline_files must be paths inside the repository, like `.gantry.yaml` or `.gantry/*.yaml`".into(),
        ));
    }
    let project_id = pipelines::ensure_project(&engine.store.pool, &project).await?;
    let (nonce, cipher) = engine.secrets.encrypt(reg.webhook_secret.as_bytes());
    let (id, created) = repos::upsert(
        &engine.store.pool,
        repos::NewRepo {
            project: project_id,
            provider: provider.as_str(),
            full_name: &reg.full_name,
            clone_url: &reg.clone_url,
            secret_nonce: &nonce,
            secret_cipher: &cipher,
            token_secret: reg.token_secret.as_deref(),
            api_url: reg.api_url.as_deref(),
            pipeline_files: &files,
            default_branch: reg.default_branch.as_deref().unwrap_or("main"),
            submodules: reg.submodules,
        },
    )
    .await?;
    engine.webhook_cache.forget_repos();
    let row = repos::get(&engine.store.pool, id).await?;
    let base = engine.config.public_url.as_deref().unwrap_or(&engine.url);
    let webhook_url = format!("{}/hooks/{}", base.trim_end_matches('/'), provider.as_str());
    // Schedule-only pipelines run on no push: arm them from the default branch now. An
    // unreachable repository does not undo the registration; the answer says why, and the
    // next push to the default branch arms them.
    let (schedules, schedules_error) = match arming::sync_from_head(&engine, &row).await {
        Ok(report) => (report, None),
        Err(e) => (
            Vec::new(),
            Some(format!(
                "could not read the pipeline files of `{}` to arm their schedules: {e}",
                row.default_branch
            )),
        ),
    };
    let body = Registered {
        repo: row,
        webhook_url,
        schedules,
        schedules_error,
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(body)))
}

#[utoipa::path(
    get, path = "/projects/{project}/repositories", tag = "webhooks", operation_id = "listRepositories",
    summary = "The project's registered repositories.",
    params(ProjectPath),
    responses(
        (status = 200, description = "The repositories.", body = Vec<repos::RepoRow>),
        (status = 404, response = NotFound),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn list(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(project): Path<String>,
) -> Result<Json<Vec<repos::RepoRow>>, ApiError> {
    access::require(&engine.store.pool, &who, &project, Action::Read).await?;
    let project = pipelines::project_id(&engine.store.pool, &project).await?;
    Ok(Json(repos::list(&engine.store.pool, project).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Limit {
    /// How many deliveries (1-500, default 50).
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
}

#[utoipa::path(
    get, path = "/projects/{project}/deliveries", tag = "webhooks", operation_id = "listDeliveries",
    summary = "The project's newest webhook deliveries, newest first, each with what it led to.",
    params(ProjectPath, Limit),
    responses(
        (status = 200, description = "The deliveries.", body = Vec<deliveries::DeliveryRow>),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn list_deliveries(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(project): Path<String>,
    Query(q): Query<Limit>,
) -> Result<Json<Vec<deliveries::DeliveryRow>>, ApiError> {
    access::require(&engine.store.pool, &who, &project, Action::Read).await?;
    let project = pipelines::project_id(&engine.store.pool, &project).await?;
    let limit = super::api::page_limit(q.limit)?;
    Ok(Json(
        deliveries::list(&engine.store.pool, project, limit).await?,
    ))
}

#[utoipa::path(
    get, path = "/deliveries/{id}", tag = "webhooks", operation_id = "getDelivery",
    summary = "One webhook delivery: its status (received, triggered, ignored, failed), why, and the runs it started.",
    params(DeliveryPath),
    responses(
        (status = 200, description = "The delivery.", body = deliveries::DeliveryRow),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn get_delivery(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(id): Path<i64>,
) -> Result<Json<deliveries::DeliveryRow>, ApiError> {
    let row = match deliveries::get(&engine.store.pool, id).await {
        Ok(row) => row,
        // Someone not signed in learns nothing, not even whether the delivery exists.
        Err(crate::store::StoreError::NotFound(_)) if matches!(who, Principal::Anonymous) => {
            return Err(
                access::AccessError::Unauthenticated(Action::Read.describe().into()).into(),
            );
        }
        Err(e) => return Err(e.into()),
    };
    // A delivery for no known project (none is stored so) is for administrators only.
    let project = row.project.clone().unwrap_or_default();
    access::require(&engine.store.pool, &who, &project, Action::Read).await?;
    Ok(Json(row))
}
