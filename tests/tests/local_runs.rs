//! Runs on the local executor against real PostgreSQL and real runner processes.

use std::time::Duration;

use gantry_tests::{StageStatus, TestEngine, assert_succeeded, status_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_pipeline_runs_and_its_log_is_stored() {
    let app = TestEngine::start().await;
    let name = app
        .apply("name: hi\nstages:\n  - name: greet\n    steps:\n      - run: echo \"hello $GANTRY_PIPELINE on $GANTRY_BRANCH\"\n")
        .await;
    let run = app.trigger(&name, &[]).await;
    let (run_row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(60)).await;
    assert_succeeded(&run_row);
    assert_eq!(status_of(&stages, "greet"), StageStatus::Succeeded);
    let lines = app.log_lines(run.run_id, "greet").await;
    assert!(lines.contains(&"hello hi on main".to_owned()), "{lines:?}");
    app.stop().await;
}
