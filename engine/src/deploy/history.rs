//! `kubectl rollout history` and `kubectl rollout undo`: a Deployment's revisions are the
//! ReplicaSets it controls, numbered by their revision annotation; undoing puts an older
//! ReplicaSet's pod template back (without its `pod-template-hash` label) with a JSON patch,
//! as kubectl's `history.go` and `rollback.go` do.
//!
//! Both objects are read as raw JSON, not typed structs: the template put back is then exactly
//! what the cluster stored, fields newer than Gantry's Kubernetes types included (a typed
//! round trip would drop them silently).

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::DeployError;
use super::rollout::{CHANGE_CAUSE, REVISION};

/// One revision of a Deployment: a ReplicaSet it controls.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Revision {
    pub revision: i64,
    pub replica_set: String,
    #[schema(required)]
    pub change_cause: Option<String>,
    /// `container=image` for each container.
    pub images: Vec<String>,
    /// Whether the Deployment runs this revision now.
    pub current: bool,
    #[schema(required)]
    pub created: Option<String>,
}

/// Annotations a rollback keeps from the Deployment rather than taking from the ReplicaSet
/// (kubectl's `annotationsToSkip`).
const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// A ReplicaSet's revision as kubectl reads it: no annotation is revision 0, an unreadable
/// one is no revision at all (kubectl skips it with a warning).
fn revision_of(rs: &DynamicObject) -> Option<i64> {
    match rs
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
    {
        None => Some(0),
        Some(text) => text.parse().ok(),
    }
}

fn owned_by(rs: &DynamicObject, deployment: &DynamicObject) -> bool {
    let uid = deployment.metadata.uid.as_deref();
    rs.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// A label selector (`matchLabels` and `matchExpressions`) in the list API's syntax.
pub fn selector_text(selector: &Value) -> String {
    let mut terms = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            terms.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for expression in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expression["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = expression["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match expression["operator"].as_str() {
            Some("In") => terms.push(format!("{key} in ({})", values.join(","))),
            Some("NotIn") => terms.push(format!("{key} notin ({})", values.join(","))),
            Some("Exists") => terms.push(key.to_owned()),
            Some("DoesNotExist") => terms.push(format!("!{key}")),
            _ => {}
        }
    }
    terms.join(",")
}

async fn deployment_and_sets(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(DynamicObject, Vec<(i64, DynamicObject)>), DeployError> {
    let deployments: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::erase::<Deployment>(&()),
    );
    let deployment = deployments
        .get_opt(name)
        .await
        .map_err(|e| DeployError::Kube(format!("reading deployment {namespace}/{name}: {e}")))?
        .ok_or_else(|| DeployError::NotFound(format!("deployment {namespace}/{name}")))?;
    let selector = selector_text(&deployment.data["spec"]["selector"]);
    let sets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::erase::<ReplicaSet>(&()),
    );
    let mut owned = Vec::new();
    let mut params = ListParams::default().labels(&selector).limit(500);
    loop {
        let page = sets
            .list(&params)
            .await
            .map_err(|e| DeployError::Kube(format!("listing replica sets: {e}")))?;
        for rs in page.items {
            if owned_by(&rs, &deployment)
                && let Some(revision) = revision_of(&rs)
            {
                owned.push((revision, rs));
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    owned.sort_by_key(|(revision, _)| *revision);
    // Two ReplicaSets with one revision (a controller race): kubectl keeps the last listed.
    owned.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });
    Ok((deployment, owned))
}

/// A ReplicaSet's pod template as stored, without the `pod-template-hash` label the
/// Deployment controller added (kubectl's rollback removes it too).
fn template_without_hash(rs: &DynamicObject) -> Value {
    let mut template = rs.data["spec"]["template"].clone();
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
        if labels.is_empty()
            && let Some(metadata) = template.get_mut("metadata").and_then(Value::as_object_mut)
        {
            metadata.remove("labels");
        }
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
        .map(|(revision, rs)| {
            let images = rs.data["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{}={}",
                        c["name"].as_str().unwrap_or_default(),
                        c["image"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            Revision {
                revision: *revision,
                replica_set: rs.metadata.name.clone().unwrap_or_default(),
                change_cause: rs
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(CHANGE_CAUSE).cloned())
                    .filter(|c| !c.is_empty()),
                images,
                current: Some(*revision) == current,
                created: rs
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string()),
            }
        })
        .collect())
}

/// The outcome of an undo.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Undone {
    /// The revision whose template was put back.
    pub to_revision: i64,
    /// False when the Deployment already ran that template (kubectl: "skipped rollback").
    pub changed: bool,
    /// The revision the rollback became (the newest), once the Deployment controller took it
    /// in; `None` when it had not within a few seconds (or nothing changed).
    #[serde(default)]
    #[schema(required)]
    pub revision: Option<i64>,
}

/// How long an undo waits for the Deployment controller to take the rolled-back template in.
const OBSERVE_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The JSON patch `kubectl rollout undo` sends: the old template, and the Deployment's
/// annotations rebuilt as kubectl does — the ones it skips kept from the Deployment, all others
/// taken from the ReplicaSet (so the old change cause comes back with the old template).
pub fn undo_patch(deployment: &DynamicObject, target: &DynamicObject) -> Value {
    let mut annotations = Map::new();
    let own = deployment.metadata.annotations.clone().unwrap_or_default();
    for key in ANNOTATIONS_TO_SKIP {
        if let Some(value) = own.get(key) {
            annotations.insert(key.to_owned(), Value::String(value.clone()));
        }
    }
    for (key, value) in target.metadata.annotations.iter().flatten() {
        if !ANNOTATIONS_TO_SKIP.contains(&key.as_str()) {
            annotations.insert(key.clone(), Value::String(value.clone()));
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
    if deployment.data["spec"]["paused"].as_bool() == Some(true) {
        return Err(DeployError::Paused(format!("{namespace}/{name}")));
    }
    let (to, target) = if to_revision == 0 {
        // As kubectl: the second newest revision among the ReplicaSets (not the Deployment's
        // annotation, which lags until the controller has seen a change).
        let mut revised = sets.iter().filter(|(revision, _)| *revision > 0);
        let newest = revised.next_back().map_or(0, |(r, _)| *r);
        revised.next_back().ok_or_else(|| {
            DeployError::NoRevision(format!("no revision before {newest} to roll back to"))
        })?
    } else {
        sets.iter()
            .find(|(revision, _)| *revision == to_revision)
            .ok_or_else(|| {
                DeployError::NoRevision(format!(
                    "unable to find the specified revision {to_revision}"
                ))
            })?
    };
    let to = *to;
    let current_template = template_without_hash(&deployment);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).expect("an object")
    }

    #[test]
    fn undo_puts_back_the_stored_template_unknown_fields_included() {
        let deployment = object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "annotations": {
                REVISION: "3", CHANGE_CAUSE: "run 3", "team": "blue"
            }},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:3"}]}}}
        }));
        let target = object(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-1", "annotations": {REVISION: "1", CHANGE_CAUSE: "run 1"}},
            "spec": {"template": {
                "metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}},
                "spec": {
                    "containers": [{"name": "web", "image": "web:1",
                        "aFieldFromAFutureKubernetes": {"x": 1}}],
                    "hostUsers": false
                }
            }}
        }));
        let patch = undo_patch(&deployment, &target);
        let template = &patch[0]["value"];
        assert_eq!(template["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            template["spec"]["containers"][0]["aFieldFromAFutureKubernetes"],
            json!({"x": 1})
        );
        assert_eq!(template["spec"]["hostUsers"], json!(false));
        // kubectl's rule: the revision annotation stays the Deployment's, the rest (change
        // cause included) comes from the ReplicaSet, so `team` goes.
        assert_eq!(
            patch[1]["value"],
            json!({REVISION: "3", CHANGE_CAUSE: "run 1"})
        );
    }

    #[test]
    fn selectors_keep_their_expressions() {
        let selector = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "Exists"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]}
            ]
        });
        assert_eq!(
            selector_text(&selector),
            "app=web,tier in (a,b),!canary,zone,env notin (dev)"
        );
    }

    #[test]
    fn revisions_read_as_kubectl_reads_them() {
        let rs = |annotations: Value| {
            object(json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": "x", "annotations": annotations}
            }))
        };
        assert_eq!(revision_of(&rs(json!({REVISION: "4"}))), Some(4));
        assert_eq!(revision_of(&rs(json!({}))), Some(0));
        assert_eq!(revision_of(&rs(json!({REVISION: "four"}))), None);
    }
}
