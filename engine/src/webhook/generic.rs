//! The generic hook: a pipeline with `on.webhook.secret: NAME` is started by a POST carrying
//! the value of project secret `NAME` as its token. The JSON body (optional) gives `params`,
//! and `branch`, `tag`, `commit` for the run's context; a delivery id the caller gives makes a
//! redelivery recognised. Unlike provider deliveries, the run starts at once (there is no
//! repository to read), and the delivery is recorded as what started it.

use std::collections::BTreeMap;

use crate::engine::Engine;
use crate::run::{self, RunContext, RunError, TriggerRequest, Triggered};
use crate::store::{StoreError, deliveries, pipelines};

#[derive(Debug, thiserror::Error)]
pub enum GenericError {
    /// The same answer for an unknown pipeline as for a wrong token: the hook does not reveal
    /// which pipelines exist.
    #[error("the token is not valid for pipeline {project}/{pipeline}")]
    Denied { project: String, pipeline: String },
    #[error("the body must be JSON like {{\"params\": {{...}}, \"branch\": \"main\"}}: {0}")]
    BadBody(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("the webhook secret cannot be read: {0}")]
    Secret(String),
}

/// What a generic delivery led to.
pub enum Received {
    /// The caller's delivery id was seen before (the earlier delivery's id, if stored).
    Duplicate(Option<i64>),
    Started(Triggered),
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GenericBody {
    #[serde(default)]
    params: BTreeMap<String, String>,
    branch: Option<String>,
    tag: Option<String>,
    commit: Option<String>,
}

/// Checks `token` against the pipeline's webhook secret and starts a run with what `body`
/// gives; `delivery` is the caller's own delivery id, if it names one.
pub async fn receive(
    engine: &Engine,
    project: &str,
    name: &str,
    token: &str,
    delivery: Option<&str>,
    body: &[u8],
) -> Result<Received, GenericError> {
    let denied = || GenericError::Denied {
        project: project.to_owned(),
        pipeline: name.to_owned(),
    };
    let Ok(row) = pipelines::find(&engine.store.pool, project, name).await else {
        return Err(denied());
    };
    let plan = engine.plan(row.version_id).await.map_err(RunError::from)?;
    let Some(trigger) = &plan.pipeline.on.webhook else {
        return Err(denied());
    };
    let project_id = pipelines::project_of(&engine.store.pool, row.id).await?;
    let stored = crate::store::secrets::encrypted(
        &engine.store.pool,
        project_id,
        std::slice::from_ref(&trigger.secret.value),
    )
    .await?;
    let Some((_, nonce, cipher)) = stored.first() else {
        return Err(denied());
    };
    let secret = engine
        .secrets
        .decrypt(nonce, cipher)
        .map_err(|e| GenericError::Secret(e.to_string()))?;
    super::signature::verify_gitlab(&secret, Some(token)).map_err(|_| denied())?;

    let input: GenericBody = if body.iter().all(u8::is_ascii_whitespace) {
        GenericBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| GenericError::BadBody(e.to_string()))?
    };
    // A caller that names its deliveries gets redeliveries recognised; one that does not gets
    // a run per request.
    let named_key = delivery.map(|k| format!("{}:{k}", row.id));
    if let Some(key) = &named_key
        && let Some(earlier) = deliveries::find_key(&engine.store.pool, "generic", key).await?
    {
        return Ok(Received::Duplicate(Some(earlier)));
    }
    let triggered = run::trigger(
        engine,
        project,
        name,
        "webhook",
        TriggerRequest {
            params: input.params,
            context: Some(RunContext {
                event: "webhook".into(),
                branch: input.branch,
                tag: input.tag,
                commit_sha: input.commit,
                ..RunContext::default()
            }),
        },
    )
    .await?;
    let summary = format!("run {} started", triggered.number);
    if let Some(id) = deliveries::insert(
        &engine.store.pool,
        deliveries::NewDelivery {
            provider: "generic",
            delivery_key: &named_key
                .unwrap_or_else(|| format!("{}:run:{}", row.id, triggered.run_id)),
            repository: None,
            pipeline: Some(row.id),
            event: "webhook",
            payload: body,
            status: deliveries::DeliveryStatus::Triggered,
            summary: Some(&summary),
        },
    )
    .await?
    {
        deliveries::link_run(&engine.store.pool, id, triggered.run_id).await?;
    }
    Ok(Received::Started(triggered))
}
