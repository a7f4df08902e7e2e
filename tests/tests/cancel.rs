//! Cancelling: a running stage is stopped with every process its steps started (background jobs
//! included), and the stage and run end cancelled.

use std::time::Duration;

use gantry::store::RunStatus;
use gantry_tests::proc::{kill9, live_with_arg, runners_under, wait_until_found, wait_until_gone};
use gantry_tests::{StageStatus, TestEngine, stage_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_stage_leaves_no_process_behind() {
    let app = TestEngine::start().await;
    let name = app
        .apply(
            r#"
name: long
stages:
  - name: long
    steps:
      - name: wait
        run: "sleep 300.456 & sleep 300.457; wait"
  - name: after
    steps:
      - echo never
"#,
        )
        .await;
    let run = app.trigger(&name, &[]).await;
    // Both sleeps (one in the background) are running.
    wait_until_found("both sleeps", Duration::from_secs(30), || {
        let found = live_with_arg("300.45");
        let both = found.iter().any(|(_, c)| c == "sleep 300.456")
            && found.iter().any(|(_, c)| c == "sleep 300.457");
        if both { found } else { Vec::new() }
    })
    .await;
    let stage = app.stage(run.run_id, "long").await;
    assert_eq!(stage.status, StageStatus::Running);

    gantry::run::cancel(app.engine(), run.run_id, Some(stage.id), None)
        .await
        .expect("cancel the stage");

    if let Err(left) = wait_until_gone(Duration::from_secs(20), || live_with_arg("300.45")).await {
        panic!("still running after the cancel: {left:?}");
    }
    let (run_row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(30)).await;
    let long = stage_of(&stages, "long");
    assert_eq!(long.status, StageStatus::Cancelled, "{:?}", long.error);
    assert_eq!(long.attempt, 1);
    assert_eq!(stage_of(&stages, "after").status, StageStatus::Skipped);
    assert_eq!(run_row.status, RunStatus::Cancelled, "{:?}", run_row.reason);
    let log = app.log_lines(run.run_id, "long").await;
    assert_eq!(log.first().map(String::as_str), Some("$ wait"), "{log:?}");
    assert!(
        log.iter().any(|l| l.ends_with(": stopping the step")),
        "{log:?}"
    );
    app.stop().await;
}

/// Cancelling stops the running stage and skips the rest, but `finally` stages still run
/// (cleanup is what they are for); a second cancel stops them too. Who started and who
/// cancelled the run are recorded and shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_stops_its_running_stage_and_cancels_the_rest_but_finally_runs() {
    let app = TestEngine::start().await;
    let name = app
        .apply(
            r#"
name: long-run
stages:
  - name: first
    steps:
      - "sleep 300.981 & sleep 300.982; wait"
  - name: second
    steps:
      - echo never
finally:
  - name: cleanup
    steps:
      - echo "cleaning up after the cancel"
"#,
        )
        .await;
    let run = gantry::run::trigger_by(
        app.engine(),
        "test",
        &name,
        "manual",
        gantry::run::TriggerRequest::default(),
        Some("carol"),
    )
    .await
    .expect("trigger");
    wait_until_found("the sleeps", Duration::from_secs(30), || {
        live_with_arg("300.98")
    })
    .await;
    gantry::run::cancel(app.engine(), run.run_id, None, Some("alice"))
        .await
        .expect("cancel the run");
    if let Err(left) = wait_until_gone(Duration::from_secs(20), || live_with_arg("300.98")).await {
        panic!("still running after the cancel: {left:?}");
    }
    let (run_row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(30)).await;
    assert_eq!(run_row.status, RunStatus::Cancelled);
    assert_eq!(run_row.reason.as_deref(), Some("cancelled by alice"));
    assert_eq!(run_row.cancelled_by.as_deref(), Some("alice"));
    assert_eq!(run_row.triggered_by.as_deref(), Some("carol"));
    assert_eq!(run_row.trigger_text(), "manual by carol");
    assert_eq!(stage_of(&stages, "first").status, StageStatus::Cancelled);
    let second = stage_of(&stages, "second");
    assert_eq!(second.status, StageStatus::Cancelled);
    assert_eq!(second.attempt, 0, "second never ran");
    let cleanup = stage_of(&stages, "cleanup");
    assert_eq!(
        cleanup.status,
        StageStatus::Succeeded,
        "{:?}",
        cleanup.error
    );
    let lines = app.log_lines(run.run_id, "cleanup").await;
    assert!(
        lines.iter().any(|l| l.contains("cleaning up after")),
        "{lines:?}"
    );
    app.stop().await;
}

/// A `finally` stage that hangs is stopped by a second cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_cancel_stops_the_finally_stages_too() {
    let app = TestEngine::start().await;
    let name = app
        .apply(
            r#"
name: hanging-cleanup
stages:
  - name: first
    steps:
      - sleep 300.871
finally:
  - name: cleanup
    steps:
      - sleep 300.872
"#,
        )
        .await;
    let run = app.trigger(&name, &[]).await;
    wait_until_found("the first stage", Duration::from_secs(30), || {
        live_with_arg("300.871")
    })
    .await;
    gantry::run::cancel(app.engine(), run.run_id, None, Some("alice"))
        .await
        .expect("cancel the run");
    wait_until_found("the cleanup", Duration::from_secs(30), || {
        live_with_arg("300.872")
    })
    .await;
    gantry::run::cancel(app.engine(), run.run_id, None, Some("alice"))
        .await
        .expect("cancel the run again");
    if let Err(left) = wait_until_gone(Duration::from_secs(20), || live_with_arg("300.87")).await {
        panic!("still running after the second cancel: {left:?}");
    }
    let (run_row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(30)).await;
    assert_eq!(run_row.status, RunStatus::Cancelled);
    assert_eq!(stage_of(&stages, "cleanup").status, StageStatus::Cancelled);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stage_whose_runner_dies_before_reporting_ends_cancelled() {
    // A long grace, so the runner is still stopping its step when it is killed.
    let app = TestEngine::start_with(|c| c.kill_grace_secs = 10).await;
    let name = app
        .apply(
            r#"
name: stubborn
stages:
  - name: stubborn
    retries: 1
    steps:
      - name: ignore-term
        run: |
          # stubborn-marker-8812
          trap '' TERM
          while true; do echo tick; sleep 0.2; done
"#,
        )
        .await;
    let run = app.trigger(&name, &[]).await;
    let stage = app
        .wait_for_stage(run.run_id, "stubborn", Duration::from_secs(30), |s| {
            s.status == StageStatus::Running && s.log_lines >= 3
        })
        .await;
    let runners = runners_under(app.data_dir.path());
    assert_eq!(runners.len(), 1, "{runners:?}");
    gantry::run::cancel(app.engine(), run.run_id, Some(stage.id), None)
        .await
        .expect("cancel the stage");
    // The runner got the stop and is waiting for the step that ignores SIGTERM…
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let log = app.log_lines(run.run_id, "stubborn").await;
        if log.iter().any(|l| l.ends_with(": stopping the step")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{log:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // …when it dies without reporting (say the OOM killer took it).
    kill9(runners[0]);

    let (run_row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(30)).await;
    let stubborn = stage_of(&stages, "stubborn");
    assert_eq!(
        stubborn.status,
        StageStatus::Cancelled,
        "a stage asked to stop is cancelled, not failed: {:?}",
        stubborn.error
    );
    assert_eq!(stubborn.attempt, 1, "a cancelled stage is not retried");
    assert_eq!(run_row.status, RunStatus::Cancelled, "{:?}", run_row.reason);
    // The orphaned step ends at its next write to the dead runner's pipe.
    if let Err(left) = wait_until_gone(Duration::from_secs(10), || {
        live_with_arg("stubborn-marker-8812")
    })
    .await
    {
        panic!("the step is still running: {left:?}");
    }
    app.stop().await;
}
