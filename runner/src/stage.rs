//! One stage attempt from start to finish, as the runner sees it: fetch the spec, unpack the
//! inputs, run the steps in order, upload the artifacts, flush the logs, report the completion.
//!
//! Failures of the stage's own work (a step exits non-zero, an artifact is missing) end in a
//! completion the engine records. Failures to follow the protocol (the engine refuses a call, or
//! cannot be reached within the retry budget) are [`StageError`]s: the runner stops its steps
//! and exits with code 2 without completing (3 when a signal came before the spec did).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::artifact::{self, TransferError};
use crate::checkout;
use crate::config::Config;
use crate::engine::{ApiError, EngineClient};
use crate::exit::RunnerExit;
use crate::heartbeat;
use crate::image::{self, ImageTask};
use crate::logs::mask::MaskError;
use crate::logs::queue::{DEFAULT_CAPACITY, QueueClosed};
use crate::logs::{LogError, LogQueue, Masker, log_system, send_logs};
use crate::step::{Leftovers, Limit, StepContext, StepEnd, run_step, timeout_reason};
use crate::stop::{self, Stop, StopSignal, StopWatch};
use crate::wire::{
    Completion, LogTail, MAX_TAIL_BYTES, Outcome, StageSpec, StepFinished, StepReport, StepStarted,
};

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Logs(#[from] LogError),
    #[error("{0}")]
    Stopped(String),
    #[error("{0} before the stage spec arrived")]
    CancelledEarly(String),
    #[error(transparent)]
    Mask(#[from] MaskError),
    #[error("cannot watch for signals: {0}")]
    Signals(std::io::Error),
    #[error("the log sender stopped")]
    LogsClosed(#[from] QueueClosed),
    #[error("the log sender task failed: {0}")]
    SenderTask(String),
}

/// How a stage attempt ended, before it is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageEnd {
    pub outcome: Outcome,
    pub reason: Option<String>,
    /// The image an image stage pushed.
    pub image: Option<String>,
}

impl StageEnd {
    fn succeeded() -> StageEnd {
        StageEnd {
            outcome: Outcome::Succeeded,
            reason: None,
            image: None,
        }
    }

    fn with(outcome: Outcome, reason: impl Into<String>) -> StageEnd {
        StageEnd {
            outcome,
            reason: Some(reason.into()),
            image: None,
        }
    }
}

/// Runs the stage attempt the configuration's token names; returns the process exit code.
pub async fn run(config: Config, started: Instant) -> RunnerExit {
    match run_attempt(&config, started).await {
        Ok(outcome) => RunnerExit::for_outcome(outcome),
        Err(err) => {
            eprintln!("gantry-runner: {err}");
            match err {
                StageError::CancelledEarly(_) => RunnerExit::Cancelled,
                _ => RunnerExit::Usage,
            }
        }
    }
}

async fn run_attempt(config: &Config, started: Instant) -> Result<Outcome, StageError> {
    let (stop_signal, mut stop_watch) = stop::channel();
    // Before anything else, so a SIGTERM at any point stops the runner in order.
    let signals = tokio::spawn(stop::on_signals(stop_signal.clone()).map_err(StageError::Signals)?);
    let client = Arc::new(EngineClient::new(config)?);
    let spec = tokio::select! {
        spec = client.spec() => spec?,
        stop = stop_watch.raised() => {
            return Err(match stop {
                Stop::Cancelled(why) => StageError::CancelledEarly(why),
                Stop::Fatal(why) => StageError::Stopped(why),
            });
        }
    };
    client.add_engines(&spec.engines);
    let masker = Arc::new(Masker::new(&spec.mask)?);
    let queue = Arc::new(LogQueue::new(spec.logged_lines, DEFAULT_CAPACITY));

    let sender = spawn_sender(client.clone(), queue.clone(), stop_signal.clone());
    let heartbeat = tokio::spawn(heartbeat::beat(
        client.clone(),
        Duration::from_secs(spec.heartbeat_secs),
        stop_signal.clone(),
    ));

    let mut stage = Stage {
        config,
        client: &client,
        spec: &spec,
        queue: &queue,
        masker: &masker,
        stop: stop_watch.clone(),
        stage_deadline: spec
            .timeout_secs
            .map(|secs| (started + Duration::from_secs(secs), Limit::Stage(secs))),
        leftovers: Vec::new(),
    };
    let ended = stage.execute().await;
    stage.stop_leftovers().await;
    queue.close();
    let completed = finish(ended, &client, &queue, sender, &stop_watch).await;
    heartbeat.abort();
    signals.abort();
    completed
}

/// Flushes the logs and reports the completion, or explains why neither can be done.
async fn finish(
    ended: Result<StageEnd, StageError>,
    client: &EngineClient,
    queue: &LogQueue,
    sender: JoinHandle<Result<u64, LogError>>,
    stop: &StopWatch,
) -> Result<Outcome, StageError> {
    let end = match ended {
        Ok(end) => end,
        Err(err) => {
            // A closed queue or a stop is best explained by the sender's own error, if it has
            // one; otherwise waiting for a flush the engine cannot take would only delay the exit.
            if sender.is_finished()
                && let Ok(Err(log_err)) = sender.await
            {
                return Err(log_err.into());
            }
            return Err(err);
        }
    };
    match sender.await {
        Ok(Ok(_acked)) => {}
        Ok(Err(err)) => return Err(err.into()),
        Err(join) => return Err(StageError::SenderTask(join.to_string())),
    }
    // The heartbeat failed for good while the work itself finished: nobody to tell.
    if let Some(Stop::Fatal(why)) = stop.current() {
        return Err(StageError::Stopped(why));
    }
    let (tail, steps) = queue.take_tail();
    let tail = tail.map(|batch| LogTail {
        first_seq: batch.first_seq,
        // The queue only ever holds whole encoded lines, which are UTF-8.
        lines: String::from_utf8_lossy(&batch.body).into_owned(),
    });
    let completion = Completion {
        outcome: end.outcome,
        reason: end.reason,
        lines: queue.last_line(),
        image: end.image,
        steps,
        tail,
    };
    if let Some(reason) = &completion.reason {
        eprintln!("gantry-runner: {:?}: {reason}", completion.outcome);
    }
    client.complete(&completion).await?;
    Ok(completion.outcome)
}

fn spawn_sender(
    client: Arc<EngineClient>,
    queue: Arc<LogQueue>,
    stop: StopSignal,
) -> JoinHandle<Result<u64, LogError>> {
    tokio::spawn(async move {
        let sent = send_logs(&queue, &*client, MAX_TAIL_BYTES).await;
        if let Err(err) = &sent {
            stop.raise(Stop::Fatal(err.to_string()));
            // Readers waiting for room would wait forever: let them fail instead.
            queue.close();
        }
        sent
    })
}

struct Stage<'a> {
    config: &'a Config,
    client: &'a EngineClient,
    spec: &'a StageSpec,
    queue: &'a Arc<LogQueue>,
    masker: &'a Arc<Masker>,
    stop: StopWatch,
    stage_deadline: Option<(Instant, Limit)>,
    leftovers: Vec<Leftovers>,
}

impl<'a> Stage<'a> {
    async fn say(&self, text: &str) -> Result<u64, StageError> {
        Ok(log_system(self.queue, self.masker, text).await?)
    }

    /// The workspace, borrowed from the configuration rather than from `self`, so it can be
    /// used while `self.stop` is being watched.
    fn workspace(&self) -> &'a PathBuf {
        &self.config.workspace
    }

    async fn execute(&mut self) -> Result<StageEnd, StageError> {
        if let Some(why) = &self.config.isolation_error {
            let why = format!("the steps cannot be started safely: {why}");
            self.say(&why).await?;
            return Ok(StageEnd::with(Outcome::Failed, why));
        }
        if let Err(err) = tokio::fs::create_dir_all(self.workspace()).await {
            let why = format!(
                "cannot create the workspace {}: {err}",
                self.workspace().display()
            );
            self.say(&why).await?;
            return Ok(StageEnd::with(Outcome::Failed, why));
        }
        if let Some(end) = self.checkout_source().await? {
            return Ok(end);
        }
        if let Some(end) = self.unpack_inputs().await? {
            return Ok(end);
        }
        if let Some(task) = &self.spec.image {
            return self.build_image(task).await;
        }
        for (index, step) in self.spec.steps.iter().enumerate() {
            if let Some(stop) = self.stop.current() {
                return stopped(stop);
            }
            let end = self.run_step(index, step).await?;
            if end.outcome != Outcome::Succeeded {
                return Ok(end);
            }
        }
        if let Some(end) = self.upload_artifacts().await? {
            return Ok(end);
        }
        Ok(StageEnd::succeeded())
    }

    /// Checks the stage's source out into the workspace (libgit2 blocks, so on a blocking
    /// thread), copying its progress lines into the log; a failure fails the stage.
    async fn checkout_source(&mut self) -> Result<Option<StageEnd>, StageError> {
        let Some(spec) = self.spec.checkout.clone() else {
            return Ok(None);
        };
        let workspace = self.workspace().clone();
        let (lines, mut received) = tokio::sync::mpsc::unbounded_channel::<String>();
        let task = tokio::task::spawn_blocking(move || {
            let cache = checkout::MirrorCache::new(checkout::MirrorCache::default_root());
            checkout::checkout(&cache, &spec, &workspace, &mut |line| {
                let _ = lines.send(line.to_owned());
            })
        });
        tokio::pin!(task);
        // A clone, so the log can be written while the stop is watched.
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                Some(line) = received.recv() => {
                    self.say(&line).await?;
                }
                done = &mut task => {
                    while let Ok(line) = received.try_recv() {
                        self.say(&line).await?;
                    }
                    let why = match done {
                        Ok(Ok(_)) => return Ok(None),
                        Ok(Err(err)) => format!("checkout: {err}"),
                        Err(err) => format!("checkout: {err}"),
                    };
                    self.say(&why).await?;
                    return Ok(Some(StageEnd::with(Outcome::Failed, why)));
                }
                // The blocking fetch cannot be interrupted; it ends with the process.
                raised = stop.raised() => return stopped(raised).map(Some),
            }
        }
    }

    async fn unpack_inputs(&mut self) -> Result<Option<StageEnd>, StageError> {
        let (client, workspace) = (self.client, self.workspace());
        for input in &self.spec.inputs {
            self.say(&format!("unpacking the artifacts of {}", input.stage))
                .await?;
            let unpacked = tokio::select! {
                unpacked = artifact::download_and_unpack(client, input.id, workspace) => unpacked,
                stop = self.stop.raised() => return stopped(stop).map(Some),
            };
            match unpacked {
                Ok(unpacked) => {
                    self.say(&format!("unpacked {} entries", unpacked.entries))
                        .await?;
                }
                Err(TransferError::Api(err)) => return Err(err.into()),
                Err(err) => {
                    let why = format!("the artifacts of {}: {err}", input.stage);
                    self.say(&why).await?;
                    return Ok(Some(StageEnd::with(Outcome::Failed, why)));
                }
            }
        }
        Ok(None)
    }

    async fn run_step(
        &mut self,
        index: usize,
        step: &crate::wire::StepSpec,
    ) -> Result<StageEnd, StageError> {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let now = Instant::now();
        if let Some((at, limit)) = self.stage_deadline
            && now >= at
        {
            let why = timeout_reason(&step.name, limit);
            self.say(&why).await?;
            return Ok(StageEnd::with(Outcome::TimedOut, why));
        }
        let step_deadline = step
            .timeout_secs
            .map(|secs| (now + Duration::from_secs(secs), Limit::Step(secs)));
        let deadline = match (step_deadline, self.stage_deadline) {
            (Some(s), Some(g)) => Some(if g.0 < s.0 { g } else { s }),
            (s, g) => s.or(g),
        };

        let first_line = self.say(&format!("$ {}", step.name)).await?;
        self.queue.push_report(StepReport::Started(StepStarted {
            index,
            name: step.name.clone(),
            first_line,
            started_ms: Some(unix_ms()),
        }))?;
        let spec: &'a StageSpec = self.spec;
        let ctx = StepContext {
            workspace: self.workspace(),
            stage_env: &spec.env,
            queue: self.queue,
            masker: self.masker,
            kill_grace: self.config.kill_grace,
        };
        let run = run_step(&ctx, step, deadline, &mut self.stop).await;
        self.leftovers.extend(run.leftovers);
        if let StepEnd::Stopped(Stop::Fatal(why)) = run.end {
            // The engine cannot be told about the step either.
            return Err(StageError::Stopped(why));
        }
        self.queue.push_report(StepReport::Finished(StepFinished {
            index,
            exit_code: run.exit_code,
            duration_ms: u64::try_from(run.duration.as_millis()).unwrap_or(u64::MAX),
        }))?;
        self.say(&format!("exit code {}", run.exit_code)).await?;
        match run.end {
            StepEnd::Exited if run.exit_code == 0 => Ok(StageEnd::succeeded()),
            StepEnd::Exited => Ok(StageEnd::with(
                Outcome::Failed,
                format!("step {:?} exited with {}", step.name, run.exit_code),
            )),
            StepEnd::NotStarted(why) => Ok(StageEnd::with(
                Outcome::Failed,
                format!("step {:?}: {why}", step.name),
            )),
            StepEnd::TimedOut(limit) => Ok(StageEnd::with(
                Outcome::TimedOut,
                timeout_reason(&step.name, limit),
            )),
            StepEnd::Stopped(stop) => stopped(stop),
        }
    }

    async fn upload_artifacts(&mut self) -> Result<Option<StageEnd>, StageError> {
        if self.spec.artifacts.is_empty() {
            return Ok(None);
        }
        // Processes a step left behind might still be writing the files: stop them first.
        self.stop_leftovers().await;
        let (workspace, patterns) = (self.workspace().clone(), self.spec.artifacts.clone());
        let resolved =
            tokio::task::spawn_blocking(move || artifact::resolve(&workspace, &patterns)).await;
        let entries = match resolved {
            Ok(Ok(entries)) => entries,
            Ok(Err(err)) => {
                let why = err.to_string();
                self.say(&why).await?;
                return Ok(Some(StageEnd::with(Outcome::Failed, why)));
            }
            Err(join) => {
                let why = format!("resolving the artifact paths failed: {join}");
                return Ok(Some(StageEnd::with(Outcome::Failed, why)));
            }
        };
        self.say(&format!("uploading {} artifact entries", entries.len()))
            .await?;
        let (client, workspace) = (self.client, self.workspace());
        let uploaded = tokio::select! {
            uploaded = artifact::pack_and_upload(client, workspace, &entries) => uploaded,
            stop = self.stop.raised() => return stopped(stop).map(Some),
        };
        match uploaded {
            Ok(()) => Ok(None),
            Err(TransferError::Api(err)) => Err(err.into()),
            Err(err) => {
                let why = format!("packing the artifacts: {err}");
                self.say(&why).await?;
                Ok(Some(StageEnd::with(Outcome::Failed, why)))
            }
        }
    }

    /// Builds and pushes the stage's image; its progress goes to the stage log.
    async fn build_image(&mut self, task: &'a ImageTask) -> Result<StageEnd, StageError> {
        let scratch = match Scratch::create(self.spec) {
            Ok(scratch) => scratch,
            Err(err) => {
                let why = format!("cannot create a scratch directory for the image: {err}");
                self.say(&why).await?;
                return Ok(StageEnd::with(Outcome::Failed, why));
            }
        };
        let workspace = self.workspace();
        let built = match task {
            ImageTask::B2i(task) => {
                self.with_progress(|progress| async move {
                    image::b2i::build(task, workspace, &scratch.0, &progress).await
                })
                .await?
            }
            ImageTask::S2i(task) => self.build_s2i(task, &scratch).await?,
        };
        Ok(match built {
            Built::Done(pushed) => StageEnd {
                outcome: Outcome::Succeeded,
                reason: None,
                image: Some(pushed.pinned),
            },
            Built::Ended(end) => end,
        })
    }

    /// S2I: prepare the builder's filesystem, run `assemble` as the stage's one step, commit.
    async fn build_s2i(
        &mut self,
        task: &'a image::S2iTask,
        scratch: &Scratch,
    ) -> Result<Built<image::Pushed>, StageError> {
        let workspace = self.workspace();
        let prepared = match self
            .with_progress(|progress| async move {
                image::s2i::prepare(task, workspace, &scratch.0, &progress).await
            })
            .await?
        {
            Built::Done(prepared) => prepared,
            Built::Ended(end) => return Ok(Built::Ended(end)),
        };
        let step = prepared.assemble_step();
        let end = self.run_step(0, &step).await?;
        self.stop_leftovers().await;
        if end.outcome != Outcome::Succeeded {
            return Ok(Built::Ended(end));
        }
        self.with_progress(|progress| async move {
            image::s2i::commit(prepared, task, &scratch.0, &progress).await
        })
        .await
    }

    /// Runs an image operation, copying its progress lines into the log as they come. An
    /// operation error becomes a failed [`StageEnd`]; a stop ends it early.
    async fn with_progress<T, F, Fut>(&mut self, operation: F) -> Result<Built<T>, StageError>
    where
        F: FnOnce(Box<dyn Fn(&str) + Send + Sync>) -> Fut,
        Fut: std::future::Future<Output = Result<T, image::ImageError>>,
    {
        let (lines, mut received) = tokio::sync::mpsc::unbounded_channel::<String>();
        let progress: Box<dyn Fn(&str) + Send + Sync> = Box::new(move |line: &str| {
            let _ = lines.send(line.to_owned());
        });
        let operation = operation(progress);
        tokio::pin!(operation);
        let mut stop = self.stop.clone();
        enum Event<T> {
            Line(String),
            Done(Result<T, image::ImageError>),
            Stop(Stop),
        }
        loop {
            let event = tokio::select! {
                Some(line) = received.recv() => Event::Line(line),
                done = &mut operation => Event::Done(done),
                raised = stop.raised() => Event::Stop(raised),
            };
            match event {
                Event::Line(line) => {
                    self.say(&line).await?;
                }
                Event::Done(done) => {
                    while let Ok(line) = received.try_recv() {
                        self.say(&line).await?;
                    }
                    return match done {
                        Ok(value) => Ok(Built::Done(value)),
                        Err(err) => {
                            let why = err.to_string();
                            self.say(&why).await?;
                            Ok(Built::Ended(StageEnd::with(Outcome::Failed, why)))
                        }
                    };
                }
                Event::Stop(raised) => return stopped(raised).map(Built::Ended),
            }
        }
    }

    async fn stop_leftovers(&mut self) {
        for leftovers in self.leftovers.drain(..) {
            leftovers.stop(self.config.kill_grace).await;
        }
    }
}

/// How a part of an image build ended (protocol errors aside).
enum Built<T> {
    Done(T),
    /// Failed, cancelled or timed out: the stage ends so.
    Ended(StageEnd),
}

/// A directory for an image build's temporary files (layers, an unpacked root filesystem),
/// outside the workspace so an S2I build does not see it as source; removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn create(spec: &StageSpec) -> std::io::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!(
            "gantry-image-{}-{}-{}",
            spec.stage_run_id,
            spec.attempt,
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn stopped(stop: Stop) -> Result<StageEnd, StageError> {
    match stop {
        Stop::Cancelled(why) => Ok(StageEnd::with(Outcome::Cancelled, why)),
        Stop::Fatal(why) => Err(StageError::Stopped(why)),
    }
}
