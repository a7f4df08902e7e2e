//! `retries:` runs a failed stage again, each attempt in a fresh workspace, until it succeeds or
//! its attempts are spent. State that must survive between attempts lives outside the workspace,
//! in a directory of the test's that reaches the steps through the pipeline's `env`.

use std::time::Duration;

use gantry::store::RunStatus;
use gantry_tests::{StageStatus, TestEngine, assert_succeeded, open_temp_dir, stage_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_that_fails_once_succeeds_on_its_second_attempt() {
    let app = TestEngine::start().await;
    let dir = open_temp_dir();
    let marker = dir.path().join("failed-once");
    let attempts = dir.path().join("attempts");
    let yaml = format!(
        r#"
name: flaky
env:
  MARKER: {marker}
  ATTEMPTS: {attempts}
stages:
  - name: flaky
    retries: 2
    steps:
      - name: try
        run: |
          echo "attempt $GANTRY_ATTEMPT in $PWD" >> "$ATTEMPTS"
          test ! -e left-by-attempt-1 || {{ echo "the workspace was reused"; exit 9; }}
          touch left-by-attempt-1
          if [ -e "$MARKER" ]; then echo "second time lucky"; else touch "$MARKER"; echo "first try fails"; exit 1; fi
"#,
        marker = marker.display(),
        attempts = attempts.display(),
    );
    let name = app.apply(&yaml).await;
    let run = app.trigger(&name, &[]).await;
    let (run_row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(60)).await;
    assert_succeeded(&run_row);
    let flaky = stage_of(&stages, "flaky");
    assert_eq!(flaky.status, StageStatus::Succeeded);
    assert_eq!(
        flaky.attempt, 2,
        "succeeded on the second attempt, not the third"
    );
    // The failure of the first attempt stays on record.
    assert_eq!(
        flaky.error.as_deref(),
        Some("attempt 1 of 3: step \"try\" exited with 1")
    );

    let log: Vec<String> = std::fs::read_to_string(&attempts)
        .expect("attempts file")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[0].starts_with("attempt 1 in "), "{log:?}");
    assert!(log[1].starts_with("attempt 2 in "), "{log:?}");
    assert_ne!(
        log[0]["attempt 1 in ".len()..],
        log[1]["attempt 2 in ".len()..],
        "each attempt gets a workspace of its own"
    );

    // Each attempt keeps its own log.
    assert_eq!(
        app.attempt_log_lines(run.run_id, "flaky", Some(1)).await,
        vec!["$ try", "first try fails", "exit code 1"]
    );
    assert_eq!(
        app.attempt_log_lines(run.run_id, "flaky", None).await,
        vec!["$ try", "second time lucky", "exit code 0"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_that_always_fails_ends_failed_once_its_retries_are_spent() {
    let app = TestEngine::start().await;
    let dir = open_temp_dir();
    let attempts = dir.path().join("attempts");
    let yaml = format!(
        r#"
name: broken
env:
  ATTEMPTS: {attempts}
stages:
  - name: broken
    retries: 1
    steps:
      - name: fail
        run: echo "$GANTRY_ATTEMPT" >> "$ATTEMPTS"; exit 4
  - name: after
    steps:
      - echo never
"#,
        attempts = attempts.display(),
    );
    let name = app.apply(&yaml).await;
    let run = app.trigger(&name, &[]).await;
    let (run_row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(60)).await;
    let broken = stage_of(&stages, "broken");
    assert_eq!(broken.status, StageStatus::Failed);
    assert_eq!(broken.attempt, 2);
    assert_eq!(broken.max_attempts, 2);
    assert_eq!(broken.error.as_deref(), Some("step \"fail\" exited with 4"));
    assert_eq!(
        std::fs::read_to_string(&attempts).expect("attempts file"),
        "1\n2\n",
        "exactly two attempts ran"
    );
    assert_eq!(stage_of(&stages, "after").status, StageStatus::Skipped);
    assert_eq!(run_row.status, RunStatus::Failed);
    assert_eq!(
        run_row.reason.as_deref(),
        Some("stage `broken` failed: step \"fail\" exited with 4")
    );
    app.stop().await;
}
