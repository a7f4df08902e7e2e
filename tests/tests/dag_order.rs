//! The order stages run in, read from the times the engine recorded: a stage starts only once
//! everything it needs has finished, and independent branches really run at the same time.

use std::time::Duration;

use gantry_tests::{StageStatus, TestEngine, assert_succeeded, stage_of};

const DAG: &str = r#"
name: dag
stages:
  - name: checkout
    steps:
      - echo checkout
  - name: left
    needs: [checkout]
    steps:
      - sleep 1
  - name: right
    needs: [checkout]
    steps:
      - sleep 1
  - name: join
    needs: [left, right]
    steps:
      - echo join
  - name: after
    steps:
      - echo "follows join, the stage above it"
finally:
  - name: cleanup
    steps:
      - echo cleanup
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_starts_only_after_everything_it_needs_finished_and_branches_overlap() {
    let app = TestEngine::start().await;
    let name = app.apply(DAG).await;
    let run = app.trigger(&name, &[]).await;
    let (run_row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(60)).await;
    assert_succeeded(&run_row);

    let times = |key: &str| {
        let s = stage_of(&stages, key);
        assert_eq!(s.status, StageStatus::Succeeded, "{key}: {:?}", s.error);
        assert_eq!(s.attempt, 1, "{key}");
        let started = s.started_at.unwrap_or_else(|| panic!("{key} has no start"));
        let finished = s.finished_at.unwrap_or_else(|| panic!("{key} has no end"));
        assert!(started <= finished, "{key} ended before it started");
        (started, finished)
    };
    let checkout = times("checkout");
    let left = times("left");
    let right = times("right");
    let join = times("join");
    let after = times("after");
    let cleanup = times("cleanup");

    // Needs: each stage started after every stage it needs had finished.
    assert!(left.0 >= checkout.1, "left started before checkout ended");
    assert!(right.0 >= checkout.1, "right started before checkout ended");
    assert!(join.0 >= left.1, "join started before left ended");
    assert!(join.0 >= right.1, "join started before right ended");
    // Without `needs`, a stage follows the one written above it.
    assert!(after.0 >= join.1, "after started before join ended");
    // Finally stages wait for every regular stage.
    for (key, (_, end)) in [
        ("checkout", checkout),
        ("left", left),
        ("right", right),
        ("join", join),
        ("after", after),
    ] {
        assert!(cleanup.0 >= end, "cleanup started before {key} ended");
    }

    // The two branches (one second of sleep each) ran at the same time: their intervals meet.
    assert!(
        left.0 < right.1 && right.0 < left.1,
        "left {left:?} and right {right:?} did not overlap"
    );
    let overlap = left.1.min(right.1) - left.0.max(right.0);
    assert!(
        overlap.num_milliseconds() >= 500,
        "left and right overlapped only {overlap:?}"
    );
    // Each branch really slept.
    assert!((left.1 - left.0).num_milliseconds() >= 1000);
    assert!((right.1 - right.0).num_milliseconds() >= 1000);
    app.stop().await;
}
