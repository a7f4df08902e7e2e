//! Engine-wide settings every replica shares, such as the key that signs runner tokens.

use sqlx::PgExecutor;

use super::Result;

/// Returns the named value, storing `candidate` first if none exists yet. Replicas racing to
/// create it all end up with the one that won.
pub async fn get_or_init(
    db: impl PgExecutor<'_> + Copy,
    name: &str,
    candidate: &[u8],
) -> Result<Vec<u8>> {
    sqlx::query!(
        "INSERT INTO engine_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        name,
        candidate
    )
    .execute(db)
    .await?;
    let value = sqlx::query_scalar!("SELECT value FROM engine_settings WHERE name = $1", name)
        .fetch_one(db)
        .await?;
    Ok(value)
}
