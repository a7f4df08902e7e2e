//! Registered Git repositories: where pipeline files come from and whose webhooks are accepted.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::{ProjectId, Result, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct RepoId(pub i64);

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A registered Git repository (the webhook secret is never shown).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Repository)]
pub struct RepoRow {
    pub id: RepoId,
    pub project: String,
    #[serde(skip)]
    pub project_id: ProjectId,
    pub provider: String,
    pub full_name: String,
    pub clone_url: String,
    #[schema(required)]
    pub token_secret: Option<String>,
    #[schema(required)]
    pub api_url: Option<String>,
    pub pipeline_files: Vec<String>,
    pub default_branch: String,
    pub submodules: bool,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub secret_nonce: Vec<u8>,
    #[serde(skip)]
    pub secret_cipher: Vec<u8>,
}

pub struct NewRepo<'a> {
    pub project: ProjectId,
    pub provider: &'a str,
    pub full_name: &'a str,
    pub clone_url: &'a str,
    pub secret_nonce: &'a [u8],
    pub secret_cipher: &'a [u8],
    pub token_secret: Option<&'a str>,
    pub api_url: Option<&'a str>,
    pub pipeline_files: &'a [String],
    pub default_branch: &'a str,
    pub submodules: bool,
}

/// Registers a repository, or updates the registration of the same provider and name.
pub async fn upsert(db: impl PgExecutor<'_>, repo: NewRepo<'_>) -> Result<(RepoId, bool)> {
    let row = sqlx::query!(
        r#"INSERT INTO repositories (project_id, provider, full_name, clone_url, secret_nonce,
                                     secret_cipher, token_secret, api_url, pipeline_files, default_branch, submodules)
           VALUES ($1, $2, lower($3), $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (provider, full_name) DO UPDATE
             SET clone_url = EXCLUDED.clone_url, secret_nonce = EXCLUDED.secret_nonce,
                 secret_cipher = EXCLUDED.secret_cipher, token_secret = EXCLUDED.token_secret,
                 api_url = EXCLUDED.api_url, pipeline_files = EXCLUDED.pipeline_files,
                 default_branch = EXCLUDED.default_branch, submodules = EXCLUDED.submodules
             WHERE repositories.project_id = EXCLUDED.project_id
           RETURNING id AS "id: RepoId", (xmax = 0) AS "created!""#,
        repo.project.0,
        repo.provider,
        repo.full_name,
        repo.clone_url,
        repo.secret_nonce,
        repo.secret_cipher,
        repo.token_secret,
        repo.api_url,
        repo.pipeline_files,
        repo.default_branch,
        repo.submodules,
    )
    .fetch_optional(db)
    .await?;
    row.map(|r| (r.id, r.created)).ok_or_else(|| {
        StoreError::Conflict(format!(
            "{} repository `{}` is registered in another project",
            repo.provider, repo.full_name
        ))
    })
}

macro_rules! select_repos {
    ($tail:literal $(, $arg:expr)*) => {
        sqlx::query_as!(
            RepoRow,
            r#"SELECT r.id AS "id: RepoId", p.name AS project, r.project_id AS "project_id: ProjectId",
                      r.provider, r.full_name, r.clone_url, r.token_secret, r.api_url,
                      r.pipeline_files, r.default_branch, r.submodules, r.created_at, r.secret_nonce, r.secret_cipher
               FROM repositories r JOIN projects p ON p.id = r.project_id "# + $tail
            $(, $arg)*
        )
    };
}

pub async fn list(db: impl PgExecutor<'_>, project: ProjectId) -> Result<Vec<RepoRow>> {
    Ok(
        select_repos!("WHERE r.project_id = $1 ORDER BY r.full_name", project.0)
            .fetch_all(db)
            .await?,
    )
}

pub async fn get(db: impl PgExecutor<'_>, id: RepoId) -> Result<RepoRow> {
    select_repos!("WHERE r.id = $1", id.0)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("repository {id}")))
}

/// The repository a delivery names: by its full name, or else by one of the payload's URLs
/// matching the registered clone URL (so a renamed repository still matches by URL).
pub async fn find_for_delivery(
    db: impl PgExecutor<'_>,
    provider: &str,
    full_name: &str,
    urls: &[String],
) -> Result<Option<RepoRow>> {
    Ok(select_repos!(
        "WHERE r.provider = $1 AND (r.full_name = lower($2) OR r.clone_url = ANY($3))
         ORDER BY (r.full_name = lower($2)) DESC LIMIT 1",
        provider,
        full_name,
        urls
    )
    .fetch_optional(db)
    .await?)
}
