//! What a failing stage does to the rest of its run: its dependents are skipped, independent
//! stages and `finally` stages still run, and the run ends failed naming the stage.

use std::time::Duration;

use gantry::store::RunStatus;
use gantry_tests::{StageStatus, TestEngine, stage_of};

const PIPELINE: &str = r#"
name: breaks
stages:
  - name: build
    steps:
      - echo building
      - name: compile
        run: echo "compile error" >&2; exit 3
      - echo never printed
  - name: test
    needs: [build]
    steps:
      - echo testing
  - name: package
    needs: [test]
    steps:
      - echo packaging
  - name: docs
    needs: []
    steps:
      - echo docs
finally:
  - name: cleanup
    steps:
      - echo "cleaning up after $GANTRY_PIPELINE"
  - name: notify
    steps:
      - echo notified
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stage_skips_its_dependents_but_runs_finally_stages() {
    let app = TestEngine::start().await;
    let name = app.apply(PIPELINE).await;
    let run = app.trigger(&name, &[]).await;
    let (run_row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(60)).await;

    let build = stage_of(&stages, "build");
    assert_eq!(build.status, StageStatus::Failed);
    assert_eq!(
        build.error.as_deref(),
        Some("step \"compile\" exited with 3")
    );
    let log = app.log_lines(run.run_id, "build").await;
    assert!(log.contains(&"compile error".to_owned()), "{log:?}");
    assert!(!log.contains(&"never printed".to_owned()), "{log:?}");

    // The direct dependent names the failed need; its own dependent names it in turn.
    let test = stage_of(&stages, "test");
    assert_eq!(test.status, StageStatus::Skipped);
    assert_eq!(test.error.as_deref(), Some("needs `build`, which failed"));
    assert_eq!(test.attempt, 0, "a skipped stage never ran");
    let package = stage_of(&stages, "package");
    assert_eq!(package.status, StageStatus::Skipped);
    assert_eq!(
        package.error.as_deref(),
        Some("needs `test`, which was skipped")
    );

    // A stage that needs nothing that failed runs; finally stages run whatever happened.
    assert_eq!(stage_of(&stages, "docs").status, StageStatus::Succeeded);
    for key in ["cleanup", "notify"] {
        let stage = stage_of(&stages, key);
        assert_eq!(
            stage.status,
            StageStatus::Succeeded,
            "{key}: {:?}",
            stage.error
        );
    }
    assert_eq!(
        app.log_lines(run.run_id, "cleanup").await,
        vec![
            "$ echo \"cleaning up after $GANTRY_PIPELINE\"",
            "cleaning up after breaks",
            "exit code 0"
        ]
    );
    let cleanup = stage_of(&stages, "cleanup");
    assert!(cleanup.started_at >= build.finished_at);

    assert_eq!(run_row.status, RunStatus::Failed);
    assert_eq!(
        run_row.reason.as_deref(),
        Some("stage `build` failed: step \"compile\" exited with 3")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_failure_neither_skips_dependents_nor_fails_the_run() {
    let app = TestEngine::start().await;
    let name = app
        .apply(
            "name: lenient\nstages:\n  - name: lint\n    allow_failure: true\n    steps:\n      - exit 1\n  - name: build\n    steps:\n      - echo built\n",
        )
        .await;
    let run = app.trigger(&name, &[]).await;
    let (run_row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(60)).await;
    assert_eq!(stage_of(&stages, "lint").status, StageStatus::Failed);
    assert_eq!(stage_of(&stages, "build").status, StageStatus::Succeeded);
    assert_eq!(run_row.status, RunStatus::Succeeded, "{:?}", run_row.reason);
    app.stop().await;
}
