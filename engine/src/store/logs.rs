//! Log storage. Lines arrive in batches from runners and are stored as chunks (one row per
//! batch), never one row per line: a 200 MB log is a few hundred rows. Line numbers are
//! consecutive per stage attempt, so appending is idempotent: lines already stored are skipped,
//! and a batch that would leave a gap is refused with the number the runner must resume from.

use futures_util::{Stream, TryStreamExt};
use sqlx::PgExecutor;

use super::{LOGS_CHANNEL, Result, StageRunId, StoreError, stages};

#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// Stored (or already stored); every line up to `acked` is now durable.
    Acked { acked: u64 },
    /// The batch starts after a gap; resend from `acked + 1`.
    Gap { acked: u64 },
    /// The attempt is not the stage's current one: the runner is stale.
    Stale,
}

/// Appends a batch whose first line is number `first_seq` and which holds `lines` lines
/// (already checked by the caller). Durable once this returns `Acked`.
pub async fn append(
    tx: &mut sqlx::PgConnection,
    id: StageRunId,
    attempt: i32,
    first_seq: u64,
    lines: u64,
    body: &str,
) -> Result<Appended> {
    // The row lock serialises batches of one attempt (a resend racing the original).
    let (current_attempt, _status, stored, _run) = stages::lock(tx, id).await?;
    if current_attempt != attempt {
        return Ok(Appended::Stale);
    }
    let stored = u64::try_from(stored).unwrap_or(0);
    if first_seq > stored + 1 {
        return Ok(Appended::Gap { acked: stored });
    }
    let already = stored + 1 - first_seq;
    if already >= lines {
        return Ok(Appended::Acked { acked: stored });
    }
    let fresh = skip_lines(body, already);
    let first = stored + 1;
    let last = first_seq + lines - 1;
    let to_i64 =
        |v: u64| i64::try_from(v).map_err(|_| StoreError::Conflict("line number overflow".into()));
    if fresh.len() > COMPRESSED_FROM_BYTES && lz4_available(tx).await? {
        // PostgreSQL compresses large values with pglz by default, at about 100 MB/s here: that
        // was most of the time a 4 MiB batch took to store (docs/performance.md, "Engine
        // core"). LZ4 is several times faster both ways. LOCAL: this transaction only.
        sqlx::query!("SET LOCAL default_toast_compression = lz4")
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query!(
        "INSERT INTO log_chunks (stage_run_id, attempt, first_seq, last_seq, data) VALUES ($1, $2, $3, $4, $5)",
        id.0,
        attempt,
        to_i64(first)?,
        to_i64(last)?,
        fresh
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE stage_runs SET log_lines = $2 WHERE id = $1",
        id.0,
        to_i64(last)?
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("SELECT pg_notify($1, $2)", LOGS_CHANNEL, id.0.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(Appended::Acked { acked: last })
}

/// PostgreSQL compresses a value once its row passes about 2 kB (TOAST_TUPLE_THRESHOLD).
const COMPRESSED_FROM_BYTES: usize = 2000;

/// Whether the server can compress with LZ4 (PostgreSQL 14 or later built with it, as the
/// usual packages are). Asked once per process.
async fn lz4_available(tx: &mut sqlx::PgConnection) -> Result<bool> {
    static LZ4: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    let available = LZ4
        .get_or_try_init(|| async {
            sqlx::query_scalar!(
                r#"SELECT EXISTS (SELECT 1 FROM pg_settings
                   WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)) AS "lz4!""#
            )
            .fetch_one(&mut *tx)
            .await
        })
        .await?;
    Ok(*available)
}

fn skip_lines(body: &str, n: u64) -> &str {
    let mut rest = body;
    for _ in 0..n {
        match rest.find('\n') {
            Some(i) => rest = &rest[i + 1..],
            None => return "",
        }
    }
    rest
}

/// One stored chunk: lines `first_seq..=last_seq` encoded as in `gantry_runner::wire`.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub first_seq: i64,
    pub last_seq: i64,
    pub data: String,
}

/// The chunks holding lines after `after`, in order, streamed from the database so a huge log
/// is never held in memory.
pub fn chunks_after<'e>(
    db: impl PgExecutor<'e> + 'e,
    id: StageRunId,
    attempt: i32,
    after: i64,
) -> impl Stream<Item = Result<Chunk>> + 'e {
    sqlx::query_as!(
        Chunk,
        "SELECT first_seq, last_seq, data FROM log_chunks
         WHERE stage_run_id = $1 AND attempt = $2 AND last_seq > $3 ORDER BY first_seq",
        id.0,
        attempt,
        after
    )
    .fetch(db)
    .map_err(StoreError::from)
}

/// Total stored log bytes, for /metrics.
pub async fn stored_bytes(db: impl PgExecutor<'_>) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT COALESCE(sum(length(data)), 0)::bigint AS "n!" FROM log_chunks"#
    )
    .fetch_one(db)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipping_lines_drops_whole_lines() {
        let body = "1 o a\n2 o b\n3 o c\n";
        assert_eq!(skip_lines(body, 0), body);
        assert_eq!(skip_lines(body, 2), "3 o c\n");
        assert_eq!(skip_lines(body, 3), "");
        assert_eq!(skip_lines(body, 9), "");
    }
}
