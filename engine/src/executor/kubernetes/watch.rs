//! A local picture of every Job and pod Gantry made, kept current by label-selected watches
//! (kube's runtime watcher: list, then watch from that resourceVersion, re-listing after
//! errors, 410 Gone included, with backoff). Observing an attempt reads this picture instead
//! of asking the API server, so housekeeping costs the cluster nothing however many stages run.
//!
//! One picture per scope: the whole cluster, or, when the engine's RBAC is namespaced, one per
//! namespace it was given (a cluster-wide watch would be refused with 403 and never fill).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::job::{JOB_NAME_LABEL, MANAGED_BY, MANAGED_BY_VALUE};

/// `namespace/name` of a Job: the executor's handle.
pub fn job_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[derive(Default)]
struct Picture {
    jobs: HashMap<String, Job>,
    /// Pods by their Job's key, then by pod name.
    pods: HashMap<String, HashMap<String, Pod>>,
}

#[derive(Default)]
pub struct Cache {
    picture: Mutex<Picture>,
    /// Objects seen during a (re-)list, replacing the picture when it completes.
    listing_jobs: Mutex<Option<HashMap<String, Job>>>,
    listing_pods: Mutex<Option<HashMap<String, HashMap<String, Pod>>>>,
    jobs_synced: AtomicBool,
    pods_synced: AtomicBool,
    /// Watch events handled (for the benchmark and /metrics-style curiosity).
    pub events: AtomicU64,
}

fn pod_job_key(pod: &Pod) -> Option<(String, String)> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let job = pod.metadata.labels.as_ref()?.get(JOB_NAME_LABEL)?;
    Some((
        job_key(&namespace, job),
        pod.metadata.name.clone().unwrap_or_default(),
    ))
}

impl Cache {
    pub fn synced(&self) -> bool {
        self.jobs_synced.load(Ordering::Acquire) && self.pods_synced.load(Ordering::Acquire)
    }

    /// The Job and its pods, if the picture holds the Job.
    pub fn get(&self, key: &str) -> Option<(Job, Vec<Pod>)> {
        let picture = self.picture.lock().ok()?;
        let job = picture.jobs.get(key)?.clone();
        let pods = picture
            .pods
            .get(key)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        Some((job, pods))
    }

    pub fn job_count(&self) -> usize {
        self.picture.lock().map(|p| p.jobs.len()).unwrap_or(0)
    }

    fn on_job(&self, event: Event<Job>) {
        self.events.fetch_add(1, Ordering::Relaxed);
        let key_of = |job: &Job| {
            job_key(
                job.metadata.namespace.as_deref().unwrap_or(""),
                job.metadata.name.as_deref().unwrap_or(""),
            )
        };
        match event {
            Event::Apply(job) => {
                if let Ok(mut p) = self.picture.lock() {
                    p.jobs.insert(key_of(&job), job);
                }
            }
            Event::Delete(job) => {
                if let Ok(mut p) = self.picture.lock() {
                    p.jobs.remove(&key_of(&job));
                }
            }
            Event::Init => {
                if let Ok(mut l) = self.listing_jobs.lock() {
                    *l = Some(HashMap::new());
                }
            }
            Event::InitApply(job) => {
                if let Ok(mut l) = self.listing_jobs.lock()
                    && let Some(listing) = l.as_mut()
                {
                    listing.insert(key_of(&job), job);
                }
            }
            Event::InitDone => {
                let listed = self.listing_jobs.lock().ok().and_then(|mut l| l.take());
                if let (Some(listed), Ok(mut p)) = (listed, self.picture.lock()) {
                    p.jobs = listed;
                }
                self.jobs_synced.store(true, Ordering::Release);
            }
        }
    }

    fn on_pod(&self, event: Event<Pod>) {
        self.events.fetch_add(1, Ordering::Relaxed);
        match event {
            Event::Apply(pod) => {
                if let Some((job, name)) = pod_job_key(&pod)
                    && let Ok(mut p) = self.picture.lock()
                {
                    p.pods.entry(job).or_default().insert(name, pod);
                }
            }
            Event::Delete(pod) => {
                if let Some((job, name)) = pod_job_key(&pod)
                    && let Ok(mut p) = self.picture.lock()
                    && let Some(pods) = p.pods.get_mut(&job)
                {
                    pods.remove(&name);
                    if pods.is_empty() {
                        p.pods.remove(&job);
                    }
                }
            }
            Event::Init => {
                if let Ok(mut l) = self.listing_pods.lock() {
                    *l = Some(HashMap::new());
                }
            }
            Event::InitApply(pod) => {
                if let Some((job, name)) = pod_job_key(&pod)
                    && let Ok(mut l) = self.listing_pods.lock()
                    && let Some(listing) = l.as_mut()
                {
                    listing.entry(job).or_default().insert(name, pod);
                }
            }
            Event::InitDone => {
                let listed = self.listing_pods.lock().ok().and_then(|mut l| l.take());
                if let (Some(listed), Ok(mut p)) = (listed, self.picture.lock()) {
                    p.pods = listed;
                }
                self.pods_synced.store(true, Ordering::Release);
            }
        }
    }
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

/// The pictures of an executor, one per scope.
pub struct Pictures {
    scopes: Vec<(Scope, Arc<Cache>)>,
}

impl Pictures {
    /// `namespaces` empty: one cluster-wide picture.
    pub fn new(namespaces: &[String]) -> Pictures {
        let scopes = if namespaces.is_empty() {
            vec![(None, Arc::new(Cache::default()))]
        } else {
            namespaces
                .iter()
                .map(|n| (Some(n.clone()), Arc::new(Cache::default())))
                .collect()
        };
        Pictures { scopes }
    }

    pub fn scopes(&self) -> impl Iterator<Item = &Scope> {
        self.scopes.iter().map(|(scope, _)| scope)
    }

    /// The picture a Job of `namespace` is in, if any watch covers that namespace.
    pub fn for_namespace(&self, namespace: &str) -> Option<&Cache> {
        self.scopes
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == namespace))
            .map(|(_, cache)| cache.as_ref())
    }

    pub fn get(&self, key: &str) -> Option<(Job, Vec<Pod>)> {
        let (namespace, _) = key.split_once('/')?;
        self.for_namespace(namespace)?.get(key)
    }

    pub fn synced(&self) -> bool {
        self.scopes.iter().all(|(_, cache)| cache.synced())
    }

    pub fn events(&self) -> u64 {
        self.scopes
            .iter()
            .map(|(_, cache)| cache.events.load(Ordering::Relaxed))
            .sum()
    }

    /// Starts a Job and a pod watch per scope; they run until the handles are aborted.
    pub fn start(&self, client: &kube::Client) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for (scope, cache) in &self.scopes {
            tasks.extend(start(client, scope, Arc::clone(cache)));
        }
        tasks
    }
}

fn start(
    client: &kube::Client,
    scope: &Scope,
    cache: Arc<Cache>,
) -> [tokio::task::JoinHandle<()>; 2] {
    let config = watcher::Config::default().labels(&selector());
    let place = scope.clone().unwrap_or_else(|| "all namespaces".to_owned());
    let jobs = {
        let cache = Arc::clone(&cache);
        let place = place.clone();
        let stream = watcher::watcher(api::<Job>(client, scope), config.clone()).default_backoff();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => cache.on_job(event),
                    Err(e) => {
                        tracing::warn!(error = %e, namespace = %place, "watching Jobs failed; retrying")
                    }
                }
            }
        })
    };
    let pods = {
        let stream = watcher::watcher(api::<Pod>(client, scope), config).default_backoff();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => cache.on_pod(event),
                    Err(e) => {
                        tracing::warn!(error = %e, namespace = %place, "watching pods failed; retrying")
                    }
                }
            }
        })
    };
    [jobs, pods]
}
