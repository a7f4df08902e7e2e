//! The bounded queue between the step readers and the log sender, and the stage-wide line
//! numbering.
//!
//! Lines stay here until the engine acknowledges them, so a broken connection or an engine restart
//! loses nothing: the sender resends from the engine's `acked + 1`. The queue is bounded in bytes;
//! a full queue makes the readers wait, the child then blocks writing to its pipe, and a slow
//! engine slows the step down instead of growing the runner's memory.
//!
//! Step reports (a step started or finished) wait here too, so the steps never wait for the
//! engine: the sender delivers them shortly after, or the completion carries them together with
//! the last lines ([`LogQueue::take_tail`]).

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::wire::StepReport;

/// Default bound: two full batches, so readers fill one while the other is in flight.
pub const DEFAULT_CAPACITY: usize = 2 * crate::wire::MAX_LOG_BATCH_BYTES;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the log queue is closed")]
pub struct QueueClosed;

/// When the sender takes work out of the queue.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// The largest batch of lines.
    pub max_bytes: usize,
    /// How long a line may wait for company.
    pub linger: Duration,
    /// How long a step report may wait: long enough that a short step's start and end travel
    /// together (or with the completion), short enough that a viewer sees a long step start.
    pub report_linger: Duration,
    /// Once the queue is closed, at most this many bytes of lines (and all reports) are left for
    /// the completion instead of being sent as batches.
    pub keep_tail: usize,
}

/// What the sender should send next.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    Lines(Batch),
    Reports(Vec<StepReport>),
}

/// Consecutive encoded lines handed to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub first_seq: u64,
    pub lines: u64,
    pub body: Bytes,
}

impl Batch {
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.lines - 1
    }

    /// Drops the first `lines` lines (the engine already has them); returns the bytes dropped.
    pub fn skip_lines(&mut self, lines: u64) -> usize {
        let lines = lines.min(self.lines);
        let cut = if lines == 0 {
            0
        } else if lines == self.lines {
            self.body.len()
        } else {
            let nth = usize::try_from(lines - 1).unwrap_or(usize::MAX);
            memchr::memchr_iter(b'\n', &self.body)
                .nth(nth)
                .map_or(self.body.len(), |i| i + 1)
        };
        self.body = self.body.slice(cut..);
        self.first_seq += lines;
        self.lines -= lines;
        cut
    }
}

pub struct LogQueue {
    state: Mutex<State>,
    capacity: usize,
    /// Wakes the sender: data arrived in an empty queue, a full batch is ready, or closing.
    ready: Notify,
    /// Wakes readers waiting for room.
    space: Notify,
}

struct State {
    /// Encoded lines not yet handed to the sender, starting with line `unsent_first`.
    unsent: BytesMut,
    unsent_first: u64,
    /// When the oldest unsent line arrived: the sender waits at most its linger after that.
    unsent_since: Option<Instant>,
    /// The number the next pushed line gets.
    next: u64,
    /// Bytes handed to the sender and not yet acknowledged; they still count against capacity.
    in_flight: usize,
    /// Step reports not yet handed out, in order, and when the oldest arrived.
    reports: Vec<StepReport>,
    reports_since: Option<Instant>,
    closed: bool,
}

impl LogQueue {
    /// A queue whose first line is `logged_lines + 1`: a resumed attempt continues the numbering.
    pub fn new(logged_lines: u64, capacity: usize) -> LogQueue {
        LogQueue {
            state: Mutex::new(State {
                unsent: BytesMut::new(),
                unsent_first: logged_lines + 1,
                unsent_since: None,
                next: logged_lines + 1,
                in_flight: 0,
                reports: Vec::new(),
                reports_since: None,
                closed: false,
            }),
            capacity,
            ready: Notify::new(),
            space: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update is one statement
        // group without await points), so carry on rather than poison the whole runner.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The number of the last line pushed so far (`logged_lines` when none).
    pub fn last_line(&self) -> u64 {
        self.lock().next - 1
    }

    /// Appends `lines` encoded lines, waiting while the queue is full. Returns the number of the
    /// first of them.
    pub async fn push(&self, encoded: &str, lines: u64) -> Result<u64, QueueClosed> {
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut state = self.lock();
                if state.closed {
                    return Err(QueueClosed);
                }
                let used = state.unsent.len() + state.in_flight;
                // An empty queue takes any block, however large, so nothing waits forever.
                if used == 0 || used + encoded.len() <= self.capacity {
                    let before = state.unsent.len();
                    state.unsent.extend_from_slice(encoded.as_bytes());
                    let first = state.next;
                    state.next += lines;
                    if before == 0 {
                        state.unsent_since = Some(Instant::now());
                    }
                    let batch = crate::wire::MAX_LOG_BATCH_BYTES;
                    let wake = before == 0 || (before < batch && state.unsent.len() >= batch);
                    drop(state);
                    if wake {
                        self.ready.notify_one();
                    }
                    return Ok(first);
                }
            }
            space.await;
        }
    }

    /// No more lines will come; the sender drains what is left and stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.space.notify_waiters();
    }

    /// Queues a step report for the sender (or the completion). Never waits: reports are few
    /// and small.
    pub fn push_report(&self, report: StepReport) -> Result<(), QueueClosed> {
        let mut state = self.lock();
        if state.closed {
            return Err(QueueClosed);
        }
        let first = state.reports.is_empty();
        state.reports.push(report);
        if first {
            state.reports_since = Some(Instant::now());
        }
        drop(state);
        if first {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// The next work for the sender, handed out by `pacing`: a batch of at most
    /// `pacing.max_bytes` (whole lines) once it is full, its oldest line has waited the linger,
    /// or the queue is closing; reports once the oldest has waited its linger. `None` once the
    /// queue is closed and what is left fits the tail.
    pub async fn next_work(&self, pacing: &Pacing) -> Option<Work> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            let deadline = {
                let mut state = self.lock();
                let now = Instant::now();
                if state.closed {
                    if state.unsent.len() > pacing.keep_tail {
                        return Some(Work::Lines(take_batch(&mut state, pacing.max_bytes)));
                    }
                    if pacing.keep_tail == 0 && !state.reports.is_empty() {
                        return Some(Work::Reports(take_reports(&mut state)));
                    }
                    return None;
                }
                let reports_due = state.reports_since.map(|t| t + pacing.report_linger);
                if reports_due.is_some_and(|due| now >= due) {
                    return Some(Work::Reports(take_reports(&mut state)));
                }
                let lines_due = if state.unsent.is_empty() {
                    None
                } else {
                    let due = state.unsent_since.unwrap_or(now) + pacing.linger;
                    if state.unsent.len() >= pacing.max_bytes || now >= due {
                        return Some(Work::Lines(take_batch(&mut state, pacing.max_bytes)));
                    }
                    Some(due)
                };
                match (lines_due, reports_due) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            };
            match deadline {
                Some(due) => {
                    tokio::select! {
                        _ = &mut ready => {}
                        _ = tokio::time::sleep_until(due.into()) => {}
                    }
                }
                None => ready.await,
            }
        }
    }

    /// Lines only, everything drained once closed, reports passed over: for tests that read
    /// back what was queued.
    #[cfg(test)]
    pub async fn next_batch(&self, max_bytes: usize, linger: Duration) -> Option<Batch> {
        let pacing = Pacing {
            max_bytes,
            linger,
            report_linger: Duration::from_secs(24 * 3600),
            keep_tail: 0,
        };
        loop {
            match self.next_work(&pacing).await? {
                Work::Lines(batch) => return Some(batch),
                Work::Reports(_) => {}
            }
        }
    }

    /// What the sender left once the queue closed: the unsent lines as one batch (counted as in
    /// flight until released) and the unsent reports, for the completion to carry.
    pub fn take_tail(&self) -> (Option<Batch>, Vec<StepReport>) {
        let mut state = self.lock();
        let lines = (!state.unsent.is_empty()).then(|| {
            let all = state.unsent.len();
            take_batch(&mut state, all)
        });
        (lines, take_reports(&mut state))
    }

    /// The engine has `bytes` more of the in-flight lines: make room for the readers.
    pub fn release(&self, bytes: usize) {
        {
            let mut state = self.lock();
            state.in_flight = state.in_flight.saturating_sub(bytes);
        }
        self.space.notify_waiters();
    }

    /// Bytes held (unsent plus in flight), for tests and diagnostics.
    pub fn held_bytes(&self) -> usize {
        let state = self.lock();
        state.unsent.len() + state.in_flight
    }
}

fn take_reports(state: &mut State) -> Vec<StepReport> {
    state.reports_since = None;
    std::mem::take(&mut state.reports)
}

fn take_batch(state: &mut State, max_bytes: usize) -> Batch {
    let unsent = &state.unsent;
    let (cut, lines) = if unsent.len() <= max_bytes {
        (unsent.len(), state.next - state.unsent_first)
    } else {
        // Whole lines only; every line is far below the batch limit, so one ends in the window.
        let cut = memchr::memrchr(b'\n', &unsent[..max_bytes])
            .or_else(|| memchr::memchr(b'\n', unsent))
            .map_or(unsent.len(), |i| i + 1);
        let lines = memchr::memchr_iter(b'\n', &unsent[..cut]).count() as u64;
        (cut, lines)
    };
    let body = state.unsent.split_to(cut).freeze();
    let first_seq = state.unsent_first;
    state.unsent_first += lines;
    state.in_flight += cut;
    if state.unsent.is_empty() {
        state.unsent_since = None;
    }
    Batch {
        first_seq,
        lines,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const NO_LINGER: Duration = Duration::ZERO;

    #[tokio::test]
    async fn lines_are_numbered_on_from_what_the_engine_already_has() {
        let queue = LogQueue::new(10, DEFAULT_CAPACITY);
        assert_eq!(queue.last_line(), 10);
        assert_eq!(queue.push("1 o a\n1 o b\n", 2).await, Ok(11));
        assert_eq!(queue.push("1 e c\n", 1).await, Ok(13));
        assert_eq!(queue.last_line(), 13);
        let batch = queue.next_batch(1 << 20, NO_LINGER).await.expect("batch");
        assert_eq!(batch.first_seq, 11);
        assert_eq!(batch.lines, 3);
        assert_eq!(batch.last_seq(), 13);
        assert_eq!(&batch.body[..], b"1 o a\n1 o b\n1 e c\n");
    }

    #[tokio::test]
    async fn batches_hold_whole_lines_up_to_the_limit() {
        let queue = LogQueue::new(0, DEFAULT_CAPACITY);
        let line = "1 o 0123456789\n"; // 15 bytes
        for _ in 0..10 {
            queue.push(line, 1).await.expect("open");
        }
        let first = queue.next_batch(50, NO_LINGER).await.expect("batch");
        assert_eq!((first.first_seq, first.lines, first.body.len()), (1, 3, 45));
        let second = queue.next_batch(50, NO_LINGER).await.expect("batch");
        assert_eq!((second.first_seq, second.lines), (4, 3));
        let rest = queue.next_batch(1000, NO_LINGER).await.expect("batch");
        assert_eq!((rest.first_seq, rest.lines), (7, 4));
    }

    #[tokio::test]
    async fn a_small_batch_waits_for_the_linger_unless_closing() {
        let queue = LogQueue::new(0, DEFAULT_CAPACITY);
        queue.push("1 o a\n", 1).await.expect("open");
        let started = Instant::now();
        let batch = queue
            .next_batch(1 << 20, Duration::from_millis(100))
            .await
            .expect("batch");
        assert!(started.elapsed() >= Duration::from_millis(90));
        assert_eq!(batch.lines, 1);

        queue.push("1 o b\n", 1).await.expect("open");
        queue.close();
        let started = Instant::now();
        let batch = queue
            .next_batch(1 << 20, Duration::from_secs(10))
            .await
            .expect("batch");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(batch.first_seq, 2);
        assert_eq!(queue.next_batch(1 << 20, NO_LINGER).await, None);
        assert_eq!(queue.push("1 o c\n", 1).await, Err(QueueClosed));
    }

    #[tokio::test]
    async fn a_full_queue_makes_writers_wait_until_lines_are_acknowledged() {
        let queue = Arc::new(LogQueue::new(0, 20));
        queue.push("1 o 0123456789\n", 1).await.expect("open"); // 15 of 20 bytes
        let writer = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.push("1 o abcdefghij\n", 1).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!writer.is_finished(), "no room for 15 more bytes");
        let batch = queue.next_batch(1 << 20, NO_LINGER).await.expect("batch");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!writer.is_finished(), "in-flight lines still take room");
        queue.release(batch.body.len());
        let first = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("writer woke")
            .expect("joined");
        assert_eq!(first, Ok(2));
    }

    #[test]
    fn skipping_lines_drops_exactly_their_bytes() {
        let mut batch = Batch {
            first_seq: 5,
            lines: 3,
            body: Bytes::from_static(b"1 o a\n1 o bb\n1 o ccc\n"),
        };
        assert_eq!(batch.skip_lines(0), 0);
        assert_eq!(batch.skip_lines(2), 13);
        assert_eq!(batch.first_seq, 7);
        assert_eq!(batch.lines, 1);
        assert_eq!(&batch.body[..], b"1 o ccc\n");
        assert_eq!(batch.skip_lines(5), 8);
        assert_eq!(batch.lines, 0);
    }
}
