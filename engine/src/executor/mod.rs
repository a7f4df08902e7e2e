//! Executors run stage attempts somewhere: as local processes, or as Kubernetes Jobs.
//! Whatever the executor, the attempt runs `gantry-runner`, which talks to the engine over HTTP;
//! the executor only starts it, stops it and tells whether it is still there.

pub mod kubernetes;
pub mod local;
pub mod source;
pub mod steps;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

/// Everything an executor needs to start one stage attempt.
#[derive(Clone, Debug)]
pub struct StartRequest {
    pub stage_run_id: i64,
    pub attempt: i32,
    pub run_id: i64,
    /// The stage's plan key, for names and labels.
    pub key: String,
    /// Where the runner reaches the engine.
    pub engine_url: String,
    /// The runner's bearer token, scoped to this attempt.
    pub token: String,
    /// What the stage's container needs (image, resources, services...), for executors that
    /// run it in a container ([`Executor::wants_pod`]); `None` for the others.
    pub pod: Option<PodRequest>,
}

/// The container side of a stage, with templates already rendered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodRequest {
    pub project: String,
    pub pipeline: String,
    /// The image the steps run in; `None`: the executor's default.
    pub image: Option<String>,
    pub timeout_secs: Option<u64>,
    pub requests: Quantities,
    pub limits: Quantities,
    pub services: Vec<ServiceRequest>,
    pub kubernetes: crate::pipeline::KubernetesOptions,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quantities {
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceRequest {
    pub name: String,
    pub image: String,
    pub env: Vec<(String, String)>,
    pub command: Option<Vec<String>>,
    /// (port, udp)
    pub ports: Vec<(u16, bool)>,
}

/// What an executor can tell about an attempt it started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    Running,
    /// Not running its stage yet, for a reason that may pass (a pod waiting for a node, an
    /// image being pulled): shown in the stage's log, not a failure.
    Waiting {
        why: String,
    },
    /// The runner ended; `code` is its exit status when known.
    Exited {
        code: Option<i32>,
        detail: String,
    },
    /// Nothing by that handle exists (any more).
    Gone,
    /// The executor saw the attempt fail where the runner cannot report it (its image cannot
    /// be pulled, its pod cannot be scheduled, was OOM-killed, evicted or deleted): `reason`
    /// is the stage's error; `timed_out` when a deadline ended it.
    Failed {
        reason: String,
        timed_out: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("cannot start the runner: {0}")]
    Start(String),
    #[error("malformed executor handle `{0}`")]
    BadHandle(String),
    #[error("{0}")]
    Other(String),
}

/// Shaped so a Kubernetes Job executor fits: `start` returns an opaque handle (a pid, a Job
/// name) that is stored with the attempt and is all `cancel` and `observe` get, so they work
/// for attempts started before an engine restart (re-adoption).
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// How many attempts this executor runs at once (per engine process).
    fn slots(&self) -> usize;
    async fn start(&self, request: &StartRequest) -> Result<String, ExecutorError>;
    /// Stops the attempt: the runner gets a chance to stop its steps, then is killed.
    async fn cancel(&self, handle: &str) -> Result<(), ExecutorError>;
    async fn observe(&self, handle: &str) -> Result<Observation, ExecutorError>;
    /// Whether `start` needs [`StartRequest::pod`].
    fn wants_pod(&self) -> bool {
        false
    }
    /// After a restart: adopts what this executor left running for attempts that still run,
    /// and removes what belongs to none (with the database at hand to tell which).
    async fn reconcile(&self, _pool: &sqlx::PgPool) {}
    /// What an operator should be told at start-up about how this executor runs stages, when
    /// it is a compromise (e.g. steps sharing the engine's user).
    fn notice(&self) -> Option<String> {
        None
    }
    /// Why this executor cannot run `pipeline` as written, checked when it is applied (a
    /// namespace it may not use, a feature the cluster lacks), so the author hears it then
    /// rather than when a stage fails to start.
    fn refusals(&self, _pipeline: &crate::pipeline::Pipeline) -> Vec<crate::pipeline::Diagnostic> {
        Vec::new()
    }
}

/// The executors an engine runs stages with, chosen at start-up, and the cluster deploy
/// stages roll out to (when there is one).
#[derive(Default)]
pub struct Executors {
    pub all: HashMap<&'static str, Arc<dyn Executor>>,
    pub kube: Option<kube::Client>,
}

impl Executors {
    pub fn add(&mut self, executor: Arc<dyn Executor>) {
        self.all.insert(executor.name(), executor);
    }
}
