//! Secret values, stored only as AES-256-GCM ciphertext (see `crate::secret` for the crypto).
//! Nothing here ever returns a secret to an API caller: only the runner spec decrypts them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::{ProjectId, Result};

/// A secret's name (values are never returned).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Secret)]
pub struct SecretInfo {
    pub name: String,
    pub updated_at: DateTime<Utc>,
}

pub async fn put(
    db: impl PgExecutor<'_>,
    project: ProjectId,
    name: &str,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO secrets (project_id, name, nonce, ciphertext) VALUES ($1, $2, $3, $4)
         ON CONFLICT (project_id, name) DO UPDATE
           SET nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, updated_at = now()",
        project.0,
        name,
        nonce,
        ciphertext
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The encrypted values of the named secrets of a project: (name, nonce, ciphertext).
pub async fn encrypted(
    db: impl PgExecutor<'_>,
    project: ProjectId,
    names: &[String],
) -> Result<Vec<(String, Vec<u8>, Vec<u8>)>> {
    let rows = sqlx::query!(
        "SELECT name, nonce, ciphertext FROM secrets WHERE project_id = $1 AND name = ANY($2)",
        project.0,
        names
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.name, r.nonce, r.ciphertext))
        .collect())
}

pub async fn list(db: impl PgExecutor<'_>, project: ProjectId) -> Result<Vec<SecretInfo>> {
    Ok(sqlx::query_as!(
        SecretInfo,
        "SELECT name, updated_at FROM secrets WHERE project_id = $1 ORDER BY name",
        project.0
    )
    .fetch_all(db)
    .await?)
}
