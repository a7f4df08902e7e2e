//! The trust boundary between a pipeline's steps and the engine that runs them: a hostile step
//! of `gantry run` (the embedded default: its own PostgreSQL, the local executor) tries to read
//! the engine's environment, key, tokens, passwords and logs, and to connect to its database,
//! and every attempt must fail — with the engine running as root (steps run as the dedicated
//! step user) and as an ordinary user (steps share its user, and are kept out of its data
//! directory by the runner's mount namespace).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use gantry_tests::proc::Reaper;
use gantry_tests::{gantry_bin, open_temp_dir, runner_bin};

/// Set in the engine's environment: a step must never see it.
const CANARY: &str = "GANTRY_TEST_CANARY";
const CANARY_VALUE: &str = "the-engines-own-environment";

/// A pipeline whose one step tries each way in, printing `DENIED what` or `ESCAPED what`, and
/// leaves a file in `shared` for the test to see who it ran as on the host.
fn hostile_pipeline(data: &Path, shared: &Path) -> String {
    let data = data.display();
    let shared = shared.display();
    let socket = format!("{data}/postgres/socket");
    format!(
        r#"name: hostile
stages:
  - name: attack
    steps:
      - name: try every way in
        run: |
          attempt() {{ what=$1; shift; if "$@" >/dev/null 2>&1; then echo "ESCAPED $what"; else echo "DENIED $what"; fi; }}
          engine=$(cut -d' ' -f4 /proc/$PPID/stat)
          echo "engine pid $engine, step uid $(id -u)"
          touch {shared}/made-by-the-step
          attempt environ cat /proc/$engine/environ
          attempt memory-map cat /proc/$engine/maps
          attempt secret.key cat {data}/secret.key
          attempt admin.token cat {data}/admin.token
          attempt admin.password cat {data}/admin.password
          attempt postgres-password cat {data}/postgres/superuser.password
          attempt pgdata ls {data}/postgres/pgdata/base
          attempt runner-logs ls {data}/runner-logs
          attempt socket psql -w -h {socket} -U gantry -d gantry -c 'select 1'
          attempt socket-postgres-db psql -w -h {socket} -U gantry -d postgres -c 'select 1'
          env | sed 's/^/ENV /'
"#
    )
}

const ATTEMPTS: &[&str] = &[
    "environ",
    "memory-map",
    "secret.key",
    "admin.token",
    "admin.password",
    "postgres-password",
    "pgdata",
    "runner-logs",
    "socket",
    "socket-postgres-db",
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Checks what the hostile step printed: every attempt denied, no engine variable seen.
fn assert_contained(output: &Output, data: &Path) {
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(
        output.status.success(),
        "gantry run failed:\n{stdout}\n{stderr}"
    );
    for what in ATTEMPTS {
        assert!(
            stdout.contains(&format!("DENIED {what}")),
            "attempt `{what}` did not report DENIED:\n{stdout}\n{stderr}"
        );
    }
    assert!(
        !stdout.contains("ESCAPED"),
        "a step reached the engine's secrets:\n{stdout}"
    );
    let env: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once("ENV ").map(|(_, v)| v))
        .collect();
    assert!(
        env.iter().any(|l| l.starts_with("GANTRY_RUN_ID=")),
        "the step's environment was printed: {stdout}"
    );
    for forbidden in [
        CANARY,
        "DATABASE_URL",
        "GANTRY_SECRET_KEY",
        "GANTRY_TOKEN",
        "PGPASSWORD",
    ] {
        assert!(
            !env.iter().any(|l| l.starts_with(&format!("{forbidden}="))),
            "{forbidden} reached the step: {env:#?}"
        );
    }
    assert!(
        !stdout.contains(CANARY_VALUE),
        "the engine's environment reached the step"
    );
    // The files it tried are really there: the attempts failed for the right reason.
    for file in ["secret.key", "admin.token", "postgres/superuser.password"] {
        assert!(data.join(file).exists(), "{file} exists");
    }
    for file in [
        "secret.key",
        "admin.token",
        "admin.password",
        "postgres/superuser.password",
    ] {
        let mode = std::fs::metadata(data.join(file))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} is private");
    }
}

async fn gantry_run_as(
    user: Option<&nix::unistd::User>,
    dir: &Path,
    data: &Path,
    home: &Path,
) -> Output {
    let file = dir.join("hostile.yaml");
    std::fs::write(&file, hostile_pipeline(data, dir)).expect("pipeline");
    let mut command = tokio::process::Command::new(gantry_bin());
    command
        .arg("run")
        .arg(&file)
        .arg("--data-dir")
        .arg(data)
        .arg("--runner")
        .arg(runner_bin())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env(CANARY, CANARY_VALUE)
        .current_dir(dir)
        .kill_on_drop(true);
    if let Some(user) = user {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("gantry run took over 3 minutes")
        .expect("gantry run starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_engines_steps_run_as_the_step_user_and_reach_nothing_of_the_engine() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: the root engine's side of the boundary cannot be tried here");
        return;
    }
    let dir = open_temp_dir();
    let data = dir.path().join("data");
    let _reaper = Reaper::new(&data);
    let output = gantry_run_as(None, dir.path(), &data, dir.path()).await;
    assert_contained(&output, &data);
    let stdout = text(&output.stdout);
    let step_user = nix::unistd::User::from_name("gantry-step")
        .expect("lookup")
        .expect("the engine created the step user");
    // Inside its namespace the step is root (S2I's assemble needs that); on the host it is
    // the step user.
    assert_eq!(
        owner_of(&dir.path().join("made-by-the-step")),
        step_user.uid.as_raw(),
        "steps run as gantry-step on the host: {stdout}"
    );
    assert!(stdout.contains("ENV USER=gantry-step"), "{stdout}");
    let data_mode = std::fs::metadata(&data).expect("stat").permissions().mode();
    assert_eq!(
        data_mode & 0o777,
        0o711,
        "the step user may only pass through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_engines_steps_share_its_user_but_not_its_files_or_environment() {
    let user = if nix::unistd::geteuid().is_root() {
        Some(test_user())
    } else {
        None
    };
    let dir = open_temp_dir();
    let data = dir.path().join("data");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    if let Some(user) = &user {
        for path in [dir.path(), home.as_path()] {
            std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .expect("chown");
        }
    }
    let _reaper = Reaper::new(&data);
    let output = gantry_run_as(user.as_ref(), dir.path(), &data, &home).await;
    assert_contained(&output, &data);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("share its privileges"),
        "the engine says at start-up that steps run as its own user: {stderr}"
    );
    let expected = user
        .as_ref()
        .map_or_else(|| nix::unistd::geteuid().as_raw(), |u| u.uid.as_raw());
    assert_eq!(
        owner_of(&dir.path().join("made-by-the-step")),
        expected,
        "steps run as the engine's own user"
    );
    assert!(
        text(&output.stdout).contains(&format!("step uid {expected}")),
        "{}",
        text(&output.stdout)
    );
}

fn owner_of(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .uid()
}

/// An ordinary user to run the engine as (created on first use).
fn test_user() -> nix::unistd::User {
    const NAME: &str = "gantry-test";
    if let Ok(Some(user)) = nix::unistd::User::from_name(NAME) {
        return user;
    }
    let _ = std::process::Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home"])
        .args(["--shell", "/usr/sbin/nologin", NAME])
        .status();
    nix::unistd::User::from_name(NAME)
        .ok()
        .flatten()
        .expect("useradd gantry-test")
}
