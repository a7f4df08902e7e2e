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

use chrono::{DateTime, TimeDelta, TimeZone, Timelike, Utc};
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
///
/// A slot is a whole minute of the schedule's time zone, whatever instant inside it the tick
/// happens at: the slot is the key that makes it fire once, so it must not carry the tick's
/// seconds. Daylight saving time is handled as cron does: a local minute that happens twice
/// (the hour repeated when clocks go back) is one slot, its first instant; minutes that never
/// happen (skipped when clocks go forward) fire once, at the first minute after the jump.
///
/// The search walks back over the minutes since `not_before` (at most [`CATCH_UP`] of them)
/// and asks the pattern about each one's wall-clock time: a cron library's own search works on
/// wall-clock times, which are ambiguous around those transitions.
pub fn due_slot(
    trigger: &crate::pipeline::ScheduleTrigger,
    now: DateTime<Utc>,
    not_before: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let newest = minute_of(now)?;
    let oldest = (now - CATCH_UP).max(not_before);
    let tz = &trigger.timezone;
    let mut minute = newest;
    while minute >= oldest {
        let local = minute.with_timezone(tz);
        let before = (minute - TimeDelta::minutes(1)).with_timezone(tz);
        let matches =
            |t: &DateTime<chrono_tz::Tz>| trigger.schedule.is_time_matching(t).unwrap_or(false);
        let first_of_its_minute = tz
            .from_local_datetime(&local.naive_local())
            .earliest()
            .is_none_or(|first| first == local);
        if first_of_its_minute && matches(&local) {
            return Some(minute);
        }
        // Clocks went forward between `before` and `minute`: the wall-clock minutes skipped
        // fire now, once.
        let skipped = local.naive_local() - before.naive_local() > TimeDelta::minutes(1);
        if skipped && skipped_minutes_match(trigger, &before, &local) {
            return Some(minute);
        }
        minute -= TimeDelta::minutes(1);
    }
    None
}

/// Whether a wall-clock minute strictly between `before` and `after` (a forward jump of the
/// clocks) matches the schedule.
fn skipped_minutes_match(
    trigger: &crate::pipeline::ScheduleTrigger,
    before: &DateTime<chrono_tz::Tz>,
    after: &DateTime<chrono_tz::Tz>,
) -> bool {
    let mut wall = before.naive_local() + TimeDelta::minutes(1);
    while wall < after.naive_local() {
        // The skipped wall time as if it existed: the pattern only reads its fields.
        let fields = Utc.from_utc_datetime(&wall);
        if trigger.schedule.is_time_matching(&fields).unwrap_or(false) {
            return true;
        }
        wall += TimeDelta::minutes(1);
    }
    false
}

/// `time` with its seconds and their fraction cut off.
fn minute_of(time: DateTime<Utc>) -> Option<DateTime<Utc>> {
    time.with_second(0)?.with_nanosecond(0)
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
                    triggered_by: Some("schedule"),
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
        crate::run::at_branch_head(engine, repo_id, trigger.branch.clone(), &mut context).await?;
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
    fn every_tick_inside_a_minute_names_the_same_slot() {
        // Ticks come every few seconds at arbitrary sub-second instants: all of them must
        // name one slot, or each tick fires its own run.
        let created = at("2026-01-01T00:00:00Z");
        let every_minute = trigger("* * * * *");
        for tick in [
            "2026-01-05T10:20:00Z",
            "2026-01-05T10:20:00.000001Z",
            "2026-01-05T10:20:04.731Z",
            "2026-01-05T10:20:59.999999999Z",
        ] {
            assert_eq!(
                due_slot(&every_minute, at(tick), created),
                Some(at("2026-01-05T10:20:00Z")),
                "tick at {tick}"
            );
        }
        let daily = trigger("4 14 * * *");
        for tick in [
            "2026-01-05T14:04:03.5Z",
            "2026-01-05T14:09:58.25Z",
            "2026-01-06T13:59:59.9Z",
        ] {
            assert_eq!(
                due_slot(&daily, at(tick), created),
                Some(at("2026-01-05T14:04:00Z")),
                "tick at {tick}"
            );
        }
    }

    #[test]
    fn a_slot_is_a_minute_of_the_schedules_time_zone() {
        let created = at("2026-01-01T00:00:00Z");
        let yaml = "name: p\non:\n  schedule:\n    - cron: \"30 1 * * *\"\n      timezone: America/New_York\nstages:\n  - name: a\n    image: alpine\n    steps:\n      - run: \"true\"\n";
        let nightly = match crate::pipeline::parse("p.yaml", yaml) {
            Ok(p) => p.on.schedule.into_iter().next().expect("one schedule"),
            Err(report) => panic!("{report}"),
        };
        // 01:30 in New York in January is 06:30 UTC.
        assert_eq!(
            due_slot(&nightly, at("2026-01-05T07:00:12.5Z"), created),
            Some(at("2026-01-05T06:30:00Z"))
        );
        // On 2026-11-01 clocks go back at 02:00 EDT: 01:30 happens at 05:30 UTC (EDT) and
        // again at 06:30 UTC (EST). That is one local minute, so one slot, whichever pass
        // the engine ticks in.
        let first = at("2026-11-01T05:30:00Z");
        for tick in [
            "2026-11-01T05:31:07Z",
            "2026-11-01T06:10:00Z",
            "2026-11-01T06:31:07Z",
            "2026-11-01T08:00:00Z",
        ] {
            assert_eq!(
                due_slot(&nightly, at(tick), created),
                Some(first),
                "tick at {tick}"
            );
        }
        // On 2026-03-08 clocks jump from 02:00 EST to 03:00 EDT (07:00 UTC): a 02:30 slot
        // never happens on the wall clock, and fires once, at the first minute after the jump.
        let yaml = yaml.replace("30 1 * * *", "30 2 * * *");
        let gap = match crate::pipeline::parse("p.yaml", &yaml) {
            Ok(p) => p.on.schedule.into_iter().next().expect("one schedule"),
            Err(report) => panic!("{report}"),
        };
        assert_eq!(
            due_slot(&gap, at("2026-03-08T06:59:30Z"), created),
            Some(at("2026-03-07T07:30:00Z")),
            "before the jump the newest slot is the day before's 02:30 EST"
        );
        for tick in [
            "2026-03-08T07:00:01Z",
            "2026-03-08T07:42:00Z",
            "2026-03-09T06:29:00Z",
        ] {
            assert_eq!(
                due_slot(&gap, at(tick), created),
                Some(at("2026-03-08T07:00:00Z")),
                "tick at {tick}"
            );
        }
        assert_eq!(
            due_slot(&gap, at("2026-03-09T06:31:00Z"), created),
            Some(at("2026-03-09T06:30:00Z")),
            "the next day 02:30 EDT is 06:30 UTC"
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
