//! Cron schedules: with two engines on one database ticking at the same moments, every slot
//! starts exactly one run; after downtime a schedule catches up once, with its latest slot.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use gantry::engine::{Config, Engine};
use gantry::store::pipelines;
use gantry::webhook::cron;
use gantry_tests::TestEngine;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_fire_each_cron_slot_once_and_catch_up_only_the_latest_missed_slot() {
    let app = TestEngine::start().await;
    // A second engine on the same database: a replica, as far as the database can tell.
    let replica = replica_engine(&app, "replica").await;
    let name = app
        .apply(
            "name: nightly\non:\n  schedule:\n    - cron: \"*/5 * * * *\"\nstages:\n  - name: a\n    steps:\n      - \"true\"\n",
        )
        .await;
    let pipeline = pipelines::find(app.pool(), "test", &name)
        .await
        .expect("pipeline");

    // An hour of ticks five seconds apart, each at an odd fraction of a second (as real
    // ticks are), by both engines at once: every five-minute slot fires once however many
    // ticks fall inside its minute. Halfway, the replica restarts (a new process on the same
    // database) and ticks the slot the first one just fired again.
    let start: DateTime<Utc> = Utc::now() + TimeDelta::minutes(10);
    let start = start
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("whole minute");
    let mut replica = replica;
    let mut due_minutes = std::collections::BTreeSet::new();
    for i in 0..(12 * 60) {
        let now = start + TimeDelta::milliseconds(i * 5_000 + 731 + (i % 7) * 37);
        if i == 6 * 60 {
            replica = restart(&app, replica, "replica-restarted").await;
            // The restarted replica ticks again inside the minute its predecessor saw.
            let again = now - TimeDelta::seconds(5);
            let fired = cron::tick(&replica.0, again).await.expect("tick");
            assert_eq!(
                fired, 0,
                "a restarted engine fired the slot at {again} again"
            );
        }
        let (a, b) = tokio::join!(cron::tick(app.engine(), now), cron::tick(&replica.0, now));
        let fired = a.expect("tick") + b.expect("tick");
        assert!(fired <= 1, "tick at {now} fired {fired} runs");
        if now.minute().is_multiple_of(5) {
            due_minutes.insert((now.hour(), now.minute()));
        }
    }
    let expected = due_minutes.len();
    assert_eq!(expected, 12, "an hour holds twelve five-minute slots");
    // (The engine's own cron task ticks on the real clock too; a real slot it may fire
    // during the test lies before `start` and is left out.)
    let in_test = |f: &&(String, DateTime<Utc>, Option<gantry::store::RunId>, String)| f.1 >= start;
    let fired: Vec<_> = cron::fired(app.engine(), pipeline.id)
        .await
        .expect("slots")
        .into_iter()
        .filter(|f| in_test(&f))
        .collect();
    assert_eq!(fired.len(), expected, "{fired:?}");
    assert!(
        fired
            .iter()
            .all(|f| f.1.second() == 0 && f.1.nanosecond() == 0),
        "slots are whole minutes: {fired:?}"
    );
    let mut slots: Vec<_> = fired.iter().map(|f| f.1).collect();
    slots.dedup();
    assert_eq!(slots.len(), expected, "each slot once");
    assert!(
        fired.iter().all(|f| f.2.is_some()),
        "every slot has its run"
    );
    let by: std::collections::BTreeSet<&str> = fired.iter().map(|f| f.3.as_str()).collect();
    assert!(!by.is_empty());

    // Downtime of five hours: one tick afterwards starts one run, for the latest slot only.
    let last = *slots.last().expect("a slot");
    let after = last + TimeDelta::hours(5) + TimeDelta::minutes(2);
    let (a, b) = tokio::join!(
        cron::tick(app.engine(), after),
        cron::tick(&replica.0, after)
    );
    assert_eq!(a.expect("tick") + b.expect("tick"), 1);
    let fired: Vec<_> = cron::fired(app.engine(), pipeline.id)
        .await
        .expect("slots")
        .into_iter()
        .filter(|f| in_test(&f))
        .collect();
    assert_eq!(fired.len(), expected + 1);
    assert_eq!(
        fired.last().map(|f| f.1),
        Some(last + TimeDelta::hours(5)),
        "the catch-up run is for the most recent missed slot"
    );
}

/// Another engine process on the test engine's database (a replica, as far as the database can
/// tell), with a data directory of its own.
async fn replica_engine(app: &TestEngine, id: &str) -> (Arc<Engine>, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("dir");
    let config = Config {
        data_dir: data.path().to_path_buf(),
        engine_id: Some(id.into()),
        secret_key: None,
        ..Config::default()
    };
    let executors = gantry::server::executors(&config).await.expect("executors");
    let engine = Engine::new(config, &app.db.url, "http://127.0.0.1:9".into(), executors)
        .await
        .expect("replica");
    (engine, data)
}

/// Stops `engine` (its pool closed, as at exit) and starts another in its place.
async fn restart(
    app: &TestEngine,
    (engine, data): (Arc<Engine>, tempfile::TempDir),
    id: &str,
) -> (Arc<Engine>, tempfile::TempDir) {
    engine.store.pool.close().await;
    drop((engine, data));
    replica_engine(app, id).await
}
