//! The `gantry-runner` binary: reads its configuration from the environment and runs one stage
//! attempt. Everything but argument handling lives in the library.

use std::process::ExitCode;
use std::time::Duration;

use gantry_runner::config::{Config, ENV_GIVE_UP_SECS, ENV_KILL_GRACE_SECS};
use gantry_runner::exit::RunnerExit;
use gantry_runner::wire::{ENV_ENGINE_URL, ENV_TOKEN, ENV_WORKSPACE};

fn usage() -> String {
    format!(
        "gantry-runner {}: runs one Gantry stage attempt and reports to the engine.\n\
         It takes no arguments (`gantry-runner install PATH` copies it to PATH);\n\
         the engine's executor sets:\n  \
         {ENV_ENGINE_URL}  the engine, http://host:port\n  \
         {ENV_TOKEN}  the stage attempt's token\n  \
         {ENV_WORKSPACE}  where steps run (default: the current directory)\n  \
         {ENV_GIVE_UP_SECS}  how long to retry an unreachable engine (default 600)\n  \
         {ENV_KILL_GRACE_SECS}  SIGTERM to SIGKILL grace for steps (default 10)\n\
         Exit codes: 0 succeeded, 1 failed or timed out, 2 usage or protocol error, 3 cancelled.",
        env!("CARGO_PKG_VERSION")
    )
}

/// Copies this binary to `target` (via a temporary name, so a reader never sees half a file).
fn install(target: &std::path::Path) -> ExitCode {
    use std::os::unix::fs::PermissionsExt;
    let copy = || -> std::io::Result<()> {
        let me = std::env::current_exe()?;
        let partial = target.with_extension("partial");
        std::fs::copy(&me, &partial)?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&partial, target)
    };
    match copy() {
        Ok(()) => {
            println!(
                "gantry-runner {} installed at {}",
                env!("CARGO_PKG_VERSION"),
                target.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gantry-runner install: {}: {e}", target.display());
            RunnerExit::Usage.into()
        }
    }
}

fn main() -> ExitCode {
    let started = tokio::time::Instant::now();
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("--version" | "-V") => {
            println!("gantry-runner {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        // `gantry-runner install PATH`: what a Kubernetes Job's init container runs to copy the
        // runner out of its image into a volume the stage's own image mounts.
        Some("install") => {
            return match std::env::args().nth(2) {
                Some(target) => install(std::path::Path::new(&target)),
                None => {
                    eprintln!("gantry-runner install: give the path to copy the runner to");
                    RunnerExit::Usage.into()
                }
            };
        }
        // `gantry-runner isolation-check DIR`: whether this machine lets a runner hide the
        // engine's files from its steps (the engine asks at start-up).
        Some("isolation-check") => {
            return match std::env::args().nth(2) {
                Some(dir) => match gantry_runner::isolation::check(std::path::Path::new(&dir)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(why) => {
                        eprintln!("{why}");
                        ExitCode::FAILURE
                    }
                },
                None => {
                    eprintln!("gantry-runner isolation-check: give a scratch directory");
                    RunnerExit::Usage.into()
                }
            };
        }
        // Run by the runner itself while it isolates its steps (see `isolation`).
        Some(gantry_runner::isolation::MAP_IDS_COMMAND) => {
            let pid = std::env::args().nth(2).and_then(|p| p.parse().ok());
            return match pid.map(gantry_runner::isolation::map_nested) {
                Some(Ok(())) => ExitCode::SUCCESS,
                Some(Err(why)) => {
                    eprintln!("gantry-runner: {why}");
                    ExitCode::FAILURE
                }
                None => RunnerExit::Usage.into(),
            };
        }
        Some("--help" | "-h") => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!(
                "gantry-runner: unexpected argument {other:?}\n\n{}",
                usage()
            );
            return RunnerExit::Usage.into();
        }
    }
    let mut config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("gantry-runner: {err}");
            return RunnerExit::Usage.into();
        }
    };
    // Namespaces first: a process with a second thread cannot enter a new user namespace.
    if let Err(err) = gantry_runner::isolation::Isolation::from_env().apply() {
        config.isolation_error = Some(err.to_string());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("gantry-runner: cannot start the async runtime: {err}");
            return RunnerExit::Usage.into();
        }
    };
    let exit = runtime.block_on(gantry_runner::stage::run(config, started));
    // Do not wait on a blocking archive thread the run has given up on.
    runtime.shutdown_timeout(Duration::from_secs(1));
    exit.into()
}
