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
///
/// At most `cap` bytes are stored per attempt: the batch that would pass the cap is replaced by
/// one line saying so, and later lines are acknowledged (the runner's numbering goes on, and
/// the stage is still judged by its exit code) but not stored.
pub async fn append(
    tx: &mut sqlx::PgConnection,
    id: StageRunId,
    attempt: i32,
    first_seq: u64,
    lines: u64,
    body: &str,
    cap: u64,
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
    let mut fresh = skip_lines(body, already);
    let first = stored + 1;
    let last = first_seq + lines - 1;
    let to_i64 =
        |v: u64| i64::try_from(v).map_err(|_| StoreError::Conflict("line number overflow".into()));
    let kept = sqlx::query_scalar!("SELECT log_bytes FROM stage_runs WHERE id = $1", id.0)
        .fetch_one(&mut *tx)
        .await?;
    let kept = u64::try_from(kept).unwrap_or(0);
    let notice;
    let mut chunk_last = last;
    if kept >= cap {
        // Past the cap: counted, not kept.
        sqlx::query!(
            "UPDATE stage_runs SET log_lines = $2 WHERE id = $1",
            id.0,
            to_i64(last)?
        )
        .execute(&mut *tx)
        .await?;
        return Ok(Appended::Acked { acked: last });
    }
    let size = u64::try_from(fresh.len()).unwrap_or(u64::MAX);
    let stored_bytes = if kept + size > cap {
        // The whole lines that still fit, then one line saying the rest is not kept, in place
        // of the first line that does not fit.
        let room = usize::try_from(cap - kept).unwrap_or(usize::MAX);
        // Cut at a newline (always a character boundary in UTF-8).
        let fitting = fresh.as_bytes()[..room.min(fresh.len())]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |end| end + 1);
        let fitting_lines = u64::try_from(fresh[..fitting].matches('\n').count()).unwrap_or(0);
        let now = chrono::Utc::now().timestamp_millis();
        let mut text = fresh[..fitting].to_owned();
        gantry_runner::wire::encode_line(
            &mut text,
            now,
            gantry_runner::wire::Stream::System,
            &format!(
                "log truncated at {cap} bytes (the stage's log cap): later lines are not kept; the stage goes on"
            ),
        );
        notice = text;
        fresh = &notice;
        chunk_last = first + fitting_lines;
        cap
    } else {
        kept + size
    };
    // Large chunks are compressed with LZ4, the column's setting (migration `log_lz4`).
    sqlx::query!(
        "INSERT INTO log_chunks (stage_run_id, attempt, first_seq, last_seq, data) VALUES ($1, $2, $3, $4, $5)",
        id.0,
        attempt,
        to_i64(first)?,
        to_i64(chunk_last)?,
        fresh
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE stage_runs SET log_lines = $2, log_bytes = $3 WHERE id = $1",
        id.0,
        to_i64(last)?,
        to_i64(stored_bytes)?
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("SELECT pg_notify($1, $2)", LOGS_CHANNEL, id.0.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(Appended::Acked { acked: last })
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

/// Appends one line the engine writes about an attempt whose runner has not called in yet (a
/// pod waiting for a node, an image being pulled). False, and nothing written, once the runner
/// has called in: from then on the log's lines are the runner's to number.
pub async fn note_before_contact(
    tx: &mut sqlx::PgConnection,
    id: StageRunId,
    attempt: i32,
    text: &str,
) -> Result<bool> {
    let row = sqlx::query!(
        "SELECT attempt, log_lines, contacted_at IS NULL AS \"waiting!\" FROM stage_runs
         WHERE id = $1 AND status = 'running' FOR UPDATE",
        id.0
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row.filter(|r| r.attempt == attempt && r.waiting) else {
        return Ok(false);
    };
    let mut line = String::new();
    gantry_runner::wire::encode_line(
        &mut line,
        chrono::Utc::now().timestamp_millis(),
        gantry_runner::wire::Stream::System,
        text,
    );
    let seq = row.log_lines + 1;
    sqlx::query!(
        "INSERT INTO log_chunks (stage_run_id, attempt, first_seq, last_seq, data) VALUES ($1, $2, $3, $3, $4)",
        id.0,
        attempt,
        seq,
        line
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE stage_runs SET log_lines = $2, log_bytes = log_bytes + $3 WHERE id = $1",
        id.0,
        seq,
        i64::try_from(line.len()).unwrap_or(0)
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("SELECT pg_notify($1, $2)", LOGS_CHANNEL, id.0.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(true)
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

/// Up to `limit` chunks holding lines after `after`, in order: one short query per page (each
/// an index range, wherever in a long log it starts), so a reader of a huge log holds a
/// connection only briefly and memory for one page.
pub async fn chunks_page(
    db: impl PgExecutor<'_>,
    id: StageRunId,
    attempt: i32,
    after: i64,
    limit: i64,
) -> Result<Vec<Chunk>> {
    Ok(sqlx::query_as!(
        Chunk,
        r#"SELECT first_seq AS "first_seq!", last_seq AS "last_seq!", data AS "data!" FROM (
               (SELECT first_seq, last_seq, data FROM log_chunks
                WHERE stage_run_id = $1 AND attempt = $2 AND first_seq <= $3 AND last_seq > $3
                ORDER BY first_seq DESC LIMIT 1)
               UNION ALL
               (SELECT first_seq, last_seq, data FROM log_chunks
                WHERE stage_run_id = $1 AND attempt = $2 AND first_seq > $3
                ORDER BY first_seq LIMIT $4)
           ) page ORDER BY first_seq LIMIT $4"#,
        id.0,
        attempt,
        after,
        limit
    )
    .fetch_all(db)
    .await?)
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
