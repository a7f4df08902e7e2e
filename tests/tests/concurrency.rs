//! `concurrency:` keeps runs of one group from overlapping.

use std::time::Duration;

use gantry::store::RunStatus;
use gantry_tests::{TestEngine, assert_succeeded};

const WAITING: &str = r#"
name: serial
params:
  lane: {default: a}
concurrency:
  group: lane-${{ params.lane }}
stages:
  - name: work
    steps:
      - sleep 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_one_group_never_overlap_and_other_groups_do() {
    let app = TestEngine::start().await;
    let name = app.apply(WAITING).await;
    let first = app.trigger(&name, &[("lane", "a")]).await;
    let second = app.trigger(&name, &[("lane", "a")]).await;
    let other = app.trigger(&name, &[("lane", "b")]).await;
    let (r1, _) = app
        .wait_for_run(first.run_id, Duration::from_secs(60))
        .await;
    let (r2, _) = app
        .wait_for_run(second.run_id, Duration::from_secs(60))
        .await;
    let (r3, _) = app
        .wait_for_run(other.run_id, Duration::from_secs(60))
        .await;
    for r in [&r1, &r2, &r3] {
        assert_succeeded(r);
    }
    let (end1, start2) = (
        r1.finished_at.expect("ended"),
        r2.started_at.expect("started"),
    );
    assert!(
        start2 >= end1,
        "the second run of lane a started at {start2} before the first ended at {end1}"
    );
    let start3 = r3.started_at.expect("started");
    assert!(
        start3 < end1,
        "lane b should not wait for lane a (started {start3}, a ended {end1})"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_run_cancels_the_older_one_when_asked() {
    let app = TestEngine::start().await;
    let yaml = "name: latest\nconcurrency:\n  group: ${{ git.branch }}\n  cancel_in_progress: true\nstages:\n  - name: work\n    steps:\n      - sleep 30\n";
    let name = app.apply(yaml).await;
    let first = app.trigger(&name, &[]).await;
    // Let the first one get going before the newer one arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let run = gantry::store::runs::get(&app.engine().store.pool, first.run_id)
            .await
            .expect("run");
        if run.status == RunStatus::Running {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "first run never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _second = app.trigger(&name, &[]).await;
    let (r1, _) = app
        .wait_for_run(first.run_id, Duration::from_secs(30))
        .await;
    assert_eq!(r1.status, RunStatus::Cancelled, "reason: {:?}", r1.reason);
    app.stop().await;
}
