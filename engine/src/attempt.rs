//! A stage attempt as its runner reports it: the spec it asks for, log batches, step reports,
//! heartbeats and the completion. The runner API (`http::runner`) only checks the runner's
//! token and translates to and from HTTP; what each report means and how it is stored is here.
//!
//! Every report names its attempt (the token's grant), and a report of an attempt that is no
//! longer the stage's current one is refused ([`AttemptError::Stale`]), so a runner of an
//! earlier attempt stops instead of writing into a later one.

use gantry_runner::wire::{self, Completion, LogTail, Outcome, StepReport};

use crate::engine::Engine;
use crate::executor::Observation;
use crate::store::{self, StageStatus, StoreError, logs, stages};
use crate::token::Grant;

#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("attempt {attempt} of stage run {stage_run} is no longer current")]
    Stale { attempt: i32, stage_run: i64 },
    /// The report itself is malformed (a line count that does not match, line 0).
    #[error("{0}")]
    BadReport(String),
    /// The report does not fit what is stored (log lines missing before it).
    #[error("{0}")]
    Conflict(String),
    /// The stage's own inputs are wrong: the attempt was failed with this reason.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
}

impl From<sqlx::Error> for AttemptError {
    fn from(e: sqlx::Error) -> Self {
        AttemptError::Store(StoreError::Database(e))
    }
}

fn stale(grant: &Grant) -> AttemptError {
    AttemptError::Stale {
        attempt: grant.attempt,
        stage_run: grant.stage_run.0,
    }
}

/// The stage run, if the grant's attempt is its current, running attempt.
pub async fn current(engine: &Engine, grant: &Grant) -> Result<stages::StageRunRow, AttemptError> {
    let row = stages::get(&engine.store.pool, grant.stage_run).await?;
    if row.attempt != grant.attempt || row.status != StageStatus::Running {
        return Err(stale(grant));
    }
    Ok(row)
}

/// What the runner is to do. A stage whose own inputs are wrong (a secret that does not exist,
/// a template without a value, registry credentials that are not a docker config.json) cannot
/// be done by any runner: the attempt fails with the reason, where the user sees it, instead
/// of later as "the runner ended without reporting".
pub async fn spec(engine: &Engine, grant: &Grant) -> Result<wire::StageSpec, AttemptError> {
    // Contact first: from then on the engine writes no more notes into the log (a pod's
    // waiting), so the line count the spec gives the runner to number on from is final.
    stages::contacted(&engine.store.pool, grant.stage_run, grant.attempt).await?;
    let row = current(engine, grant).await?;
    match crate::spec::build(engine, &row).await {
        Ok(spec) => Ok(spec),
        Err(crate::run::RunError::BadRequest(why)) => {
            let mut tx = engine.store.pool.begin().await?;
            stages::finish_attempt(
                &mut tx,
                grant.stage_run,
                grant.attempt,
                StageStatus::Failed,
                Some(&why),
            )
            .await?;
            store::wake(&mut *tx).await?;
            tx.commit().await?;
            Err(AttemptError::Failed(why))
        }
        Err(e) => Err(e.into()),
    }
}

/// How a log batch was taken.
pub enum LogsTaken {
    /// Stored (or stored before): lines up to `acked` are safe.
    Acked { acked: u64 },
    /// Lines before the batch are missing: the runner resends from `acked + 1`.
    Gap { acked: u64 },
}

/// Stores a batch of log lines (`<unix ms> <o|e|s> <text>` each) numbered from `first_seq`;
/// idempotent by line number.
pub async fn append_logs(
    engine: &Engine,
    grant: &Grant,
    first_seq: u64,
    batch: &str,
) -> Result<LogsTaken, AttemptError> {
    if first_seq == 0 {
        return Err(AttemptError::BadReport("line numbers start at 1".into()));
    }
    let lines =
        wire::count_batch_lines(batch).map_err(|e| AttemptError::BadReport(e.to_string()))?;
    let mut tx = engine.store.pool.begin().await?;
    let appended = logs::append(
        &mut tx,
        grant.stage_run,
        grant.attempt,
        first_seq,
        lines,
        batch,
        engine.config.log_cap_bytes,
    )
    .await?;
    tx.commit().await?;
    match appended {
        logs::Appended::Acked { acked } => {
            engine.metrics.add_log_bytes(batch.len());
            Ok(LogsTaken::Acked { acked })
        }
        logs::Appended::Gap { acked } => Ok(LogsTaken::Gap { acked }),
        logs::Appended::Stale => Err(stale(grant)),
    }
}

/// Records step reports (started, finished) of the current attempt.
pub async fn report_steps(
    engine: &Engine,
    grant: &Grant,
    reports: &[StepReport],
) -> Result<(), AttemptError> {
    current(engine, grant).await?;
    let mut tx = engine.store.pool.begin().await?;
    record_steps(&mut tx, grant, reports).await?;
    tx.commit().await?;
    Ok(())
}

/// Records step reports in order; each is idempotent, so a resent report changes nothing.
async fn record_steps(
    tx: &mut sqlx::PgConnection,
    grant: &Grant,
    reports: &[StepReport],
) -> Result<(), AttemptError> {
    let index = |i: u32| i32::try_from(i).unwrap_or(i32::MAX);
    for report in reports {
        match report {
            StepReport::Started(step) => {
                let started_at = step
                    .started_ms
                    .and_then(chrono::DateTime::from_timestamp_millis);
                stages::step_started(
                    &mut *tx,
                    grant.stage_run,
                    grant.attempt,
                    index(step.index),
                    &step.name,
                    i64::try_from(step.first_line).unwrap_or(i64::MAX),
                    started_at,
                )
                .await?;
            }
            StepReport::Finished(step) => {
                stages::step_finished(
                    &mut *tx,
                    grant.stage_run,
                    grant.attempt,
                    index(step.index),
                    step.exit_code,
                    i64::try_from(step.duration_ms).unwrap_or(i64::MAX),
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// Notes that the runner is alive; true when the stage is to be cancelled.
pub async fn heartbeat(engine: &Engine, grant: &Grant) -> Result<bool, AttemptError> {
    stages::heartbeat(&engine.store.pool, grant.stage_run, grant.attempt)
        .await?
        .ok_or_else(|| stale(grant))
}

/// Records the attempt's end: the log tail and step reports it carries, the pushed image, and
/// its status, in one transaction — a completion is recorded whole or not at all, and a resent
/// one finds everything already there.
pub async fn complete(
    engine: &Engine,
    grant: &Grant,
    completion: &Completion,
) -> Result<(), AttemptError> {
    let mut status = match completion.outcome {
        Outcome::Succeeded => StageStatus::Succeeded,
        Outcome::Failed => StageStatus::Failed,
        Outcome::Cancelled => StageStatus::Cancelled,
        Outcome::TimedOut => StageStatus::TimedOut,
    };
    let mut reason = completion.reason.clone();
    // Asked before the transaction: the executor may take a moment to answer.
    if status == StageStatus::Cancelled {
        let row = stages::get(&engine.store.pool, grant.stage_run).await?;
        if !row.cancel_requested
            && let Some((why_status, why)) = stopped_from_outside(engine, &row).await
        {
            (status, reason) = (why_status, Some(why));
        }
    }
    let mut tx = engine.store.pool.begin().await?;
    // The run before the stage's rows (the tail and the steps change them): the lock order of
    // `stages::lock_run_of`.
    stages::lock_run_of(&mut tx, grant.stage_run).await?;
    if let Some(tail) = &completion.tail {
        append_tail(engine, &mut tx, grant, tail).await?;
    }
    record_steps(&mut tx, grant, &completion.steps).await?;
    let row = stages::get(&mut *tx, grant.stage_run).await?;
    if u64::try_from(row.log_lines).unwrap_or(0) < completion.lines && row.attempt == grant.attempt
    {
        return Err(AttemptError::Conflict(format!(
            "{} log lines were reported but only {} stored; send the rest first",
            completion.lines, row.log_lines
        )));
    }
    if let (Outcome::Succeeded, Some(image)) = (completion.outcome, &completion.image) {
        stages::set_image(&mut *tx, grant.stage_run, grant.attempt, image).await?;
    }
    let ended = stages::finish_attempt(
        &mut tx,
        grant.stage_run,
        grant.attempt,
        status,
        reason.as_deref(),
    )
    .await?;
    store::wake(&mut *tx).await?;
    tx.commit().await?;
    match ended {
        Some(s) => {
            // This process's scheduler need not wait for its own NOTIFY to come back round.
            engine.wake.notify_one();
            engine
                .metrics
                .stage_duration
                .observe_between(row.started_at, Some(chrono::Utc::now()));
            tracing::info!(stage = %row.key, attempt = grant.attempt, status = s.as_str(), "stage attempt completed");
            Ok(())
        }
        // Completing twice (a retried request) is fine if it is the same attempt.
        None if row.attempt == grant.attempt && row.status.is_terminal() => Ok(()),
        None => Err(stale(grant)),
    }
}

/// Stores the log lines a completion carries, like a log batch.
async fn append_tail(
    engine: &Engine,
    tx: &mut sqlx::PgConnection,
    grant: &Grant,
    tail: &LogTail,
) -> Result<(), AttemptError> {
    if tail.first_seq == 0 {
        return Err(AttemptError::BadReport("line numbers start at 1".into()));
    }
    let lines =
        wire::count_batch_lines(&tail.lines).map_err(|e| AttemptError::BadReport(e.to_string()))?;
    if lines == 0 {
        return Ok(());
    }
    match logs::append(
        tx,
        grant.stage_run,
        grant.attempt,
        tail.first_seq,
        lines,
        &tail.lines,
        engine.config.log_cap_bytes,
    )
    .await?
    {
        logs::Appended::Acked { .. } => {
            engine.metrics.add_log_bytes(tail.lines.len());
            Ok(())
        }
        logs::Appended::Gap { acked } => Err(AttemptError::Conflict(format!(
            "the completion's log lines start at line {} but only lines up to {acked} are stored",
            tail.first_seq
        ))),
        logs::Appended::Stale => Err(stale(grant)),
    }
}

/// A runner that stops as cancelled although nobody cancelled its stage was stopped from
/// outside (its pod deleted, its Job past its deadline): the executor may tell why, and that
/// is the stage's outcome rather than a cancel.
async fn stopped_from_outside(
    engine: &Engine,
    row: &stages::StageRunRow,
) -> Option<(StageStatus, String)> {
    let (name, handle) = (row.executor.as_deref()?, row.executor_handle.as_deref()?);
    let executor = engine.executor(name)?;
    // A Job's executor learns of the deletion or deadline from its watch, which may lag the
    // runner's SIGTERM by a moment: look again for a little while.
    let looks = if executor.wants_pod() { 20 } else { 1 };
    for _ in 0..looks {
        match executor.observe(handle).await {
            Ok(Observation::Failed { reason, timed_out }) => {
                let status = if timed_out {
                    StageStatus::TimedOut
                } else {
                    StageStatus::Failed
                };
                return Some((status, reason));
            }
            Ok(Observation::Running | Observation::Waiting { .. }) if looks > 1 => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            _ => return None,
        }
    }
    None
}
