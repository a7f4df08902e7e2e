//! The pages people read: the dashboard (pipelines and their newest run per branch), a
//! pipeline (its runs and a trigger form built from its params), a run (the stage graph, log
//! panes, approvals, artifacts and images) and a project's secrets (names only).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Html;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::PageError;
use super::{Chrome, graph, render};
use crate::access::{self, Action, Principal, Role};
use crate::engine::Engine;
use crate::http::api;
use crate::http::error::ApiError;
use crate::pipeline::ParamKind;
use crate::store::{self, RunId, StageStatus, dashboard, pipelines, runs, stages};

pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub use super::trend::duration;

#[derive(Serialize)]
pub struct DashboardPage {
    pub chrome: Chrome,
    pub projects: Vec<ProjectCard>,
}

#[derive(Serialize)]
pub struct ProjectCard {
    pub name: String,
    pub role: String,
    pub anonymous_read: bool,
    /// Which of the project's pages to link (the others every reader may open).
    pub can_secrets: bool,
    pub can_manage: bool,
    pub pipelines: Vec<PipelineCard>,
    /// The project's newest runs, whatever their pipeline (newest first).
    pub runs: Vec<RunItem>,
}

/// How many of a project's newest runs the dashboard lists.
const DASHBOARD_RUNS: i64 = 10;

#[derive(Serialize)]
pub struct PipelineCard {
    pub name: String,
    pub version: i32,
    pub branches: Vec<BranchItem>,
}

#[derive(Serialize)]
pub struct BranchItem {
    pub branch: String,
    pub run_id: RunId,
    pub number: i32,
    pub status: &'static str,
    /// A stage of the run waits for a person (the run itself reads `running`).
    pub waiting_approval: bool,
    pub when: String,
}

pub async fn dashboard(
    State(engine): State<Arc<Engine>>,
    who: Principal,
) -> Result<Html<String>, PageError> {
    let pool = &engine.store.pool;
    let visible = access::readable_projects(pool, &who).await?;
    let projects = crate::http::users::visible_projects(&engine, &who).await?;
    let pipelines = pipelines::list(pool, visible.as_deref()).await?;
    let latest = dashboard::latest_per_branch(pool, visible.as_deref()).await?;
    let run_ids: Vec<RunId> = latest.iter().map(|b| b.run_id).collect();
    let waiting = stages::waiting_for_approval(pool, &run_ids).await?;
    let mut cards: Vec<ProjectCard> = projects
        .into_iter()
        .map(|p| ProjectCard {
            can_secrets: who.user().is_some() && allows(p.role, Action::ListSecrets),
            can_manage: who.user().is_some() && allows(p.role, Action::ManageProject),
            role: p.role.map(Role::as_str).unwrap_or_default().to_owned(),
            name: p.name,
            anonymous_read: p.anonymous_read,
            pipelines: Vec::new(),
            runs: Vec::new(),
        })
        .collect();
    // One query per project: a busy project does not push a quiet one's runs off the page.
    for card in &mut cards {
        let names = [card.name.clone()];
        let recent = runs::list(pool, None, None, DASHBOARD_RUNS, Some(&names)).await?;
        let ids: Vec<RunId> = recent.iter().map(|r| r.id).collect();
        let waiting = stages::waiting_for_approval(pool, &ids).await?;
        card.runs = recent
            .iter()
            .map(|r| RunItem {
                waiting_approval: waiting.contains(&r.id),
                ..RunItem::of(r)
            })
            .collect();
    }
    for pipeline in pipelines {
        let branches = latest
            .iter()
            .filter(|b| b.project == pipeline.project && b.pipeline == pipeline.name)
            .map(|b| BranchItem {
                branch: b.branch.clone().unwrap_or_else(|| "(no branch)".into()),
                run_id: b.run_id,
                number: b.number,
                status: b.status.as_str(),
                waiting_approval: waiting.contains(&b.run_id),
                when: time(&b.created_at),
            })
            .collect();
        if let Some(card) = cards.iter_mut().find(|c| c.name == pipeline.project) {
            card.pipelines.push(PipelineCard {
                name: pipeline.name,
                version: pipeline.version,
                branches,
            });
        }
    }
    Ok(render(
        "dashboard.html",
        &DashboardPage {
            chrome: Chrome::of(&who),
            projects: cards,
        },
    )?)
}

#[derive(Serialize)]
pub struct RunItem {
    pub id: RunId,
    pub number: i32,
    pub status: &'static str,
    pub trigger: String,
    pub pipeline: String,
    pub branch: String,
    /// The commit built, shortened (empty when the run names none).
    pub commit: String,
    /// The commit message's first line and its author (empty when unknown).
    pub message: String,
    pub author: String,
    pub created: String,
    pub duration: String,
    pub reason: String,
    /// A stage of the run waits for a person (set by the pages that list runs).
    pub waiting_approval: bool,
}

impl RunItem {
    pub fn of(run: &runs::RunRow) -> RunItem {
        RunItem {
            id: run.id,
            number: run.number,
            status: run.status.as_str(),
            trigger: run.trigger_text(),
            pipeline: run.pipeline.clone(),
            commit: run.context["commit_sha"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(8)
                .collect(),
            branch: run.context["branch"]
                .as_str()
                .or(run.context["tag"].as_str())
                .unwrap_or_default()
                .to_owned(),
            message: run.context["commit_message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            author: run.context["commit_author"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            created: time(&run.created_at),
            duration: duration(run.started_at, run.finished_at.or(Some(Utc::now()))),
            reason: run.reason.clone().unwrap_or_default(),
            waiting_approval: false,
        }
    }
}

/// One field of the trigger form.
#[derive(Serialize)]
pub struct ParamField {
    pub name: String,
    pub description: String,
    /// `string`, `bool` or `choice`.
    pub kind: &'static str,
    pub default: String,
    pub options: Vec<String>,
}

#[derive(Serialize)]
pub struct PipelinePage {
    pub chrome: Chrome,
    pub project: String,
    pub pipeline: String,
    pub version: i32,
    /// The pipeline's `description` (empty when it has none).
    pub description: String,
    pub runs: Vec<RunItem>,
    pub params: Vec<ParamField>,
    pub can_trigger: bool,
    pub can_secrets: bool,
    /// Whether the pipeline has a deploy stage (its page links to the deployments page).
    pub deploys: bool,
    /// The id to page back from (`?before=`), when there may be older runs.
    pub older: Option<RunId>,
    /// The listed runs' durations, as a bar chart.
    pub trend: super::trend::Trend,
    /// The pipeline's versions, newest first, to pick the one shown.
    pub versions: Vec<VersionLink>,
    /// The version shown (`?version=`, else the newest): its YAML, plan and changes.
    pub shown: VersionView,
}

#[derive(Serialize)]
pub struct VersionLink {
    pub version: i32,
    pub applied: String,
    pub current: bool,
}

#[derive(Serialize)]
pub struct VersionView {
    pub version: i32,
    pub applied: String,
    /// The YAML as applied.
    pub yaml: String,
    /// The version it is compared with (the one before it), if any.
    pub previous: Option<i32>,
    /// Its lines against the previous version's, unchanged stretches folded.
    pub diff: Vec<super::diff::Line>,
    pub added: usize,
    pub removed: usize,
    /// Its stages in plan order (every stage after all it needs).
    pub stages: Vec<PlanStage>,
}

#[derive(Serialize)]
pub struct PlanStage {
    pub key: String,
    /// The keys of the stages it waits for.
    pub needs: Vec<String>,
    pub finally: bool,
}

#[derive(Deserialize)]
pub struct PageQuery {
    before: Option<i64>,
    /// Which version's YAML to show (its number).
    version: Option<i32>,
}

/// Unchanged lines kept around each change in a version's diff.
const DIFF_CONTEXT: usize = 3;

/// `version` of the pipeline (number; the newest when `None`) with its YAML, plan, and diff
/// to the version before it.
async fn version_view(
    engine: &Engine,
    pipeline: &pipelines::PipelineRow,
    versions: &[pipelines::VersionSummary],
    version: Option<i32>,
) -> Result<VersionView, PageError> {
    let wanted = version.unwrap_or(pipeline.version);
    let Some(at) = versions.iter().position(|v| v.version == wanted) else {
        let newest = versions.first().map_or(0, |v| v.version);
        return Err(PageError(ApiError::NotFound(format!(
            "Pipeline {} has no version {wanted}; its versions are numbered 1 to {newest}. \
             Pick one from the pipeline's page.",
            pipeline.name
        ))));
    };
    let summary = &versions[at];
    let pool = &engine.store.pool;
    let yaml = pipelines::version(pool, summary.id).await?.yaml;
    // Versions are listed newest first: the one before is the next in the list.
    let previous = match versions.get(at + 1) {
        Some(p) => Some((p.version, pipelines::version(pool, p.id).await?.yaml)),
        None => None,
    };
    let lines = super::diff::lines(previous.as_ref().map_or("", |(_, y)| y.as_str()), &yaml);
    let count = |c: super::diff::Change| lines.iter().filter(|l| l.change == c).count();
    let (added, removed) = (
        count(super::diff::Change::Added),
        count(super::diff::Change::Removed),
    );
    let plan = engine.plan(summary.id).await?;
    let stages = plan
        .stages
        .iter()
        .map(|s| PlanStage {
            key: s.key.clone(),
            needs: s
                .needs
                .iter()
                .filter_map(|&n| plan.stages.get(n).map(|p| p.key.clone()))
                .collect(),
            finally: s.finally,
        })
        .collect();
    Ok(VersionView {
        version: summary.version,
        applied: time(&summary.created_at),
        yaml,
        previous: previous.as_ref().map(|(v, _)| *v),
        // The first version is all additions: nothing to compare, so no diff is shown.
        diff: if previous.is_some() {
            super::diff::folded(lines, DIFF_CONTEXT)
        } else {
            Vec::new()
        },
        added,
        removed,
        stages,
    })
}

const RUNS_PER_PAGE: i64 = 30;

pub fn param_fields(plan: &crate::pipeline::Plan) -> Vec<ParamField> {
    plan.pipeline
        .params
        .iter()
        .map(|p| {
            let (kind, default, options) = match &p.kind {
                ParamKind::String { default } => {
                    ("string", default.clone().unwrap_or_default(), vec![])
                }
                ParamKind::Bool { default } => {
                    ("bool", default.unwrap_or(false).to_string(), vec![])
                }
                ParamKind::Choice { options, default } => (
                    "choice",
                    default.clone().unwrap_or_default(),
                    options.clone(),
                ),
            };
            ParamField {
                name: p.name.value.clone(),
                description: p.description.clone().unwrap_or_default(),
                kind,
                default,
                options,
            }
        })
        .collect()
}

pub async fn pipeline(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((project, name)): Path<(String, String)>,
    Query(page): Query<PageQuery>,
) -> Result<Html<String>, PageError> {
    let pool = &engine.store.pool;
    let granted = access::require(pool, &who, &project, Action::Read).await?;
    let row = pipelines::find(pool, &project, &name).await?;
    let plan = engine.plan(row.version_id).await?;
    let list = runs::list(
        pool,
        Some(row.id),
        page.before.map(RunId),
        RUNS_PER_PAGE,
        None,
    )
    .await?;
    let older = (i64::try_from(list.len()).unwrap_or(0) == RUNS_PER_PAGE)
        .then(|| list.last().map(|r| r.id))
        .flatten();
    let role = granted.role;
    let run_ids: Vec<RunId> = list.iter().map(|r| r.id).collect();
    let waiting = stages::waiting_for_approval(pool, &run_ids).await?;
    let mut items: Vec<RunItem> = list.iter().map(RunItem::of).collect();
    for item in &mut items {
        item.waiting_approval = waiting.contains(&item.id);
    }
    let versions = pipelines::versions(pool, row.id).await?;
    let shown = version_view(&engine, &row, &versions, page.version).await?;
    let versions = versions
        .iter()
        .map(|v| VersionLink {
            version: v.version,
            applied: time(&v.created_at),
            current: v.version == shown.version,
        })
        .collect();
    Ok(render(
        "pipeline.html",
        &PipelinePage {
            chrome: Chrome::of(&who),
            project,
            pipeline: row.name,
            version: row.version,
            description: plan.pipeline.description.clone().unwrap_or_default(),
            runs: items,
            params: param_fields(&plan),
            can_trigger: allows(role, Action::Trigger) && who.user().is_some(),
            can_secrets: allows(role, Action::ListSecrets) && who.user().is_some(),
            deploys: plan
                .pipeline
                .stages
                .iter()
                .chain(&plan.pipeline.finally)
                .any(|s| matches!(s.kind, crate::pipeline::StageKind::Deploy(_))),
            older,
            trend: super::trend::of(&list, &waiting, Utc::now()),
            versions,
            shown,
        },
    )?)
}

pub fn allows(role: Option<Role>, action: Action) -> bool {
    role.is_some_and(|r| r >= action.least_role())
}

#[derive(Serialize)]
pub struct StageItem {
    pub key: String,
    pub index: usize,
    pub status: &'static str,
    pub attempt: i32,
    pub max_attempts: i32,
    pub duration: String,
    pub error: String,
    pub approved_by: String,
    pub image: String,
    pub reused: bool,
    pub allow_failure: bool,
    pub finally: bool,
    pub approval: Option<ApprovalItem>,
}

#[derive(Serialize)]
pub struct ApprovalItem {
    pub message: String,
    pub approvers: Vec<String>,
    /// Whether the viewer may approve or reject it.
    pub may_decide: bool,
    /// The stage is only an approval: nothing runs, so it has no log.
    pub gate: bool,
}

#[derive(Serialize)]
pub struct ArtifactItem {
    pub id: i64,
    pub stage: String,
    pub name: String,
    pub size_text: String,
    pub sha256: String,
}

#[derive(Serialize)]
pub struct ImageItem {
    pub stage: String,
    /// As pushed and pinned: `registry/repository@sha256:...`.
    pub image: String,
    pub repository: String,
    pub digest: String,
}

impl ImageItem {
    pub fn new(stage: String, image: String) -> ImageItem {
        let (repository, digest) = image
            .split_once('@')
            .map_or((image.as_str(), ""), |(r, d)| (r, d));
        ImageItem {
            repository: repository.to_owned(),
            digest: digest.to_owned(),
            stage,
            image,
        }
    }
}

/// A stage's box in the graph: where (from the layout) and how it is doing.
#[derive(Serialize)]
pub struct NodeView {
    pub index: usize,
    pub key: String,
    pub x: u32,
    pub y: u32,
    pub status: &'static str,
    pub duration: String,
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn size_text(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[expect(clippy::cast_precision_loss, reason = "a size shown to one decimal")]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[derive(Serialize)]
pub struct RunPage {
    pub chrome: Chrome,
    pub run: RunItem,
    pub project: String,
    pub pipeline: String,
    pub version: i32,
    pub finished: bool,
    pub rerun_of: Option<RunId>,
    pub params: BTreeMap<String, String>,
    pub commit: String,
    pub graph: graph::Layout,
    pub nodes: Vec<NodeView>,
    pub stages: Vec<StageItem>,
    pub artifacts: Vec<ArtifactItem>,
    pub images: Vec<ImageItem>,
    /// The Deployments the run's deploy stages roll out to, with their revisions.
    pub deployments: Vec<DeploymentItem>,
    pub cluster: bool,
    pub can_deploy: bool,
    pub can_cancel: bool,
    pub can_rerun: bool,
}

pub async fn run(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let pool = &engine.store.pool;
    let (run, granted) = api::authorized_run(&engine, &who, &id, Action::Read).await?;
    let plan = engine.plan(run.version_id).await?;
    let version = pipelines::version(pool, run.version_id).await?.version;
    let rows = stages::for_run(pool, run.id).await?;
    let signed_in = who.user().is_some();
    let items: Vec<StageItem> = rows
        .iter()
        .map(|s| {
            let index = usize::try_from(s.plan_index).unwrap_or(usize::MAX);
            let approval = plan
                .stages
                .get(index)
                .and_then(|p| plan.stage(p).approval.as_ref())
                .map(|a| ApprovalItem {
                    // As asked (rendered when the stage began to wait); before that, as written.
                    message: s
                        .approval_message
                        .clone()
                        .or_else(|| a.message.as_ref().map(|m| m.raw.value.clone()))
                        .unwrap_or_default(),
                    approvers: a.approvers.clone(),
                    may_decide: access::may_approve(&who, granted.role, &a.approvers),
                    gate: plan.stages.get(index).is_some_and(|p| {
                        matches!(plan.stage(p).kind, crate::pipeline::StageKind::Gate)
                    }),
                });
            let end = s
                .finished_at
                .or_else(|| (s.status == StageStatus::Running).then(Utc::now));
            StageItem {
                key: s.key.clone(),
                index,
                status: s.status.as_str(),
                attempt: s.attempt,
                max_attempts: s.max_attempts,
                duration: duration(s.started_at, end),
                error: s.error.clone().unwrap_or_default(),
                approved_by: s.approved_by.clone().unwrap_or_default(),
                image: s.image.clone().unwrap_or_default(),
                reused: s.reused_from.is_some(),
                allow_failure: s.allow_failure,
                finally: s.finally,
                approval,
            }
        })
        .collect();
    let layout = graph::layout(
        &rows
            .iter()
            .map(|s| {
                let needs = s
                    .needs
                    .iter()
                    .filter_map(|&n| usize::try_from(n).ok())
                    .collect();
                (s.key.clone(), needs)
            })
            .collect::<Vec<_>>(),
    );
    let owners: Vec<i64> = rows
        .iter()
        .map(|s| s.reused_from.unwrap_or(s.id).0)
        .collect();
    let artifacts = store::artifacts::of_stages(pool, &owners)
        .await?
        .into_iter()
        .map(|a| ArtifactItem {
            id: a.id,
            stage: rows
                .iter()
                .find(|s| s.reused_from.unwrap_or(s.id) == a.stage_run_id)
                .map(|s| s.key.clone())
                .unwrap_or_default(),
            name: a.name,
            size_text: size_text(a.size),
            sha256: a.sha256.unwrap_or_default(),
        })
        .collect();
    let params = match &run.params {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    let nodes = layout
        .nodes
        .iter()
        .zip(&items)
        .map(|(n, s)| NodeView {
            index: s.index,
            key: s.key.clone(),
            x: n.x,
            y: n.y,
            status: s.status,
            duration: s.duration.clone(),
        })
        .collect();
    // The run's own deploy stages (this version's), in plan order, each Deployment once.
    // The Deployments this run's version deploys to, with their revisions now.
    let deployments =
        deployment_items(&engine, crate::deploy::targets_of(&plan, &run.pipeline)).await;
    let images = items
        .iter()
        .filter(|s| !s.image.is_empty())
        .map(|s| ImageItem::new(s.key.clone(), s.image.clone()))
        .collect();
    Ok(render(
        "run.html",
        &RunPage {
            chrome: Chrome::of(&who),
            run: RunItem::of(&run),
            project: run.project.clone(),
            pipeline: run.pipeline.clone(),
            version,
            finished: run.status.is_terminal(),
            rerun_of: run.rerun_of,
            params,
            commit: run.context["commit_sha"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            graph: layout,
            nodes,
            stages: items,
            artifacts,
            images,
            deployments,
            cluster: engine.kube.is_some(),
            can_deploy: signed_in && allows(granted.role, Action::Deploy),
            can_cancel: signed_in && allows(granted.role, Action::Cancel),
            can_rerun: signed_in && allows(granted.role, Action::Rerun),
        },
    )?)
}

#[derive(Serialize)]
pub struct SecretsPage {
    pub chrome: Chrome,
    pub project: String,
    pub secrets: Vec<SecretItem>,
    pub can_write: bool,
    pub saved: Option<String>,
}

#[derive(Serialize)]
pub struct SecretItem {
    pub name: String,
    pub updated: String,
}

#[derive(Deserialize)]
pub struct SavedQuery {
    saved: Option<String>,
}

pub async fn secrets(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(project): Path<String>,
    Query(query): Query<SavedQuery>,
) -> Result<Html<String>, PageError> {
    let pool = &engine.store.pool;
    let granted = access::require(pool, &who, &project, Action::ListSecrets).await?;
    let id = granted
        .project
        .ok_or_else(|| ApiError::NotFound(format!("project `{project}` not found")))?;
    let list = store::secrets::list(pool, id).await?;
    Ok(render(
        "secrets.html",
        &SecretsPage {
            chrome: Chrome::of(&who),
            project,
            secrets: list
                .into_iter()
                .map(|s| SecretItem {
                    name: s.name,
                    updated: time(&s.updated_at),
                })
                .collect(),
            can_write: allows(granted.role, Action::WriteSecret),
            saved: query.saved,
        },
    )?)
}

#[derive(Serialize)]
pub struct DeliveriesPage {
    pub chrome: Chrome,
    pub project: String,
    pub repositories: Vec<String>,
    pub deliveries: Vec<DeliveryItem>,
}

#[derive(Serialize)]
pub struct DeliveryItem {
    pub id: i64,
    pub received: String,
    pub provider: String,
    pub repository: String,
    pub delivery_key: String,
    pub event: String,
    pub status: &'static str,
    pub summary: String,
    pub runs: Vec<DeliveryRunItem>,
}

#[derive(Serialize)]
pub struct DeliveryRunItem {
    pub id: i64,
    pub pipeline: String,
    pub number: i32,
    pub status: &'static str,
}

/// Webhook deliveries of a project: what came in, what it triggered, and why not.
pub async fn deliveries(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(project): Path<String>,
) -> Result<Html<String>, PageError> {
    let pool = &engine.store.pool;
    let granted = access::require(pool, &who, &project, Action::Read).await?;
    let id = granted
        .project
        .ok_or_else(|| ApiError::NotFound(format!("project `{project}` not found")))?;
    let repositories = store::repos::list(pool, id)
        .await?
        .into_iter()
        .map(|r| format!("{} ({})", r.full_name, r.provider))
        .collect();
    let list = store::deliveries::list(pool, id, 100).await?;
    Ok(render(
        "deliveries.html",
        &DeliveriesPage {
            chrome: Chrome::of(&who),
            project,
            repositories,
            deliveries: list
                .into_iter()
                .map(|d| DeliveryItem {
                    id: d.id,
                    received: time(&d.received_at),
                    provider: d.provider,
                    repository: d.repository.unwrap_or_default(),
                    delivery_key: d.delivery_key,
                    event: d.event,
                    status: d.status.as_str(),
                    summary: d.summary.unwrap_or_default(),
                    runs: d
                        .runs
                        .into_iter()
                        .map(|r| DeliveryRunItem {
                            id: r.id.0,
                            pipeline: r.pipeline,
                            number: r.number,
                            status: r.status.as_str(),
                        })
                        .collect(),
                })
                .collect(),
        },
    )?)
}

#[derive(Serialize)]
pub struct DeploymentsPage {
    pub chrome: Chrome,
    pub project: String,
    /// False when this engine has no Kubernetes cluster to read the revisions from.
    pub cluster: bool,
    pub can_deploy: bool,
    pub targets: Vec<DeploymentItem>,
    /// After a rollback: what the form did.
    pub done: String,
}

#[derive(Serialize)]
pub struct DeploymentItem {
    pub namespace: String,
    pub name: String,
    /// For the section's id: `demo-web`.
    pub anchor: String,
    /// `pipeline / stage` that roll out to it.
    pub deployed_by: Vec<String>,
    /// Newest first, as people read a history.
    pub revisions: Vec<crate::deploy::history::Revision>,
    /// Why the revisions could not be read (the Deployment is gone, the cluster refused).
    pub error: String,
}

#[derive(Deserialize)]
pub struct DeploymentsQuery {
    undone: Option<String>,
    revision: Option<i64>,
    unchanged: Option<bool>,
}

/// The Deployments the project's pipelines roll out to, each with its revision history
/// (`kubectl rollout history`) and, for those who may deploy, a rollback button per revision.
pub async fn deployments(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(project): Path<String>,
    Query(query): Query<DeploymentsQuery>,
) -> Result<Html<String>, PageError> {
    let granted = access::require(&engine.store.pool, &who, &project, Action::Read).await?;
    let targets = deployment_items(&engine, crate::deploy::targets(&engine, &project).await?).await;
    let done = match (query.undone, query.revision) {
        (Some(target), Some(revision)) if query.unchanged == Some(true) => {
            format!("{target} already runs revision {revision}: nothing to roll back.")
        }
        (Some(target), Some(revision)) => {
            format!("{target} rolled back to revision {revision}; it is now the newest revision.")
        }
        _ => String::new(),
    };
    Ok(render(
        "deployments.html",
        &DeploymentsPage {
            chrome: Chrome::of(&who),
            project,
            cluster: engine.kube.is_some(),
            can_deploy: allows(granted.role, Action::Deploy),
            targets,
            done,
        },
    )?)
}

/// How long a page waits for a Deployment's revisions: a slow cluster makes the page say so
/// rather than hang.
const HISTORY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// One item per Deployment (the stages rolling out to it listed together), each with its
/// revisions (newest first) or the reason they could not be read; one Deployment that cannot
/// be read does not hide the others.
async fn deployment_items(
    engine: &Engine,
    targets: Vec<crate::deploy::Target>,
) -> Vec<DeploymentItem> {
    let mut items: Vec<DeploymentItem> = Vec::new();
    for t in targets {
        let by = format!("{} / {}", t.pipeline, t.stage);
        match items
            .iter_mut()
            .find(|d| d.namespace == t.namespace && d.name == t.deployment)
        {
            Some(known) => known.deployed_by.push(by),
            None => items.push(DeploymentItem {
                anchor: format!("{}-{}", t.namespace, t.deployment),
                namespace: t.namespace,
                name: t.deployment,
                deployed_by: vec![by],
                revisions: Vec::new(),
                error: String::new(),
            }),
        }
    }
    let Some(client) = engine.kube.as_ref() else {
        return items;
    };
    for target in &mut items {
        let read = crate::deploy::history::history(client, &target.namespace, &target.name);
        match tokio::time::timeout(HISTORY_TIMEOUT, read).await {
            Ok(Ok(mut revisions)) => {
                revisions.reverse();
                target.revisions = revisions;
            }
            Ok(Err(e)) => target.error = e.to_string(),
            Err(_) => {
                target.error = format!(
                    "the cluster did not answer within {} s",
                    HISTORY_TIMEOUT.as_secs()
                );
            }
        }
    }
    items
}
