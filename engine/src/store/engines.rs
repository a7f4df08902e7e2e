//! Engines sharing the database, and the URL runners reach each at: kept fresh by each engine
//! (every housekeeping pass), read when a stage spec is built.

use sqlx::PgExecutor;

use super::Result;

/// Records that engine `id` is alive and reachable at `url`.
pub async fn seen(db: impl PgExecutor<'_>, id: &str, url: &str) -> Result<()> {
    sqlx::query!(
        "INSERT INTO engines (id, url, seen_at) VALUES ($1, $2, now())
         ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, seen_at = now()",
        id,
        url
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The URLs of engines seen in the last `within_secs` seconds, most recently seen first.
pub async fn live(db: impl PgExecutor<'_>, within_secs: f64) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        "SELECT url FROM engines WHERE seen_at > now() - make_interval(secs => $1)
         ORDER BY seen_at DESC",
        within_secs
    )
    .fetch_all(db)
    .await?)
}
