//! The local executor: each stage attempt is a `gantry-runner` process on this machine, in its
//! own process group and session-independent of the engine, so a crash or restart of the engine
//! does not take running stages with it. Handles are `pid:starttime`, so a recycled pid is
//! never mistaken for our runner.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgrp};

use super::{Executor, ExecutorError, Observation, StartRequest};
use gantry_runner::wire;

#[derive(Clone, Debug)]
pub struct LocalConfig {
    pub runner_path: PathBuf,
    /// Workspaces and runner logs live under here.
    pub work_dir: PathBuf,
    pub slots: usize,
    /// How long the runner gets to stop its steps after SIGTERM before SIGKILL.
    pub kill_grace: Duration,
    /// Files to place in every workspace (see `Config::source_dir`).
    pub source_dir: Option<PathBuf>,
    /// Who runners run as, their environment and what they hide.
    pub steps: super::steps::StepPolicy,
}

pub struct LocalExecutor {
    config: LocalConfig,
    /// Exit statuses of runners this process started and reaped, by handle, with when they
    /// exited: kept for [`EXITED_KEEP`], long enough for housekeeping to see them.
    exited: Arc<Mutex<HashMap<String, Exited>>>,
    /// The source tree as listed for the latest run that started a stage here (by run id):
    /// its other stages reuse the listing.
    sources: Mutex<Option<(i64, Arc<super::source::Listing>)>>,
}

/// A reaped runner's exit status (when known) and when it exited.
type Exited = (Option<i32>, std::time::Instant);

/// How long a reaped runner's exit status is remembered.
const EXITED_KEEP: Duration = Duration::from_secs(600);

impl LocalExecutor {
    pub fn new(config: LocalConfig) -> Self {
        LocalExecutor {
            config,
            exited: Arc::default(),
            sources: Mutex::default(),
        }
    }

    /// The listing of `source` for run `run_id`: made by its first stage, shared by the rest.
    /// The data directory (workspaces, runner logs, an embedded PostgreSQL) is left out.
    async fn source_listing(
        &self,
        source: &Path,
        run_id: i64,
    ) -> Result<Arc<super::source::Listing>, ExecutorError> {
        if let Ok(cached) = self.sources.lock()
            && let Some((id, listing)) = cached.as_ref()
            && *id == run_id
        {
            return Ok(Arc::clone(listing));
        }
        let (source, exclude) = (source.to_path_buf(), vec![self.config.work_dir.clone()]);
        let listing = tokio::task::spawn_blocking(move || {
            Arc::new(super::source::Listing::of(&source, &exclude))
        })
        .await
        .map_err(|e| ExecutorError::Start(e.to_string()))?;
        if let Ok(mut cached) = self.sources.lock() {
            *cached = Some((run_id, Arc::clone(&listing)));
        }
        Ok(listing)
    }

    pub fn workspace(&self, stage_run_id: i64, attempt: i32) -> PathBuf {
        self.config
            .work_dir
            .join("workspaces")
            .join(format!("{stage_run_id}-{attempt}"))
    }
}

/// The runner binary: next to the current executable (as cargo builds them), else on PATH.
pub fn default_runner_path() -> PathBuf {
    let name = "gantry-runner";
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(name)
}

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot) and the state letter.
fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

fn parse_handle(handle: &str) -> Result<(i32, u64), ExecutorError> {
    let bad = || ExecutorError::BadHandle(handle.to_owned());
    let (pid, start) = handle.split_once(':').ok_or_else(bad)?;
    Ok((
        pid.parse().map_err(|_| bad())?,
        start.parse().map_err(|_| bad())?,
    ))
}

fn alive(pid: i32, start: u64) -> bool {
    matches!(proc_stat(pid), Some((s, state)) if s == start && state != 'Z' && state != 'X')
}

/// Kills whatever still works in `workspace` once its runner has exited. A runner stops its
/// steps before it exits; one that was killed (SIGKILL, the OOM killer) cannot, and its steps,
/// each leading a process group of its own, would run on unsupervised. Processes are found by
/// their working directory, and their whole process group is killed with them.
fn kill_leftovers(workspace: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let own_group = getpgrp().as_raw();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if !cwd.starts_with(workspace) {
            continue;
        }
        let group = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let after = stat.get(stat.rfind(')')? + 2..)?.to_owned();
                after.split(' ').nth(2)?.parse::<i32>().ok()
            });
        if let Some(group) = group
            && group > 1
            && group != own_group
        {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

fn create_dir(path: &Path) -> Result<(), ExecutorError> {
    std::fs::create_dir_all(path)
        .map_err(|e| ExecutorError::Start(format!("creating {}: {e}", path.display())))
}

#[async_trait]
impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn slots(&self) -> usize {
        self.config.slots
    }

    fn notice(&self) -> Option<String> {
        self.config.steps.notice()
    }

    async fn start(&self, request: &StartRequest) -> Result<String, ExecutorError> {
        let workspace = self.workspace(request.stage_run_id, request.attempt);
        create_dir(&workspace)?;
        if let Some(source) = &self.config.source_dir {
            let listing = self.source_listing(source, request.run_id).await?;
            let target = workspace.clone();
            tokio::task::spawn_blocking(move || listing.place(&target))
                .await
                .map_err(|e| ExecutorError::Start(e.to_string()))?
                .map_err(|e| ExecutorError::Start(format!("copying the source: {e}")))?;
        }
        let steps = &self.config.steps;
        steps
            .hand_over(&workspace)
            .map_err(|e| ExecutorError::Start(e.to_string()))?;
        let logs = self.config.work_dir.join("runner-logs");
        create_dir(&logs)?;
        // The engine's alone: a runner's log may hold what its steps should not read.
        std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| ExecutorError::Start(format!("restricting {}: {e}", logs.display())))?;
        let log_path = logs.join(format!("{}-{}.log", request.stage_run_id, request.attempt));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| ExecutorError::Start(format!("creating {}: {e}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| ExecutorError::Start(e.to_string()))?;
        let mut command = tokio::process::Command::new(&self.config.runner_path);
        // Nothing of the engine's own environment (its database URL, its key) reaches a step:
        // only the documented allow-list and the runner's settings.
        command.env_clear().envs(steps.environment(&workspace));
        if let Some(user) = &steps.user {
            command.uid(user.uid).gid(user.gid);
        }
        command
            .env(wire::ENV_ENGINE_URL, &request.engine_url)
            .env(wire::ENV_TOKEN, &request.token)
            .env(wire::ENV_WORKSPACE, &workspace)
            .env(
                "GANTRY_RUNNER_KILL_GRACE_SECS",
                self.config.kill_grace.as_secs().to_string(),
            )
            .current_dir(&workspace)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            // Its own process group: a Ctrl-C to the engine's terminal does not reach it, and
            // the runner survives an engine crash to be re-adopted.
            .process_group(0)
            .kill_on_drop(false);
        let mut child = command.spawn().map_err(|e| {
            ExecutorError::Start(format!("{}: {e}", self.config.runner_path.display()))
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| ExecutorError::Start("the runner exited at once".into()))?;
        let start = proc_stat(pid).map_or(0, |(s, _)| s);
        let handle = format!("{pid}:{start}");
        if steps.maps_ids() {
            // The runner waits in its new user namespace until these are written; if they
            // cannot be, it gives up and fails the stage with the reason.
            let steps = steps.clone();
            let mapped = tokio::task::spawn_blocking(move || steps.map_ids(pid.unsigned_abs()))
                .await
                .map_err(|e| ExecutorError::Start(e.to_string()))?;
            if let Err(why) = mapped {
                tracing::warn!(runner = pid, error = %why, "could not map the runner's ids");
            }
        }
        // Reap the runner when it ends (no zombies) and remember how it ended.
        let exited = Arc::clone(&self.exited);
        let key = handle.clone();
        tokio::spawn(async move {
            let code = child.wait().await.ok().and_then(|status| {
                use std::os::unix::process::ExitStatusExt;
                status.code().or_else(|| status.signal().map(|s| 128 + s))
            });
            if let Ok(mut map) = exited.lock() {
                let now = std::time::Instant::now();
                map.retain(|_, (_, at)| now.duration_since(*at) < EXITED_KEEP);
                map.insert(key, (code, now));
            }
            let leftovers_of = workspace.clone();
            let _ = tokio::task::spawn_blocking(move || kill_leftovers(&leftovers_of)).await;
            // The workspace is only needed while the stage runs.
            let _ = tokio::fs::remove_dir_all(&workspace).await;
        });
        Ok(handle)
    }

    async fn cancel(&self, handle: &str) -> Result<(), ExecutorError> {
        let (pid, start) = parse_handle(handle)?;
        if !alive(pid, start) {
            return Ok(());
        }
        // The runner handles SIGTERM by stopping its steps' process groups and reporting the
        // attempt as cancelled; SIGKILL follows if it does not manage in time.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        let grace = self.config.kill_grace + Duration::from_secs(5);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline {
                if !alive(pid, start) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if alive(pid, start) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        });
        Ok(())
    }

    async fn observe(&self, handle: &str) -> Result<Observation, ExecutorError> {
        if let Some(code) = self
            .exited
            .lock()
            .ok()
            .and_then(|m| m.get(handle).map(|(code, _)| *code))
        {
            return Ok(Observation::Exited {
                code,
                detail: match code {
                    Some(c) if c > 128 => format!("killed by signal {}", c - 128),
                    Some(c) => format!("exit code {c}"),
                    None => "unknown exit status".into(),
                },
            });
        }
        let (pid, start) = parse_handle(handle)?;
        Ok(if alive(pid, start) {
            Observation::Running
        } else {
            Observation::Gone
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_reads_our_own_process() {
        let pid = i32::try_from(std::process::id()).expect("pid fits");
        let (start, state) = proc_stat(pid).expect("we exist");
        assert!(start > 0);
        assert!(matches!(state, 'R' | 'S'));
        assert!(alive(pid, start));
        assert!(
            !alive(pid, start + 1),
            "a different start time is another process"
        );
    }

    #[test]
    fn handles_parse() {
        assert_eq!(parse_handle("12:345").expect("valid"), (12, 345));
        assert!(parse_handle("job/x").is_err());
    }
}
