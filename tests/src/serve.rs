//! `gantry serve` as a separate process, for tests that kill an engine with SIGKILL or run two
//! engines on one database. Dropping an [`EngineProcess`] kills it and whatever it left running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::proc::Reaper;

/// A loopback port nobody listens on right now. Only a candidate: another process may take it
/// before the child it is meant for binds it, so start children with [`on_free_port`], which
/// checks that the child itself got it.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// How often [`on_free_port`] tries another port before giving up.
const PORT_TRIES: usize = 5;

/// Starts a server on a free loopback port: `start(port)` spawns it, and it counts as started
/// once that very process listens on the port (read from `/proc`, so another program that took
/// the port meanwhile is never mistaken for it). A child that exits first (the port was taken)
/// is tried again on another port.
pub fn on_free_port(what: &str, mut start: impl FnMut(u16) -> Child) -> (Child, u16) {
    let mut exits = Vec::new();
    for _ in 0..PORT_TRIES {
        let port = free_port();
        let mut child = start(port);
        match wait_listening(&mut child, port, Duration::from_secs(30)) {
            Ok(()) => return (child, port),
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                exits.push(format!("port {port}: {why}"));
            }
        }
    }
    panic!("{what} did not start on any of {PORT_TRIES} ports: {exits:?}");
}

/// Waits until `child` listens on `port`; the reason when it exits first or `limit` passes.
pub fn wait_listening(child: &mut Child, port: u16, limit: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if crate::proc::listening_ports(child.id()).contains(&port) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status}) before listening"));
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("not listening after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One `gantry serve` process and the arguments to start it again with.
pub struct EngineProcess {
    child: Option<Child>,
    pub port: u16,
    pub engine_id: String,
    database_url: String,
    pub data_dir: PathBuf,
    slots: usize,
    /// More `gantry serve` arguments (e.g. the Kubernetes executor's).
    extra: Vec<String>,
    starts: u32,
    // Declared last: dropped after the engine is killed, it kills the runners and steps left.
    _reaper: Reaper,
}

impl EngineProcess {
    /// Starts an engine on `database_url` with its data under `data_dir` and waits until it
    /// answers `/readyz`.
    pub async fn start(
        database_url: &str,
        data_dir: &Path,
        engine_id: &str,
        slots: usize,
    ) -> EngineProcess {
        Self::start_with(database_url, data_dir, engine_id, slots, Vec::new()).await
    }

    /// As [`EngineProcess::start`], with more `gantry serve` arguments.
    pub async fn start_with(
        database_url: &str,
        data_dir: &Path,
        engine_id: &str,
        slots: usize,
        extra: Vec<String>,
    ) -> EngineProcess {
        std::fs::create_dir_all(data_dir).expect("engine data dir");
        let mut engine = EngineProcess {
            child: None,
            // Chosen by the first start (it binds port 0); restarts keep it, as runners and
            // webhooks know the engine by its address.
            port: 0,
            engine_id: engine_id.to_owned(),
            database_url: database_url.to_owned(),
            data_dir: data_dir.to_path_buf(),
            slots,
            extra,
            starts: 0,
            _reaper: Reaper::new(data_dir),
        };
        engine.spawn().await;
        engine
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The first administrator's API token, if this engine's first start created it.
    pub fn token(&self) -> Option<String> {
        gantry::access::bootstrap::read_token(&self.data_dir)
    }

    /// A client sending the administrator's token (from this engine's data directory).
    pub fn http(&self) -> reqwest::Client {
        crate::authorized_client(
            &self
                .token()
                .expect("this engine created the first administrator"),
        )
    }

    /// The CLI's typed API client, sending the administrator's token.
    pub fn client(&self) -> gantry::client::Client {
        crate::api_client(
            &self.url(),
            &self
                .token()
                .expect("this engine created the first administrator"),
        )
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where this start's stderr goes (one file per start, to read after a failure).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join(format!("engine-{}.log", self.starts))
    }

    async fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("engine log file");
        let mut child = Command::new(crate::gantry_bin())
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--database-url", &self.database_url])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--engine-id", &self.engine_id])
            .args(["--slots", &self.slots.to_string()])
            .arg("--runner")
            .arg(crate::runner_bin())
            .args(&self.extra)
            .env_remove("DATABASE_URL")
            .env("GANTRY_LOG", "info,sqlx=warn,tower_http=warn")
            // Working in its data directory puts the engine in its Reaper's reach too.
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start gantry serve");
        if self.port == 0 {
            // The port it bound: the one its own process listens on.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            self.port = loop {
                if let Some(port) = crate::proc::listening_ports(child.id()).first() {
                    break *port;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "gantry serve exited with {status} before it listened:\n{}",
                        std::fs::read_to_string(self.log_path()).unwrap_or_default()
                    );
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "gantry serve did not listen within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
        }
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let url = format!("{}/readyz", self.url());
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(answer) = client.get(&url).send().await
                && answer.status().is_success()
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "gantry serve exited with {status} before it was ready:\n{}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gantry serve on port {} not ready within 60 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: the engine gets no chance to clean up; its runners live on.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the engine again with the same arguments (port, id, data directory, database).
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
