//! What `GET /metrics` shows, in the Prometheus text format (0.0.4), rendered by
//! `prometheus-client`. Counts of runs and stages come from the database, so every engine sharing
//! it reports the same; histograms and counters are this process's own (stage attempts it saw
//! finish, stages it started). The HTTP route is `http`'s; this module knows nothing of HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::store::{RunStatus, StageStatus};

/// The content type of the Prometheus text exposition format, which [`render`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

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

/// A histogram of durations in seconds.
pub struct Histogram(prometheus_client::metrics::histogram::Histogram);

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram(prometheus_client::metrics::histogram::Histogram::new(
            bounds.iter().copied(),
        ))
    }

    pub fn observe(&self, value: Duration) {
        self.0.observe(value.as_secs_f64());
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
}

/// What this engine process measures itself (the rest of `/metrics` is read from the database).
pub struct Metrics {
    /// Stage attempts whose runner reported a result to this process: started → completed.
    pub stage_duration: Histogram,
    /// Stages this process took from the queue: queued → started.
    pub queue_latency: Histogram,
    /// Log bytes runners sent to this process.
    log_bytes: Counter,
    /// The three above, registered once; the metrics are shared handles, so it sees every update.
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let stage_duration = Histogram::new(DURATION_BUCKETS);
        let queue_latency = Histogram::new(LATENCY_BUCKETS);
        let log_bytes = Counter::default();
        let mut registry = Registry::default();
        // The registry appends the full stop to help texts, and `_total` to counter names.
        registry.register(
            "gantry_stage_duration_seconds",
            "Duration of stage attempts whose result this engine process received",
            stage_duration.0.clone(),
        );
        registry.register(
            "gantry_stage_queue_latency_seconds",
            "Time stages waited in the queue before this engine process started them",
            queue_latency.0.clone(),
        );
        registry.register(
            "gantry_log_bytes",
            "Log bytes runners sent to this engine process",
            log_bytes.clone(),
        );
        Metrics {
            stage_duration,
            queue_latency,
            log_bytes,
            registry,
        }
    }
}

impl Metrics {
    pub fn add_log_bytes(&self, n: usize) {
        self.log_bytes.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }
}

/// The database's counts as gauges, sorted by status so that the text reads the same every time
/// (a `Family` would list its label sets in hash order).
#[derive(Debug)]
struct DatabaseCounts {
    runs: BTreeMap<&'static str, i64>,
    stages: BTreeMap<&'static str, i64>,
    queue_depth: i64,
}

impl DatabaseCounts {
    fn new(run_counts: &[(RunStatus, i64)], stage_counts: &[(StageStatus, i64)]) -> Self {
        let mut runs: BTreeMap<&str, i64> = RUN_STATUSES.iter().map(|s| (s.as_str(), 0)).collect();
        for (status, n) in run_counts {
            runs.insert(status.as_str(), *n);
        }
        let mut stages: BTreeMap<&str, i64> =
            StageStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for (status, n) in stage_counts {
            stages.insert(status.as_str(), *n);
        }
        let queue_depth = stages
            .get(StageStatus::Queued.as_str())
            .copied()
            .unwrap_or(0);
        DatabaseCounts {
            runs,
            stages,
            queue_depth,
        }
    }
}

/// One gauge per status, labelled `status`. (Help texts given to a collector are written as
/// they are: no full stop is appended.)
fn gauge_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &BTreeMap<&'static str, i64>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (status, n) in values {
        ConstGauge::new(*n).encode(family.encode_family(&[("status", *status)])?)?;
    }
    Ok(())
}

impl Collector for DatabaseCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge_family(&mut encoder, "gantry_runs", "Runs by status.", &self.runs)?;
        gauge_family(
            &mut encoder,
            "gantry_stages",
            "Stage runs by status.",
            &self.stages,
        )?;
        let depth = ConstGauge::new(self.queue_depth);
        depth.encode(encoder.encode_descriptor(
            "gantry_queue_depth",
            "Stages waiting in the queue for a free executor slot.",
            None,
            depth.metric_type(),
        )?)
    }
}

/// Renders the exposition text from the database counts and this process's metrics.
pub fn render(
    run_counts: &[(RunStatus, i64)],
    stage_counts: &[(StageStatus, i64)],
    metrics: &Metrics,
) -> String {
    // The database's counts change with every request, so they get a registry of their own,
    // rendered first; the process's registry lives as long as its metrics.
    let mut database = Registry::default();
    database.register_collector(Box::new(DatabaseCounts::new(run_counts, stage_counts)));
    let mut out = String::with_capacity(4096);
    // Writing to a `String` cannot fail, and the encoder fails otherwise only for native
    // histograms, which these are not; should that change, the scrape shows what was written.
    if let Err(e) = prometheus_text::encode(&mut out, &database)
        .and_then(|()| prometheus_text::encode(&mut out, &metrics.registry))
    {
        tracing::error!(error = %e, "rendering /metrics failed");
    }
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
        let text = render(&[], &[], &metrics);
        assert_eq!(
            value_of(&text, "gantry_stage_queue_latency_seconds_count").as_deref(),
            Some("0")
        );
    }

    /// The whole text, which Prometheus and the dashboards built on it read: the names, help
    /// texts, types, label sets and order are those of the hand-written renderer this replaced.
    #[test]
    fn the_text_is_the_prometheus_exposition_format() {
        let metrics = Metrics::default();
        metrics.stage_duration.observe(Duration::from_millis(1234));
        metrics.stage_duration.observe(Duration::from_millis(2500));
        metrics.queue_latency.observe(Duration::from_millis(20));
        metrics.add_log_bytes(1480);
        let text = render(
            &[(RunStatus::Succeeded, 1)],
            &[(StageStatus::Succeeded, 2)],
            &metrics,
        );
        let expected = r#"# HELP gantry_runs Runs by status.
# TYPE gantry_runs gauge
gantry_runs{status="cancelled"} 0
gantry_runs{status="failed"} 0
gantry_runs{status="queued"} 0
gantry_runs{status="running"} 0
gantry_runs{status="succeeded"} 1
gantry_runs{status="timed_out"} 0
# HELP gantry_stages Stage runs by status.
# TYPE gantry_stages gauge
gantry_stages{status="cancelled"} 0
gantry_stages{status="failed"} 0
gantry_stages{status="pending"} 0
gantry_stages{status="queued"} 0
gantry_stages{status="running"} 0
gantry_stages{status="skipped"} 0
gantry_stages{status="succeeded"} 2
gantry_stages{status="timed_out"} 0
gantry_stages{status="waiting_approval"} 0
# HELP gantry_queue_depth Stages waiting in the queue for a free executor slot.
# TYPE gantry_queue_depth gauge
gantry_queue_depth 0
# HELP gantry_stage_duration_seconds Duration of stage attempts whose result this engine process received.
# TYPE gantry_stage_duration_seconds histogram
gantry_stage_duration_seconds_bucket{le="0.1"} 0
gantry_stage_duration_seconds_bucket{le="0.5"} 0
gantry_stage_duration_seconds_bucket{le="1"} 0
gantry_stage_duration_seconds_bucket{le="2.5"} 2
gantry_stage_duration_seconds_bucket{le="5"} 2
gantry_stage_duration_seconds_bucket{le="10"} 2
gantry_stage_duration_seconds_bucket{le="30"} 2
gantry_stage_duration_seconds_bucket{le="60"} 2
gantry_stage_duration_seconds_bucket{le="120"} 2
gantry_stage_duration_seconds_bucket{le="300"} 2
gantry_stage_duration_seconds_bucket{le="600"} 2
gantry_stage_duration_seconds_bucket{le="1800"} 2
gantry_stage_duration_seconds_bucket{le="3600"} 2
gantry_stage_duration_seconds_bucket{le="+Inf"} 2
gantry_stage_duration_seconds_sum 3.734
gantry_stage_duration_seconds_count 2
# HELP gantry_stage_queue_latency_seconds Time stages waited in the queue before this engine process started them.
# TYPE gantry_stage_queue_latency_seconds histogram
gantry_stage_queue_latency_seconds_bucket{le="0.01"} 0
gantry_stage_queue_latency_seconds_bucket{le="0.05"} 1
gantry_stage_queue_latency_seconds_bucket{le="0.1"} 1
gantry_stage_queue_latency_seconds_bucket{le="0.25"} 1
gantry_stage_queue_latency_seconds_bucket{le="0.5"} 1
gantry_stage_queue_latency_seconds_bucket{le="1"} 1
gantry_stage_queue_latency_seconds_bucket{le="2.5"} 1
gantry_stage_queue_latency_seconds_bucket{le="5"} 1
gantry_stage_queue_latency_seconds_bucket{le="10"} 1
gantry_stage_queue_latency_seconds_bucket{le="30"} 1
gantry_stage_queue_latency_seconds_bucket{le="60"} 1
gantry_stage_queue_latency_seconds_bucket{le="300"} 1
gantry_stage_queue_latency_seconds_bucket{le="900"} 1
gantry_stage_queue_latency_seconds_bucket{le="3600"} 1
gantry_stage_queue_latency_seconds_bucket{le="+Inf"} 1
gantry_stage_queue_latency_seconds_sum 0.02
gantry_stage_queue_latency_seconds_count 1
# HELP gantry_log_bytes_total Log bytes runners sent to this engine process.
# TYPE gantry_log_bytes_total counter
gantry_log_bytes_total 1480
"#;
        assert_eq!(text, expected);
    }
}
