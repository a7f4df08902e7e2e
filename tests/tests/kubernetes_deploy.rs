//! Deploy stages against the stand-in's Deployment controller: `set image` + rollout status,
//! a stuck rollout (an image that cannot be pulled) rolled back to the previous revision, and
//! history and undo through the API and `gantry deploy`. Every patched Deployment is checked
//! against the official schemas in strict mode.

use std::time::Duration;

use gantry::deploy::history::Revision;
use gantry_tests::kube::StandIn;
use gantry_tests::kube::store::Kind;
use gantry_tests::{StageStatus, assert_succeeded, stage_of};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

const PIPELINE: &str = "name: k8s-deploy
params:
  image:
    default: web:2
  rollback:
    type: bool
    default: true
stages:
  - name: rollout
    deploy:
      namespace: demo
      deployment: web
      image: ${{ params.image }}
      timeout: 30s
      change_cause: gantry run ${{ run.number }}
";

fn web_deployment() -> Value {
    json!({
        "metadata": {"name": "web", "annotations": {"kubernetes.io/change-cause": "first install"}},
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}]}]}
            }
        }
    })
}

/// Waits until the controller has rolled out the Deployment as created (revision 1).
async fn first_revision(standin: &StandIn) {
    standin
        .wait_for("the first revision", Kind::ReplicaSet, LIMIT, |sets| {
            sets.len() == 1
        })
        .await;
}

async fn history(engine: &gantry_tests::TestEngine) -> Vec<Revision> {
    engine
        .client()
        .deploy_history("test", "demo", "web")
        .await
        .expect("history")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_rolls_out_and_a_failing_rollout_rolls_back_to_the_previous_revision() {
    let standin = StandIn::for_tests().await;
    standin.set_missing_image("web:broken");
    standin.create(Kind::Deployment, "demo", web_deployment());
    first_revision(&standin).await;
    let engine = standin.engine().await;
    let name = engine.apply(PIPELINE).await;

    let run = engine.trigger(&name, &[("image", "web:2")]).await;
    let (row, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    assert_succeeded(&row);
    assert_eq!(
        stage_of(&stages, "rollout").executor.as_deref(),
        Some("deploy")
    );
    let log = engine.log_lines(run.run_id, "rollout").await.join("\n");
    assert!(
        log.contains("kubectl set image deployment/web web=web:2 -n demo"),
        "{log}"
    );
    assert!(
        log.contains("deployment \"web\" successfully rolled out"),
        "{log}"
    );
    assert_eq!(standin.deployment_image("demo", "web"), "web:2");
    let revisions = history(&engine).await;
    assert_eq!(revisions.len(), 2, "{revisions:#?}");
    assert_eq!(revisions[0].change_cause.as_deref(), Some("first install"));
    assert_eq!(revisions[1].revision, 2);
    assert_eq!(revisions[1].change_cause.as_deref(), Some("gantry run 1"));
    assert_eq!(revisions[1].images, ["web=web:2"]);
    assert!(revisions[1].current);

    let run = engine.trigger(&name, &[("image", "web:broken")]).await;
    let (_, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    let rollout = stage_of(&stages, "rollout");
    assert_eq!(rollout.status, StageStatus::Failed);
    let error = rollout.error.clone().unwrap_or_default();
    assert!(error.contains("exceeded its progress deadline"), "{error}");
    assert!(error.contains("rolled back to revision 2"), "{error}");
    assert_eq!(
        standin.deployment_image("demo", "web"),
        "web:2",
        "the previous revision's image is back"
    );
    let revisions = history(&engine).await;
    let current: Vec<&Revision> = revisions.iter().filter(|r| r.current).collect();
    assert_eq!(current.len(), 1);
    // As with kubectl, the ReplicaSet rolled back to becomes the newest revision.
    assert_eq!(current[0].revision, 4, "{revisions:#?}");
    assert_eq!(current[0].images, ["web=web:2"]);
    assert_eq!(current[0].change_cause.as_deref(), Some("gantry run 1"));
    let log = engine.log_lines(run.run_id, "rollout").await.join("\n");
    assert!(
        log.contains("kubectl rollout undo deployment/web -n demo"),
        "{log}"
    );

    // Only Deployments the project's pipelines deploy to can be steered through it.
    let answer = engine
        .http()
        .get(format!(
            "{}/api/v1/projects/test/deployments/demo/other/history",
            engine.url()
        ))
        .send()
        .await
        .expect("history");
    assert_eq!(answer.status(), reqwest::StatusCode::NOT_FOUND);
    let body = answer.text().await.unwrap_or_default();
    assert!(
        body.contains("no pipeline of project `test` deploys to demo/other"),
        "{body}"
    );
    let anonymous = reqwest::get(format!(
        "{}/api/v1/projects/test/deployments/demo/web/history",
        engine.url()
    ))
    .await
    .expect("history")
    .status();
    assert!(anonymous.is_client_error(), "{anonymous}");
    let targets: Vec<Value> = engine
        .http()
        .get(format!("{}/api/v1/projects/test/deployments", engine.url()))
        .send()
        .await
        .expect("targets")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        targets,
        vec![
            json!({"namespace": "demo", "deployment": "web", "pipeline": "k8s-deploy", "stage": "rollout"})
        ]
    );

    gantry_tests::kube::validate::validate(&standin.received())
        .expect("patched Deployments pass strict validation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rollback_a_failed_rollout_stays_and_the_cli_undoes_it() {
    let standin = StandIn::for_tests().await;
    standin.set_missing_image("web:broken");
    standin.create(Kind::Deployment, "demo", web_deployment());
    first_revision(&standin).await;
    let engine = standin.engine().await;
    let name = engine
        .apply(&PIPELINE.replace(
            "      timeout: 30s\n",
            "      timeout: 30s\n      rollback_on_failure: false\n",
        ))
        .await;
    let run = engine.trigger(&name, &[("image", "web:broken")]).await;
    let (_, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    let rollout = stage_of(&stages, "rollout");
    assert_eq!(rollout.status, StageStatus::Failed);
    assert!(
        rollout
            .error
            .as_deref()
            .unwrap_or("")
            .contains("the rollout failed"),
        "{:?}",
        rollout.error
    );
    assert_eq!(standin.deployment_image("demo", "web"), "web:broken");

    let gantry = |args: &[&str]| {
        let out = std::process::Command::new(gantry_tests::gantry_bin())
            .args(args)
            .args(["--server", &engine.url(), "--project", "test"])
            .env("GANTRY_TOKEN", &engine.token)
            .output()
            .expect("run gantry");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = gantry(&["deploy", "history", "demo/web"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("REVISION"), "{stdout}");
    assert!(stdout.contains("web=web:broken"), "{stdout}");
    assert!(stdout.contains("first install"), "{stdout}");
    let (code, stdout, stderr) = gantry(&["deploy", "undo", "demo/web", "--to-revision", "1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.trim(),
        "deployment.apps/web rolled back to revision 1"
    );
    assert_eq!(standin.deployment_image("demo", "web"), "web:1");
    let (code, _, stderr) = gantry(&["deploy", "undo", "demo/web", "--to-revision", "9"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("unable to find the specified revision 9"),
        "{stderr}"
    );
    let (code, _, stderr) = gantry(&["deploy", "history", "not-a-target"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("is not NAMESPACE/NAME"), "{stderr}");
}
