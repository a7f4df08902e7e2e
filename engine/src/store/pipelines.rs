//! Projects, pipelines and the versions of their YAML. Every applied file is kept, so a run
//! always knows exactly which definition it ran.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;

use super::{PipelineId, ProjectId, Result, StoreError, VersionId};

/// A pipeline with its newest version.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Pipeline)]
pub struct PipelineRow {
    pub id: PipelineId,
    pub project: String,
    pub name: String,
    pub version_id: VersionId,
    pub version: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct VersionRow {
    pub id: VersionId,
    pub pipeline_id: PipelineId,
    pub version: i32,
    pub yaml: String,
}

pub async fn ensure_project(db: impl PgExecutor<'_>, name: &str) -> Result<ProjectId> {
    let id = sqlx::query_scalar!(
        r#"INSERT INTO projects (name) VALUES ($1)
           ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
           RETURNING id AS "id: ProjectId""#,
        name
    )
    .fetch_one(db)
    .await?;
    Ok(id)
}

pub async fn ensure_pipeline(
    tx: &mut sqlx::PgConnection,
    project: ProjectId,
    name: &str,
) -> Result<PipelineId> {
    // Read first: the pipeline nearly always exists, and `ON CONFLICT DO UPDATE` locks its row
    // until the transaction ends, which made every delivery processor starting a run of it
    // wait for the others' whole batches.
    let existing = sqlx::query_scalar!(
        r#"SELECT id AS "id: PipelineId" FROM pipelines WHERE project_id = $1 AND name = $2"#,
        project.0,
        name
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let id = sqlx::query_scalar!(
        r#"INSERT INTO pipelines (project_id, name) VALUES ($1, $2)
           ON CONFLICT (project_id, name) DO UPDATE SET name = EXCLUDED.name
           RETURNING id AS "id: PipelineId""#,
        project.0,
        name
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(id)
}

pub fn digest(yaml: &str) -> String {
    hex::encode(Sha256::digest(yaml.as_bytes()))
}

/// Locks the pipeline's row until the transaction ends, so concurrent writers number its
/// versions without gaps or clashes. `NO KEY UPDATE`, the lock an update of the row takes:
/// `FOR UPDATE` would also hold up every insert that refers to the pipeline (the foreign
/// key checks of new runs and versions take `KEY SHARE` on it).
async fn lock(tx: &mut sqlx::PgConnection, pipeline: PipelineId) -> Result<()> {
    sqlx::query!(
        "SELECT id FROM pipelines WHERE id = $1 FOR NO KEY UPDATE",
        pipeline.0
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(())
}

/// Stores `yaml` as the pipeline's newest version unless it is identical to the newest one.
/// Returns the version's id and number, and whether it is new. Run inside a transaction: the
/// pipeline row is locked so concurrent applies number versions without gaps or clashes.
pub async fn add_version(
    tx: &mut sqlx::PgConnection,
    pipeline: PipelineId,
    yaml: &str,
) -> Result<(VersionId, i32, bool)> {
    let digest = digest(yaml);
    // Mostly the text is the newest version already (every push of an unchanged file): that
    // needs no lock, as versions are only ever added. Only a new text takes the lock.
    if let Some(latest) = latest_version(&mut *tx, pipeline).await?
        && latest.digest == digest
    {
        return Ok((latest.id, latest.version, false));
    }
    lock(tx, pipeline).await?;
    let latest = latest_version(&mut *tx, pipeline).await?;
    if let Some(latest) = &latest
        && latest.digest == digest
    {
        return Ok((latest.id, latest.version, false));
    }
    let version = latest.map_or(1, |l| l.version + 1);
    let id = sqlx::query_scalar!(
        r#"INSERT INTO pipeline_versions (pipeline_id, version, yaml, digest)
           VALUES ($1, $2, $3, $4) RETURNING id AS "id: VersionId""#,
        pipeline.0,
        version,
        yaml,
        digest
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok((id, version, true))
}

struct LatestVersion {
    id: VersionId,
    version: i32,
    digest: String,
}

async fn latest_version(
    tx: &mut sqlx::PgConnection,
    pipeline: PipelineId,
) -> Result<Option<LatestVersion>> {
    Ok(sqlx::query_as!(
        LatestVersion,
        r#"SELECT id AS "id: VersionId", version, digest FROM pipeline_versions
           WHERE pipeline_id = $1 ORDER BY version DESC LIMIT 1"#,
        pipeline.0
    )
    .fetch_optional(&mut *tx)
    .await?)
}

/// Stores a pipeline file that does not parse, as an invalid version: its failed run refers
/// to it, and the pipeline's valid versions stay what lists and triggers use.
pub async fn add_broken_version(
    tx: &mut sqlx::PgConnection,
    pipeline: PipelineId,
    yaml: &str,
) -> Result<VersionId> {
    let digest = digest(yaml);
    lock(tx, pipeline).await?;
    let id = sqlx::query_scalar!(
        r#"INSERT INTO pipeline_versions (pipeline_id, version, yaml, digest, valid)
           SELECT $1, COALESCE(max(version), 0) + 1, $2, $3, false FROM pipeline_versions
           WHERE pipeline_id = $1
           RETURNING id AS "id: VersionId""#,
        pipeline.0,
        yaml,
        digest
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(id)
}

/// The pipelines with their newest version; `$tail` filters and orders.
macro_rules! select_pipelines {
    ($tail:literal $(, $arg:expr)*) => {
        sqlx::query_as!(
            PipelineRow,
            r#"SELECT p.id AS "id: PipelineId", pr.name AS project, p.name, v.id AS "version_id: VersionId",
                      v.version, p.created_at
               FROM pipelines p
               JOIN projects pr ON pr.id = p.project_id
               JOIN LATERAL (SELECT id, version FROM pipeline_versions
                             WHERE pipeline_id = p.id AND valid ORDER BY version DESC LIMIT 1) v ON true "# + $tail
            $(, $arg)*
        )
    };
}

/// Every pipeline, or those of `projects` (names).
pub async fn list(
    db: impl PgExecutor<'_>,
    projects: Option<&[String]>,
) -> Result<Vec<PipelineRow>> {
    Ok(select_pipelines!(
        "WHERE ($1::text[] IS NULL OR pr.name = ANY($1)) ORDER BY pr.name, p.name",
        projects
    )
    .fetch_all(db)
    .await?)
}

pub async fn find(db: impl PgExecutor<'_>, project: &str, name: &str) -> Result<PipelineRow> {
    select_pipelines!("WHERE pr.name = $1 AND p.name = $2", project, name)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("pipeline {project}/{name}")))
}

pub async fn version(db: impl PgExecutor<'_>, id: VersionId) -> Result<VersionRow> {
    sqlx::query_as!(
        VersionRow,
        r#"SELECT id AS "id: VersionId", pipeline_id AS "pipeline_id: PipelineId", version, yaml
           FROM pipeline_versions WHERE id = $1"#,
        id.0
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("pipeline version {id}")))
}

/// One applied version of a pipeline, without its text (for a list of versions).
#[derive(Clone, Debug)]
pub struct VersionSummary {
    pub id: VersionId,
    pub version: i32,
    pub created_at: DateTime<Utc>,
}

/// The pipeline's valid versions, newest first. Invalid ones (a repository file that did not
/// parse) are left out: they have no plan to show, and each already has its failed run.
pub async fn versions(
    db: impl PgExecutor<'_>,
    pipeline: PipelineId,
) -> Result<Vec<VersionSummary>> {
    Ok(sqlx::query_as!(
        VersionSummary,
        r#"SELECT id AS "id: VersionId", version, created_at FROM pipeline_versions
           WHERE pipeline_id = $1 AND valid ORDER BY version DESC"#,
        pipeline.0
    )
    .fetch_all(db)
    .await?)
}

pub async fn project_of(db: impl PgExecutor<'_>, pipeline: PipelineId) -> Result<ProjectId> {
    Ok(sqlx::query_scalar!(
        r#"SELECT project_id AS "id: ProjectId" FROM pipelines WHERE id = $1"#,
        pipeline.0
    )
    .fetch_one(db)
    .await?)
}

pub async fn project_id(db: impl PgExecutor<'_>, name: &str) -> Result<ProjectId> {
    sqlx::query_scalar!(
        r#"SELECT id AS "id: ProjectId" FROM projects WHERE name = $1"#,
        name
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("project {name}")))
}

/// Marks a pipeline as coming from a repository file (pipeline as code).
pub async fn link_repository(
    db: impl PgExecutor<'_>,
    pipeline: PipelineId,
    repository: crate::store::repos::RepoId,
    file: &str,
) -> Result<()> {
    sqlx::query!(
        "UPDATE pipelines SET repository_id = $2, source_file = $3 WHERE id = $1
           AND (repository_id IS DISTINCT FROM $2 OR source_file IS DISTINCT FROM $3)",
        pipeline.0,
        repository.0,
        file
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The pipeline last read from `file` of a repository (to pin a broken file's failed run on
/// the pipeline it used to define).
pub async fn for_source_file(
    db: impl PgExecutor<'_>,
    repository: crate::store::repos::RepoId,
    file: &str,
) -> Result<Option<PipelineId>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT id AS "id: PipelineId" FROM pipelines WHERE repository_id = $1 AND source_file = $2
           ORDER BY id LIMIT 1"#,
        repository.0,
        file
    )
    .fetch_optional(db)
    .await?)
}

/// A pipeline's newest version, with the repository it comes from (for scheduled runs).
#[derive(Clone, Debug)]
pub struct Scheduled {
    pub pipeline_id: PipelineId,
    pub project: String,
    pub name: String,
    pub version_id: VersionId,
    pub version_created: DateTime<Utc>,
    pub repository_id: Option<crate::store::repos::RepoId>,
}

/// Every pipeline whose scheduling version mentions `schedule` (a cheap text prefilter; the
/// parsed plan decides). That version is the newest valid one for a pipeline applied through
/// the API, and the armed one ([`arm`]) for a pipeline from a repository.
pub async fn with_schedules(db: impl PgExecutor<'_>) -> Result<Vec<Scheduled>> {
    Ok(sqlx::query_as!(
        Scheduled,
        r#"SELECT p.id AS "pipeline_id: PipelineId", pr.name AS project, p.name,
                  v.id AS "version_id: VersionId", v.created_at AS version_created,
                  p.repository_id AS "repository_id: crate::store::repos::RepoId"
           FROM pipelines p
           JOIN projects pr ON pr.id = p.project_id
           JOIN LATERAL (SELECT id, created_at, yaml FROM pipeline_versions
                         WHERE pipeline_id = p.id AND valid
                           AND (p.repository_id IS NULL OR id = p.schedule_version_id)
                         ORDER BY version DESC LIMIT 1) v ON true
           WHERE v.yaml LIKE '%schedule%'
           ORDER BY p.id"#
    )
    .fetch_all(db)
    .await?)
}

/// The repository a pipeline's file comes from, if it comes from one.
pub async fn repository_of(
    db: impl PgExecutor<'_>,
    pipeline: PipelineId,
) -> Result<Option<crate::store::repos::RepoId>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT repository_id AS "id: crate::store::repos::RepoId" FROM pipelines WHERE id = $1"#,
        pipeline.0
    )
    .fetch_optional(db)
    .await?
    .flatten())
}

/// Arms `version`'s schedules for `pipeline`, read from `file` of `repository`'s default
/// branch. True when that changed what fires (new, or different text); re-arming the same
/// text keeps the version armed first, so its catch-up window is not reset by every push.
/// Another pipeline the same file used to define (before its `name:` changed) is disarmed.
pub async fn arm(
    tx: &mut sqlx::PgConnection,
    pipeline: PipelineId,
    version: VersionId,
    repository: crate::store::repos::RepoId,
    file: &str,
) -> Result<bool> {
    sqlx::query!(
        "UPDATE pipelines SET schedule_version_id = NULL
         WHERE repository_id = $1 AND source_file = $2 AND id <> $3
           AND schedule_version_id IS NOT NULL",
        repository.0,
        file,
        pipeline.0
    )
    .execute(&mut *tx)
    .await?;
    Ok(sqlx::query_scalar!(
        r#"UPDATE pipelines p SET schedule_version_id = $2
           WHERE id = $1 AND (p.schedule_version_id IS NULL
             OR (SELECT digest FROM pipeline_versions WHERE id = p.schedule_version_id)
                IS DISTINCT FROM (SELECT digest FROM pipeline_versions WHERE id = $2))
           RETURNING true AS "changed!""#,
        pipeline.0,
        version.0
    )
    .fetch_optional(&mut *tx)
    .await?
    .is_some())
}

/// Whether a pipeline has armed schedules.
pub async fn armed(db: impl PgExecutor<'_>, pipeline: PipelineId) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT schedule_version_id IS NOT NULL AS "armed!" FROM pipelines WHERE id = $1"#,
        pipeline.0
    )
    .fetch_optional(db)
    .await?
    .unwrap_or(false))
}

/// Disarms a pipeline's schedules. True when they were armed.
pub async fn disarm(db: impl PgExecutor<'_>, pipeline: PipelineId) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"UPDATE pipelines SET schedule_version_id = NULL
           WHERE id = $1 AND schedule_version_id IS NOT NULL RETURNING true AS "was!""#,
        pipeline.0
    )
    .fetch_optional(db)
    .await?
    .is_some())
}

/// Disarms the pipelines of `repository` whose file is not among `present` (removed from the
/// default branch); returns their names.
pub async fn disarm_missing(
    db: impl PgExecutor<'_>,
    repository: crate::store::repos::RepoId,
    present: &[String],
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        "UPDATE pipelines SET schedule_version_id = NULL
         WHERE repository_id = $1 AND schedule_version_id IS NOT NULL
           AND COALESCE(source_file, '') <> ALL($2)
         RETURNING name",
        repository.0,
        present
    )
    .fetch_all(db)
    .await?)
}
