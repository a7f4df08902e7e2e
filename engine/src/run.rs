//! Starting and steering runs: apply a pipeline, trigger it, rerun, cancel, approve, reject.
//! Each operation validates, writes in one transaction, and wakes the schedulers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineError};
use crate::pipeline::{ParamKind, Pipeline, Plan, Report};
use crate::store::{
    self, PipelineId, RunId, StageRunId, StageStatus, StoreError, pipelines, runs, stages,
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid pipeline:\n{0}")]
    Invalid(Report),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl RunError {
    /// Whether the database could not be reached (rather than refusing what was asked).
    pub fn is_database(&self) -> bool {
        matches!(
            self,
            RunError::Store(StoreError::Database(_))
                | RunError::Engine(crate::engine::EngineError::Store(StoreError::Database(_)))
        )
    }
}

impl From<crate::images::ImagesError> for RunError {
    fn from(e: crate::images::ImagesError) -> Self {
        RunError::BadRequest(e.to_string())
    }
}

impl From<crate::webhook::source::SourceError> for RunError {
    fn from(e: crate::webhook::source::SourceError) -> Self {
        use crate::webhook::source::SourceError;
        match e {
            SourceError::NoBranch { .. } | SourceError::NoTokenSecret { .. } => {
                RunError::BadRequest(e.to_string())
            }
            SourceError::Store(s) => RunError::Store(s),
            other => RunError::Conflict(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for RunError {
    fn from(e: sqlx::Error) -> Self {
        RunError::Store(StoreError::Database(e))
    }
}

/// The version a pipeline file was stored as.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Applied {
    pub pipeline_id: PipelineId,
    pub project: String,
    pub name: String,
    pub version: i32,
    /// false when the file was identical to the newest version.
    pub created: bool,
}

/// Validates and stores a pipeline file as the newest version of its pipeline.
pub async fn apply(
    engine: &Engine,
    project: &str,
    file: &str,
    yaml: &str,
) -> Result<Applied, RunError> {
    let pipeline = crate::pipeline::parse(file, yaml).map_err(RunError::Invalid)?;
    if let Some(executor) = engine.executor(engine.default_executor()) {
        let refusals = executor.refusals(&pipeline);
        if !refusals.is_empty() {
            return Err(RunError::Invalid(crate::pipeline::Report::new(
                file, refusals,
            )));
        }
    }
    if !crate::pipeline::decode::is_valid_name(project) {
        return Err(RunError::BadRequest(format!(
            "project name `{project}` is not valid"
        )));
    }
    let mut tx = engine.store.pool.begin().await?;
    let project_id = pipelines::ensure_project(&mut *tx, project).await?;
    let pipeline_id = pipelines::ensure_pipeline(&mut tx, project_id, &pipeline.name.value).await?;
    let (_, version, created) = pipelines::add_version(&mut tx, pipeline_id, yaml).await?;
    tx.commit().await?;
    Ok(Applied {
        pipeline_id,
        project: project.to_owned(),
        name: pipeline.name.value,
        version,
        created,
    })
}

/// What a run is about: the event and the commit. Reaches steps as GANTRY_* variables and
/// `when` conditions as `event`, `branch`, `tag`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RunContext {
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The commit built (for a tag, the commit it points at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
    /// The commit's committer time (seconds since the epoch), when the trigger knows it: image
    /// stages date their images with it (without it, with the commit they check out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_time: Option<i64>,
    /// The commit message's first line, for run lists (`Fix the build`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_message: Option<String>,
    /// The commit's author (their name as the commit records it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_author: Option<String>,
    /// An annotated tag's own object id (`commit_sha` is the commit it points at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_number: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_title: Option<String>,
    /// A pull request from a fork: no secrets unless the pipeline opts in.
    #[serde(default)]
    pub from_fork: bool,
    /// The registered repository the run's source comes from (checked out before the steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_id: Option<i64>,
    /// `owner/name` of that repository (reaches steps as GANTRY_REPOSITORY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The ref the commit came from (`refs/heads/main`, `refs/pull/7/head`): fetched when the
    /// server does not hand out commits by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Who pushed or opened the pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

impl RunContext {
    /// Fills in what the commit itself says (message, author, time) where the trigger did not.
    pub fn describe_commit(&mut self, info: &gantry_runner::checkout::CommitInfo) {
        if self.commit_message.is_none() && !info.summary.is_empty() {
            self.commit_message = Some(info.summary.clone());
        }
        if self.commit_author.is_none() && !info.author.is_empty() {
            self.commit_author = Some(info.author.clone());
        }
        self.commit_time.get_or_insert(info.time);
    }
}

/// Params and the event the run is about.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct TriggerRequest {
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Default (or null): a manual run.
    #[serde(default)]
    pub context: Option<RunContext>,
}

/// A run that was created.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Triggered {
    pub run_id: RunId,
    pub number: i32,
}

/// Checks given params against the declaration and fills in defaults.
pub fn resolve_params(
    pipeline: &Pipeline,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, RunError> {
    let mut out = BTreeMap::new();
    for name in given.keys() {
        if pipeline.param(name).is_none() {
            let known: Vec<&str> = pipeline
                .params
                .iter()
                .map(|p| p.name.value.as_str())
                .collect();
            return Err(RunError::BadRequest(format!(
                "unknown param `{name}` (declared: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    for param in &pipeline.params {
        let name = &param.name.value;
        let value = match given.get(name) {
            Some(v) => v.clone(),
            None => param.kind.default_text().ok_or_else(|| {
                RunError::BadRequest(format!("param `{name}` has no default and was not given"))
            })?,
        };
        match &param.kind {
            ParamKind::Bool { .. } if value != "true" && value != "false" => {
                return Err(RunError::BadRequest(format!(
                    "param `{name}` must be true or false, got `{value}`"
                )));
            }
            ParamKind::Choice { options, .. } if !options.contains(&value) => {
                return Err(RunError::BadRequest(format!(
                    "param `{name}` must be one of {}, got `{value}`",
                    options.join(", ")
                )));
            }
            _ => {}
        }
        out.insert(name.clone(), value);
    }
    Ok(out)
}

fn new_stages(plan: &Plan) -> Vec<runs::NewStage> {
    plan.stages
        .iter()
        .enumerate()
        .map(|(i, planned)| {
            let stage = plan.stage(planned);
            let to_i32 = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
            runs::NewStage {
                key: planned.key.clone(),
                plan_index: to_i32(i),
                needs: planned.needs.iter().map(|&n| to_i32(n)).collect(),
                finally: planned.finally,
                allow_failure: stage.allow_failure,
                max_attempts: i32::try_from(stage.retries).unwrap_or(0) + 1,
                timeout_secs: stage
                    .timeout
                    .as_ref()
                    .map(|t| i32::try_from(t.value.as_secs().max(1)).unwrap_or(i32::MAX)),
            }
        })
        .collect()
}

/// `cancelled_by` of runs a newer run of their concurrency group cancelled.
pub const BY_CONCURRENCY: &str = "concurrency";

/// Starts a run of the pipeline's newest version.
pub async fn trigger(
    engine: &Engine,
    project: &str,
    name: &str,
    trigger: &str,
    request: TriggerRequest,
) -> Result<Triggered, RunError> {
    trigger_by(engine, project, name, trigger, request, None).await
}

/// [`trigger`], recording who started the run (a user's name; the webhook's sender).
pub async fn trigger_by(
    engine: &Engine,
    project: &str,
    name: &str,
    trigger: &str,
    request: TriggerRequest,
    by: Option<&str>,
) -> Result<Triggered, RunError> {
    let row = pipelines::find(&engine.store.pool, project, name).await?;
    let plan = engine.plan(row.version_id).await?;
    let params = resolve_params(&plan.pipeline, &request.params)?;
    let mut context = request.context.unwrap_or(RunContext {
        event: trigger.to_owned(),
        ..RunContext::default()
    });
    // A caller may say which commit to build, but only from a repository of the pipeline's
    // own project: the checkout uses the repository's clone token, which another project's
    // members must not get to use. Missing and foreign repositories read the same.
    if let Some(repo_id) = context.repository_id {
        let owned =
            crate::store::repos::get(&engine.store.pool, crate::store::repos::RepoId(repo_id))
                .await
                .is_ok_and(|repo| repo.project == project);
        if !owned {
            return Err(RunError::BadRequest(format!(
                "context.repository_id {repo_id} is not a repository of project `{project}`"
            )));
        }
    }
    // A pipeline from a repository, started by hand (or by the generic hook) without a
    // commit, builds the head of the asked branch, or of the repository's default branch.
    if context.commit_sha.is_none()
        && let Some(repo_id) = pipelines::repository_of(&engine.store.pool, row.id).await?
    {
        let branch = context.branch.clone();
        at_branch_head(engine, repo_id, branch, &mut context).await?;
    }
    let mut tx = engine.store.pool.begin().await?;
    let triggered = start(
        &mut tx,
        NewRunOf {
            pipeline: row.id,
            version: row.version_id,
            plan: &plan,
            trigger,
            params: &params,
            context: &context,
            triggered_by: by.or(context.actor.as_deref()),
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        run.id = triggered.run_id.0,
        run.number = triggered.number,
        pipeline = name,
        "run triggered"
    );
    Ok(triggered)
}

/// What [`start`] needs: a pipeline version, its plan, and what the run is about.
pub struct NewRunOf<'a> {
    pub pipeline: PipelineId,
    pub version: store::VersionId,
    pub plan: &'a Plan,
    pub trigger: &'a str,
    pub params: &'a BTreeMap<String, String>,
    pub context: &'a RunContext,
    /// Who or what started it: a user, the webhook's sender, `schedule`.
    pub triggered_by: Option<&'a str>,
}

/// A run checked and ready to be stored: what [`start_many`] takes.
pub struct Starting {
    pipeline: PipelineId,
    version: store::VersionId,
    trigger: String,
    params: serde_json::Value,
    context: serde_json::Value,
    group: Option<String>,
    cancel_in_progress: bool,
    stages: Vec<runs::NewStage>,
    triggered_by: Option<String>,
    delivery: Option<i64>,
}

impl Starting {
    /// Checks what does not need the database (its concurrency group renders), so that a
    /// batch of runs stored together fails only for a database error.
    pub fn new(new: NewRunOf<'_>) -> Result<Starting, RunError> {
        let concurrency = new.plan.pipeline.concurrency.as_ref();
        let group = concurrency
            .map(|c| render_group(&c.group, new.params, new.context))
            .transpose()?;
        Ok(Starting {
            pipeline: new.pipeline,
            version: new.version,
            trigger: new.trigger.to_owned(),
            params: serde_json::to_value(new.params).unwrap_or_default(),
            context: serde_json::to_value(new.context).unwrap_or_default(),
            group,
            cancel_in_progress: concurrency.is_some_and(|c| c.cancel_in_progress),
            stages: new_stages(new.plan),
            triggered_by: new.triggered_by.map(str::to_owned),
            delivery: None,
        })
    }

    /// Started by this webhook delivery (the delivery lists it).
    pub fn from_delivery(self, delivery: i64) -> Starting {
        Starting {
            delivery: Some(delivery),
            ..self
        }
    }
}

/// Creates a run and its stages inside the caller's transaction (so a webhook delivery or a
/// cron slot is marked done in the same commit that creates its run), cancels older runs of
/// its concurrency group when asked to, and wakes the schedulers on commit.
pub async fn start(tx: &mut sqlx::PgConnection, new: NewRunOf<'_>) -> Result<Triggered, RunError> {
    start_many(tx, &[Starting::new(new)?])
        .await?
        .pop()
        .ok_or_else(|| RunError::Store(StoreError::NotFound("the run just started".into())))
}

/// [`start`] for many runs at once, in the order given (a later run of a concurrency group
/// cancels an earlier one), in a few statements: what a batch of webhook deliveries starts.
pub async fn start_many(
    tx: &mut sqlx::PgConnection,
    starting: &[Starting],
) -> Result<Vec<Triggered>, RunError> {
    if starting.is_empty() {
        return Ok(Vec::new());
    }
    let new: Vec<runs::NewRun<'_>> = starting
        .iter()
        .map(|s| runs::NewRun {
            pipeline: s.pipeline,
            version: s.version,
            trigger: &s.trigger,
            params: &s.params,
            context: &s.context,
            concurrency_group: s.group.as_deref(),
            rerun_of: None,
            triggered_by: s.triggered_by.as_deref(),
            delivery: s.delivery,
            stages: &s.stages,
        })
        .collect();
    let created = runs::create_many(&mut *tx, &new).await?;
    let mut events = Vec::with_capacity(created.len());
    let mut triggered = Vec::with_capacity(created.len());
    for (s, &(run_id, number)) in starting.iter().zip(&created) {
        if let Some(group) = &s.group
            && s.cancel_in_progress
        {
            for older in runs::older_active_in_group(&mut *tx, s.pipeline, group, run_id).await? {
                runs::request_cancel(&mut *tx, older, Some(BY_CONCURRENCY)).await?;
                tracing::info!(run.id = older.0, newer = run_id.0, group = %group, "cancelling an older run of the concurrency group");
            }
        }
        let what = match &s.triggered_by {
            Some(by) => format!("triggered ({}) by {by}", s.trigger),
            None => format!("triggered ({})", s.trigger),
        };
        events.push((run_id, what));
        triggered.push(Triggered { run_id, number });
    }
    store::events::record_for_runs(&mut *tx, "run", &events).await?;
    store::wake(&mut *tx).await?;
    Ok(triggered)
}

/// The concurrency group of a run: the template rendered with its params and commit.
fn render_group(
    template: &crate::pipeline::template::Template,
    params: &BTreeMap<String, String>,
    context: &RunContext,
) -> Result<String, RunError> {
    use crate::pipeline::template::{GitField, Reference};
    template
        .render(|r| match r {
            Reference::Param(p) => params.get(p).cloned(),
            Reference::Git(GitField::Branch) => Some(context.branch.clone().unwrap_or_default()),
            Reference::Git(GitField::Tag) => Some(context.tag.clone().unwrap_or_default()),
            Reference::Git(GitField::Sha) => Some(context.commit_sha.clone().unwrap_or_default()),
            Reference::Git(GitField::ShortSha) => Some(
                context.commit_sha.as_deref().unwrap_or("").chars().take(7).collect(),
            ),
            Reference::Git(GitField::Ref) => Some(match (&context.tag, &context.branch) {
                (Some(t), _) => format!("refs/tags/{t}"),
                (None, Some(b)) => format!("refs/heads/{b}"),
                _ => String::new(),
            }),
            _ => None,
        })
        .map_err(|missing| {
            RunError::BadRequest(format!(
                "`concurrency.group` uses `${{{{ {missing} }}}}`, which has no value when a run starts"
            ))
        })
}

/// A new run of the same version, params and commit, started by `by`. With `failed_only`,
/// stages that succeeded keep their results (and artifacts) and only the rest run again.
pub async fn rerun(
    engine: &Engine,
    id: RunId,
    failed_only: bool,
    by: Option<&str>,
) -> Result<Triggered, RunError> {
    let old = runs::get(&engine.store.pool, id).await?;
    if !old.status.is_terminal() {
        return Err(RunError::Conflict(format!(
            "run {id} is still {}",
            old.status.as_str()
        )));
    }
    let plan = engine.plan(old.version_id).await?;
    let old_stages = stages::for_run(&engine.store.pool, id).await?;
    let mut tx = engine.store.pool.begin().await?;
    let (run_id, number) = runs::create(
        &mut tx,
        runs::NewRun {
            pipeline: old.pipeline_id,
            version: old.version_id,
            trigger: "rerun",
            params: &old.params,
            context: &old.context,
            concurrency_group: None,
            rerun_of: Some(id),
            triggered_by: by,
            delivery: None,
            stages: &new_stages(&plan),
        },
    )
    .await?;
    if failed_only {
        let fresh = stages::for_run(&mut *tx, run_id).await?;
        for (new, old) in fresh.iter().zip(&old_stages) {
            if old.status == StageStatus::Succeeded && !old.finally {
                stages::reuse_result(&mut *tx, new.id, old).await?;
            }
        }
    }
    store::wake(&mut *tx).await?;
    tx.commit().await?;
    Ok(Triggered { run_id, number })
}

/// Cancels a whole run (its `finally` stages still run, bounded; a second cancel stops them
/// too), or one running stage of it. `by`: who asked.
pub async fn cancel(
    engine: &Engine,
    run: RunId,
    stage: Option<StageRunId>,
    by: Option<&str>,
) -> Result<(), RunError> {
    let mut tx = engine.store.pool.begin().await?;
    let who = by.map(|b| format!(" by {b}")).unwrap_or_default();
    match stage {
        None => match runs::request_cancel(&mut tx, run, by).await? {
            runs::CancelRequest::Ended => {
                return Err(RunError::Conflict(format!("run {run} has already ended")));
            }
            runs::CancelRequest::First => {
                store::events::record(
                    &mut *tx,
                    run,
                    None,
                    "run",
                    &format!("cancel requested{who}; finally stages still run"),
                )
                .await?;
            }
            runs::CancelRequest::Again => {
                // Asked twice: the cleanup is not wanted either.
                stages::request_cancel(&mut *tx, run, None).await?;
                stages::cancel_waiting(&mut *tx, run, &format!("cancelled again{who}")).await?;
                runs::mark_dirty(&mut *tx, run).await?;
                store::events::record(
                    &mut *tx,
                    run,
                    None,
                    "run",
                    &format!("cancel requested again{who}: finally stages stopped too"),
                )
                .await?;
            }
        },
        Some(stage) => {
            // The run before the stage (the lock order of `stages::lock_run_of`).
            stages::lock_run_of(&mut tx, stage).await?;
            let row = stages::get(&mut *tx, stage).await?;
            if row.run_id != run {
                return Err(StoreError::NotFound(format!("stage run {stage} of run {run}")).into());
            }
            match row.status {
                StageStatus::Running => {
                    stages::request_cancel(&mut *tx, run, Some(stage)).await?;
                }
                StageStatus::Pending | StageStatus::Queued | StageStatus::WaitingApproval => {
                    stages::set_status(&mut *tx, stage, StageStatus::Cancelled, Some("cancelled"))
                        .await?;
                    runs::mark_dirty(&mut *tx, run).await?;
                }
                other => {
                    return Err(RunError::Conflict(format!(
                        "stage `{}` has already {}",
                        row.key,
                        other.as_str()
                    )));
                }
            }
        }
    }
    store::wake(&mut *tx).await?;
    tx.commit().await?;
    // Stop running attempts right away (their runners would also see it on the next heartbeat).
    stop_cancelled(engine, run).await;
    Ok(())
}

/// Asks the executors to stop the run's running attempts that were asked to stop.
pub async fn stop_cancelled(engine: &Engine, run: RunId) {
    let Ok(rows) = crate::store::stages::for_run(&engine.store.pool, run).await else {
        return;
    };
    for row in rows
        .iter()
        .filter(|r| r.status == crate::store::StageStatus::Running && r.cancel_requested)
    {
        if let (Some(name), Some(handle)) = (&row.executor, &row.executor_handle)
            && let Some(executor) = engine.executor(name)
            && let Err(e) = executor.cancel(handle).await
        {
            tracing::warn!(stage = %row.key, error = %e, "cancel failed");
        }
    }
}

/// Points a run's context at the head of `branch` (or the repository's default branch) of a
/// registered repository: the commit, the ref and the repository, resolved now.
pub async fn at_branch_head(
    engine: &Engine,
    repo: crate::store::repos::RepoId,
    branch: Option<String>,
    context: &mut RunContext,
) -> Result<(), RunError> {
    use crate::webhook::source::{self, SourceError};
    let repo = crate::store::repos::get(&engine.store.pool, repo).await?;
    let branch = branch.unwrap_or_else(|| repo.default_branch.clone());
    let head = source::branch_head(engine, &repo, &branch)
        .await?
        .ok_or_else(|| SourceError::NoBranch {
            branch: branch.clone(),
            url: repo.clone_url.clone(),
        })?;
    // The commit's subject and author for run lists; a run does not wait on them failing.
    match source::describe(engine, &repo, &head, Some(&format!("refs/heads/{branch}"))).await {
        Ok(info) => context.describe_commit(&info),
        Err(e) => tracing::warn!(commit = %head, error = %e, "cannot read the commit's message"),
    }
    context.git_ref = Some(format!("refs/heads/{branch}"));
    context.branch = Some(branch);
    context.commit_sha = Some(head);
    context.repository_id = Some(repo.id.0);
    context.repository = Some(repo.full_name);
    Ok(())
}

/// Approves (or rejects) a stage waiting for approval. `who` is recorded on the stage.
pub async fn decide_approval(
    engine: &Engine,
    run: RunId,
    key: &str,
    who: &str,
    approve: bool,
) -> Result<(), RunError> {
    let row = stages::find(&engine.store.pool, run, key).await?;
    let run_row = runs::get(&engine.store.pool, run).await?;
    let plan = engine.plan(run_row.version_id).await?;
    let index = usize::try_from(row.plan_index).unwrap_or(usize::MAX);
    let stage = plan
        .stages
        .get(index)
        .map(|p| plan.stage(p))
        .ok_or_else(|| StoreError::NotFound(format!("stage `{key}` in the plan")))?;
    if let Some(approval) = &stage.approval {
        // Role entries (`role:maintainer`) are checked by the access layer; named users here.
        let users: Vec<&String> = approval
            .approvers
            .iter()
            .filter(|a| !a.starts_with("role:"))
            .collect();
        let roles_allowed = approval.approvers.iter().any(|a| a.starts_with("role:"));
        if !users.is_empty() && !roles_allowed && !users.iter().any(|a| *a == who) {
            return Err(RunError::Conflict(format!(
                "`{who}` may not approve stage `{key}` (approvers: {})",
                approval.approvers.join(", ")
            )));
        }
    }
    let mut tx = engine.store.pool.begin().await?;
    let (_, status, _, _) = stages::lock(&mut tx, row.id).await?;
    if status != StageStatus::WaitingApproval {
        return Err(RunError::Conflict(format!(
            "stage `{key}` is not waiting for approval (it is {})",
            status.as_str()
        )));
    }
    // `approved_by` only for an approval: a rejection is told by the stage's error
    // ("rejected by bob"), and the stage must not also read as approved.
    if approve {
        stages::set_approved_by(&mut *tx, row.id, who).await?;
    }
    let verb = if approve { "approved" } else { "rejected" };
    store::events::record(
        &mut *tx,
        run,
        Some(row.id),
        "approval",
        &format!("stage `{key}` {verb} by {who}"),
    )
    .await?;
    if approve {
        let next = if matches!(stage.kind, crate::pipeline::StageKind::Gate) {
            StageStatus::Succeeded
        } else {
            StageStatus::Queued
        };
        stages::set_status(&mut *tx, row.id, next, None).await?;
    } else {
        stages::set_status(
            &mut *tx,
            row.id,
            StageStatus::Failed,
            Some(&format!("rejected by {who}")),
        )
        .await?;
    }
    runs::mark_dirty(&mut *tx, run).await?;
    store::wake(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}
