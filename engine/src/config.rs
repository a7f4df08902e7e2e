//! How an engine process is set up: where it listens, its data directory and database, its
//! executors. Filled from the command line (`cli`) or by tests.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::executor::kubernetes::KubeSettings;

/// Log kept per stage attempt, by default (MiB).
pub const DEFAULT_LOG_CAP_MB: u64 = 1024;

/// Runs of one project running at once, by default.
pub const DEFAULT_PROJECT_RUNS: usize = 50;

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
    /// Runs of one project running at once at most, across the engines sharing the database;
    /// more wait, queued, until one ends.
    pub project_runs: usize,
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
    /// Received deliveries waiting to be stored at most; past that, receivers answer 503.
    pub webhook_queue: usize,
    /// Days a webhook delivery's payload is kept; the delivery and its summary stay.
    pub delivery_payload_days: u32,
    /// Log bytes kept per stage attempt; past it one line says so, and the rest is not kept.
    pub log_cap_bytes: u64,
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
            project_runs: DEFAULT_PROJECT_RUNS,
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
            webhook_queue: crate::webhook::intake::QUEUE_LIMIT,
            delivery_payload_days: 30,
            log_cap_bytes: DEFAULT_LOG_CAP_MB * 1024 * 1024,
            kubernetes: None,
        }
    }
}
