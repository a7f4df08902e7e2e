//! The stand-in's Job controller and kubelet. For each Job it creates the pod (labels, owner
//! reference, `batch.kubernetes.io/job-name`), schedules it on its one node (node selector,
//! taints), "pulls" images (the runner image maps to a directory; images on a 127.0.0.1
//! registry are looked up there for real; images marked missing fail), runs init containers,
//! native sidecars and the main container as local processes with the container's env (paths
//! under volume mounts and in the runner image mapped to temporary directories), keeps pod and
//! Job status as the real controllers write it, honours `activeDeadlineSeconds`, graceful
//! deletion and `ttlSecondsAfterFinished`, and injects the faults of [`super::Fault`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::store::{ApiErr, Kind, Store, now_rfc3339, suffix};
use super::{Cluster, Fault, Images, lock};

const NODE: &str = "stand-in-node";
/// How long a container runs before a timed fault (OOM, eviction, deletion) hits it.
const FAULT_AFTER: Duration = Duration::from_millis(700);

struct RunningPod {
    stop: watch::Sender<bool>,
    running: HashSet<String>,
    groups: Vec<i32>,
}

pub struct Kubelet {
    dir: PathBuf,
    images: Mutex<Images>,
    faults: Mutex<HashMap<String, Fault>>,
    pods: Mutex<HashMap<(String, String), RunningPod>>,
    http: reqwest::Client,
    counter: std::sync::atomic::AtomicU64,
}

enum PodEnd {
    Succeeded,
    Failed,
    Deleted,
}

impl Kubelet {
    pub fn new(dir: PathBuf, images: Images) -> Kubelet {
        Kubelet {
            dir,
            images: Mutex::new(images),
            faults: Mutex::default(),
            pods: Mutex::default(),
            http: reqwest::Client::new(),
            counter: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn inject(&self, stage_key: &str, fault: Fault) {
        lock(&self.faults).insert(stage_key.to_owned(), fault);
    }

    pub fn set_missing(&self, image: &str) {
        lock(&self.images).missing.insert(image.to_owned());
    }

    pub fn log_path(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.dir
            .join(namespace)
            .join(pod)
            .join(format!("{container}.log"))
    }

    pub fn container_running(&self, namespace: &str, pod: &str, container: &str) -> bool {
        lock(&self.pods)
            .get(&(namespace.to_owned(), pod.to_owned()))
            .is_some_and(|p| p.running.contains(container))
    }

    pub fn kill_all(&self) {
        for pod in lock(&self.pods).values() {
            for &group in &pod.groups {
                let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
            }
        }
    }

    /// Graceful deletion: a running pod gets its deletionTimestamp and is removed once its
    /// containers have stopped; anything else goes at once.
    pub fn delete_pod(&self, store: &Store, namespace: &str, name: &str) -> Result<Value, ApiErr> {
        let key = (namespace.to_owned(), name.to_owned());
        let stop = lock(&self.pods).get(&key).map(|p| p.stop.clone());
        match stop {
            Some(stop) => {
                let pod = store.update(Kind::Pod, namespace, name, |p| {
                    if p["metadata"]["deletionTimestamp"].is_null() {
                        p["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                        p["metadata"]["deletionGracePeriodSeconds"] =
                            p["spec"]["terminationGracePeriodSeconds"].clone();
                    }
                    Ok(())
                })?;
                let _ = stop.send(true);
                Ok(pod)
            }
            None => store.delete(Kind::Pod, namespace, name),
        }
    }

    /// Whether `image` can be pulled (for the Deployment controller's pods).
    pub async fn pull_check(&self, image: &str) -> Result<(), String> {
        self.pull(image).await
    }

    async fn pull(&self, image: &str) -> Result<(), String> {
        let not_found = || {
            format!(
                "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found"
            )
        };
        {
            let images = lock(&self.images);
            if images.missing.contains(image) {
                return Err(not_found());
            }
            if images.roots.contains_key(image) {
                return Ok(());
            }
        }
        // Images on a registry of this machine are looked up there, for real.
        let Some((host, rest)) = image.split_once('/') else {
            return Ok(());
        };
        if !host.starts_with("127.0.0.1:") && !host.starts_with("localhost:") {
            return Ok(());
        }
        let (repo, reference) = match rest.split_once('@') {
            Some((repo, digest)) => (repo, digest),
            None => match rest.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo, tag),
                _ => (rest, "latest"),
            },
        };
        let answer = self
            .http
            .head(format!("http://{host}/v2/{repo}/manifests/{reference}"))
            .header(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
                 application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json",
            )
            .send()
            .await;
        match answer {
            Ok(a) if a.status().is_success() => Ok(()),
            Ok(_) => Err(not_found()),
            Err(e) => Err(format!(
                "rpc error: code = Unknown desc = failed to pull image \"{image}\": {e}"
            )),
        }
    }

    fn image_root(&self, image: &str) -> Option<PathBuf> {
        lock(&self.images).roots.get(image).cloned()
    }
}

/// Follows Job events (`events`, subscribed before the API server takes requests, so none is
/// missed) and runs each new Job.
pub async fn run_jobs(
    cluster: Arc<Cluster>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<super::store::Event>,
) {
    while let Some(event) = events.recv().await {
        if event.kind == Kind::Job && event.type_ == "ADDED" {
            let name = event.object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            tokio::spawn(run_job(Arc::clone(&cluster), event.namespace.clone(), name));
        }
    }
}

fn set_job_status(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    change: impl FnOnce(&mut Value),
) -> bool {
    cluster
        .store
        .update(Kind::Job, namespace, name, |job| {
            if !job["status"].is_object() {
                job["status"] = json!({});
            }
            change(&mut job["status"]);
            Ok(())
        })
        .is_ok()
}

fn condition(kind: &str, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": "True", "reason": reason, "message": message,
           "lastProbeTime": now_rfc3339(), "lastTransitionTime": now_rfc3339()})
}

async fn run_job(cluster: Arc<Cluster>, namespace: String, name: String) {
    let Ok(job) = cluster.store.get(Kind::Job, &namespace, &name) else {
        return;
    };
    let kubelet = Arc::clone(&cluster.kubelet);
    let stage_key = job["metadata"]["annotations"]["gantry.dev/stage-key"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let fault = lock(&kubelet.faults).get(&stage_key).cloned();
    let template = &job["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    let uid = job["metadata"]["uid"].clone();
    labels["batch.kubernetes.io/job-name"] = json!(name);
    labels["job-name"] = json!(name);
    labels["batch.kubernetes.io/controller-uid"] = uid.clone();
    labels["controller-uid"] = uid.clone();
    let n = kubelet
        .counter
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    let pod_name = format!("{name}-{}", suffix(n));
    let pod = json!({
        "metadata": {
            "name": pod_name, "labels": labels,
            "annotations": template["metadata"]["annotations"],
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                                  "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": template["spec"],
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    });
    if cluster.store.create(Kind::Pod, &namespace, pod).is_err() {
        return;
    }
    if !set_job_status(&cluster, &namespace, &name, |s| {
        s["startTime"] = json!(now_rfc3339());
        s["active"] = json!(1);
        s["ready"] = json!(0);
    }) {
        return;
    }
    let deadline = match (&fault, job["spec"]["activeDeadlineSeconds"].as_u64()) {
        (Some(Fault::Deadline), _) => Some(FAULT_AFTER),
        (_, Some(secs)) => Some(Duration::from_secs(secs)),
        _ => None,
    };
    let mut pod_task = tokio::spawn(run_pod(
        Arc::clone(&cluster),
        namespace.clone(),
        pod_name.clone(),
        fault,
    ));
    let sleeper = async {
        match deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        end = &mut pod_task => end.ok(),
        _ = sleeper => None,
    };
    let (failed, reason, message) = match ended {
        Some(PodEnd::Succeeded) => (false, "", ""),
        Some(PodEnd::Failed | PodEnd::Deleted) => (
            true,
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ),
        None => {
            // The deadline: the Job controller marks the Job's failure target, deletes the
            // active pod, and fails the Job once the pod is gone.
            let (reason, message) = (
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            );
            set_job_status(&cluster, &namespace, &name, |s| {
                s["conditions"] = json!([condition("FailureTarget", reason, message)]);
            });
            let _ = kubelet.delete_pod(&cluster.store, &namespace, &pod_name);
            let _ = pod_task.await;
            (
                true,
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            )
        }
    };
    let still_there = set_job_status(&cluster, &namespace, &name, |s| {
        s.as_object_mut().map(|o| o.remove("active"));
        s["ready"] = json!(0);
        if failed {
            s["failed"] = json!(1);
            s["conditions"] = json!([
                condition("FailureTarget", reason, message),
                condition("Failed", reason, message)
            ]);
        } else {
            s["succeeded"] = json!(1);
            s["completionTime"] = json!(now_rfc3339());
            s["conditions"] = json!([
                condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods"
                ),
                condition(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods"
                )
            ]);
        }
    });
    if !still_there {
        return;
    }
    if let Some(ttl) = job["spec"]["ttlSecondsAfterFinished"].as_u64() {
        tokio::time::sleep(Duration::from_secs(ttl)).await;
        let _ = cluster.delete(Kind::Job, &namespace, &name, Some("Background"));
    }
}

fn set_pod(cluster: &Cluster, namespace: &str, name: &str, change: impl FnOnce(&mut Value)) {
    let _ = cluster.store.update(Kind::Pod, namespace, name, |pod| {
        if !pod["status"].is_object() {
            pod["status"] = json!({});
        }
        change(pod);
        Ok(())
    });
}

fn container_status(container: &Value, state: Value) -> Value {
    let running = state.get("running").is_some();
    json!({
        "name": container["name"], "image": container["image"], "imageID": "",
        "ready": running, "started": running, "restartCount": 0, "state": state,
    })
}

/// Sets one container's status in `field` (`initContainerStatuses` or `containerStatuses`).
fn put_status(pod: &mut Value, field: &str, status: Value) {
    if !pod["status"][field].is_array() {
        pod["status"][field] = json!([]);
    }
    if let Some(list) = pod["status"][field].as_array_mut() {
        match list.iter_mut().find(|s| s["name"] == status["name"]) {
            Some(existing) => *existing = status,
            None => list.push(status),
        }
    }
}

struct Prepared {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

/// Maps container paths to this machine: volume mounts first, then the image's root.
fn map_path(path: &str, mounts: &[(String, PathBuf)], root: Option<&Path>) -> String {
    if !path.starts_with('/') {
        return path.to_owned();
    }
    let best = mounts
        .iter()
        .filter(|(m, _)| path == m || path.starts_with(&format!("{}/", m.trim_end_matches('/'))))
        .max_by_key(|(m, _)| m.len());
    if let Some((mount, host)) = best {
        let rest = path[mount.len()..].trim_start_matches('/');
        return host.join(rest).display().to_string();
    }
    if let Some(root) = root {
        let candidate = root.join(path.trim_start_matches('/'));
        if candidate.exists() {
            return candidate.display().to_string();
        }
    }
    path.to_owned()
}

impl Kubelet {
    fn prepare(
        &self,
        store: &Store,
        namespace: &str,
        pod: &str,
        container: &Value,
        volumes: &HashMap<String, PathBuf>,
    ) -> Result<Option<Prepared>, (String, String)> {
        let image = container["image"].as_str().unwrap_or("");
        let root = self.image_root(image);
        let mounts: Vec<(String, PathBuf)> = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let host = volumes.get(m["name"].as_str()?)?;
                Some((m["mountPath"].as_str()?.to_owned(), host.clone()))
            })
            .collect();
        let mut env = vec![
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
            ("HOSTNAME".to_owned(), pod.to_owned()),
        ];
        for var in container["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap_or("").to_owned();
            let value = if let Some(v) = var["value"].as_str() {
                map_path(v, &mounts, None)
            } else if let Some(r) = var["valueFrom"]["secretKeyRef"].as_object() {
                let secret_name = r["name"].as_str().unwrap_or("");
                let key = r["key"].as_str().unwrap_or("");
                let secret = store
                    .get(Kind::Secret, namespace, secret_name)
                    .map_err(|_| {
                        (
                            "CreateContainerConfigError".to_owned(),
                            format!("secret \"{secret_name}\" not found"),
                        )
                    })?;
                let encoded = secret["data"][key].as_str().ok_or_else(|| {
                    (
                        "CreateContainerConfigError".to_owned(),
                        format!("couldn't find key {key} in Secret {namespace}/{secret_name}"),
                    )
                })?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .unwrap_or_default();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                String::new()
            };
            env.push((name, value));
        }
        let mut argv: Vec<String> = container["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        // Without `command` the image's entrypoint runs, which only images with a root here
        // have: the others (a service's postgres) are taken to be running.
        if argv.is_empty() {
            return Ok(None);
        }
        argv.extend(
            container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned)),
        );
        let argv: Vec<String> = argv
            .iter()
            .map(|a| map_path(a, &mounts, root.as_deref()))
            .collect();
        let cwd = container["workingDir"]
            .as_str()
            .map(|w| PathBuf::from(map_path(w, &mounts, None)))
            .unwrap_or_else(|| self.dir.join(namespace).join(pod));
        Ok(Some(Prepared {
            program: PathBuf::from(&argv[0]),
            args: argv[1..].to_vec(),
            env,
            cwd,
        }))
    }

    fn spawn(
        &self,
        namespace: &str,
        pod: &str,
        name: &str,
        prepared: &Prepared,
    ) -> Result<tokio::process::Child, String> {
        let log_path = self.log_path(namespace, pod, name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = tokio::process::Command::new(&prepared.program)
            .args(&prepared.args)
            .env_clear()
            .envs(prepared.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&prepared.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!(
                    "failed to create containerd task: exec: {:?}: {e}",
                    prepared.program
                )
            })?;
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok())
            && let Some(p) = lock(&self.pods).get_mut(&(namespace.to_owned(), pod.to_owned()))
        {
            p.groups.push(pid);
            p.running.insert(name.to_owned());
        }
        Ok(child)
    }

    fn mark_stopped(&self, namespace: &str, pod: &str, name: &str) {
        if let Some(p) = lock(&self.pods).get_mut(&(namespace.to_owned(), pod.to_owned())) {
            p.running.remove(name);
        }
    }
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i64 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s
            .code()
            .map(i64::from)
            .or_else(|| s.signal().map(|sig| 128 + i64::from(sig)))
            .unwrap_or(1),
        Err(_) => 1,
    }
}

fn terminated(code: i64, reason: &str) -> Value {
    json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": now_rfc3339(), "finishedAt": now_rfc3339()}})
}

fn signal_group(child: &tokio::process::Child, signal: Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Waits until the pod is asked to stop (deleted), then removes it.
async fn wait_for_deletion(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    stop: &mut watch::Receiver<bool>,
) -> PodEnd {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    let _ = cluster.store.delete(Kind::Pod, namespace, name);
    PodEnd::Deleted
}

async fn run_pod(
    cluster: Arc<Cluster>,
    namespace: String,
    name: String,
    fault: Option<Fault>,
) -> PodEnd {
    let kubelet = Arc::clone(&cluster.kubelet);
    let (stop_tx, mut stop) = watch::channel(false);
    lock(&kubelet.pods).insert(
        (namespace.clone(), name.clone()),
        RunningPod {
            stop: stop_tx,
            running: HashSet::new(),
            groups: Vec::new(),
        },
    );
    let end = pod_lifecycle(&cluster, &namespace, &name, fault, &mut stop).await;
    lock(&kubelet.pods).remove(&(namespace.clone(), name.clone()));
    end
}

async fn pod_lifecycle(
    cluster: &Arc<Cluster>,
    namespace: &str,
    name: &str,
    fault: Option<Fault>,
    stop: &mut watch::Receiver<bool>,
) -> PodEnd {
    let kubelet = &cluster.kubelet;
    let Ok(pod) = cluster.store.get(Kind::Pod, namespace, name) else {
        return PodEnd::Deleted;
    };
    let spec = pod["spec"].clone();
    // Scheduling: one node, labelled as a Linux amd64 node, without taints.
    let node_labels = json!({"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": NODE});
    let fits = spec["nodeSelector"]
        .as_object()
        .is_none_or(|sel| sel.iter().all(|(k, v)| node_labels.get(k) == Some(v)));
    if fault == Some(Fault::Unschedulable) || !fits {
        set_pod(cluster, namespace, name, |p| {
            p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
                "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}]);
        });
        return wait_for_deletion(cluster, namespace, name, stop).await;
    }
    set_pod(cluster, namespace, name, |p| {
        p["spec"]["nodeName"] = json!(NODE);
        p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}]);
        p["status"]["hostIP"] = json!("127.0.0.1");
        p["status"]["podIP"] = json!("127.0.0.1");
        p["status"]["startTime"] = json!(now_rfc3339());
    });
    let pod_dir = kubelet.dir.join(namespace).join(name);
    let mut volumes = HashMap::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        if let Some(vname) = v["name"].as_str() {
            let dir = pod_dir.join("volumes").join(vname);
            let _ = std::fs::create_dir_all(&dir);
            volumes.insert(vname.to_owned(), dir);
        }
    }
    let _ = std::fs::create_dir_all(&pod_dir);

    let mut sidecars: Vec<tokio::process::Child> = Vec::new();
    let blocked = |reason: &str, message: &str, field: &str, container: &Value| {
        let status = container_status(
            container,
            json!({"waiting": {"reason": reason, "message": message}}),
        );
        set_pod(cluster, namespace, name, |p| put_status(p, field, status));
    };
    for container in spec["initContainers"].as_array().into_iter().flatten() {
        let cname = container["name"].as_str().unwrap_or("").to_owned();
        if let Err(message) = kubelet
            .pull(container["image"].as_str().unwrap_or(""))
            .await
        {
            blocked("ErrImagePull", &message, "initContainerStatuses", container);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let image = container["image"].as_str().unwrap_or("");
            blocked(
                "ImagePullBackOff",
                &format!("Back-off pulling image \"{image}\""),
                "initContainerStatuses",
                container,
            );
            return wait_for_deletion(cluster, namespace, name, stop).await;
        }
        let prepared = match kubelet.prepare(&cluster.store, namespace, name, container, &volumes) {
            Ok(p) => p,
            Err((reason, message)) => {
                blocked(&reason, &message, "initContainerStatuses", container);
                return wait_for_deletion(cluster, namespace, name, stop).await;
            }
        };
        let sidecar = container["restartPolicy"].as_str() == Some("Always");
        let running = container_status(container, json!({"running": {"startedAt": now_rfc3339()}}));
        set_pod(cluster, namespace, name, |p| {
            put_status(p, "initContainerStatuses", running)
        });
        let runnable = prepared.filter(|_| {
            !sidecar
                || kubelet
                    .image_root(container["image"].as_str().unwrap_or(""))
                    .is_some()
        });
        let Some(prepared) = runnable else {
            continue;
        };
        let mut child = match kubelet.spawn(namespace, name, &cname, &prepared) {
            Ok(c) => c,
            Err(message) => {
                blocked(
                    "RunContainerError",
                    &message,
                    "initContainerStatuses",
                    container,
                );
                return wait_for_deletion(cluster, namespace, name, stop).await;
            }
        };
        if sidecar {
            sidecars.push(child);
            continue;
        }
        let code = exit_code(child.wait().await);
        kubelet.mark_stopped(namespace, name, &cname);
        let status = container_status(
            container,
            terminated(code, if code == 0 { "Completed" } else { "Error" }),
        );
        set_pod(cluster, namespace, name, |p| {
            put_status(p, "initContainerStatuses", status)
        });
        if code != 0 {
            set_pod(cluster, namespace, name, |p| {
                p["status"]["phase"] = json!("Failed")
            });
            return PodEnd::Failed;
        }
    }

    let mut mains: Vec<(Value, Option<tokio::process::Child>)> = Vec::new();
    for container in spec["containers"].as_array().into_iter().flatten() {
        let image = container["image"].as_str().unwrap_or("");
        if let Err(message) = kubelet.pull(image).await {
            blocked("ErrImagePull", &message, "containerStatuses", container);
            tokio::time::sleep(Duration::from_millis(300)).await;
            blocked(
                "ImagePullBackOff",
                &format!("Back-off pulling image \"{image}\""),
                "containerStatuses",
                container,
            );
            for s in &sidecars {
                signal_group(s, Signal::SIGKILL);
            }
            return wait_for_deletion(cluster, namespace, name, stop).await;
        }
        let prepared = match kubelet.prepare(&cluster.store, namespace, name, container, &volumes) {
            Ok(p) => p,
            Err((reason, message)) => {
                blocked(&reason, &message, "containerStatuses", container);
                return wait_for_deletion(cluster, namespace, name, stop).await;
            }
        };
        let child = match prepared {
            Some(prepared) => match kubelet.spawn(
                namespace,
                name,
                container["name"].as_str().unwrap_or(""),
                &prepared,
            ) {
                Ok(c) => Some(c),
                Err(message) => {
                    blocked(
                        "RunContainerError",
                        &message,
                        "containerStatuses",
                        container,
                    );
                    return wait_for_deletion(cluster, namespace, name, stop).await;
                }
            },
            None => None,
        };
        mains.push((container.clone(), child));
    }
    set_pod(cluster, namespace, name, |p| {
        p["status"]["phase"] = json!("Running");
        for (container, _) in &mains {
            put_status(
                p,
                "containerStatuses",
                container_status(container, json!({"running": {"startedAt": now_rfc3339()}})),
            );
        }
    });

    // Wait for the main containers, a deletion, or the fault's moment.
    let timed_fault = matches!(fault, Some(Fault::Oom | Fault::Evicted | Fault::PodDeleted));
    const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);
    let fault_timer = tokio::time::sleep(if timed_fault { FAULT_AFTER } else { NEVER });
    let mut fault_timer = std::pin::pin!(fault_timer);
    let mut codes: Vec<Option<(i64, &'static str)>> = vec![None; mains.len()];
    let mut deleted = false;
    let mut evicted = false;
    loop {
        if codes.iter().all(Option::is_some) {
            break;
        }
        let waits = mains
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| codes[*i].is_none())
            .map(|(i, (_, child))| {
                Box::pin(async move {
                    match child {
                        Some(c) => (i, exit_code(c.wait().await)),
                        None => std::future::pending().await,
                    }
                })
            });
        let any_exit = futures_util::future::select_all(waits);
        enum Next {
            Exit(usize, i64),
            Stop,
            Fault,
        }
        let next = tokio::select! {
            ((i, code), _, _) = any_exit => Next::Exit(i, code),
            _ = stop.changed() => Next::Stop,
            _ = &mut fault_timer => Next::Fault,
        };
        match next {
            Next::Exit(i, code) => {
                let reason = if code == 137 && fault == Some(Fault::Oom) {
                    "OOMKilled"
                } else if code == 0 {
                    "Completed"
                } else {
                    "Error"
                };
                codes[i] = Some((code, reason));
                if let Some(cname) = mains[i].0["name"].as_str() {
                    kubelet.mark_stopped(namespace, name, cname);
                }
            }
            Next::Stop => {
                deleted = true;
                break;
            }
            Next::Fault => {
                match fault {
                    Some(Fault::Oom) => {
                        let stage = mains
                            .iter()
                            .position(|(c, _)| c["name"] == "stage")
                            .unwrap_or(0);
                        if let Some((_, Some(child))) = mains.get(stage) {
                            signal_group(child, Signal::SIGKILL);
                        }
                    }
                    Some(Fault::Evicted) => {
                        for (_, child) in &mains {
                            if let Some(child) = child {
                                signal_group(child, Signal::SIGKILL);
                            }
                        }
                        evicted = true;
                    }
                    Some(Fault::PodDeleted) => {
                        let _ = kubelet.delete_pod(&cluster.store, namespace, name);
                    }
                    _ => {}
                }
                fault_timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + NEVER);
            }
        }
    }
    if deleted {
        // Graceful termination: SIGTERM, the grace period, then SIGKILL.
        let grace =
            Duration::from_secs(spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));
        for (_, child) in &mains {
            if let Some(child) = child {
                signal_group(child, Signal::SIGTERM);
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        for (i, (_, child)) in mains.iter_mut().enumerate() {
            if codes[i].is_some() {
                continue;
            }
            if let Some(c) = child {
                let code = match tokio::time::timeout_at(deadline, c.wait()).await {
                    Ok(status) => exit_code(status),
                    Err(_) => {
                        signal_group(c, Signal::SIGKILL);
                        exit_code(c.wait().await)
                    }
                };
                codes[i] = Some((code, "Error"));
            }
        }
    }
    for s in &sidecars {
        signal_group(s, Signal::SIGTERM);
    }
    for mut s in sidecars {
        if tokio::time::timeout(Duration::from_secs(2), s.wait())
            .await
            .is_err()
        {
            signal_group(&s, Signal::SIGKILL);
            let _ = s.wait().await;
        }
    }
    let succeeded = !deleted && !evicted && codes.iter().all(|c| matches!(c, Some((0, _)) | None));
    set_pod(cluster, namespace, name, |p| {
        for (i, (container, _)) in mains.iter().enumerate() {
            let (code, reason) = codes[i].unwrap_or((0, "Completed"));
            put_status(
                p,
                "containerStatuses",
                container_status(container, terminated(code, reason)),
            );
        }
        p["status"]["phase"] = json!(if succeeded { "Succeeded" } else { "Failed" });
        if evicted {
            p["status"]["reason"] = json!("Evicted");
            p["status"]["message"] = json!(
                "The node was low on resource: memory. Threshold quantity: 100Mi, available: 42Mi. Container stage was using 1536Mi, request is 0, has larger consumption of memory."
            );
        }
    });
    for (container, _) in &mains {
        if let Some(cname) = container["name"].as_str() {
            kubelet.mark_stopped(namespace, name, cname);
        }
    }
    if deleted {
        let _ = cluster.store.delete(Kind::Pod, namespace, name);
        return PodEnd::Deleted;
    }
    if succeeded {
        PodEnd::Succeeded
    } else {
        PodEnd::Failed
    }
}
