//! `kubectl rollout history` and `kubectl rollout undo`: a Deployment's revisions are the
//! ReplicaSets it controls, numbered by their revision annotation; undoing puts an older
//! ReplicaSet's pod template back (without its `pod-template-hash` label) with a JSON patch.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::DeployError;
use super::rollout::{CHANGE_CAUSE, REVISION};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Revision {
    pub revision: i64,
    pub replica_set: String,
    pub change_cause: Option<String>,
    /// `container=image` for each container.
    pub images: Vec<String>,
    /// Whether the Deployment runs this revision now.
    pub current: bool,
    pub created: Option<String>,
}

fn revision_of(rs: &ReplicaSet) -> Option<i64> {
    rs.metadata
        .annotations
        .as_ref()?
        .get(REVISION)?
        .parse()
        .ok()
}

fn owned_by(rs: &ReplicaSet, deployment: &Deployment) -> bool {
    let uid = deployment.metadata.uid.as_deref();
    rs.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

async fn deployment_and_sets(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(Deployment, Vec<ReplicaSet>), DeployError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments
        .get_opt(name)
        .await
        .map_err(|e| DeployError::Kube(format!("reading deployment {namespace}/{name}: {e}")))?
        .ok_or_else(|| DeployError::NotFound(format!("deployment {namespace}/{name}")))?;
    let selector = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let listed = sets
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| DeployError::Kube(format!("listing replica sets: {e}")))?;
    let mut owned: Vec<ReplicaSet> = listed
        .items
        .into_iter()
        .filter(|rs| owned_by(rs, &deployment))
        .collect();
    owned.sort_by_key(revision_of);
    Ok((deployment, owned))
}

fn template_without_hash(rs: &ReplicaSet) -> Value {
    let mut template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
    }
    template
}

/// The revisions, oldest first.
pub async fn history(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<Revision>, DeployError> {
    let (deployment, sets) = deployment_and_sets(client, namespace, name).await?;
    let current = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse::<i64>().ok());
    Ok(sets
        .iter()
        .filter_map(|rs| {
            let revision = revision_of(rs)?;
            let images = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .map(|s| {
                    s.containers
                        .iter()
                        .map(|c| format!("{}={}", c.name, c.image.clone().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            Some(Revision {
                revision,
                replica_set: rs.metadata.name.clone().unwrap_or_default(),
                change_cause: rs
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(CHANGE_CAUSE).cloned()),
                images,
                current: Some(revision) == current,
                created: rs
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string()),
            })
        })
        .collect())
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Undone {
    /// The revision whose template was put back.
    pub to_revision: i64,
    /// False when the Deployment already ran that template (kubectl: "skipped rollback").
    pub changed: bool,
    /// The revision the rollback became (the newest), once the Deployment controller took it
    /// in; `None` when it had not within a few seconds (or nothing changed).
    #[serde(default)]
    pub revision: Option<i64>,
}

/// How long an undo waits for the Deployment controller to take the rolled-back template in.
const OBSERVE_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The JSON patch `kubectl rollout undo` sends: the old template, and the old change cause.
pub fn undo_patch(deployment: &Deployment, target: &ReplicaSet) -> Value {
    let mut annotations = deployment.metadata.annotations.clone().unwrap_or_default();
    match target
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CHANGE_CAUSE))
    {
        Some(cause) => {
            annotations.insert(CHANGE_CAUSE.to_owned(), cause.clone());
        }
        None => {
            annotations.remove(CHANGE_CAUSE);
        }
    }
    json!([
        {"op": "replace", "path": "/spec/template", "value": template_without_hash(target)},
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
    ])
}

/// Rolls back to `to_revision`, or with 0 to the revision before the current one.
pub async fn undo(
    client: &Client,
    namespace: &str,
    name: &str,
    to_revision: i64,
) -> Result<Undone, DeployError> {
    let (deployment, sets) = deployment_and_sets(client, namespace, name).await?;
    if deployment.spec.as_ref().and_then(|s| s.paused) == Some(true) {
        return Err(DeployError::Paused(format!("{namespace}/{name}")));
    }
    let target = if to_revision == 0 {
        // As kubectl: the second newest revision among the ReplicaSets (not the Deployment's
        // annotation, which lags until the controller has seen a change).
        let mut revised = sets.iter().filter(|rs| revision_of(rs).is_some());
        let newest = revised.next_back().and_then(revision_of).unwrap_or(0);
        revised.next_back().ok_or_else(|| {
            DeployError::NoRevision(format!("no revision before {newest} to roll back to"))
        })?
    } else {
        sets.iter()
            .find(|rs| revision_of(rs) == Some(to_revision))
            .ok_or_else(|| {
                DeployError::NoRevision(format!(
                    "unable to find the specified revision {to_revision}"
                ))
            })?
    };
    let to = revision_of(target).unwrap_or(0);
    let current_template = deployment
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.template).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    if current_template == template_without_hash(target) {
        return Ok(Undone {
            to_revision: to,
            changed: false,
            revision: None,
        });
    }
    let patch: json_patch::Patch = serde_json::from_value(undo_patch(&deployment, target))
        .map_err(|e| DeployError::Kube(format!("building the undo patch: {e}")))?;
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let patched = api
        .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(|e| DeployError::Kube(format!("patching deployment {namespace}/{name}: {e}")))?;
    // The rolled-back template becomes the newest revision when the Deployment controller
    // takes the change in: wait for that (by watch, bounded), so the answer can name it and
    // whatever reads the history next — a page, another undo — sees it.
    let generation = patched.metadata.generation.unwrap_or(0);
    let observed = move |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| s.observed_generation)
            .is_some_and(|g| g >= generation)
    };
    let waited = tokio::time::timeout(
        OBSERVE_WAIT,
        kube::runtime::wait::await_condition(api, name, observed),
    )
    .await;
    let revision = match waited {
        Ok(Ok(Some(now))) => now
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .and_then(|r| r.parse().ok()),
        _ => None,
    };
    Ok(Undone {
        to_revision: to,
        changed: true,
        revision,
    })
}
