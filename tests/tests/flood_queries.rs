//! A flood of queued runs in one project (issue 15) must not make the scheduler's and the
//! commit-status reporter's per-run queries read the whole flood: each ran once per run
//! advanced or reported, and 5,000 queued runs turned each into a scan of 5,000 rows (the
//! scheduler advanced 54 runs a second in the webhook bench). Measured here by what the
//! queries read (PostgreSQL's per-transaction table statistics), not by how long they take.
//! Also: starting runs of an existing pipeline with an unchanged file takes no lock on the
//! pipeline's row before the run is numbered, so delivery processors do not queue on it.

use gantry::store::{self, PipelineId, ProjectId, RunId, pipelines, runs};
use gantry_tests::TestDb;
use sqlx::{PgConnection, Row};

/// Queued runs of the flood: far more than any of the queries may read.
const FLOOD: i64 = 5000;
/// What one query may read of `runs` (rows fetched through indexes plus rows scanned).
const BOUND: i64 = 100;

struct Fixture {
    project: ProjectId,
    pipeline: PipelineId,
    /// A run that has just ended (its final status is due).
    ended: RunId,
    /// The flood's oldest run.
    oldest: RunId,
    /// The runs held back, oldest first: the first three are of the concurrency group
    /// `deploy`, as is `ended`.
    held: Vec<RunId>,
}

/// One project with one repository pipeline: FLOOD new runs (queued, dirty, no status reported
/// yet), three the scheduler held back (queued, looked at; of the concurrency group `deploy`),
/// one of another commit whose `pending` was reported, and one of `deploy` that has just ended.
async fn flood(db: &mut PgConnection) -> Fixture {
    let project: i64 =
        sqlx::query_scalar("INSERT INTO projects (name) VALUES ('flood') RETURNING id")
            .fetch_one(&mut *db)
            .await
            .expect("project");
    let repository: i64 = sqlx::query_scalar(
        "INSERT INTO repositories (project_id, provider, full_name, clone_url, secret_nonce, secret_cipher)
         VALUES ($1, 'github', 'acme/flood', 'https://example.invalid/acme/flood.git', '\\x00', '\\x00')
         RETURNING id",
    )
    .bind(project)
    .fetch_one(&mut *db)
    .await
    .expect("repository");
    let pipeline: i64 = sqlx::query_scalar(
        "INSERT INTO pipelines (project_id, name, repository_id, source_file, last_run_number)
         VALUES ($1, 'flood', $2, '.gantry.yaml', $3 + 5) RETURNING id",
    )
    .bind(project)
    .bind(repository)
    .bind(FLOOD)
    .fetch_one(&mut *db)
    .await
    .expect("pipeline");
    let version: i64 = sqlx::query_scalar(
        "INSERT INTO pipeline_versions (pipeline_id, version, yaml, digest)
         VALUES ($1, 1, 'name: flood', 'd') RETURNING id",
    )
    .bind(pipeline)
    .fetch_one(&mut *db)
    .await
    .expect("version");
    let context =
        |commit: &str| serde_json::json!({"repository_id": repository, "commit_sha": commit});
    // The flood: new runs, as webhook processing creates them.
    sqlx::query(
        "INSERT INTO runs (pipeline_id, version_id, number, trigger, context, dirty)
         SELECT $1, $2, n, 'push', $3, true FROM generate_series(1, $4) n",
    )
    .bind(pipeline)
    .bind(version)
    .bind(context("f100d"))
    .bind(FLOOD)
    .execute(&mut *db)
    .await
    .expect("flood runs");
    // Held back by the project's limit, and one reported `pending` (another commit).
    let held: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO runs (pipeline_id, version_id, number, trigger, context, dirty, status_reported,
                           concurrency_group)
         SELECT $1, $2, $3 + n, 'push', $4, false, CASE WHEN n = 4 THEN 'pending' END,
                CASE WHEN n < 4 THEN 'deploy' END
         FROM generate_series(1, 4) n ORDER BY n RETURNING id",
    )
    .bind(pipeline)
    .bind(version)
    .bind(FLOOD)
    .bind(context("0ther"))
    .fetch_all(&mut *db)
    .await
    .expect("held runs");
    let ended: i64 = sqlx::query_scalar(
        "INSERT INTO runs (pipeline_id, version_id, number, trigger, context, status, status_reported, dirty,
                           concurrency_group)
         VALUES ($1, $2, $3 + 5, 'push', $4, 'succeeded', 'pending', false, 'deploy') RETURNING id",
    )
    .bind(pipeline)
    .bind(version)
    .bind(FLOOD)
    .bind(context("0ther"))
    .fetch_one(&mut *db)
    .await
    .expect("ended run");
    let oldest: i64 =
        sqlx::query_scalar("SELECT id FROM runs WHERE pipeline_id = $1 AND number = 1")
            .bind(pipeline)
            .fetch_one(&mut *db)
            .await
            .expect("oldest run");
    // Statistics as autovacuum would have them by the time a flood has queued.
    sqlx::query("ANALYZE runs")
        .execute(&mut *db)
        .await
        .expect("analyze");
    Fixture {
        project: ProjectId(project),
        pipeline: PipelineId(pipeline),
        ended: RunId(ended),
        oldest: RunId(oldest),
        held: held.into_iter().map(RunId).collect(),
    }
}

/// Rows of `runs` this transaction has read so far, and how many sequential scans of it.
async fn runs_read(tx: &mut PgConnection) -> (i64, i64) {
    let row = sqlx::query(
        "SELECT COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0) AS read, seq_scan
         FROM pg_stat_xact_user_tables WHERE relname = 'runs'",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("statistics");
    (row.get("read"), row.get("seq_scan"))
}

/// Runs `query` in its own transaction and returns its result with what it read of `runs`.
macro_rules! reading {
    ($db:expr, |$tx:ident| $query:expr) => {{
        let mut $tx = sqlx::Connection::begin(&mut *$db).await.expect("begin");
        let (before, scans_before) = runs_read(&mut $tx).await;
        let result = $query;
        let (after, scans_after) = runs_read(&mut $tx).await;
        $tx.commit().await.expect("commit");
        (result, after - before, scans_after - scans_before)
    }};
}

#[tokio::test]
async fn per_run_queries_read_a_bounded_number_of_runs_whatever_a_flood_queued() {
    let test_db = TestDb::create().await;
    let store = store::Store::connect(&test_db.url, 2)
        .await
        .expect("migrate");
    let mut db = store.pool.acquire().await.expect("connection");
    let fixture = flood(&mut db).await;

    // The scheduler, when a run ends: its project's held-back runs are looked at again.
    let (woken, read, scans) = reading!(db, |tx| {
        runs::wake_waiting_in_project(&mut *tx, fixture.ended)
            .await
            .expect("wake");
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM runs WHERE pipeline_id = $1 AND number > $2 AND dirty",
        )
        .bind(fixture.pipeline.0)
        .bind(FLOOD)
        .fetch_one(&mut *tx)
        .await
        .expect("count")
    });
    assert_eq!(
        woken, 4,
        "the four held-back runs are to be looked at again"
    );
    assert!(
        read <= BOUND && scans == 0,
        "waking the held-back runs read {read} runs ({scans} sequential scans)"
    );

    // The scheduler, for each run it advances: must it wait for an older run of its group?
    let (blocking, read, scans) =
        reading!(db, |tx| runs::blocking_in_group(&mut *tx, fixture.oldest)
            .await
            .expect("blocking"));
    assert_eq!(blocking, None, "the flood's runs have no concurrency group");
    assert!(
        read <= BOUND && scans == 0,
        "looking for an older run of a run's group read {read} runs ({scans} sequential scans)"
    );
    let (blocking, read, scans) =
        reading!(db, |tx| runs::blocking_in_group(&mut *tx, fixture.held[2])
            .await
            .expect("blocking"));
    assert_eq!(
        blocking,
        Some(fixture.held[0]),
        "a run of `deploy` waits for the oldest unfinished run of `deploy`"
    );
    assert!(
        read <= BOUND && scans == 0,
        "looking for an older run of a run's group read {read} runs ({scans} sequential scans)"
    );
    // ... and when a run of a group ends, the group's queued runs are looked at again.
    let (woken, read, scans) = reading!(db, |tx| {
        sqlx::query("UPDATE runs SET dirty = false WHERE id = ANY($1)")
            .bind(fixture.held.iter().map(|r| r.0).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .expect("clean");
        let (before, _) = runs_read(&mut tx).await;
        runs::wake_group(&mut *tx, fixture.ended)
            .await
            .expect("wake group");
        let (after, _) = runs_read(&mut tx).await;
        let dirty: Vec<RunId> =
            sqlx::query_scalar("SELECT id FROM runs WHERE id = ANY($1) AND dirty ORDER BY id")
                .bind(fixture.held.iter().map(|r| r.0).collect::<Vec<_>>())
                .fetch_all(&mut *tx)
                .await
                .expect("dirty");
        (dirty, after - before)
    });
    let (woken, wake_read) = woken;
    assert_eq!(
        woken,
        fixture.held[..3],
        "the three queued runs of `deploy`"
    );
    assert!(
        wake_read <= BOUND && read <= BOUND + 10 && scans == 0,
        "waking a group read {wake_read} runs ({scans} sequential scans)"
    );

    // The reporter: each repository's oldest run whose status lags behind is leased.
    let (leased, read, scans) = reading!(db, |tx| runs::lease_statuses_due(&mut *tx, &[], 8, 60.0)
        .await
        .expect("lease"));
    let leased: Vec<RunId> = leased.iter().map(|due| due.id).collect();
    assert_eq!(
        leased,
        vec![fixture.oldest],
        "one report per repository, the oldest due first"
    );
    assert!(
        read <= BOUND && scans == 0,
        "leasing the next reports read {read} runs ({scans} sequential scans)"
    );

    // The reporter, before posting: has a newer run about the same commit reported?
    let (superseded, read, scans) =
        reading!(db, |tx| runs::superseded_status(&mut *tx, fixture.oldest)
            .await
            .expect("superseded"));
    assert!(!superseded, "no newer run of the flood's commit reported");
    assert!(
        read <= BOUND && scans == 0,
        "checking for a newer report read {read} runs ({scans} sequential scans)"
    );

    // Webhook processing, for each delivery of an unchanged file: the pipeline is found and
    // its version reused without locking the pipeline's row, which another processor's
    // transaction can still lock at once.
    let mut tx = sqlx::Connection::begin(&mut *db).await.expect("begin");
    let found = pipelines::ensure_pipeline(&mut tx, fixture.project, "flood")
        .await
        .expect("ensure");
    assert_eq!(found, fixture.pipeline);
    let (_, version, new) = pipelines::add_version(&mut tx, found, "name: flood-2")
        .await
        .expect("first apply");
    assert!(new && version == 2, "a changed text is a new version");
    tx.commit().await.expect("commit");
    let mut tx = sqlx::Connection::begin(&mut *db).await.expect("begin");
    pipelines::ensure_pipeline(&mut tx, fixture.project, "flood")
        .await
        .expect("ensure");
    let (_, version, new) = pipelines::add_version(&mut tx, found, "name: flood-2")
        .await
        .expect("same text again");
    assert!(!new && version == 2, "the same text is the same version");
    let mut other = store.pool.acquire().await.expect("second connection");
    let locked = sqlx::query("SELECT id FROM pipelines WHERE id = $1 FOR NO KEY UPDATE NOWAIT")
        .bind(found.0)
        .fetch_one(&mut *other)
        .await;
    assert!(
        locked.is_ok(),
        "the pipeline's row is free while the first transaction is open: {locked:?}"
    );
    tx.commit().await.expect("commit");
}

/// A project with a run of one stage per entry of `stages` (`running` or `queued`, queued in
/// this order, a second apart, starting at `from` seconds ago). Returns the stages' ids.
async fn project_with_stages(
    db: &mut PgConnection,
    name: &str,
    stages: &[&str],
    from: i64,
) -> Vec<i64> {
    let project: i64 = sqlx::query_scalar("INSERT INTO projects (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(&mut *db)
        .await
        .expect("project");
    let pipeline: i64 = sqlx::query_scalar(
        "INSERT INTO pipelines (project_id, name) VALUES ($1, 'build') RETURNING id",
    )
    .bind(project)
    .fetch_one(&mut *db)
    .await
    .expect("pipeline");
    let version: i64 = sqlx::query_scalar(
        "INSERT INTO pipeline_versions (pipeline_id, version, yaml, digest)
         VALUES ($1, 1, 'name: build', 'd') RETURNING id",
    )
    .bind(pipeline)
    .fetch_one(&mut *db)
    .await
    .expect("version");
    let mut ids = Vec::new();
    for (n, status) in stages.iter().enumerate() {
        let n = i64::try_from(n).expect("few stages");
        let run: i64 = sqlx::query_scalar(
            "INSERT INTO runs (pipeline_id, version_id, number, trigger, status, dirty)
             VALUES ($1, $2, $3, 'push', 'running', false) RETURNING id",
        )
        .bind(pipeline)
        .bind(version)
        .bind(i32::try_from(n + 1).expect("few runs"))
        .fetch_one(&mut *db)
        .await
        .expect("run");
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO stage_runs (run_id, key, plan_index, status, queued_at, claimed_by, executor)
             VALUES ($1, 'build', 0, $2::stage_status, now() - make_interval(secs => $3),
                     CASE WHEN $2 = 'running' THEN 'engine-1' END,
                     CASE WHEN $2 = 'running' THEN 'local' END)
             RETURNING id",
        )
        .bind(run)
        .bind(*status)
        .bind((from - n) as f64)
        .fetch_one(&mut *db)
        .await
        .expect("stage");
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn a_freed_slot_goes_to_the_project_running_fewest_stages() {
    let test_db = TestDb::create().await;
    let store = store::Store::connect(&test_db.url, 2)
        .await
        .expect("migrate");
    let mut db = store.pool.acquire().await.expect("connection");
    // Project a holds two of the engine's three slots and has older stages queued; project b
    // runs nothing, and its one stage was queued last.
    let a = project_with_stages(
        &mut db,
        "a",
        &["running", "running", "queued", "queued"],
        60,
    )
    .await;
    let b = project_with_stages(&mut db, "b", &["queued"], 10).await;

    let claimed = store::stages::claim_queued(&mut *db, "engine-1", "local", 3)
        .await
        .expect("claim");
    let claimed: Vec<i64> = claimed.iter().map(|stage| stage.id.0).collect();
    assert_eq!(
        claimed,
        vec![b[0]],
        "the one free slot goes to b's stage, not to a's older ones ({:?})",
        &a[2..]
    );

    // With slots for all, a's queued stages follow.
    let claimed = store::stages::claim_queued(&mut *db, "engine-1", "local", 6)
        .await
        .expect("claim");
    let mut claimed: Vec<i64> = claimed.iter().map(|stage| stage.id.0).collect();
    claimed.sort_unstable();
    assert_eq!(claimed, a[2..].to_vec());
}
