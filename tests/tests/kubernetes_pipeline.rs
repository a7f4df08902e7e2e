//! The example pipeline `pipelines/deploy.yaml` end to end on the stand-in cluster: its steps
//! and B2I stages run as Jobs (the runner in each pod pushes the image to a real registry), the
//! rollout waits for an approval, then the engine rolls the pinned image out to the Deployment
//! and the stand-in's controller pulls it from that registry.

use std::time::Duration;

use gantry::store::StageStatus;
use gantry_tests::image_tools::Buildah;
use gantry_tests::kube::StandIn;
use gantry_tests::kube::store::Kind;
use gantry_tests::registry::Registry;
use gantry_tests::{TestEngine, assert_succeeded, stage_of, workspace};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_build_package_approve_deploy_runs_end_to_end_on_the_stand_in() {
    let registry = Registry::start().await;
    Buildah::new().push_busybox_base(&registry, "base/busybox:1");
    let standin = StandIn::for_tests().await;
    standin.create(
        Kind::Deployment,
        "demo",
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:1"}]}
                }
            }
        }),
    );
    let host = registry.host.clone();
    let engine = TestEngine::start_with(|c| {
        standin.configure(c);
        c.insecure_registries = vec![host];
    })
    .await;
    let yaml = std::fs::read_to_string(workspace().join("pipelines/deploy.yaml")).expect("example");
    let name = engine.apply(&yaml).await;
    // A push to main, so `${{ git.short_sha }}` (the image tag) has a value.
    let run = engine
        .trigger_push(
            &name,
            &[("registry", &registry.host)],
            "5f2c0e9a7b1d4c3e8f6a2b9d0c1e3f4a5b6c7d8e",
        )
        .await;

    let waiting = engine
        .wait_for_stage(run.run_id, "rollout", LIMIT, |s| {
            s.status == StageStatus::WaitingApproval || s.status.is_terminal()
        })
        .await;
    if waiting.status != StageStatus::WaitingApproval {
        let (_, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
        let errors: Vec<_> = stages
            .iter()
            .map(|s| (s.key.clone(), s.status, s.error.clone()))
            .collect();
        panic!("the rollout did not wait for its approval: {errors:?}");
    }
    // Everything before the approval ran as Jobs.
    let jobs = standin.objects(Kind::Job);
    let keys: Vec<&str> = jobs
        .iter()
        .filter_map(|j| j["metadata"]["annotations"]["gantry.dev/stage-key"].as_str())
        .collect();
    for key in ["test", "build", "package"] {
        assert!(keys.contains(&key), "a Job for {key}: {keys:?}");
    }
    assert_eq!(
        standin.deployment_image("demo", "web"),
        "web:1",
        "nothing is rolled out before the approval"
    );
    engine
        .client()
        .decide(run.run_id.0, "rollout", true)
        .await
        .expect("approve");

    let (row, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    assert_succeeded(&row);
    let pinned = stage_of(&stages, "package")
        .image
        .clone()
        .expect("the pushed image");
    assert!(
        pinned.starts_with(&format!("{}/demo/web@sha256:", registry.host)),
        "{pinned}"
    );
    assert_eq!(
        standin.deployment_image("demo", "web"),
        pinned,
        "the pinned image is rolled out"
    );
    let deployment = standin
        .get(Kind::Deployment, "demo", "web")
        .expect("deployment");
    assert_eq!(deployment["status"]["availableReplicas"], 2);
    assert_eq!(
        deployment["metadata"]["annotations"]["kubernetes.io/change-cause"],
        format!("gantry run {} (5f2c0e9)", run.number)
    );
    let log = engine.log_lines(run.run_id, "rollout").await.join("\n");
    assert!(log.contains("successfully rolled out"), "{log}");
    gantry_tests::kube::validate::validate(&standin.received())
        .expect("every Job and patch passes strict validation");
}
