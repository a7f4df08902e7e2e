//! Cron schedules (`on.schedule`): every engine looks for due slots, and a slot's run starts
//! in the same transaction that claims the slot's row, so however many engines share the
//! database, each slot fires once.
//!
//! Catch-up policy: after downtime, a schedule fires once for the missed period — its most
//! recent due slot, if that slot is at most [`CATCH_UP`] old — and never for slots from before
//! the pipeline version that declares the schedule was stored. Older missed slots are dropped
//! (a nightly build missed for a week runs once, not seven times).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::engine::Engine;
use crate::run::{self, NewRunOf, RunContext, RunError};
use crate::store::{self, pipelines, schedules};

/// How late a missed slot may still fire.
pub const CATCH_UP: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// How often engines look for due slots (a slot fires at most this late while engines run).
const TICK: Duration = Duration::from_secs(5);

pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    loop {
        match tick(&engine, Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, "scheduled runs started"),
            Err(e) => tracing::warn!(error = %e, "checking cron schedules failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The slot of `schedule` that should have fired by `now`, if any is due.
pub fn due_slot(
    trigger: &crate::pipeline::ScheduleTrigger,
    now: DateTime<Utc>,
    not_before: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let local = now.with_timezone(&trigger.timezone);
    let slot = trigger
        .schedule
        .find_previous_occurrence(&local, true)
        .ok()?
        .with_timezone(&Utc);
    (slot >= not_before && now - slot <= CATCH_UP).then_some(slot)
}

/// Starts the runs of every due, unclaimed slot. Returns how many started.
pub async fn tick(engine: &Engine, now: DateTime<Utc>) -> Result<usize, RunError> {
    let mut started = 0;
    for scheduled in pipelines::with_schedules(&engine.store.pool).await? {
        let plan = match engine.plan(scheduled.version_id).await {
            Ok(plan) => plan,
            Err(e) => {
                tracing::warn!(pipeline = %scheduled.name, error = %e, "a scheduled pipeline does not load");
                continue;
            }
        };
        for trigger in &plan.pipeline.on.schedule {
            let Some(slot) = due_slot(trigger, now, scheduled.version_created) else {
                continue;
            };
            let cron = &trigger.cron.value;
            // Cheap check first: most ticks find the slot already fired.
            if schedules::last_slot(&engine.store.pool, scheduled.pipeline_id, cron)
                .await?
                .is_some_and(|last| last >= slot)
            {
                continue;
            }
            let context = context_for(engine, &scheduled, trigger).await;
            let context = match context {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(pipeline = %scheduled.name, error = %e, "cannot resolve the scheduled branch; the slot waits for the next tick");
                    continue;
                }
            };
            let given: BTreeMap<String, String> = trigger
                .params
                .iter()
                .map(|(k, v)| (k.value.clone(), v.clone()))
                .collect();
            let params = run::resolve_params(&plan.pipeline, &given)?;
            let mut tx = engine.store.pool.begin().await?;
            if !schedules::claim(&mut *tx, scheduled.pipeline_id, cron, slot, &engine.id).await? {
                continue;
            }
            let triggered = run::start(
                &mut tx,
                NewRunOf {
                    pipeline: scheduled.pipeline_id,
                    version: scheduled.version_id,
                    plan: &plan,
                    trigger: "schedule",
                    params: &params,
                    context: &context,
                },
            )
            .await?;
            schedules::set_run(
                &mut *tx,
                scheduled.pipeline_id,
                cron,
                slot,
                triggered.run_id,
            )
            .await?;
            tx.commit().await?;
            tracing::info!(pipeline = %scheduled.name, cron = %cron, slot = %slot, run.number = triggered.number, "cron slot fired");
            started += 1;
        }
    }
    Ok(started)
}

/// A scheduled run of a repository pipeline builds the head of its branch (the schedule's
/// `branch`, or the repository's default branch), resolved when the slot fires.
async fn context_for(
    engine: &Engine,
    scheduled: &pipelines::Scheduled,
    trigger: &crate::pipeline::ScheduleTrigger,
) -> Result<RunContext, RunError> {
    let mut context = RunContext {
        event: "schedule".into(),
        branch: trigger.branch.clone(),
        ..RunContext::default()
    };
    if let Some(repo_id) = scheduled.repository_id {
        super::source::at_branch_head(engine, repo_id, trigger.branch.clone(), &mut context)
            .await?;
    }
    Ok(context)
}

/// The slots that fired for a pipeline (for the API and tests).
pub async fn fired(
    engine: &Engine,
    pipeline: store::PipelineId,
) -> Result<Vec<(String, DateTime<Utc>, Option<store::RunId>, String)>, RunError> {
    Ok(schedules::fired(&engine.store.pool, pipeline).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(cron: &str) -> crate::pipeline::ScheduleTrigger {
        let yaml = format!(
            "name: p\non:\n  schedule:\n    - cron: \"{cron}\"\nstages:\n  - name: a\n    image: alpine\n    steps:\n      - run: \"true\"\n"
        );
        match crate::pipeline::parse("p.yaml", &yaml) {
            Ok(p) => p.on.schedule.into_iter().next().expect("one schedule"),
            Err(report) => panic!("{report}"),
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("a timestamp")
    }

    #[test]
    fn the_most_recent_slot_is_due_and_older_ones_are_not_caught_up() {
        let hourly = trigger("0 * * * *");
        let created = at("2026-01-01T00:00:00Z");
        assert_eq!(
            due_slot(&hourly, at("2026-01-05T10:20:00Z"), created),
            Some(at("2026-01-05T10:00:00Z"))
        );
        // Exactly on the slot counts.
        assert_eq!(
            due_slot(&hourly, at("2026-01-05T11:00:00Z"), created),
            Some(at("2026-01-05T11:00:00Z"))
        );
    }

    #[test]
    fn slots_before_the_schedule_existed_or_too_old_do_not_fire() {
        let hourly = trigger("0 * * * *");
        assert_eq!(
            due_slot(
                &hourly,
                at("2026-01-05T10:20:00Z"),
                at("2026-01-05T10:05:00Z")
            ),
            None
        );
        let yearly = trigger("0 0 1 1 *");
        assert_eq!(
            due_slot(
                &yearly,
                at("2026-03-01T00:00:00Z"),
                at("2025-01-01T00:00:00Z")
            ),
            None,
            "a slot two months old is beyond the catch-up window"
        );
    }
}
