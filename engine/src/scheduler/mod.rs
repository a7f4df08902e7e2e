//! The scheduler: moves runs forward. Each engine process runs one; they coordinate only
//! through the database (row locks with SKIP LOCKED, LISTEN/NOTIFY to wake each other), so
//! any number may share it and each stage attempt runs exactly once.

pub mod decide;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use crate::engine::Engine;
use crate::executor::{Observation, StartRequest};
use crate::pipeline::condition::Facts;
use crate::run::RunContext;
use crate::store::{self, PipelineId, RunStatus, StageStatus, runs, stages};
use crate::token::Grant;
use decide::{Change, StageState, decide};

/// How often the scheduler looks even without a notification (the fallback for a lost one).
const POLL: Duration = Duration::from_secs(1);
/// How often running attempts are checked on (crashed runners, timeouts, lost heartbeats).
const HOUSEKEEPING: Duration = Duration::from_secs(2);

/// Runs until `shutdown` turns true.
pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    // Since when this engine has reached the database without a break. Runners cannot call in
    // while the engine is down or cannot reach its database (their heartbeats fail and are
    // retried), so a runner's silence only counts over time the engine was connected: after a
    // restart, or after a database outage longer than `lost_after_secs`, every running attempt
    // would otherwise be failed at once, although its runner is alive and about to call in.
    let mut connected_since = tokio::time::Instant::now();
    readopt(&engine).await;
    let mut last_housekeeping = tokio::time::Instant::now();
    loop {
        if let Err(e) = tick(&engine).await {
            if e.is_database() {
                connected_since = tokio::time::Instant::now();
            }
            tracing::warn!(error = %e, "scheduler tick failed; retrying");
        }
        if last_housekeeping.elapsed() >= HOUSEKEEPING {
            last_housekeeping = tokio::time::Instant::now();
            let judge_silence =
                connected_since.elapsed() >= Duration::from_secs(engine.config.lost_after_secs);
            if let Err(e) = housekeeping(&engine, judge_silence).await {
                if e.is_database() {
                    connected_since = tokio::time::Instant::now();
                }
                tracing::warn!(error = %e, "scheduler housekeeping failed; retrying");
            }
        }
        tokio::select! {
            _ = engine.wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

async fn tick(engine: &Arc<Engine>) -> Result<(), crate::run::RunError> {
    while let Some(advanced) = advance_next(engine).await? {
        // Start what this run just queued before looking at other runs: the next stage of a
        // pipeline should not wait for the scheduler to find that nothing else is dirty.
        if advanced == Advanced::Queued {
            start_queued(engine).await?;
        }
    }
    start_queued(engine).await?;
    start_engine_stages(engine).await?;
    Ok(())
}

/// Claims queued stages the engine runs itself (deploys) and starts each as a task.
async fn start_engine_stages(engine: &Arc<Engine>) -> Result<(), crate::run::RunError> {
    let claimed = stages::claim_queued_in_engine(
        &engine.store.pool,
        &engine.id,
        crate::deploy::stage::EXECUTOR,
        16,
    )
    .await?;
    for stage in claimed {
        stages::set_handle(
            &engine.store.pool,
            stage.id,
            stage.attempt,
            crate::deploy::stage::EXECUTOR,
        )
        .await?;
        tracing::info!(run.id = stage.run_id.0, stage = %stage.key, attempt = stage.attempt, "deploy started");
        tokio::spawn(crate::deploy::stage::run(
            Arc::clone(engine),
            stage.id,
            stage.attempt,
        ));
    }
    Ok(())
}

/// What advancing one dirty run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Advanced {
    Queued,
    Other,
}

pub fn facts_for(run: &runs::RunRow, plan: &crate::pipeline::Plan, index: usize) -> Facts {
    let context: RunContext = serde_json::from_value(run.context.clone()).unwrap_or_default();
    let params = serde_json::from_value(run.params.clone()).unwrap_or_default();
    let env = plan
        .pipeline
        .env
        .iter()
        .filter(|(_, t)| t.is_literal())
        .map(|(k, t)| (k.value.clone(), t.raw.value.clone()))
        .collect();
    Facts {
        event: context.event,
        branch: context.branch.unwrap_or_default(),
        tag: context.tag.unwrap_or_default(),
        params,
        env,
        matrix: plan
            .stages
            .get(index)
            .map(|p| p.matrix.iter().cloned().collect())
            .unwrap_or_default(),
    }
}

/// Advances one dirty run, if any; `None` when no run was dirty.
async fn advance_next(engine: &Engine) -> Result<Option<Advanced>, crate::run::RunError> {
    let mut tx = engine.store.pool.begin().await?;
    let after = PipelineId(
        engine
            .advanced_last
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    let Some((run_id, pipeline)) = runs::lock_next_dirty(&mut tx, after).await? else {
        return Ok(None);
    };
    engine
        .advanced_last
        .store(pipeline.0, std::sync::atomic::Ordering::Relaxed);
    let run = runs::get(&mut *tx, run_id).await?;
    if run.status.is_terminal() {
        tx.commit().await?;
        return Ok(Some(Advanced::Other));
    }
    // A run of a concurrency group starts only once the older runs of its group have ended.
    if run.status == RunStatus::Queued
        && !run.cancel_requested
        && runs::blocking_in_group(&mut *tx, run_id).await?.is_some()
    {
        tx.commit().await?;
        return Ok(Some(Advanced::Other));
    }
    // The project-level guard: a project runs at most so many runs at once, so one project's
    // flood cannot take every slot; the others wait, queued, until one of its runs ends.
    if run.status == RunStatus::Queued
        && !run.cancel_requested
        && runs::running_in_project(&mut tx, run_id).await?
            >= i64::try_from(engine.config.project_runs).unwrap_or(i64::MAX)
    {
        tx.commit().await?;
        return Ok(Some(Advanced::Other));
    }
    let plan = engine.plan(run.version_id).await?;
    let rows = stages::for_run(&mut *tx, run_id).await?;
    let states: Vec<StageState> = rows
        .iter()
        .map(|r| StageState {
            status: r.status,
            allow_failure: r.allow_failure,
            approved: r.approved_by.is_some(),
            error: r.error.clone(),
        })
        .collect();
    if states.len() != plan.stages.len() {
        runs::set_status(
            &mut *tx,
            run_id,
            RunStatus::Failed,
            Some("the run's stages do not match its plan"),
        )
        .await?;
        tx.commit().await?;
        return Ok(Some(Advanced::Other));
    }
    let cause = run
        .cancel_requested
        .then(|| cancel_cause(run.cancelled_by.as_deref()));
    let decision = decide(&plan, &states, run.status, cause.as_deref(), &|i| {
        facts_for(&run, &plan, i)
    });
    let mut queued = false;
    for (i, change) in &decision.changes {
        let row = &rows[*i];
        let (status, error) = match change {
            Change::Queue => {
                queued = true;
                // Steps and image stages run in a runner; other kinds arrive with their issues.
                let stage = plan.stage(&plan.stages[*i]);
                match &stage.kind {
                    crate::pipeline::StageKind::Steps(_)
                    | crate::pipeline::StageKind::B2i(_)
                    | crate::pipeline::StageKind::S2i(_) => (StageStatus::Queued, None),
                    // Deploys run in the engine itself, not in a runner.
                    crate::pipeline::StageKind::Deploy(_) => {
                        stages::set_runs_in_engine(&mut *tx, row.id).await?;
                        (StageStatus::Queued, None)
                    }
                    other => (
                        StageStatus::Failed,
                        Some(format!(
                            "`{}` stages are not supported by this engine yet",
                            other.label()
                        )),
                    ),
                }
            }
            Change::AwaitApproval => {
                // Once approved the stage is queued without another decision: mark a deploy
                // as the engine's own now.
                if let crate::pipeline::StageKind::Deploy(_) = &plan.stage(&plan.stages[*i]).kind {
                    stages::set_runs_in_engine(&mut *tx, row.id).await?;
                }
                // The question as asked, with this run's values: what approvers see.
                if let Some(message) = crate::spec::approval_message(&run, &plan, *i, &rows) {
                    stages::set_approval_message(&mut *tx, row.id, &message).await?;
                }
                (StageStatus::WaitingApproval, None)
            }
            Change::Succeed => (StageStatus::Succeeded, None),
            Change::Skip(why) => (StageStatus::Skipped, Some(why.clone())),
            Change::Cancel(why) => (StageStatus::Cancelled, Some(why.clone())),
            Change::Fail(why) => (StageStatus::Failed, Some(why.clone())),
        };
        stages::set_status(&mut *tx, row.id, status, error.as_deref()).await?;
        let message = match &error {
            Some(e) => format!("stage `{}` {}: {e}", row.key, status.as_str()),
            None => format!("stage `{}` {}", row.key, status.as_str()),
        };
        store::events::record(&mut *tx, run_id, Some(row.id), "stage", &message).await?;
        tracing::debug!(run.id = run_id.0, stage = %row.key, status = status.as_str(), "stage changed");
    }
    if !decision.stop.is_empty() {
        stages::request_cancel_regular(&mut *tx, run_id).await?;
    }
    if let Some((status, reason)) = &decision.run {
        runs::set_status(&mut *tx, run_id, *status, reason.as_deref()).await?;
        let message = match reason {
            Some(r) => format!("run {}: {r}", status.as_str()),
            None => format!("run {}", status.as_str()),
        };
        store::events::record(&mut *tx, run_id, None, "run", &message).await?;
        if status.is_terminal() {
            runs::wake_group(&mut *tx, run_id).await?;
            runs::wake_waiting_in_project(&mut *tx, run_id).await?;
            tracing::info!(
                run.id = run_id.0,
                status = status.as_str(),
                reason = reason.as_deref().unwrap_or(""),
                "run ended"
            );
        }
    }
    // Decisions may enable further decisions (a gate that succeeded, a skip that cascades).
    if decision
        .changes
        .iter()
        .any(|(_, c)| !matches!(c, Change::Queue | Change::AwaitApproval))
    {
        runs::mark_dirty(&mut *tx, run_id).await?;
    }
    if queued {
        store::wake(&mut *tx).await?;
    }
    tx.commit().await?;
    if !decision.stop.is_empty() {
        crate::run::stop_cancelled(engine, run_id).await;
    }
    Ok(Some(if queued {
        Advanced::Queued
    } else {
        Advanced::Other
    }))
}

/// How a cancelled run's cause reads: "cancelled by alice", or "cancelled by a newer run of
/// its concurrency group".
pub fn cancel_cause(by: Option<&str>) -> String {
    match by {
        Some(crate::run::BY_CONCURRENCY) => {
            "cancelled by a newer run of its concurrency group".to_owned()
        }
        Some(who) => format!("cancelled by {who}"),
        None => "cancelled".to_owned(),
    }
}

/// Claims queued stages up to each executor's free slots and starts them.
async fn start_queued(engine: &Engine) -> Result<(), crate::run::RunError> {
    let name = engine.default_executor();
    let Some(executor) = engine.executor(name).cloned() else {
        return Ok(());
    };
    let claimed = stages::claim_queued(
        &engine.store.pool,
        &engine.id,
        name,
        i64::try_from(executor.slots()).unwrap_or(i64::MAX),
    )
    .await?;
    for stage in claimed {
        engine
            .metrics
            .queue_latency
            .observe_between(stage.queued_at, stage.started_at);
        let expires =
            Utc::now().timestamp() + i64::from(stage.timeout_secs.unwrap_or(24 * 3600)) + 3600;
        let token = engine.tokens.issue(Grant {
            stage_run: stage.id,
            attempt: stage.attempt,
            expires,
        });
        let pod = if executor.wants_pod() {
            crate::spec::pod_request(engine, stage.id)
                .await
                .map(Some)
                .map_err(|e| crate::executor::ExecutorError::Start(e.to_string()))
        } else {
            Ok(None)
        };
        let started = match pod {
            Ok(pod) => {
                let request = StartRequest {
                    stage_run_id: stage.id.0,
                    attempt: stage.attempt,
                    run_id: stage.run_id.0,
                    key: stage.key.clone(),
                    engine_url: engine.url.clone(),
                    token,
                    pod,
                };
                executor.start(&request).await
            }
            Err(e) => Err(e),
        };
        match started {
            Ok(handle) => {
                stages::set_handle(&engine.store.pool, stage.id, stage.attempt, &handle).await?;
                tracing::info!(run.id = stage.run_id.0, stage = %stage.key, attempt = stage.attempt, handle = %handle, "stage started");
            }
            Err(e) => {
                tracing::warn!(stage = %stage.key, error = %e, "could not start stage");
                let mut tx = engine.store.pool.begin().await?;
                stages::finish_attempt(
                    &mut tx,
                    stage.id,
                    stage.attempt,
                    StageStatus::Failed,
                    Some(&e.to_string()),
                )
                .await?;
                store::wake(&mut *tx).await?;
                tx.commit().await?;
            }
        }
    }
    Ok(())
}

async fn fail_attempt(
    engine: &Engine,
    row: &stages::StageRunRow,
    status: StageStatus,
    why: &str,
) -> Result<(), crate::run::RunError> {
    // An attempt that was asked to stop (a cancel) and whose runner then died or went silent
    // before reporting was cancelled, not failed: recording it as failed would turn a run the
    // user cancelled into a failed one (e.g. when the executor's SIGKILL after the grace beats
    // the runner's completion call).
    let status = if row.cancel_requested && status == StageStatus::Failed {
        StageStatus::Cancelled
    } else {
        status
    };
    let mut tx = engine.store.pool.begin().await?;
    if stages::finish_attempt(&mut tx, row.id, row.attempt, status, Some(why))
        .await?
        .is_some()
    {
        tracing::warn!(run.id = row.run_id.0, stage = %row.key, attempt = row.attempt, reason = why, "stage attempt ended by the engine");
    }
    store::wake(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// After a restart: attempts this engine started are either still running (their runners
/// reconnect on their own) or ended without reporting, which fails the attempt.
async fn readopt(engine: &Arc<Engine>) {
    match stages::running_claimed_by(&engine.store.pool, &engine.id).await {
        Ok(rows) => {
            if !rows.is_empty() {
                tracing::info!(count = rows.len(), "re-adopting running stage attempts");
            }
            // Deploys ran in the engine that died: start them again (idempotent).
            for row in rows
                .iter()
                .filter(|r| r.executor.as_deref() == Some(crate::deploy::stage::EXECUTOR))
            {
                tokio::spawn(crate::deploy::stage::run(
                    Arc::clone(engine),
                    row.id,
                    row.attempt,
                ));
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not list running attempts to re-adopt"),
    }
    for executor in engine.executors.values() {
        executor.reconcile(&engine.store.pool).await;
    }
    if let Err(e) = housekeeping(engine, false).await {
        tracing::warn!(error = %e, "housekeeping after restart failed");
    }
}

/// `judge_silence`: whether attempts whose runner stopped calling in may be failed yet.
async fn housekeeping(engine: &Engine, judge_silence: bool) -> Result<(), crate::run::RunError> {
    // Alive, and where runners reach this engine: a runner whose engine is gone carries on
    // with another one of those recently seen (`spec::build` lists them).
    store::engines::seen(&engine.store.pool, &engine.id, &engine.url).await?;
    // Runners of this engine that ended without completing their attempt.
    for row in stages::running_claimed_by(&engine.store.pool, &engine.id).await? {
        let (Some(name), Some(handle)) = (&row.executor, &row.executor_handle) else {
            // Claimed but never started (the engine died in between): no runner will report.
            if row
                .started_at
                .is_some_and(|t| Utc::now() - t > chrono::TimeDelta::seconds(30))
            {
                fail_attempt(
                    engine,
                    &row,
                    StageStatus::Failed,
                    "the engine stopped before the runner started",
                )
                .await?;
            }
            continue;
        };
        let Some(executor) = engine.executor(name) else {
            continue;
        };
        match executor.observe(handle).await {
            Ok(Observation::Running) if row.heartbeat_at.is_none() => {
                if let Some(silent) = started_but_silent(engine, &row) {
                    let why = format!(
                        "the runner started {}s ago but never called the engine at {}; can the \
                         stage reach that address?",
                        silent.as_secs(),
                        engine.url
                    );
                    cancel_attempt(engine, &row).await;
                    fail_attempt(engine, &row, StageStatus::Failed, &why).await?;
                }
            }
            Ok(Observation::Running) => {}
            Ok(Observation::Waiting { why }) => note_waiting(engine, &row, &why).await?,
            Ok(Observation::Exited { detail, .. }) => {
                // A runner exits only after its completion call was answered, which is after
                // that completion committed: read the attempt again rather than the row from
                // before the runner was observed. Still running means it never reported.
                let now = stages::get(&engine.store.pool, row.id).await?;
                if now.attempt != row.attempt || now.status.is_terminal() {
                    continue;
                }
                fail_attempt(
                    engine,
                    &row,
                    StageStatus::Failed,
                    &format!("the runner ended without reporting a result ({detail})"),
                )
                .await?;
            }
            Ok(Observation::Gone) => {
                let why = match name.as_str() {
                    "kubernetes" => "the stage's Job was deleted before the stage ended",
                    _ => "the runner process disappeared",
                };
                fail_attempt(engine, &row, StageStatus::Failed, why).await?;
            }
            Ok(Observation::Failed { reason, timed_out }) => {
                // The runner cannot report these (it never started, or was killed): stop
                // whatever is left (a pod retrying an image pull would wait forever).
                cancel_attempt(engine, &row).await;
                let status = if timed_out {
                    StageStatus::TimedOut
                } else {
                    StageStatus::Failed
                };
                fail_attempt(engine, &row, status, &reason).await?;
            }
            Err(e) => tracing::warn!(stage = %row.key, error = %e, "cannot observe attempt"),
        }
    }
    // Attempts anywhere whose runner went silent.
    let silent_before = Utc::now()
        - chrono::TimeDelta::seconds(i64::try_from(engine.config.lost_after_secs).unwrap_or(60));
    let silent = if judge_silence {
        stages::silent_since(&engine.store.pool, silent_before).await?
    } else {
        Vec::new()
    };
    for row in silent {
        let why = format!(
            "the runner stopped calling in (no heartbeat for {}s)",
            engine.config.lost_after_secs
        );
        cancel_attempt(engine, &row).await;
        fail_attempt(engine, &row, StageStatus::Failed, &why).await?;
    }
    // Attempts past their stage timeout (the runner should have stopped them itself).
    for row in stages::overdue(&engine.store.pool, 30).await? {
        cancel_attempt(engine, &row).await;
        let why = format!(
            "the stage exceeded its {}s timeout",
            row.timeout_secs.unwrap_or(0)
        );
        fail_attempt(engine, &row, StageStatus::TimedOut, &why).await?;
    }
    approval_timeouts(engine).await?;
    Ok(())
}

/// How long a runner seen running may take to call in before it is given up: its silence is
/// only judged once it has called (`lost_after_secs`), so this bounds the time before.
const FIRST_CONTACT_SECS: u64 = 60;

/// How long the attempt's runner has been seen running without having called in, once that
/// is longer than it may be. The first sighting is remembered in memory: after an engine
/// restart the clock starts again, which only delays the verdict.
fn started_but_silent(engine: &Engine, row: &stages::StageRunRow) -> Option<Duration> {
    let limit = Duration::from_secs(engine.config.lost_after_secs.max(FIRST_CONTACT_SECS));
    let mut seen = engine.running_unheard.lock().ok()?;
    if seen.len() > 10_000 {
        seen.clear();
    }
    let first = *seen
        .entry((row.id.0, row.attempt))
        .or_insert_with(std::time::Instant::now);
    let silent = first.elapsed();
    (silent >= limit).then_some(silent)
}

/// Tells the stage's log what its pod waits for (once per change), while its runner has not
/// called in: a viewer sees "waiting for a node: ..." rather than nothing.
async fn note_waiting(
    engine: &Engine,
    row: &stages::StageRunRow,
    why: &str,
) -> Result<(), crate::run::RunError> {
    let key = (row.id.0, row.attempt);
    let already = engine
        .waiting_notes
        .lock()
        .ok()
        .is_some_and(|notes| notes.get(&key).is_some_and(|w| w == why));
    if already {
        return Ok(());
    }
    let mut tx = engine.store.pool.begin().await?;
    let written = store::logs::note_before_contact(&mut tx, row.id, row.attempt, why).await?;
    tx.commit().await?;
    if let Ok(mut notes) = engine.waiting_notes.lock() {
        // Notes of attempts long gone would pile up: keep the map small.
        if notes.len() > 10_000 {
            notes.clear();
        }
        if written {
            notes.insert(key, why.to_owned());
        } else {
            notes.remove(&key);
        }
    }
    Ok(())
}

async fn cancel_attempt(engine: &Engine, row: &stages::StageRunRow) {
    if let (Some(name), Some(handle)) = (&row.executor, &row.executor_handle)
        && let Some(executor) = engine.executor(name)
    {
        let _ = executor.cancel(handle).await;
    }
}

async fn approval_timeouts(engine: &Engine) -> Result<(), crate::run::RunError> {
    for row in stages::waiting_since(&engine.store.pool).await? {
        let run = runs::get(&engine.store.pool, row.run_id).await?;
        let plan = engine.plan(run.version_id).await?;
        let Some(planned) = plan
            .stages
            .get(usize::try_from(row.plan_index).unwrap_or(usize::MAX))
        else {
            continue;
        };
        let Some(timeout) = plan
            .stage(planned)
            .approval
            .as_ref()
            .and_then(|a| a.timeout.as_ref())
        else {
            continue;
        };
        let waited = row.queued_at.map(|t| Utc::now() - t).unwrap_or_default();
        if waited.to_std().unwrap_or_default() > timeout.value {
            let mut tx = engine.store.pool.begin().await?;
            let (_, status, _, _) = stages::lock(&mut tx, row.id).await?;
            if status == StageStatus::WaitingApproval {
                let why = format!("no approval within {}s", timeout.value.as_secs());
                stages::set_status(&mut *tx, row.id, StageStatus::TimedOut, Some(&why)).await?;
                runs::mark_dirty(&mut *tx, row.run_id).await?;
                store::wake(&mut *tx).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Listens for wake-ups and log notifications, reconnecting after database restarts.
pub async fn listen(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    loop {
        match sqlx::postgres::PgListener::connect_with(&engine.store.pool).await {
            Ok(mut listener) => {
                if let Err(e) = listener
                    .listen_all([
                        store::WAKE_CHANNEL,
                        store::LOGS_CHANNEL,
                        store::DELIVERIES_CHANNEL,
                    ])
                    .await
                {
                    tracing::warn!(error = %e, "LISTEN failed");
                } else {
                    loop {
                        tokio::select! {
                            message = listener.recv() => match message {
                                Ok(n) if n.channel() == store::LOGS_CHANNEL => {
                                    if let Ok(id) = n.payload().parse::<i64>() {
                                        let _ = engine.logs.send(store::StageRunId(id));
                                    }
                                }
                                Ok(n) if n.channel() == store::DELIVERIES_CHANNEL => {
                                    engine.deliveries.notify_one();
                                }
                                Ok(_) => engine.wake.notify_one(),
                                Err(e) => {
                                    tracing::warn!(error = %e, "lost the database notification connection; reconnecting");
                                    break;
                                }
                            },
                            _ = shutdown.changed() => return,
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot connect for LISTEN; retrying"),
        }
        // Wake everything after a reconnect: notifications may have been missed meanwhile.
        engine.wake.notify_one();
        engine.deliveries.notify_one();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
