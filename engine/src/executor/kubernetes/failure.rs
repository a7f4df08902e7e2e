//! What a Job and its pod say about a stage attempt, as one [`Observation`]. Most failures a
//! runner reports itself; these are the ones it cannot, because it never started or was
//! killed: an image that cannot be pulled, a pod that cannot be scheduled, the OOM killer, an
//! eviction, a deleted pod, the Job's deadline. Pure, so every case has a unit test.
//!
//! A pod that is not running yet is *waiting*, not failed, for as long as a real cluster may
//! take: a node may be added by an autoscaler, an image pull is retried by the kubelet with
//! backoff, a Secret a container needs may be created a moment later. Only past the allowances
//! ([`Allowances`]) does waiting become a failure, with the scheduler's or kubelet's message.

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::job::{INSTALL_CONTAINER, STAGE_CONTAINER};
use crate::executor::Observation;

/// Pull problems the kubelet retries (a registry that is slow, a tag pushed a moment later).
const PULL_RETRIED: [&str; 2] = ["ErrImagePull", "ImagePullBackOff"];
/// Pull problems no retry mends.
const PULL_FAILURES: [&str; 2] = ["InvalidImageName", "ErrImageNeverPull"];
/// The kubelet retries this too: a Secret or ConfigMap the container needs may appear.
const CONFIG_RETRIED: &str = "CreateContainerConfigError";
const START_FAILURES: [&str; 2] = ["CreateContainerError", "RunContainerError"];

/// How long a pod may wait before its attempt fails.
#[derive(Clone, Copy, Debug)]
pub struct Allowances {
    /// For a node (the scheduler finds none: an autoscaler may add one).
    pub unschedulable: chrono::TimeDelta,
    /// For its images and its containers' configuration (pulls and Secrets the kubelet
    /// retries).
    pub pull: chrono::TimeDelta,
}

impl Allowances {
    /// No waiting at all: what is wrong now fails now (a Job that has failed already).
    pub const NONE: Allowances = Allowances {
        unschedulable: chrono::TimeDelta::zero(),
        pull: chrono::TimeDelta::zero(),
    };
}

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

/// Since when the pod has been waiting: since it was scheduled when it was, else since it was
/// created.
fn waiting_since(pod: &Pod, now: DateTime<Utc>) -> i64 {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .or(pod.metadata.creation_timestamp.as_ref())
        .map_or(now.timestamp(), |t| t.0.as_second())
}

fn image_of(pod: &Pod, cs: &ContainerStatus) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|c| c.name == cs.name)
        })
        .and_then(|c| c.image.clone())
        .unwrap_or_else(|| cs.image.clone())
}

fn with_message(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// Failures visible in the pod, whatever the Job says yet, and what a pod that is not running
/// yet waits for.
fn pod_failure(pod: &Pod, now: DateTime<Utc>, allow: Allowances) -> Option<Observation> {
    let waited = now.timestamp() - waiting_since(pod, now);
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
            if PULL_FAILURES.contains(&reason)
                || (PULL_RETRIED.contains(&reason) && waited >= allow.pull.num_seconds())
            {
                let image = image_of(pod, cs);
                return Some(failed(format!(
                    "cannot pull image `{image}` for container `{}` ({reason}){}",
                    cs.name,
                    with_message(message)
                )));
            }
            if PULL_RETRIED.contains(&reason) {
                let image = image_of(pod, cs);
                return Some(Observation::Waiting {
                    why: format!(
                        "pulling image `{image}` for container `{}`: the kubelet retries ({reason}){}",
                        cs.name,
                        with_message(message)
                    ),
                });
            }
            if reason == CONFIG_RETRIED {
                if waited >= allow.pull.num_seconds() {
                    return Some(failed(format!(
                        "container `{}` cannot start ({reason}){}",
                        cs.name,
                        with_message(message)
                    )));
                }
                return Some(Observation::Waiting {
                    why: format!(
                        "container `{}` cannot start yet, the kubelet retries ({reason}){}",
                        cs.name,
                        with_message(message)
                    ),
                });
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
        let message = condition.message.as_deref().unwrap_or("no reason given");
        if now.timestamp() - since >= allow.unschedulable.num_seconds() {
            return Some(failed(format!(
                "the stage's pod cannot be scheduled: {message}"
            )));
        }
        return Some(Observation::Waiting {
            why: format!("waiting for a node: {message}"),
        });
    }
    None
}

/// What a pod that has not started its stage container yet is doing, when nothing is wrong.
fn pod_waiting(pod: &Pod) -> Option<Observation> {
    let status = pod.status.as_ref();
    if status.and_then(|s| s.phase.as_deref()) == Some("Running") {
        return None;
    }
    let scheduled = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "PodScheduled" && c.status == "True");
    let why = if !scheduled {
        "waiting for the scheduler to place the pod".to_owned()
    } else {
        match statuses(pod).find_map(|cs| {
            let waiting = cs.state.as_ref()?.waiting.as_ref()?;
            Some((cs.name.clone(), waiting.reason.clone().unwrap_or_default()))
        }) {
            Some((name, reason)) if !reason.is_empty() => {
                format!("starting: container `{name}` is {reason}")
            }
            _ => "starting: pulling images and creating containers".to_owned(),
        }
    };
    Some(Observation::Waiting { why })
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

/// `pods`: the Job's pods (normally one). `allow`: how long a pod may wait before its attempt
/// fails.
pub fn classify(
    job: Option<&Job>,
    pods: &[&Pod],
    now: DateTime<Utc>,
    allow: Allowances,
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
            if let Some(observation) = pod_failure(pod, now, Allowances::NONE)
                && !matches!(observation, Observation::Waiting { .. })
            {
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
        if let Some(observation) = pod_failure(pod, now, allow) {
            return observation;
        }
    }
    if let Some(exit) = pods.iter().find_map(|p| stage_exit(p)) {
        return exit;
    }
    if job_condition(job, "Complete").is_none()
        && let Some(waiting) = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .find_map(|p| pod_waiting(p))
    {
        return waiting;
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

    const GRACE: Allowances = Allowances {
        unschedulable: chrono::TimeDelta::seconds(60),
        pull: chrono::TimeDelta::seconds(120),
    };

    #[test]
    fn a_missing_job_is_gone_and_a_fresh_one_runs() {
        assert_eq!(classify(None, &[], now(), GRACE), Observation::Gone);
        let j = job(json!({"active": 1}));
        assert_eq!(classify(Some(&j), &[], now(), GRACE), Observation::Running);
    }

    #[test]
    fn image_pulls_are_waited_for_as_the_kubelet_retries_them_then_fail_naming_the_image() {
        let j = job(json!({"active": 1}));
        // Scheduled at 00:09:30, so waiting 30 s at `now()`.
        let p = pod(json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:09:30Z"}],
            "containerStatuses": [{
            "name": "stage", "image": "reg.example/app:nope", "imageID": "", "ready": false,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"reg.example/app:nope\""}}
        }]}));
        match classify(Some(&j), &[&p], now(), GRACE) {
            Observation::Waiting { why } => {
                assert!(
                    why.contains("pulling image `reg.example/app:nope`"),
                    "{why}"
                );
                assert!(why.contains("ImagePullBackOff"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let short = Allowances {
            pull: chrono::TimeDelta::seconds(20),
            ..GRACE
        };
        let r = reason(classify(Some(&j), &[&p], now(), short));
        assert!(
            r.contains("cannot pull image `reg.example/app:nope`"),
            "{r}"
        );
        assert!(r.contains("ImagePullBackOff"), "{r}");
        // A name no retry can mend fails at once.
        let bad = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "stage", "image": "UPPER:case", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "InvalidImageName", "message": "couldn't parse image name"}}
        }]}));
        assert!(reason(classify(Some(&j), &[&bad], now(), GRACE)).contains("InvalidImageName"));
    }

    #[test]
    fn a_missing_secret_is_waited_for_then_fails_with_the_kubelets_message() {
        let j = job(json!({"active": 1}));
        let p = pod(json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:09:30Z"}],
            "containerStatuses": [{
            "name": "stage", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "secret \"token\" not found"}}
        }]}));
        assert!(matches!(
            classify(Some(&j), &[&p], now(), GRACE),
            Observation::Waiting { .. }
        ));
        let r = reason(classify(Some(&j), &[&p], now(), Allowances::NONE));
        assert!(r.contains("secret \"token\" not found"), "{r}");
    }

    #[test]
    fn a_pod_not_placed_yet_is_waiting_not_silent() {
        let j = job(json!({"active": 1}));
        let p = pod(json!({"phase": "Pending"}));
        match classify(Some(&j), &[&p], now(), GRACE) {
            Observation::Waiting { why } => assert!(why.contains("scheduler"), "{why}"),
            other => panic!("{other:?}"),
        }
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
            Observation::Waiting {
                why: format!("waiting for a node: {message}")
            }
        );
        let r = reason(classify(Some(&j), &[&p], now(), Allowances::NONE));
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
