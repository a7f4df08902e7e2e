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
         It takes no arguments; the engine's executor sets:\n  \
         {ENV_ENGINE_URL}  the engine, http://host:port\n  \
         {ENV_TOKEN}  the stage attempt's token\n  \
         {ENV_WORKSPACE}  where steps run (default: the current directory)\n  \
         {ENV_GIVE_UP_SECS}  how long to retry an unreachable engine (default 600)\n  \
         {ENV_KILL_GRACE_SECS}  SIGTERM to SIGKILL grace for steps (default 10)\n\
         Exit codes: 0 succeeded, 1 failed or timed out, 2 usage or protocol error, 3 cancelled.",
        env!("CARGO_PKG_VERSION")
    )
}

fn main() -> ExitCode {
    let started = tokio::time::Instant::now();
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("--version" | "-V") => {
            println!("gantry-runner {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
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
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("gantry-runner: {err}");
            return RunnerExit::Usage.into();
        }
    };
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
