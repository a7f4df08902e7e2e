//! The `gantry` command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::commands;

#[derive(Parser, Debug)]
#[command(name = "gantry", version, about = "Gantry CI/CD engine")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check pipeline files and print every problem as FILE:LINE:COL: message, with the line
    /// it points at and a caret under the column.
    Validate {
        /// Pipeline files (e.g. .gantry.yaml).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also print each valid file's plan (stage instances and what they need).
        #[arg(long)]
        plan: bool,
    },
    /// Print the JSON Schema of the pipeline format (for editors' YAML language servers).
    Schema,
    /// Run the engine: API, scheduler and local executor (with its own PostgreSQL unless
    /// DATABASE_URL is set).
    Serve(Box<ServeArgs>),
    /// Run a pipeline file once, from the current directory, and exit with its status.
    Run(RunArgs),
    /// Store pipeline files on a running engine (a new version of each that changed).
    Apply(ApplyArgs),
    /// Start a run of a pipeline and print its id and number.
    Trigger(TriggerArgs),
    /// List recent runs, newest first.
    Runs(RunsArgs),
    /// Show a run with its stages, their statuses, durations and errors.
    Status {
        /// The run: ID, PIPELINE#N, PROJECT/PIPELINE#N or PIPELINE N.
        #[arg(value_name = "RUN", required = true, num_args = 1..=2)]
        run: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a stage's log (-f: follow it live until the stage ends).
    Logs(LogsArgs),
    /// Cancel a run, or one stage of it.
    Cancel {
        /// The run (ID, PIPELINE#N, PROJECT/PIPELINE#N or PIPELINE N), then a stage's key to
        /// cancel only that stage.
        #[arg(value_names = ["RUN", "STAGE"], required = true, num_args = 1..=3)]
        run: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Approve a stage waiting for approval.
    Approve(DecisionArgs),
    /// Reject a stage waiting for approval (the stage fails).
    Reject(DecisionArgs),
    /// Start a new run of a finished run's pipeline version, params and commit.
    Rerun(RerunArgs),
    /// Set and list a project's secrets (values are write-only).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// A Kubernetes Deployment's rollout history, and rolling it back.
    Deploy {
        #[command(subcommand)]
        command: DeployCommand,
    },
    /// Container images Gantry itself needs.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// Build the runner image Kubernetes Jobs copy gantry-runner from (B2I, no Docker daemon)
    /// and push it; prints the pinned image to give `gantry serve --runner-image`.
    BuildRunner(BuildRunnerArgs),
}

#[derive(clap::Args, Debug)]
pub struct BuildRunnerArgs {
    /// The base image (any image; the runner needs none of its files).
    #[arg(long)]
    pub base: String,
    /// Where to push, e.g. registry.example.com/gantry/gantry-runner:0.1.0.
    #[arg(long)]
    pub output: String,
    /// The gantry-runner binary (default: the one next to gantry). Build it statically
    /// (`--target x86_64-unknown-linux-musl`) to run in stage images of any libc.
    #[arg(long)]
    pub runner: Option<PathBuf>,
    /// A registry (`host[:port]`) to reach over plain HTTP (repeatable).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// A docker config.json with registry credentials.
    #[arg(long, env = "GANTRY_REGISTRY_AUTH")]
    pub registry_auth: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum DeployCommand {
    /// The revisions of NAMESPACE/NAME, as `kubectl rollout history` shows them.
    History {
        /// The Deployment, as NAMESPACE/NAME (one a pipeline of --project deploys to).
        target: String,
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Roll NAMESPACE/NAME back, as `kubectl rollout undo` does.
    Undo {
        /// The Deployment, as NAMESPACE/NAME (one a pipeline of --project deploys to).
        target: String,
        /// The revision to go back to (default: the one before the current).
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
        #[command(flatten)]
        project: ProjectArgs,
    },
}

/// The engine the client commands talk to.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// The engine's URL.
    #[arg(long, env = "GANTRY_URL", default_value = crate::client::DEFAULT_URL)]
    pub server: String,
    /// An API token (default: the first administrator's admin.token in the local engine's
    /// data directory, when this user can read it and that engine recorded this --server as
    /// its URL).
    #[arg(long, env = "GANTRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServerArgs {
    /// The token to send and where it came from: `--token`/`GANTRY_TOKEN`, else
    /// `admin.token` in the data directory (`GANTRY_DATA_DIR` or the default) when the engine
    /// that wrote it is the one asked, so the CLI works out of the box next to a local
    /// `gantry serve` and sends that token nowhere else.
    pub fn credential(&self) -> crate::client::credential::Credential {
        let dir = std::env::var_os("GANTRY_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(default_data_dir);
        let env = std::env::var("GANTRY_TOKEN").ok();
        crate::client::credential::resolve(
            &self.server,
            self.token.as_deref(),
            env.as_deref(),
            &dir,
        )
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ProjectArgs {
    /// The project.
    #[arg(long, env = "GANTRY_PROJECT", default_value = "default")]
    pub project: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// A pipeline file (repeatable).
    #[arg(short = 'f', long = "file", required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub project: ProjectArgs,
}

#[derive(clap::Args, Debug)]
pub struct TriggerArgs {
    /// The pipeline's name.
    pub pipeline: String,
    /// A parameter, as NAME=VALUE (repeatable).
    #[arg(long = "param", short = 'p', value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Print the stages and their logs until the run ends; exit 1 unless it succeeded.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub project: ProjectArgs,
}

#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    /// Only runs of this pipeline (of --project, `default` unless given).
    pub pipeline: Option<String>,
    /// How many runs.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
    /// Only this project's runs (without it and without a pipeline: every project you may
    /// read).
    #[arg(long, env = "GANTRY_PROJECT")]
    pub project: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The run (ID, PIPELINE#N, PROJECT/PIPELINE#N or PIPELINE N), then the stage's key (its
    /// name; `name[k=v]` for a matrix instance).
    #[arg(value_names = ["RUN", "STAGE"], required = true, num_args = 2..=3)]
    pub run: Vec<String>,
    /// Follow the log live (through retries) until the stage ends; exit 1 if it failed.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// This attempt instead of the current one.
    #[arg(long)]
    pub attempt: Option<i32>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(clap::Args, Debug)]
pub struct DecisionArgs {
    /// The run (ID, PIPELINE#N, PROJECT/PIPELINE#N or PIPELINE N), then the stage waiting for
    /// approval.
    #[arg(value_names = ["RUN", "STAGE"], required = true, num_args = 2..=3)]
    pub run: Vec<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(clap::Args, Debug)]
pub struct RerunArgs {
    /// The finished run: ID, PIPELINE#N, PROJECT/PIPELINE#N or PIPELINE N.
    #[arg(value_name = "RUN", required = true, num_args = 1..=2)]
    pub run: Vec<String>,
    /// Keep the results of stages that succeeded; run only the rest.
    #[arg(long)]
    pub failed: bool,
    /// Print the stages and their logs until the run ends; exit 1 unless it succeeded.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Create or replace a secret; the value is read from stdin (never from the command line).
    Set {
        /// The secret's name.
        name: String,
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// List the project's secret names.
    List {
        #[command(flatten)]
        project: ProjectArgs,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// Where the embedded database, keys and workspaces live.
    #[arg(long, env = "GANTRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use this PostgreSQL instead of starting one.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Stage attempts run at once by the local executor.
    #[arg(long, default_value_t = 8)]
    pub slots: usize,
    /// Runs of one project running at once (across engines sharing the database); more wait,
    /// queued, so one project's flood cannot take every slot.
    #[arg(long, default_value_t = crate::config::DEFAULT_PROJECT_RUNS, env = "GANTRY_PROJECT_RUNS")]
    pub project_runs: usize,
    /// Log kept per stage attempt, in MiB: past it one line says the log was truncated, later
    /// lines are not kept, and the stage goes on (judged by its exit code).
    #[arg(long, default_value_t = crate::config::DEFAULT_LOG_CAP_MB, env = "GANTRY_LOG_CAP_MB")]
    pub log_cap_mb: u64,
    /// The gantry-runner binary (default: next to this program, else on PATH).
    #[arg(long, env = "GANTRY_RUNNER")]
    pub runner: Option<PathBuf>,
    /// Base64 32-byte key encrypting secrets (default: a key file in the data directory).
    #[arg(long, env = "GANTRY_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// A registry (HOST[:PORT]) image stages reach over plain HTTP (repeatable, or
    /// comma-separated in the variable).
    #[arg(
        long = "insecure-registry",
        env = "GANTRY_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// A docker config.json with registry credentials for image stages.
    #[arg(long, env = "GANTRY_REGISTRY_AUTH")]
    pub registry_auth: Option<PathBuf>,
    /// The unprivileged user local steps run as when gantry runs as root (created when
    /// missing; default gantry-step). Without root, steps run as gantry's own user.
    #[arg(long, env = "GANTRY_STEP_USER")]
    pub step_user: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "GANTRY_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// URL runners use to reach this engine (default: http://LISTEN).
    #[arg(long, env = "GANTRY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Names this engine among replicas sharing a database (default: HOST:PORT).
    #[arg(long, env = "GANTRY_ENGINE_ID")]
    pub engine_id: Option<String>,
    /// The largest webhook delivery accepted, in bytes (larger ones get 413).
    #[arg(long, default_value_t = crate::webhook::DEFAULT_MAX_PAYLOAD_BYTES, env = "GANTRY_WEBHOOK_MAX_BYTES")]
    pub webhook_max_bytes: usize,
    /// Received webhook deliveries waiting to be stored at most; past that, 503 with
    /// Retry-After (providers deliver again).
    #[arg(long, default_value_t = crate::webhook::intake::QUEUE_LIMIT, env = "GANTRY_WEBHOOK_QUEUE")]
    pub webhook_queue: usize,
    /// Days a webhook delivery's payload is kept (the delivery, its summary and runs stay).
    #[arg(long, default_value_t = 30, env = "GANTRY_DELIVERY_PAYLOAD_DAYS")]
    pub delivery_payload_days: u32,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub kubernetes: KubeArgs,
}

/// Where stages run, and the cluster for Jobs and deploys.
#[derive(clap::Args, Debug)]
pub struct KubeArgs {
    /// Where stage attempts run: `local` processes or `kubernetes` Jobs.
    #[arg(long, env = "GANTRY_EXECUTOR", default_value = "local")]
    pub executor: String,
    /// A kubeconfig file (default: in-cluster config, else KUBECONFIG or ~/.kube/config).
    #[arg(long, env = "GANTRY_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, env = "GANTRY_KUBE_CONTEXT")]
    pub kube_context: Option<String>,
    /// Namespace for Jobs of pipelines that name none (default: the context's namespace).
    #[arg(long, env = "GANTRY_KUBE_NAMESPACE")]
    pub kube_namespace: Option<String>,
    /// The image holding gantry-runner (see `gantry images build-runner`).
    #[arg(
        long,
        env = "GANTRY_RUNNER_IMAGE",
        default_value = "gantry-runner:latest"
    )]
    pub runner_image: String,
    /// The image `steps` stages run in when they name none.
    #[arg(
        long,
        env = "GANTRY_DEFAULT_IMAGE",
        default_value = "debian:bookworm-slim"
    )]
    pub default_image: String,
    /// How many stages this engine runs as Jobs at once.
    #[arg(long, default_value_t = 64)]
    pub kube_slots: usize,
    /// Seconds finished Jobs are kept (ttlSecondsAfterFinished).
    #[arg(long, default_value_t = 3600)]
    pub job_ttl_secs: i32,
    /// Seconds a stage's pod may wait for a node before the attempt fails.
    #[arg(long, default_value_t = 300)]
    pub unschedulable_secs: u64,
    /// Seconds a stage's pod may spend pulling its images (or waiting for a Secret it
    /// mounts) before the attempt fails; the kubelet keeps retrying until then.
    #[arg(long, default_value_t = 300)]
    pub image_pull_secs: u64,
    /// Namespaces this engine may use, comma-separated, when its RBAC is namespaced (a Role
    /// and RoleBinding in each, no ClusterRole): it then watches and lists each of them
    /// instead of the whole cluster, and refuses pipelines that name another.
    #[arg(long, env = "GANTRY_KUBE_NAMESPACES", value_delimiter = ',')]
    pub kube_namespaces: Vec<String>,
}

impl KubeArgs {
    /// Kubernetes settings when the engine should talk to a cluster: the Kubernetes
    /// executor, a kubeconfig, or running inside a cluster (deploy stages need one).
    pub fn settings(&self) -> Option<crate::executor::kubernetes::KubeSettings> {
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        if self.executor != "kubernetes" && self.kubeconfig.is_none() && !in_cluster {
            return None;
        }
        Some(crate::executor::kubernetes::KubeSettings {
            kubeconfig: self.kubeconfig.clone(),
            context: self.kube_context.clone(),
            namespace: self.kube_namespace.clone(),
            jobs: crate::executor::kubernetes::job::JobSettings {
                runner_image: self.runner_image.clone(),
                default_image: self.default_image.clone(),
                ttl_secs: self.job_ttl_secs,
                start_allowance_secs: self.unschedulable_secs + self.image_pull_secs,
                ..crate::executor::kubernetes::job::JobSettings::default()
            },
            slots: self.kube_slots.max(1),
            unschedulable_after: std::time::Duration::from_secs(self.unschedulable_secs),
            pull_after: std::time::Duration::from_secs(self.image_pull_secs),
            namespaces: self
                .kube_namespaces
                .iter()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect(),
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The pipeline file.
    pub file: PathBuf,
    /// A parameter, as NAME=VALUE (repeatable).
    #[arg(long = "param", short = 'p', value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

fn default_data_dir() -> PathBuf {
    // As root the embedded PostgreSQL runs as the `postgres` user, which cannot enter /root.
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/gantry");
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("gantry")
}

impl EngineArgs {
    pub fn config(&self) -> crate::engine::Config {
        crate::engine::Config {
            data_dir: self.data_dir.clone().unwrap_or_else(default_data_dir),
            database_url: self.database_url.clone(),
            local_slots: self.slots.max(1),
            project_runs: self.project_runs.max(1),
            log_cap_bytes: self.log_cap_mb.max(1).saturating_mul(1024 * 1024),
            runner_path: self.runner.clone(),
            secret_key: self.secret_key.clone(),
            insecure_registries: self.insecure_registries.clone(),
            registry_auth: self.registry_auth.clone(),
            step_user: self.step_user.clone(),
            ..crate::engine::Config::default()
        }
    }
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => block_on(serve(*args)),
        Command::Run(args) => block_on(crate::oneshot::run(args)),
        Command::Apply(args) => block_on(commands::apply(args)),
        Command::Trigger(args) => block_on(commands::trigger(args)),
        Command::Runs(args) => block_on(commands::runs(args)),
        Command::Status { run, server } => block_on(commands::status(run, server)),
        Command::Logs(args) => block_on(commands::logs(args)),
        Command::Cancel { run, server } => block_on(commands::cancel(run, server)),
        Command::Approve(args) => block_on(commands::decide(args, true)),
        Command::Reject(args) => block_on(commands::decide(args, false)),
        Command::Rerun(args) => block_on(commands::rerun(args)),
        Command::Secret {
            command: SecretCommand::Set { name, project },
        } => block_on(commands::set_secret(name, project)),
        Command::Secret {
            command: SecretCommand::List { project },
        } => block_on(commands::list_secrets(project)),
        Command::Deploy {
            command: DeployCommand::History { target, project },
        } => block_on(commands::deploy_history(target, project)),
        Command::Deploy {
            command:
                DeployCommand::Undo {
                    target,
                    to_revision,
                    project,
                },
        } => block_on(commands::deploy_undo(target, to_revision, project)),
        Command::Images {
            command: ImagesCommand::BuildRunner(args),
        } => block_on(build_runner(args)),
        Command::Validate { files, plan } => validate(&files, plan),
        Command::Schema => {
            let schema = crate::pipeline::schema::schema();
            let text = serde_json::to_string_pretty(&schema).unwrap_or_default();
            // Ignore write errors: `gantry schema | head` closing the pipe is not a failure.
            let _ = writeln!(std::io::stdout(), "{text}");
            ExitCode::SUCCESS
        }
    }
}

fn validate(files: &[PathBuf], show_plan: bool) -> ExitCode {
    let mut ok = true;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for path in files {
        let file = path.display().to_string();
        let text = match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => {
                    ok = false;
                    let _ = writeln!(
                        out,
                        "{file}:1:1: the file is not UTF-8 text (byte {})",
                        e.utf8_error().valid_up_to()
                    );
                    continue;
                }
            },
            Err(e) => {
                ok = false;
                let _ = writeln!(out, "{file}: cannot read: {e}");
                continue;
            }
        };
        match crate::pipeline::load(&file, &text) {
            Ok(plan) => {
                if show_plan {
                    let _ = writeln!(
                        out,
                        "{file}: ok, pipeline {}, {} stage instance(s)",
                        plan.pipeline.name.value,
                        plan.stages.len()
                    );
                    if let Some(description) = &plan.pipeline.description {
                        let _ = writeln!(out, "  description: {}", description.trim());
                    }
                    for s in &plan.stages {
                        let needs: Vec<&str> = s
                            .needs
                            .iter()
                            .map(|&n| plan.stages[n].key.as_str())
                            .collect();
                        let _ = writeln!(
                            out,
                            "  {}{} <- [{}]",
                            s.key,
                            if s.finally { " (finally)" } else { "" },
                            needs.join(", ")
                        );
                    }
                }
            }
            Err(report) => {
                ok = false;
                let _ = write!(out, "{}", report.render(&text));
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn block_on(future: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(future),
        Err(e) => {
            eprintln!("gantry: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn serve(args: ServeArgs) -> ExitCode {
    init_tracing();
    let mut config = args.engine.config();
    config.listen = args.listen;
    config.public_url = args.public_url;
    config.webhook_max_bytes = args.webhook_max_bytes;
    config.webhook_queue = args.webhook_queue;
    config.delivery_payload_days = args.delivery_payload_days;
    config.engine_id = args.engine_id;
    config.executor = args.kubernetes.executor.clone();
    config.kubernetes = args.kubernetes.settings();
    let server = match crate::server::Server::start(config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("gantry: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("gantry: serving on {} (Ctrl-C to stop)", server.url());
    let _ = shutdown_signal().await;
    eprintln!("gantry: stopping");
    server.stop().await;
    ExitCode::SUCCESS
}

async fn build_runner(args: BuildRunnerArgs) -> ExitCode {
    use crate::executor::kubernetes::runner_image::{RunnerImage, build};
    let image = RunnerImage {
        runner: args
            .runner
            .unwrap_or_else(crate::executor::local::default_runner_path),
        base: args.base,
        output: args.output,
        insecure_registries: args.insecure_registries,
        registry_auth: args.registry_auth,
    };
    let say = |line: &str| eprintln!("{line}");
    match build(&image, &say).await {
        Ok(pushed) => {
            println!("{}", pushed.pinned);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gantry: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
