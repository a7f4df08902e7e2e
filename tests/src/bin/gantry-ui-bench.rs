//! The web UI's benchmark (docs/performance.md#web-ui), measured in a real browser (Debian's
//! headless Chromium via chromedriver):
//!
//! - **line latency**: a step prints `mark <unix ms>` lines; the open run page records, for
//!   each, when its row is first drawn (the animation frame after it entered the DOM) and the
//!   difference is the latency from the step's `echo` to the line being visible;
//! - **page weight**: bytes the run page transfers without any log (document, CSS, JS);
//! - **long log**: time until all lines of a 100,000-line log are loaded in the page, and how
//!   many rows the DOM holds then.
//!
//! Needs `DATABASE_URL` (an admin connection to a PostgreSQL, e.g. `eval "$(scripts/test-postgres)"`)
//! and the `gantry-runner` binary next to this one: `cargo build --release --workspace --bins`,
//! then `target/release/gantry-ui-bench`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use gantry::store::{RunId, RunStatus};
use gantry_tests::browser::Browser;
use serde_json::Value;

#[derive(Parser, Debug)]
#[command(about = "Gantry web UI benchmark (a real headless Chromium)")]
struct Args {
    /// Lines the step prints for the latency measurement.
    #[arg(long, default_value_t = 300)]
    lines: u32,
    /// Pause between two lines, in milliseconds.
    #[arg(long, default_value_t = 20)]
    interval_ms: u32,
    /// Lines of the long log.
    #[arg(long, default_value_t = 100_000)]
    long_lines: u32,
    /// The gantry-runner binary (default: next to this program).
    #[arg(long)]
    runner: Option<PathBuf>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short sample"
    )]
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn wait_for_run(engine: &gantry::engine::Engine, id: RunId, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let run = gantry::store::runs::get(&engine.store.pool, id).await?;
        if run.status.is_terminal() {
            if run.status != RunStatus::Succeeded {
                bail!("run {id} ended {}: {:?}", run.status.as_str(), run.reason);
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("run {id} still {} after {limit:?}", run.status.as_str());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Records, for every `mark <ms>` row, the time it was first drawn minus its `<ms>`.
const OBSERVER: &str = r"
window.__latency = {};
const rows = document.getElementById('log-rows');
new MutationObserver(() => {
  const seen = [];
  for (const row of rows.querySelectorAll('.row')) {
    const n = row.dataset.n;
    if (window.__latency[n] !== undefined) continue;
    const m = /^mark (\d+)$/.exec(row.querySelector('.tx').textContent);
    if (m) { window.__latency[n] = null; seen.push([n, Number(m[1])]); }
  }
  if (seen.length) requestAnimationFrame(() => {
    const now = Date.now();
    for (const [n, ms] of seen) window.__latency[n] = now - ms;
  });
}).observe(rows, { childList: true });
return true;
";

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let runner = match args.runner {
        Some(r) => r,
        None => std::env::current_exe()?
            .parent()
            .context("no directory")?
            .join("gantry-runner"),
    };
    let db = gantry_tests::TestDb::create().await;
    let data_dir = tempfile::tempdir()?;
    let server = gantry::server::Server::start(gantry::engine::Config {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data_dir.path().to_path_buf(),
        database_url: Some(db.url.clone()),
        runner_path: Some(runner),
        ..gantry::engine::Config::default()
    })
    .await?;
    let result = measure(
        &server,
        data_dir.path(),
        args.lines,
        args.interval_ms,
        args.long_lines,
    )
    .await;
    server.stop().await;
    result
}

async fn measure(
    server: &gantry::server::Server,
    data_dir: &std::path::Path,
    lines: u32,
    interval_ms: u32,
    long_lines: u32,
) -> Result<()> {
    let engine = &server.engine;
    let base = server.url();
    let gate = data_dir.join("gate");
    let yaml = format!(
        "name: marks\nstages:\n  - name: print\n    env:\n      GATE: {}\n    steps:\n      - run: |\n          while [ ! -e \"$GATE\" ]; do sleep 0.02; done\n          for i in $(seq 1 {lines}); do echo \"mark $(date +%s%3N)\"; sleep {}; done\n",
        gate.display(),
        f64::from(interval_ms) / 1000.0
    );
    gantry::run::apply(engine, "bench", "marks.yaml", &yaml).await?;
    let run = gantry::run::trigger(engine, "bench", "marks", "manual", Default::default()).await?;
    let password = std::fs::read_to_string(data_dir.join("admin.password"))?;
    let browser = Browser::start("bench").await;
    browser.sign_in(&base, "admin", password.trim()).await;
    // Another page first, so the run page below is measured as loaded cold (no asset cached
    // from the sign-in page would be fair either way; see the weight figures).
    browser.goto(&format!("{base}/runs/{}", run.run_id)).await;
    browser
        .wait_for(
            "the log stream open",
            "return document.getElementById('log-state').textContent !== '';",
            Duration::from_secs(30),
        )
        .await;
    browser.js(OBSERVER, vec![]).await;
    std::fs::write(&gate, "")?;
    wait_for_run(engine, run.run_id, Duration::from_secs(600)).await?;
    let expected = f64::from(lines);
    browser
        .wait_for(
            "every mark drawn",
            &format!(
                "return Object.values(window.__latency).filter(v => v !== null).length >= {expected};"
            ),
            Duration::from_secs(60),
        )
        .await;
    let values = browser
        .js("return Object.values(window.__latency);", vec![])
        .await;
    let mut latencies: Vec<f64> = values
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    latencies.sort_by(f64::total_cmp);

    // Page weight: a fresh browser profile, signed in through the API-less form, then the run
    // page of a run with no log at all.
    let empty = "name: empty\nstages:\n  - name: gate\n    approval: true\n";
    gantry::run::apply(engine, "bench", "empty.yaml", empty).await?;
    let quiet =
        gantry::run::trigger(engine, "bench", "empty", "manual", Default::default()).await?;
    // A fresh browser, signed in, with its cache emptied: the run page pays for its CSS and JS.
    let cold = Browser::start("bench-weight").await;
    cold.sign_in(&base, "admin", password.trim()).await;
    cold.devtools("Network.clearBrowserCache", serde_json::json!({}))
        .await;
    cold.goto(&format!("{base}/runs/{}", quiet.run_id)).await;
    cold.wait_for(
        "the quiet run page",
        "return document.readyState === 'complete' && document.getElementById('log-state').textContent !== '';",
        Duration::from_secs(30),
    )
    .await;
    let weight = cold
        .js(
            "const nav = performance.getEntriesByType('navigation')[0];
             const size = (e) => e.transferSize || e.encodedBodySize || 0;
             const assets = performance.getEntriesByType('resource').filter(e => !e.name.includes('/api/'));
             return { document: size(nav), assets: assets.map(size).reduce((a, b) => a + b, 0),
                      assets_body: assets.map(e => e.encodedBodySize).reduce((a, b) => a + b, 0),
                      document_body: nav.encodedBodySize, count: assets.length };",
            vec![],
        )
        .await;
    cold.close().await;

    // The long log.
    let long =
        format!("name: long\nstages:\n  - name: spew\n    steps:\n      - seq 1 {long_lines}\n");
    gantry::run::apply(engine, "bench", "long.yaml", &long).await?;
    let long_run =
        gantry::run::trigger(engine, "bench", "long", "manual", Default::default()).await?;
    wait_for_run(engine, long_run.run_id, Duration::from_secs(600)).await?;
    let started = Instant::now();
    browser
        .goto(&format!("{base}/runs/{}", long_run.run_id))
        .await;
    browser
        .wait_for(
            "the long log loaded",
            "return document.getElementById('log-state').textContent.endsWith('the attempt has ended');",
            Duration::from_secs(120),
        )
        .await;
    let long_secs = started.elapsed().as_secs_f64();
    let rows = browser
        .js(
            "return document.querySelectorAll('#log-rows .row').length;",
            vec![],
        )
        .await;
    browser.close().await;

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "## web UI (gantry-ui-bench, headless Chromium {})\n",
        chromium_version()
    );
    println!("machine load average at the end: {}", load.trim());
    println!(
        "\n| figure | value |\n|---|---|\n| step `echo` → line drawn on the open run page, p50 | {:.0} ms |\n| ... p95 | {:.0} ms |\n| ... max | {:.0} ms |\n| lines measured | {} ({interval_ms} ms apart) |",
        percentile(&latencies, 50.0),
        percentile(&latencies, 95.0),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len()
    );
    println!(
        "| run page without log: document | {} B (body {} B) |\n| ... CSS + JS ({} files) | {} B (bodies {} B) |",
        weight["document"],
        weight["document_body"],
        weight["count"],
        weight["assets"],
        weight["assets_body"]
    );
    println!(
        "| {long_lines}-line log: page opened → every line loaded | {long_secs:.2} s |\n| ... log rows in the DOM then | {rows} |"
    );
    Ok(())
}

fn chromium_version() -> String {
    std::process::Command::new(gantry_tests::browser::CHROMIUM)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
