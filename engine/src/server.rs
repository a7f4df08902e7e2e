//! One engine process: the embedded database when no `DATABASE_URL` is given, the HTTP server,
//! the scheduler and the notification listener, started together and stopped together.

use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine::{Config, Engine, EngineError};
use crate::executor::Executors;
use crate::executor::kubernetes::{KubeError, KubeExecutor};
use crate::executor::local::{LocalConfig, LocalExecutor, default_runner_path};
use crate::executor::steps::{StepPolicy, StepsError};
use crate::store::embedded::{EmbeddedError, EmbeddedPostgres};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Steps(#[from] StepsError),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error("unknown executor `{0}` (expected `local` or `kubernetes`)")]
    UnknownExecutor(String),
    #[error("the `kubernetes` executor needs a cluster: give a kubeconfig or run in a cluster")]
    NoCluster,
    #[error("creating the first administrator: {0}")]
    Bootstrap(#[from] crate::access::bootstrap::BootstrapError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How long stopping may take (SIGTERM to exit), whatever is in flight.
pub const STOP_WITHIN: Duration = Duration::from_secs(10);

pub struct Server {
    pub engine: Arc<Engine>,
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    embedded: Arc<tokio::sync::Mutex<Option<EmbeddedPostgres>>>,
}

impl Server {
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        // Not dumpable: a process of the same user (a step, when the engine is not root)
        // cannot read this process's memory or its environment in /proc.
        if let Err(e) = nix::sys::prctl::set_dumpable(false) {
            tracing::warn!(error = %e, "could not mark the engine non-dumpable");
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let embedded_dir = config.data_dir.join("postgres");
        let (embedded, url) = match &config.database_url {
            Some(url) => (None, url.clone()),
            None => {
                let pg = EmbeddedPostgres::start(&embedded_dir).await?;
                let url = pg.url().to_owned();
                (Some(pg), url)
            }
        };
        let watched = embedded.is_some();
        let embedded = Arc::new(tokio::sync::Mutex::new(embedded));
        let public = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let mut config = config;
        if config.engine_id.is_none() {
            // Stable per data directory and port, so a restarted engine re-adopts its runners.
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            config.engine_id = Some(format!("{}:{}", host.trim(), addr.port()));
        }
        let executors = executors(&config).await?;
        let engine = Engine::new(config, &url, public, executors).await?;
        if let Some(first) =
            crate::access::bootstrap::ensure_admin(&engine.store.pool, &engine.config.data_dir)
                .await?
        {
            tracing::info!(
                token_file = %first.token_file.display(),
                password_file = %first.password_file.display(),
                "created the first administrator `{}`: its API token and password are in these files",
                crate::access::bootstrap::ADMIN
            );
        }
        // Which engine the data directory's admin.token is for, so the CLI sends it nowhere
        // else; a failure costs only that convenience.
        let urls = [format!("http://{addr}"), engine.url.clone()];
        if let Err(e) = crate::access::bootstrap::record_engine(
            &engine.store.pool,
            &engine.config.data_dir,
            &urls,
        )
        .await
        {
            tracing::warn!(error = %e, "could not record this engine's URL beside admin.token");
        }
        let (shutdown, rx) = watch::channel(false);
        let watching = watched.then(|| {
            tokio::spawn(watch_embedded(
                Arc::clone(&embedded),
                embedded_dir.clone(),
                rx.clone(),
            ))
        });
        // Several delivery processors: deliveries of different pipelines do not wait for each
        // other (SKIP LOCKED hands each to one of them).
        let mut tasks: Vec<_> = (0..crate::webhook::process::WORKERS)
            .map(|_| {
                tokio::spawn(crate::webhook::process::worker(
                    Arc::clone(&engine),
                    rx.clone(),
                ))
            })
            .collect();
        tasks.extend([
            tokio::spawn(crate::scheduler::listen(Arc::clone(&engine), rx.clone())),
            tokio::spawn(crate::scheduler::run(Arc::clone(&engine), rx.clone())),
            tokio::spawn(crate::webhook::cron::run(Arc::clone(&engine), rx.clone())),
            tokio::spawn(crate::webhook::retention::run(
                Arc::clone(&engine),
                rx.clone(),
            )),
            tokio::spawn(crate::webhook::commit_status::run(
                Arc::clone(&engine),
                rx.clone(),
            )),
            tokio::spawn({
                let engine = Arc::clone(&engine);
                async move {
                    let app = crate::http::router()
                        .merge(crate::ui::router(Arc::clone(&engine)))
                        .layer(tower_http::trace::TraceLayer::new_for_http())
                        .with_state(engine);
                    if let Err(e) = crate::http::serve(listener, app, rx).await {
                        tracing::error!(error = %e, "HTTP server failed");
                    }
                }
            }),
        ]);

        tasks.extend(watching);
        tracing::info!(addr = %addr, engine = %engine.id, "gantry engine started");
        Ok(Server {
            engine,
            addr,
            shutdown,
            tasks,
            embedded,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and scheduling, within [`STOP_WITHIN`]: what has not finished by then
    /// (a provider's API that hangs, a git fetch, a client holding a log stream open) is
    /// dropped, and left to the next engine — a commit status is leased, a delivery stays
    /// `received`, a stage's runner carries on. Running stages are left to their runners: a
    /// restarted engine picks them up again.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let aborts: Vec<_> = self.tasks.iter().map(JoinHandle::abort_handle).collect();
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(STOP_WITHIN, all).await.is_err() {
            tracing::warn!(
                within_secs = STOP_WITHIN.as_secs(),
                "some work did not stop in time and was dropped; another engine takes it up"
            );
            for abort in aborts {
                abort.abort();
            }
        }
        // Connections may still be held by what was dropped: closing waits only so long.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.engine.store.pool.close()).await;
        if let Some(pg) = self.embedded.lock().await.take() {
            pg.stop().await;
        }
    }
}

/// How often the engine checks that its embedded PostgreSQL is still there.
const EMBEDDED_CHECK: Duration = Duration::from_secs(2);

/// Starts the embedded PostgreSQL again when it dies (killed, or the OOM killer's choice): the
/// engine's connections come back by themselves once it is up, on the same socket.
async fn watch_embedded(
    server: Arc<tokio::sync::Mutex<Option<EmbeddedPostgres>>>,
    dir: std::path::PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EMBEDDED_CHECK) => {}
            _ = shutdown.changed() => return,
        }
        let mut current = server.lock().await;
        if current.as_ref().is_none_or(EmbeddedPostgres::is_running) {
            continue;
        }
        tracing::warn!(data_dir = %dir.display(), "the embedded PostgreSQL stopped; starting it again");
        match EmbeddedPostgres::start(&dir).await {
            Ok(started) => *current = Some(started),
            Err(e) => {
                tracing::error!(error = %e, "the embedded PostgreSQL does not start again; retrying")
            }
        }
    }
}

/// The executors `config` asks for: the local one always (the embedded default, and where
/// stages go without a cluster), and the Kubernetes one when a cluster is configured.
pub async fn executors(config: &Config) -> Result<Executors, ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StepsError::Io {
        action: "creating",
        path: config.data_dir.clone(),
        source,
    })?;
    let runner_path = config
        .runner_path
        .clone()
        .unwrap_or_else(default_runner_path);
    let steps = StepPolicy::prepare(&config.data_dir, config.step_user.as_deref(), &runner_path)?;
    let mut executors = Executors::default();
    executors.add(Arc::new(LocalExecutor::new(LocalConfig {
        runner_path,
        work_dir: steps.data_dir.clone(),
        slots: config.local_slots,
        kill_grace: std::time::Duration::from_secs(config.kill_grace_secs),
        source_dir: config.source_dir.clone(),
        steps,
    })));
    if let Some(settings) = &config.kubernetes {
        let mut settings = settings.clone();
        settings.jobs.kill_grace_secs = config.kill_grace_secs;
        // A cluster asked for (the Kubernetes executor, a kubeconfig) must work; one only
        // found in the environment (running in a pod) is a convenience for deploys.
        let required = config.executor == "kubernetes" || settings.kubeconfig.is_some();
        match KubeExecutor::connect(settings).await {
            Ok((executor, client)) => {
                executors.add(Arc::new(executor));
                executors.kube = Some(client);
            }
            Err(e) if !required => {
                tracing::warn!(error = %e, "no Kubernetes cluster: deploy stages will fail");
            }
            Err(e) => return Err(e.into()),
        }
    }
    match config.executor.as_str() {
        "local" => {}
        "kubernetes" if executors.kube.is_some() => {}
        "kubernetes" => return Err(ServerError::NoCluster),
        other => return Err(ServerError::UnknownExecutor(other.to_owned())),
    }
    Ok(executors)
}
