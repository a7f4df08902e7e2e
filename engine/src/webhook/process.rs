//! Processing a stored delivery: parse it, read the pipeline files at its commit, apply the
//! `on:` filters, and start runs (or failed runs for broken files). Runs happen after the
//! delivery was answered; the worker claims deliveries with SKIP LOCKED, so with several
//! engines each delivery is processed once, and one left `received` by a crash is picked up
//! again on the next start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::cache::CachedFile;
use super::event::{Event, GitRef, Provider, Push};
use super::filter::{self, Decision};
use super::source::{self, SourceError};
use crate::engine::Engine;
use crate::run::{self, NewRunOf, RunContext, RunError};
use crate::store::deliveries::{self, DeliveryStatus, Pending};
use crate::store::repos::{self, RepoRow};
use crate::store::{PipelineId, StoreError, VersionId, pipelines, runs};

/// Delivery processors per engine.
pub const WORKERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Run(#[from] RunError),
}

impl From<sqlx::Error> for ProcessError {
    fn from(e: sqlx::Error) -> Self {
        ProcessError::Store(StoreError::Database(e))
    }
}

/// Deliveries one transaction claims and processes at most. Under load a batch shares one
/// claim, one outcome update and one commit (each a round trip and, for commits, a WAL
/// flush); alone, a delivery is a batch of one and waits for nothing.
pub const BATCH: i64 = 32;

/// Processes deliveries until shutdown: woken by the receiver (and by other engines through
/// NOTIFY), polling every few seconds as a fallback.
pub async fn worker(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    loop {
        loop {
            match process_batch(&engine).await {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "processing webhook deliveries failed; retrying");
                    break;
                }
            }
        }
        tokio::select! {
            _ = engine.deliveries.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(3)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Processes a batch of waiting deliveries, oldest first; returns how many (0: none was
/// waiting, or other engines had them all).
///
/// Network first: the deliveries are read without a lock, and everything they need from git
/// (the commit, its pipeline files, the files it changed) is fetched before any row is locked.
/// Then one transaction claims those still waiting (SKIP LOCKED: another engine may be on
/// some) and records everything they lead to — their runs, their statuses — together: a crash
/// or a database error midway leaves every one of them `received`, and a later batch processes
/// them from the start, so no delivery is half-done or done twice.
pub async fn process_batch(engine: &Engine) -> Result<usize, ProcessError> {
    // A batch no other processor of this engine holds: they read without locks, and would
    // otherwise all read the same oldest batch, one of them winning the claim and the others
    // finding nothing to do.
    let pool = &engine.store.pool;
    let (mut waiting, _taken) = engine
        .delivery_batches
        .next(BATCH, |held| async move {
            deliveries::peek(pool, BATCH, &held).await
        })
        .await?;
    if waiting.is_empty() {
        return Ok(0);
    }
    waiting.sort_by_key(|p| p.id);
    let mut repositories = Vec::new();
    let mut prepared = Vec::with_capacity(waiting.len());
    for pending in &waiting {
        let ready = match prepare(engine, pending, &mut repositories).await {
            Ok(ready) => ready,
            Err(e) => Prepared::Done(failed(e)?),
        };
        prepared.push((pending.id, ready));
    }
    let ids: Vec<i64> = waiting.iter().map(|p| p.id).collect();
    let mut tx = engine.store.pool.begin().await?;
    let claimed = deliveries::claim(&mut tx, &ids).await?;
    let mut stored = Stored::default();
    let mut starting = Vec::new();
    let mut recorded = Vec::with_capacity(claimed.len());
    for (id, ready) in prepared {
        if !claimed.contains(&id) {
            continue;
        }
        let (status, lines) = match ready {
            Prepared::Done((status, summary)) => (status, vec![Line::Text(summary)]),
            Prepared::Ready(ready) => match record(&mut tx, id, *ready, &mut stored).await {
                Ok(done) => {
                    let first = starting.len();
                    starting.extend(done.runs);
                    let lines = done.lines.into_iter().map(|l| l.after(first)).collect();
                    (done.status, lines)
                }
                Err(e) => {
                    let (status, summary) = failed(e)?;
                    (status, vec![Line::Text(summary)])
                }
            },
        };
        recorded.push((id, status, lines));
    }
    // The batch's runs last, all at once: numbering them holds their pipeline's row until the
    // commit, and every other processor starting runs of that pipeline waits for it.
    let triggered = run::start_many(&mut tx, &starting).await?;
    let outcomes: Vec<(i64, DeliveryStatus, String)> = recorded
        .into_iter()
        .map(|(id, status, lines)| {
            let text: Vec<String> = lines.iter().map(|l| l.render(&triggered)).collect();
            (id, status, text.join("\n"))
        })
        .collect();
    deliveries::finish_all(&mut *tx, &outcomes).await?;
    tx.commit().await?;
    for (id, status, summary) in &outcomes {
        tracing::info!(delivery = id, status = status.as_str(), summary = %summary, "webhook delivery processed");
    }
    // What it took up, claimed or not: another engine winning some is no reason to wait.
    Ok(waiting.len())
}

/// A delivery that cannot lead anywhere (its commit cannot be fetched, a run cannot start) is
/// recorded as failed with the reason, like any outcome; a database error is returned, and
/// the whole batch is retried.
fn failed(e: ProcessError) -> Result<(DeliveryStatus, String), ProcessError> {
    match e {
        ProcessError::Source(e) => Ok((DeliveryStatus::Failed, e.to_string())),
        ProcessError::Run(RunError::BadRequest(m) | RunError::Conflict(m)) => {
            Ok((DeliveryStatus::Failed, m))
        }
        e => Err(e),
    }
}

/// What processing a delivery needs from outside the database, gathered before any row is
/// locked.
enum Prepared {
    /// Decided already: a ping, an ignored event, a payload that does not parse.
    Done((DeliveryStatus, String)),
    /// An event that can start runs, with what git says about it.
    Ready(Box<Ready>),
}

struct Ready {
    repo: RepoRow,
    event: Event,
    context: RunContext,
    trigger: &'static str,
    commit: String,
    files: Arc<Vec<CachedFile>>,
    /// The files the event changed, when a pipeline's `paths` filter asks.
    changed: Option<Vec<String>>,
    /// Summary lines so far (an annotated tag peeled).
    lines: Vec<String>,
}

async fn prepare(
    engine: &Engine,
    pending: &Pending,
    known: &mut Vec<RepoRow>,
) -> Result<Prepared, ProcessError> {
    let done = |status, summary: String| Ok(Prepared::Done((status, summary)));
    let Some(provider) = Provider::parse(&pending.provider) else {
        return done(
            DeliveryStatus::Failed,
            format!("unknown provider `{}`", pending.provider),
        );
    };
    let parsed = match super::parse(provider, &pending.event, &pending.payload) {
        Ok(parsed) => parsed,
        Err(rejection) => return done(DeliveryStatus::Failed, rejection.to_string()),
    };
    let Some(repo_id) = pending.repository_id else {
        return done(
            DeliveryStatus::Failed,
            "the delivery names no repository".into(),
        );
    };
    // A batch's deliveries are mostly about the same few repositories: read each once.
    let repo = match known.iter().find(|r| r.id == repo_id) {
        Some(repo) => repo.clone(),
        None => {
            let repo = repos::get(&engine.store.pool, repo_id).await?;
            known.push(repo.clone());
            repo
        }
    };
    let event = parsed.event;
    match &event {
        Event::Ping => return done(DeliveryStatus::Ignored, "ping: the hook works".into()),
        Event::Ignored { reason } => return done(DeliveryStatus::Ignored, reason.clone()),
        Event::Push(push) => {
            if let Some(message) = &push.head_message
                && filter::skip_ci(message)
            {
                return done(
                    DeliveryStatus::Ignored,
                    "the head commit asks to skip CI ([skip ci])".into(),
                );
            }
        }
        Event::PullRequest(_) => {}
    }
    let Some((mut context, trigger, mut commit)) = context_of(&repo, parsed.provider, &event)
    else {
        return done(DeliveryStatus::Ignored, "nothing to run".into());
    };
    let mut lines = Vec::new();
    if let Event::Push(
        push @ Push {
            git_ref: GitRef::Tag(_),
            tag_commit: None,
            ..
        },
    ) = &event
    {
        // The payload does not say which commit the tag points at (older Gitea): `after`
        // may be an annotated tag's object, which is not a commit. Peel it in the mirror.
        let auth = source::clone_auth(engine, &repo).await?;
        let mirror = source::fetch(
            engine,
            &repo.clone_url,
            &push.after,
            context.git_ref.as_deref(),
            auth,
        )
        .await?;
        let peeled = source::peel(mirror, &push.after).await?;
        if peeled != push.after {
            context.tag_object = Some(push.after.clone());
            context.commit_sha = Some(peeled.clone());
            commit = peeled;
        }
    }
    if let (Some(object), Some(tag)) = (&context.tag_object, &context.tag) {
        lines.push(format!(
            "annotated tag `{tag}` (tag object {}) points at commit {}",
            &object[..object.len().min(12)],
            &commit[..commit.len().min(12)]
        ));
    }
    let files = source::files_at(engine, &repo, &commit, context.git_ref.as_deref()).await?;
    // The run lists' subject and author: read in the mirror files_at just used (or kept from
    // an earlier delivery of this commit). Without them a run still runs.
    match source::describe(engine, &repo, &commit, context.git_ref.as_deref()).await {
        Ok(info) => context.describe_commit(&info),
        Err(e) => tracing::warn!(commit = %commit, error = %e, "cannot read the commit's message"),
    }
    let wants_changes = files.iter().any(|file| {
        file.plan
            .as_ref()
            .is_ok_and(|plan| filter::needs_changed_files(&plan.pipeline, &event))
    });
    let changed = if wants_changes {
        Some(changed_files(engine, &repo, &commit, &context, &event).await?)
    } else {
        None
    };
    Ok(Prepared::Ready(Box::new(Ready {
        repo,
        event,
        context,
        trigger,
        commit,
        files,
        changed,
        lines,
    })))
}

/// A line of a delivery's summary. A run's number is known only once the batch's runs are
/// stored, after every delivery of the batch was recorded.
enum Line {
    Text(String),
    /// `WHAT: run N started`, N the number of the batch's run at this index.
    Started {
        what: String,
        run: usize,
    },
}

impl Line {
    /// The same line, its run index counted from `first` in the batch's list of runs.
    fn after(self, first: usize) -> Line {
        match self {
            Line::Started { what, run } => Line::Started {
                what,
                run: first + run,
            },
            text => text,
        }
    }

    fn render(&self, triggered: &[run::Triggered]) -> String {
        match self {
            Line::Text(text) => text.clone(),
            Line::Started { what, run } => match triggered.get(*run) {
                Some(t) => format!("{what}: run {} started", t.number),
                None => format!("{what}: run started"),
            },
        }
    }
}

/// What one delivery leads to: its status and summary, and the runs it starts.
struct Recorded {
    status: DeliveryStatus,
    lines: Vec<Line>,
    runs: Vec<run::Starting>,
}

/// The pipelines and versions a batch stored: in a flood of pushes the deliveries of a batch
/// mostly carry the same file at the same commit, which is then looked up once per batch.
#[derive(Default)]
struct Stored {
    versions: HashMap<(i64, String, String), (PipelineId, VersionId)>,
}

impl Stored {
    /// The pipeline `name` from `file` of `repo`, with the file's text as a version of it.
    async fn version(
        &mut self,
        tx: &mut sqlx::PgConnection,
        repo: &RepoRow,
        file: &CachedFile,
        name: &str,
    ) -> Result<(PipelineId, VersionId), ProcessError> {
        let key = (repo.id.0, file.path.clone(), file.text.clone());
        if let Some(&known) = self.versions.get(&key) {
            return Ok(known);
        }
        let pipeline = pipelines::ensure_pipeline(&mut *tx, repo.project_id, name).await?;
        let (version, _, _) = pipelines::add_version(&mut *tx, pipeline, &file.text).await?;
        pipelines::link_repository(&mut *tx, pipeline, repo.id, &file.path).await?;
        self.versions.insert(key, (pipeline, version));
        Ok((pipeline, version))
    }
}

/// Records what one prepared event leads to, inside the batch's transaction: schedules armed
/// by a push to the default branch, failed runs for broken files, the runs to start (left to
/// the caller, which starts a whole batch's at once), and the delivery's summary.
async fn record(
    tx: &mut sqlx::PgConnection,
    delivery: i64,
    ready: Ready,
    stored: &mut Stored,
) -> Result<Recorded, ProcessError> {
    let Ready {
        repo,
        event,
        context,
        trigger,
        commit,
        files,
        changed,
        lines,
    } = ready;
    let mut lines: Vec<Line> = lines.into_iter().map(Line::Text).collect();
    let mut runs = Vec::new();
    // A push to the default branch (re)arms the schedules of the files it leaves there.
    if let Event::Push(Push {
        git_ref: GitRef::Branch(branch),
        ..
    }) = &event
        && *branch == repo.default_branch
    {
        let armed = super::arming::sync(tx, &repo, &files).await?;
        lines.extend(armed.into_iter().map(Line::Text));
    }
    let short = &commit[..commit.len().min(12)];
    if files.is_empty() {
        lines.push(Line::Text(format!(
            "no pipeline files ({}) at commit {short}",
            repo.pipeline_files.join(", ")
        )));
        return Ok(Recorded {
            status: DeliveryStatus::Ignored,
            lines,
            runs,
        });
    }
    let changed_refs: Vec<&str> = changed
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    let mut started = 0;
    for file in files.iter() {
        match &file.plan {
            Err(problems) => {
                let run = failed_run(
                    tx, &repo, &file.path, &file.text, trigger, &context, problems,
                )
                .await?;
                deliveries::link_run(&mut *tx, delivery, run.0).await?;
                lines.push(Line::Text(format!(
                    "{}: invalid, run {} failed",
                    file.path, run.1
                )));
                started += 1;
            }
            Ok(plan) => match filter::decide(&plan.pipeline, &event, &changed_refs) {
                Decision::Skip(why) => {
                    lines.push(Line::Text(format!(
                        "{} (`{}`): {why}",
                        file.path, plan.pipeline.name.value
                    )));
                }
                Decision::Run => {
                    let name = plan.pipeline.name.value.clone();
                    let (pipeline, version) = stored.version(tx, &repo, file, &name).await?;
                    let params = match run::resolve_params(&plan.pipeline, &BTreeMap::new()) {
                        Ok(params) => params,
                        Err(e) => {
                            lines.push(Line::Text(format!(
                                "{} (`{name}`): cannot start: {e}",
                                file.path
                            )));
                            continue;
                        }
                    };
                    let starting = run::Starting::new(NewRunOf {
                        pipeline,
                        version,
                        plan,
                        trigger,
                        params: &params,
                        context: &context,
                        triggered_by: context.actor.as_deref(),
                    })?;
                    runs.push(starting.from_delivery(delivery));
                    lines.push(Line::Started {
                        what: format!("{} (`{name}`)", file.path),
                        run: runs.len() - 1,
                    });
                    started += 1;
                }
            },
        }
    }
    let status = if started > 0 {
        DeliveryStatus::Triggered
    } else {
        DeliveryStatus::Ignored
    };
    Ok(Recorded {
        status,
        lines,
        runs,
    })
}

/// The run context and the trigger name of an event that can start runs.
fn context_of(
    repo: &RepoRow,
    provider: Provider,
    event: &Event,
) -> Option<(RunContext, &'static str, String)> {
    let base = RunContext {
        repository_id: Some(repo.id.0),
        repository: Some(repo.full_name.clone()),
        ..RunContext::default()
    };
    match event {
        Event::Push(push) => {
            let (trigger, ctx) = match &push.git_ref {
                GitRef::Branch(b) => (
                    "push",
                    RunContext {
                        event: "push".into(),
                        branch: Some(b.clone()),
                        ..base
                    },
                ),
                GitRef::Tag(t) => (
                    "tag",
                    RunContext {
                        event: "tag".into(),
                        tag: Some(t.clone()),
                        ..base
                    },
                ),
            };
            let commit = push.commit().to_owned();
            Some((
                RunContext {
                    tag_object: (commit != push.after).then(|| push.after.clone()),
                    commit_sha: Some(commit.clone()),
                    git_ref: Some(push.git_ref.full()),
                    actor: push.sender.clone(),
                    ..ctx
                },
                trigger,
                commit,
            ))
        }
        Event::PullRequest(pr) => {
            // Where the provider publishes a pull request's head in the target repository, so
            // a fork's commit can be fetched from the repository Gantry knows.
            let git_ref = match provider {
                Provider::Gitlab => format!("refs/merge-requests/{}/head", pr.number),
                Provider::Github | Provider::Gitea => format!("refs/pull/{}/head", pr.number),
            };
            Some((
                RunContext {
                    event: "pull_request".into(),
                    branch: Some(pr.head_ref.clone()),
                    commit_sha: Some(pr.head_sha.clone()),
                    pr_number: Some(pr.number),
                    pr_title: Some(pr.title.clone()),
                    from_fork: pr.from_fork,
                    git_ref: Some(git_ref),
                    actor: pr.sender.clone(),
                    ..base
                },
                "pull_request",
                pr.head_sha.clone(),
            ))
        }
        Event::Ping | Event::Ignored { .. } => None,
    }
}

/// The files an event changed: the payload's list when complete, otherwise from git.
async fn changed_files(
    engine: &Engine,
    repo: &RepoRow,
    commit: &str,
    context: &RunContext,
    event: &Event,
) -> Result<Vec<String>, ProcessError> {
    let zero = |sha: &str| sha.bytes().all(|b| b == b'0');
    let (from, to) = match event {
        Event::Push(push) if push.changed_files_complete => return Ok(push.changed_files.clone()),
        // `commit`, not `after`: an annotated tag's `after` is its tag object.
        Event::Push(push) => (push.before.clone().filter(|b| !zero(b)), commit.to_owned()),
        Event::PullRequest(pr) => (pr.base_sha.clone(), pr.head_sha.clone()),
        _ => return Ok(Vec::new()),
    };
    let auth = source::clone_auth(engine, repo).await?;
    let mirror = source::fetch(
        engine,
        &repo.clone_url,
        commit,
        context.git_ref.as_deref(),
        auth.clone(),
    )
    .await?;
    if let Some(from) = &from {
        // The older commit may not be in the mirror yet (shallow fetches).
        source::fetch(engine, &repo.clone_url, from, None, auth).await?;
    }
    Ok(source::changed_files(mirror, from, &to).await?)
}

/// Records a broken pipeline file as a failed run of the pipeline it defines (or used to):
/// the reason is the `FILE:LINE:COL: message` list, so the author sees it like any failure.
async fn failed_run(
    tx: &mut sqlx::PgConnection,
    repo: &RepoRow,
    path: &str,
    text: &str,
    trigger: &str,
    context: &RunContext,
    problems: &str,
) -> Result<(crate::store::RunId, i32), ProcessError> {
    let pipeline = match pipelines::for_source_file(&mut *tx, repo.id, path).await? {
        Some(id) => id,
        None => {
            let name = name_for_file(path);
            let id = pipelines::ensure_pipeline(&mut *tx, repo.project_id, &name).await?;
            pipelines::link_repository(&mut *tx, id, repo.id, path).await?;
            id
        }
    };
    let version = pipelines::add_broken_version(&mut *tx, pipeline, text).await?;
    let context_json = serde_json::to_value(context).unwrap_or_default();
    let reason = format!("{path} is not a valid pipeline:\n{problems}");
    Ok(runs::create_failed(tx, pipeline, version, trigger, &context_json, &reason).await?)
}

/// A pipeline name for a file whose own `name:` cannot be read: its file stem, made valid.
fn name_for_file(path: &str) -> String {
    let stem = path
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .trim_start_matches('.')
        .trim_end_matches(".yaml")
        .trim_end_matches(".yml");
    let cleaned: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('-').to_owned();
    if cleaned.is_empty() || !crate::pipeline::decode::is_valid_name(&cleaned) {
        "pipeline".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::name_for_file;

    #[test]
    fn broken_files_get_a_name_from_their_path() {
        assert_eq!(name_for_file(".gantry.yaml"), "gantry");
        assert_eq!(name_for_file(".gantry/Release Build.yml"), "release-build");
    }
}
