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
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

use super::{Executor, ExecutorError, Observation, StartRequest};
use job::{JOB_NAME_LABEL, JobSettings, LABEL_ATTEMPT, LABEL_STAGE, STAGE_CONTAINER};
use watch::{Pictures, job_key};

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
    /// How long a pod's images may take to pull (and a Secret it needs to appear): the
    /// kubelet retries both, so Gantry waits this long before failing the attempt.
    pub pull_after: Duration,
    /// The namespaces this engine may use, when its RBAC is namespaced (Roles, not a
    /// ClusterRole): it then watches and lists each of them instead of the whole cluster.
    /// Empty: cluster-wide.
    pub namespaces: Vec<String>,
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
            pull_after: Duration::from_secs(300),
            namespaces: Vec::new(),
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
    #[error(
        "the cluster runs Kubernetes {found}; Gantry needs {MIN_MAJOR}.{MIN_MINOR} or newer (Jobs' \
         `batch.kubernetes.io/job-name` pod label)"
    )]
    TooOld { found: String },
    #[error("the cluster's version `{0}` cannot be read as MAJOR.MINOR")]
    Version(String),
    #[error(
        "the Jobs namespace `{namespace}` is not among the namespaces this engine may use \
         (--kube-namespaces {allowed})"
    )]
    Namespace { namespace: String, allowed: String },
    #[error("the engine's Kubernetes account may not list {what} in {place} ({detail}): {hint}")]
    Forbidden {
        what: &'static str,
        place: String,
        detail: String,
        hint: &'static str,
    },
}

/// The oldest Kubernetes Gantry runs stages on: 1.27 put the `batch.kubernetes.io/job-name`
/// label on Jobs' pods, which the watches select them by.
pub const MIN_MAJOR: u32 = 1;
pub const MIN_MINOR: u32 = 27;
/// `services` are native sidecars (init containers with `restartPolicy: Always`): on by
/// default from 1.29. An older API server drops the field silently and the pod never starts.
pub const SIDECARS_MINOR: u32 = 29;

/// The API server's `major.minor` (`/version`; managed clusters write the minor as `29+`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    pub fn parse(major: &str, minor: &str) -> Option<ServerVersion> {
        let number = |s: &str| -> Option<u32> {
            let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        Some(ServerVersion {
            major: number(major)?,
            minor: number(minor)?,
        })
    }

    pub fn has_sidecars(self) -> bool {
        (self.major, self.minor) >= (1, SIDECARS_MINOR)
    }
}

impl std::fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Reads the API server's version and refuses one older than Gantry supports.
pub async fn server_version(client: &Client) -> Result<ServerVersion, KubeError> {
    let info = client.apiserver_version().await?;
    let version = ServerVersion::parse(&info.major, &info.minor)
        .ok_or_else(|| KubeError::Version(format!("{}.{}", info.major, info.minor)))?;
    if (version.major, version.minor) < (MIN_MAJOR, MIN_MINOR) {
        return Err(KubeError::TooOld {
            found: info.git_version,
        });
    }
    Ok(version)
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
    let namespace = jobs_namespace(settings, &config.default_namespace)?;
    Ok((Client::try_from(config)?, namespace))
}

/// Where Jobs go when a pipeline names no namespace: `--kube-namespace`, else the kubeconfig
/// context's; with `--kube-namespaces`, one of those (the first when the context's is not).
fn jobs_namespace(settings: &KubeSettings, context: &str) -> Result<String, KubeError> {
    let allowed = &settings.namespaces;
    let chosen = match &settings.namespace {
        Some(namespace) => namespace.clone(),
        None if allowed.is_empty() || allowed.iter().any(|n| n == context) => context.to_owned(),
        None => allowed[0].clone(),
    };
    if !allowed.is_empty() && !allowed.contains(&chosen) {
        return Err(KubeError::Namespace {
            namespace: chosen,
            allowed: allowed.join(","),
        });
    }
    Ok(chosen)
}

pub struct KubeExecutor {
    client: Client,
    settings: KubeSettings,
    /// The watches' stores; dropping the executor stops the watches.
    pictures: Pictures,
    server: ServerVersion,
}

fn parse_handle(handle: &str) -> Result<(&str, &str), ExecutorError> {
    handle
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .ok_or_else(|| ExecutorError::BadHandle(handle.to_owned()))
}

/// How long a Job may be without a pod before its events are read for why.
const REFUSED_AFTER_SECS: i64 = 2;

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

/// Lists Jobs and pods once in every scope the watches will cover, so that RBAC which does not
/// fit the mode (a namespaced binding with a cluster-wide engine) stops the start with the way
/// out, instead of watches that retry 403 forever and a cache that never fills.
async fn check_access(client: &Client, namespaces: &[String]) -> Result<(), KubeError> {
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let params = ListParams::default().labels(&watch::selector()).limit(1);
    for scope in scopes {
        let place = scope.map_or_else(
            || "all namespaces".to_owned(),
            |n| format!("namespace `{n}`"),
        );
        let hint = if scope.is_none() {
            "bind deploy/rbac.yaml's ClusterRole with a ClusterRoleBinding, or give the engine \
             the namespaces it is bound in with --kube-namespaces (deploy/namespaced/rbac.yaml)"
        } else {
            "bind the engine's Role in this namespace (deploy/namespaced/rbac.yaml) or leave it \
             out of --kube-namespaces"
        };
        let forbidden = |what: &'static str, e: kube::Error| match e {
            kube::Error::Api(status) if status.code == 403 => KubeError::Forbidden {
                what,
                place: place.clone(),
                detail: status.message.clone(),
                hint,
            },
            e => KubeError::Client(e),
        };
        let (jobs, pods): (Api<Job>, Api<Pod>) = match scope {
            Some(n) => (
                Api::namespaced(client.clone(), n),
                Api::namespaced(client.clone(), n),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        jobs.list(&params).await.map_err(|e| forbidden("Jobs", e))?;
        pods.list(&params).await.map_err(|e| forbidden("pods", e))?;
    }
    Ok(())
}

impl KubeExecutor {
    /// Connects, checks the cluster's version and starts the watches.
    /// `settings.jobs.namespace` is filled from the kubeconfig when `settings.namespace` is
    /// unset.
    pub async fn connect(mut settings: KubeSettings) -> Result<(KubeExecutor, Client), KubeError> {
        let (client, namespace) = connect(&settings).await?;
        settings.jobs.namespace = namespace;
        let executor = Self::with_client(client.clone(), settings).await?;
        Ok((executor, client))
    }

    /// Checks the cluster's version and starts the watches, on a client made elsewhere.
    pub async fn with_client(
        client: Client,
        settings: KubeSettings,
    ) -> Result<KubeExecutor, KubeError> {
        let server = server_version(&client).await?;
        check_access(&client, &settings.namespaces).await?;
        tracing::info!(
            version = %server,
            namespaces = %if settings.namespaces.is_empty() {
                "all".to_owned()
            } else {
                settings.namespaces.join(",")
            },
            "connected to Kubernetes"
        );
        let pictures = Pictures::start(&client, &settings.namespaces);
        Ok(KubeExecutor {
            client,
            settings,
            pictures,
            server,
        })
    }

    pub fn server_version(&self) -> ServerVersion {
        self.server
    }

    /// Why a stage whose Job would go to `namespace`, with `services` sidecars, cannot run
    /// here; `None` when it can.
    fn refusal(&self, namespace: &str, services: bool) -> Option<String> {
        if !self.settings.namespaces.is_empty()
            && !self.settings.namespaces.iter().any(|n| n == namespace)
        {
            return Some(format!(
                "namespace `{namespace}` is not one this engine may use (it was given {})",
                self.settings.namespaces.join(", ")
            ));
        }
        if services && !self.server.has_sidecars() {
            return Some(format!(
                "`services` run as native sidecar containers, which need Kubernetes 1.{SIDECARS_MINOR} \
                 or newer; this cluster runs {}",
                self.server
            ));
        }
        None
    }

    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    /// Watch events handled so far.
    pub fn watch_events(&self) -> u64 {
        self.pictures.events()
    }

    pub fn watch_synced(&self) -> bool {
        self.pictures.synced()
    }

    /// The Jobs Gantry made, in every namespace it may use, straight from the API server.
    pub async fn list_jobs(&self) -> Result<Vec<ListedJob>, ExecutorError> {
        let mut out = Vec::new();
        for scope in self.pictures.scopes() {
            let api: Api<Job> = match scope {
                Some(namespace) => Api::namespaced(self.client.clone(), namespace),
                None => Api::all(self.client.clone()),
            };
            self.list_jobs_in(&api, &mut out).await?;
        }
        Ok(out)
    }

    /// One scope's Jobs, page by page (`limit`/`continue`: a cluster may hold many).
    async fn list_jobs_in(
        &self,
        api: &Api<Job>,
        out: &mut Vec<ListedJob>,
    ) -> Result<(), ExecutorError> {
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
        Ok(())
    }

    /// The Job and its pods: from the watches' picture, or from the API server when the
    /// picture does not hold the Job (yet: a Job just created may not have been seen).
    async fn job_and_pods(&self, handle: &str) -> Result<Option<(Job, Vec<Pod>)>, ExecutorError> {
        if let Some(found) = self.pictures.get(handle) {
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

    /// Why the Job controller could not create the Job's pod, from the Job's `FailedCreate`
    /// events (a pod refused by Pod Security admission, over a quota), once the Job has been
    /// without a pod for a moment.
    async fn refused_pods(&self, job: &Job) -> Option<String> {
        let created = job.metadata.creation_timestamp.as_ref()?.0.as_second();
        if chrono::Utc::now().timestamp() - created < REFUSED_AFTER_SECS {
            return None;
        }
        let namespace = job.metadata.namespace.as_deref()?;
        let name = job.metadata.name.as_deref()?;
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), namespace);
        let params = ListParams::default().fields(&format!(
            "involvedObject.kind=Job,involvedObject.name={name},reason=FailedCreate"
        ));
        let listed = events.list(&params).await.ok()?;
        let message = listed
            .items
            .iter()
            .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0.as_second()))?
            .message
            .clone()?;
        Some(format!(
            "Kubernetes refused to create the stage's pod: {}",
            message.trim()
        ))
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

    fn refusals(&self, pipeline: &crate::pipeline::Pipeline) -> Vec<crate::pipeline::Diagnostic> {
        let namespace = pipeline
            .kubernetes
            .namespace
            .clone()
            .unwrap_or_else(|| self.settings.jobs.namespace.clone());
        let mut out = Vec::new();
        if let Some(message) = self.refusal(&namespace, false) {
            out.push(crate::pipeline::Diagnostic {
                pos: pipeline.name.pos,
                message,
            });
        }
        for stage in pipeline.stages.iter().chain(&pipeline.finally) {
            if let Some(service) = stage.services.first()
                && let Some(message) = self.refusal(&namespace, true)
                && !out.iter().any(|d| d.message == message)
            {
                out.push(crate::pipeline::Diagnostic {
                    pos: service.name.pos,
                    message,
                });
            }
        }
        out
    }

    async fn start(&self, request: &StartRequest) -> Result<String, ExecutorError> {
        let pod = request.pod.clone().unwrap_or_default();
        let job = job::job_for(request, &pod, &self.settings.jobs);
        let namespace = job::namespace_for(&pod, &self.settings.jobs);
        if let Some(why) = self.refusal(&namespace, !pod.services.is_empty()) {
            return Err(ExecutorError::Start(why));
        }
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
        let delta = |d: Duration| chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX);
        let allow = failure::Allowances {
            unschedulable: delta(self.settings.unschedulable_after),
            pull: delta(self.settings.pull_after),
        };
        let observation = failure::classify(job, &pods, chrono::Utc::now(), allow);
        // No pod at all for a while: the Job controller may be refused (Pod Security
        // admission, a quota). It says why only in the Job's events.
        if pods.is_empty()
            && let Some(job) = job
            && let Some(refused) = self.refused_pods(job).await
        {
            return Ok(Observation::Failed {
                reason: refused,
                timed_out: false,
            });
        }
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
