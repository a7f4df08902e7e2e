//! Two engine processes on one database share the work: every stage of every run is executed
//! exactly once, by one engine or the other, and both take part.

use std::collections::BTreeSet;
use std::time::Duration;

use gantry_tests::serve::EngineProcess;
use gantry_tests::{TestDb, api_client, open_temp_dir};

const RUNS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_database_run_every_stage_exactly_once() {
    let db = TestDb::create().await;
    let dir = open_temp_dir();
    let ledger = dir.path().join("ledger");
    let e1 = EngineProcess::start(&db.url, &dir.path().join("e1"), "e1", 4).await;
    let e2 = EngineProcess::start(&db.url, &dir.path().join("e2"), "e2", 4).await;
    malloc_is_tuned(&e1);
    // e1 started first and made the administrator; its token works on e2 as well.
    let token = e1
        .token()
        .expect("this engine created the first administrator");
    let clients = [e1.client(), api_client(&e2.url(), &token)];

    let yaml = format!(
        r#"
name: shared
env:
  LEDGER: {ledger}
stages:
  - name: a
    steps:
      - echo "$GANTRY_RUN_ID $GANTRY_STAGE $GANTRY_ATTEMPT" >> "$LEDGER"
  - name: b
    needs: [a]
    steps:
      - echo "$GANTRY_RUN_ID $GANTRY_STAGE $GANTRY_ATTEMPT" >> "$LEDGER"
  - name: c
    needs: [a]
    steps:
      - echo "$GANTRY_RUN_ID $GANTRY_STAGE $GANTRY_ATTEMPT" >> "$LEDGER"
"#,
        ledger = ledger.display()
    );
    let applied = clients[0]
        .apply("test", "test.yaml", yaml)
        .await
        .expect("apply");
    assert!(applied.created, "{applied:?}");

    let mut run_ids = BTreeSet::new();
    for i in 0..RUNS {
        let triggered = clients[i % 2]
            .trigger("test", "shared", &Default::default())
            .await
            .expect("trigger");
        run_ids.insert(triggered.run_id);
    }
    assert_eq!(run_ids.len(), RUNS);

    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let active: i64 =
            sqlx::query_scalar("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')")
                .fetch_one(&pool)
                .await
                .expect("count");
        if active == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{active} runs still active"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let by_status: Vec<(String, i64)> =
        sqlx::query_as("SELECT status::text, count(*) FROM runs GROUP BY status ORDER BY status")
            .fetch_all(&pool)
            .await
            .expect("statuses");
    assert_eq!(by_status, vec![("succeeded".to_owned(), 200)]);
    let stage_rows: Vec<(String, i32, Option<String>)> =
        sqlx::query_as("SELECT status::text, attempt, claimed_by FROM stage_runs")
            .fetch_all(&pool)
            .await
            .expect("stages");
    assert_eq!(stage_rows.len(), 3 * RUNS);
    assert!(
        stage_rows
            .iter()
            .all(|(status, attempt, _)| status == "succeeded" && *attempt == 1),
        "every stage succeeded on its first attempt"
    );
    let claimers: BTreeSet<&str> = stage_rows
        .iter()
        .filter_map(|(_, _, by)| by.as_deref())
        .collect();
    assert_eq!(
        claimers,
        BTreeSet::from(["e1", "e2"]),
        "both engines ran stages"
    );

    // What the steps themselves recorded: each stage of each run exactly once, first attempt.
    let text = std::fs::read_to_string(&ledger).expect("ledger");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3 * RUNS, "one line per stage execution");
    let distinct: BTreeSet<&str> = lines.iter().copied().collect();
    assert_eq!(distinct.len(), lines.len(), "a stage ran twice");
    let mut expected = BTreeSet::new();
    for id in &run_ids {
        for stage in ["a", "b", "c"] {
            expected.insert(format!("{id} {stage} 1"));
        }
    }
    let got: BTreeSet<String> = distinct.iter().map(|l| (*l).to_owned()).collect();
    assert_eq!(got, expected);
    pool.close().await;
    drop(e1);
    drop(e2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_engine_dies_carries_on_with_another_replica() {
    let db = TestDb::create().await;
    let dir = open_temp_dir();
    let gate = dir.path().join("open");
    let mut engines = [
        EngineProcess::start(&db.url, &dir.path().join("e1"), "e1", 4).await,
        EngineProcess::start(&db.url, &dir.path().join("e2"), "e2", 4).await,
    ];
    let client = engines[0].client();
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    // Both engines have recorded where runners reach them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM engines")
            .fetch_one(&pool)
            .await
            .expect("engines");
        if seen == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{seen} engines seen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let yaml = format!(
        "name: survivor\nstages:\n  - name: wait\n    steps:\n      - echo before\n      - while [ ! -e {} ]; do sleep 0.05; done\n      - echo after\n",
        gate.display()
    );
    let applied = client
        .apply("test", "test.yaml", yaml)
        .await
        .expect("apply");
    assert!(applied.created, "{applied:?}");
    let run = client
        .trigger("test", "survivor", &Default::default())
        .await
        .expect("trigger")
        .run_id;
    // The engine that started the stage, once its runner is at the gate.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let claimed_by: String = loop {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT claimed_by, log_lines FROM stage_runs WHERE run_id = $1 AND status = 'running'",
        )
        .bind(run)
        .fetch_optional(&pool)
        .await
        .expect("stage");
        if let Some((by, lines)) = row
            && lines >= 1
        {
            break by;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stage never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // That engine dies and stays down; its runner lives on, and must finish with the other.
    let dead = engines
        .iter()
        .position(|e| e.engine_id == claimed_by)
        .expect("one of ours");
    engines[dead].kill9();
    std::fs::write(&gate, "").expect("open the gate");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let (status, attempt): (String, i32) = loop {
        let row: (String, i32) = sqlx::query_as(
            "SELECT s.status::text, s.attempt FROM stage_runs s WHERE s.run_id = $1",
        )
        .bind(run)
        .fetch_one(&pool)
        .await
        .expect("stage");
        if row.0 != "running" {
            break row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stage is still running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (status.as_str(), attempt),
        ("succeeded", 1),
        "finished by its first runner"
    );
    let lines: Vec<String> = sqlx::query_scalar(
        "SELECT data FROM log_chunks c JOIN stage_runs s ON s.id = c.stage_run_id
         WHERE s.run_id = $1 ORDER BY c.first_seq",
    )
    .bind(run)
    .fetch_all(&pool)
    .await
    .expect("log");
    let text = lines.concat();
    assert!(
        text.contains(" before") && text.contains(" after"),
        "{text}"
    );
    pool.close().await;
}

/// `gantry serve` started itself again with glibc's malloc tuned (`GLIBC_TUNABLES`, unless
/// the caller chose one), keeping its process id. The engine is not dumpable, so only root may
/// read its environment: as another user this is not checked.
fn malloc_is_tuned(engine: &EngineProcess) {
    let pid = engine.pid().expect("the engine runs");
    let environ = match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(environ) => environ,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            assert_ne!(
                nix::unistd::geteuid().as_raw(),
                0,
                "root reads any environment"
            );
            return;
        }
        Err(e) => panic!("reading the engine's environment: {e}"),
    };
    let expected = std::env::var("GLIBC_TUNABLES").unwrap_or_else(|_| {
        "glibc.malloc.mmap_threshold=262144:glibc.malloc.arena_max=1".to_owned()
    });
    // glibc rewrites the variable in place as it parses it (each `:` becomes a NUL), so the
    // first tunable is what can be compared.
    let first = expected.split(':').next().unwrap_or_default();
    let wanted = format!("GLIBC_TUNABLES={first}");
    assert!(
        environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes()),
        "{wanted} not in the engine's environment"
    );
}
