//! Kubernetes executor benchmarks (docs/performance.md, "Kubernetes executor"), against the
//! stand-in API server of `tests/src/kube` in this process; needs `DATABASE_URL`.
//!
//! - `job-latency`: stage ready (the scheduler queued it: `stage_runs.queued_at`) → its Job
//!   stored by the API server, p50/p99 over N stages: `--shape chain` runs N stages one after
//!   another (each Job really runs its runner), `--shape burst` makes N stages ready at once
//!   (no kubelet: only Job creation is measured).
//! - `real-latency`: on a real control plane (kube-apiserver, kube-controller-manager and
//!   kube-scheduler from `scripts/controlplane`, the fake kubelet of `tests/src/controlplane`),
//!   N stages one after another: stage ready → Job seen, Job seen → its pod seen (the Job
//!   controller's own latency), and stage ready → the runner's first call
//!   (`stage_runs.contacted_at`), p50/p99. Objects are timed by a watch in this process.
//! - `watch-events`: how many Job watch events per second the executor's watcher handles:
//!   N Jobs, each modified M times as fast as the stand-in can store them, timed until the
//!   watcher has seen every event.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use gantry::executor::kubernetes::{KubeExecutor, KubeSettings};
use gantry_tests::kube::StandIn;
use gantry_tests::kube::store::Kind;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "gantry-kube-bench",
    about = "Kubernetes executor benchmarks (needs DATABASE_URL)"
)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Shape {
    Chain,
    Burst,
}

#[derive(Subcommand, Debug)]
enum Bench {
    JobLatency {
        #[arg(long, default_value_t = 200)]
        stages: usize,
        #[arg(long, value_enum, default_value = "chain")]
        shape: Shape,
    },
    RealLatency {
        #[arg(long, default_value_t = 200)]
        stages: usize,
    },
    WatchEvents {
        #[arg(long, default_value_t = 200)]
        jobs: usize,
        #[arg(long, default_value_t = 50)]
        updates: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        println!(
            "# gantry-kube-bench, {} CPUs, load average at start: {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_average()
        );
        match cli.command {
            Bench::JobLatency { stages, shape } => job_latency(stages.max(1), shape).await?,
            Bench::RealLatency { stages } => real_latency(stages.max(1)).await?,
            Bench::WatchEvents { jobs, updates } => {
                watch_events(jobs.max(1), updates.max(1)).await?
            }
        }
        println!("load average at the end: {}", load_average());
        Ok(())
    })
}

/// The `gantry-runner` built with this binary (cargo puts them side by side).
fn runner_next_to_me() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("gantry-runner")))
        .unwrap_or_else(|| "gantry-runner".into())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn job_latency(stages: usize, shape: Shape) -> Result<()> {
    let standin = match shape {
        Shape::Chain => {
            StandIn::start(gantry_tests::kube::RUNNER_IMAGE, &runner_next_to_me()).await
        }
        Shape::Burst => StandIn::without_kubelet(gantry_tests::kube::RUNNER_IMAGE).await,
    };
    // When each Job was stored: the API server's events, in this process.
    let mut events = standin.cluster.store.controller_events();
    let created = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<String, SystemTime>::new()));
    let recorder = {
        let created = std::sync::Arc::clone(&created);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if event.kind == Kind::Job && event.type_ == "ADDED" {
                    let name = event.object["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    if let Ok(mut c) = created.lock() {
                        c.insert(name, SystemTime::now());
                    }
                }
            }
        })
    };
    let engine = gantry_tests::TestEngine::start_with(|c| {
        standin.configure(c);
        if let Some(k) = c.kubernetes.as_mut() {
            k.slots = stages + 8;
        }
    })
    .await;
    let mut yaml = "name: kube-bench\nstages:\n".to_owned();
    for i in 0..stages {
        match shape {
            Shape::Chain => {
                yaml.push_str(&format!("  - name: s{i}\n    steps:\n      - \"true\"\n"))
            }
            Shape::Burst => yaml.push_str(&format!(
                "  - name: s{i}\n    needs: []\n    steps:\n      - \"true\"\n"
            )),
        }
    }
    let name = engine.apply(&yaml).await;
    let started = Instant::now();
    let run = engine.trigger(&name, &[]).await;
    let limit = Duration::from_secs(60 + 3 * stages as u64);
    match shape {
        Shape::Chain => {
            let (row, _) = engine.wait_for_run(run.run_id, limit).await;
            if row.status != gantry::store::RunStatus::Succeeded {
                bail!("the run ended {}: {:?}", row.status.as_str(), row.reason);
            }
        }
        Shape::Burst => {
            let deadline = Instant::now() + limit;
            while created.lock().map(|c| c.len()).unwrap_or(0) < stages {
                if Instant::now() > deadline {
                    bail!("not every Job was created within {limit:?}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let wall = started.elapsed();
    let rows = gantry::store::stages::for_run(engine.pool(), run.run_id).await?;
    let created = created.lock().map(|c| c.clone()).unwrap_or_default();
    let mut latencies = Vec::new();
    for row in &rows {
        let job = format!("gantry-{}-1", row.id);
        let (Some(ready), Some(at)) = (row.queued_at, created.get(&job)) else {
            bail!("stage {} has no queue time or no Job", row.key);
        };
        let ready = SystemTime::UNIX_EPOCH
            + Duration::from_micros(u64::try_from(ready.timestamp_micros()).unwrap_or(0));
        let ms = at
            .duration_since(ready)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        latencies.push(ms);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "job-latency --shape {shape:?} --stages {stages}: stage ready -> Job created: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n = {}); whole run {:.1} s",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len(),
        wall.as_secs_f64()
    );
    recorder.abort();
    engine.stop().await;
    Ok(())
}

/// Times of first sight, by Job name, of the Jobs and of their first pods.
#[derive(Default)]
struct Sightings {
    jobs: HashMap<String, SystemTime>,
    pods: HashMap<String, SystemTime>,
}

async fn real_latency(stages: usize) -> Result<()> {
    use futures_util::StreamExt;
    use gantry_tests::controlplane::{ControlPlane, Options};
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher;
    // The kubelet runs the release runner next to this binary.
    let images = tempfile::tempdir()?;
    let root = images.path().join("runner");
    std::fs::create_dir_all(root.join("usr/local/bin"))?;
    std::os::unix::fs::symlink(
        runner_next_to_me(),
        root.join("usr/local/bin/gantry-runner"),
    )?;
    let mut options = Options::default();
    options
        .images
        .roots
        .insert(gantry_tests::kube::RUNNER_IMAGE.to_owned(), root);
    let plane = ControlPlane::start_with(options).await;
    plane.create_namespace("ci", None).await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Sightings::default()));
    let watch_jobs = {
        let seen = std::sync::Arc::clone(&seen);
        let api: kube::Api<Job> = kube::Api::namespaced(plane.client(), "ci");
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job)) = event
                    && let (Some(name), Ok(mut s)) = (job.metadata.name, seen.lock())
                {
                    s.jobs.entry(name).or_insert_with(SystemTime::now);
                }
            }
        })
    };
    let watch_pods = {
        let seen = std::sync::Arc::clone(&seen);
        let api: kube::Api<Pod> = kube::Api::namespaced(plane.client(), "ci");
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event
                    && let Some(job) = pod
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("batch.kubernetes.io/job-name"))
                        .cloned()
                    && let Ok(mut s) = seen.lock()
                {
                    s.pods.entry(job).or_insert_with(SystemTime::now);
                }
            }
        })
    };
    let kubeconfig = plane.kubeconfig();
    let engine = gantry_tests::TestEngine::start_with(|c| {
        plane.configure(c, &kubeconfig, "ci");
        if let Some(k) = c.kubernetes.as_mut() {
            // Finished Jobs go soon: 200 of them would crowd the fake node's bookkeeping.
            k.jobs.ttl_secs = 30;
        }
    })
    .await;
    let mut yaml = "name: real-bench\nstages:\n".to_owned();
    for i in 0..stages {
        yaml.push_str(&format!("  - name: s{i}\n    steps:\n      - \"true\"\n"));
    }
    let name = engine.apply(&yaml).await;
    let started = Instant::now();
    let run = engine.trigger(&name, &[]).await;
    let (row, _) = engine
        .wait_for_run(run.run_id, Duration::from_secs(120 + 10 * stages as u64))
        .await;
    if row.status != gantry::store::RunStatus::Succeeded {
        bail!("the run ended {}: {:?}", row.status.as_str(), row.reason);
    }
    let wall = started.elapsed();
    let rows = gantry::store::stages::for_run(engine.pool(), run.run_id).await?;
    let contacts: HashMap<i64, chrono::DateTime<chrono::Utc>> = sqlx::query_as::<
        _,
        (i64, chrono::DateTime<chrono::Utc>),
    >(
        "SELECT id, contacted_at FROM stage_runs WHERE run_id = $1 AND contacted_at IS NOT NULL",
    )
    .bind(run.run_id.0)
    .fetch_all(engine.pool())
    .await?
    .into_iter()
    .collect();
    watch_jobs.abort();
    watch_pods.abort();
    let seen = std::mem::take(
        &mut *seen
            .lock()
            .map_err(|_| anyhow::anyhow!("sightings poisoned"))?,
    );
    let at = |t: chrono::DateTime<chrono::Utc>| {
        SystemTime::UNIX_EPOCH
            + Duration::from_micros(u64::try_from(t.timestamp_micros()).unwrap_or(0))
    };
    let ms = |from: SystemTime, to: SystemTime| {
        to.duration_since(from)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let (mut to_job, mut to_pod, mut to_runner) = (Vec::new(), Vec::new(), Vec::new());
    for row in &rows {
        let job = format!("gantry-{}-1", row.id);
        let (Some(ready), Some(job_at), Some(pod_at), Some(contact)) = (
            row.queued_at,
            seen.jobs.get(&job),
            seen.pods.get(&job),
            contacts.get(&row.id.0),
        ) else {
            bail!(
                "stage {}: no queue time, Job, pod or first call seen",
                row.key
            );
        };
        to_job.push(ms(at(ready), *job_at));
        to_pod.push(ms(*job_at, *pod_at));
        to_runner.push(ms(at(ready), at(*contact)));
    }
    for (what, values) in [
        ("stage ready -> Job created", &mut to_job),
        ("Job created -> pod created (Job controller)", &mut to_pod),
        ("stage ready -> runner's first call", &mut to_runner),
    ] {
        values.sort_by(f64::total_cmp);
        println!(
            "real-latency --stages {stages}: {what}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n = {})",
            percentile(values, 50.0),
            percentile(values, 99.0),
            values.last().copied().unwrap_or(f64::NAN),
            values.len(),
        );
    }
    println!(
        "whole run {:.1} s ({:.0} ms per stage)",
        wall.as_secs_f64(),
        wall.as_secs_f64() * 1000.0 / stages as f64
    );
    engine.stop().await;
    Ok(())
}

async fn watch_events(jobs: usize, updates: usize) -> Result<()> {
    let standin = StandIn::without_kubelet(gantry_tests::kube::RUNNER_IMAGE).await;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(standin.kubeconfig_path())?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    let executor = KubeExecutor::with_client(client, KubeSettings::default()).await?;
    let names: Vec<String> = (0..jobs).map(|i| format!("gantry-bench-{i}")).collect();
    for name in &names {
        standin.create(
            Kind::Job,
            "ci",
            json!({
                "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "gantry"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "stage", "image": "x"}]}}},
            }),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !executor.watch_synced() || executor.watch_events() < jobs as u64 {
        if Instant::now() > deadline {
            bail!("the watcher did not sync");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = executor.watch_events();
    let total = (jobs * updates) as u64;
    let started = Instant::now();
    for round in 0..updates {
        for name in &names {
            standin
                .cluster
                .store
                .update(Kind::Job, "ci", name, |j| {
                    j["status"] = json!({"active": 1, "ready": round % 2});
                    Ok(())
                })
                .map_err(|e| anyhow::anyhow!(e.message))?;
        }
        // Let the watch stream drain now and then, as a real API server's would.
        tokio::task::yield_now().await;
    }
    let stored = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while executor.watch_events() < before + total {
        if Instant::now() > deadline {
            bail!(
                "the watcher saw {} of {total} events",
                executor.watch_events() - before
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "watch-events --jobs {jobs} --updates {updates}: {total} Job events handled in {:.3} s = {:.0} events/s (the stand-in stored them in {:.3} s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        stored.as_secs_f64()
    );
    Ok(())
}
