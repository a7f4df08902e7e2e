//! Stages as Kubernetes Jobs, against the stand-in API server (tests/src/kube): the engine uses
//! the real kube client through an ordinary kubeconfig. Every Job it creates is checked against
//! the official schemas in strict mode.

use std::time::Duration;

use gantry_tests::kube::store::Kind;
use gantry_tests::kube::{Fault, StandIn};
use gantry_tests::{StageStatus, assert_succeeded, stage_of};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steps_stage_runs_as_a_job_whose_runner_reports_back() {
    let standin = StandIn::for_tests().await;
    // A Kubernetes Secret the stage takes an environment variable from (base64 of `s3cr3t`).
    standin.create(
        Kind::Secret,
        "builds",
        serde_json::json!({"metadata": {"name": "api-token"}, "type": "Opaque", "data": {"token": "czNjcjN0"}}),
    );
    let engine = standin.engine().await;
    let name = engine
        .apply(
            "name: k8s-hello
kubernetes:
  namespace: builds
  image_pull_secrets: [regcred]
stages:
  - name: build
    image: alpine:3.20
    env:
      GREETING: hello from a Job
    kubernetes:
      service_account: builder
      node_selector:
        kubernetes.io/os: linux
      secrets:
        TOKEN: api-token/token
    steps:
      - run: echo \"$GREETING in $PWD, token of ${#TOKEN} characters\"
",
        )
        .await;
    let run = engine.trigger(&name, &[]).await;
    let (run_row, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    assert_succeeded(&run_row);
    let build = stage_of(&stages, "build");
    assert_eq!(build.executor.as_deref(), Some("kubernetes"));
    let handle = build.executor_handle.clone().expect("a handle");
    assert_eq!(handle, format!("builds/gantry-{}-1", build.id));
    let lines = engine.log_lines(run.run_id, "build").await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("hello from a Job in /") && l.contains("token of 6 characters")),
        "{lines:?}"
    );

    let jobs = standin.objects(Kind::Job);
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(
        job["metadata"]["labels"]["gantry.dev/run"],
        run.run_id.0.to_string()
    );
    assert_eq!(
        job["metadata"]["labels"]["gantry.dev/stage"],
        build.id.0.to_string()
    );
    assert_eq!(job["metadata"]["labels"]["gantry.dev/attempt"], "1");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    let pod_spec = &job["spec"]["template"]["spec"];
    assert_eq!(pod_spec["containers"][0]["image"], "alpine:3.20");
    assert_eq!(pod_spec["serviceAccountName"], "builder");
    assert_eq!(pod_spec["imagePullSecrets"][0]["name"], "regcred");
    assert_eq!(pod_spec["nodeSelector"]["kubernetes.io/os"], "linux");
    let pods = standin.objects(Kind::Pod);
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0]["status"]["phase"], "Succeeded");
    assert_eq!(
        pods[0]["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        format!("gantry-{}-1", build.id)
    );

    gantry_tests::kube::validate::validate(&standin.received())
        .expect("Jobs pass strict validation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_injected_failure_gives_its_stage_error() {
    let standin = StandIn::for_tests().await;
    standin.set_missing_image("registry.invalid/team/app:missing");
    for (stage, fault) in [
        ("oom", Fault::Oom),
        ("deadline", Fault::Deadline),
        ("unschedulable", Fault::Unschedulable),
        ("evicted", Fault::Evicted),
        ("deleted", Fault::PodDeleted),
    ] {
        standin.inject(stage, fault);
    }
    let engine = standin.engine().await;
    let stage = |name: &str, image: &str| {
        format!(
            "  - name: {name}
    needs: []
    image: {image}
    timeout: 10m
    resources:
      limits:
        memory: 64Mi
    steps:
      - sleep 30
"
        )
    };
    let mut yaml = "name: k8s-faults\nstages:\n".to_owned();
    for name in ["oom", "deadline", "unschedulable", "evicted", "deleted"] {
        yaml.push_str(&stage(name, "alpine:3.20"));
    }
    yaml.push_str(&stage("pull", "registry.invalid/team/app:missing"));
    yaml.push_str("  - name: nodes\n    needs: []\n    kubernetes:\n      node_selector:\n        disktype: ssd\n    steps:\n      - sleep 30\n");
    yaml.push_str("  - name: secret\n    needs: []\n    kubernetes:\n      secrets:\n        TOKEN: no-such-secret/token\n    steps:\n      - sleep 30\n");
    let name = engine.apply(&yaml).await;
    let run = engine.trigger(&name, &[]).await;
    let (_, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    let error = |key: &str| {
        let s = stage_of(&stages, key);
        (s.status, s.error.clone().unwrap_or_default())
    };
    let (status, e) = error("oom");
    assert_eq!(status, StageStatus::Failed, "{e}");
    assert!(
        e.contains("container `stage` was OOM-killed") && e.contains("64Mi"),
        "{e}"
    );
    let (status, e) = error("deadline");
    assert_eq!(status, StageStatus::TimedOut, "{e}");
    assert!(e.contains("ran past its deadline of 1260s"), "{e}");
    let (status, e) = error("unschedulable");
    assert_eq!(status, StageStatus::Failed, "{e}");
    assert!(
        e.contains("cannot be scheduled: 0/1 nodes are available"),
        "{e}"
    );
    let (_, e) = error("evicted");
    assert!(
        e.contains("was evicted: The node was low on resource: memory"),
        "{e}"
    );
    let (_, e) = error("deleted");
    assert!(e.contains("pod") && e.contains("deleted"), "{e}");
    let (_, e) = error("pull");
    assert!(
        e.contains("cannot pull image `registry.invalid/team/app:missing` for container `stage`"),
        "{e}"
    );
    let (_, e) = error("nodes");
    assert!(
        e.contains("didn't match Pod's node affinity/selector"),
        "{e}"
    );
    let (_, e) = error("secret");
    assert!(
        e.contains("CreateContainerConfigError")
            && e.contains("secret \"no-such-secret\" not found"),
        "{e}"
    );
    // Failed attempts leave nothing running: pods that could not run are deleted with their Job.
    standin
        .wait_for("the stuck pods to go", Kind::Pod, LIMIT, |pods| {
            pods.iter()
                .all(|p| p["status"]["phase"] != "Pending" && p["status"]["phase"] != "Running")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_deletes_the_job_and_its_pod() {
    let standin = StandIn::for_tests().await;
    let engine = standin.engine().await;
    let name = engine
        .apply("name: k8s-cancel\nstages:\n  - name: wait\n    steps:\n      - sleep 300.4242\n")
        .await;
    let run = engine.trigger(&name, &[]).await;
    engine
        .wait_for_stage(run.run_id, "wait", LIMIT, |s| {
            s.status == StageStatus::Running
        })
        .await;
    gantry_tests::proc::wait_until_found("the step's sleep", LIMIT, || {
        gantry_tests::proc::live_with_arg("300.4242")
    })
    .await;
    gantry::run::cancel(engine.engine(), run.run_id, None, None)
        .await
        .expect("cancel");
    let (_, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    assert_eq!(stage_of(&stages, "wait").status, StageStatus::Cancelled);
    standin
        .wait_for("the Job and pod to go", Kind::Job, LIMIT, <[_]>::is_empty)
        .await;
    standin
        .wait_for("the pod to go", Kind::Pod, LIMIT, <[_]>::is_empty)
        .await;
    gantry_tests::proc::wait_until_gone(LIMIT, || gantry_tests::proc::live_with_arg("300.4242"))
        .await
        .expect("the step is stopped");
}

/// The cluster's version is read at start-up: older than 1.27 (no `job-name` pod label to
/// watch by) stops the engine; 1.28 runs stages but refuses `services` when a pipeline is
/// applied, since its API server would drop the sidecars' `restartPolicy` without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_version_is_checked_at_start_and_services_need_1_29() {
    use gantry::executor::kubernetes::{KubeExecutor, KubeSettings};
    let standin = StandIn::for_tests().await;
    standin.set_minor_version(26);
    let settings = KubeSettings {
        kubeconfig: Some(standin.kubeconfig_path()),
        ..KubeSettings::default()
    };
    let error = match KubeExecutor::connect(settings).await {
        Ok(_) => panic!("an engine started on Kubernetes 1.26"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains(
            "the cluster runs Kubernetes v1.26.0-gantry-standin; Gantry needs 1.27 or newer"
        ),
        "{error}"
    );

    standin.set_minor_version(28);
    let engine = standin.engine().await;
    let yaml = "name: with-db\nstages:\n  - name: test\n    services:\n      - name: db\n        image: postgres:16\n    steps:\n      - echo hi\n";
    let refused = gantry::run::apply(engine.engine(), "test", "ci.yaml", yaml)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refused.contains("ci.yaml")
            && refused.contains("need Kubernetes 1.29 or newer; this cluster runs 1.28"),
        "{refused}"
    );
    // Stages without services still run there.
    let name = engine
        .apply("name: plain\nstages:\n  - name: build\n    steps:\n      - echo fine\n")
        .await;
    let run = engine.trigger(&name, &[]).await;
    let (row, _) = engine
        .wait_for_run(run.run_id, Duration::from_secs(60))
        .await;
    assert_succeeded(&row);
    engine.stop().await;
}
