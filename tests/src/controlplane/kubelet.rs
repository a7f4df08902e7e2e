//! A fake kubelet for the real control plane, in the manner of kwok: it registers a Node that
//! is Ready (with allocatable CPU, memory and pods, so the real kube-scheduler binds pods to
//! it), renews its Lease so the node lifecycle controller keeps it Ready, watches the pods
//! bound to it and runs each one's containers as local processes, writing pod status and
//! events the way the kubelet does, and serves `containerLogs` so `kubectl logs` and the API
//! server's `pods/log` work. It authenticates as the node (`system:node:NAME` in
//! `system:nodes`), so the API server's Node authorizer and NodeRestriction admission limit it
//! as they limit a real kubelet: it reads only the Secrets its pods use.
//!
//! Containers as processes: an image is a directory ([`Images::roots`], e.g. the runner image
//! holding `gantry-runner`) or nothing at all (the container's command runs from this machine's
//! `PATH`); volumes are directories under the kubelet's; absolute paths in commands, arguments,
//! environment values and working directories are mapped onto those directories. Containers
//! run as the user and group their security context names (when the tests run as root);
//! what else a runtime would isolate or restrict (mounts at their real paths, the network,
//! capabilities, seccomp, supplementary groups) is not.
//!
//! Faults ([`Fault`]) are injected per pod ([`Target`]): a pod that stays Pending for a while
//! (or until the test opens a [`Gate`]), image pulls that fail before they succeed, the OOM killer, an eviction. What the real
//! control plane does on its own (a node selector no node has, a Job's deadline, PodSecurity
//! refusing a pod) needs no fault.

mod container;
mod events;
mod images;
mod logs;
mod node;
mod pod;
mod status;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

pub use crate::kube::Images;
use crate::kube::lock;
pub(crate) use node::schedulable as node_schedulable;

/// How the fake node looks and how fast its kubelet retries.
#[derive(Clone, Debug)]
pub struct KubeletOptions {
    pub node_name: String,
    /// Extra node labels (besides `kubernetes.io/{hostname,os,arch}`).
    pub labels: Vec<(String, String)>,
    /// Capacity and allocatable: CPU cores, memory, pods.
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    /// The first back-off after a failed image pull or a container it cannot configure yet;
    /// it doubles with each failure up to 30 times this. The kubelet's is 10 s (up to 300 s),
    /// too slow for tests.
    pub backoff: Duration,
}

impl Default for KubeletOptions {
    fn default() -> Self {
        KubeletOptions {
            node_name: "gantry-node".into(),
            labels: Vec::new(),
            cpu: "8".into(),
            memory: "16Gi".into(),
            max_pods: 110,
            backoff: Duration::from_millis(400),
        }
    }
}

/// Which pods a fault hits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Pods of the Gantry stage with this key (Gantry annotates its Jobs' pod templates with
    /// `gantry.dev/stage-key`).
    StageKey(String),
    /// Pods with this label.
    Label(String, String),
}

impl Target {
    fn matches(&self, pod: &Pod) -> bool {
        match self {
            Target::StageKey(key) => pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("gantry.dev/stage-key"))
                .is_some_and(|k| k == key),
            Target::Label(name, value) => pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(name))
                .is_some_and(|v| v == value),
        }
    }
}

/// What can go wrong with a pod on this node, as a real node would show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The pod stays Pending, its containers waiting in `ContainerCreating`/`PodInitializing`
    /// and its sandbox not ready, this long before anything starts (a slow volume or CNI).
    PendingFor(Duration),
    /// The same, until the test opens the gate: a rollout held half-way for as long as a
    /// test needs, however slow the machine.
    PendingUntil(Gate),
    /// Every image pull of the pod fails this many times (`ErrImagePull`, then
    /// `ImagePullBackOff` for the back-off) before it succeeds.
    PullFails(u32),
    /// The container of this name is killed by the OOM killer once it has run `after`:
    /// terminated with reason `OOMKilled`, exit code 137.
    Oom { container: String, after: Duration },
    /// The kubelet evicts the pod for memory pressure once its containers have run `after`:
    /// phase Failed, reason `Evicted`, a `DisruptionTarget` condition.
    Evicted { after: Duration },
}

/// A gate pods with [`Fault::PendingUntil`] wait at; once open it stays open. Clones are the
/// same gate.
#[derive(Clone, Debug)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(watch::Sender::new(false)))
    }

    /// Lets every pod waiting at the gate (and every later one) go on.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    /// Returns once the gate is open.
    pub(crate) async fn opened(&self) {
        let mut open = self.0.subscribe();
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = open.wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new()
    }
}

impl PartialEq for Gate {
    fn eq(&self, other: &Gate) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Gate {}

/// What the pod's worker is asked to do by the API server's picture of its pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Keep running.
    No,
    /// Graceful deletion (a deletionTimestamp): SIGTERM, this long, then SIGKILL.
    Delete { grace: Duration },
    /// The pod object is gone (force-deleted, or deletion confirmed): kill at once.
    Gone,
}

struct PodEntry {
    stop: watch::Sender<Stop>,
    task: tokio::task::JoinHandle<()>,
}

pub struct Kubelet {
    pub node: String,
    /// Authenticated as the node.
    client: kube::Client,
    /// Pods' directories (`NAMESPACE/POD/`: container logs and volumes).
    dir: PathBuf,
    options: KubeletOptions,
    /// Where containers reach the API server (their `KUBERNETES_SERVICE_*`).
    apiserver_port: u16,
    images: Mutex<Images>,
    /// Images pulled so far, with their image IDs (for the `already present on machine` of
    /// IfNotPresent pulls).
    present: Mutex<HashMap<String, String>>,
    faults: Mutex<Vec<(Target, Fault)>>,
    /// Pod workers by pod UID.
    pods: Mutex<HashMap<String, PodEntry>>,
    /// Process groups of containers not yet reaped, to kill whatever is left at shutdown.
    groups: Mutex<HashSet<i32>>,
    /// `(namespace, pod, container)` of containers running now (log follow ends with them).
    running: Mutex<HashSet<(String, String, String)>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    http: reqwest::Client,
    /// The port `containerLogs` is served on (the node's `daemonEndpoints.kubeletEndpoint`).
    pub port: u16,
}

impl Kubelet {
    /// Registers the node (pods are scheduled to it once the node lifecycle controller has
    /// lifted its `not-ready` taint: see [`node::schedulable`]) and starts watching its pods.
    /// `serving` is the certificate of its HTTPS server (for 127.0.0.1, signed by the CA the
    /// API server trusts with `--kubelet-certificate-authority`).
    pub(crate) async fn start(
        client: kube::Client,
        dir: PathBuf,
        serving: &super::pki::Pair,
        options: KubeletOptions,
        images: Images,
        apiserver_port: u16,
    ) -> Arc<Kubelet> {
        std::fs::create_dir_all(&dir).expect("kubelet dir");
        let listener = logs::listen(serving).await;
        let kubelet = Arc::new(Kubelet {
            node: options.node_name.clone(),
            client,
            dir,
            options,
            apiserver_port,
            images: Mutex::new(images),
            present: Mutex::default(),
            faults: Mutex::default(),
            pods: Mutex::default(),
            groups: Mutex::default(),
            running: Mutex::default(),
            tasks: Mutex::default(),
            http: reqwest::Client::new(),
            port: listener.port(),
        });
        let server = tokio::spawn(logs::serve(listener, Arc::clone(&kubelet)));
        let since = node::register(&kubelet).await;
        let heartbeat = tokio::spawn(node::heartbeat(Arc::clone(&kubelet), since));
        let pods = tokio::spawn(Arc::clone(&kubelet).watch_pods());
        lock(&kubelet.tasks).extend([server, heartbeat, pods]);
        kubelet
    }

    /// Injects `fault` into pods `target` matches, from the next pod on.
    pub fn inject(&self, target: Target, fault: Fault) {
        lock(&self.faults).push((target, fault));
    }

    /// Makes every pull of `image` fail as for a tag that does not exist.
    pub fn set_missing(&self, image: &str) {
        lock(&self.images).missing.insert(image.to_owned());
    }

    /// Makes `image` a directory standing for its root filesystem.
    pub fn add_image(&self, image: &str, root: PathBuf) {
        lock(&self.images).roots.insert(image.to_owned(), root);
    }

    /// Where the output of a container of a pod goes.
    pub fn log_path(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.pod_dir(namespace, pod)
            .join(format!("{container}.log"))
    }

    fn pod_dir(&self, namespace: &str, pod: &str) -> PathBuf {
        self.dir.join(namespace).join(pod)
    }

    /// Pods this kubelet runs now (workers not yet told the pod is gone).
    pub fn pod_count(&self) -> usize {
        lock(&self.pods).len()
    }

    fn faults_for(&self, pod: &Pod) -> Vec<Fault> {
        lock(&self.faults)
            .iter()
            .filter(|(target, _)| target.matches(pod))
            .map(|(_, fault)| fault.clone())
            .collect()
    }

    fn container_running(&self, namespace: &str, pod: &str, container: &str) -> bool {
        lock(&self.running).contains(&(namespace.to_owned(), pod.to_owned(), container.to_owned()))
    }

    fn set_running(&self, namespace: &str, pod: &str, container: &str, running: bool) {
        let key = (namespace.to_owned(), pod.to_owned(), container.to_owned());
        let mut set = lock(&self.running);
        if running {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    /// Follows the pods bound to this node, as the kubelet's pod config source does (a watch
    /// with `spec.nodeName=NODE`, the only pod list the Node authorizer lets a node make).
    async fn watch_pods(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node));
        let mut stream = std::pin::pin!(watcher::watcher(api, config));
        // UIDs seen by a (re-)list: workers of pods it did not list are told their pod is gone.
        let mut listed: Option<HashSet<String>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(pod)) => self.on_pod(&pod),
                Ok(watcher::Event::InitApply(pod)) => {
                    if let (Some(seen), Some(uid)) = (listed.as_mut(), pod.metadata.uid.clone()) {
                        seen.insert(uid);
                    }
                    self.on_pod(&pod);
                }
                Ok(watcher::Event::Delete(pod)) => self.on_gone(pod.metadata.uid.as_deref()),
                Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
                Ok(watcher::Event::InitDone) => {
                    let seen = listed.take().unwrap_or_default();
                    let gone: Vec<String> = lock(&self.pods)
                        .keys()
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        self.on_gone(Some(&uid));
                    }
                }
                // The watcher lists and watches again by itself; wait a moment first.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    fn on_pod(self: &Arc<Self>, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let stop = match &pod.metadata.deletion_timestamp {
            Some(_) => Stop::Delete {
                grace: Duration::from_secs(
                    pod.metadata
                        .deletion_grace_period_seconds
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                ),
            },
            None => Stop::No,
        };
        let mut pods = lock(&self.pods);
        match pods.get(&uid) {
            Some(entry) => {
                if stop != Stop::No {
                    entry.stop.send_if_modified(|current| {
                        let first = *current == Stop::No;
                        if first {
                            *current = stop;
                        }
                        first
                    });
                }
            }
            None => {
                let (tx, rx) = watch::channel(stop);
                let faults = self.faults_for(pod);
                let task = tokio::spawn(pod::run(Arc::clone(self), pod.clone(), faults, rx));
                pods.insert(uid, PodEntry { stop: tx, task });
            }
        }
    }

    fn on_gone(&self, uid: Option<&str>) {
        if let Some(entry) = uid.and_then(|uid| lock(&self.pods).remove(uid)) {
            // The worker kills what still runs and ends.
            let _ = entry.stop.send(Stop::Gone);
        }
    }

    fn add_group(&self, group: i32) {
        lock(&self.groups).insert(group);
    }

    /// Kills what is left of a container's process group once its leader has been reaped, as
    /// a runtime tears a container's PID namespace down when its main process ends.
    fn reap_group(&self, group: i32) {
        let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        lock(&self.groups).remove(&group);
    }

    /// Stops everything: the watch, the workers, every container process and anything they
    /// left working in a pod's directory.
    pub(crate) fn shutdown(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        for (_, entry) in lock(&self.pods).drain() {
            entry.task.abort();
        }
        for group in lock(&self.groups).drain() {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
        drop(crate::proc::Reaper::new(&self.dir));
    }
}
