//! The lock order of a run and its stages. The scheduler locks a run and then changes its
//! stages; so does a cancel. A stage ending (a runner's report, an approval, an approval
//! timing out) changes the stage and then marks its run to be looked at again: taken in that
//! order, it and the scheduler could each hold what the other waits for, and PostgreSQL ends
//! such a deadlock by failing one of them (a 500 for the runner or the user who asked). So a
//! stage's run is locked before the stage. Checked here with the locks themselves: while a
//! stage ends behind a transaction that holds its run (the scheduler mid-advance), the stage's
//! row is still free for that transaction.

use std::time::Duration;

use gantry::store::{self, RunId, StageRunId, StageStatus, runs, stages};
use gantry_tests::TestDb;
use sqlx::PgConnection;

/// A run of one stage, the stage running its first attempt.
async fn running_stage(db: &mut PgConnection) -> (RunId, StageRunId) {
    let project: i64 =
        sqlx::query_scalar("INSERT INTO projects (name) VALUES ('locks') RETURNING id")
            .fetch_one(&mut *db)
            .await
            .expect("project");
    let mut tx = sqlx::Connection::begin(&mut *db).await.expect("begin");
    let pipeline = store::pipelines::ensure_pipeline(&mut tx, store::ProjectId(project), "p")
        .await
        .expect("pipeline");
    let (version, _, _) = store::pipelines::add_version(&mut tx, pipeline, "name: p")
        .await
        .expect("version");
    let stage = runs::NewStage {
        key: "build".into(),
        plan_index: 0,
        needs: Vec::new(),
        finally: false,
        allow_failure: false,
        max_attempts: 1,
        timeout_secs: None,
    };
    let (run, _) = runs::create(
        &mut tx,
        runs::NewRun {
            pipeline,
            version,
            trigger: "manual",
            params: &serde_json::json!({}),
            context: &serde_json::json!({}),
            concurrency_group: None,
            rerun_of: None,
            triggered_by: None,
            delivery: None,
            stages: std::slice::from_ref(&stage),
        },
    )
    .await
    .expect("run");
    tx.commit().await.expect("commit");
    let stage: i64 = sqlx::query_scalar(
        "UPDATE stage_runs SET status = 'running', attempt = 1, started_at = now()
         WHERE run_id = $1 RETURNING id",
    )
    .bind(run.0)
    .fetch_one(&mut *db)
    .await
    .expect("stage running");
    sqlx::query("UPDATE runs SET status = 'running' WHERE id = $1")
        .bind(run.0)
        .execute(&mut *db)
        .await
        .expect("run running");
    (run, StageRunId(stage))
}

/// Waits until the backend `pid` waits for a lock.
async fn until_waiting_for_a_lock(db: &mut PgConnection, pid: i32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT COALESCE(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1",
        )
        .bind(pid)
        .fetch_one(&mut *db)
        .await
        .expect("activity");
        if waiting {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backend {pid} never waited for a lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `end` (a transaction that ends the stage) behind `scheduler`, which holds the run as
/// the scheduler does while it advances it; once `end` waits, asks for the stage's row without
/// waiting. Returns whether it was free, and `end`'s outcome after `scheduler` committed.
async fn stage_free_while_it_ends<F, Fut>(
    store: &store::Store,
    run: RunId,
    stage: StageRunId,
    end: F,
) -> (bool, store::Result<()>)
where
    F: FnOnce(sqlx::Transaction<'static, sqlx::Postgres>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = store::Result<()>> + Send + 'static,
{
    let mut scheduler = store.pool.begin().await.expect("begin");
    sqlx::query("SELECT id FROM runs WHERE id = $1 FOR UPDATE")
        .bind(run.0)
        .execute(&mut *scheduler)
        .await
        .expect("the run locked");
    let mut ending = store.pool.begin().await.expect("begin");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *ending)
        .await
        .expect("pid");
    let task = tokio::spawn(end(ending));
    let mut observer = store.pool.acquire().await.expect("connection");
    until_waiting_for_a_lock(&mut observer, pid).await;
    // What the scheduler does next with the run it holds: change its stages.
    let free = sqlx::query("SELECT id FROM stage_runs WHERE id = $1 FOR UPDATE NOWAIT")
        .bind(stage.0)
        .execute(&mut *scheduler)
        .await
        .is_ok();
    // Committed or not (a failed NOWAIT aborts it), the scheduler lets go of the run.
    drop(scheduler);
    let ended = task.await.expect("the ending transaction");
    (free, ended)
}

#[tokio::test]
async fn a_stage_ending_takes_its_run_before_the_stage() {
    let test_db = TestDb::create().await;
    let store = store::Store::connect(&test_db.url, 4)
        .await
        .expect("migrate");
    let mut db = store.pool.acquire().await.expect("connection");
    let (run, stage) = running_stage(&mut db).await;

    // A runner's report that the attempt ended.
    let (free, ended) = stage_free_while_it_ends(&store, run, stage, move |mut tx| async move {
        let status =
            stages::finish_attempt(&mut tx, stage, 1, StageStatus::Succeeded, None).await?;
        assert_eq!(status, Some(StageStatus::Succeeded));
        tx.commit().await?;
        Ok(())
    })
    .await;
    assert!(
        free,
        "a stage's end locked the stage before waiting for its run"
    );
    ended.expect("the stage ended once the run was free");
    let dirty: bool = sqlx::query_scalar("SELECT dirty FROM runs WHERE id = $1")
        .bind(run.0)
        .fetch_one(&mut *db)
        .await
        .expect("run");
    assert!(dirty, "the run is to be looked at again");

    // An approval (or its timeout) locks the stage it decides on the same way.
    sqlx::query("UPDATE stage_runs SET status = 'waiting_approval' WHERE id = $1")
        .bind(stage.0)
        .execute(&mut *db)
        .await
        .expect("waiting");
    let (free, ended) = stage_free_while_it_ends(&store, run, stage, move |mut tx| async move {
        let (_, status, _, _) = stages::lock(&mut tx, stage).await?;
        assert_eq!(status, StageStatus::WaitingApproval);
        stages::set_status(&mut *tx, stage, StageStatus::Queued, None).await?;
        runs::mark_dirty(&mut *tx, run).await?;
        tx.commit().await?;
        Ok(())
    })
    .await;
    assert!(
        free,
        "deciding on a stage locked the stage before waiting for its run"
    );
    ended.expect("the approval went through once the run was free");
    drop(db);
    store.pool.close().await;
}
