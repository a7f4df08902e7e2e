//! A STAND-IN for a Kubernetes cluster, for tests only. No real cluster (kube-apiserver, kind,
//! k3s) can run on the machines Gantry is tested on, so this module speaks the Kubernetes REST
//! wire protocol for the resources Gantry uses, over HTTP on 127.0.0.1, and simulates the
//! parts of a cluster that act on them:
//!
//! - [`store`] / [`api`]: the API server (create/get/list/delete/patch, resourceVersions,
//!   label selectors, watch streams, `pods/log` with follow, `Status` errors, bearer auth);
//! - [`kubelet`]: the Job controller and a kubelet that runs each Job's pod as local processes
//!   (paths of volumes and of the runner image mapped to temporary directories), with faults
//!   to inject: image pull failure, OOM kill, deadline, unschedulable, eviction, pod deletion;
//! - [`deployments`]: the Deployment controller (ReplicaSets with revision annotations,
//!   rollouts that become available, or get stuck until `ProgressDeadlineExceeded`).
//!
//! Gantry's production code does not know about any of this: the engine is given an ordinary
//! kubeconfig whose server is `http://127.0.0.1:PORT` and uses the real `kube` client.

pub mod api;
pub mod deployments;
pub mod kubelet;
pub mod patch;
pub mod selector;
pub mod store;
pub mod validate;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use store::{ApiErr, Kind, Store};

/// The bearer token the stand-in accepts (and its kubeconfig carries).
pub const TOKEN: &str = "stand-in-token";

/// A fault the kubelet injects into the pod of a stage (matched by stage key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The stage container is killed as the OOM killer would, once it has run a moment.
    Oom,
    /// The Job controller stops the Job as if its activeDeadlineSeconds had passed.
    Deadline,
    /// No node fits the pod.
    Unschedulable,
    /// The node evicts the pod once it has run a moment.
    Evicted,
    /// Someone deletes the pod once it has run a moment.
    PodDeleted,
}

/// What the simulated cluster can pull and run.
#[derive(Clone, Debug, Default)]
pub struct Images {
    /// Image → a directory standing for its root filesystem (e.g. the runner image).
    pub roots: HashMap<String, PathBuf>,
    /// Images whose pull fails as for a tag that does not exist.
    pub missing: HashSet<String>,
}

pub struct Cluster {
    pub store: Store,
    pub kubelet: Arc<kubelet::Kubelet>,
    pub requests: AtomicU64,
    /// The minor version `/version` reports (major 1): tests play older clusters with it.
    pub minor: std::sync::atomic::AtomicU32,
}

impl Cluster {
    /// Deletes as the API server and garbage collector do: pods end gracefully; a Job's pods
    /// go with it under `Background`/`Foreground` propagation and stay (orphaned) otherwise,
    /// which is the default for Jobs.
    pub fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        policy: Option<&str>,
    ) -> Result<Value, ApiErr> {
        match kind {
            Kind::Pod => self.kubelet.delete_pod(&self.store, namespace, name),
            Kind::Job => {
                let job = self.store.delete(kind, namespace, name)?;
                let uid = job["metadata"]["uid"].clone();
                let (pods, _) =
                    self.store
                        .list(Kind::Pod, Some(namespace), &selector::Selector::default());
                for pod in pods {
                    let owned = pod["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|r| r["uid"] == uid));
                    if !owned {
                        continue;
                    }
                    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
                    match policy {
                        Some("Background" | "Foreground") => {
                            let _ = self.kubelet.delete_pod(&self.store, namespace, &pod_name);
                        }
                        _ => {
                            let _ = self.store.update(Kind::Pod, namespace, &pod_name, |p| {
                                p["metadata"]["ownerReferences"] = json!([]);
                                Ok(())
                            });
                        }
                    }
                }
                Ok(job)
            }
            _ => self.store.delete(kind, namespace, name),
        }
    }
}

pub struct StandIn {
    pub cluster: Arc<Cluster>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.cluster.kubelet.kill_all();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl StandIn {
    /// Starts the API server on a free loopback port with its controllers; `runner` is the
    /// `gantry-runner` binary the runner image `runner_image` holds.
    pub async fn start(runner_image: &str, runner: &Path) -> StandIn {
        Self::start_with(runner_image, runner, true).await
    }

    /// An API server whose Jobs never get pods (for benchmarks of the API side alone).
    pub async fn without_kubelet(runner_image: &str) -> StandIn {
        Self::start_with(runner_image, &crate::runner_bin(), false).await
    }

    async fn start_with(runner_image: &str, runner: &Path, with_kubelet: bool) -> StandIn {
        let dir = tempfile::Builder::new()
            .prefix("gantry-standin-")
            .tempdir_in("/tmp")
            .expect("stand-in dir");
        let root = dir.path().join("images/runner");
        std::fs::create_dir_all(root.join("usr/local/bin")).expect("runner image root");
        std::os::unix::fs::symlink(runner, root.join("usr/local/bin/gantry-runner"))
            .expect("runner in its image");
        let mut images = Images::default();
        images.roots.insert(runner_image.to_owned(), root);
        let kubelet = Arc::new(kubelet::Kubelet::new(dir.path().join("pods"), images));
        let cluster = Arc::new(Cluster {
            store: Store::default(),
            kubelet,
            requests: AtomicU64::new(0),
            minor: std::sync::atomic::AtomicU32::new(32),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in");
        let addr = listener.local_addr().expect("address");
        let app = api::router(Arc::clone(&cluster));
        let mut tasks = vec![tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })];
        if with_kubelet {
            let events = cluster.store.controller_events();
            tasks.push(tokio::spawn(kubelet::run_jobs(
                Arc::clone(&cluster),
                events,
            )));
        }
        let events = cluster.store.controller_events();
        tasks.push(tokio::spawn(deployments::run(Arc::clone(&cluster), events)));
        let standin = StandIn {
            cluster,
            addr,
            dir,
            tasks,
        };
        std::fs::write(standin.kubeconfig_path(), standin.kubeconfig()).expect("kubeconfig");
        standin
    }

    /// Makes the stand-in report Kubernetes 1.`minor` from now on.
    pub fn set_minor_version(&self, minor: u32) {
        self.cluster
            .minor
            .store(minor, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An ordinary kubeconfig for this stand-in, as `kubectl` or the engine read it.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: {}\n\
             users:\n- name: gantry\n  user:\n    token: {TOKEN}\ncontexts:\n- name: stand-in\n  context:\n    \
             cluster: stand-in\n    user: gantry\n    namespace: ci\ncurrent-context: stand-in\n",
            self.url()
        )
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Injects `fault` into the pods of stages with this key.
    pub fn inject(&self, stage_key: &str, fault: Fault) {
        self.cluster.kubelet.inject(stage_key, fault);
    }

    /// Makes pulls of `image` fail.
    pub fn set_missing_image(&self, image: &str) {
        self.cluster.kubelet.set_missing(image);
    }

    pub fn objects(&self, kind: Kind) -> Vec<Value> {
        self.cluster
            .store
            .list(kind, None, &selector::Selector::default())
            .0
    }

    /// Creates an object directly (test setup, as `kubectl apply` would).
    pub fn create(&self, kind: Kind, namespace: &str, object: Value) -> Value {
        self.cluster
            .store
            .create(kind, namespace, object)
            .unwrap_or_else(|e| panic!("creating {}: {}", kind.name(), e.message))
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.cluster.store.get(kind, namespace, name).ok()
    }

    /// The image of the first container of Deployment `namespace/name` now (empty if none).
    pub fn deployment_image(&self, namespace: &str, name: &str) -> String {
        self.get(Kind::Deployment, namespace, name)
            .unwrap_or_else(|| panic!("no deployment {namespace}/{name}"))["spec"]["template"]
            ["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Every object clients created or patched, as stored, for schema validation.
    pub fn received(&self) -> Vec<Value> {
        self.cluster.store.received()
    }
}

/// Locks a mutex, shrugging off poisoning (a panicked test thread must not hide the cause).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The runner image the stand-in's kubelet knows (it maps to the test build's runner).
pub const RUNNER_IMAGE: &str = "gantry.test/gantry-runner:dev";

impl StandIn {
    /// A stand-in whose runner image holds the `gantry-runner` the tests were built with.
    pub async fn for_tests() -> StandIn {
        StandIn::start(RUNNER_IMAGE, &crate::runner_bin()).await
    }

    /// Points an engine's configuration at this stand-in and runs its stages as Jobs.
    pub fn configure(&self, config: &mut gantry::engine::Config) {
        use gantry::executor::kubernetes::{KubeSettings, job::JobSettings};
        config.executor = "kubernetes".into();
        config.kubernetes = Some(KubeSettings {
            kubeconfig: Some(self.kubeconfig_path()),
            jobs: JobSettings {
                runner_image: RUNNER_IMAGE.into(),
                ttl_secs: 600,
                ..JobSettings::default()
            },
            // The stand-in's faults are permanent: waiting for them to pass would only slow
            // the tests (the allowances are tested on the real control plane).
            unschedulable_after: std::time::Duration::ZERO,
            pull_after: std::time::Duration::ZERO,
            ..KubeSettings::default()
        });
    }

    /// An engine on a fresh database whose stages run as Jobs on this stand-in.
    pub async fn engine(&self) -> crate::TestEngine {
        crate::TestEngine::start_with(|c| self.configure(c)).await
    }

    /// Waits until `ready` holds for the objects of `kind`, or panics after `limit`.
    pub async fn wait_for(
        &self,
        what: &str,
        kind: Kind,
        limit: std::time::Duration,
        ready: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let objects = self.objects(kind);
            if ready(&objects) {
                return objects;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not seen within {limit:?}; {} objects: {}",
                kind.name(),
                serde_json::to_string_pretty(&objects).unwrap_or_default()
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
}
