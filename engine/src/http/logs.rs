//! Reading logs: plain download (streamed from the stored chunks, so a 1 GB log never sits in
//! memory) and live following over Server-Sent Events, resumable with `Last-Event-ID` (the
//! last line number the viewer has).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use gantry_runner::wire;
use serde::Serialize;

use crate::engine::Engine;
use crate::store::{StageRunId, StageStatus, logs, stages};

/// One log line, as the `data` of a log stream event.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = LogLine)]
pub struct LineView<'a> {
    /// The line number, from 1 per attempt.
    pub n: i64,
    /// When it was written (Unix milliseconds).
    pub ts_ms: i64,
    #[schema(schema_with = stream_schema)]
    pub stream: wire::Stream,
    pub text: &'a str,
}

/// `wire::Stream`'s names as it serialises them: the runner crate knows nothing of OpenAPI.
fn stream_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["stdout", "stderr", "system"]))
        .build()
}

/// Calls `f` for each stored line of a chunk with its line number, starting after `after`.
pub fn each_line<'a>(chunk: &'a logs::Chunk, after: i64, mut f: impl FnMut(LineView<'a>)) {
    for (i, raw) in chunk.data.split_terminator('\n').enumerate() {
        let n = chunk.first_seq + i64::try_from(i).unwrap_or(i64::MAX);
        if n <= after {
            continue;
        }
        if let Ok(line) = wire::decode_line(raw) {
            f(LineView {
                n,
                ts_ms: line.ts_ms,
                stream: line.stream,
                text: line.text,
            });
        }
    }
}

/// Chunks read per round trip: a page bounds the memory a reader holds and how long it holds a
/// database connection, however long the log is. One chunk: a chunk is up to a runner's batch
/// (about 4 MiB) and a reader holds it about three times over (the row as received, its text,
/// the text sent), so a page of 8 took the engine from 107 to 212 MiB while one 200 MB log was
/// read (docs/performance.md, "Against peers"); a round trip per chunk costs next to nothing.
const PAGE: i64 = 1;

/// The plain-text log of one attempt: the lines' text only, streamed a page of chunks at a
/// time. A read that fails ends the body with an error, never as if the log ended there.
pub fn plain(engine: Arc<Engine>, id: StageRunId, attempt: i32) -> Body {
    let stream = futures_util::stream::unfold(Some(0i64), move |after| {
        let engine = Arc::clone(&engine);
        async move {
            let after = after?;
            match logs::chunks_page(&engine.store.pool, id, attempt, after, PAGE).await {
                Err(e) => Some((Err(std::io::Error::other(e)), None)),
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let mut text = String::with_capacity(page.iter().map(|c| c.data.len()).sum());
                    let mut last = after;
                    for chunk in &page {
                        each_line(chunk, last, |line| {
                            text.push_str(line.text);
                            text.push('\n');
                        });
                        last = chunk.last_seq;
                    }
                    Some((Ok(text), Some(last)))
                }
            }
        }
    });
    Body::from_stream(stream)
}

/// Follows a stage's log live: everything after line `after`, then new lines as they are
/// stored, then an `end` event once the attempt has finished and every line was sent.
pub fn follow(
    engine: Arc<Engine>,
    id: StageRunId,
    attempt: i32,
    after: i64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before the first read so no notification falls between the two.
    let notifications = engine.logs.subscribe();
    let state = (engine, notifications, after, false);
    let stream =
        futures_util::stream::unfold(state, move |(engine, mut rx, after, done)| async move {
            if done {
                return None;
            }
            loop {
                // Look whether the attempt has ended *before* reading: a runner completes only
                // once all its lines are stored, so a read after seeing the end sees every line.
                // (Checked after the read, lines stored and completed in between were lost.)
                let finished = attempt_ended(&engine, id, attempt).await;
                let mut events = Vec::new();
                let mut last = after;
                // Pages of chunks until a batch of events is ready: a query per page, never
                // one left open over the rest of a long log.
                while events.len() < 5_000 {
                    let Ok(page) =
                        logs::chunks_page(&engine.store.pool, id, attempt, last, PAGE).await
                    else {
                        break;
                    };
                    if page.is_empty() {
                        break;
                    }
                    for chunk in &page {
                        each_line(chunk, last, |line| {
                            let data = serde_json::to_string(&line).unwrap_or_default();
                            events.push(Event::default().id(line.n.to_string()).data(data));
                        });
                        last = chunk.last_seq;
                    }
                }
                if !events.is_empty() {
                    let batch = futures_util::stream::iter(events.into_iter().map(Ok));
                    return Some((batch.boxed(), (engine, rx, last, false)));
                }
                // Nothing new: done if the attempt had ended before the read.
                if finished {
                    let end = Event::default().event("end").data("{}");
                    return Some((
                        futures_util::stream::iter(vec![Ok(end)]).boxed(),
                        (engine, rx, last, true),
                    ));
                }
                // Wait for lines of this stage (or poll, should a notification be lost).
                let wait = async {
                    loop {
                        match rx.recv().await {
                            Ok(stage) if stage == id => return,
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                std::future::pending::<()>().await
                            }
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
            }
        })
        .flatten();
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Whether attempt `attempt` of the stage is over, so no more of its lines can come.
async fn attempt_ended(engine: &Engine, id: StageRunId, attempt: i32) -> bool {
    match stages::get(&engine.store.pool, id).await {
        // A later attempt has started.
        Ok(row) if row.attempt > attempt => true,
        // The attempt itself: over unless still running (queued again means it failed and
        // waits for a retry).
        Ok(row) if row.attempt == attempt => row.status != StageStatus::Running,
        // Not started yet (a viewer opening a pending or queued stage): wait for it, unless
        // the stage ended without running it (skipped, cancelled, rejected).
        Ok(row) => row.status.is_terminal(),
        Err(_) => true,
    }
}
