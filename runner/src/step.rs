//! Runs one step: `sh -e -c <run>` in the workspace, in its own process group, with its output
//! read into the log queue, until it exits, hits its time limit, or the stage is stopped.
//!
//! Reporting the step to the engine is the stage's business; this module knows nothing of HTTP,
//! so a step can be run and checked in a test on its own.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::logs::reader::ReadError;
use crate::logs::{LogQueue, Masker, log_system, read_into_queue};
use crate::process::{ProcessGroup, exit_code};
use crate::stop::{Stop, StopWatch};
use crate::wire::{ENV_TOKEN, StepSpec, Stream};

/// How long output may keep arriving after the shell exits before the step is reported done
/// anyway. Longer means a background process still holds the pipe; its output goes on being
/// logged, and the process is stopped when the stage ends.
const DRAIN: Duration = Duration::from_millis(250);
/// How long leftover readers get once their processes are stopped.
const LEFTOVER_DRAIN: Duration = Duration::from_secs(2);

/// What a step needs from its stage.
pub struct StepContext<'a> {
    pub workspace: &'a Path,
    /// The stage's environment; the step's own entries come after and win.
    pub stage_env: &'a [(String, String)],
    pub queue: &'a Arc<LogQueue>,
    pub masker: &'a Arc<Masker>,
    pub kill_grace: Duration,
}

/// Which time limit a step ran into, with its length in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Step(u64),
    Stage(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    /// The shell exited by itself; the exit code says how it went.
    Exited,
    TimedOut(Limit),
    Stopped(Stop),
    /// The shell could not be started at all.
    NotStarted(String),
}

pub struct StepRun {
    /// The shell's exit code, 128 + signal when killed, 127 when it never started.
    pub exit_code: i32,
    pub duration: Duration,
    pub end: StepEnd,
    /// Processes the step left running in the background, stopped when the stage ends.
    pub leftovers: Option<Leftovers>,
}

/// A finished step's background processes and the readers still logging their output.
pub struct Leftovers {
    group: ProcessGroup,
    readers: Vec<JoinHandle<Result<(), ReadError>>>,
}

impl Leftovers {
    /// Stops the processes and waits briefly for their last output.
    pub async fn stop(mut self, grace: Duration) {
        self.group.terminate(grace).await;
        for reader in self.readers {
            // A process that left the group (setsid) may hold the pipe forever: stop reading.
            let abort = reader.abort_handle();
            if tokio::time::timeout(LEFTOVER_DRAIN, reader).await.is_err() {
                abort.abort();
            }
        }
    }
}

enum Ending {
    Exited(std::io::Result<std::process::ExitStatus>),
    Deadline,
    Stop(Stop),
}

/// Runs `step` to its end. `deadline` is the earlier of the step's and the stage's limits.
pub async fn run_step(
    ctx: &StepContext<'_>,
    step: &StepSpec,
    deadline: Option<(Instant, Limit)>,
    stop: &mut StopWatch,
) -> StepRun {
    let started = Instant::now();
    let mut command = Command::new("sh");
    command
        .arg("-e")
        .arg("-c")
        .arg(&step.run)
        .current_dir(ctx.workspace)
        // The runner's token speaks for the whole attempt; step code has no business with it.
        .env_remove(ENV_TOKEN)
        .env_remove(crate::isolation::ENV_HIDE)
        .env_remove(crate::isolation::ENV_KEEP)
        .env_remove(crate::isolation::ENV_ID_MAP)
        .envs(ctx.stage_env.iter().map(|(k, v)| (k, v)))
        .envs(step.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut group, pipes) = match ProcessGroup::spawn(command) {
        Ok(spawned) => spawned,
        Err(err) => {
            let why = format!("cannot start the step's shell: {err}");
            let _ = log_system(ctx.queue, ctx.masker, &why).await;
            return StepRun {
                exit_code: 127,
                duration: started.elapsed(),
                end: StepEnd::NotStarted(why),
                leftovers: None,
            };
        }
    };
    let mut readers = Vec::new();
    if let Some(stdout) = pipes.stdout {
        readers.push(tokio::spawn(read_into_queue(
            stdout,
            Stream::Stdout,
            ctx.masker.clone(),
            ctx.queue.clone(),
        )));
    }
    if let Some(stderr) = pipes.stderr {
        readers.push(tokio::spawn(read_into_queue(
            stderr,
            Stream::Stderr,
            ctx.masker.clone(),
            ctx.queue.clone(),
        )));
    }

    let ending = tokio::select! {
        status = group.wait() => Ending::Exited(status),
        () = sleep_until(deadline.map(|(at, _)| at)) => Ending::Deadline,
        stop = stop.raised() => Ending::Stop(stop),
    };
    let (status, end) = match ending {
        Ending::Exited(status) => (status.ok(), StepEnd::Exited),
        Ending::Deadline => {
            let limit = deadline.map_or(Limit::Step(0), |(_, limit)| limit);
            let _ = log_system(ctx.queue, ctx.masker, &timeout_reason(&step.name, limit)).await;
            (
                group.terminate(ctx.kill_grace).await,
                StepEnd::TimedOut(limit),
            )
        }
        Ending::Stop(stop) => {
            if let Stop::Cancelled(why) = &stop {
                let _ =
                    log_system(ctx.queue, ctx.masker, &format!("{why}: stopping the step")).await;
            }
            (
                group.terminate(ctx.kill_grace).await,
                StepEnd::Stopped(stop),
            )
        }
    };
    let exit_code = status.map_or(-1, exit_code);
    let duration = started.elapsed();

    // Wait for the step's last output; readers still going after that belong to processes the
    // step left in the background.
    let drain_until = Instant::now() + DRAIN;
    let mut still_reading = Vec::new();
    for mut reader in readers {
        match tokio::time::timeout_at(drain_until, &mut reader).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(ReadError::Closed(_)))) => {} // the log sender failed; it reports that
            Ok(Ok(Err(err))) => eprintln!("gantry-runner: {err}"),
            Ok(Err(join)) => eprintln!("gantry-runner: log reader failed: {join}"),
            Err(_) => still_reading.push(reader),
        }
    }
    let leftovers = if still_reading.is_empty() && group.is_gone() {
        None
    } else {
        Some(Leftovers {
            group,
            readers: still_reading,
        })
    };
    StepRun {
        exit_code,
        duration,
        end,
        leftovers,
    }
}

pub fn timeout_reason(step: &str, limit: Limit) -> String {
    match limit {
        Limit::Step(secs) => format!("step {step:?} timed out after {secs}s"),
        Limit::Stage(secs) => format!("stage timed out after {secs}s in step {step:?}"),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::queue::DEFAULT_CAPACITY;
    use crate::process::live_members_of;
    use crate::stop::{self, StopSignal};
    use crate::wire::decode_line;
    use std::path::PathBuf;

    struct Fixture {
        workspace: PathBuf,
        env: Vec<(String, String)>,
        queue: Arc<LogQueue>,
        masker: Arc<Masker>,
        stop_signal: StopSignal,
        stop: StopWatch,
    }

    impl Fixture {
        fn new(capacity: usize) -> Fixture {
            let (stop_signal, stop) = stop::channel();
            Fixture {
                workspace: std::env::temp_dir(),
                env: vec![
                    ("GREETING".into(), "from the stage".into()),
                    ("TARGET".into(), "stage".into()),
                    ("API_KEY".into(), "k3y-value".into()),
                ],
                queue: Arc::new(LogQueue::new(0, capacity)),
                masker: Arc::new(Masker::new(&["k3y-value".to_string()]).expect("masker")),
                stop_signal,
                stop,
            }
        }

        async fn run(&mut self, script: &str, deadline: Option<(Instant, Limit)>) -> StepRun {
            let ctx = StepContext {
                workspace: &self.workspace,
                stage_env: &self.env,
                queue: &self.queue,
                masker: &self.masker,
                kill_grace: Duration::from_secs(2),
            };
            let step = StepSpec {
                name: "test".into(),
                run: script.into(),
                env: vec![("TARGET".into(), "step".into())],
                timeout_secs: None,
            };
            run_step(&ctx, &step, deadline, &mut self.stop).await
        }

        /// Everything logged so far, as (stream, text).
        async fn lines(&self) -> Vec<(Stream, String)> {
            let mut lines = Vec::new();
            self.queue.close();
            while let Some(batch) = self.queue.next_batch(usize::MAX, Duration::ZERO).await {
                let text = std::str::from_utf8(&batch.body).expect("utf-8");
                for raw in text.split_terminator('\n') {
                    let line = decode_line(raw).expect("valid");
                    lines.push((line.stream, line.text.to_owned()));
                }
                self.queue.release(batch.body.len());
            }
            lines
        }
    }

    fn out(text: &str) -> (Stream, String) {
        (Stream::Stdout, text.to_owned())
    }

    #[tokio::test]
    async fn a_step_sees_stage_then_step_env_and_its_output_is_logged_masked() {
        let mut fx = Fixture::new(DEFAULT_CAPACITY);
        let run = fx
            .run(
                "echo \"$GREETING\"; echo \"target=$TARGET\"; echo \"key $API_KEY\" >&2",
                None,
            )
            .await;
        assert_eq!(run.end, StepEnd::Exited);
        assert_eq!(run.exit_code, 0);
        assert!(run.leftovers.is_none());
        let mut lines = fx.lines().await;
        lines.sort_by_key(|(stream, text)| (stream.code(), text.clone()));
        assert_eq!(
            lines,
            vec![
                (Stream::Stderr, "key ***".into()),
                out("from the stage"),
                out("target=step"),
            ]
        );
    }

    #[tokio::test]
    async fn the_shell_stops_at_the_first_failing_command() {
        let mut fx = Fixture::new(DEFAULT_CAPACITY);
        let run = fx.run("echo before; false; echo never", None).await;
        assert_eq!(run.exit_code, 1);
        assert_eq!(fx.lines().await, vec![out("before")]);
        let mut fx = Fixture::new(DEFAULT_CAPACITY);
        assert_eq!(fx.run("exit 2", None).await.exit_code, 2);
    }

    #[tokio::test]
    async fn a_step_past_its_limit_is_killed_with_everything_it_started() {
        let mut fx = Fixture::new(DEFAULT_CAPACITY);
        let deadline = Instant::now() + Duration::from_millis(300);
        let started = Instant::now();
        let run = fx
            .run(
                "sleep 100 & echo started; wait",
                Some((deadline, Limit::Step(1))),
            )
            .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(run.end, StepEnd::TimedOut(Limit::Step(1)));
        assert_eq!(run.exit_code, 128 + 15);
        assert!(run.leftovers.is_none(), "nothing is left of the group");
        let lines = fx.lines().await;
        assert_eq!(lines[0], out("started"));
        assert_eq!(
            lines[1],
            (Stream::System, "step \"test\" timed out after 1s".into())
        );
    }

    #[tokio::test]
    async fn a_cancel_stops_the_running_step() {
        let mut fx = Fixture::new(DEFAULT_CAPACITY);
        let signal = fx.stop_signal.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            signal.raise(Stop::Cancelled("cancelled by the engine".into()));
        });
        let run = fx.run("sleep 100", None).await;
        assert_eq!(
            run.end,
            StepEnd::Stopped(Stop::Cancelled("cancelled by the engine".into()))
        );
        assert_eq!(run.exit_code, 128 + 15);
    }

    #[tokio::test]
    async fn background_processes_are_left_running_until_the_stage_stops_them() {
        let mut fx = Fixture::new(DEFAULT_CAPACITY);
        let run = fx
            .run("(sleep 0.3; echo late; sleep 100) & echo done", None)
            .await;
        assert_eq!((run.end.clone(), run.exit_code), (StepEnd::Exited, 0));
        let leftovers = run.leftovers.expect("the subshell still runs");
        let pgid = leftovers.group.pgid();
        assert!(!live_members_of(pgid).is_empty());
        tokio::time::sleep(Duration::from_millis(600)).await;
        leftovers.stop(Duration::from_secs(2)).await;
        assert_eq!(live_members_of(pgid), Vec::<i32>::new());
        assert_eq!(fx.lines().await, vec![out("done"), out("late")]);
    }

    #[tokio::test]
    async fn heavy_output_arrives_complete_through_a_small_queue() {
        // 64 KiB of room for ~2.5 MB of output: the step is held back, not the memory grown.
        let mut fx = Fixture::new(64 * 1024);
        let queue = fx.queue.clone();
        let consumer = tokio::spawn(async move {
            let (mut lines, mut max_held) = (0u64, 0usize);
            while let Some(batch) = queue.next_batch(16 * 1024, Duration::ZERO).await {
                max_held = max_held.max(queue.held_bytes());
                lines += batch.lines;
                tokio::time::sleep(Duration::from_millis(1)).await;
                queue.release(batch.body.len());
            }
            (lines, max_held)
        });
        let run = fx.run("seq 1 300000", None).await;
        assert_eq!(run.exit_code, 0);
        fx.queue.close();
        let (lines, max_held) = consumer.await.expect("joined");
        assert_eq!(lines, 300_000);
        assert!(max_held <= 64 * 1024 + 256 * 1024, "held {max_held} bytes");
    }

    /// Log throughput of the runner's side: pipe → lines → mask → queue → batches. Run with
    /// `cargo test --release -p gantry-runner -- --ignored --nocapture log_throughput`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a check; run in release mode"]
    async fn log_throughput() {
        const BYTES: u64 = 1 << 30;
        let mut fx = Fixture::new(DEFAULT_CAPACITY);
        let queue = fx.queue.clone();
        let consumer = tokio::spawn(async move {
            let mut lines = 0u64;
            let max = crate::wire::MAX_LOG_BATCH_BYTES;
            while let Some(batch) = queue.next_batch(max, Duration::from_millis(100)).await {
                lines += batch.lines;
                queue.release(batch.body.len());
            }
            lines
        });
        let line = "building crate foo v1.2.3 (/work/src/foo) with a fairly ordinary log line";
        let started = Instant::now();
        let run = fx
            .run(&format!("yes '{line}' | head -c {BYTES}"), None)
            .await;
        fx.queue.close();
        let lines = consumer.await.expect("joined");
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(run.exit_code, 0);
        assert_eq!(lines, BYTES.div_ceil(line.len() as u64 + 1));
        println!(
            "{lines} lines, {:.0} MB/s, {:.1} M lines/s",
            BYTES as f64 / secs / 1e6,
            lines as f64 / secs / 1e6
        );
    }
}
