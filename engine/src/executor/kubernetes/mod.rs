//! The Kubernetes executor: each stage attempt is one batch/v1 Job ([`job::job_for`]) running
//! `gantry-runner`, which talks to the engine over HTTP exactly as a local runner does. The
//! executor only creates Jobs, deletes them (cancel) and reads what the watches saw
//! ([`watch`], [`failure::classify`]). Handles are `namespace/job-name`; Jobs live in the
//! cluster, so an engine restarted with the same id finds its attempts again, and
//! [`reconcile`] deletes Jobs whose stage attempt no longer runs.

pub mod failure;
pub mod job;
pub mod runner_image;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

use super::{Executor, ExecutorError, Observation, StartRequest};
use job::{JOB_NAME_LABEL, JobSettings, LABEL_ATTEMPT, LABEL_STAGE, STAGE_CONTAINER};
use watch::{Cache, job_key};

/// How the engine reaches a cluster and what its Jobs look like.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeSettings {
    /// A kubeconfig file; `None`: in-cluster config, else `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Namespace for Jobs of pipelines that name none; `None`: the kubeconfig context's.
    pub namespace: Option<String>,
    pub jobs: JobSettings,
    /// How many stage attempts this engine runs as Jobs at once.
    pub slots: usize,
    /// How long a pod may wait for a node before its attempt fails.
    pub unschedulable_after: Duration,
}

impl Default for KubeSettings {
    fn default() -> Self {
        KubeSettings {
            kubeconfig: None,
            context: None,
            namespace: None,
            jobs: JobSettings::default(),
            slots: 64,
            unschedulable_after: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration found (not in a cluster, no kubeconfig): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("connecting to Kubernetes: {0}")]
    Client(#[from] kube::Error),
}

/// A client for `settings`, and the namespace to use when nothing names one.
pub async fn connect(settings: &KubeSettings) -> Result<(Client, String), KubeError> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?;
            let options = KubeConfigOptions {
                context: settings.context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer().await?,
    };
    let namespace = settings
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}

pub struct KubeExecutor {
    client: Client,
    settings: KubeSettings,
    cache: Arc<Cache>,
    watches: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KubeExecutor {
    fn drop(&mut self) {
        for task in &self.watches {
            task.abort();
        }
    }
}

fn parse_handle(handle: &str) -> Result<(&str, &str), ExecutorError> {
    handle
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .ok_or_else(|| ExecutorError::BadHandle(handle.to_owned()))
}

fn api_error(what: &str, e: kube::Error) -> ExecutorError {
    ExecutorError::Other(format!("{what}: {e}"))
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == code)
}

/// A Job the cluster holds for some stage attempt.
#[derive(Clone, Debug)]
pub struct ListedJob {
    pub handle: String,
    pub stage_run_id: Option<i64>,
    pub attempt: Option<i32>,
    pub finished: bool,
}

impl KubeExecutor {
    /// Connects and starts the watches. `settings.jobs.namespace` is filled from the
    /// kubeconfig when `settings.namespace` is unset.
    pub async fn connect(mut settings: KubeSettings) -> Result<(KubeExecutor, Client), KubeError> {
        let (client, namespace) = connect(&settings).await?;
        settings.jobs.namespace = namespace;
        Ok((Self::with_client(client.clone(), settings), client))
    }

    pub fn with_client(client: Client, settings: KubeSettings) -> KubeExecutor {
        let cache = Arc::new(Cache::default());
        let watches = watch::start(client.clone(), Arc::clone(&cache));
        KubeExecutor {
            client,
            settings,
            cache,
            watches,
        }
    }

    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    /// Watch events handled so far.
    pub fn watch_events(&self) -> u64 {
        self.cache.events.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn watch_synced(&self) -> bool {
        self.cache.synced()
    }

    /// The Jobs Gantry made, in every namespace, straight from the API server.
    pub async fn list_jobs(&self) -> Result<Vec<ListedJob>, ExecutorError> {
        let api: Api<Job> = Api::all(self.client.clone());
        let mut out = Vec::new();
        let mut params = ListParams::default().labels(&watch::selector()).limit(500);
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(|e| api_error("listing Jobs", e))?;
            for job in &page.items {
                let labels = job.metadata.labels.clone().unwrap_or_default();
                let finished = job
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                        })
                    });
                out.push(ListedJob {
                    handle: job_key(
                        job.metadata.namespace.as_deref().unwrap_or(""),
                        job.metadata.name.as_deref().unwrap_or(""),
                    ),
                    stage_run_id: labels.get(LABEL_STAGE).and_then(|v| v.parse().ok()),
                    attempt: labels.get(LABEL_ATTEMPT).and_then(|v| v.parse().ok()),
                    finished,
                });
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        Ok(out)
    }

    /// The Job and its pods: from the watches' picture, or from the API server when the
    /// picture does not hold the Job (yet: a Job just created may not have been seen).
    async fn job_and_pods(&self, handle: &str) -> Result<Option<(Job, Vec<Pod>)>, ExecutorError> {
        if let Some(found) = self.cache.get(handle) {
            return Ok(Some(found));
        }
        let (namespace, name) = parse_handle(handle)?;
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        let job = match jobs.get_opt(name).await {
            Ok(Some(job)) => job,
            Ok(None) => return Ok(None),
            Err(e) => return Err(api_error("reading the Job", e)),
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let listed = pods
            .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={name}")))
            .await
            .map_err(|e| api_error("listing the Job's pods", e))?;
        Ok(Some((job, listed.items)))
    }

    /// The last lines the runner printed: why it ended, when it could not tell the engine.
    async fn runner_output(&self, namespace: &str, pods: &[Pod]) -> Option<String> {
        let name = pods.first()?.metadata.name.clone()?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let text = api
            .logs(
                &name,
                &LogParams {
                    container: Some(STAGE_CONTAINER.to_owned()),
                    tail_lines: Some(5),
                    ..LogParams::default()
                },
            )
            .await
            .ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.replace('\n', " | "))
    }
}

#[async_trait]
impl Executor for KubeExecutor {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn slots(&self) -> usize {
        self.settings.slots
    }

    fn wants_pod(&self) -> bool {
        true
    }

    async fn reconcile(&self, pool: &sqlx::PgPool) {
        reconcile(pool, self).await;
    }

    async fn start(&self, request: &StartRequest) -> Result<String, ExecutorError> {
        let pod = request.pod.clone().unwrap_or_default();
        let job = job::job_for(request, &pod, &self.settings.jobs);
        let namespace = job::namespace_for(&pod, &self.settings.jobs);
        let name = job::job_name(request.stage_run_id, request.attempt);
        let api: Api<Job> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &job).await {
            Ok(_) => {}
            // Made by an earlier try of this very attempt (the engine died before it stored
            // the handle): the same name is the same attempt.
            Err(e) if is_status(&e, 409) => {}
            Err(e) => {
                return Err(ExecutorError::Start(format!(
                    "creating Job {namespace}/{name}: {e}"
                )));
            }
        }
        Ok(job_key(&namespace, &name))
    }

    async fn cancel(&self, handle: &str) -> Result<(), ExecutorError> {
        let (namespace, name) = parse_handle(handle)?;
        let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        // Background propagation: the pods go too (the default for Jobs orphans them). The
        // runner gets SIGTERM and the pod's grace period to stop its steps and report.
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(api_error("deleting the Job", e)),
        }
    }

    async fn observe(&self, handle: &str) -> Result<Observation, ExecutorError> {
        let found = self.job_and_pods(handle).await?;
        let (job, pods) = match &found {
            Some((job, pods)) => (Some(job), pods.iter().collect::<Vec<_>>()),
            None => (None, Vec::new()),
        };
        let grace = chrono::TimeDelta::from_std(self.settings.unschedulable_after)
            .unwrap_or(chrono::TimeDelta::MAX);
        let observation = failure::classify(job, &pods, chrono::Utc::now(), grace);
        if let Observation::Exited { code, detail } = &observation
            && let Some((_, pods)) = &found
            && let Ok((namespace, _)) = parse_handle(handle)
            && let Some(output) = self.runner_output(namespace, pods).await
        {
            return Ok(Observation::Exited {
                code: *code,
                detail: format!("{detail}; last output: {output}"),
            });
        }
        Ok(observation)
    }
}

/// After a restart (and now and then): Jobs whose stage run is gone (its run was deleted) are
/// deleted, and so are Jobs still active for an attempt that no longer runs (cancelled or
/// ended while no engine watched); finished ones stay for their logs until their TTL. Jobs of
/// running attempts are left to run: their runners reconnect and the attempts finish.
pub async fn reconcile(pool: &sqlx::PgPool, executor: &KubeExecutor) {
    let jobs = match executor.list_jobs().await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list Jobs to reconcile");
            return;
        }
    };
    if jobs.is_empty() {
        return;
    }
    let ids: Vec<i64> = jobs.iter().filter_map(|j| j.stage_run_id).collect();
    let states = match crate::store::stages::attempt_states(pool, &ids).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read stage attempts to reconcile Jobs");
            return;
        }
    };
    let mut adopted = 0;
    for job in &jobs {
        let state = job
            .stage_run_id
            .and_then(|id| states.iter().find(|s| s.0 == id));
        let delete = match state {
            None => true,
            Some(&(_, attempt, status)) => {
                let running =
                    status == crate::store::StageStatus::Running && Some(attempt) == job.attempt;
                if running {
                    adopted += 1;
                }
                !running && !job.finished
            }
        };
        if delete {
            tracing::info!(job = %job.handle, "deleting a Job whose stage attempt is not running");
            if let Err(e) = executor.cancel(&job.handle).await {
                tracing::warn!(job = %job.handle, error = %e, "cannot delete an orphaned Job");
            }
        }
    }
    if adopted > 0 {
        tracing::info!(count = adopted, "re-adopted running Jobs");
    }
}
