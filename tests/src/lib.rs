//! The harness for Gantry's end-to-end tests: a fresh database on the test PostgreSQL (started by
//! `scripts/test`, URL in `DATABASE_URL`), a real engine (HTTP server, scheduler, local executor
//! running the real `gantry-runner` binary), and helpers named after what a user does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gantry::engine::{Config, Engine};
use gantry::run::{RunContext, TriggerRequest, Triggered};
use gantry::server::Server;
use gantry::store::{RunId, RunStatus, runs, stages};

pub mod browser;
pub mod controlplane;
pub mod git;
pub mod image_tools;
pub mod kube;
pub mod proc;
pub mod registry;
pub mod serve;
pub mod ui_session;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The cargo target directory the tests were built in (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> -> target/debug
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default()
}

pub fn gantry_bin() -> PathBuf {
    bin_dir().join("gantry")
}

pub fn runner_bin() -> PathBuf {
    bin_dir().join("gantry-runner")
}

/// A database of its own for one test on the test server (`DATABASE_URL`), dropped when the
/// test is done with it (connections still open are ended: the engine may still be running).
/// `scripts/test` also drops any a killed run left behind.
pub struct TestDb {
    pub url: String,
    pub name: String,
    admin: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let admin = std::env::var("DATABASE_URL").expect(
            "DATABASE_URL must point at a PostgreSQL server: run the tests with scripts/test",
        );
        let name = format!("gantry_test_{}_{}", std::process::id(), rand_suffix());
        let pool = sqlx::PgPool::connect(&admin)
            .await
            .expect("connect to the test server");
        // The name is made here from digits and underscores only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .expect("create the test database");
        pool.close().await;
        let url = with_database(&admin, &name)
            .unwrap_or_else(|| panic!("DATABASE_URL has no database name: {admin}"));
        TestDb { url, name, admin }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Dropping happens inside the test's runtime, which cannot be blocked on: a thread of
        // its own with a runtime of its own, waited for, so the database is gone when the
        // test is.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let pool = sqlx::PgPool::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&pool)
                .await
                .ok()?;
                pool.close().await;
                Some(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: test database {} was not dropped", self.name);
        }
    }
}

/// `admin` (a `postgres://` URL) naming database `name` instead; its query (such as
/// `?host=/socket/directory`) is kept.
pub fn with_database(admin: &str, name: &str) -> Option<String> {
    let (base, query) = match admin.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin, None),
    };
    let (server, _) = base.rsplit_once('/').filter(|(s, _)| s.contains("://"))?;
    Some(match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    })
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}_{}", COUNTER.fetch_add(1, Ordering::Relaxed), nanos)
}

/// A running engine on a fresh database, listening on a free loopback port.
pub struct TestEngine {
    pub server: Server,
    pub db: TestDb,
    /// The first administrator's API token (what the engine wrote to `admin.token`).
    pub token: String,
    /// Kills runners and steps still working in `data_dir` when the test ends (say, after a
    /// failed assertion); declared before `data_dir` so it runs before the directory goes.
    _reaper: proc::Reaper,
    pub data_dir: tempfile::TempDir,
}

impl TestEngine {
    pub async fn start() -> TestEngine {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestEngine {
        let db = TestDb::create().await;
        let data_dir = tempfile::tempdir().expect("temp dir");
        // As an engine's data directory usually is: others may pass through (the embedded
        // PostgreSQL's user, the step user), not look in.
        std::fs::set_permissions(
            data_dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("chmod the data directory");
        let mut config = Config {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.path().to_path_buf(),
            database_url: Some(db.url.clone()),
            runner_path: Some(runner_bin()),
            heartbeat_secs: 1,
            kill_grace_secs: 2,
            ..Config::default()
        };
        adjust(&mut config);
        let server = Server::start(config).await.expect("engine starts");
        let token = gantry::access::bootstrap::read_token(data_dir.path())
            .expect("the first start writes the admin token");
        TestEngine {
            server,
            db,
            token,
            _reaper: proc::Reaper::new(data_dir.path()),
            data_dir,
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.server.engine
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The first administrator's password, as the engine wrote it at its first start (for
    /// signing in through the web UI's form).
    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("admin.password"))
            .expect("admin.password")
            .trim()
            .to_owned()
    }

    /// An HTTP client that sends the administrator's token with every request.
    pub fn http(&self) -> reqwest::Client {
        authorized_client(&self.token)
    }

    /// The CLI's typed API client, sending the administrator's token: tests that use it check
    /// the API and its client together.
    pub fn client(&self) -> gantry::client::Client {
        api_client(&self.url(), &self.token)
    }

    /// Creates a user with `password` (no role anywhere yet) and returns an API token of theirs.
    pub async fn create_user(&self, name: &str, password: &str) -> String {
        create_user(self.pool(), name, password).await
    }

    /// Gives `user` `role` in project `project` (created if needed).
    pub async fn grant(&self, project: &str, user: &str, role: gantry::access::Role) {
        grant(self.pool(), project, user, role).await
    }

    /// Applies a pipeline (YAML text) to project `test`.
    pub async fn apply(&self, yaml: &str) -> String {
        gantry::run::apply(self.engine(), "test", "test.yaml", yaml)
            .await
            .expect("pipeline applies")
            .name
    }

    pub async fn trigger(&self, pipeline: &str, params: &[(&str, &str)]) -> Triggered {
        let params: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        gantry::run::trigger(
            self.engine(),
            "test",
            pipeline,
            "manual",
            TriggerRequest {
                params,
                context: Some(RunContext {
                    event: "manual".into(),
                    branch: Some("main".into()),
                    ..RunContext::default()
                }),
            },
        )
        .await
        .expect("run triggers")
    }

    /// Triggers `pipeline` as a push of commit `sha` to `main` would, with `params`.
    pub async fn trigger_push(
        &self,
        pipeline: &str,
        params: &[(&str, &str)],
        sha: &str,
    ) -> Triggered {
        gantry::run::trigger(
            self.engine(),
            "test",
            pipeline,
            "push",
            TriggerRequest {
                params: params
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                context: Some(RunContext {
                    event: "push".into(),
                    branch: Some("main".into()),
                    commit_sha: Some(sha.to_owned()),
                    ..RunContext::default()
                }),
            },
        )
        .await
        .expect("run triggers")
    }

    /// Waits until the run ends and returns it with its stages.
    pub async fn wait_for_run(
        &self,
        id: RunId,
        limit: Duration,
    ) -> (runs::RunRow, Vec<stages::StageRunRow>) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let run = runs::get(&self.engine().store.pool, id)
                .await
                .expect("run exists");
            if run.status.is_terminal() {
                let stages = stages::for_run(&self.engine().store.pool, id)
                    .await
                    .expect("stages");
                return (run, stages);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} still {} after {limit:?}",
                run.status.as_str()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The stored log text of a stage's attempt, one entry per line.
    pub async fn log_lines(&self, run: RunId, key: &str) -> Vec<String> {
        self.attempt_log_lines(run, key, None).await
    }

    /// The stored log of one attempt of a stage (the current one when `attempt` is `None`).
    pub async fn attempt_log_lines(
        &self,
        run: RunId,
        key: &str,
        attempt: Option<i32>,
    ) -> Vec<String> {
        let text = self
            .client()
            .log(run.0, key, attempt)
            .await
            .unwrap_or_else(|e| panic!("log of {key} of run {run}: {e}"))
            .text()
            .await
            .expect("log text");
        text.lines().map(str::to_owned).collect()
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.engine().store.pool
    }

    pub async fn stage(&self, run: RunId, key: &str) -> stages::StageRunRow {
        stages::find(self.pool(), run, key)
            .await
            .unwrap_or_else(|e| panic!("stage {key} of run {run}: {e}"))
    }

    /// Waits until stage `key` of `run` satisfies `ready` and returns it.
    pub async fn wait_for_stage(
        &self,
        run: RunId,
        key: &str,
        limit: Duration,
        ready: impl Fn(&stages::StageRunRow) -> bool,
    ) -> stages::StageRunRow {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let stage = self.stage(run, key).await;
            if ready(&stage) {
                return stage;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stage {key} of run {run} not as expected after {limit:?}: status {}, attempt {}, error {:?}",
                stage.status.as_str(),
                stage.attempt,
                stage.error
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// The CLI's typed API client of the engine at `url`, sending `token` as `--token` would.
pub fn api_client(url: &str, token: &str) -> gantry::client::Client {
    gantry::client::Client::new(url)
        .expect("the engine's URL is usable")
        .with_credential(gantry::client::credential::Credential {
            token: Some(token.to_owned()),
            source: gantry::client::credential::TokenSource::Flag,
        })
}

/// A client sending `Authorization: Bearer TOKEN` with every request.
pub fn authorized_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .expect("a token is a valid header value");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

/// Creates a user with `password` directly in the database and returns a new API token of
/// theirs (what an administrator would do through the API).
pub async fn create_user(pool: &sqlx::PgPool, name: &str, password: &str) -> String {
    use gantry::access::password as pw;
    let hash = pw::hash(password).expect("hash the password");
    let user = gantry::store::access::create_user(pool, name, Some(&hash), false)
        .await
        .expect("create the user");
    token_for(pool, user.id).await
}

/// A new API token of the user with id `user`.
pub async fn token_for(pool: &sqlx::PgPool, user: gantry::access::UserId) -> String {
    let token = gantry::access::credential::new_token();
    gantry::store::access::create_token(
        pool,
        user,
        "test",
        &gantry::access::credential::hash(&token),
        None,
    )
    .await
    .expect("create a token");
    token
}

/// An API token of the first administrator (for engines whose token file is elsewhere, such
/// as a second replica on the same database).
pub async fn admin_token(database_url: &str) -> String {
    let pool = sqlx::PgPool::connect(database_url).await.expect("connect");
    let admin = gantry::store::access::user_by_name(&pool, gantry::access::bootstrap::ADMIN)
        .await
        .expect("the first start created the administrator");
    let token = token_for(&pool, admin.user.id).await;
    pool.close().await;
    token
}

pub async fn grant(pool: &sqlx::PgPool, project: &str, user: &str, role: gantry::access::Role) {
    let project = gantry::store::pipelines::ensure_project(pool, project)
        .await
        .expect("project");
    let user = gantry::store::access::user_by_name(pool, user)
        .await
        .expect("user")
        .user;
    gantry::store::access::set_member(pool, project, user.id, role)
        .await
        .expect("grant the role");
}

/// A temporary directory others may enter and write in (mode 1777, like /tmp), for files a test
/// shares with steps or with the embedded PostgreSQL: when the tests run as root, steps run as
/// the engine's unprivileged step user and PostgreSQL as the `postgres` user.
pub fn open_temp_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("gantry-e2e-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod the temp dir");
    dir
}

/// The stage of `stages` with plan key `key`.
pub fn stage_of<'a>(stages: &'a [stages::StageRunRow], key: &str) -> &'a stages::StageRunRow {
    stages
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no stage {key}"))
}

pub fn status_of(stages: &[stages::StageRunRow], key: &str) -> gantry::store::StageStatus {
    stages
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no stage {key}"))
        .status
}

pub use gantry::store::StageStatus;

pub fn assert_succeeded(run: &runs::RunRow) {
    assert_eq!(
        run.status,
        RunStatus::Succeeded,
        "run reason: {:?}",
        run.reason
    );
}
