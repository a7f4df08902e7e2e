//! PostgreSQL going away in the middle of a run: the engine reconnects and carries on, the
//! runner keeps its lines and results until the engine can take them, silence while the engine
//! could not reach its database is not taken for a dead runner, and an embedded PostgreSQL
//! that dies is started again by the engine.

use std::time::Duration;

use gantry::store::embedded::EmbeddedPostgres;
use gantry_tests::{TestEngine, assert_succeeded};

/// A step printing 400 numbered lines over about four seconds.
const STEADY: &str = "name: steady\nstages:\n  - name: count\n    steps:\n      - run: |\n          i=1\n          while [ $i -le 400 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.01; done\n";

async fn assert_every_line(app: &TestEngine, run: gantry::store::RunId) {
    let lines = app.log_lines(run, "count").await;
    let counted: Vec<&String> = lines.iter().filter(|l| l.starts_with("line ")).collect();
    let expected: Vec<String> = (1..=400).map(|i| format!("line {i}")).collect();
    assert_eq!(counted.len(), 400, "lines: {}", counted.len());
    assert!(
        counted.iter().zip(&expected).all(|(a, b)| *a == b),
        "lines out of order or missing"
    );
}

/// Waits until the run's first stage has stored log lines (the runner is at work).
async fn until_logging(app: &TestEngine, run: gantry::store::RunId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while app.stage(run, "count").await.log_lines == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stage never logged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_silence_limit_fails_nothing() {
    // A database server of its own: stopping the shared test server would disturb other tests.
    let pg_dir = tempfile::Builder::new()
        .prefix("gantry-pg-restart")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let pg_data = pg_dir.path().join("pg");
    let pg = EmbeddedPostgres::start(&pg_data)
        .await
        .expect("postgres starts");
    let url = pg.url().to_owned();
    // A runner silent for 3 s is taken for dead; the database is away for three times that.
    const LOST_AFTER_SECS: u64 = 3;
    let outage = Duration::from_secs(3 * LOST_AFTER_SECS);
    let app = TestEngine::start_with(|c| {
        c.database_url = Some(url.clone());
        c.lost_after_secs = LOST_AFTER_SECS;
    })
    .await;
    let name = app.apply(STEADY).await;
    let run = app.trigger(&name, &[]).await;
    until_logging(&app, run.run_id).await;
    pg.stop().await;
    // A load balancer learns at once that this engine cannot serve (not after the pool's 30 s).
    let ready = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .get(format!("{}/readyz", app.url()))
        .send()
        .await
        .expect("/readyz answers while the database is away");
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    // The outage's length is what is tried here, not a wait for something to happen.
    tokio::time::sleep(outage).await;
    let pg = EmbeddedPostgres::start(&pg_data)
        .await
        .expect("postgres restarts");
    let (row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(120)).await;
    assert_succeeded(&row);
    assert_eq!(
        stages[0].attempt, 1,
        "the attempt was not failed and retried: {stages:?}"
    );
    assert_every_line(&app, run.run_id).await;
    app.stop().await;
    pg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_postgresql_that_dies_is_started_again() {
    // The engine's own PostgreSQL, in its data directory.
    let app = TestEngine::start_with(|c| c.database_url = None).await;
    let name = app.apply(STEADY).await;
    let run = app.trigger(&name, &[]).await;
    until_logging(&app, run.run_id).await;
    let pid_file = app.data_dir.path().join("postgres/pgdata/postmaster.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("the postmaster's pid");
    gantry_tests::proc::kill9(pid);
    // The test's own connections die with the server too: read until the run has ended,
    // taking a failed read for the server not being back yet.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let row = loop {
        if let Ok(row) = gantry::store::runs::get(app.pool(), run.run_id).await
            && row.status.is_terminal()
        {
            break row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run did not end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_succeeded(&row);
    let stages = gantry::store::stages::for_run(app.pool(), run.run_id)
        .await
        .expect("stages");
    assert_eq!(stages[0].attempt, 1, "{stages:?}");
    assert_every_line(&app, run.run_id).await;
    let now: i32 = std::fs::read_to_string(&pid_file)
        .expect("postmaster.pid again")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("pid");
    assert_ne!(now, pid, "a new postmaster runs");
    app.stop().await;
}
