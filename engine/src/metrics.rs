//! What `GET /metrics` shows, in the Prometheus text format (0.0.4). Counts of runs and stages
//! come from the database, so every engine sharing it reports the same; histograms and counters
//! are this process's own (stage attempts it saw finish, stages it started), kept in plain
//! atomics. The HTTP route is `http`'s; this module knows nothing of HTTP.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::{RunStatus, StageStatus};

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Stage attempts last from a fraction of a second (a lint) to an hour (a release build).
const DURATION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Queue latency is milliseconds when slots are free and minutes when they are not.
const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Every run status, so each appears in `/metrics` even when no run has it.
const RUN_STATUSES: [RunStatus; 6] = [
    RunStatus::Queued,
    RunStatus::Running,
    RunStatus::Succeeded,
    RunStatus::Failed,
    RunStatus::Cancelled,
    RunStatus::TimedOut,
];

/// A Prometheus histogram on atomics: one counter per bucket (not cumulative; summed when
/// rendered), the observation count, and the sum in microseconds.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observes the time between two instants (nothing if `to` is before `from` by clock skew
    /// between engines, or either is unknown).
    pub fn observe_between(
        &self,
        from: Option<chrono::DateTime<chrono::Utc>>,
        to: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        if let (Some(from), Some(to)) = (from, to)
            && let Ok(elapsed) = (to - from).to_std()
        {
            self.observe(elapsed);
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        // Exact up to 2^53 µs (285 years of stage time).
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// What this engine process measures itself (the rest of `/metrics` is read from the database).
pub struct Metrics {
    /// Stage attempts whose runner reported a result to this process: started → completed.
    pub stage_duration: Histogram,
    /// Stages this process took from the queue: queued → started.
    pub queue_latency: Histogram,
    /// Log bytes runners sent to this process.
    pub log_bytes: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            stage_duration: Histogram::new(DURATION_BUCKETS),
            queue_latency: Histogram::new(LATENCY_BUCKETS),
            log_bytes: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn add_log_bytes(&self, n: usize) {
        self.log_bytes
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

fn gauge_family<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (&'a str, i64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (status, n) in values {
        let _ = writeln!(out, "{name}{{status=\"{status}\"}} {n}");
    }
}

/// Renders the exposition text from the database counts and this process's metrics.
pub fn render(
    run_counts: &[(RunStatus, i64)],
    stage_counts: &[(StageStatus, i64)],
    metrics: &Metrics,
) -> String {
    let mut runs: BTreeMap<&str, i64> = RUN_STATUSES.iter().map(|s| (s.as_str(), 0)).collect();
    for (status, n) in run_counts {
        runs.insert(status.as_str(), *n);
    }
    let mut stages: BTreeMap<&str, i64> =
        StageStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for (status, n) in stage_counts {
        stages.insert(status.as_str(), *n);
    }
    let queued = stages
        .get(StageStatus::Queued.as_str())
        .copied()
        .unwrap_or(0);
    let mut out = String::with_capacity(4096);
    gauge_family(&mut out, "gantry_runs", "Runs by status.", runs);
    gauge_family(&mut out, "gantry_stages", "Stage runs by status.", stages);
    let _ = writeln!(
        out,
        "# HELP gantry_queue_depth Stages waiting in the queue for a free executor slot."
    );
    let _ = writeln!(out, "# TYPE gantry_queue_depth gauge");
    let _ = writeln!(out, "gantry_queue_depth {queued}");
    metrics.stage_duration.render(
        &mut out,
        "gantry_stage_duration_seconds",
        "Duration of stage attempts whose result this engine process received.",
    );
    metrics.queue_latency.render(
        &mut out,
        "gantry_stage_queue_latency_seconds",
        "Time stages waited in the queue before this engine process started them.",
    );
    let _ = writeln!(
        out,
        "# HELP gantry_log_bytes_total Log bytes runners sent to this engine process."
    );
    let _ = writeln!(out, "# TYPE gantry_log_bytes_total counter");
    let _ = writeln!(
        out,
        "gantry_log_bytes_total {}",
        metrics.log_bytes.load(Ordering::Relaxed)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
    }

    #[test]
    fn every_status_is_listed_even_without_runs() {
        let text = render(&[(RunStatus::Failed, 3)], &[], &Metrics::default());
        assert_eq!(
            value_of(&text, "gantry_runs{status=\"failed\"}").as_deref(),
            Some("3")
        );
        for status in RUN_STATUSES.iter().filter(|s| **s != RunStatus::Failed) {
            let series = format!("gantry_runs{{status=\"{}\"}}", status.as_str());
            assert_eq!(value_of(&text, &series).as_deref(), Some("0"), "{series}");
        }
        for status in StageStatus::ALL {
            let series = format!("gantry_stages{{status=\"{}\"}}", status.as_str());
            assert_eq!(value_of(&text, &series).as_deref(), Some("0"), "{series}");
        }
        assert_eq!(value_of(&text, "gantry_queue_depth").as_deref(), Some("0"));
    }

    #[test]
    fn queue_depth_is_the_queued_stage_count() {
        let text = render(
            &[],
            &[(StageStatus::Queued, 4), (StageStatus::Running, 2)],
            &Metrics::default(),
        );
        assert_eq!(value_of(&text, "gantry_queue_depth").as_deref(), Some("4"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.stage_duration.observe(Duration::from_millis(50));
        metrics.stage_duration.observe(Duration::from_millis(700));
        metrics.stage_duration.observe(Duration::from_secs(7200));
        let text = render(&[], &[], &metrics);
        let bucket = |le: &str| {
            value_of(
                &text,
                &format!("gantry_stage_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.1").as_deref(), Some("1"));
        assert_eq!(bucket("0.5").as_deref(), Some("1"));
        assert_eq!(bucket("1").as_deref(), Some("2"));
        assert_eq!(bucket("3600").as_deref(), Some("2"));
        assert_eq!(bucket("+Inf").as_deref(), Some("3"));
        assert_eq!(
            value_of(&text, "gantry_stage_duration_seconds_count").as_deref(),
            Some("3")
        );
        assert_eq!(
            value_of(&text, "gantry_stage_duration_seconds_sum").as_deref(),
            Some("7200.75")
        );
    }

    #[test]
    fn a_negative_interval_is_not_observed() {
        let metrics = Metrics::default();
        let now = chrono::Utc::now();
        metrics
            .queue_latency
            .observe_between(Some(now), Some(now - chrono::TimeDelta::seconds(1)));
        metrics.queue_latency.observe_between(None, Some(now));
        assert_eq!(metrics.queue_latency.count.load(Ordering::Relaxed), 0);
    }
}
