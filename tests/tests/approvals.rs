//! Approval: a stage with `approval:` waits for a person; approved it runs (or, as a gate,
//! simply succeeds), rejected it fails naming who rejected it. The question it asks is its
//! `message` with the run's values.

use std::time::Duration;

use gantry::store::RunStatus;
use gantry_tests::{StageStatus, TestEngine, assert_succeeded, open_temp_dir, stage_of};

fn pipeline(ran: &std::path::Path) -> String {
    format!(
        r#"
name: release
env:
  RAN: {ran}
stages:
  - name: build
    steps:
      - echo built
  - name: deploy
    approval:
      message: Deploy run ${{{{ run.number }}}}?
    steps:
      - echo "deployed by approval" && touch "$RAN"
"#,
        ran = ran.display()
    )
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_stage_waits_then_runs() {
    let app = TestEngine::start().await;
    let dir = open_temp_dir();
    let ran = dir.path().join("deploy-ran");
    let name = app.apply(&pipeline(&ran)).await;
    let run = app.trigger(&name, &[]).await;
    let waiting = app
        .wait_for_stage(run.run_id, "deploy", WAIT, |s| {
            s.status == StageStatus::WaitingApproval
        })
        .await;
    assert_eq!(waiting.attempt, 0);
    assert_eq!(waiting.approved_by, None);
    // The question as asked: `${{ run.number }}` is this run's number, as the docs promise.
    assert_eq!(waiting.approval_message.as_deref(), Some("Deploy run 1?"));
    // It keeps waiting: nothing runs it and the run does not end.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.stage(run.run_id, "deploy").await.status,
        StageStatus::WaitingApproval
    );
    assert!(!ran.exists(), "the stage ran without approval");
    let run_now = gantry::store::runs::get(app.pool(), run.run_id)
        .await
        .expect("run");
    assert_eq!(run_now.status, RunStatus::Running);

    gantry::run::decide_approval(app.engine(), run.run_id, "deploy", "alice", true)
        .await
        .expect("approve");
    let (run_row, stages) = app.wait_for_run(run.run_id, WAIT).await;
    assert_succeeded(&run_row);
    let deploy = stage_of(&stages, "deploy");
    assert_eq!(deploy.status, StageStatus::Succeeded);
    assert_eq!(deploy.approved_by.as_deref(), Some("alice"));
    assert_eq!(deploy.attempt, 1);
    assert!(ran.exists(), "the approved stage ran");
    // Approving twice is refused: the stage no longer waits.
    let again = gantry::run::decide_approval(app.engine(), run.run_id, "deploy", "alice", true)
        .await
        .expect_err("already decided");
    assert!(
        again.to_string().contains("not waiting for approval"),
        "{again}"
    );

    // The run's trail, through the API, tells the whole story in order.
    let http = app.http();
    let events: Vec<serde_json::Value> = http
        .get(format!("{}/api/v1/runs/{}/events", app.url(), run.run_id))
        .send()
        .await
        .expect("GET events")
        .json()
        .await
        .expect("JSON");
    let trail: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default(),
                e["message"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let position = |kind: &str, message: &str| {
        trail
            .iter()
            .position(|e| *e == (kind, message))
            .unwrap_or_else(|| panic!("no {kind} event {message:?} in {trail:?}"))
    };
    let order = [
        position("run", "triggered (manual)"),
        position("stage", "stage `build` queued"),
        position("stage", "stage `deploy` waiting_approval"),
        position("approval", "stage `deploy` approved by alice"),
        position("run", "run succeeded"),
    ];
    assert!(order.is_sorted(), "{trail:?}");
    let missing = http
        .get(format!("{}/api/v1/runs/999999/events", app.url()))
        .send()
        .await
        .expect("GET events");
    assert_eq!(missing.status(), 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_stage_fails_naming_who_rejected_it() {
    let app = TestEngine::start().await;
    let dir = open_temp_dir();
    let ran = dir.path().join("deploy-ran");
    let name = app.apply(&pipeline(&ran)).await;
    let run = app.trigger(&name, &[]).await;
    app.wait_for_stage(run.run_id, "deploy", WAIT, |s| {
        s.status == StageStatus::WaitingApproval
    })
    .await;
    gantry::run::decide_approval(app.engine(), run.run_id, "deploy", "bob", false)
        .await
        .expect("reject");
    let (run_row, stages) = app.wait_for_run(run.run_id, WAIT).await;
    let deploy = stage_of(&stages, "deploy");
    assert_eq!(deploy.status, StageStatus::Failed);
    assert_eq!(deploy.error.as_deref(), Some("rejected by bob"));
    // Rejected is not approved: nothing may read this stage as approved by bob.
    assert_eq!(deploy.approved_by, None);
    assert_eq!(deploy.attempt, 0, "a rejected stage never runs");
    assert!(!ran.exists());
    assert_eq!(run_row.status, RunStatus::Failed);
    assert_eq!(
        run_row.reason.as_deref(),
        Some("stage `deploy` failed: rejected by bob")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_gate_succeeds_when_approved_and_lets_the_next_stage_run() {
    let app = TestEngine::start().await;
    let name = app
        .apply(
            r#"
name: gated
stages:
  - name: test
    steps:
      - echo tested
  - name: sign-off
    approval:
      approvers: [carol]
  - name: ship
    steps:
      - echo shipped
"#,
        )
        .await;
    let run = app.trigger(&name, &[]).await;
    app.wait_for_stage(run.run_id, "sign-off", WAIT, |s| {
        s.status == StageStatus::WaitingApproval
    })
    .await;
    assert_eq!(
        app.stage(run.run_id, "ship").await.status,
        StageStatus::Pending
    );
    // Only the named approver may approve.
    let refused =
        gantry::run::decide_approval(app.engine(), run.run_id, "sign-off", "mallory", true)
            .await
            .expect_err("mallory is not an approver");
    assert!(refused.to_string().contains("may not approve"), "{refused}");
    gantry::run::decide_approval(app.engine(), run.run_id, "sign-off", "carol", true)
        .await
        .expect("approve");
    let (run_row, stages) = app.wait_for_run(run.run_id, WAIT).await;
    assert_succeeded(&run_row);
    let gate = stage_of(&stages, "sign-off");
    assert_eq!(gate.status, StageStatus::Succeeded);
    assert_eq!(gate.approved_by.as_deref(), Some("carol"));
    assert_eq!(gate.attempt, 0, "a gate runs nothing");
    let ship = stage_of(&stages, "ship");
    assert_eq!(ship.status, StageStatus::Succeeded);
    assert!(ship.started_at >= gate.finished_at);
    app.stop().await;
}
