//! Crash safety: an engine killed with SIGKILL mid-stage and started again loses nothing (its
//! runner keeps working, retries, and resumes its log exactly where the engine's store ends),
//! and a runner killed with SIGKILL is noticed by the engine, which retries the attempt.

use std::time::Duration;

use gantry::store::{RunId, RunStatus, StageStatus};
use gantry_tests::proc::{kill9, live_with_arg, runners_under, wait_until_found, wait_until_gone};
use gantry_tests::serve::EngineProcess;
use gantry_tests::{TestDb, TestEngine, assert_succeeded, open_temp_dir, stage_of};

/// Prints a numbered line every ~5 ms for 8 s, then how many it printed.
const TICKER: &str = r#"
name: ticker
stages:
  - name: tick
    steps:
      - name: print
        run: |
          i=0
          end=$(( $(date +%s) + 8 ))
          while [ "$(date +%s)" -lt "$end" ]; do
            i=$((i + 1))
            echo "$i"
            sleep 0.005
          done
          echo "total $i"
"#;

async fn stage_row(
    pool: &sqlx::PgPool,
    run: RunId,
    key: &str,
) -> gantry::store::stages::StageRunRow {
    gantry::store::stages::find(pool, run, key)
        .await
        .expect("stage row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_killed_mid_stage_resumes_and_the_log_has_no_gap_or_duplicate() {
    let db = TestDb::create().await;
    let dir = open_temp_dir();
    let mut engine = EngineProcess::start(&db.url, &dir.path().join("e1"), "e1", 4).await;
    let client = engine.client();

    let applied = client
        .apply("test", "test.yaml", TICKER.to_owned())
        .await
        .expect("apply");
    assert!(applied.created, "{applied:?}");
    let triggered = client
        .trigger("test", "ticker", &Default::default())
        .await
        .expect("trigger");
    let run = RunId(triggered.run_id);

    // Watch from the side, straight in the database.
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let before = loop {
        let stage = stage_row(&pool, run, "tick").await;
        // About two seconds of output stored: the step is well under way.
        if stage.status == StageStatus::Running && stage.log_lines >= 200 {
            break stage;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stage never got going: {} with {} lines",
            stage.status.as_str(),
            stage.log_lines
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let runners = runners_under(&engine.data_dir);
    assert_eq!(runners.len(), 1, "one runner: {runners:?}");

    engine.kill9();
    // The engine is down for a second; the runner keeps running its step meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        runners_under(&engine.data_dir),
        runners,
        "the runner survived"
    );
    engine.restart().await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let run_row = loop {
        let row = gantry::store::runs::get(&pool, run).await.expect("run");
        if row.status.is_terminal() {
            break row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run still {} after the restart",
            row.status.as_str()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_succeeded(&run_row);
    let stage = stage_row(&pool, run, "tick").await;
    assert_eq!(stage.status, StageStatus::Succeeded);
    assert_eq!(
        stage.attempt, 1,
        "the first attempt finished: nothing was retried"
    );
    assert_eq!(stage.claimed_by.as_deref(), Some("e1"));
    assert_eq!(stage.started_at, before.started_at);

    let text = client
        .log(run.0, "tick", None)
        .await
        .expect("GET logs")
        .text()
        .await
        .expect("text");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"$ print"));
    assert_eq!(lines.last(), Some(&"exit code 0"));
    let total: usize = lines[lines.len() - 2]
        .strip_prefix("total ")
        .unwrap_or_else(|| panic!("no total line: {:?}", &lines[lines.len() - 3..]))
        .parse()
        .expect("a count");
    assert!(total > 200, "only {total} lines printed");
    let numbers = &lines[1..lines.len() - 2];
    assert_eq!(numbers.len(), total, "as many lines stored as printed");
    for (i, line) in numbers.iter().enumerate() {
        assert_eq!(*line, (i + 1).to_string(), "line {} of the step", i + 1);
    }
    assert_eq!(stage.log_lines, i64::try_from(total + 3).expect("fits"));
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_fails_its_attempt_and_the_retry_succeeds() {
    let app = TestEngine::start().await;
    let name = app
        .apply(
            r#"
name: fragile
stages:
  - name: fragile
    retries: 1
    steps:
      - name: work
        run: |
          if [ "$GANTRY_ATTEMPT" = 1 ]; then
            echo started
            # Silent from here on: no write to the dead runner's pipe will end it.
            sleep 300.5521
          fi
          echo "attempt $GANTRY_ATTEMPT done"
"#,
        )
        .await;
    let run = app.trigger(&name, &[]).await;
    app.wait_for_stage(run.run_id, "fragile", Duration::from_secs(30), |s| {
        s.status == StageStatus::Running && s.attempt == 1 && s.log_lines >= 2
    })
    .await;
    wait_until_found("the step's sleep", Duration::from_secs(10), || {
        live_with_arg("300.5521")
    })
    .await;
    let runners = wait_until_found("the runner", Duration::from_secs(10), || {
        runners_under(app.data_dir.path())
    })
    .await;
    assert_eq!(runners.len(), 1, "{runners:?}");
    kill9(runners[0]);

    let (run_row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(60)).await;
    assert_succeeded(&run_row);
    let fragile = stage_of(&stages, "fragile");
    assert_eq!(fragile.status, StageStatus::Succeeded);
    assert_eq!(fragile.attempt, 2);
    // The engine saw the runner die and said so when it put the stage back in the queue.
    assert_eq!(
        fragile.error.as_deref(),
        Some("attempt 1 of 2: the runner ended without reporting a result (killed by signal 9)")
    );
    assert_eq!(
        app.log_lines(run.run_id, "fragile").await,
        vec!["$ work", "attempt 2 done", "exit code 0"]
    );
    // The engine stopped the step the dead runner left behind.
    if let Err(left) = wait_until_gone(Duration::from_secs(10), || live_with_arg("300.5521")).await
    {
        panic!("the first attempt's step is still running: {left:?}");
    }
    assert_eq!(run_row.status, RunStatus::Succeeded);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_down_longer_than_the_silence_limit_still_resumes_its_runners() {
    // An engine in this process, stopped (its runners left running, as a crash leaves them) for
    // longer than `lost_after_secs`, then started again with the same address and identity.
    let db = TestDb::create().await;
    let data = open_temp_dir();
    let _reaper = gantry_tests::proc::Reaper::new(data.path());
    let mut config = gantry::engine::Config {
        // Port 0 for the first start; the restart takes the port it got.
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data.path().to_path_buf(),
        database_url: Some(db.url.clone()),
        engine_id: Some("restarting".into()),
        runner_path: Some(gantry_tests::runner_bin()),
        heartbeat_secs: 1,
        lost_after_secs: 5,
        kill_grace_secs: 2,
        ..gantry::engine::Config::default()
    };
    let server = gantry::server::Server::start(config.clone())
        .await
        .expect("engine starts");
    config.listen = server.addr;
    let engine = std::sync::Arc::clone(&server.engine);
    gantry::run::apply(&engine, "test", "test.yaml", TICKER)
        .await
        .expect("apply");
    let run = gantry::run::trigger(&engine, "test", "ticker", "manual", Default::default())
        .await
        .expect("trigger")
        .run_id;
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stage_row(&pool, run, "tick").await.log_lines < 50 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stage never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
    drop(engine);
    // Down for longer than the silence limit: no heartbeat could reach anyone meanwhile.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let server = gantry::server::Server::start(config)
        .await
        .expect("engine restarts");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let run_row = loop {
        let row = gantry::store::runs::get(&pool, run).await.expect("run");
        if row.status.is_terminal() {
            break row;
        }
        assert!(tokio::time::Instant::now() < deadline, "run still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stage = stage_row(&pool, run, "tick").await;
    assert_succeeded(&run_row);
    assert_eq!(stage.attempt, 1, "{:?}", stage.error);
    assert_eq!(stage.error, None);
    server.stop().await;
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_stops_calling_in_is_given_up_and_its_stage_retried() {
    let app = TestEngine::start_with(|c| c.lost_after_secs = 3).await;
    let name = app
        .apply(
            r#"
name: hung
stages:
  - name: hung
    retries: 1
    steps:
      - name: work
        run: |
          # hung-runner-marker-3307
          if [ "$GANTRY_ATTEMPT" = 1 ]; then
            while true; do echo tick; sleep 0.1; done
          fi
          echo "attempt $GANTRY_ATTEMPT done"
"#,
        )
        .await;
    let run = app.trigger(&name, &[]).await;
    app.wait_for_stage(run.run_id, "hung", Duration::from_secs(30), |s| {
        s.status == StageStatus::Running && s.attempt == 1 && s.log_lines >= 3
    })
    .await;
    let runners = runners_under(app.data_dir.path());
    assert_eq!(runners.len(), 1, "{runners:?}");
    // Frozen, not dead: the process is there, but it calls in no more.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runners[0]),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP the runner");

    let (run_row, stages) = app.wait_for_run(run.run_id, Duration::from_secs(60)).await;
    assert_succeeded(&run_row);
    let hung = stage_of(&stages, "hung");
    assert_eq!(hung.attempt, 2);
    assert_eq!(
        hung.error.as_deref(),
        Some("attempt 1 of 2: the runner stopped calling in (no heartbeat for 3s)")
    );
    // The frozen runner was killed, and its step with it (at its next write).
    if let Err(left) = wait_until_gone(Duration::from_secs(20), || {
        let mut left: Vec<String> = runners
            .iter()
            .filter(|&&pid| gantry_tests::proc::is_live(pid))
            .map(|pid| format!("runner {pid}"))
            .collect();
        left.extend(
            live_with_arg("hung-runner-marker-3307")
                .into_iter()
                .map(|(pid, cmd)| format!("{pid}: {cmd}")),
        );
        left
    })
    .await
    {
        panic!("still running: {left:?}");
    }
    app.stop().await;
}
