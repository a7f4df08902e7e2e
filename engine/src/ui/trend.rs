//! A pipeline's duration trend: one bar per run, oldest on the left, as tall as the run took
//! next to the longest of them, coloured by its status and linking to it. The geometry is
//! computed here so the template only places rectangles, and the page needs no script.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::store::RunId;
use crate::store::runs::RunRow;

/// One slot per run; the chart is always as wide as [`SLOTS`] runs so one run's bar is not
/// stretched across the page and bars keep their width as runs are added.
pub const SLOTS: u32 = 30;
const PITCH: u32 = 10;
const BAR: u32 = 8;
const HEIGHT: u32 = 60;
/// A run that took no time (or has not started) still gets a visible, clickable bar.
const MIN_BAR: u32 = 3;

#[derive(Debug, Serialize)]
pub struct Trend {
    /// The chart's coordinate space (the SVG viewBox), `width` by `height`.
    pub width: u32,
    pub height: u32,
    pub bars: Vec<Bar>,
    /// The chart in words, for those who cannot see it.
    pub summary: String,
}

#[derive(Debug, Serialize)]
pub struct Bar {
    pub id: RunId,
    pub number: i32,
    pub status: &'static str,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    /// `#12 succeeded in 1m 05s`: the bar's tooltip and accessible name.
    pub label: String,
}

/// The trend of `runs` (newest first, as listed; at most [`SLOTS`] are drawn), with the
/// durations of unfinished runs counted up to `now`. The runs in `waiting` have a stage
/// waiting for a person: their bars say so, as the run list does, rather than `running`.
pub fn of(runs: &[RunRow], waiting: &[RunId], now: DateTime<Utc>) -> Trend {
    let take = usize::try_from(SLOTS).unwrap_or(usize::MAX);
    let drawn: Vec<(&RunRow, i64)> = runs
        .iter()
        .take(take)
        .rev()
        .map(|r| (r, seconds(r, now)))
        .collect();
    let longest = drawn.iter().map(|(_, s)| *s).max().unwrap_or(0).max(1);
    let bars = drawn
        .iter()
        .zip(0u32..)
        .map(|((run, secs), slot)| {
            // Scaled in i64 (durations are far below overflow), then clamped into the chart.
            let scaled = secs.saturating_mul(i64::from(HEIGHT)) / longest;
            let height = u32::try_from(scaled)
                .unwrap_or(HEIGHT)
                .clamp(MIN_BAR, HEIGHT);
            let status = if waiting.contains(&run.id) {
                "waiting_approval"
            } else {
                run.status.as_str()
            };
            let took = duration(run.started_at, Some(run.finished_at.unwrap_or(now)));
            let label = if took.is_empty() {
                format!("#{} {status}, not started", run.number)
            } else {
                format!("#{} {status} in {took}", run.number)
            };
            Bar {
                id: run.id,
                number: run.number,
                status,
                x: slot * PITCH + (PITCH - BAR) / 2,
                y: HEIGHT - height,
                width: BAR,
                height,
                label,
            }
        })
        .collect();
    Trend {
        width: SLOTS * PITCH,
        height: HEIGHT,
        summary: summary(&drawn),
        bars,
    }
}

fn seconds(run: &RunRow, now: DateTime<Utc>) -> i64 {
    run.started_at.map_or(0, |from| {
        (run.finished_at.unwrap_or(now) - from).num_seconds().max(0)
    })
}

/// `Durations of the last 3 runs, oldest first: #1 3s, #2 5s, #3 4s. Longest: #2 (5s).`
fn summary(drawn: &[(&RunRow, i64)]) -> String {
    let Some((longest, secs)) = drawn.iter().max_by_key(|(_, s)| *s) else {
        return "No runs yet.".to_owned();
    };
    let each: Vec<String> = drawn
        .iter()
        .map(|(r, s)| format!("#{} {} {}", r.number, r.status.as_str(), short(*s)))
        .collect();
    let runs = if drawn.len() == 1 { "run" } else { "runs" };
    format!(
        "Durations of the last {} {runs}, oldest first: {}. Longest: #{} ({}).",
        drawn.len(),
        each.join(", "),
        longest.number,
        short(*secs)
    )
}

fn short(secs: i64) -> String {
    let from = DateTime::<Utc>::UNIX_EPOCH;
    duration(Some(from), Some(from + chrono::Duration::seconds(secs)))
}

/// `3s`, `1m 05s`, `2h 03m`.
pub fn duration(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> String {
    let (Some(from), Some(to)) = (from, to) else {
        return String::new();
    };
    let secs = (to - from).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{PipelineId, RunStatus, VersionId};

    fn run(number: i32, status: RunStatus, secs: Option<i64>, now: DateTime<Utc>) -> RunRow {
        let started = now - chrono::Duration::seconds(100);
        RunRow {
            id: RunId(i64::from(number) + 100),
            pipeline_id: PipelineId(1),
            project: "p".into(),
            pipeline: "app".into(),
            version_id: VersionId(1),
            number,
            trigger: "manual".into(),
            params: serde_json::json!({}),
            context: serde_json::json!({}),
            status,
            reason: None,
            cancel_requested: false,
            rerun_of: None,
            created_at: started,
            started_at: secs.map(|_| started),
            finished_at: secs.map(|s| started + chrono::Duration::seconds(s)),
            triggered_by: None,
            cancelled_by: None,
        }
    }

    #[test]
    fn bars_run_oldest_to_newest_scaled_to_the_longest_run() {
        let now = Utc::now();
        // Listed newest first, as the page lists them.
        let runs = [
            run(3, RunStatus::Failed, Some(30), now),
            run(2, RunStatus::Succeeded, Some(60), now),
            run(1, RunStatus::Succeeded, Some(15), now),
        ];
        let trend = of(&runs, &[], now);
        let numbers: Vec<i32> = trend.bars.iter().map(|b| b.number).collect();
        assert_eq!(numbers, [1, 2, 3]);
        let heights: Vec<u32> = trend.bars.iter().map(|b| b.height).collect();
        assert_eq!(heights, [15, 60, 30]);
        assert!(trend.bars.iter().all(|b| b.y + b.height == trend.height));
        assert!(trend.bars[0].x < trend.bars[1].x && trend.bars[1].x < trend.bars[2].x);
        assert_eq!(trend.bars[2].status, "failed");
        assert_eq!(trend.bars[2].id, RunId(103));
        assert_eq!(trend.bars[1].label, "#2 succeeded in 1m 00s");
        assert_eq!(
            trend.summary,
            "Durations of the last 3 runs, oldest first: #1 succeeded 15s, #2 succeeded 1m 00s, \
             #3 failed 30s. Longest: #2 (1m 00s)."
        );
    }

    #[test]
    fn unstarted_and_instant_runs_still_get_a_visible_bar() {
        let now = Utc::now();
        let runs = [
            run(2, RunStatus::Queued, None, now),
            run(1, RunStatus::Succeeded, Some(0), now),
        ];
        let trend = of(&runs, &[], now);
        assert!(trend.bars.iter().all(|b| b.height == MIN_BAR), "{trend:?}");
        assert_eq!(trend.bars[1].label, "#2 queued, not started");
    }

    #[test]
    fn a_run_waiting_for_approval_is_coloured_as_waiting_not_running() {
        let now = Utc::now();
        let runs = [
            run(2, RunStatus::Running, None, now),
            run(1, RunStatus::Running, None, now),
        ];
        let trend = of(&runs, &[RunId(102)], now);
        let statuses: Vec<&str> = trend.bars.iter().map(|b| b.status).collect();
        assert_eq!(statuses, ["running", "waiting_approval"]);
    }

    #[test]
    fn at_most_the_newest_thirty_runs_are_drawn_within_the_chart() {
        let now = Utc::now();
        let runs: Vec<RunRow> = (1..=40)
            .rev()
            .map(|n| run(n, RunStatus::Succeeded, Some(i64::from(n)), now))
            .collect();
        let trend = of(&runs, &[], now);
        assert_eq!(trend.bars.len(), 30);
        assert_eq!(trend.bars[0].number, 11);
        assert!(trend.bars.iter().all(|b| b.x + b.width <= trend.width));
    }
}
