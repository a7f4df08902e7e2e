//! Smoke tests of the REAL control plane harness (tests/src/controlplane): etcd,
//! kube-apiserver, kube-controller-manager and kube-scheduler v1.37.2 with the fake kubelet as
//! their node. Each test starts its own control plane (a few seconds) and asserts what the real
//! components did: controllers' objects, the scheduler's bindings, statuses the kubelet wrote,
//! and Gantry's stages run as Jobs the real Job controller handled.

use std::time::Duration;

use futures_util::StreamExt;
use gantry_tests::controlplane::{ControlPlane, Fault, Gate, Identity, Options, Target};
use gantry_tests::{StageStatus, assert_succeeded, stage_of};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::watcher;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(90);

/// Polls `check` until it returns `Some`, or panics after `LIMIT` naming `what` and what the
/// last poll saw (`seen`).
async fn eventually<T, F: Future<Output = Result<T, String>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match check().await {
            Ok(found) => return found,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {LIMIT:?}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn kubectl_json(plane: &ControlPlane, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let text = plane.kubectl_ok(&args).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_runs_a_deployment_on_the_fake_node() {
    let plane = ControlPlane::start().await;
    eprintln!("control plane started: {:?}", plane.startup);
    assert_eq!(
        plane.kubectl_ok(&["get", "--raw", "/readyz"]).await.trim(),
        "ok"
    );
    let version = kubectl_json(&plane, &["version"]).await;
    assert_eq!(
        version["serverVersion"]["gitVersion"], "v1.37.2",
        "{version}"
    );

    plane.create_namespace("apps", None).await;
    plane
        .apply(
            &json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "apps"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{
                            "name": "web", "image": "busybox:1.36",
                            "command": ["sh", "-c", "echo hello from $HOSTNAME; exec sleep 300.2701"],
                        }]},
                    },
                },
            })
            .to_string(),
        )
        .await;
    // The Deployment controller made a ReplicaSet, the ReplicaSet controller two pods, the
    // scheduler bound them to the node and the kubelet runs them: the Deployment is available.
    let deployment = eventually("the Deployment to be available", || async {
        let d = kubectl_json(&plane, &["-n", "apps", "get", "deployment", "web"]).await;
        if d["status"]["availableReplicas"] == 2 && d["status"]["updatedReplicas"] == 2 {
            Ok(d)
        } else {
            Err(d["status"].to_string())
        }
    })
    .await;
    assert_eq!(
        deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let sets = kubectl_json(&plane, &["-n", "apps", "get", "replicasets"]).await;
    let sets = sets["items"].as_array().expect("items");
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(
        sets[0]["metadata"]["ownerReferences"][0]["kind"],
        "Deployment"
    );
    assert_eq!(sets[0]["status"]["readyReplicas"], 2);
    let pods = kubectl_json(&plane, &["-n", "apps", "get", "pods", "-l", "app=web"]).await;
    let pods = pods["items"].as_array().expect("items").clone();
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        assert_eq!(pod["spec"]["nodeName"], plane.kubelet().node);
        assert_eq!(pod["status"]["phase"], "Running");
        let status = &pod["status"]["containerStatuses"][0];
        assert_eq!(status["ready"], true, "{status}");
        assert!(
            status["state"]["running"]["startedAt"].is_string(),
            "{status}"
        );
        let ready = pod["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == "Ready")
            .cloned();
        assert_eq!(ready.expect("a Ready condition")["status"], "True");
    }
    // Each pod's container is a real process, and its output is what `kubectl logs` shows
    // (the API server asks the kubelet for it).
    let processes = gantry_tests::proc::live_with_arg("300.2701");
    assert!(processes.len() >= 2, "{processes:?}");
    let name = pods[0]["metadata"]["name"].as_str().expect("a name");
    let logs = eventually("the pod's log", || async {
        let out = plane.kubectl(&["-n", "apps", "logs", name]).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("hello from") {
            Ok(text)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await;
    assert_eq!(logs.trim(), format!("hello from {name}"));

    // Scaling down: the ReplicaSet controller deletes a pod, gracefully; the kubelet stops
    // its process and confirms the deletion.
    plane
        .kubectl_ok(&["-n", "apps", "scale", "deployment/web", "--replicas=1"])
        .await;
    eventually("one pod left", || async {
        let pods = kubectl_json(&plane, &["-n", "apps", "get", "pods", "-l", "app=web"]).await;
        let count = pods["items"].as_array().map_or(0, Vec::len);
        if count == 1 {
            Ok(())
        } else {
            Err(format!("{count} pods"))
        }
    })
    .await;
    let memory = plane.memory_kb();
    eprintln!("memory (kB, now and peak): {memory:?}");
    drop(plane);
    gantry_tests::proc::wait_until_gone(LIMIT, || gantry_tests::proc::live_with_arg("300.2701"))
        .await
        .expect("the containers' processes end with the control plane");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gantry_stage_runs_as_a_job_of_the_real_job_controller() {
    let plane = ControlPlane::start().await;
    let engine = plane.engine("ci").await;
    let name = engine
        .apply(
            "name: real-k8s
stages:
  - name: build
    image: alpine:3.20
    env:
      GREETING: hello from a real control plane
    steps:
      - run: echo \"$GREETING in $PWD\"
",
        )
        .await;
    let run = engine.trigger(&name, &[]).await;
    let (run_row, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    assert_succeeded(&run_row);
    let build = stage_of(&stages, "build");
    assert_eq!(build.executor.as_deref(), Some("kubernetes"));
    let job_name = format!("gantry-{}-1", build.id);
    assert_eq!(
        build.executor_handle.as_deref(),
        Some(format!("ci/{job_name}").as_str())
    );
    let lines = engine.log_lines(run.run_id, "build").await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("hello from a real control plane in /")),
        "{lines:?}"
    );

    let jobs = kubectl_json(&plane, &["-n", "ci", "get", "jobs"]).await;
    let jobs = jobs["items"].as_array().expect("items");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!(job["metadata"]["name"], job_name);
    assert_eq!(
        job["metadata"]["labels"]["gantry.dev/run"],
        run.run_id.0.to_string()
    );
    assert_eq!(
        job["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "gantry"
    );
    // The real Job controller's verdict, which Gantry's watch saw.
    let job = eventually("the Job to be complete", || async {
        let job = kubectl_json(&plane, &["-n", "ci", "get", "job", &job_name]).await;
        let complete = job["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Complete" && c["status"] == "True");
        if complete {
            Ok(job)
        } else {
            Err(job["status"].to_string())
        }
    })
    .await;
    assert_eq!(job["status"]["succeeded"], 1, "{}", job["status"]);
    let pods = kubectl_json(
        &plane,
        &[
            "-n",
            "ci",
            "get",
            "pods",
            "-l",
            &format!("job-name={job_name}"),
        ],
    )
    .await;
    let pod = &pods["items"][0];
    assert_eq!(pod["status"]["phase"], "Succeeded", "{}", pod["status"]);
    assert_eq!(
        pod["status"]["initContainerStatuses"][0]["name"],
        "gantry-runner"
    );
    assert_eq!(
        pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    engine.stop().await;
}

/// Creates `pod` in `namespace` once a watch on it has listed (so it sees every status the
/// pod goes through), and returns the waiting reasons and messages of its containers, in the
/// order the watch saw them, until `done` holds for the pod.
async fn create_and_watch(
    plane: &ControlPlane,
    namespace: &str,
    pod: Pod,
    done: impl Fn(&Pod) -> bool,
) -> (Vec<(String, String)>, Pod) {
    let name = pod.metadata.name.clone().expect("a named pod");
    let api: Api<Pod> = Api::namespaced(plane.client(), namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher::watcher(api.clone(), config));
    let mut seen: Vec<(String, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("pod {name} not done within {LIMIT:?}; seen {seen:?}"))
            .expect("the watch goes on")
            .expect("a watch event");
        let pod = match event {
            watcher::Event::InitDone => {
                api.create(&PostParams::default(), &pod)
                    .await
                    .expect("create the pod");
                continue;
            }
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => pod,
            _ => continue,
        };
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        for status in statuses {
            if let Some(waiting) = status.state.and_then(|s| s.waiting) {
                let entry = (
                    waiting.reason.unwrap_or_default(),
                    waiting.message.unwrap_or_default(),
                );
                if seen.last() != Some(&entry) {
                    seen.push(entry);
                }
            }
        }
        if done(&pod) {
            return (seen, pod);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_fails_to_pull_twice_backs_off_then_runs() {
    let plane = ControlPlane::start().await;
    plane.create_namespace("pulls", None).await;
    plane.kubelet().inject(
        Target::Label("app".into(), "flaky".into()),
        Fault::PullFails(2),
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "flaky", "labels": {"app": "flaky"}},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "registry.example/team/flaky:1.0",
            "command": ["sleep", "300.3141"],
        }]},
    }))
    .expect("a pod");
    let running =
        |pod: &Pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let (seen, pod) = create_and_watch(&plane, "pulls", pod, running).await;
    let reasons: Vec<&str> = seen.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "ContainerCreating",
            "ErrImagePull",
            "ImagePullBackOff",
            "ErrImagePull",
            "ImagePullBackOff"
        ],
        "{seen:?}"
    );
    assert!(seen[1].1.starts_with("rpc error: code = Unavailable desc = failed to pull and unpack image \"registry.example/team/flaky:1.0\""), "{seen:?}");
    assert!(
        seen[2].1.starts_with(
            "Back-off pulling image \"registry.example/team/flaky:1.0\": ErrImagePull: rpc error"
        ),
        "{seen:?}"
    );
    let status = pod.status.expect("a status");
    let container = &status.container_statuses.expect("container statuses")[0];
    assert!(
        container
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some()
    );
    assert!(
        container
            .image_id
            .starts_with("registry.example/team/flaky@sha256:"),
        "{}",
        container.image_id
    );

    // The kubelet's events tell the same story, in order.
    let events = kubectl_json(
        &plane,
        &[
            "-n",
            "pulls",
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=flaky",
        ],
    )
    .await;
    let events: Vec<String> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["source"]["component"] == "kubelet")
        .map(|e| {
            format!(
                "{} {}",
                e["reason"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    let starts: Vec<&str> = events
        .iter()
        .map(|e| e.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(
        starts,
        [
            "Pulling", "Failed", "Failed", "BackOff", "Failed", "Pulling", "Failed", "Failed",
            "BackOff", "Failed", "Pulling", "Pulled", "Created", "Started",
        ],
        "{events:#?}"
    );
    assert!(
        events.contains(&"Failed Error: ImagePullBackOff".to_owned()),
        "{events:#?}"
    );
    // The scheduler's event is there too.
    let scheduled = kubectl_json(
        &plane,
        &[
            "-n",
            "pulls",
            "get",
            "events",
            "--field-selector",
            "reason=Scheduled",
        ],
    )
    .await;
    let message = scheduled["items"][0]["message"].as_str().unwrap_or("");
    assert_eq!(
        message,
        format!(
            "Successfully assigned pulls/flaky to {}",
            plane.kubelet().node
        )
    );
}

/// The stage key Gantry annotates its Jobs and their pods with.
fn stage_key(meta: &kube::api::ObjectMeta) -> &str {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get("gantry.dev/stage-key"))
        .map_or("", String::as_str)
}

/// What the test does to the cluster while the run goes on, as an operator or a controller
/// would: shortens the `deadline` stage's Job deadline (activeDeadlineSeconds is mutable, and
/// the real Job controller enforces it), deletes the `deleted` stage's pod once it runs, and
/// creates the Secret the `late-secret` stage needs once its container waits for it.
async fn meddle(client: kube::Client) {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
    let jobs: Api<Job> = Api::namespaced(client.clone(), "ci");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ci");
    let secrets: Api<Secret> = Api::namespaced(client, "ci");
    let (mut patched, mut deleted, mut created) = (false, false, false);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !(patched && deleted && created) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "meddling: Job patched {patched}, pod deleted {deleted}, Secret created {created}"
        );
        for job in jobs
            .list(&ListParams::default())
            .await
            .expect("list Jobs")
            .items
        {
            if stage_key(&job.metadata) == "deadline" && !patched {
                let patch = json!({"spec": {"activeDeadlineSeconds": 2}});
                let name = job.metadata.name.as_deref().unwrap_or("");
                jobs.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .expect("patch the Job's deadline");
                patched = true;
            }
        }
        for pod in pods
            .list(&ListParams::default())
            .await
            .expect("list pods")
            .items
        {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let status = pod.status.clone().unwrap_or_default();
            let waiting_for_config = status.container_statuses.iter().flatten().any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("CreateContainerConfigError")
            });
            match stage_key(&pod.metadata) {
                "deleted" if !deleted && status.phase.as_deref() == Some("Running") => {
                    pods.delete(&name, &DeleteParams::default())
                        .await
                        .expect("delete the pod");
                    deleted = true;
                }
                "late-secret" if !created && waiting_for_config => {
                    let secret: Secret = serde_json::from_value(json!({
                        "metadata": {"name": "late"}, "stringData": {"token": "s3cr3t"},
                    }))
                    .expect("a Secret");
                    secrets
                        .create(&PostParams::default(), &secret)
                        .await
                        .expect("create the Secret");
                    created = true;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_faults_and_the_real_controllers_reach_gantry_as_stage_outcomes() {
    let plane = ControlPlane::start().await;
    let kubelet = plane.kubelet();
    let after = Duration::from_millis(500);
    let oom = Fault::Oom {
        container: "stage".into(),
        after,
    };
    kubelet.inject(Target::StageKey("oom".into()), oom);
    kubelet.inject(Target::StageKey("evicted".into()), Fault::Evicted { after });
    // Longer than the runners' silence is allowed to last: silence counts from the first
    // call, so a pod slow to start is waiting, not lost.
    let pending = Fault::PendingFor(Duration::from_secs(8));
    kubelet.inject(Target::StageKey("slow".into()), pending);
    kubelet.inject(Target::StageKey("flaky".into()), Fault::PullFails(1));
    let kubeconfig = plane.kubeconfig();
    plane.create_namespace("ci", None).await;
    let engine = gantry_tests::TestEngine::start_with(|config| {
        plane.configure(config, &kubeconfig, "ci");
        if let Some(k) = config.kubernetes.as_mut() {
            k.unschedulable_after = Duration::ZERO;
        }
        config.heartbeat_secs = 1;
        config.lost_after_secs = 4;
    })
    .await;
    let stage = |name: &str, steps: &str| {
        format!(
            "  - name: {name}\n    needs: []\n    image: alpine:3.20\n    resources:\n      limits:\n        memory: 64Mi\n    steps:\n      - {steps}\n"
        )
    };
    let mut yaml = "name: node-faults\nstages:\n".to_owned();
    for (name, steps) in [
        ("oom", "sleep 30"),
        ("evicted", "sleep 30"),
        ("slow", "echo slow but fine"),
        ("flaky", "echo pulled at last"),
        ("deadline", "sleep 30"),
        ("deleted", "sleep 30"),
    ] {
        yaml.push_str(&stage(name, steps));
    }
    yaml.push_str("  - name: nodes\n    needs: []\n    kubernetes:\n      node_selector:\n        disktype: ssd\n    steps:\n      - sleep 30\n");
    yaml.push_str("  - name: late-secret\n    needs: []\n    kubernetes:\n      secrets:\n        TOKEN: late/token\n    steps:\n      - echo \"token of ${#TOKEN} characters\"\n");
    let name = engine.apply(&yaml).await;
    let meddling = tokio::spawn(meddle(plane.client()));
    let run = engine.trigger(&name, &[]).await;
    let (_, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    meddling.await.expect("meddling ends");
    let outcome = |key: &str| {
        let s = stage_of(&stages, key);
        (s.status, s.error.clone().unwrap_or_default())
    };
    let (status, e) = outcome("oom");
    assert_eq!(status, StageStatus::Failed, "{e}");
    assert!(
        e.contains("container `stage` was OOM-killed") && e.contains("64Mi"),
        "{e}"
    );
    let (status, e) = outcome("evicted");
    assert_eq!(status, StageStatus::Failed, "{e}");
    assert!(
        e.contains("was evicted: The node was low on resource: memory"),
        "{e}"
    );
    for key in ["slow", "flaky", "late-secret"] {
        let (status, e) = outcome(key);
        assert_eq!(status, StageStatus::Succeeded, "{key}: {e}");
    }
    let lines = engine.log_lines(run.run_id, "slow").await;
    assert!(
        lines.iter().any(|l| l.contains("starting: container `")),
        "the wait is in the log: {lines:?}"
    );
    let lines = engine.log_lines(run.run_id, "late-secret").await;
    assert!(
        lines.iter().any(|l| l.contains("token of 6 characters")),
        "{lines:?}"
    );
    // The real scheduler finds no node with the label, and says so.
    let (status, e) = outcome("nodes");
    assert_eq!(status, StageStatus::Failed, "{e}");
    assert!(
        e.contains("cannot be scheduled: 0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector"),
        "{e}"
    );
    // The Job controller enforced the deadline an operator shortened.
    let (status, e) = outcome("deadline");
    assert_eq!(status, StageStatus::TimedOut, "{e}");
    assert!(
        e.contains("ran past its deadline of 2s and was stopped by Kubernetes"),
        "{e}"
    );
    let (status, e) = outcome("deleted");
    assert_eq!(status, StageStatus::Failed, "{e}");
    assert!(
        e.starts_with("the stage's pod gantry-")
            && e.ends_with("was deleted before the stage ended"),
        "{e}"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_bound_to_a_role_sees_only_its_namespace() {
    let plane = ControlPlane::start().await;
    plane.create_namespace("team-a", Some("restricted")).await;
    plane.create_namespace("team-b", None).await;
    plane.create_service_account("team-a", "gantry").await;
    let who = Identity::ServiceAccount {
        namespace: "team-a",
        name: "gantry",
    };
    plane
        .grant(
            "team-a",
            "gantry-jobs",
            &who,
            json!([{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "delete"]},
                   {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]),
        )
        .await;
    let kubeconfig = plane.kubeconfig_for(&who, Some("team-a")).await;
    let as_sa = |args: &'static [&'static str]| {
        let kubeconfig = kubeconfig.clone();
        let plane = &plane;
        async move { plane.kubectl_with(&kubeconfig, args, None).await }
    };
    let whoami = as_sa(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ])
    .await;
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        "system:serviceaccount:team-a:gantry"
    );
    assert!(as_sa(&["get", "jobs"]).await.status.success());
    let cluster_wide = as_sa(&["get", "pods", "--all-namespaces"]).await;
    assert!(!cluster_wide.status.success());
    assert!(
        String::from_utf8_lossy(&cluster_wide.stderr).contains(
            "User \"system:serviceaccount:team-a:gantry\" cannot list resource \"pods\" in API group \"\" at the cluster scope"
        ),
        "{}",
        String::from_utf8_lossy(&cluster_wide.stderr)
    );
    let elsewhere = as_sa(&["-n", "team-b", "get", "jobs"]).await;
    assert!(!elsewhere.status.success());
    // A user by client certificate, with no binding at all.
    let alice = plane
        .kubeconfig_for(
            &Identity::User {
                name: "alice",
                groups: &["team-a-devs"],
            },
            None,
        )
        .await;
    let out = plane
        .kubectl_with(
            &alice,
            &["auth", "can-i", "list", "pods", "-n", "team-a"],
            None,
        )
        .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    // PodSecurity `restricted` refuses a pod that does not comply.
    let refused = plane
        .kubectl(&[
            "-n",
            "team-a",
            "run",
            "root",
            "--image=busybox:1.36",
            "--restart=Never",
            "--",
            "true",
        ])
        .await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("violates PodSecurity \"restricted:latest\""),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_deletes_the_job_and_the_garbage_collector_its_pod() {
    let plane = ControlPlane::start().await;
    let engine = plane.engine("ci").await;
    let name = engine
        .apply("name: real-cancel\nstages:\n  - name: wait\n    steps:\n      - sleep 300.5926\n")
        .await;
    let run = engine.trigger(&name, &[]).await;
    engine
        .wait_for_stage(run.run_id, "wait", LIMIT, |s| {
            s.status == StageStatus::Running
        })
        .await;
    gantry_tests::proc::wait_until_found("the step's sleep", LIMIT, || {
        gantry_tests::proc::live_with_arg("300.5926")
    })
    .await;
    gantry::run::cancel(engine.engine(), run.run_id, None, None)
        .await
        .expect("cancel");
    let (_, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    assert_eq!(stage_of(&stages, "wait").status, StageStatus::Cancelled);
    // The Job goes at once; its pod is deleted by the garbage collector (background
    // propagation), gracefully: the runner gets SIGTERM and stops its step.
    eventually("the Job and its pod to go", || async {
        let jobs = kubectl_json(&plane, &["-n", "ci", "get", "jobs"]).await;
        let pods = kubectl_json(&plane, &["-n", "ci", "get", "pods"]).await;
        let left = jobs["items"].as_array().map_or(0, Vec::len)
            + pods["items"].as_array().map_or(0, Vec::len);
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{jobs}\n{pods}"))
        }
    })
    .await;
    gantry_tests::proc::wait_until_gone(LIMIT, || gantry_tests::proc::live_with_arg("300.5926"))
        .await
        .expect("the step is stopped");
    engine.stop().await;
}

/// Deployment demo/web, two replicas of `web:1` with a 3 s progress deadline (and
/// `change_cause` as its first revision's cause), once both replicas are available.
async fn web_deployment(plane: &ControlPlane, change_cause: Option<&str>) {
    web_deployment_with(plane, change_cause, 3).await;
}

/// [`web_deployment`] with a progress deadline of `progress_deadline` seconds.
async fn web_deployment_with(
    plane: &ControlPlane,
    change_cause: Option<&str>,
    progress_deadline: u32,
) {
    let mut metadata = json!({"name": "web", "namespace": "demo"});
    if let Some(cause) = change_cause {
        metadata["annotations"] = json!({"kubernetes.io/change-cause": cause});
    }
    plane
        .apply(
            &json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": metadata,
                "spec": {
                    "replicas": 2,
                    "progressDeadlineSeconds": progress_deadline,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "web:1"}]},
                    },
                },
            })
            .to_string(),
        )
        .await;
    eventually("the first revision to be available", || async {
        let d = kubectl_json(plane, &["-n", "demo", "get", "deployment", "web"]).await;
        if d["status"]["availableReplicas"] == 2 {
            Ok(())
        } else {
            Err(d["status"].to_string())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_stage_rolls_out_with_the_real_deployment_controller() {
    let plane = ControlPlane::start().await;
    plane.kubelet().set_missing("web:broken");
    plane.create_namespace("demo", None).await;
    web_deployment(&plane, Some("first install")).await;
    let engine = plane.engine("demo").await;
    let name = engine
        .apply(
            "name: real-deploy
params:
  image:
    default: web:2
stages:
  - name: rollout
    deploy:
      namespace: demo
      deployment: web
      image: ${{ params.image }}
      timeout: 60s
      change_cause: gantry run ${{ run.number }}
",
        )
        .await;
    let run = engine.trigger(&name, &[("image", "web:2")]).await;
    let (row, _) = engine.wait_for_run(run.run_id, LIMIT).await;
    let log = engine.log_lines(run.run_id, "rollout").await.join("\n");
    assert_succeeded(&row);
    assert!(
        log.contains("deployment \"web\" successfully rolled out"),
        "{log}"
    );
    let d = kubectl_json(&plane, &["-n", "demo", "get", "deployment", "web"]).await;
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let history = plane
        .kubectl_ok(&["-n", "demo", "rollout", "history", "deployment/web"])
        .await;
    assert!(history.contains("gantry run 1"), "{history}");

    // An image that cannot be pulled: the real controller marks the rollout as past its
    // progress deadline, and Gantry rolls back.
    let run = engine.trigger(&name, &[("image", "web:broken")]).await;
    let (_, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    let rollout = stage_of(&stages, "rollout");
    let error = rollout.error.clone().unwrap_or_default();
    assert_eq!(rollout.status, StageStatus::Failed, "{error}");
    assert!(error.contains("exceeded its progress deadline"), "{error}");
    assert!(error.contains("rolled back to revision 2"), "{error}");
    let d = kubectl_json(&plane, &["-n", "demo", "get", "deployment", "web"]).await;
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2"
    );
    assert_history_is_kubectls(&plane).await;

    // Undo to the first revision as `kubectl rollout undo --to-revision=1` would: its
    // template and change cause come back as the newest revision.
    let undone = gantry::deploy::history::undo(&plane.client(), "demo", "web", 1)
        .await
        .expect("undo");
    assert!(undone.changed, "{undone:?}");
    let revisions = assert_history_is_kubectls(&plane).await;
    let newest = revisions.last().expect("a revision");
    assert!(newest.current, "{revisions:#?}");
    assert_eq!(newest.images, ["web=web:1"], "{revisions:#?}");
    assert_eq!(newest.change_cause.as_deref(), Some("first install"));
    assert!(revisions.iter().all(|r| r.revision != 1), "{revisions:#?}");
    engine.stop().await;
}

/// Gantry's revision history of demo/web, checked against `kubectl rollout history`:
/// the same revisions with the same change causes, in the same order.
async fn assert_history_is_kubectls(
    plane: &ControlPlane,
) -> Vec<gantry::deploy::history::Revision> {
    let ours = gantry::deploy::history::history(&plane.client(), "demo", "web")
        .await
        .expect("history");
    let table = plane
        .kubectl_ok(&["-n", "demo", "rollout", "history", "deployment/web"])
        .await;
    // deployment.apps/web\nREVISION  CHANGE-CAUSE\n1         first install\n...
    let kubectls: Vec<(i64, Option<String>)> = table
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (revision, cause) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            let cause = cause.trim();
            (
                revision
                    .parse()
                    .unwrap_or_else(|_| panic!("a revision: {table}")),
                (cause != "<none>").then(|| cause.to_owned()),
            )
        })
        .collect();
    let mine: Vec<(i64, Option<String>)> = ours
        .iter()
        .map(|r| (r.revision, r.change_cause.clone()))
        .collect();
    assert_eq!(mine, kubectls, "{table}");
    ours
}

/// deploy/namespaced/rbac.yaml as shipped: Roles only. A cluster-wide engine with it is
/// stopped at start-up with the way out; a namespaced one runs stages, watches without a
/// single 403, and deletes the orphaned Jobs of its namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespaced_engine_needs_only_the_shipped_roles_and_cleans_up_its_orphans() {
    use gantry::executor::kubernetes::{KubeExecutor, KubeSettings, job::JobSettings};
    use k8s_openapi::api::batch::v1::Job;
    let plane = ControlPlane::start().await;
    plane.create_namespace("gantry", None).await;
    plane.create_namespace("gantry-stages", None).await;
    let manifest =
        std::fs::read_to_string(gantry_tests::workspace().join("deploy/namespaced/rbac.yaml"))
            .expect("deploy/namespaced/rbac.yaml");
    plane.apply(&manifest).await;
    let who = Identity::ServiceAccount {
        namespace: "gantry",
        name: "gantry",
    };
    let kubeconfig = plane.kubeconfig_for(&who, Some("gantry-stages")).await;

    // Cluster-wide with namespaced RBAC: refused at start-up, saying what to do.
    let settings = |namespaces: Vec<String>| KubeSettings {
        kubeconfig: Some(kubeconfig.clone()),
        namespace: Some("gantry-stages".into()),
        jobs: JobSettings {
            runner_image: gantry_tests::kube::RUNNER_IMAGE.into(),
            ..JobSettings::default()
        },
        namespaces,
        ..KubeSettings::default()
    };
    let error = match KubeExecutor::connect(settings(Vec::new())).await {
        Ok(_) => panic!("a cluster-wide engine started with namespaced RBAC"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("may not list Jobs in all namespaces")
            && error.contains("--kube-namespaces"),
        "{error}"
    );

    // An orphan in the namespace: a Job of a stage run the engine's database never had.
    let orphan: Job = serde_json::from_value(json!({
        "metadata": {"name": "gantry-987654321-1", "labels": {
            "app.kubernetes.io/managed-by": "gantry", "gantry.dev/stage": "987654321",
            "gantry.dev/attempt": "1", "gantry.dev/run": "987654320"}},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "stage", "image": "alpine:3.20", "command": ["sleep", "300.1618"]}]}}}
    }))
    .expect("a Job");
    let jobs: Api<Job> = Api::namespaced(plane.client(), "gantry-stages");
    jobs.create(&PostParams::default(), &orphan)
        .await
        .expect("create the orphan");

    let engine = gantry_tests::TestEngine::start_with(|config| {
        plane.configure(config, &kubeconfig, "gantry-stages");
        if let Some(k) = config.kubernetes.as_mut() {
            k.namespaces = vec!["gantry-stages".into()];
        }
    })
    .await;
    let name = engine
        .apply("name: ns\nstages:\n  - name: build\n    steps:\n      - echo namespaced\n")
        .await;
    let run = engine.trigger(&name, &[]).await;
    let (_, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    assert_eq!(
        stage_of(&stages, "build").status,
        StageStatus::Succeeded,
        "{stages:?}"
    );
    let lines = engine.log_lines(run.run_id, "build").await;
    assert!(lines.iter().any(|l| l.contains("namespaced")), "{lines:?}");
    eventually("the orphaned Job to be deleted", || {
        let jobs = jobs.clone();
        async move {
            match jobs.get_opt("gantry-987654321-1").await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("still there".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    engine.stop().await;
    // Every call the namespaced engine made was allowed (the refused start above made two).
    let refused: Vec<String> = plane
        .audit()
        .iter()
        .filter(|e| e["user"]["username"] == "system:serviceaccount:gantry:gantry")
        .filter(|e| e["responseStatus"]["code"] == 403)
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(
        refused[0].starts_with("\"list\" \"/apis/batch/v1/jobs?"),
        "{refused:#?}"
    );
}

/// Gantry's Jobs pass Pod Security `restricted` as they are; a stage whose security context
/// breaks it fails at once with admission's reason, not as a runner that never called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_pass_pod_security_restricted_and_a_root_stage_is_refused_with_the_reason() {
    let plane = ControlPlane::start().await;
    plane.create_namespace("locked", Some("restricted")).await;
    let engine = plane.engine("locked").await;
    let name = engine
        .apply(
            "name: ps\nstages:\n  - name: build\n    steps:\n      - id -u\n  - name: root\n    needs: []\n    kubernetes:\n      security_context:\n        run_as_user: 0\n        run_as_non_root: false\n    steps:\n      - id -u\n",
        )
        .await;
    let run = engine.trigger(&name, &[]).await;
    let (_, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    let build = stage_of(&stages, "build");
    assert_eq!(build.status, StageStatus::Succeeded, "{:?}", build.error);
    let root = stage_of(&stages, "root");
    let error = root.error.clone().unwrap_or_default();
    assert_eq!(root.status, StageStatus::Failed, "{error}");
    assert!(
        error.starts_with("Kubernetes refused to create the stage's pod:")
            && error.contains("violates PodSecurity \"restricted:latest\"")
            && error.contains("runAsNonRoot != true"),
        "{error}"
    );
    assert!(!error.contains("heartbeat"), "{error}");
    engine.stop().await;
}

/// `pipelines/deploy.yaml` end to end on the real control plane: its steps and B2I stages run
/// as Jobs of the real Job controller (the runner in each pod pushes the image to a real
/// registry), the rollout waits for its approval, and when the new pods cannot pull their
/// image the real Deployment controller reports `ProgressDeadlineExceeded` and Gantry rolls
/// the Deployment back to the revision it ran before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_deploy_pipeline_builds_waits_for_approval_and_rolls_back_a_stuck_rollout() {
    use gantry_tests::image_tools::Buildah;
    use gantry_tests::registry::Registry;
    let registry = Registry::start().await;
    Buildah::new().push_busybox_base(&registry, "base/busybox:1");
    let plane = ControlPlane::start().await;
    plane.create_namespace("demo", None).await;
    web_deployment(&plane, None).await;
    // From now on the node cannot pull any image for the web pods.
    plane.kubelet().inject(
        Target::Label("app".into(), "web".into()),
        Fault::PullFails(u32::MAX),
    );
    plane.create_namespace("ci", None).await;
    let kubeconfig = plane.kubeconfig();
    let host = registry.host.clone();
    let engine = gantry_tests::TestEngine::start_with(|config| {
        plane.configure(config, &kubeconfig, "ci");
        config.insecure_registries = vec![host];
    })
    .await;
    let yaml = std::fs::read_to_string(gantry_tests::workspace().join("pipelines/deploy.yaml"))
        .expect("the example");
    let name = engine.apply(&yaml).await;
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
    assert_eq!(
        waiting.status,
        StageStatus::WaitingApproval,
        "{:?}",
        waiting.error
    );
    let jobs = kubectl_json(&plane, &["-n", "ci", "get", "jobs"]).await;
    let mut keys: Vec<&str> = jobs["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|j| j["metadata"]["annotations"]["gantry.dev/stage-key"].as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["build", "package", "test"], "{jobs:#}");
    engine
        .client()
        .decide(run.run_id.0, "rollout", true)
        .await
        .expect("approve");

    let (_, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    for key in ["test", "build", "package"] {
        let stage = stage_of(&stages, key);
        assert_eq!(
            stage.status,
            StageStatus::Succeeded,
            "{key}: {:?}",
            stage.error
        );
    }
    let pinned = stage_of(&stages, "package")
        .image
        .clone()
        .expect("the pushed image");
    assert!(
        pinned.starts_with(&format!("{}/demo/web@sha256:", registry.host)),
        "{pinned}"
    );
    let rollout = stage_of(&stages, "rollout");
    let error = rollout.error.clone().unwrap_or_default();
    assert_eq!(rollout.status, StageStatus::Failed, "{error}");
    assert!(error.contains("exceeded its progress deadline"), "{error}");
    assert!(error.contains("rolled back to revision 1"), "{error}");
    let d = kubectl_json(&plane, &["-n", "demo", "get", "deployment", "web"]).await;
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1"
    );
    // kubectl sees the revision Gantry made (with its change cause) and the rollback.
    let history = plane
        .kubectl_ok(&["-n", "demo", "rollout", "history", "deployment/web"])
        .await;
    assert!(
        history.contains(&format!("gantry run {} (5f2c0e9)", run.number)),
        "{history}"
    );
    engine.stop().await;
}

/// The audit events of `user`'s requests for `resource` from the `from`-th event on, one per
/// request (a watch is logged when it starts and when it ends): `(verb, resourceVersion
/// asked for)`, in the order they started.
fn requests_for(
    plane: &ControlPlane,
    from: usize,
    user: &str,
    resource: &str,
) -> Vec<(String, Option<i64>)> {
    let mut seen = std::collections::HashSet::new();
    plane
        .audit()
        .into_iter()
        .skip(from)
        .filter(|e| e["user"]["username"] == user && e["objectRef"]["resource"] == resource)
        .filter(|e| seen.insert(e["auditID"].as_str().unwrap_or("").to_owned()))
        .map(|e| {
            let uri = e["requestURI"].as_str().unwrap_or("");
            let url = reqwest::Url::parse(&format!("https://api{uri}"))
                .unwrap_or_else(|err| panic!("{uri}: {err}"));
            let version = url
                .query_pairs()
                .find(|(k, _)| k == "resourceVersion")
                .and_then(|(_, v)| v.parse().ok());
            (e["verb"].as_str().unwrap_or("").to_owned(), version)
        })
        .collect()
}

/// The last open item of issue 17: Gantry's watches outlive a resourceVersion etcd no longer
/// has. The API server serves every watch from etcd itself (`--watch-cache=false`). With a
/// rollout held half-way (the new pods wait at a gate) and a stage's pod running, it is
/// killed, etcd is compacted past every revision anything has seen (nothing can write while
/// it is down), and it is started again: each of Gantry's watches (the deploy stage's on the
/// Deployment, the executor's on Jobs and pods) resumes from a compacted resourceVersion, is
/// answered 410 Gone, and must list again. Then the gate opens: the rollout to revision 2
/// finishes and the deploy stage sees it, and a stage's pod deleted after the restart is
/// reported as deleted, which only the pod watch can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_list_again_after_410_gone_and_the_stages_carry_on() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{WatchEvent, WatchParams};
    let began = std::time::Instant::now();
    let mut plane = ControlPlane::start_with(Options {
        apiserver_args: vec!["--watch-cache=false".into()],
        ..Options::default()
    })
    .await;
    plane.create_namespace("demo", None).await;
    // A progress deadline longer than the test: the held rollout is slow, not stuck.
    web_deployment_with(&plane, None, 600).await;
    let gate = Gate::new();
    plane.kubelet().inject(
        Target::Label("app".into(), "web".into()),
        Fault::PendingUntil(gate.clone()),
    );
    plane.create_namespace("ci", None).await;
    // The engine as a user of its own: the audit log tells its requests from the test's.
    let user = "gantry-engine";
    let engine_user = Identity::User {
        name: user,
        groups: &["system:masters"],
    };
    let kubeconfig = plane.kubeconfig_for(&engine_user, None).await;
    let engine =
        gantry_tests::TestEngine::start_with(|c| plane.configure(c, &kubeconfig, "ci")).await;
    let name = engine
        .apply(
            "name: gone
stages:
  - name: rollout
    deploy:
      namespace: demo
      deployment: web
      image: web:2
      timeout: 120s
  - name: hold
    needs: []
    steps:
      - sleep 300.4142
",
        )
        .await;
    let run = engine.trigger(&name, &[]).await;

    // Both stages are under way: the rollout waits for its new pod, the step runs.
    let waiting = "Waiting for deployment \"web\" rollout to finish: 1 out of 2 new replicas have been updated...";
    eventually("the deploy stage to wait for the new pods", || async {
        let log = engine.log_lines(run.run_id, "rollout").await;
        if log.iter().any(|l| l.contains(waiting)) {
            Ok(())
        } else {
            Err(log.join("\n"))
        }
    })
    .await;
    engine
        .wait_for_stage(run.run_id, "hold", LIMIT, |s| {
            s.status == StageStatus::Running || s.status.is_terminal()
        })
        .await;
    gantry_tests::proc::wait_until_found("the hold stage's sleep", LIMIT, || {
        gantry_tests::proc::live_with_arg("300.4142")
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(plane.client(), "demo");
    let seen_version = deployments
        .get("web")
        .await
        .expect("the Deployment")
        .metadata
        .resource_version
        .expect("a resourceVersion");

    // Every watch breaks; while nothing can write, etcd forgets every revision seen so far.
    let audited = plane.audit().len();
    let old_revision = plane.etcd_revision().await;
    plane.kill_apiserver();
    let compacted = plane.compact_etcd().await;
    assert!(compacted > old_revision, "{compacted} > {old_revision}");
    let restart = plane.start_apiserver().await;
    let restarted = std::time::Instant::now();
    eprintln!("kube-apiserver started again in {restart:?}; etcd compacted to {compacted}");

    // What any client resuming from a version seen before gets: 410 Gone, at once.
    let params = WatchParams::default().fields("metadata.name=web");
    let mut probe = std::pin::pin!(
        deployments
            .watch(&params, &seen_version)
            .await
            .expect("a watch from the old version")
    );
    match probe.next().await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (410, "Expired"),
                "{status:?}"
            );
        }
        other => panic!("a watch from resourceVersion {seen_version} got {other:?}"),
    }

    // Each of Gantry's watches resumed from a version etcd no longer has, was told so, and
    // listed again: a list, then a watch from a version etcd still has (which only a list
    // can have given it).
    for resource in ["deployments", "jobs", "pods"] {
        let requests = eventually(&format!("Gantry to list {resource} again"), || async {
            let requests = requests_for(&plane, audited, user, resource);
            let listed_then_watched = |after: &[(String, Option<i64>)]| {
                after
                    .iter()
                    .position(|(verb, _)| verb == "list")
                    .is_some_and(|l| {
                        after[l..].iter().any(|(verb, version)| {
                            verb == "watch" && version.is_some_and(|v| v >= compacted)
                        })
                    })
            };
            let relisted = requests
                .iter()
                .position(|(verb, _)| verb == "watch")
                .is_some_and(|w| listed_then_watched(&requests[w..]));
            if relisted {
                Ok(requests)
            } else {
                Err(format!("{requests:?}"))
            }
        })
        .await;
        let (_, resumed) = requests
            .iter()
            .find(|(verb, _)| verb == "watch")
            .expect("a watch");
        let resumed = resumed.unwrap_or_else(|| panic!("a resumed watch: {requests:?}"));
        assert!(
            resumed < compacted,
            "{resource}: the first watch after the restart resumed from {resumed}, \
             not from a compacted version (< {compacted}): {requests:?}"
        );
    }
    let relisted = restarted.elapsed();
    // The API server's side of it: etcd refused the resumed watches.
    let apiserver_log = std::fs::read_to_string(plane.log_dir().join("kube-apiserver.log"))
        .expect("kube-apiserver.log");
    assert!(
        apiserver_log
            .contains("watch chan error: etcdserver: mvcc: required revision has been compacted"),
        "no watch refused for a compacted revision in kube-apiserver.log"
    );

    // The executor's pod watch goes on: a pod deleted now is seen as deleted.
    let pods = kubectl_json(&plane, &["-n", "ci", "get", "pods"]).await;
    let hold_pod = pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["metadata"]["annotations"]["gantry.dev/stage-key"] == "hold")
        .and_then(|p| p["metadata"]["name"].as_str())
        .unwrap_or_else(|| panic!("the hold stage's pod: {pods:#}"))
        .to_owned();
    plane
        .kubectl_ok(&["-n", "ci", "delete", "pod", &hold_pod, "--wait=false"])
        .await;
    // The deploy stage's watch goes on: the rollout finishes and it sees that.
    gate.open();
    let (_, stages) = engine.wait_for_run(run.run_id, LIMIT).await;
    let rollout = stage_of(&stages, "rollout");
    assert_eq!(
        rollout.status,
        StageStatus::Succeeded,
        "{:?}",
        rollout.error
    );
    let log = engine.log_lines(run.run_id, "rollout").await;
    let done = log
        .iter()
        .position(|l| l.contains("deployment \"web\" successfully rolled out"))
        .unwrap_or_else(|| panic!("{log:#?}"));
    assert!(log[..done].iter().any(|l| l.contains(waiting)), "{log:#?}");
    let d = kubectl_json(&plane, &["-n", "demo", "get", "deployment", "web"]).await;
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2"
    );
    assert_eq!(d["status"]["updatedReplicas"], 2, "{}", d["status"]);
    assert_eq!(d["status"]["availableReplicas"], 2, "{}", d["status"]);
    let hold = stage_of(&stages, "hold");
    let error = hold.error.clone().unwrap_or_default();
    assert_eq!(hold.status, StageStatus::Failed, "{error}");
    assert!(
        error.contains("was deleted before the stage ended"),
        "{error}"
    );
    eprintln!("the hold stage: {error}");
    eprintln!(
        "410 Gone: control plane up in {:?}, apiserver restart {restart:?}, all three watches \
         listed again {relisted:?} after it, test {:?}",
        plane.startup.total,
        began.elapsed()
    );
    engine.stop().await;
}
