//! What a run is about reaches its stages: `when` decides whether a stage runs, a matrix expands
//! to one instance per combination with its values, params arrive as `GANTRY_PARAM_*`, and all
//! of it only ever as environment variable values, never as shell text.

use std::time::Duration;

use gantry_tests::{StageStatus, TestEngine, assert_succeeded, open_temp_dir, stage_of};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_whose_when_is_false_is_skipped() {
    let app = TestEngine::start().await;
    let name = app
        .apply(
            r#"
name: conditional
params:
  deploy:
    type: bool
    default: false
stages:
  - name: release-only
    needs: []
    when: branch == 'release'
    steps:
      - echo never
  - name: on-main
    needs: []
    when: branch == 'main' && event == 'manual'
    steps:
      - echo "runs on $GANTRY_BRANCH"
  - name: deploy
    needs: []
    when: params.deploy == 'true'
    steps:
      - echo deploying
"#,
        )
        .await;
    let run = app.trigger(&name, &[]).await;
    let (run_row, stages) = app.wait_for_run(run.run_id, WAIT).await;
    assert_succeeded(&run_row);
    let skipped = stage_of(&stages, "release-only");
    assert_eq!(skipped.status, StageStatus::Skipped);
    assert_eq!(
        skipped.error.as_deref(),
        Some("`when: branch == 'release'` is false")
    );
    assert_eq!(skipped.attempt, 0);
    assert_eq!(stage_of(&stages, "on-main").status, StageStatus::Succeeded);
    assert_eq!(
        app.log_lines(run.run_id, "on-main").await,
        vec![
            "$ echo \"runs on $GANTRY_BRANCH\"",
            "runs on main",
            "exit code 0"
        ]
    );
    assert_eq!(stage_of(&stages, "deploy").status, StageStatus::Skipped);

    // The same pipeline with the param set runs the stage.
    let run = app.trigger(&name, &[("deploy", "true")]).await;
    let (run_row, stages) = app.wait_for_run(run.run_id, WAIT).await;
    assert_succeeded(&run_row);
    assert_eq!(stage_of(&stages, "deploy").status, StageStatus::Succeeded);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_runs_one_instance_per_combination_with_its_values() {
    let app = TestEngine::start().await;
    let name = app
        .apply(
            r#"
name: grid
stages:
  - name: test
    matrix:
      os: [debian, alpine]
      toolchain: ["1.80", "1.95"]
      exclude:
        - {os: alpine, toolchain: "1.80"}
    env:
      LABEL: ${{ matrix.os }}-${{ matrix.toolchain }}
    steps:
      - echo "os=$GANTRY_MATRIX_OS toolchain=$GANTRY_MATRIX_TOOLCHAIN label=$LABEL stage=$GANTRY_STAGE"
  - name: summary
    steps:
      - echo done
"#,
        )
        .await;
    let run = app.trigger(&name, &[]).await;
    let (run_row, stages) = app.wait_for_run(run.run_id, WAIT).await;
    assert_succeeded(&run_row);
    let keys: Vec<&str> = stages.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "test[os=debian,toolchain=1.80]",
            "test[os=debian,toolchain=1.95]",
            "test[os=alpine,toolchain=1.95]",
            "summary"
        ]
    );
    for (os, toolchain) in [("debian", "1.80"), ("debian", "1.95"), ("alpine", "1.95")] {
        let key = format!("test[os={os},toolchain={toolchain}]");
        assert_eq!(stage_of(&stages, &key).status, StageStatus::Succeeded);
        assert_eq!(
            app.log_lines(run.run_id, &key).await,
            vec![
                "$ echo \"os=$GANTRY_MATRIX_OS toolchain=$GANTRY_MATRIX_TOOLCHA…".to_owned(),
                format!("os={os} toolchain={toolchain} label={os}-{toolchain} stage={key}"),
                "exit code 0".to_owned(),
            ]
        );
    }
    // `summary` waited for every instance.
    let summary = stage_of(&stages, "summary");
    for s in stages.iter().filter(|s| s.key.starts_with("test[")) {
        assert!(summary.started_at >= s.finished_at, "{} ended later", s.key);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_reach_steps_as_gantry_param_variables() {
    let app = TestEngine::start().await;
    let name = app
        .apply(
            r#"
name: parametrised
params:
  environment:
    type: choice
    options: [staging, production]
    default: staging
  greeting:
    type: string
    default: hello
stages:
  - name: show
    env:
      TARGET: ${{ params.environment }}
    steps:
      - echo "env=$GANTRY_PARAM_ENVIRONMENT greeting=$GANTRY_PARAM_GREETING target=$TARGET"
"#,
        )
        .await;
    let run = app.trigger(&name, &[("environment", "production")]).await;
    let (run_row, _) = app.wait_for_run(run.run_id, WAIT).await;
    assert_succeeded(&run_row);
    assert_eq!(
        app.log_lines(run.run_id, "show").await,
        vec![
            "$ echo \"env=$GANTRY_PARAM_ENVIRONMENT greeting=$GANTRY_PARAM_…",
            "env=production greeting=hello target=production",
            "exit code 0"
        ]
    );
    // A value outside the choices is refused before any run exists.
    let refused = gantry::run::trigger(
        app.engine(),
        "test",
        &name,
        "manual",
        gantry::run::TriggerRequest {
            params: [("environment".to_owned(), "moon".to_owned())].into(),
            context: None,
        },
    )
    .await
    .expect_err("not a choice");
    assert!(refused.to_string().contains("must be one of"), "{refused}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_param_holding_shell_syntax_is_printed_literally_and_never_executed() {
    let app = TestEngine::start().await;
    let dir = open_temp_dir();
    let pwned = dir.path().join("pwned-subshell");
    let pwned2 = dir.path().join("pwned-quote");
    let pwned3 = dir.path().join("pwned-backtick");
    let name = app
        .apply(
            r#"
name: injection
params:
  title:
    type: string
    default: harmless
  other:
    type: string
    default: harmless
  third:
    type: string
    default: harmless
stages:
  - name: echo
    env:
      TITLE_COPY: ${{ params.title }}
    steps:
      - printf '%s\n' "$GANTRY_PARAM_TITLE"
      - echo "other=$GANTRY_PARAM_OTHER"
      - echo "third=$GANTRY_PARAM_THIRD copy=$TITLE_COPY"
"#,
        )
        .await;
    let evil = format!("$(touch {})", pwned.display());
    let evil2 = format!("\"; touch {}; echo \"", pwned2.display());
    let evil3 = format!("`touch {}`", pwned3.display());
    let run = app
        .trigger(
            &name,
            &[("title", &evil), ("other", &evil2), ("third", &evil3)],
        )
        .await;
    let (run_row, _) = app.wait_for_run(run.run_id, WAIT).await;
    assert_succeeded(&run_row);
    for file in [&pwned, &pwned2, &pwned3] {
        assert!(
            !file.exists(),
            "{} was created: a param ran",
            file.display()
        );
    }
    assert_eq!(
        app.log_lines(run.run_id, "echo").await,
        vec![
            "$ printf '%s\\n' \"$GANTRY_PARAM_TITLE\"".to_owned(),
            evil.clone(),
            "exit code 0".to_owned(),
            "$ echo \"other=$GANTRY_PARAM_OTHER\"".to_owned(),
            format!("other={evil2}"),
            "exit code 0".to_owned(),
            "$ echo \"third=$GANTRY_PARAM_THIRD copy=$TITLE_COPY\"".to_owned(),
            format!("third={evil3} copy={evil}"),
            "exit code 0".to_owned(),
        ]
    );
    app.stop().await;
}
