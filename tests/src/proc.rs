//! Real processes, as `/proc` shows them: which are alive, what they run and where. Tests use it
//! to prove that nothing a stage started is left behind, to find a runner to kill, and (through
//! [`Reaper`]) to clean up after a test that failed half-way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Every pid in `/proc`.
pub fn pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The process's arguments, or `None` once it is gone (or is a kernel thread).
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Whether the process exists and is not a zombie (a zombie is dead, only not yet reaped).
pub fn is_live(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .and_then(|rest| rest.chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// Live processes with an argument containing `needle` (e.g. the unique `300.456` of a
/// `sleep 300.456`; the step's `sh -c` carries it too).
pub fn live_with_arg(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id();
    pids()
        .into_iter()
        .filter(|&pid| u32::try_from(pid).ok() != Some(me))
        .filter_map(|pid| {
            let args = cmdline(pid)?;
            args.iter()
                .any(|a| a.contains(needle))
                .then(|| (pid, args.join(" ")))
        })
        .filter(|(pid, _)| is_live(*pid))
        .collect()
}

/// The process's working directory.
pub fn cwd(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// Live processes working somewhere under `dir` (runners and steps work in their workspace).
pub fn live_under(dir: &Path) -> Vec<i32> {
    let me = std::process::id();
    pids()
        .into_iter()
        .filter(|&pid| u32::try_from(pid).ok() != Some(me))
        .filter(|&pid| cwd(pid).is_some_and(|c| c.starts_with(dir)))
        .filter(|&pid| is_live(pid))
        .collect()
}

/// Live `gantry-runner` processes working under `dir`.
pub fn runners_under(dir: &Path) -> Vec<i32> {
    live_under(dir)
        .into_iter()
        .filter(|&pid| {
            cmdline(pid)
                .and_then(|args| args.first().cloned())
                .is_some_and(|exe| exe.ends_with("gantry-runner"))
        })
        .collect()
}

pub fn kill9(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// Polls `find` until it returns nothing; returns what it last found if `limit` passes first.
pub async fn wait_until_gone<T: std::fmt::Debug>(
    limit: Duration,
    mut find: impl FnMut() -> Vec<T>,
) -> Result<(), Vec<T>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let found = find();
        if found.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(found);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `find` until it returns something, or panics after `limit` naming `what`.
pub async fn wait_until_found<T>(
    what: &str,
    limit: Duration,
    mut find: impl FnMut() -> Vec<T>,
) -> Vec<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let found = find();
        if !found.is_empty() {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: nothing found within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Kills, when dropped, every process still working under its directory: runners and steps of a
/// test that failed before they ended would otherwise outlive it (a runner retries an absent
/// engine for minutes). A passing test has nothing left for it to do.
pub struct Reaper {
    dir: PathBuf,
}

impl Reaper {
    pub fn new(dir: &Path) -> Reaper {
        Reaper {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Twice: a runner killed between listing and killing may have had a step starting.
        for _ in 0..2 {
            for pid in live_under(&self.dir) {
                kill9(pid);
            }
        }
    }
}

/// The TCP ports process `pid` listens on, IPv4 and IPv6: its socket inodes (`/proc/PID/fd`)
/// matched against the listening sockets of `/proc/net/tcp` and `tcp6`.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: std::collections::HashSet<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            const LISTEN: &str = "0A";
            if *state != LISTEN || !inodes.contains(*inode) {
                continue;
            }
            if let Some(port) = local
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}
