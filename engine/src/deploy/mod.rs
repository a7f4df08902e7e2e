//! Rolling a new image out to a Kubernetes Deployment, and taking it back. A `deploy` stage
//! runs here, in the engine (it needs no container: only the API server): `kubectl set image`
//! ([`rollout::set_image_patch`]), then `kubectl rollout status` ([`rollout::status`]) within
//! the stage's timeout, then on failure `kubectl rollout undo` ([`history::undo`]) when the
//! stage says `rollback_on_failure`. History and undo are also offered to people through the
//! API and `gantry deploy history|undo`.

pub mod history;
pub mod rollout;
pub mod stage;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("deployment {deployment} has no container `{container}` (it has: {known})")]
    NoSuchContainer {
        deployment: String,
        container: String,
        known: String,
    },
    #[error(
        "deployment {deployment} has several containers ({known}): say which with `container:`"
    )]
    WhichContainer { deployment: String, known: String },
    #[error("deployment {0} is paused: resume it before rolling back")]
    Paused(String),
    #[error("{0}")]
    NoRevision(String),
    #[error(
        "no Kubernetes cluster is configured (start the engine with --kubeconfig, or in a cluster)"
    )]
    NoCluster,
    #[error("{0}")]
    Kube(String),
}

/// `NS/NAME` as the CLI and API name a Deployment.
pub fn parse_target(text: &str) -> Option<(&str, &str)> {
    let (namespace, name) = text.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then_some((namespace, name))
}

/// A Deployment a pipeline of a project rolls out to (the project's members may see its
/// history and roll it back).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
#[schema(as = DeployTarget)]
pub struct Target {
    pub namespace: String,
    pub deployment: String,
    pub pipeline: String,
    pub stage: String,
}

/// The Deployments the newest versions of `project`'s pipelines deploy to.
pub async fn targets(
    engine: &crate::engine::Engine,
    project: &str,
) -> Result<Vec<Target>, crate::engine::EngineError> {
    let pipelines =
        crate::store::pipelines::list(&engine.store.pool, Some(&[project.to_owned()])).await?;
    let mut out = Vec::new();
    for pipeline in pipelines {
        let plan = engine.plan(pipeline.version_id).await?;
        for target in targets_of(&plan, &pipeline.name) {
            if !out.contains(&target) {
                out.push(target);
            }
        }
    }
    Ok(out)
}

/// The Deployments one version of pipeline `name` deploys to, a target per deploy stage.
pub fn targets_of(plan: &crate::pipeline::Plan, name: &str) -> Vec<Target> {
    plan.pipeline
        .stages
        .iter()
        .chain(&plan.pipeline.finally)
        .filter_map(|stage| match &stage.kind {
            crate::pipeline::StageKind::Deploy(deploy) => Some(Target {
                namespace: deploy.namespace.clone(),
                deployment: deploy.deployment.clone(),
                pipeline: name.to_owned(),
                stage: stage.name.value.clone(),
            }),
            _ => None,
        })
        .collect()
}
