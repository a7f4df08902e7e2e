use clap::Parser;

fn main() -> std::process::ExitCode {
    tune_malloc();
    gantry::cli::run(gantry::cli::Cli::parse())
}

/// glibc's malloc settings for the long-lived commands (`serve`, `run`), as the value of
/// `GLIBC_TUNABLES`.
///
/// glibc gives each thread that allocates under contention an arena of its own and keeps what
/// they freed; after each large free it also raises its mmap threshold (up to 32 MiB), so later
/// multi-MiB buffers — artifact and log chunks passing through — come from those arenas and
/// stay. An engine that had handed one 50 MiB artifact on, or served a 2 GB log, stayed tens
/// of MiB larger for good. A fixed 256 KiB threshold gives large buffers back when they are
/// freed, and one arena keeps the small ones together (docs/performance.md, "Against peers":
/// the B2I pipeline's peak 61–64 MiB → ~50 MiB, its time unchanged; a 2 GB log download
/// 121–156 MiB → 72 MiB).
const MALLOC_TUNABLES: &str = "glibc.malloc.mmap_threshold=262144:glibc.malloc.arena_max=1";

/// glibc reads `GLIBC_TUNABLES` only when a program starts, and setting malloc's parameters
/// from inside needs `unsafe` code, which this workspace forbids: so `serve` and `run` start
/// themselves again, once, with the variable set. A `GLIBC_TUNABLES` the user set is kept as
/// it is (they chose), and if the new start fails the command carries on untuned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next();
    let long_lived = matches!(
        args.next().as_deref().and_then(std::ffi::OsStr::to_str),
        Some("serve" | "run")
    );
    if !long_lived || std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = arg0 {
        command.arg0(arg0);
    }
    // `exec` only returns when it failed.
    let _ = command
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", MALLOC_TUNABLES)
        .exec();
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
