//! Time limits: a step past its `timeout` is killed with everything it started, and the stage
//! (and run) end timed out.

use std::time::{Duration, Instant};

use gantry::store::RunStatus;
use gantry_tests::proc::{live_with_arg, wait_until_found, wait_until_gone};
use gantry_tests::{StageStatus, TestEngine, stage_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_past_its_timeout_is_killed_and_the_stage_times_out() {
    let app = TestEngine::start().await;
    let name = app
        .apply(
            r#"
name: slow
stages:
  - name: slow
    steps:
      - name: hang
        timeout: 2s
        run: echo started; sleep 60.123
      - name: next
        run: echo never
  - name: after
    steps:
      - echo never either
"#,
        )
        .await;
    let started = Instant::now();
    let run = app.trigger(&name, &[]).await;
    // The sleep really ran before it was killed.
    wait_until_found("the step's sleep", Duration::from_secs(30), || {
        live_with_arg("60.123")
    })
    .await;
    let (run_row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "the step ran for {took:?}");

    let slow = stage_of(&stages, "slow");
    assert_eq!(slow.status, StageStatus::TimedOut);
    assert_eq!(
        slow.error.as_deref(),
        Some("step \"hang\" timed out after 2s")
    );
    let ran = slow
        .finished_at
        .zip(slow.started_at)
        .map(|(end, start)| (end - start).num_milliseconds())
        .expect("times recorded");
    assert!((2000..15_000).contains(&ran), "the stage ran {ran} ms");
    assert_eq!(stage_of(&stages, "after").status, StageStatus::Skipped);
    assert_eq!(run_row.status, RunStatus::TimedOut);
    assert_eq!(
        run_row.reason.as_deref(),
        Some("stage `slow` timed out: step \"hang\" timed out after 2s")
    );
    assert_eq!(
        app.log_lines(run.run_id, "slow").await,
        vec![
            "$ hang",
            "started",
            "step \"hang\" timed out after 2s",
            "exit code 143"
        ]
    );

    // Neither the sleep nor its shell is left (the runner waits for the step's process group
    // to be gone before it reports, so this should hold at once; the deadline is for slow /proc).
    if let Err(left) = wait_until_gone(Duration::from_secs(5), || live_with_arg("60.123")).await {
        panic!("left running: {left:?}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_past_its_timeout_times_out_in_the_step_it_was_running() {
    let app = TestEngine::start().await;
    let name = app
        .apply(
            "name: stage-limit\nstages:\n  - name: slow\n    timeout: 2s\n    steps:\n      - name: quick\n        run: echo quick\n      - name: hang\n        run: sleep 60.789\n",
        )
        .await;
    let run = app.trigger(&name, &[]).await;
    let (run_row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(30)).await;
    let slow = stage_of(&stages, "slow");
    assert_eq!(slow.status, StageStatus::TimedOut);
    assert_eq!(
        slow.error.as_deref(),
        Some("stage timed out after 2s in step \"hang\"")
    );
    assert_eq!(run_row.status, RunStatus::TimedOut);
    if let Err(left) = wait_until_gone(Duration::from_secs(5), || live_with_arg("60.789")).await {
        panic!("left running: {left:?}");
    }
    app.stop().await;
}
