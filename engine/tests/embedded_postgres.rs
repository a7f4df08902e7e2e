//! The embedded PostgreSQL against the real server programs: it needs them installed
//! (`apt-get install postgresql`), as Gantry's CI has. Each test owns a fresh data directory.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use gantry::store::embedded::{EmbeddedError, EmbeddedPostgres};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tempfile::TempDir;

/// Mode 0755, whatever the umask: run as root, the server runs as `postgres`, which must be able
/// to enter the directory.
fn data_dir() -> TempDir {
    temp_dir(0o755)
}

fn temp_dir(mode: u32) -> TempDir {
    tempfile::Builder::new()
        .prefix("gantry-embedded-")
        .permissions(Permissions::from_mode(mode))
        .tempdir()
        .expect("a temporary directory")
}

async fn start_timed(dir: &Path, what: &str) -> EmbeddedPostgres {
    let began = Instant::now();
    // Display, not Debug: the message carries PostgreSQL's log lines.
    let server = EmbeddedPostgres::start(dir)
        .await
        .unwrap_or_else(|error| panic!("embedded PostgreSQL starts: {error}"));
    eprintln!("start {what}: {} ms", began.elapsed().as_millis());
    server
}

async fn connect(server: &EmbeddedPostgres) -> PgConnection {
    PgConnection::connect(server.url())
        .await
        .expect("connects over the socket")
}

fn postmaster_pid(dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(dir.join("pgdata/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Waits until `pid` has exited: reaped, or a zombie its parent (init) has not reaped yet.
fn wait_until_dead(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            Ok(stat)
                if stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')) =>
            {
                return;
            }
            Ok(_) => {}
        }
        assert!(Instant::now() < deadline, "process {pid} still alive");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn starts_in_an_empty_dir_and_answers_queries() {
    let dir = data_dir();
    let server = start_timed(dir.path(), "from an empty dir").await;
    assert!(server.url().contains("?host=/"), "{}", server.url());

    let mut conn = connect(&server).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(database, "gantry");
    conn.close().await.unwrap();

    server.stop().await;
    assert_eq!(postmaster_pid(dir.path()), None, "server still running");
}

#[tokio::test]
async fn keeps_data_across_restarts() {
    let dir = data_dir();
    let server = start_timed(dir.path(), "from an empty dir").await;
    let mut conn = connect(&server).await;
    sqlx::query("CREATE TABLE kept (note text)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO kept VALUES ('still here')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    server.stop().await;

    let server = start_timed(dir.path(), "from an existing dir").await;
    let mut conn = connect(&server).await;
    let note: String = sqlx::query_scalar("SELECT note FROM kept")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(note, "still here");
    conn.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn starts_again_after_the_postmaster_was_killed() {
    let dir = data_dir();
    let crashed = start_timed(dir.path(), "from an empty dir").await;
    let mut conn = connect(&crashed).await;
    sqlx::query("CREATE TABLE survived (id int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let pid = postmaster_pid(dir.path()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until_dead(pid);
    // The stale postmaster.pid stays behind for the next start to deal with.
    assert_eq!(postmaster_pid(dir.path()), Some(pid));
    drop(conn);

    let server = start_timed(dir.path(), "after kill -9").await;
    assert_ne!(postmaster_pid(dir.path()), Some(pid));
    let mut conn = connect(&server).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM survived")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    conn.close().await.unwrap();

    // The crashed handle must leave the new server alone.
    drop(crashed);
    assert!(
        postmaster_pid(dir.path()).is_some(),
        "new server was stopped"
    );
    server.stop().await;
}

#[tokio::test]
async fn adopts_a_server_left_running_by_a_crashed_gantry() {
    let dir = data_dir();
    let first = start_timed(dir.path(), "from an empty dir").await;
    let pid = postmaster_pid(dir.path()).unwrap();
    // A Gantry that dies never stops its server.
    std::mem::forget(first);

    let server = start_timed(dir.path(), "with the server still running").await;
    assert_eq!(postmaster_pid(dir.path()), Some(pid));
    let mut conn = connect(&server).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    conn.close().await.unwrap();
    server.stop().await;
    assert_eq!(postmaster_pid(dir.path()), None, "server still running");
}

#[tokio::test]
async fn a_data_dir_too_long_for_a_socket_path_still_works() {
    let dir = data_dir();
    let deep = dir.path().join("a-rather-long-directory-name/".repeat(4));
    let server = start_timed(&deep, "from an empty dir with a long path").await;
    assert!(
        server.url().contains("?host=/tmp/gantry-pg-"),
        "{}",
        server.url()
    );
    let mut conn = connect(&server).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    conn.close().await.unwrap();
    let socket_dir = server
        .url()
        .split_once("host=")
        .and_then(|(_, rest)| rest.split('&').next())
        .map(str::to_owned)
        .unwrap();
    server.stop().await;
    // The directory outlives the server (the next start reuses it), but not this test's data dir.
    std::fs::remove_dir_all(socket_dir).unwrap();
}

#[tokio::test]
async fn root_is_told_when_postgres_cannot_reach_the_data_dir() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let private = temp_dir(0o700);
    let error = EmbeddedPostgres::start(&private.path().join("data"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, EmbeddedError::DataDirUnreachable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("chmod o+x"), "{error}");
}

#[tokio::test]
async fn missing_server_programs_say_how_to_get_them() {
    let dir = data_dir();
    let error = EmbeddedPostgres::start_with_bindir(dir.path(), Path::new("/nonexistent/bin"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, EmbeddedError::BinariesNotFound { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "PostgreSQL server programs (initdb, pg_ctl) not found (looked in /nonexistent/bin). \
         Install them with `apt-get install postgresql` (Debian/Ubuntu), \
         or set DATABASE_URL to an existing PostgreSQL server"
    );
}
