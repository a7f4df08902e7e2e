//! A local picture of every Job and pod Gantry made: kube's reflector stores, kept current by
//! label-selected watches (kube's runtime watcher: list, then watch from that resourceVersion,
//! re-listing after errors, 410 Gone included, with backoff). Observing an attempt reads this
//! picture instead of asking the API server, so housekeeping costs the cluster nothing however
//! many stages run.
//!
//! One picture per scope: the whole cluster, or, when the engine's RBAC is namespaced, one per
//! namespace it was given (a cluster-wide watch would be refused with 403 and never fill).

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde::de::DeserializeOwned;

use super::job::{JOB_NAME_LABEL, MANAGED_BY, MANAGED_BY_VALUE};

/// `namespace/name` of a Job: the executor's handle.
pub fn job_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

pub fn selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE}")
}

/// Where a picture looks: `None` the whole cluster, else one namespace.
pub type Scope = Option<String>;

fn api<K>(client: &kube::Client, scope: &Scope) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match scope {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// One scope's stores.
struct Picture {
    scope: Scope,
    jobs: Store<Job>,
    pods: Store<Pod>,
}

impl Picture {
    /// The Job and its pods, if the picture holds the Job.
    fn get(&self, namespace: &str, name: &str) -> Option<(Job, Vec<Pod>)> {
        let job = self.jobs.get(&ObjectRef::new(name).within(namespace))?;
        let pods = self
            .pods
            .state_filter(|pod| {
                pod.namespace().as_deref() == Some(namespace)
                    && pod.labels().get(JOB_NAME_LABEL).map(String::as_str) == Some(name)
            })
            .iter()
            .map(|pod| pod.as_ref().clone())
            .collect();
        Some((job.as_ref().clone(), pods))
    }

    /// Whether both stores have completed their first list (what `wait_until_ready` awaits).
    fn synced(&self) -> bool {
        let ready = |wait: Option<Result<(), reflector::store::WriterDropped>>| {
            wait.is_some_and(|r| r.is_ok())
        };
        ready(self.jobs.wait_until_ready().now_or_never())
            && ready(self.pods.wait_until_ready().now_or_never())
    }
}

/// The pictures of an executor, one per scope, and the watch tasks that fill them; dropping
/// the pictures stops the watches.
pub struct Pictures {
    pictures: Vec<Picture>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Watch events handled (for the benchmark and /metrics-style curiosity).
    events: Arc<AtomicU64>,
}

impl Drop for Pictures {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Pictures {
    /// Starts a Job and a pod watch per scope; `namespaces` empty: one cluster-wide picture.
    pub fn start(client: &kube::Client, namespaces: &[String]) -> Pictures {
        let scopes: Vec<Scope> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().cloned().map(Some).collect()
        };
        let events = Arc::new(AtomicU64::new(0));
        let mut pictures = Vec::new();
        let mut tasks = Vec::new();
        for scope in scopes {
            let place = scope.clone().unwrap_or_else(|| "all namespaces".to_owned());
            let (jobs, writer) = reflector::store::<Job>();
            tasks.push(reflect(
                api(client, &scope),
                writer,
                "Jobs",
                place.clone(),
                Arc::clone(&events),
            ));
            let (pods, writer) = reflector::store::<Pod>();
            tasks.push(reflect(
                api(client, &scope),
                writer,
                "pods",
                place,
                Arc::clone(&events),
            ));
            pictures.push(Picture { scope, jobs, pods });
        }
        Pictures {
            pictures,
            tasks,
            events,
        }
    }

    pub fn scopes(&self) -> impl Iterator<Item = &Scope> {
        self.pictures.iter().map(|p| &p.scope)
    }

    /// The picture a Job of `namespace` is in, if any watch covers that namespace.
    fn for_namespace(&self, namespace: &str) -> Option<&Picture> {
        self.pictures
            .iter()
            .find(|p| p.scope.as_deref().is_none_or(|s| s == namespace))
    }

    pub fn get(&self, key: &str) -> Option<(Job, Vec<Pod>)> {
        let (namespace, name) = key.split_once('/')?;
        self.for_namespace(namespace)?.get(namespace, name)
    }

    pub fn synced(&self) -> bool {
        self.pictures.iter().all(Picture::synced)
    }

    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
}

/// Drives a reflector of `api`'s Gantry objects into `writer` until the task is aborted.
fn reflect<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    what: &'static str,
    place: String,
    events: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let config = watcher::Config::default().labels(&selector());
    let stream = reflector::reflector(writer, watcher::watcher(api, config)).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    events.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, namespace = %place, "watching {what} failed; retrying")
                }
            }
        }
    })
}
