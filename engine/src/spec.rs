//! The stage spec a runner receives: steps, the environment (GANTRY_* facts, env, params,
//! secrets), artifacts to fetch and keep. Templates are rendered here, on the engine, so event
//! data reaches steps only as environment variable values, never as shell text.

use std::collections::HashMap;

use gantry_runner::image::{B2iTask, ImageTask, Preset, S2iTask};
use gantry_runner::wire::{ArtifactInput, StageSpec, StepSpec};

use crate::engine::Engine;
use crate::images;
use crate::pipeline::template::{GitField, Reference, RunField, StageField, Template};
use crate::pipeline::{B2iPreset, Env, StageKind};
use crate::run::{RunContext, RunError};
use crate::store::{self, StageRunId, runs, stages};

/// Everything templates may refer to in one stage instance.
struct Scope<'a> {
    params: HashMap<String, String>,
    context: &'a RunContext,
    run: &'a runs::RunRow,
    images: HashMap<String, String>,
    matrix: &'a [(String, String)],
}

impl Scope<'_> {
    fn lookup(&self, reference: &Reference) -> Option<String> {
        match reference {
            Reference::Param(p) => self.params.get(p).cloned(),
            Reference::Matrix(m) => self
                .matrix
                .iter()
                .find(|(k, _)| k == m)
                .map(|(_, v)| v.clone()),
            Reference::Git(field) => {
                let sha = self.context.commit_sha.clone();
                Some(match field {
                    GitField::Sha => sha.unwrap_or_default(),
                    GitField::ShortSha => {
                        sha.map(|s| s.chars().take(7).collect()).unwrap_or_default()
                    }
                    GitField::Branch => self.context.branch.clone().unwrap_or_default(),
                    GitField::Tag => self.context.tag.clone().unwrap_or_default(),
                    GitField::Ref => match (&self.context.tag, &self.context.branch) {
                        (Some(t), _) => format!("refs/tags/{t}"),
                        (None, Some(b)) => format!("refs/heads/{b}"),
                        _ => String::new(),
                    },
                })
            }
            Reference::Run(RunField::Number) => Some(self.run.number.to_string()),
            Reference::Run(RunField::Id) => Some(self.run.id.to_string()),
            Reference::Stage { name, field } => {
                let image = self.images.get(name)?;
                Some(match field {
                    StageField::Image => image.clone(),
                    StageField::Digest => image
                        .rsplit_once('@')
                        .map(|(_, d)| d.to_owned())
                        .unwrap_or_default(),
                })
            }
        }
    }

    fn render(&self, template: &Template) -> Result<String, RunError> {
        template.render(|r| self.lookup(r)).map_err(|missing| {
            RunError::BadRequest(format!("`${{{{ {missing} }}}}` has no value in this run"))
        })
    }

    fn render_env(&self, env: &Env, out: &mut Vec<(String, String)>) -> Result<(), RunError> {
        for (name, value) in env {
            out.push((name.value.clone(), self.render(value)?));
        }
        Ok(())
    }
}

/// Builds the spec for the runner of the current attempt of the stage run `row`.
pub async fn build(engine: &Engine, row: &stages::StageRunRow) -> Result<StageSpec, RunError> {
    let pool = &engine.store.pool;
    // Independent reads, side by side: every stage start waits for this spec.
    let (run, all) = tokio::try_join!(
        runs::get(pool, row.run_id),
        stages::for_run(pool, row.run_id),
    )?;
    let plan = engine.plan(run.version_id).await?;
    let index = usize::try_from(row.plan_index).unwrap_or(usize::MAX);
    let planned = plan
        .stages
        .get(index)
        .ok_or_else(|| RunError::Conflict(format!("stage `{}` is not in its plan", row.key)))?;
    let stage = plan.stage(planned);
    // Artifacts of every stage this one needs, directly or through others, nearest last.
    let needs: Vec<Vec<usize>> = plan.stages.iter().map(|s| s.needs.clone()).collect();
    let mut producers = unpack_order(&needs, index);
    // A b2i `from` names the stage whose file it packs: unpacked last, its copy is the one left.
    if let StageKind::B2i(b2i) = &stage.kind
        && let Some(from) = &b2i.from
    {
        producers.sort_by_key(|&i| {
            plan.stages
                .get(i)
                .is_some_and(|p| base_name(&p.key) == from.value)
        });
    }
    let wanted: Vec<i32> = producers
        .iter()
        .filter_map(|&i| i32::try_from(i).ok())
        .collect();
    let mut artifacts = store::artifacts::needed_by(pool, row.run_id, &wanted).await?;
    let context: RunContext = serde_json::from_value(run.context.clone()).unwrap_or_default();
    let params: HashMap<String, String> =
        serde_json::from_value(run.params.clone()).unwrap_or_default();
    let images = all
        .iter()
        .filter_map(|s| Some((base_name(&s.key).to_owned(), s.image.clone()?)))
        .collect();
    let scope = Scope {
        params: params.clone(),
        context: &context,
        run: &run,
        images,
        matrix: &planned.matrix,
    };

    let mut env: Vec<(String, String)> = vec![
        ("CI".into(), "true".into()),
        ("GANTRY".into(), "true".into()),
        ("GANTRY_PROJECT".into(), run.project.clone()),
        ("GANTRY_PIPELINE".into(), run.pipeline.clone()),
        ("GANTRY_RUN_ID".into(), run.id.to_string()),
        ("GANTRY_RUN_NUMBER".into(), run.number.to_string()),
        ("GANTRY_STAGE".into(), row.key.clone()),
        ("GANTRY_ATTEMPT".into(), row.attempt.to_string()),
        ("GANTRY_EVENT".into(), context.event.clone()),
        (
            "GANTRY_BRANCH".into(),
            context.branch.clone().unwrap_or_default(),
        ),
        ("GANTRY_TAG".into(), context.tag.clone().unwrap_or_default()),
        (
            "GANTRY_COMMIT_SHA".into(),
            context.commit_sha.clone().unwrap_or_default(),
        ),
    ];
    if let Some(repository) = &context.repository {
        env.push(("GANTRY_REPOSITORY".into(), repository.clone()));
    }
    if let Some(actor) = &context.actor {
        env.push(("GANTRY_ACTOR".into(), actor.clone()));
    }
    if let Some(pr) = context.pr_number {
        env.push(("GANTRY_PR_NUMBER".into(), pr.to_string()));
        env.push((
            "GANTRY_PR_TITLE".into(),
            context.pr_title.clone().unwrap_or_default(),
        ));
    }
    for (axis, value) in &planned.matrix {
        env.push((
            format!("GANTRY_MATRIX_{}", axis.to_uppercase()),
            value.clone(),
        ));
    }
    let mut names: Vec<&String> = params.keys().collect();
    names.sort();
    for name in names {
        env.push((
            format!("GANTRY_PARAM_{}", name.to_uppercase()),
            params[name].clone(),
        ));
    }
    scope.render_env(&plan.pipeline.env, &mut env)?;
    scope.render_env(&stage.env, &mut env)?;

    // Secrets: decrypted only here, only for this runner; their values are masked in logs.
    let mut mask = Vec::new();
    let fork_blocked = context.from_fork
        && !plan
            .pipeline
            .on
            .pull_request
            .as_ref()
            .is_some_and(|p| p.secrets_for_forks);
    if !stage.secrets.is_empty() && !fork_blocked {
        let project_id = store::pipelines::project_of(pool, run.pipeline_id).await?;
        let wanted: Vec<String> = stage
            .secrets
            .iter()
            .map(|s| s.secret.value.clone())
            .collect();
        let stored = store::secrets::encrypted(pool, project_id, &wanted).await?;
        for secret in &stage.secrets {
            let Some((_, nonce, ciphertext)) =
                stored.iter().find(|(n, _, _)| *n == secret.secret.value)
            else {
                return Err(RunError::BadRequest(format!(
                    "secret `{}` (for ${}) does not exist in project `{}`",
                    secret.secret.value, secret.env.value, run.project
                )));
            };
            let value = engine
                .secrets
                .decrypt(nonce, ciphertext)
                .map_err(|e| RunError::Conflict(e.to_string()))?;
            let value = String::from_utf8_lossy(&value).into_owned();
            if !value.is_empty() {
                mask.push(value.clone());
            }
            env.push((secret.env.value.clone(), value));
        }
    }

    let checkout = checkout(engine, &context, fork_blocked, &mut mask).await?;

    let mut image = None;
    let steps = match &stage.kind {
        StageKind::Steps(steps) => steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let mut step_env = Vec::new();
                scope.render_env(&step.env, &mut step_env)?;
                Ok(StepSpec {
                    name: step
                        .name
                        .clone()
                        .unwrap_or_else(|| default_step_name(&step.run, i)),
                    run: step.run.clone(),
                    env: step_env,
                    timeout_secs: step.timeout.as_ref().map(|t| t.value.as_secs().max(1)),
                })
            })
            .collect::<Result<Vec<_>, RunError>>()?,
        StageKind::B2i(_) | StageKind::S2i(_) => {
            // The docker config.json secret is for the registry client, not an environment
            // variable (image stages run no steps).
            let auth = env
                .iter()
                .rev()
                .find(|(k, _)| k == images::REGISTRY_AUTH_SECRET)
                .map(|(_, v)| v.clone());
            let task = image_task(engine, &scope, &stage.kind, auth.as_deref())?;
            mask.extend(images::credential_values(task.registries()));
            image = Some(task);
            Vec::new()
        }
        other => {
            return Err(RunError::Conflict(format!(
                "`{}` stages do not run in a runner",
                other.label()
            )));
        }
    };

    // Artifacts of the stages this one needs (following results reused by a rerun), in the
    // unpack order: a path kept by several of them is left as the nearest one kept it.
    let producer_of = |a: &store::artifacts::ArtifactRow| {
        all.iter()
            .find(|s| s.reused_from.unwrap_or(s.id) == a.stage_run_id)
    };
    let position = |a: &store::artifacts::ArtifactRow| {
        producer_of(a)
            .and_then(|s| usize::try_from(s.plan_index).ok())
            .and_then(|p| producers.iter().position(|&i| i == p))
    };
    // Stable: one stage's artifacts keep their order by name.
    artifacts.sort_by_key(|a| position(a));
    let inputs = artifacts
        .iter()
        .map(|a| ArtifactInput {
            id: a.id,
            stage: producer_of(a).map_or_else(String::new, |s| s.key.clone()),
        })
        .collect();

    // Every engine seen lately (this one first): a runner whose engine is gone carries on with
    // another. A Kubernetes Job reaches engines through the cluster's URL; the list is for runners
    // that see the engines' own addresses.
    let mut engines = vec![engine.url.clone()];
    for url in crate::store::engines::live(&engine.store.pool, ENGINE_SEEN_WITHIN_SECS).await? {
        if !engines.contains(&url) {
            engines.push(url);
        }
    }
    Ok(StageSpec {
        stage_run_id: row.id.0,
        attempt: row.attempt,
        key: row.key.clone(),
        steps,
        env,
        mask,
        timeout_secs: stage.timeout.as_ref().map(|t| t.value.as_secs().max(1)),
        inputs,
        artifacts: stage.artifacts.iter().map(|a| a.value.clone()).collect(),
        heartbeat_secs: engine.config.heartbeat_secs,
        logged_lines: u64::try_from(row.log_lines).unwrap_or(0),
        image,
        checkout,
        engines,
    })
}

/// An engine not seen for this long is not offered to runners.
const ENGINE_SEEN_WITHIN_SECS: f64 = 30.0;

/// The commit to check out for a run from a repository, with the repository's clone token
/// (withheld from fork pull requests like every secret, unless the pipeline opts in).
async fn checkout(
    engine: &Engine,
    context: &RunContext,
    fork_blocked: bool,
    mask: &mut Vec<String>,
) -> Result<Option<gantry_runner::wire::Checkout>, RunError> {
    let (Some(repo_id), Some(commit)) = (context.repository_id, &context.commit_sha) else {
        return Ok(None);
    };
    let repo = store::repos::get(&engine.store.pool, store::repos::RepoId(repo_id)).await?;
    let auth = if fork_blocked {
        None
    } else {
        crate::webhook::source::clone_auth(engine, &repo).await?
    };
    if let Some(auth) = &auth {
        mask.push(auth.password.clone());
    }
    Ok(Some(gantry_runner::wire::Checkout {
        url: repo.clone_url.clone(),
        commit: commit.clone(),
        git_ref: context.git_ref.clone(),
        depth: 1,
        submodules: repo.submodules,
        auth,
    }))
}

/// The runner's image task for a `b2i` or `s2i` stage, its templates rendered.
fn image_task(
    engine: &Engine,
    scope: &Scope<'_>,
    kind: &StageKind,
    auth: Option<&str>,
) -> Result<ImageTask, RunError> {
    let context = &scope.run.context;
    let created_epoch = images::created_epoch(context);
    // No commit time recorded: the runner dates the image with the commit it checks out.
    let created_from_checkout =
        images::commit_time(context).is_none() && scope.context.repository_id.is_some();
    let mut labels = images::standard_labels(context, scope.context.commit_sha.as_deref());
    let registries = |names: &[&str]| {
        images::registries(
            names,
            &engine.config.insecure_registries,
            engine.config.registry_auth.as_deref(),
            auth,
        )
    };
    match kind {
        StageKind::B2i(b2i) => {
            let base = scope.render(&b2i.base)?;
            let output = scope.render(&b2i.output)?;
            for (key, value) in &b2i.labels {
                labels.push((key.clone(), scope.render(value)?));
            }
            let mut env = Vec::new();
            scope.render_env(&b2i.env, &mut env)?;
            Ok(ImageTask::B2i(B2iTask {
                artifact: b2i.artifact.value.clone(),
                preset: match b2i.preset {
                    B2iPreset::Binary => Preset::Binary,
                    B2iPreset::Jar => Preset::Jar,
                    B2iPreset::War => Preset::War,
                    B2iPreset::Tarball => Preset::Tarball,
                },
                registries: registries(&[&base, &output])?,
                base,
                output,
                entrypoint: b2i.entrypoint.clone(),
                cmd: b2i.cmd.clone(),
                workdir: b2i.workdir.clone(),
                webapps_dir: b2i.webapps_dir.clone(),
                user: b2i.user.clone(),
                ports: b2i
                    .ports
                    .iter()
                    .map(|p| format!("{}/{}", p.number, if p.udp { "udp" } else { "tcp" }))
                    .collect(),
                env,
                labels,
                created_epoch,
                created_from_checkout,
                compression: images::compression(b2i.compression),
                created_by: None,
            }))
        }
        StageKind::S2i(s2i) => {
            let builder = scope.render(&s2i.builder)?;
            let output = scope.render(&s2i.output)?;
            let mut env = Vec::new();
            scope.render_env(&s2i.env, &mut env)?;
            let git = |v: Option<&String>| v.cloned().unwrap_or_default();
            labels.push(("io.openshift.s2i.build.image".into(), builder.clone()));
            labels.push((
                "io.openshift.s2i.build.commit.id".into(),
                git(scope.context.commit_sha.as_ref()),
            ));
            labels.push((
                "io.openshift.s2i.build.commit.ref".into(),
                git(scope.context.branch.as_ref().or(scope.context.tag.as_ref())),
            ));
            if let Some(url) = images::source_url(context) {
                labels.push(("io.openshift.s2i.build.source-location".into(), url));
            }
            if let Some(dir) = &s2i.context_dir {
                labels.push((
                    "io.openshift.s2i.build.source-context-dir".into(),
                    dir.clone(),
                ));
            }
            Ok(ImageTask::S2i(S2iTask {
                registries: registries(&[&builder, &output])?,
                builder,
                output,
                context_dir: s2i.context_dir.clone(),
                env,
                scripts_url: s2i.scripts_url.clone(),
                incremental: s2i.incremental,
                labels,
                created_epoch,
                created_from_checkout,
                compression: images::compression(s2i.compression),
                rootfs: None,
                exclude: Vec::new(),
            }))
        }
        other => Err(RunError::Conflict(format!(
            "`{}` stages build no image",
            other.label()
        ))),
    }
}

/// The approval question of the stage at plan index `index` of `run`, as approvers see it:
/// its `message` with the run's values in place of `${{ }}` references (`None` without a
/// message). A reference with no value in this run (an image not pushed) stays as written:
/// the question is still worth asking.
pub fn approval_message(
    run: &runs::RunRow,
    plan: &crate::pipeline::Plan,
    index: usize,
    stages: &[stages::StageRunRow],
) -> Option<String> {
    let planned = plan.stages.get(index)?;
    let message = plan.stage(planned).approval.as_ref()?.message.as_ref()?;
    let context: RunContext = serde_json::from_value(run.context.clone()).unwrap_or_default();
    let scope = Scope {
        params: serde_json::from_value(run.params.clone()).unwrap_or_default(),
        context: &context,
        run,
        images: stages
            .iter()
            .filter_map(|s| Some((base_name(&s.key).to_owned(), s.image.clone()?)))
            .collect(),
        matrix: &planned.matrix,
    };
    message
        .render(|r| scope.lookup(r).or_else(|| Some(format!("${{{{ {r} }}}}"))))
        .ok()
}

/// `test[os=linux]` → `test`.
fn base_name(key: &str) -> &str {
    key.split_once('[').map_or(key, |(name, _)| name)
}

/// The stages whose artifacts the stage at plan index `stage` receives, in the order they are
/// unpacked: every stage it needs, directly or through others (`needs[i]` are the plan indices
/// stage `i` needs directly). Later unpacks overwrite earlier ones, so the farthest producers
/// come first and a path kept by several stages ends up as the nearest one kept it (fewest
/// `needs` away); at the same distance, the stage later in the plan wins.
fn unpack_order(needs: &[Vec<usize>], stage: usize) -> Vec<usize> {
    // Breadth first: the first time a stage is reached is over its shortest path.
    let mut distance: Vec<Option<usize>> = vec![None; needs.len()];
    let mut frontier: Vec<usize> = needs.get(stage).cloned().unwrap_or_default();
    let mut depth = 1;
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for i in frontier {
            if let Some(slot) = distance.get_mut(i)
                && slot.is_none()
            {
                *slot = Some(depth);
                next.extend(needs.get(i).into_iter().flatten().copied());
            }
        }
        frontier = next;
        depth += 1;
    }
    let mut order: Vec<(usize, usize)> = distance
        .iter()
        .enumerate()
        .filter_map(|(i, d)| Some((i, (*d)?)))
        .filter(|&(i, _)| i != stage)
        .collect();
    order.sort_by(|(a, da), (b, db)| db.cmp(da).then(a.cmp(b)));
    order.into_iter().map(|(i, _)| i).collect()
}

/// Longest default step name, in characters: enough to recognise a command in the step list
/// and the log; the log has the whole script anyway.
const STEP_NAME_CHARS: usize = 60;

/// What an unnamed step is called (in its log's `$ ` line, the step list, failure messages):
/// the first line of its command, as GitHub Actions and GitLab show it, cut short with `…`.
/// `step N` only for a command with no text at all.
fn default_step_name(run: &str, index: usize) -> String {
    let Some(line) = run.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return format!("step {}", index + 1);
    };
    if line.chars().count() <= STEP_NAME_CHARS {
        return line.to_owned();
    }
    let cut: String = line.chars().take(STEP_NAME_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

/// What an executor that runs stages in containers needs for `stage_run`'s current attempt:
/// the image, resources, services and Kubernetes options, with templates rendered.
pub async fn pod_request(
    engine: &Engine,
    stage_run: StageRunId,
) -> Result<crate::executor::PodRequest, RunError> {
    use crate::executor::{PodRequest, Quantities, ServiceRequest};
    let pool = &engine.store.pool;
    let row = stages::get(pool, stage_run).await?;
    let run = runs::get(pool, row.run_id).await?;
    let plan = engine.plan(run.version_id).await?;
    let index = usize::try_from(row.plan_index).unwrap_or(usize::MAX);
    let planned = plan
        .stages
        .get(index)
        .ok_or_else(|| RunError::Conflict(format!("stage `{}` is not in its plan", row.key)))?;
    let stage = plan.stage(planned);
    let context: RunContext = serde_json::from_value(run.context.clone()).unwrap_or_default();
    let params: HashMap<String, String> =
        serde_json::from_value(run.params.clone()).unwrap_or_default();
    let images = if stage.image.as_ref().is_some_and(|t| !t.is_literal())
        || stage.services.iter().any(|s| !s.image.is_literal())
    {
        stages::for_run(pool, row.run_id)
            .await?
            .iter()
            .filter_map(|s| Some((base_name(&s.key).to_owned(), s.image.clone()?)))
            .collect()
    } else {
        HashMap::new()
    };
    let scope = Scope {
        params,
        context: &context,
        run: &run,
        images,
        matrix: &planned.matrix,
    };
    let quantities = |q: &crate::pipeline::Quantities| Quantities {
        cpu: q.cpu.as_ref().map(|s| s.value.clone()),
        memory: q.memory.as_ref().map(|s| s.value.clone()),
    };
    let mut services = Vec::new();
    for service in &stage.services {
        let mut env = Vec::new();
        scope.render_env(&service.env, &mut env)?;
        services.push(ServiceRequest {
            name: service.name.value.clone(),
            image: scope.render(&service.image)?,
            env,
            command: service.command.clone(),
            ports: service.ports.iter().map(|p| (p.number, p.udp)).collect(),
        });
    }
    Ok(PodRequest {
        project: run.project.clone(),
        pipeline: run.pipeline.clone(),
        image: stage.image.as_ref().map(|t| scope.render(t)).transpose()?,
        timeout_secs: stage.timeout.as_ref().map(|t| t.value.as_secs().max(1)),
        requests: quantities(&stage.resources.requests),
        limits: quantities(&stage.resources.limits),
        services,
        kubernetes: plan.pipeline.kubernetes.merged(&stage.kubernetes),
    })
}

/// A `deploy` stage with its templates rendered, for the engine to carry out.
#[derive(Clone, Debug, PartialEq)]
pub struct DeployRequest {
    pub namespace: String,
    pub deployment: String,
    pub container: Option<String>,
    pub image: String,
    pub change_cause: Option<String>,
    pub timeout: std::time::Duration,
    pub rollback_on_failure: bool,
}

/// How long a deploy waits for its rollout when neither `deploy.timeout` nor the stage's
/// `timeout` says (kubectl waits forever; a stage should not).
pub const DEFAULT_DEPLOY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

pub async fn deploy_request(
    engine: &Engine,
    stage_run: StageRunId,
) -> Result<DeployRequest, RunError> {
    let pool = &engine.store.pool;
    let row = stages::get(pool, stage_run).await?;
    let run = runs::get(pool, row.run_id).await?;
    let plan = engine.plan(run.version_id).await?;
    let index = usize::try_from(row.plan_index).unwrap_or(usize::MAX);
    let planned = plan
        .stages
        .get(index)
        .ok_or_else(|| RunError::Conflict(format!("stage `{}` is not in its plan", row.key)))?;
    let stage = plan.stage(planned);
    let StageKind::Deploy(deploy) = &stage.kind else {
        return Err(RunError::Conflict(format!(
            "stage `{}` is not a deploy stage",
            row.key
        )));
    };
    let context: RunContext = serde_json::from_value(run.context.clone()).unwrap_or_default();
    let params: HashMap<String, String> =
        serde_json::from_value(run.params.clone()).unwrap_or_default();
    let images = stages::for_run(pool, row.run_id)
        .await?
        .iter()
        .filter_map(|s| Some((base_name(&s.key).to_owned(), s.image.clone()?)))
        .collect();
    let scope = Scope {
        params,
        context: &context,
        run: &run,
        images,
        matrix: &planned.matrix,
    };
    Ok(DeployRequest {
        namespace: deploy.namespace.clone(),
        deployment: deploy.deployment.clone(),
        container: deploy.container.clone(),
        image: scope.render(&deploy.image)?,
        change_cause: deploy
            .change_cause
            .as_ref()
            .map(|t| scope.render(t))
            .transpose()?,
        timeout: deploy
            .timeout
            .as_ref()
            .or(stage.timeout.as_ref())
            .map_or(DEFAULT_DEPLOY_TIMEOUT, |t| t.value),
        rollback_on_failure: deploy.rollback_on_failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_of_transitive_needs_unpack_farthest_first() {
        // 0 <- 1 <- 3, 0 <- 2 <- 3, and 4 needs 3 directly and 0 too.
        let needs = vec![vec![], vec![0], vec![0], vec![1, 2], vec![0, 3]];
        assert_eq!(unpack_order(&needs, 3), vec![0, 1, 2]);
        // 0 is one step from 4 (directly needed): it is as near as 3, and 3 is later.
        assert_eq!(unpack_order(&needs, 4), vec![1, 2, 0, 3]);
        assert_eq!(unpack_order(&needs, 0), Vec::<usize>::new());
        // A chain: the nearest producer is unpacked last, so its files are the ones left.
        let chain = vec![vec![], vec![0], vec![1], vec![2]];
        assert_eq!(unpack_order(&chain, 3), vec![0, 1, 2]);
    }

    #[test]
    fn unnamed_steps_are_named_after_their_commands_first_line() {
        assert_eq!(default_step_name("make test", 0), "make test");
        assert_eq!(
            default_step_name("\n  cargo build --release  \n cargo test\n", 2),
            "cargo build --release"
        );
        let long = format!("echo {}", "x".repeat(100));
        let name = default_step_name(&long, 0);
        assert_eq!(name.chars().count(), STEP_NAME_CHARS);
        assert!(
            name.starts_with("echo xxx") && name.ends_with('…'),
            "{name}"
        );
        assert_eq!(default_step_name("  \n\t\n", 3), "step 4");
    }
}
