//! A PostgreSQL restart in the middle of a run: the engine reconnects and carries on, the
//! runner retries what failed meanwhile, and no log line is lost.

use std::time::Duration;

use gantry::store::embedded::EmbeddedPostgres;
use gantry_tests::{TestEngine, assert_succeeded};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_carries_on_after_a_database_restart() {
    // A database server of its own: restarting the shared test server would disturb other tests.
    let pg_dir = tempfile::Builder::new()
        .prefix("gantry-pg-restart")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let pg_data = pg_dir.path().join("pg");
    let pg = EmbeddedPostgres::start(&pg_data)
        .await
        .expect("postgres starts");
    let url = pg.url().to_owned();
    let app = TestEngine::start_with(|c| c.database_url = Some(url.clone())).await;
    let name = app
        .apply("name: steady\nstages:\n  - name: count\n    steps:\n      - run: |\n          i=1\n          while [ $i -le 400 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.01; done\n")
        .await;
    let run = app.trigger(&name, &[]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pg = EmbeddedPostgres::start(&pg_data)
        .await
        .expect("postgres restarts");
    let (row, _) = app.wait_for_run(run.run_id, Duration::from_secs(120)).await;
    assert_succeeded(&row);
    let lines = app.log_lines(run.run_id, "count").await;
    let counted: Vec<&String> = lines.iter().filter(|l| l.starts_with("line ")).collect();
    let expected: Vec<String> = (1..=400).map(|i| format!("line {i}")).collect();
    assert_eq!(counted.len(), 400, "lines: {}", counted.len());
    assert!(
        counted.iter().zip(&expected).all(|(a, b)| *a == b),
        "lines out of order or missing"
    );
    app.stop().await;
    pg.stop().await;
}
