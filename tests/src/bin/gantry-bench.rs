//! Engine-core benchmarks (issue 3): how much a stage costs beyond its work, how fast step output
//! reaches PostgreSQL, and how much memory the engine holds. Each subcommand prints a table and
//! the command that reproduces it; docs/performance.md records the figures.
//!
//! ```sh
//! export SQLX_OFFLINE=true
//! cargo build --release --workspace --bins
//! eval "$(scripts/test-postgres)" && export DATABASE_URL
//! target/release/gantry-bench stage-overhead
//! target/release/gantry-bench log-throughput
//! target/release/gantry-bench idle-rss
//! ```
//!
//! Every subcommand works on databases of its own on the server `DATABASE_URL` points at and
//! drops them afterwards; engine processes it starts are stopped (with their runners) even when
//! a measurement fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use sqlx::Row;

#[derive(Parser, Debug)]
#[command(
    name = "gantry-bench",
    about = "Engine-core benchmarks (needs DATABASE_URL and release builds of gantry and gantry-runner)"
)]
struct Cli {
    /// Where the release `gantry` and `gantry-runner` binaries are (default: next to this one).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// A sequential pipeline of `true` steps through an in-process engine, against a shell
    /// loop running `sh -c true` as often.
    StageOverhead {
        #[arg(long, default_value_t = 50)]
        stages: usize,
        /// Measured runs (after one warm-up run); the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// One step writing text lines through a `gantry serve` child process into PostgreSQL,
    /// against the same command into /dev/null; samples the engine's memory meanwhile.
    LogThroughput {
        /// Step output in MB (10^6 bytes).
        #[arg(long, default_value_t = 200)]
        mb: u64,
        /// Repetitions, each with a fresh engine process and database.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// `gantry serve` on an external PostgreSQL, its memory after start-up and an idle spell.
    IdleRss {
        #[arg(long, default_value_t = 10)]
        idle_secs: u64,
        /// Repetitions, each with a fresh engine process and database.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

/// A typical log line of about 80 bytes (`yes` repeats it).
const LOG_LINE: &str =
    "2026-01-01T12:00:00.000Z INFO build::step: compiling module 42 of 97 (warm cache, ok)";

fn main() -> Result<()> {
    let cli = Cli::parse();
    let bins = Bins::find(cli.bin_dir.as_deref())?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let machine = Machine::describe().await?;
        machine.print();
        let bench = async {
            match cli.command {
                Bench::StageOverhead { stages, runs } => {
                    stage_overhead(&bins, &machine, stages, runs.max(1)).await
                }
                Bench::LogThroughput { mb, runs } => {
                    log_throughput(&bins, &machine, mb, runs.max(1)).await
                }
                Bench::IdleRss { idle_secs, runs } => {
                    idle_rss(&bins, &machine, idle_secs, runs.max(1)).await
                }
            }
        };
        // On Ctrl-C the bench is dropped, so its guards stop engines and runners and drop
        // databases as on any other error.
        tokio::select! {
            done = bench => done?,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
        println!("\nload average at the end: {}", load_average());
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// stage-overhead

async fn stage_overhead(bins: &Bins, machine: &Machine, stages: usize, runs: usize) -> Result<()> {
    println!(
        "\n## stage-overhead: {stages} sequential stages of `true`, {runs} measured runs (+1 warm-up)\n"
    );
    if std::env::var_os("GANTRY_LOG").is_some() {
        // The in-process engine's log on stderr, e.g. GANTRY_LOG=tower_http=debug for the
        // latency of every runner call.
        gantry::cli::init_tracing();
    }
    let db = Db::create(&machine.admin_url).await?;
    let data_dir = tempfile::tempdir().context("creating the data directory")?;
    let config = gantry::engine::Config {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data_dir.path().to_path_buf(),
        database_url: Some(db.url.clone()),
        runner_path: Some(bins.runner.clone()),
        ..gantry::engine::Config::default()
    };
    // The in-process engine's runners are our children: stopped whatever way we leave.
    let _runners = RunnerReaper;
    let server = gantry::server::Server::start(config)
        .await
        .context("starting the engine")?;
    let measured = measure_stage_runs(&server, &db, stages, runs).await;
    // Runners of a failed measurement would go on calling a stopped engine: stop them first.
    stop_children_of(std::process::id());
    server.stop().await;
    let measured = measured?;
    drop(data_dir);
    db.drop_now().await;

    let loop_ms: Vec<f64> = (0..runs)
        .map(|_| shell_loop_ms(Path::new("sh"), &["-c", "true"], stages))
        .collect::<Result<_>>()?;
    let runner_ms: Vec<f64> = (0..runs)
        .map(|_| shell_loop_ms(&bins.runner, &["--version"], stages))
        .collect::<Result<_>>()?;

    let pipeline: Vec<f64> = measured.iter().map(|m| m.wall_ms).collect();
    let db_wall: Vec<f64> = measured.iter().map(|m| m.db_ms).collect();
    let (p, l) = (median(&pipeline), median(&loop_ms));
    let overhead = (p - l) / stages as f64;
    println!("| what | median of {runs} | all runs |");
    println!("|---|---:|---|");
    println!(
        "| pipeline, trigger → run ended (client clock) | {} | {} |",
        ms(p),
        list(&pipeline)
    );
    println!(
        "| pipeline, run created_at → finished_at (database clock) | {} | {} |",
        ms(median(&db_wall)),
        list(&db_wall)
    );
    println!(
        "| shell loop, `sh -c true` × {stages} | {} | {} |",
        ms(l),
        list(&loop_ms)
    );
    println!(
        "| (for scale) `gantry-runner --version` × {stages} | {} | {} |",
        ms(median(&runner_ms)),
        list(&runner_ms)
    );
    let each: Vec<f64> = pipeline.iter().map(|w| (w - l) / stages as f64).collect();
    println!(
        "\n**per-stage overhead = (pipeline − loop) / {stages} = {overhead:.1} ms** (target < 15 ms); \
         each run: {} ms\n",
        list_with(&each, |v| format!("{v:.1}"))
    );

    // Where the time goes, from the stage_runs/steps timestamps of all measured runs.
    let phases = Phase::ALL;
    println!("Where a stage's time goes (database timestamps, all {runs} measured runs):\n");
    println!("| phase | from → to | mean ms | median ms | p90 ms | max ms |");
    println!("|---|---|---:|---:|---:|---:|");
    let mut total = 0.0;
    for (i, phase) in phases.iter().enumerate() {
        let values: Vec<f64> = measured
            .iter()
            .flat_map(|m| m.stages.iter().map(move |s| s[i]))
            .collect();
        total += mean(&values);
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            phase.name,
            phase.span,
            mean(&values),
            median(&values),
            percentile(&values, 0.9),
            values.iter().copied().fold(0.0, f64::max)
        );
    }
    let tails: Vec<f64> = measured.iter().map(|m| m.tail_ms).collect();
    println!("| sum per stage | | {total:.1} | | | |");
    println!(
        "| once per run: last stage finished → run finished | | {:.1} | {:.1} | | {:.1} |",
        mean(&tails),
        median(&tails),
        tails.iter().copied().fold(0.0, f64::max)
    );
    let slow = measured
        .iter()
        .flat_map(|m| m.stages.iter())
        .filter(|s| s[0] + s[1] >= 900.0)
        .count();
    println!(
        "\nStage hand-overs that took ≥ 900 ms (the scheduler's 1 s fallback poll instead of a \
         notification): {slow} of {}",
        runs * stages
    );
    println!(
        "\nreproduce: {}",
        reproduce(&format!("stage-overhead --stages {stages} --runs {runs}"))
    );
    Ok(())
}

struct Phase {
    name: &'static str,
    span: &'static str,
}

impl Phase {
    const ALL: [Phase; 5] = [
        Phase {
            name: "scheduler: next stage queued",
            span: "previous stage finished_at (or run created_at) → queued_at",
        },
        Phase {
            name: "scheduler: claimed",
            span: "queued_at → started_at",
        },
        Phase {
            name: "runner start: spawn, spec, step start",
            span: "started_at → steps.started_at",
        },
        Phase {
            name: "step `true` (runner-measured)",
            span: "steps.started_at → steps.finished_at",
        },
        Phase {
            name: "runner end: step finish, logs, complete",
            span: "steps.finished_at → finished_at",
        },
    ];
}

struct StageRunTimes {
    wall_ms: f64,
    db_ms: f64,
    /// Per stage, the milliseconds of each [`Phase`].
    stages: Vec<[f64; 5]>,
    tail_ms: f64,
}

async fn measure_stage_runs(
    server: &gantry::server::Server,
    db: &Db,
    stages: usize,
    runs: usize,
) -> Result<Vec<StageRunTimes>> {
    let mut yaml = String::from("name: overhead\non: [manual]\nstages:\n");
    for i in 0..stages {
        yaml.push_str(&format!(
            "  - name: s{i}\n    steps:\n      - run: \"true\"\n"
        ));
    }
    let engine = &server.engine;
    let name = gantry::run::apply(engine, "bench", "overhead.yaml", &yaml)
        .await
        .context("applying the pipeline")?
        .name;
    let pool = sqlx::PgPool::connect(&db.url)
        .await
        .context("connecting to the bench database")?;
    let mut out = Vec::new();
    for round in 0..=runs {
        let started = Instant::now();
        let triggered = gantry::run::trigger(
            engine,
            "bench",
            &name,
            "manual",
            gantry::run::TriggerRequest::default(),
        )
        .await
        .context("triggering a run")?;
        let run = triggered.run_id;
        let deadline = started + Duration::from_secs(60 + 10 * stages as u64);
        // Polled on a connection of our own every 10 ms: the client-side wall time is at most
        // 10 ms late (0.2 ms per stage of 50); the database's own timestamps are exact.
        loop {
            let (status, reason): (String, Option<String>) =
                sqlx::query_as("SELECT status::text, reason FROM runs WHERE id = $1")
                    .bind(run.0)
                    .fetch_one(&pool)
                    .await
                    .context("polling the run")?;
            match status.as_str() {
                "queued" | "running" => {}
                "succeeded" => break,
                other => bail!("run {run} ended {other}: {reason:?}"),
            }
            if Instant::now() > deadline {
                bail!("run {run} did not finish in time");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
        if round == 0 {
            println!("warm-up run: {wall_ms:.0} ms");
            continue;
        }
        let rows = sqlx::query(
            "SELECT (extract(epoch FROM s.queued_at - COALESCE(p.finished_at, r.created_at)) * 1000)::float8,
                    (extract(epoch FROM s.started_at - s.queued_at) * 1000)::float8,
                    (extract(epoch FROM st.started_at - s.started_at) * 1000)::float8,
                    (extract(epoch FROM st.finished_at - st.started_at) * 1000)::float8,
                    (extract(epoch FROM s.finished_at - st.finished_at) * 1000)::float8
             FROM stage_runs s
             JOIN runs r ON r.id = s.run_id
             LEFT JOIN stage_runs p ON p.run_id = s.run_id AND p.plan_index = s.plan_index - 1
             JOIN steps st ON st.stage_run_id = s.id AND st.attempt = s.attempt AND st.idx = 0
             WHERE s.run_id = $1 ORDER BY s.plan_index",
        )
        .bind(run.0)
        .fetch_all(&pool)
        .await
        .context("reading stage timestamps")?;
        let stage_times: Vec<[f64; 5]> = rows
            .iter()
            .map(|row| -> Result<[f64; 5]> {
                Ok([
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                    row.try_get(4)?,
                ])
            })
            .collect::<Result<_>>()?;
        if stage_times.len() != stages {
            bail!(
                "run {run}: {} of {stages} stages have timestamps",
                stage_times.len()
            );
        }
        let (db_ms, tail_ms): (f64, f64) = sqlx::query_as(
            "SELECT (extract(epoch FROM r.finished_at - r.created_at) * 1000)::float8,
                    (extract(epoch FROM r.finished_at - max(s.finished_at)) * 1000)::float8
             FROM runs r JOIN stage_runs s ON s.run_id = r.id WHERE r.id = $1
             GROUP BY r.id",
        )
        .bind(run.0)
        .fetch_one(&pool)
        .await
        .context("reading run timestamps")?;
        println!("run {round}: {wall_ms:.0} ms");
        out.push(StageRunTimes {
            wall_ms,
            db_ms,
            stages: stage_times,
            tail_ms,
        });
    }
    pool.close().await;
    Ok(out)
}

/// Runs `program args` `times` times in a row; the wall time in ms.
fn shell_loop_ms(program: &Path, args: &[&str], times: usize) -> Result<f64> {
    let started = Instant::now();
    for _ in 0..times {
        let status = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running {}", program.display()))?;
        if !status.success() {
            bail!("{} {args:?} failed: {status}", program.display());
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------------
// log-throughput

async fn log_throughput(bins: &Bins, machine: &Machine, mb: u64, runs: usize) -> Result<()> {
    let bytes = mb * 1_000_000;
    let command = format!("yes '{LOG_LINE}' | head -c {bytes}");
    println!(
        "\n## log-throughput: one step writing {mb} MB of {}-byte lines, {runs} runs\n",
        LOG_LINE.len() + 1
    );
    println!("step: `{command}`\n");
    let mut results = Vec::new();
    for round in 1..=runs {
        let db = Db::create(&machine.admin_url).await?;
        let engine = EngineProcess::start(bins, &db.url).await?;
        let http = engine.http()?;
        let result = one_log_run(&engine, &http, &db, &command, bytes).await;
        // The runner's CPU time reaches the engine's `cutime` once the engine has reaped it.
        let idle_children = result.is_ok() && engine.wait_for_no_children(Duration::from_secs(10));
        let cpu_after = cpu_of(engine.pid);
        drop(engine);
        db.drop_now().await;
        let mut result = result?;
        if idle_children && let (Some(before), Some(after)) = (result.cpu_before, cpu_after) {
            result.engine_cpu_s = Some(after.own - before.own);
            result.runner_cpu_s = Some(after.children - before.children);
        }
        println!(
            "run {round}: {:.2} s, {:.0} MB/s, peak RSS {:.1} MiB",
            result.secs,
            bytes as f64 / 1e6 / result.secs,
            kb_to_mb(result.hwm_kb)
        );
        results.push(result);
    }
    let null_s: Vec<f64> = (0..runs)
        .map(|_| -> Result<f64> {
            let started = Instant::now();
            let status = Command::new("sh")
                .args(["-c", &format!("{command} > /dev/null")])
                .status()
                .context("running the step into /dev/null")?;
            if !status.success() {
                bail!("the step into /dev/null failed: {status}");
            }
            Ok(started.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;

    let secs: Vec<f64> = results.iter().map(|r| r.secs).collect();
    let rate = |s: f64| bytes as f64 / 1e6 / s;
    let rates: Vec<f64> = secs.iter().map(|&s| rate(s)).collect();
    let null_rates: Vec<f64> = null_s.iter().map(|&s| rate(s)).collect();
    println!("\n| what | median | all runs |");
    println!("|---|---:|---|");
    println!(
        "| step start → run end, through the engine into PostgreSQL | {:.2} s | {} |",
        median(&secs),
        list_with(&secs, |v| format!("{v:.2}"))
    );
    println!(
        "| … of which the step itself (runner-measured; slowed by backpressure) | {:.2} s | {} |",
        median(&results.iter().map(|r| r.step_secs).collect::<Vec<_>>()),
        list_with(
            &results.iter().map(|r| r.step_secs).collect::<Vec<_>>(),
            |v| { format!("{v:.2}") }
        )
    );
    println!(
        "| **throughput of step output, end to end** | **{:.0} MB/s** | {} |",
        median(&rates),
        list_with(&rates, |v| format!("{v:.0}"))
    );
    println!(
        "| same command into /dev/null | {:.2} s = {:.0} MB/s | {} |",
        median(&null_s),
        median(&null_rates),
        list_with(&null_rates, |v| format!("{v:.0}"))
    );
    let stored: Vec<f64> = results.iter().map(|r| r.stored_bytes as f64).collect();
    println!(
        "| bytes stored, sum(length(data)) of log_chunks | {:.1} MB | {} rows, {} lines |",
        median(&stored) / 1e6,
        results.last().map_or(0, |r| r.chunks),
        results.last().map_or(0, |r| r.lines)
    );
    let cycles: Vec<f64> = results.iter().map(|r| r.batch_cycle_ms).collect();
    println!(
        "| one batch (≈ {:.1} MB stored): mean time from one insert to the next | {:.1} ms | {} |",
        results.last().map_or(0.0, |r| r.stored_bytes as f64
            / r.chunks.max(1) as f64
            / 1e6),
        median(&cycles),
        list_with(&cycles, |v| format!("{v:.1}"))
    );
    println!(
        "| compression of the stored chunks (`pg_column_compression`) | {} | |",
        results.last().map_or("", |r| r.compression.as_str())
    );
    let stored_rates: Vec<f64> = results
        .iter()
        .map(|r| r.stored_bytes as f64 / 1e6 / r.secs)
        .collect();
    println!(
        "| stored bytes per second | {:.0} MB/s | {} |",
        median(&stored_rates),
        list_with(&stored_rates, |v| format!("{v:.0}"))
    );
    let hwm: Vec<f64> = results.iter().map(|r| kb_to_mb(r.hwm_kb)).collect();
    let before: Vec<f64> = results.iter().map(|r| kb_to_mb(r.rss_before_kb)).collect();
    let sampled: Vec<f64> = results.iter().map(|r| kb_to_mb(r.max_rss_kb)).collect();
    println!(
        "| **engine peak RSS (VmHWM)** | **{:.1} MiB** | {} |",
        median(&hwm),
        list_with(&hwm, |v| format!("{v:.1}"))
    );
    println!(
        "| engine RSS before the run / highest sampled VmRSS (every 10 ms) | {:.1} / {:.1} MiB | {} |",
        median(&before),
        median(&sampled),
        list_with(&sampled, |v| format!("{v:.1}"))
    );
    let cpu = |f: fn(&LogRun) -> Option<f64>| -> String {
        let v: Vec<f64> = results.iter().filter_map(f).collect();
        if v.is_empty() {
            "n/a".into()
        } else {
            format!("{:.2} s", median(&v))
        }
    };
    println!(
        "| CPU: engine process (user+sys) | {} | |",
        cpu(|r| r.engine_cpu_s)
    );
    println!(
        "| CPU: runner + step processes (user+sys) | {} | |",
        cpu(|r| r.runner_cpu_s)
    );
    println!(
        "| CPU: PostgreSQL backends of the engine's pool (user+sys) | {} | |",
        cpu(|r| r.postgres_cpu_s)
    );
    println!(
        "\ntargets: ≥ 100 MB/s end to end, engine peak RSS < 100 MB (RSS figures are MiB, 2^20 bytes; MB/s are 10^6 bytes)"
    );
    println!(
        "\nreproduce: {}",
        reproduce(&format!("log-throughput --mb {mb} --runs {runs}"))
    );
    Ok(())
}

struct LogRun {
    secs: f64,
    step_secs: f64,
    stored_bytes: i64,
    chunks: i64,
    lines: i64,
    batch_cycle_ms: f64,
    compression: String,
    rss_before_kb: u64,
    max_rss_kb: u64,
    hwm_kb: u64,
    cpu_before: Option<Cpu>,
    engine_cpu_s: Option<f64>,
    runner_cpu_s: Option<f64>,
    postgres_cpu_s: Option<f64>,
}

async fn one_log_run(
    engine: &EngineProcess,
    http: &reqwest::Client,
    db: &Db,
    command: &str,
    bytes: u64,
) -> Result<LogRun> {
    let yaml = format!(
        "name: logs\non: [manual]\nstages:\n  - name: spew\n    steps:\n      - run: \"{}\"\n",
        command.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let applied: serde_json::Value = checked(
        http.post(format!("{}/api/v1/projects/bench/pipelines", engine.url))
            .body(yaml)
            .send()
            .await,
        "applying the pipeline",
    )
    .await?;
    let name = applied["name"]
        .as_str()
        .context("the apply answer has no name")?
        .to_owned();
    let rss_before_kb = proc_status(engine.pid, "VmRSS:").unwrap_or(0);
    let cpu_before = cpu_of(engine.pid);
    let sampler = RssSampler::start(engine.pid);
    let triggered: serde_json::Value = checked(
        http.post(format!(
            "{}/api/v1/projects/bench/pipelines/{name}/runs",
            engine.url
        ))
        .json(&serde_json::json!({}))
        .send()
        .await,
        "triggering the run",
    )
    .await?;
    let run_id = triggered["run_id"]
        .as_i64()
        .context("the trigger answer has no run_id")?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let run: serde_json::Value = checked(
            http.get(format!("{}/api/v1/runs/{run_id}", engine.url))
                .send()
                .await,
            "reading the run",
        )
        .await?;
        match run["status"].as_str() {
            Some("queued" | "running") => {}
            Some("succeeded") => break,
            other => bail!(
                "run {run_id} ended {other:?}: {}\nengine log:\n{}",
                run["reason"],
                engine.log_tail()
            ),
        }
        if Instant::now() > deadline || !engine.alive() {
            bail!(
                "run {run_id} did not finish (engine alive: {})\nengine log:\n{}",
                engine.alive(),
                engine.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (max_rss_kb, _) = sampler.stop();
    let hwm_kb = proc_status(engine.pid, "VmHWM:").unwrap_or(0);

    let pool = sqlx::PgPool::connect(&db.url)
        .await
        .context("connecting to the bench database")?;
    let (secs, step_secs): (f64, f64) = sqlx::query_as(
        "SELECT extract(epoch FROM r.finished_at - st.started_at)::float8,
                extract(epoch FROM st.finished_at - st.started_at)::float8
         FROM runs r JOIN stage_runs s ON s.run_id = r.id
         JOIN steps st ON st.stage_run_id = s.id AND st.attempt = s.attempt AND st.idx = 0
         WHERE r.id = $1",
    )
    .bind(run_id)
    .fetch_one(&pool)
    .await
    .context("reading the step and run timestamps")?;
    let (stored_bytes, chunks, lines): (i64, i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(length(data)), 0)::bigint, count(*), COALESCE(max(last_seq), 0)
         FROM log_chunks",
    )
    .fetch_one(&pool)
    .await
    .context("summing the stored log")?;
    // How PostgreSQL compressed the chunks (pglz, lz4, or none for small ones).
    let methods: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT pg_column_compression(data), count(*) FROM log_chunks GROUP BY 1 ORDER BY 2 DESC",
    )
    .fetch_all(&pool)
    .await
    .context("reading the chunks' compression")?;
    let compression = methods
        .iter()
        .map(|(method, n)| format!("{} × {n}", method.as_deref().unwrap_or("none")))
        .collect::<Vec<_>>()
        .join(", ");
    // One row per batch; created_at is when its transaction began, so the gaps between
    // consecutive rows are the cycle of one batch (send, check, store, acknowledge).
    let batch_cycle_ms: f64 = sqlx::query_scalar(
        "SELECT COALESCE(avg(gap), 0)::float8 FROM (
             SELECT extract(epoch FROM created_at - lag(created_at) OVER (ORDER BY first_seq)) * 1000 AS gap
             FROM log_chunks) gaps",
    )
    .fetch_one(&pool)
    .await
    .context("reading the batch times")?;
    // The engine's pool connections: their CPU time is what storing the log cost PostgreSQL.
    let backends: Vec<(i32,)> = sqlx::query_as(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&pool)
    .await
    .context("listing the engine's PostgreSQL backends")?;
    pool.close().await;
    let postgres_cpu_s = backends
        .iter()
        .map(|(pid,)| cpu_of(u32::try_from(*pid).unwrap_or(0)).map(|c| c.own))
        .sum::<Option<f64>>();
    if (stored_bytes as u64) < bytes {
        bail!("only {stored_bytes} bytes stored for {bytes} bytes of output");
    }
    Ok(LogRun {
        secs,
        step_secs,
        stored_bytes,
        chunks,
        lines,
        batch_cycle_ms,
        compression,
        rss_before_kb,
        max_rss_kb,
        hwm_kb,
        cpu_before,
        engine_cpu_s: None,
        runner_cpu_s: None,
        postgres_cpu_s,
    })
}

async fn checked(
    sent: reqwest::Result<reqwest::Response>,
    what: &str,
) -> Result<serde_json::Value> {
    let response = sent.with_context(|| what.to_owned())?;
    let status = response.status();
    let text = response.text().await.with_context(|| what.to_owned())?;
    if !status.is_success() {
        bail!("{what}: {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: not JSON: {text}"))
}

// ---------------------------------------------------------------------------------------------
// idle-rss

async fn idle_rss(bins: &Bins, machine: &Machine, idle_secs: u64, runs: usize) -> Result<()> {
    println!(
        "\n## idle-rss: `gantry serve` on an external PostgreSQL, after start-up and {idle_secs} s idle, {runs} runs\n"
    );
    let mut rows = Vec::new();
    for round in 1..=runs {
        let db = Db::create(&machine.admin_url).await?;
        let engine = EngineProcess::start(bins, &db.url).await?;
        let at_ready = proc_status(engine.pid, "VmRSS:").unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(idle_secs)).await;
        let rss = proc_status(engine.pid, "VmRSS:");
        let hwm = proc_status(engine.pid, "VmHWM:");
        let threads = proc_status(engine.pid, "Threads:");
        let alive = engine.alive();
        let log = engine.log_tail();
        drop(engine);
        db.drop_now().await;
        let (Some(rss), Some(hwm), true) = (rss, hwm, alive) else {
            bail!("the engine is gone after {idle_secs} s idle\nengine log:\n{log}");
        };
        println!(
            "run {round}: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            kb_to_mb(rss),
            kb_to_mb(hwm)
        );
        rows.push((at_ready, rss, hwm, threads.unwrap_or(0)));
    }
    let col = |f: fn(&(u64, u64, u64, u64)) -> u64| -> Vec<f64> {
        rows.iter().map(|r| kb_to_mb(f(r))).collect()
    };
    let (ready, rss, hwm) = (col(|r| r.0), col(|r| r.1), col(|r| r.2));
    println!("\n| what | median | all runs |");
    println!("|---|---:|---|");
    println!(
        "| VmRSS when /readyz first answers | {:.1} MiB | {} |",
        median(&ready),
        list_with(&ready, |v| format!("{v:.1}"))
    );
    println!(
        "| **VmRSS after {idle_secs} s idle** | **{:.1} MiB** | {} |",
        median(&rss),
        list_with(&rss, |v| format!("{v:.1}"))
    );
    println!(
        "| **VmHWM (peak since start)** | **{:.1} MiB** | {} |",
        median(&hwm),
        list_with(&hwm, |v| format!("{v:.1}"))
    );
    println!("| threads | {} | |", rows.last().map_or(0, |r| r.3));
    println!("\ntarget: < 40 MB (PostgreSQL is a separate server and not counted)");
    println!(
        "\nreproduce: {}",
        reproduce(&format!("idle-rss --idle-secs {idle_secs} --runs {runs}"))
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The pieces: binaries, databases, engine processes, /proc.

struct Bins {
    gantry: PathBuf,
    runner: PathBuf,
}

impl Bins {
    fn find(dir: Option<&Path>) -> Result<Bins> {
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => std::env::current_exe()
                .context("locating this program")?
                .parent()
                .context("this program has no directory")?
                .to_path_buf(),
        };
        let bins = Bins {
            gantry: dir.join("gantry"),
            runner: dir.join("gantry-runner"),
        };
        for bin in [&bins.gantry, &bins.runner] {
            if !bin.is_file() {
                bail!(
                    "{} is missing: run `cargo build --release --workspace --bins` first",
                    bin.display()
                );
            }
        }
        if !dir.ends_with("release") {
            eprintln!(
                "warning: {} is not a release directory; figures of debug builds mean little",
                dir.display()
            );
        }
        Ok(bins)
    }
}

struct Machine {
    admin_url: String,
    cpus: usize,
    cpu_model: String,
    postgres: String,
    durability: String,
}

impl Machine {
    async fn describe() -> Result<Machine> {
        let admin_url = std::env::var("DATABASE_URL").context(
            "DATABASE_URL must point at a PostgreSQL server: eval \"$(scripts/test-postgres)\" && export DATABASE_URL",
        )?;
        let pool = sqlx::PgPool::connect(&admin_url)
            .await
            .context("connecting to DATABASE_URL")?;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&pool)
            .await?;
        let mut durability = Vec::new();
        for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
            let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
                .fetch_one(&pool)
                .await?;
            durability.push(format!("{setting}={value}"));
        }
        pool.close().await;
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".into());
        Ok(Machine {
            admin_url,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            postgres: version,
            durability: durability.join(", "),
        })
    }

    fn print(&self) {
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        println!("# gantry-bench, {date}");
        println!(
            "machine: {} CPUs ({}), load average at start: {}",
            self.cpus,
            self.cpu_model,
            load_average()
        );
        println!("PostgreSQL {} ({})", self.postgres, self.durability);
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn reproduce(args: &str) -> String {
    format!(
        "export SQLX_OFFLINE=true && cargo build --release --workspace --bins && \
         eval \"$(scripts/test-postgres)\" && export DATABASE_URL && target/release/gantry-bench {args}"
    )
}

/// A database of its own on the `DATABASE_URL` server, dropped afterwards (also on error).
struct Db {
    admin_url: String,
    name: String,
    url: String,
    dropped: bool,
}

impl Db {
    async fn create(admin_url: &str) -> Result<Db> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "gantry_bench_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let pool = sqlx::PgPool::connect(admin_url)
            .await
            .context("connecting to DATABASE_URL")?;
        // The name is made here from digits, letters and underscores only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .context("creating the bench database")?;
        pool.close().await;
        let url = gantry_tests::with_database(admin_url, &name)
            .context("DATABASE_URL has no database name")?;
        Ok(Db {
            admin_url: admin_url.to_owned(),
            url,
            name,
            dropped: false,
        })
    }

    async fn drop_now(mut self) {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name).await;
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Dropped on an error path, maybe inside the runtime: drop it from a thread of its own.
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let dropper = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(drop_database(&admin, &name));
            }
        });
        let _ = dropper.join();
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    let dropped = async {
        let pool = sqlx::PgPool::connect(admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&pool)
        .await?;
        pool.close().await;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    if let Err(e) = dropped {
        eprintln!("warning: could not drop the bench database {name}: {e}");
    }
}

/// `gantry serve` as a child process; stopped with its runners when dropped.
struct EngineProcess {
    child: std::process::Child,
    pid: u32,
    url: String,
    log: PathBuf,
    _data_dir: tempfile::TempDir,
}

impl EngineProcess {
    async fn start(bins: &Bins, database_url: &str) -> Result<EngineProcess> {
        let data_dir = tempfile::tempdir().context("creating the data directory")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let log = data_dir.path().join("engine.log");
        // With GANTRY_LOG set (say, tower_http=debug for the latency of every call) the
        // engine's log goes to our stderr; otherwise to a file shown when something fails.
        let stderr = if std::env::var_os("GANTRY_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::from(std::fs::File::create(&log).context("creating the engine log")?)
        };
        let child = Command::new(&bins.gantry)
            .arg("serve")
            .arg("--database-url")
            .arg(database_url)
            .arg("--data-dir")
            .arg(data_dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--runner")
            .arg(&bins.runner)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", bins.gantry.display()))?;
        let engine = EngineProcess {
            pid: child.id(),
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _data_dir: data_dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", engine.url)).send().await
                && r.status().is_success()
            {
                return Ok(engine);
            }
            if !engine.alive() || Instant::now() > deadline {
                bail!(
                    "the engine did not become ready\nengine log:\n{}",
                    engine.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A client with the API token the engine's first start wrote to its data directory.
    fn http(&self) -> Result<reqwest::Client> {
        let token = gantry::access::bootstrap::read_token(self._data_dir.path())
            .context("the engine wrote no admin token")?;
        Ok(gantry_tests::authorized_client(&token))
    }

    fn alive(&self) -> bool {
        proc_status(self.pid, "State:").is_some()
            && !std::fs::read_to_string(format!("/proc/{}/status", self.pid))
                .unwrap_or_default()
                .contains("(zombie)")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until every runner the engine started has exited (and been reaped).
    fn wait_for_no_children(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if children_of(self.pid).is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        stop_children_of(self.pid);
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops this process's children (the runners of an in-process engine) when dropped.
struct RunnerReaper;

impl Drop for RunnerReaper {
    fn drop(&mut self) {
        stop_children_of(std::process::id());
    }
}

/// The direct children of a process (for the engine: its runners).
fn children_of(pid: u32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Stops the runners a process started: each leads its own process group, which holds its
/// steps' groups' parent; SIGTERM lets a runner stop its steps, SIGKILL follows.
fn stop_children_of(pid: u32) {
    let children = children_of(pid);
    if children.is_empty() {
        return;
    }
    for &child in &children {
        let _ = killpg(Pid::from_raw(child), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !children_of(pid).is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    for child in children_of(pid) {
        let _ = killpg(Pid::from_raw(child), Signal::SIGKILL);
    }
}

/// A `/proc/PID/status` field in kB (or the first number of any field).
fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .or(Some(0))
}

/// CPU seconds (user + system) of a process itself and of its reaped children.
#[derive(Clone, Copy)]
struct Cpu {
    own: f64,
    children: f64,
}

fn cpu_of(pid: u32) -> Option<Cpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<f64> = after.split(' ').map(|f| f.parse().unwrap_or(0.0)).collect();
    // Fields 14-17 of stat (utime, stime, cutime, cstime) are 11-14 after the state letter.
    let tick = clock_ticks();
    Some(Cpu {
        own: (fields.get(11)? + fields.get(12)?) / tick,
        children: (fields.get(13)? + fields.get(14)?) / tick,
    })
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Samples a process's VmRSS every 10 ms on a thread of its own.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, usize)>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut max, mut samples) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                if let Some(rss) = proc_status(pid, "VmRSS:") {
                    max = max.max(rss);
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (max, samples)
        });
        RssSampler { stop, thread }
    }

    /// The highest VmRSS seen (kB) and the number of samples.
    fn stop(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting.

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn median(values: &[f64]) -> f64 {
    let v = sorted(values);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let v = sorted(values);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn ms(v: f64) -> String {
    format!("{v:.0} ms")
}

fn list(values: &[f64]) -> String {
    list_with(values, |v| format!("{v:.0}"))
}

fn list_with(values: &[f64], f: impl Fn(f64) -> String) -> String {
    values.iter().map(|&v| f(v)).collect::<Vec<_>>().join(", ")
}

fn kb_to_mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}
