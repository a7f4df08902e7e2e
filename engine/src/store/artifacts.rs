//! Artifacts: the tar.gz a stage keeps for the stages that need it, stored in 1 MiB chunks so
//! uploads and downloads stream and several engines sharing the database all see them.

use serde::Serialize;
use sqlx::PgExecutor;

use super::{Result, RunId, StageRunId, StoreError};

/// Size of one stored piece of an artifact.
pub const CHUNK_BYTES: usize = 1 << 20;

/// A file set a stage kept (a tar.gz).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Artifact)]
pub struct ArtifactRow {
    pub id: i64,
    pub stage_run_id: StageRunId,
    pub name: String,
    /// Bytes.
    pub size: i64,
    #[schema(required)]
    pub sha256: Option<String>,
}

/// Starts an upload, replacing an earlier (e.g. interrupted) one of the same name.
pub async fn begin(tx: &mut sqlx::PgConnection, stage: StageRunId, name: &str) -> Result<i64> {
    sqlx::query!(
        "DELETE FROM artifacts WHERE stage_run_id = $1 AND name = $2",
        stage.0,
        name
    )
    .execute(&mut *tx)
    .await?;
    Ok(sqlx::query_scalar!(
        "INSERT INTO artifacts (stage_run_id, name) VALUES ($1, $2) RETURNING id",
        stage.0,
        name
    )
    .fetch_one(&mut *tx)
    .await?)
}

pub async fn add_chunk(
    db: impl PgExecutor<'_>,
    artifact: i64,
    seq: i32,
    data: &[u8],
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO artifact_chunks (artifact_id, seq, data) VALUES ($1, $2, $3)",
        artifact,
        seq,
        data
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn complete(
    db: impl PgExecutor<'_>,
    artifact: i64,
    size: i64,
    sha256: &str,
) -> Result<()> {
    sqlx::query!(
        "UPDATE artifacts SET size = $2, sha256 = $3, complete = true WHERE id = $1",
        artifact,
        size,
        sha256
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Complete artifacts of the given stage runs.
pub async fn of_stages(db: impl PgExecutor<'_>, stages: &[i64]) -> Result<Vec<ArtifactRow>> {
    Ok(sqlx::query_as!(
        ArtifactRow,
        r#"SELECT id, stage_run_id AS "stage_run_id: StageRunId", name, size, sha256
           FROM artifacts WHERE stage_run_id = ANY($1) AND complete ORDER BY stage_run_id, name"#,
        stages
    )
    .fetch_all(db)
    .await?)
}

/// The artifacts a stage of `run` reads: those kept by the stages at `plan_indices`, or by the
/// stages of earlier runs whose results they reuse.
pub async fn needed_by(
    db: impl PgExecutor<'_>,
    run: RunId,
    plan_indices: &[i32],
) -> Result<Vec<ArtifactRow>> {
    Ok(sqlx::query_as!(
        ArtifactRow,
        r#"SELECT a.id, a.stage_run_id AS "stage_run_id: StageRunId", a.name, a.size, a.sha256
           FROM stage_runs s JOIN artifacts a ON a.stage_run_id = COALESCE(s.reused_from, s.id)
           WHERE s.run_id = $1 AND s.plan_index = ANY($2) AND a.complete
           ORDER BY a.stage_run_id, a.name"#,
        run.0,
        plan_indices
    )
    .fetch_all(db)
    .await?)
}

pub async fn get(db: impl PgExecutor<'_>, id: i64) -> Result<ArtifactRow> {
    sqlx::query_as!(
        ArtifactRow,
        r#"SELECT id, stage_run_id AS "stage_run_id: StageRunId", name, size, sha256
           FROM artifacts WHERE id = $1 AND complete"#,
        id
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("artifact {id}")))
}

/// One stored piece of an artifact, or `None` past the last.
pub async fn chunk(db: impl PgExecutor<'_>, artifact: i64, seq: i32) -> Result<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar!(
        "SELECT data FROM artifact_chunks WHERE artifact_id = $1 AND seq = $2",
        artifact,
        seq
    )
    .fetch_optional(db)
    .await?)
}
