//! Artifacts: what a stage keeps reaches the stages that need it, and a rerun of only the failed
//! stages reuses the succeeded ones (without running them again) together with their artifacts.

use std::time::Duration;

use gantry::store::{RunStatus, StageStatus};
use gantry_tests::{TestEngine, assert_succeeded, open_temp_dir, stage_of};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_hands_its_artifacts_to_the_stages_that_need_it() {
    let app = TestEngine::start().await;
    let name = app
        .apply(
            r#"
name: handoff
stages:
  - name: build
    steps:
      - mkdir -p out/sub && echo "built by $GANTRY_STAGE" > out/app.txt && echo deep > out/sub/nested.txt
      - echo "not kept" > scratch.txt
    artifacts: [out/]
  - name: check
    needs: [build]
    steps:
      - cat out/app.txt out/sub/nested.txt
      - test ! -e scratch.txt
  - name: unrelated
    needs: []
    steps:
      - test ! -e out
"#,
        )
        .await;
    let run = app.trigger(&name, &[]).await;
    let (run_row, stages) = app.wait_for_run(run.run_id, WAIT).await;
    assert_succeeded(&run_row);
    assert_eq!(
        stage_of(&stages, "unrelated").status,
        StageStatus::Succeeded
    );
    let check = app.log_lines(run.run_id, "check").await;
    assert_eq!(
        check,
        vec![
            "unpacking the artifacts of build",
            "unpacked 4 entries",
            "$ cat out/app.txt out/sub/nested.txt",
            "built by build",
            "deep",
            "exit code 0",
            "$ test ! -e scratch.txt",
            "exit code 0"
        ]
    );
    // The artifact is stored once, under the stage that kept it.
    let artifacts =
        gantry::store::artifacts::of_stages(app.pool(), &[stage_of(&stages, "build").id.0])
            .await
            .expect("artifacts");
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    assert!(artifacts[0].size > 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_reach_every_later_stage_and_the_nearest_producer_wins_a_clash() {
    let app = TestEngine::start().await;
    // compile -> package -> ship: ship needs only package, yet gets compile's files too; both
    // earlier stages keep VERSION, and ship sees package's (one `needs` away, not two).
    let name = app
        .apply(
            r#"
name: chain
stages:
  - name: compile
    steps:
      - mkdir bin && echo binary > bin/app && echo "1.0 from compile" > VERSION
    artifacts: [bin/, VERSION]
  - name: package
    steps:
      - cat bin/app && echo "1.0 from package" > VERSION && echo manifest > MANIFEST
    artifacts: [VERSION, MANIFEST]
  - name: ship
    needs: [package]
    steps:
      - cat bin/app MANIFEST VERSION
"#,
        )
        .await;
    let run = app.trigger(&name, &[]).await;
    let (run_row, _) = app.wait_for_run(run.run_id, WAIT).await;
    assert_succeeded(&run_row);
    assert_eq!(
        app.log_lines(run.run_id, "ship").await,
        vec![
            "unpacking the artifacts of compile",
            "unpacked 3 entries",
            "unpacking the artifacts of package",
            "unpacked 2 entries",
            "$ cat bin/app MANIFEST VERSION",
            "binary",
            "manifest",
            "1.0 from package",
            "exit code 0"
        ]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerunning_only_failed_stages_reuses_succeeded_ones_and_their_artifacts() {
    let app = TestEngine::start().await;
    let dir = open_temp_dir();
    let builds = dir.path().join("builds");
    let checks = dir.path().join("checks");
    let broken = dir.path().join("broken");
    std::fs::write(&broken, "").expect("flag file");
    let yaml = format!(
        r#"
name: rerun
env:
  BUILDS: {builds}
  CHECKS: {checks}
  BROKEN: {broken}
stages:
  - name: build
    steps:
      - echo "build $GANTRY_RUN_ID" >> "$BUILDS"
      - mkdir out && echo "from run $GANTRY_RUN_ID" > out/version.txt
    artifacts: [out/version.txt]
  - name: check
    needs: [build]
    steps:
      - echo "check $GANTRY_RUN_ID" >> "$CHECKS"
      - cat out/version.txt
      - test ! -e "$BROKEN"
"#,
        builds = builds.display(),
        checks = checks.display(),
        broken = broken.display(),
    );
    let name = app.apply(&yaml).await;
    let first = app.trigger(&name, &[]).await;
    let (first_row, first_stages) = app.wait_for_run(first.run_id, WAIT).await;
    assert_eq!(first_row.status, RunStatus::Failed);
    assert_eq!(
        stage_of(&first_stages, "build").status,
        StageStatus::Succeeded
    );
    assert_eq!(stage_of(&first_stages, "check").status, StageStatus::Failed);

    // Fix what was broken and rerun only what failed.
    std::fs::remove_file(&broken).expect("unbreak");
    let rerun = gantry::run::rerun(app.engine(), first.run_id, true, None)
        .await
        .expect("rerun");
    let (rerun_row, rerun_stages) = app.wait_for_run(rerun.run_id, WAIT).await;
    assert_succeeded(&rerun_row);
    assert_eq!(rerun_row.rerun_of, Some(first.run_id));

    let old_build = stage_of(&first_stages, "build");
    let build = stage_of(&rerun_stages, "build");
    assert_eq!(build.status, StageStatus::Succeeded);
    assert_eq!(build.reused_from, Some(old_build.id));
    assert_eq!(build.attempt, old_build.attempt);
    assert_eq!(build.started_at, old_build.started_at, "not started again");
    let check = stage_of(&rerun_stages, "check");
    assert_eq!(check.status, StageStatus::Succeeded);
    assert_eq!(check.reused_from, None);
    // The reused stage shows the log of the run that actually ran it.
    let original_log = app.log_lines(first.run_id, "build").await;
    assert!(!original_log.is_empty());
    assert_eq!(app.log_lines(rerun.run_id, "build").await, original_log);

    // `build` ran once in all; `check` once per run.
    assert_eq!(
        std::fs::read_to_string(&builds).expect("builds"),
        format!("build {}\n", first.run_id)
    );
    assert_eq!(
        std::fs::read_to_string(&checks).expect("checks"),
        format!("check {}\ncheck {}\n", first.run_id, rerun.run_id)
    );
    // The rerun's `check` got the artifact the first run's `build` kept.
    let log = app.log_lines(rerun.run_id, "check").await;
    assert!(
        log.contains(&format!("from run {}", first.run_id)),
        "{log:?}"
    );
    assert_eq!(
        log.first().map(String::as_str),
        Some("unpacking the artifacts of build"),
        "{log:?}"
    );

    // A full rerun runs everything again.
    // (See also `a_rerun_of_a_rerun_still_finds_the_artifacts_of_the_stage_that_made_them`.)
    let full = gantry::run::rerun(app.engine(), rerun.run_id, false, None)
        .await
        .expect("full rerun");
    let (full_row, full_stages) = app.wait_for_run(full.run_id, WAIT).await;
    assert_succeeded(&full_row);
    assert_eq!(stage_of(&full_stages, "build").reused_from, None);
    assert_eq!(
        std::fs::read_to_string(&builds).expect("builds"),
        format!("build {}\nbuild {}\n", first.run_id, full.run_id)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_of_a_rerun_still_finds_the_artifacts_of_the_stage_that_made_them() {
    let app = TestEngine::start().await;
    let dir = open_temp_dir();
    let builds = dir.path().join("builds");
    let broken = dir.path().join("broken");
    std::fs::write(&broken, "").expect("flag file");
    let yaml = format!(
        r#"
name: rerun-twice
env:
  BUILDS: {builds}
  BROKEN: {broken}
stages:
  - name: build
    steps:
      - echo "build $GANTRY_RUN_ID" >> "$BUILDS"
      - mkdir out && echo "from run $GANTRY_RUN_ID" > out/version.txt
    artifacts: [out/version.txt]
  - name: check
    needs: [build]
    steps:
      - cat out/version.txt
      - test ! -e "$BROKEN"
"#,
        builds = builds.display(),
        broken = broken.display(),
    );
    let name = app.apply(&yaml).await;
    let first = app.trigger(&name, &[]).await;
    let (first_row, first_stages) = app.wait_for_run(first.run_id, WAIT).await;
    assert_eq!(first_row.status, RunStatus::Failed);
    // Still broken: the first rerun fails again, reusing `build`.
    let second = gantry::run::rerun(app.engine(), first.run_id, true, None)
        .await
        .expect("rerun");
    let (second_row, second_stages) = app.wait_for_run(second.run_id, WAIT).await;
    assert_eq!(
        second_row.status,
        RunStatus::Failed,
        "{:?}",
        second_row.reason
    );
    let log = app.log_lines(second.run_id, "check").await;
    assert!(
        log.contains(&format!("from run {}", first.run_id)),
        "{log:?}"
    );

    std::fs::remove_file(&broken).expect("unbreak");
    let third = gantry::run::rerun(app.engine(), second.run_id, true, None)
        .await
        .expect("rerun the rerun");
    let (third_row, third_stages) = app.wait_for_run(third.run_id, WAIT).await;
    assert_succeeded(&third_row);
    // Reused results point at the stage run that actually ran, however many reruns later.
    let original = stage_of(&first_stages, "build").id;
    assert_eq!(
        stage_of(&second_stages, "build").reused_from,
        Some(original)
    );
    assert_eq!(stage_of(&third_stages, "build").reused_from, Some(original));
    let log = app.log_lines(third.run_id, "check").await;
    assert!(
        log.contains(&format!("from run {}", first.run_id)),
        "{log:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&builds).expect("builds"),
        format!("build {}\n", first.run_id),
        "build ran once"
    );
    // The run's artifact list shows the artifact it reused.
    let listed: serde_json::Value = app
        .http()
        .get(format!(
            "{}/api/v1/runs/{}/artifacts",
            app.url(),
            third.run_id
        ))
        .send()
        .await
        .expect("GET artifacts")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["stage_run_id"], original.0, "{listed}");
    app.stop().await;
}
