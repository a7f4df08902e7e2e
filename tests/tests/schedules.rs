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
    let data = tempfile::tempdir().expect("dir");
    let replica: Arc<Engine> = Engine::new(
        Config {
            data_dir: data.path().to_path_buf(),
            engine_id: Some("replica".into()),
            secret_key: None,
            ..Config::default()
        },
        &app.db.url,
        "http://127.0.0.1:9".into(),
    )
    .await
    .expect("replica");
    let name = app
        .apply(
            "name: nightly\non:\n  schedule:\n    - cron: \"*/5 * * * *\"\nstages:\n  - name: a\n    steps:\n      - \"true\"\n",
        )
        .await;
    let pipeline = pipelines::find(app.pool(), "test", &name)
        .await
        .expect("pipeline");

    // Twelve five-minute slots in the future, each ticked by both engines at once.
    let start: DateTime<Utc> = Utc::now() + TimeDelta::minutes(10);
    let start = start
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("whole minute");
    let mut expected = 0;
    for i in 0..60 {
        let now = start + TimeDelta::minutes(i);
        let (a, b) = tokio::join!(cron::tick(app.engine(), now), cron::tick(&replica, now));
        let fired = a.expect("tick") + b.expect("tick");
        assert!(fired <= 1, "slot at {now} fired {fired} times");
        if now.minute().is_multiple_of(5) {
            expected += 1;
        }
    }
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
    let (a, b) = tokio::join!(cron::tick(app.engine(), after), cron::tick(&replica, after));
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
