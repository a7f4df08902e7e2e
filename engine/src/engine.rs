//! The engine: the database, the executors and the keys, bundled and shared by the scheduler,
//! the HTTP API and the runner API. `Engine::start` runs all of them in one process; several
//! such processes may share one database.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

use crate::executor::Executor;
use crate::executor::kubernetes::{KubeError, KubeExecutor, KubeSettings};
use crate::executor::local::{LocalConfig, LocalExecutor, default_runner_path};
use crate::executor::steps::StepPolicy;
use crate::pipeline::Plan;
use crate::secret::SecretKey;
use crate::store::{self, StageRunId, Store, VersionId};
use crate::token::TokenKey;

#[derive(Clone, Debug)]
pub struct Config {
    /// Where the HTTP server listens.
    pub listen: SocketAddr,
    /// The URL runners use to reach this engine (default: `http://<listen>`).
    pub public_url: Option<String>,
    /// Embedded database, key file, workspaces and runner logs live here.
    pub data_dir: PathBuf,
    /// An existing PostgreSQL; without it the engine starts its own in `data_dir`.
    pub database_url: Option<String>,
    /// Names this engine process among replicas; stable across restarts so it can re-adopt
    /// the stage attempts it started.
    pub engine_id: Option<String>,
    pub local_slots: usize,
    pub runner_path: Option<PathBuf>,
    /// Base64 AES-256 key for secrets; default: a key file in `data_dir`.
    pub secret_key: Option<String>,
    pub heartbeat_secs: u64,
    /// A running attempt whose runner has been silent this long is failed.
    pub lost_after_secs: u64,
    pub kill_grace_secs: u64,
    /// Copied into every workspace before the runner starts (`gantry run` uses the current
    /// directory; with Git checkouts this is unset).
    pub source_dir: Option<PathBuf>,
    /// The user local steps run as when the engine is root (default `gantry-step`, created
    /// when missing); an engine that is not root runs them as itself.
    pub step_user: Option<String>,
    /// Registries (`host[:port]`) reached over plain HTTP instead of HTTPS.
    pub insecure_registries: Vec<String>,
    /// A docker `config.json` with registry credentials for image stages (a stage's
    /// `REGISTRY_AUTH` secret overrides it per registry).
    pub registry_auth: Option<PathBuf>,
    /// Where new stage attempts run: `local` or `kubernetes`.
    pub executor: String,
    /// The largest webhook delivery accepted.
    pub webhook_max_bytes: usize,
    /// A Kubernetes cluster to run stages in (executor `kubernetes`) and deploy to.
    pub kubernetes: Option<KubeSettings>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            data_dir: PathBuf::from(".gantry"),
            database_url: None,
            engine_id: None,
            local_slots: 8,
            runner_path: None,
            secret_key: None,
            heartbeat_secs: 5,
            lost_after_secs: 60,
            kill_grace_secs: 10,
            source_dir: None,
            step_user: None,
            insecure_registries: Vec::new(),
            registry_auth: None,
            executor: "local".into(),
            webhook_max_bytes: crate::webhook::DEFAULT_MAX_PAYLOAD_BYTES,
            kubernetes: None,
        }
    }
}

/// State shared by every part of a running engine.
pub struct Engine {
    pub store: Store,
    pub config: Config,
    pub id: String,
    pub url: String,
    pub tokens: TokenKey,
    pub secrets: SecretKey,
    pub executors: HashMap<&'static str, Arc<dyn Executor>>,
    /// The Kubernetes executor, when the engine has a cluster (also for reconciling its Jobs).
    pub kube_executor: Option<Arc<KubeExecutor>>,
    /// The cluster deploy stages roll out to.
    pub kube: Option<kube::Client>,
    /// Wakes this process's scheduler (fed by LISTEN on the wake channel).
    pub wake: Notify,
    /// Wakes this process's webhook delivery processor.
    pub deliveries: Notify,
    /// Stores received webhook deliveries, many to a statement under load.
    pub intake: crate::webhook::intake::Intake,
    /// Pipeline files per commit and recently read repository registrations.
    pub webhook_cache: crate::webhook::cache::WebhookCache,
    /// New log lines stored for a stage run (fed by LISTEN on the logs channel).
    pub logs: broadcast::Sender<StageRunId>,
    /// Who local steps run as and what they can reach.
    pub steps: StepPolicy,
    /// What this process measures for `/metrics` (counts come from the database).
    pub metrics: crate::http::metrics::Metrics,
    plans: Mutex<HashMap<VersionId, Arc<Plan>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    #[error("the stored pipeline version {0} no longer parses: {1}")]
    BadStoredPipeline(VersionId, String),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error("unknown executor `{0}` (expected `local` or `kubernetes`)")]
    UnknownExecutor(String),
    #[error("the `kubernetes` executor needs a cluster: give a kubeconfig or run in a cluster")]
    NoCluster,
    #[error(transparent)]
    Steps(#[from] crate::executor::steps::StepsError),
}

impl Engine {
    /// Connects to `database_url` and prepares keys and executors (it starts nothing).
    pub async fn new(
        config: Config,
        database_url: &str,
        url: String,
    ) -> Result<Arc<Engine>, EngineError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            crate::secret::SecretError::KeyFile {
                path: config.data_dir.display().to_string(),
                source: e,
            }
        })?;
        let store = Store::connect(database_url, 20).await?;
        let mut candidate = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut candidate);
        let token_key =
            store::settings::get_or_init(&store.pool, "runner_token_key", &candidate).await?;
        let secrets = match &config.secret_key {
            Some(text) => SecretKey::from_base64(text)?,
            None => SecretKey::load_or_create(&config.data_dir.join("secret.key"))?,
        };
        let runner_path = config
            .runner_path
            .clone()
            .unwrap_or_else(default_runner_path);
        let steps =
            StepPolicy::prepare(&config.data_dir, config.step_user.as_deref(), &runner_path)?;
        let local = LocalExecutor::new(LocalConfig {
            runner_path,
            work_dir: steps.data_dir.clone(),
            slots: config.local_slots,
            kill_grace: Duration::from_secs(config.kill_grace_secs),
            source_dir: config.source_dir.clone(),
            steps: steps.clone(),
        });
        let mut executors: HashMap<&'static str, Arc<dyn Executor>> = HashMap::new();
        executors.insert(local.name(), Arc::new(local));
        let (kube_executor, kube) = match &config.kubernetes {
            Some(settings) => {
                let mut settings = settings.clone();
                settings.jobs.kill_grace_secs = config.kill_grace_secs;
                // A cluster asked for (the Kubernetes executor, a kubeconfig) must work; one
                // only found in the environment (running in a pod) is a convenience for deploys.
                let required = config.executor == "kubernetes" || settings.kubeconfig.is_some();
                match KubeExecutor::connect(settings).await {
                    Ok((executor, client)) => {
                        let executor = Arc::new(executor);
                        executors
                            .insert(executor.name(), Arc::clone(&executor) as Arc<dyn Executor>);
                        (Some(executor), Some(client))
                    }
                    Err(e) if !required => {
                        tracing::warn!(error = %e, "no Kubernetes cluster: deploy stages will fail");
                        (None, None)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => (None, None),
        };
        match config.executor.as_str() {
            "local" => {}
            "kubernetes" if kube.is_some() => {}
            "kubernetes" => return Err(EngineError::NoCluster),
            other => return Err(EngineError::UnknownExecutor(other.to_owned())),
        }
        let id = config.engine_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}:{}", host.trim(), config.listen.port())
        });
        let (logs, _) = broadcast::channel(1024);
        Ok(Arc::new(Engine {
            store,
            id,
            url,
            tokens: TokenKey::new(token_key),
            secrets,
            executors,
            kube_executor,
            kube,
            wake: Notify::new(),
            deliveries: Notify::new(),
            intake: crate::webhook::intake::Intake::default(),
            webhook_cache: crate::webhook::cache::WebhookCache::default(),
            logs,
            steps,
            metrics: crate::http::metrics::Metrics::default(),
            plans: Mutex::default(),
            config,
        }))
    }

    /// The plan of a stored pipeline version, parsed once per process.
    pub async fn plan(&self, version: VersionId) -> Result<Arc<Plan>, EngineError> {
        if let Some(plan) = self
            .plans
            .lock()
            .ok()
            .and_then(|p| p.get(&version).cloned())
        {
            return Ok(plan);
        }
        let row = store::pipelines::version(&self.store.pool, version).await?;
        let plan = crate::pipeline::load("pipeline.yaml", &row.yaml)
            .map_err(|report| EngineError::BadStoredPipeline(version, report.to_string()))?;
        let plan = Arc::new(plan);
        if let Ok(mut plans) = self.plans.lock() {
            plans.insert(version, Arc::clone(&plan));
        }
        Ok(plan)
    }

    pub fn executor(&self, name: &str) -> Option<&Arc<dyn Executor>> {
        self.executors.get(name)
    }

    /// The executor new stage attempts go to.
    pub fn default_executor(&self) -> &'static str {
        match self.config.executor.as_str() {
            "kubernetes" => "kubernetes",
            _ => "local",
        }
    }
}
