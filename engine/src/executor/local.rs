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
use gantry_runner::source_layer::SourceLayer;
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
    /// The source of the latest run that started a stage here (by run id): its other stages
    /// reuse the listing and the snapshot.
    sources: Mutex<Option<(i64, Arc<RunSource>)>>,
}

/// One run's source: its listing and, where runners can mount it as a layer, its snapshot —
/// a copy made once for the run that each stage's overlay reads from. The snapshot goes when
/// the last stage using it has ended (each holds the `Arc`).
pub struct RunSource {
    listing: super::source::Listing,
    snapshot: Option<PathBuf>,
}

impl Drop for RunSource {
    fn drop(&mut self) {
        if let Some(snapshot) = &self.snapshot {
            let _ = std::fs::remove_dir_all(snapshot);
        }
    }
}

/// A reaped runner's exit status (when known) and when it exited.
type Exited = (Option<i32>, std::time::Instant);

/// How long a reaped runner's exit status is remembered.
const EXITED_KEEP: Duration = Duration::from_secs(600);

impl LocalExecutor {
    pub fn new(config: LocalConfig) -> Self {
        // Snapshots of runs an earlier process started: no runner of this process reads them,
        // and `gantry run` may exit before its last stage's snapshot is removed.
        if config.source_dir.is_some() {
            let _ = std::fs::remove_dir_all(config.work_dir.join("sources"));
        }
        LocalExecutor {
            config,
            exited: Arc::default(),
            sources: Mutex::default(),
        }
    }

    /// The source of run `run_id`: listed (and, with `layered`, copied to its snapshot) by
    /// its first stage, shared by the rest. The data directory (workspaces, runner logs, an
    /// embedded PostgreSQL) is left out.
    async fn run_source(
        &self,
        source: &Path,
        run_id: i64,
        layered: bool,
    ) -> Result<Arc<RunSource>, ExecutorError> {
        if let Ok(cached) = self.sources.lock()
            && let Some((id, run_source)) = cached.as_ref()
            && *id == run_id
        {
            return Ok(Arc::clone(run_source));
        }
        let (source, exclude) = (source.to_path_buf(), vec![self.config.work_dir.clone()]);
        let snapshot = layered.then(|| {
            self.config
                .work_dir
                .join("sources")
                .join(format!("run-{run_id}"))
        });
        let steps = self.config.steps.clone();
        let run_source = tokio::task::spawn_blocking(move || {
            let listing = super::source::Listing::of(&source, &exclude);
            if let Some(snapshot) = &snapshot {
                make_snapshot(&listing, snapshot, &steps)?;
            }
            Ok::<_, ExecutorError>(Arc::new(RunSource { listing, snapshot }))
        })
        .await
        .map_err(|e| ExecutorError::Start(e.to_string()))??;
        if let Ok(mut cached) = self.sources.lock() {
            *cached = Some((run_id, Arc::clone(&run_source)));
        }
        Ok(run_source)
    }

    /// Puts the run's source in a fresh workspace: as an overlay layer the runner mounts
    /// (returned as the runner's environment line), or as a copy.
    async fn place_source(
        &self,
        source: &Path,
        request: &StartRequest,
        workspace: &Path,
    ) -> Result<(Arc<RunSource>, Option<(&'static str, String)>), ExecutorError> {
        let steps = &self.config.steps;
        // Only a runner in a mount namespace of its own may mount the layer.
        let layered = steps.hide_data_dir;
        let run_source = self.run_source(source, request.run_id, layered).await?;
        let copying = Arc::clone(&run_source);
        let (workspace, steps) = (workspace.to_path_buf(), steps.clone());
        let env = tokio::task::spawn_blocking(move || match &copying.snapshot {
            Some(snapshot) => {
                let layer_dir = layer_dir(&workspace);
                let layer = SourceLayer {
                    lower: snapshot.clone(),
                    upper: layer_dir.join("upper"),
                    work: layer_dir.join("work"),
                    target: workspace,
                };
                for dir in [&layer.upper, &layer.work] {
                    create_dir(dir)?;
                }
                steps
                    .hand_over(&layer_dir)
                    .map_err(|e| ExecutorError::Start(e.to_string()))?;
                Ok(Some(layer.to_env()))
            }
            None => copying
                .listing
                .place(&workspace)
                .map(|()| None)
                .map_err(|e| ExecutorError::Start(format!("copying the source: {e}"))),
        })
        .await
        .map_err(|e| ExecutorError::Start(e.to_string()))??;
        Ok((run_source, env))
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

/// Where a workspace's source layer keeps the stage's changes (`upper`) and overlay's scratch
/// directory (`work`): beside the workspace, on the same file system.
fn layer_dir(workspace: &Path) -> PathBuf {
    workspace.with_extension("layer")
}

/// Removes a layer directory. Overlay leaves its scratch directory `work/work` with no
/// permissions at all, which only root could list: opened up first.
fn remove_layer(dir: &Path) {
    let scratch = dir.join("work").join("work");
    if scratch.exists() {
        let _ = std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o700));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Copies the listed source to `snapshot` (once per run) for the stages' layers, owned by the
/// step user (a layer's files are copied up under that identity).
fn make_snapshot(
    listing: &super::source::Listing,
    snapshot: &Path,
    steps: &super::steps::StepPolicy,
) -> Result<(), ExecutorError> {
    let parent = snapshot.parent().unwrap_or(snapshot);
    create_dir(parent)?;
    // Runners (the step user) pass through to their run's snapshot; listing is for the engine.
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| ExecutorError::Start(format!("restricting {}: {e}", parent.display())))?;
    let _ = std::fs::remove_dir_all(snapshot);
    create_dir(snapshot)?;
    listing
        .place(snapshot)
        .map_err(|e| ExecutorError::Start(format!("copying the source: {e}")))?;
    steps
        .hand_over(snapshot)
        .map_err(|e| ExecutorError::Start(e.to_string()))
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
        let (run_source, layer_env) = match &self.config.source_dir {
            Some(source) => {
                let (run_source, env) = self.place_source(source, request, &workspace).await?;
                (Some(run_source), env)
            }
            None => (None, None),
        };
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
        if let Some((name, value)) = &layer_env {
            command.env(name, value);
        }
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
            // The workspace (and its layer) is only needed while the stage runs; the run's
            // snapshot goes with its last stage.
            let _ = tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(&workspace);
                remove_layer(&layer_dir(&workspace));
                drop(run_source);
            })
            .await;
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
    fn an_earlier_process_s_snapshots_are_removed_at_start() {
        let dir = tempfile::tempdir().expect("dir");
        let old = dir.path().join("sources/run-7/src");
        std::fs::create_dir_all(&old).expect("an old snapshot");
        std::fs::write(old.join("main.rs"), "fn main() {}").expect("file");
        let config = |source_dir: Option<PathBuf>| LocalConfig {
            runner_path: PathBuf::from("gantry-runner"),
            work_dir: dir.path().to_path_buf(),
            slots: 1,
            kill_grace: Duration::from_secs(1),
            source_dir,
            steps: super::super::steps::StepPolicy::unprepared(dir.path()),
        };
        // An engine without a source directory (`gantry serve`) leaves the directory alone.
        let _ = LocalExecutor::new(config(None));
        assert!(old.exists());
        let _ = LocalExecutor::new(config(Some(dir.path().join("project"))));
        assert!(!dir.path().join("sources").exists());
    }

    #[test]
    fn handles_parse() {
        assert_eq!(parse_handle("12:345").expect("valid"), (12, 345));
        assert!(parse_handle("job/x").is_err());
    }
}
