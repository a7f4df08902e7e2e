//! What the web UI's dashboard shows: each pipeline's newest run per branch.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::{Result, RunId, RunStatus};

#[derive(Clone, Debug, Serialize)]
pub struct BranchStatus {
    pub project: String,
    pub pipeline: String,
    /// `None` for runs about no branch (a tag, a manual run without one).
    pub branch: Option<String>,
    pub run_id: RunId,
    pub number: i32,
    pub status: RunStatus,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The newest run of every (pipeline, branch) of `projects` (names; `None`: all).
pub async fn latest_per_branch(
    db: impl PgExecutor<'_>,
    projects: Option<&[String]>,
) -> Result<Vec<BranchStatus>> {
    Ok(sqlx::query_as!(
        BranchStatus,
        r#"SELECT DISTINCT ON (r.pipeline_id, r.context->>'branch')
                  pr.name AS project, p.name AS pipeline, r.context->>'branch' AS branch,
                  r.id AS "run_id: RunId", r.number, r.status AS "status: RunStatus",
                  r.created_at, r.finished_at
           FROM runs r JOIN pipelines p ON p.id = r.pipeline_id JOIN projects pr ON pr.id = p.project_id
           WHERE ($1::text[] IS NULL OR pr.name = ANY($1))
           ORDER BY r.pipeline_id, r.context->>'branch', r.id DESC"#,
        projects
    )
    .fetch_all(db)
    .await?)
}
