//! A stage's kept files (`artifacts:`): uploaded by its runner as one tar.gz stream, stored in
//! chunks of [`artifacts::CHUNK_BYTES`] with its size and SHA-256, and streamed back one chunk
//! at a time (to later stages' runners, and for download), so neither side holds a whole
//! artifact in memory.

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::attempt::{self, AttemptError};
use crate::engine::Engine;
use crate::store::{StageRunId, artifacts, stages};
use crate::token::Grant;

/// Stores what `upload` yields as artifact `name` of the grant's (current) attempt; returns its
/// id. The artifact exists only once the whole stream is stored (one transaction).
pub async fn upload<S, B, E>(
    engine: &Engine,
    grant: &Grant,
    name: &str,
    mut upload: S,
) -> Result<i64, AttemptError>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    attempt::current(engine, grant).await?;
    let mut tx = engine.store.pool.begin().await?;
    let id = artifacts::begin(&mut tx, grant.stage_run, name).await?;
    let mut pending: Vec<u8> = Vec::with_capacity(artifacts::CHUNK_BYTES);
    let mut hasher = Sha256::new();
    let mut size: i64 = 0;
    let mut seq = 0i32;
    while let Some(piece) = upload.next().await {
        let piece =
            piece.map_err(|e| AttemptError::BadReport(format!("reading the upload: {e}")))?;
        let piece = piece.as_ref();
        hasher.update(piece);
        size += i64::try_from(piece.len()).unwrap_or(0);
        pending.extend_from_slice(piece);
        while pending.len() >= artifacts::CHUNK_BYTES {
            let rest = pending.split_off(artifacts::CHUNK_BYTES);
            artifacts::add_chunk(&mut *tx, id, seq, &pending).await?;
            seq += 1;
            pending = rest;
        }
    }
    if !pending.is_empty() {
        artifacts::add_chunk(&mut *tx, id, seq, &pending).await?;
    }
    artifacts::complete(&mut *tx, id, size, &hex::encode(hasher.finalize())).await?;
    tx.commit().await?;
    Ok(id)
}

/// Whether the grant's attempt may read artifacts kept by `owner`: a stage of its own run, or
/// one whose result its run reused.
pub async fn readable_by(
    engine: &Engine,
    grant: &Grant,
    owner: StageRunId,
) -> Result<bool, AttemptError> {
    let me = stages::get(&engine.store.pool, grant.stage_run).await?;
    let all = stages::for_run(&engine.store.pool, me.run_id).await?;
    Ok(all
        .iter()
        .any(|s| s.id == owner || s.reused_from == Some(owner)))
}

/// Streams an artifact one stored chunk at a time, so memory stays at one chunk.
pub fn chunks(
    pool: sqlx::PgPool,
    id: i64,
) -> impl Stream<Item = Result<Vec<u8>, std::io::Error>> + Send {
    futures_util::stream::unfold(Some(0i32), move |seq| {
        let pool = pool.clone();
        async move {
            let seq = seq?;
            match artifacts::chunk(&pool, id, seq).await {
                Ok(Some(data)) => Some((Ok(data), Some(seq + 1))),
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(e)), None)),
            }
        }
    })
}
