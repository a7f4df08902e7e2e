//! `kubectl set image` and `kubectl rollout status`, as pure functions over a Deployment: the
//! patch that changes one container's image (with the change cause), and kubectl's rules for
//! when a rollout is done, still going, or failed (`pkg/polymorphichelpers/rollout_status.go`).

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

use super::DeployError;

/// The annotation `kubectl rollout history` shows as CHANGE-CAUSE.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// The revision the Deployment controller gives each ReplicaSet.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

/// The container `container` names, or the Deployment's only one.
pub fn pick_container(
    deployment: &Deployment,
    container: Option<&str>,
) -> Result<String, DeployError> {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let names: Vec<String> = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    match container {
        Some(wanted) if names.iter().any(|n| n == wanted) => Ok(wanted.to_owned()),
        Some(wanted) => Err(DeployError::NoSuchContainer {
            deployment: name,
            container: wanted.to_owned(),
            known: names.join(", "),
        }),
        None if names.len() == 1 => Ok(names[0].clone()),
        None => Err(DeployError::WhichContainer {
            deployment: name,
            known: names.join(", "),
        }),
    }
}

/// The image `container` runs now.
pub fn current_image(deployment: &Deployment, container: &str) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container)?
        .image
        .clone()
}

/// The strategic merge patch `kubectl set image` sends (containers merge by name), plus the
/// change cause. `None` when the container already runs `image`: like kubectl, no patch,
/// so no new rollout (deploy by digest to force one).
pub fn set_image_patch(
    deployment: &Deployment,
    container: &str,
    image: &str,
    change_cause: Option<&str>,
) -> Option<Value> {
    if current_image(deployment, container).as_deref() == Some(image) {
        return None;
    }
    let mut patch = json!({
        "spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}
    });
    if let Some(cause) = change_cause {
        patch["metadata"] = json!({"annotations": {CHANGE_CAUSE: cause}});
    }
    Some(patch)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Finished; the message is kubectl's.
    Done(String),
    Waiting(String),
    Failed(String),
}

/// kubectl's `rollout status` for one look at the Deployment.
pub fn status(deployment: &Deployment) -> Rollout {
    let name = deployment.metadata.name.as_deref().unwrap_or("");
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    if generation > status.observed_generation.unwrap_or(0) {
        return Rollout::Waiting("Waiting for deployment spec update to be observed...".into());
    }
    let progressing = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing");
    if progressing.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        return Rollout::Failed(format!(
            "deployment {name:?} exceeded its progress deadline"
        ));
    }
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < wanted {
        return Rollout::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {updated} out of {wanted} new replicas have been updated..."
        ));
    }
    if replicas > updated {
        return Rollout::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
        ));
    }
    Rollout::Done(format!("deployment {name:?} successfully rolled out"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(generation: i64, status: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "web", "image": "web:1"}]}}
            },
            "status": status
        }))
        .expect("deployment")
    }

    #[test]
    fn kubectl_rules_decide_the_rollout() {
        let d = deployment(2, json!({"observedGeneration": 1}));
        assert!(matches!(status(&d), Rollout::Waiting(m) if m.contains("spec update")));
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1}),
        );
        assert!(matches!(status(&d), Rollout::Waiting(m) if m.contains("1 out of 3 new replicas")));
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3}),
        );
        assert!(matches!(status(&d), Rollout::Waiting(m) if m.contains("1 old replicas")));
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
        );
        assert!(matches!(status(&d), Rollout::Waiting(m) if m.contains("2 of 3 updated")));
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            status(&d),
            Rollout::Done("deployment \"web\" successfully rolled out".into())
        );
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
        );
        assert!(matches!(status(&d), Rollout::Failed(m) if m.contains("progress deadline")));
    }

    #[test]
    fn set_image_patches_only_a_change() {
        let d = deployment(1, json!({}));
        assert_eq!(set_image_patch(&d, "web", "web:1", None), None);
        let patch = set_image_patch(&d, "web", "web:2", Some("run 3")).expect("a change");
        assert_eq!(
            patch["spec"]["template"]["spec"]["containers"][0]["image"],
            "web:2"
        );
        assert_eq!(patch["metadata"]["annotations"][CHANGE_CAUSE], "run 3");
        assert_eq!(pick_container(&d, None).expect("only one"), "web");
        assert!(pick_container(&d, Some("api")).is_err());
    }
}
