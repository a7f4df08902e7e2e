//! Sends queued log lines to the engine in batches and drops them once acknowledged.
//!
//! One batch is in flight at a time: the engine answers with the highest line it has stored, and
//! only then are lines released. After a broken connection or an engine restart the same lines
//! are sent again (the engine skips those it has); on a 409 the engine names the line it needs.
//! Step reports go out between batches (the engine records them idempotently).
//!
//! Once the queue closes, the sender stops with a small tail unsent: the completion carries it
//! ([`crate::wire::Completion::tail`]), saving a round trip at the end of every stage.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::engine::{ApiError, EngineClient, LogReply};
use crate::logs::queue::{LogQueue, Pacing, Work};
use crate::wire::{MAX_LOG_BATCH_BYTES, StepReport};

/// How long a line may wait for company before it is sent anyway.
pub const LINGER: Duration = Duration::from_millis(100);
/// How long a step report may wait (see [`Pacing::report_linger`]).
pub const REPORT_LINGER: Duration = Duration::from_millis(50);

/// Replies that acknowledge nothing new before the sender stops trusting the engine.
const MAX_STALLED_REPLIES: u32 = 3;

/// Where batches go: the engine, or a recorder in tests.
pub trait LogSink {
    fn send(
        &self,
        first_seq: u64,
        body: Bytes,
    ) -> impl Future<Output = Result<LogReply, ApiError>> + Send;

    fn send_reports(
        &self,
        reports: &[StepReport],
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

impl LogSink for EngineClient {
    fn send(
        &self,
        first_seq: u64,
        body: Bytes,
    ) -> impl Future<Output = Result<LogReply, ApiError>> + Send {
        self.post_logs(first_seq, body)
    }

    fn send_reports(
        &self,
        reports: &[StepReport],
    ) -> impl Future<Output = Result<(), ApiError>> + Send {
        self.step_reports(reports)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("sending logs: {0}")]
    Api(#[from] ApiError),
    #[error(
        "the engine lost log lines it had acknowledged: it has lines up to {acked}, \
         the runner only kept lines from {first} on"
    )]
    LinesLost { acked: u64, first: u64 },
    #[error("the engine keeps acknowledging line {acked} without storing lines from {first} on")]
    NoProgress { acked: u64, first: u64 },
}

/// Sends batches and reports until the queue is closed and every line but a tail of at most
/// `keep_tail` bytes is acknowledged (0: every line, and every report, is sent); returns the
/// highest acknowledged line.
pub async fn send_logs<S: LogSink>(
    queue: &LogQueue,
    sink: &S,
    keep_tail: usize,
) -> Result<u64, LogError> {
    let pacing = Pacing {
        max_bytes: MAX_LOG_BATCH_BYTES,
        linger: LINGER,
        report_linger: REPORT_LINGER,
        keep_tail,
    };
    let mut acked = queue.last_line();
    while let Some(work) = queue.next_work(&pacing).await {
        let mut batch = match work {
            Work::Lines(batch) => batch,
            Work::Reports(reports) => {
                sink.send_reports(&reports).await?;
                continue;
            }
        };
        let mut stalled = 0;
        loop {
            let reply = sink.send(batch.first_seq, batch.body.clone()).await?;
            let (LogReply::Stored(ack) | LogReply::Gap(ack)) = reply;
            acked = acked.max(ack.acked);
            if ack.acked >= batch.last_seq() {
                queue.release(batch.body.len());
                break;
            }
            if ack.acked + 1 < batch.first_seq {
                return Err(LogError::LinesLost {
                    acked: ack.acked,
                    first: batch.first_seq,
                });
            }
            // The engine has part of the batch (or claims a gap where there is none): resend
            // what it lacks, but not forever if it never moves on.
            let skip = ack.acked + 1 - batch.first_seq;
            if skip == 0 {
                stalled += 1;
                if stalled >= MAX_STALLED_REPLIES {
                    return Err(LogError::NoProgress {
                        acked: ack.acked,
                        first: batch.first_seq,
                    });
                }
            } else {
                stalled = 0;
            }
            queue.release(batch.skip_lines(skip));
        }
    }
    Ok(acked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::queue::DEFAULT_CAPACITY;
    use crate::wire::{LogAck, count_batch_lines};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Stores lines like the engine does (skipping those it has, refusing gaps), with scripted
    /// failures first.
    #[derive(Default)]
    struct Recorder {
        stored: Mutex<Vec<String>>,
        sent: Mutex<Vec<(u64, u64)>>,
        script: Mutex<VecDeque<Scripted>>,
        reports: Mutex<Vec<StepReport>>,
    }

    enum Scripted {
        /// Store only this many lines of the next batch (an engine killed mid-write).
        StorePartly(usize),
        /// Forget everything from this line on (an engine that lost unacknowledged lines).
        Forget(u64),
    }

    impl LogSink for Recorder {
        fn send(
            &self,
            first_seq: u64,
            body: Bytes,
        ) -> impl Future<Output = Result<LogReply, ApiError>> + Send {
            let text = String::from_utf8(body.to_vec()).expect("utf-8");
            let lines = count_batch_lines(&text).expect("valid batch");
            self.sent
                .lock()
                .expect("lock")
                .push((first_seq, first_seq + lines - 1));
            let mut stored = self.stored.lock().expect("lock");
            let mut limit = usize::MAX;
            match self.script.lock().expect("lock").pop_front() {
                Some(Scripted::StorePartly(n)) => limit = n,
                Some(Scripted::Forget(from)) => stored.truncate((from - 1) as usize),
                None => {}
            }
            let have = stored.len() as u64;
            let reply = if first_seq > have + 1 {
                LogReply::Gap(LogAck { acked: have })
            } else {
                let skip = (have + 1 - first_seq) as usize;
                for line in text.split_terminator('\n').skip(skip).take(limit) {
                    stored.push(line.to_owned());
                }
                LogReply::Stored(LogAck {
                    acked: stored.len() as u64,
                })
            };
            std::future::ready(Ok(reply))
        }

        fn send_reports(
            &self,
            reports: &[StepReport],
        ) -> impl Future<Output = Result<(), ApiError>> + Send {
            self.reports
                .lock()
                .expect("lock")
                .extend_from_slice(reports);
            std::future::ready(Ok(()))
        }
    }

    async fn push_numbered(queue: &LogQueue, from: u64, to: u64) {
        for i in from..=to {
            queue
                .push(&format!("{i} o line {i}\n"), 1)
                .await
                .expect("open");
        }
    }

    fn expected(to: u64) -> Vec<String> {
        (1..=to).map(|i| format!("{i} o line {i}")).collect()
    }

    #[tokio::test]
    async fn every_line_arrives_once_and_in_order() {
        let queue = LogQueue::new(0, DEFAULT_CAPACITY);
        let sink = Recorder::default();
        push_numbered(&queue, 1, 1000).await;
        queue.close();
        let acked = send_logs(&queue, &sink, 0).await.expect("sent");
        assert_eq!(acked, 1000);
        assert_eq!(*sink.stored.lock().expect("lock"), expected(1000));
        assert_eq!(queue.held_bytes(), 0);
    }

    #[tokio::test]
    async fn lines_pushed_together_within_the_linger_share_a_batch() {
        let queue = std::sync::Arc::new(LogQueue::new(0, DEFAULT_CAPACITY));
        let sink = std::sync::Arc::new(Recorder::default());
        let sender = {
            let (queue, sink) = (queue.clone(), sink.clone());
            tokio::spawn(async move { send_logs(&queue, &*sink, 0).await })
        };
        push_numbered(&queue, 1, 50).await;
        tokio::time::sleep(LINGER * 3).await;
        push_numbered(&queue, 51, 60).await;
        queue.close();
        assert_eq!(sender.await.expect("joined").expect("sent"), 60);
        assert_eq!(*sink.sent.lock().expect("lock"), vec![(1, 50), (51, 60)]);
    }

    #[tokio::test]
    async fn a_partly_stored_batch_is_completed_from_the_acknowledged_line() {
        let queue = LogQueue::new(0, DEFAULT_CAPACITY);
        let sink = Recorder::default();
        sink.script
            .lock()
            .expect("lock")
            .push_back(Scripted::StorePartly(7));
        push_numbered(&queue, 1, 20).await;
        queue.close();
        assert_eq!(send_logs(&queue, &sink, 0).await.expect("sent"), 20);
        assert_eq!(*sink.stored.lock().expect("lock"), expected(20));
        assert_eq!(*sink.sent.lock().expect("lock"), vec![(1, 20), (8, 20)]);
    }

    #[tokio::test]
    async fn losing_acknowledged_lines_is_an_error_not_a_silent_gap() {
        let queue = std::sync::Arc::new(LogQueue::new(0, DEFAULT_CAPACITY));
        let sink = std::sync::Arc::new(Recorder::default());
        push_numbered(&queue, 1, 5).await;
        let sender = {
            let (queue, sink) = (queue.clone(), sink.clone());
            tokio::spawn(async move { send_logs(&queue, &*sink, 0).await })
        };
        tokio::time::sleep(LINGER * 3).await;
        sink.script
            .lock()
            .expect("lock")
            .push_back(Scripted::Forget(3));
        push_numbered(&queue, 6, 8).await;
        queue.close();
        let err = sender
            .await
            .expect("joined")
            .expect_err("lines 3..5 are gone");
        assert!(
            matches!(err, LogError::LinesLost { acked: 2, first: 6 }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn resumed_numbering_continues_after_the_engines_lines() {
        let queue = LogQueue::new(3, DEFAULT_CAPACITY);
        let sink = Recorder::default();
        sink.stored.lock().expect("lock").extend(expected(3));
        push_numbered(&queue, 4, 6).await;
        queue.close();
        assert_eq!(send_logs(&queue, &sink, 0).await.expect("sent"), 6);
        assert_eq!(*sink.stored.lock().expect("lock"), expected(6));
    }

    fn started(index: u32) -> StepReport {
        StepReport::Started(crate::wire::StepStarted {
            index,
            name: format!("step {index}"),
            first_line: 1,
            started_ms: None,
        })
    }

    #[tokio::test]
    async fn a_closed_queue_leaves_a_small_tail_and_the_reports_for_the_completion() {
        let queue = LogQueue::new(0, DEFAULT_CAPACITY);
        let sink = Recorder::default();
        push_numbered(&queue, 1, 10).await;
        queue.push_report(started(0)).expect("open");
        queue.close();
        send_logs(&queue, &sink, 1024).await.expect("sent");
        assert!(sink.sent.lock().expect("lock").is_empty());
        assert!(sink.reports.lock().expect("lock").is_empty());
        let (tail, reports) = queue.take_tail();
        let tail = tail.expect("a tail");
        assert_eq!((tail.first_seq, tail.lines), (1, 10));
        assert_eq!(reports, vec![started(0)]);
    }

    #[tokio::test]
    async fn lines_beyond_the_tail_are_sent_before_the_sender_stops() {
        let queue = LogQueue::new(0, DEFAULT_CAPACITY);
        let sink = Recorder::default();
        push_numbered(&queue, 1, 100).await; // about 1,400 bytes
        queue.push_report(started(0)).expect("open");
        queue.close();
        assert_eq!(send_logs(&queue, &sink, 100).await.expect("sent"), 100);
        assert_eq!(*sink.stored.lock().expect("lock"), expected(100));
        // The reports still ride with the completion.
        assert_eq!(queue.take_tail(), (None, vec![started(0)]));
    }

    #[tokio::test]
    async fn reports_of_a_running_stage_are_sent_after_their_linger() {
        let queue = std::sync::Arc::new(LogQueue::new(0, DEFAULT_CAPACITY));
        let sink = std::sync::Arc::new(Recorder::default());
        let sender = {
            let (queue, sink) = (queue.clone(), sink.clone());
            tokio::spawn(async move { send_logs(&queue, &*sink, 1024).await })
        };
        queue.push_report(started(0)).expect("open");
        queue.push_report(started(1)).expect("open");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while sink.reports.lock().expect("lock").len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "reports not sent");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            *sink.reports.lock().expect("lock"),
            vec![started(0), started(1)]
        );
        queue.close();
        sender.await.expect("joined").expect("sent");
        assert_eq!(queue.take_tail(), (None, Vec::new()));
    }
}
