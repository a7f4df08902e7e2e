//! An engine killed mid-Job (SIGKILL) and started again re-adopts the Job: the runner in the
//! pod keeps working, reconnects, and the run finishes on the same attempt. Jobs whose stage
//! run does not exist are deleted after the restart.

use std::time::Duration;

use gantry::store::RunStatus;
use gantry_tests::kube::store::Kind;
use gantry_tests::kube::{RUNNER_IMAGE, StandIn};
use gantry_tests::proc::{live_with_arg, wait_until_found};
use gantry_tests::serve::EngineProcess;
use gantry_tests::{TestDb, open_temp_dir};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_restarted_mid_job_re_adopts_it_and_deletes_orphans() {
    let standin = StandIn::for_tests().await;
    let db = TestDb::create().await;
    let dir = open_temp_dir();
    let args: Vec<String> = [
        "--executor",
        "kubernetes",
        "--kubeconfig",
        &standin.kubeconfig_path().display().to_string(),
        "--runner-image",
        RUNNER_IMAGE,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut engine =
        EngineProcess::start_with(&db.url, &dir.path().join("e1"), "e1", 4, args).await;
    let client = engine.client();
    let yaml = "name: k8s-restart\nstages:\n  - name: slow\n    steps:\n      - run: sleep 4.2424; echo finished the slow stage\n";
    client
        .apply("test", "test.yaml", yaml.to_owned())
        .await
        .expect("apply");
    let run_id = client
        .trigger("test", "k8s-restart", &Default::default())
        .await
        .expect("trigger")
        .run_id;

    wait_until_found("the step running in the Job's pod", LIMIT, || {
        live_with_arg("4.2424")
    })
    .await;
    engine.kill9();
    // While no engine runs: a Job whose stage run never existed (its run was deleted).
    standin.create(
        Kind::Job,
        "ci",
        json!({
            "metadata": {"name": "gantry-987654321-1", "labels": {
                "app.kubernetes.io/managed-by": "gantry", "gantry.dev/stage": "987654321",
                "gantry.dev/attempt": "1", "gantry.dev/run": "987654320"}},
            "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "stage", "image": "alpine:3.20", "command": ["sleep", "300.777"]}]}}}
        }),
    );
    wait_until_found("the orphan's process", LIMIT, || live_with_arg("300.777")).await;
    engine.restart().await;

    let deadline = tokio::time::Instant::now() + LIMIT;
    let run = loop {
        let run = client.run(run_id).await.expect("GET run");
        if run.status.is_terminal() {
            break run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run still {}",
            run.status.as_str()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    let stage = &run.stages[0];
    assert_eq!(stage.attempt, 1, "re-adopted, not retried: {stage:#?}");
    let log = client
        .log(run_id, "slow", None)
        .await
        .expect("log")
        .text()
        .await
        .expect("log text");
    assert!(log.contains("finished the slow stage"), "{log}");
    standin
        .wait_for("the orphaned Job to be deleted", Kind::Job, LIMIT, |jobs| {
            jobs.iter()
                .all(|j| j["metadata"]["name"] != "gantry-987654321-1")
        })
        .await;
    gantry_tests::proc::wait_until_gone(LIMIT, || live_with_arg("300.777"))
        .await
        .expect("the orphan's pod is stopped");
}
