//! The engine: the database, the executors and the keys, bundled and shared by the scheduler,
//! the HTTP API and the runner API. `server::Server::start` runs all of them in one process;
//! several such processes may share one database.
//!
//! The engine knows executors only by their trait: which ones exist is decided at start-up
//! ([`crate::server::executors`]) and handed in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast};

pub use crate::config::Config;
use crate::executor::{Executor, Executors};
use crate::pipeline::Plan;
use crate::secret::SecretKey;
use crate::store::{self, StageRunId, Store, VersionId};
use crate::token::TokenKey;

/// State shared by every part of a running engine.
pub struct Engine {
    pub store: Store,
    pub config: Config,
    pub id: String,
    pub url: String,
    pub tokens: TokenKey,
    pub secrets: SecretKey,
    pub executors: HashMap<&'static str, Arc<dyn Executor>>,
    /// The cluster deploy stages roll out to.
    pub kube: Option<kube::Client>,
    /// Wakes this process's scheduler (fed by LISTEN on the wake channel).
    pub wake: Notify,
    /// Wakes this process's webhook delivery processor.
    pub deliveries: Notify,
    /// The deliveries this process's processors are working on.
    pub delivery_batches: crate::webhook::in_flight::InFlight,
    /// Stores received webhook deliveries, many to a statement under load.
    pub intake: crate::webhook::intake::Intake,
    /// Pipeline files per commit and recently read repository registrations.
    pub webhook_cache: crate::webhook::cache::WebhookCache,
    /// New log lines stored for a stage run (fed by LISTEN on the logs channel).
    pub logs: broadcast::Sender<StageRunId>,
    /// What this process measures for `/metrics` (counts come from the database).
    pub metrics: crate::metrics::Metrics,
    /// What each starting attempt's pod was last noted to wait for (stage run, attempt).
    pub waiting_notes: Mutex<HashMap<(i64, i32), String>>,
    /// When each attempt's runner was first seen running without having called in yet.
    pub running_unheard: Mutex<HashMap<(i64, i32), std::time::Instant>>,
    /// Failed sign-ins, per user and per address: who must wait before trying again.
    pub logins: crate::access::throttle::LoginThrottle,
    /// The pipeline whose run this process's scheduler advanced last: the next turn goes to
    /// the pipeline after it (`runs::lock_next_dirty`).
    pub advanced_last: std::sync::atomic::AtomicI64,
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
}

impl Engine {
    /// Connects to `database_url` and prepares the keys (it starts nothing); `executors` run
    /// the stages.
    pub async fn new(
        config: Config,
        database_url: &str,
        url: String,
        executors: Executors,
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
            executors: executors.all,
            kube: executors.kube,
            wake: Notify::new(),
            deliveries: Notify::new(),
            delivery_batches: crate::webhook::in_flight::InFlight::default(),
            intake: crate::webhook::intake::Intake::new(config.webhook_queue),
            webhook_cache: crate::webhook::cache::WebhookCache::default(),
            logs,
            metrics: crate::metrics::Metrics::default(),
            advanced_last: std::sync::atomic::AtomicI64::new(0),
            logins: crate::access::throttle::LoginThrottle::default(),
            waiting_notes: Mutex::default(),
            running_unheard: Mutex::default(),
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
