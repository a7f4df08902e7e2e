//! What a Job and its pod say about a stage attempt, as one [`Observation`]. Most failures a
//! runner reports itself; these are the ones it cannot, because it never started or was
//! killed: an image that cannot be pulled, a pod that cannot be scheduled, the OOM killer, an
//! eviction, a deleted pod, the Job's deadline. Pure, so every case has a unit test.

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::job::{INSTALL_CONTAINER, STAGE_CONTAINER};
use crate::executor::Observation;

const PULL_FAILURES: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];
const START_FAILURES: [&str; 3] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

fn failed(reason: String) -> Observation {
    Observation::Failed {
        reason,
        timed_out: false,
    }
}

fn job_condition<'a>(job: &'a Job, kind: &str) -> Option<(&'a str, &'a str)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
        .map(|c| {
            (
                c.reason.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or(""),
            )
        })
}

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    status
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            status
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten(),
        )
}

fn memory_limit(pod: &Pod, container: &str) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container)?
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("memory")
        .map(|q| q.0.clone())
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("?")
}

/// Failures visible in the pod, whatever the Job says yet.
fn pod_failure(
    pod: &Pod,
    now: DateTime<Utc>,
    unschedulable_after: chrono::TimeDelta,
) -> Option<Observation> {
    let status = pod.status.as_ref();
    if status.and_then(|s| s.reason.as_deref()) == Some("Evicted") {
        let message = status.and_then(|s| s.message.as_deref()).unwrap_or("");
        return Some(failed(format!(
            "the stage's pod {} was evicted: {message}",
            pod_name(pod)
        )));
    }
    for cs in statuses(pod) {
        let state = cs.state.as_ref();
        if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.as_deref().unwrap_or("");
            let message = waiting.message.as_deref().unwrap_or("").trim();
            if PULL_FAILURES.contains(&reason) {
                let image = pod
                    .spec
                    .as_ref()
                    .and_then(|s| {
                        s.containers
                            .iter()
                            .chain(s.init_containers.iter().flatten())
                            .find(|c| c.name == cs.name)
                    })
                    .and_then(|c| c.image.clone())
                    .unwrap_or_else(|| cs.image.clone());
                return Some(failed(format!(
                    "cannot pull image `{image}` for container `{}` ({reason}){}",
                    cs.name,
                    if message.is_empty() {
                        String::new()
                    } else {
                        format!(": {message}")
                    }
                )));
            }
            if START_FAILURES.contains(&reason) {
                return Some(failed(format!(
                    "container `{}` cannot start ({reason}): {message}",
                    cs.name
                )));
            }
        }
        if let Some(term) = state.and_then(|s| s.terminated.as_ref()) {
            if term.reason.as_deref() == Some("OOMKilled") {
                let limit = memory_limit(pod, &cs.name)
                    .map(|l| format!(" (memory limit {l})"))
                    .unwrap_or_default();
                return Some(failed(format!(
                    "container `{}` was OOM-killed: it used more memory than it may{limit}",
                    cs.name
                )));
            }
            if cs.name == INSTALL_CONTAINER && term.exit_code != 0 {
                return Some(failed(format!(
                    "copying gantry-runner out of the runner image failed (exit code {}){}",
                    term.exit_code,
                    term.message
                        .as_deref()
                        .map(|m| format!(": {}", m.trim()))
                        .unwrap_or_default()
                )));
            }
        }
    }
    let unschedulable = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        });
    if let Some(condition) = unschedulable {
        // A cluster autoscaler may yet add a node: only give up after a while.
        let since = condition
            .last_transition_time
            .as_ref()
            .map(|t| t.0.as_second())
            .or_else(|| {
                pod.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second())
            })
            .unwrap_or(now.timestamp());
        if now.timestamp() - since >= unschedulable_after.num_seconds() {
            return Some(failed(format!(
                "the stage's pod cannot be scheduled: {}",
                condition.message.as_deref().unwrap_or("no reason given")
            )));
        }
    }
    None
}

/// How the stage container ended, if it did.
fn stage_exit(pod: &Pod) -> Option<Observation> {
    let cs = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == STAGE_CONTAINER)?;
    let term = cs.state.as_ref()?.terminated.as_ref()?;
    let detail = match (term.exit_code, term.signal) {
        (_, Some(signal)) => format!("killed by signal {signal}"),
        (code, None) if code > 128 => format!("exit code {code} (signal {})", code - 128),
        (code, None) => format!("exit code {code}"),
    };
    let detail = match term.reason.as_deref() {
        Some(reason) if !reason.is_empty() && reason != "Completed" && reason != "Error" => {
            format!("{detail}, {reason}")
        }
        _ => detail,
    };
    Some(Observation::Exited {
        code: Some(term.exit_code),
        detail,
    })
}

/// `pods`: the Job's pods (normally one). `unschedulable_after`: how long a pod may wait for
/// a node before the attempt fails.
pub fn classify(
    job: Option<&Job>,
    pods: &[&Pod],
    now: DateTime<Utc>,
    unschedulable_after: chrono::TimeDelta,
) -> Observation {
    let Some(job) = job else {
        return Observation::Gone;
    };
    // FailureTarget comes first: the Job controller sets it, then stops the pods, then sets
    // Failed; a runner stopped in between must already see why.
    let failure = job_condition(job, "Failed").or_else(|| job_condition(job, "FailureTarget"));
    if let Some((reason, message)) = failure {
        if reason == "DeadlineExceeded" {
            let deadline = job
                .spec
                .as_ref()
                .and_then(|s| s.active_deadline_seconds)
                .map(|s| format!(" of {s}s"))
                .unwrap_or_default();
            return Observation::Failed {
                reason: format!(
                    "the stage's Job ran past its deadline{deadline} and was stopped by Kubernetes"
                ),
                timed_out: true,
            };
        }
        for pod in pods {
            if let Some(observation) = pod_failure(pod, now, chrono::TimeDelta::MAX) {
                return observation;
            }
        }
        if let Some(exit) = pods.iter().find_map(|p| stage_exit(p)) {
            return exit;
        }
        if pods.is_empty() || pods.iter().all(|p| p.metadata.deletion_timestamp.is_some()) {
            return failed(format!(
                "the stage's pod was deleted before the stage ended (Job {reason}: {message})"
            ));
        }
        return failed(format!("the stage's Job failed ({reason}): {message}"));
    }
    for pod in pods {
        if let Some(observation) = pod_failure(pod, now, unschedulable_after) {
            return observation;
        }
    }
    if let Some(exit) = pods.iter().find_map(|p| stage_exit(p)) {
        return exit;
    }
    if job_condition(job, "Complete").is_some() {
        return Observation::Exited {
            code: Some(0),
            detail: "exit code 0".into(),
        };
    }
    if !pods.is_empty() && pods.iter().all(|p| p.metadata.deletion_timestamp.is_some()) {
        // Being deleted by someone else than Gantry (Gantry deletes the Job, not the pod).
        return failed(format!(
            "the stage's pod {} was deleted before the stage ended",
            pod_name(pods[0])
        ));
    }
    Observation::Running
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "gantry-1-1", "namespace": "ci"},
            "spec": {"activeDeadlineSeconds": 660, "template": {}},
            "status": status,
        }))
        .expect("job")
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "gantry-1-1-abcde", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {
                "initContainers": [{"name": "gantry-runner", "image": "runner:1"}],
                "containers": [{"name": "stage", "image": "reg.example/app:nope",
                                "resources": {"limits": {"memory": "64Mi"}}}]
            },
            "status": status,
        }))
        .expect("pod")
    }

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:10:00Z".parse().expect("time")
    }

    fn reason(o: Observation) -> String {
        match o {
            Observation::Failed { reason, .. } => reason,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    const GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

    #[test]
    fn a_missing_job_is_gone_and_a_fresh_one_runs() {
        assert_eq!(classify(None, &[], now(), GRACE), Observation::Gone);
        let j = job(json!({"active": 1}));
        assert_eq!(classify(Some(&j), &[], now(), GRACE), Observation::Running);
    }

    #[test]
    fn image_pull_failures_name_the_image() {
        let j = job(json!({"active": 1}));
        let p = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "stage", "image": "reg.example/app:nope", "imageID": "", "ready": false,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"reg.example/app:nope\""}}
        }]}));
        let r = reason(classify(Some(&j), &[&p], now(), GRACE));
        assert!(
            r.contains("cannot pull image `reg.example/app:nope`"),
            "{r}"
        );
        assert!(r.contains("ImagePullBackOff"), "{r}");
    }

    #[test]
    fn oom_kills_say_so_with_the_limit() {
        let j = job(
            json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}),
        );
        let p = pod(json!({"phase": "Failed", "containerStatuses": [{
            "name": "stage", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
        }]}));
        let r = reason(classify(Some(&j), &[&p], now(), GRACE));
        assert!(r.contains("OOM-killed") && r.contains("64Mi"), "{r}");
    }

    #[test]
    fn the_deadline_is_a_timeout() {
        let j = job(
            json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]}),
        );
        match classify(Some(&j), &[], now(), GRACE) {
            Observation::Failed { reason, timed_out } => {
                assert!(timed_out);
                assert!(reason.contains("deadline of 660s"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unschedulable_pods_fail_after_the_grace_with_the_schedulers_message() {
        let j = job(json!({"active": 1}));
        let message =
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.";
        let p = pod(json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastTransitionTime": "2026-01-01T00:09:30Z"
        }]}));
        assert_eq!(
            classify(Some(&j), &[&p], now(), GRACE),
            Observation::Running
        );
        let r = reason(classify(Some(&j), &[&p], now(), chrono::TimeDelta::zero()));
        assert!(r.contains(message), "{r}");
    }

    #[test]
    fn evictions_and_deleted_pods_are_told_apart() {
        let failed_job = job(
            json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}),
        );
        let evicted = pod(
            json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
        );
        let r = reason(classify(Some(&failed_job), &[&evicted], now(), GRACE));
        assert!(
            r.contains("evicted") && r.contains("low on resource"),
            "{r}"
        );
        let r = reason(classify(Some(&failed_job), &[], now(), GRACE));
        assert!(r.contains("pod was deleted"), "{r}");
    }

    #[test]
    fn a_finished_stage_container_reports_its_exit() {
        let j =
            job(json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}));
        let p = pod(json!({"phase": "Succeeded", "containerStatuses": [{
            "name": "stage", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}
        }]}));
        assert_eq!(
            classify(Some(&j), &[&p], now(), GRACE),
            Observation::Exited {
                code: Some(0),
                detail: "exit code 0".into()
            }
        );
    }
}
