//! The stand-in's Deployment controller: for each new pod template a ReplicaSet named after
//! the template's hash (or the old one with that hash, whose revision moves to the top, as on
//! a rollback), revision and change-cause annotations as the real controller writes them, and
//! a rollout that completes once the new image can be "pulled" (the kubelet's rules), or
//! stays stuck with the old pods serving until `progressDeadlineSeconds` has passed and the
//! Progressing condition says `ProgressDeadlineExceeded`.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Cluster;
use super::selector::Selector;
use super::store::{Kind, now_rfc3339};

const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// Follows Deployment events (subscribed before the API server takes requests).
pub async fn run(cluster: Arc<Cluster>, mut events: mpsc::UnboundedReceiver<super::store::Event>) {
    // One worker per Deployment, as the real controller syncs each key in order.
    let mut workers: HashMap<(String, String), mpsc::UnboundedSender<i64>> = HashMap::new();
    while let Some(event) = events.recv().await {
        if event.kind != Kind::Deployment || event.type_ == "DELETED" {
            continue;
        }
        let generation = event.object["metadata"]["generation"].as_i64().unwrap_or(0);
        let observed = event.object["status"]["observedGeneration"]
            .as_i64()
            .unwrap_or(0);
        if generation <= observed {
            continue;
        }
        let name = event.object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let key = (event.namespace.clone(), name.clone());
        let worker = workers.entry(key).or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<i64>();
            let (cluster, namespace) = (Arc::clone(&cluster), event.namespace.clone());
            tokio::spawn(async move {
                while let Some(generation) = rx.recv().await {
                    sync(&cluster, &namespace, &name, generation).await;
                }
            });
            tx
        });
        let _ = worker.send(generation);
    }
}

fn template_hash(template: &Value) -> String {
    let mut hasher = DefaultHasher::new();
    template.to_string().hash(&mut hasher);
    format!("{:x}", hasher.finish())[..10].to_owned()
}

fn condition(kind: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": message,
           "lastUpdateTime": now_rfc3339(), "lastTransitionTime": now_rfc3339()})
}

/// Whether the Deployment is still at `generation` (a newer change takes over).
fn current(cluster: &Cluster, namespace: &str, name: &str, generation: i64) -> bool {
    cluster
        .store
        .get(Kind::Deployment, namespace, name)
        .is_ok_and(|d| d["metadata"]["generation"].as_i64() == Some(generation))
}

/// Makes (or reuses) the ReplicaSet of `generation`'s template and starts its rollout.
async fn sync(cluster: &Arc<Cluster>, namespace: &str, name: &str, generation: i64) {
    let store = &cluster.store;
    let Ok(deployment) = store.get(Kind::Deployment, namespace, name) else {
        return;
    };
    if deployment["metadata"]["generation"].as_i64() != Some(generation) {
        // A newer change is queued behind this one; it will be synced next.
        return;
    }
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    let uid = deployment["metadata"]["uid"].clone();
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    let template = deployment["spec"]["template"].clone();
    let hash = template_hash(&template);
    let match_labels = deployment["spec"]["selector"]["matchLabels"].clone();
    let selector_text = match_labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let selector = Selector::parse(&selector_text).unwrap_or_default();
    let (sets, _) = store.list(Kind::ReplicaSet, Some(&namespace), &selector);
    let owned: Vec<Value> = sets
        .into_iter()
        .filter(|rs| {
            rs["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|r| r["uid"] == uid))
        })
        .collect();
    let revision_of = |rs: &Value| {
        rs["metadata"]["annotations"][REVISION]
            .as_str()
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let top = owned.iter().map(revision_of).max().unwrap_or(0);
    let change_cause = deployment["metadata"]["annotations"][CHANGE_CAUSE].clone();
    let existing = owned
        .iter()
        .find(|rs| rs["metadata"]["labels"]["pod-template-hash"].as_str() == Some(hash.as_str()))
        .cloned();
    let new_name = format!("{name}-{hash}");
    let revision = match &existing {
        Some(rs) if revision_of(rs) == top => top,
        _ => top + 1,
    };
    match existing {
        Some(_) => {
            let _ = store.update(Kind::ReplicaSet, &namespace, &new_name, |rs| {
                rs["metadata"]["annotations"][REVISION] = json!(revision.to_string());
                match &change_cause {
                    Value::Null => {
                        if let Some(a) = rs["metadata"]["annotations"].as_object_mut() {
                            a.remove(CHANGE_CAUSE);
                        }
                    }
                    cause => rs["metadata"]["annotations"][CHANGE_CAUSE] = cause.clone(),
                }
                rs["spec"]["replicas"] = json!(replicas);
                Ok(())
            });
        }
        None => {
            let mut rs_template = template.clone();
            rs_template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut rs_selector = match_labels.clone();
            rs_selector["pod-template-hash"] = json!(hash);
            let mut annotations = json!({
                REVISION: revision.to_string(),
                "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                "deployment.kubernetes.io/max-replicas": (replicas + 1).to_string(),
            });
            if !change_cause.is_null() {
                annotations[CHANGE_CAUSE] = change_cause.clone();
            }
            let rs = json!({
                "metadata": {
                    "name": new_name,
                    "labels": rs_template["metadata"]["labels"],
                    "annotations": annotations,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                          "uid": uid, "controller": true, "blockOwnerDeletion": true}],
                },
                "spec": {"replicas": replicas, "selector": {"matchLabels": rs_selector}, "template": rs_template},
                "status": {"replicas": 0},
            });
            let _ = store.create(Kind::ReplicaSet, &namespace, rs);
        }
    }
    let old_available = deployment["status"]["availableReplicas"]
        .as_i64()
        .unwrap_or(0);
    let first = owned.is_empty();
    // The spec is observed; the new pods are being made.
    let surge = if first { 0 } else { 1 };
    let _ = store.update(Kind::Deployment, &namespace, &name, |d| {
        if d["metadata"]["generation"].as_i64() != Some(generation) {
            return Ok(());
        }
        d["metadata"]["annotations"][REVISION] = json!(revision.to_string());
        d["status"] = json!({
            "observedGeneration": generation,
            "replicas": if first { replicas } else { replicas + surge },
            "updatedReplicas": if first { 0 } else { surge },
            "readyReplicas": old_available,
            "availableReplicas": old_available,
            "unavailableReplicas": if first { replicas } else { surge },
            "conditions": [
                condition("Available", if old_available >= replicas { "True" } else { "False" }, "MinimumReplicasAvailable", "Deployment has minimum availability."),
                condition("Progressing", "True", "ReplicaSetUpdated", &format!("ReplicaSet \"{new_name}\" is progressing.")),
            ],
        });
        Ok(())
    });
    tokio::spawn(progress(
        Arc::clone(cluster),
        namespace,
        name,
        generation,
        deployment,
        owned,
        new_name,
    ));
}

/// The new pods become available (their image can be pulled), or the rollout stays stuck
/// until its progress deadline.
async fn progress(
    cluster: Arc<Cluster>,
    namespace: String,
    name: String,
    generation: i64,
    deployment: Value,
    owned: Vec<Value>,
    new_name: String,
) {
    let store = &cluster.store;
    let template = deployment["spec"]["template"].clone();
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    let images: Vec<String> = template["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["image"].as_str().map(str::to_owned))
        .collect();
    let mut pullable = true;
    for image in &images {
        if cluster.kubelet.pull_check(image).await.is_err() {
            pullable = false;
        }
    }
    if pullable {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if !current(&cluster, &namespace, &name, generation) {
            return;
        }
        for rs in &owned {
            let rs_name = rs["metadata"]["name"].as_str().unwrap_or("");
            let keep = rs_name == new_name;
            let _ = store.update(Kind::ReplicaSet, &namespace, rs_name, |r| {
                let n = if keep { replicas } else { 0 };
                r["spec"]["replicas"] = json!(n);
                r["status"] = json!({"replicas": n, "readyReplicas": n, "availableReplicas": n, "observedGeneration": r["metadata"]["generation"]});
                Ok(())
            });
        }
        let _ = store.update(Kind::ReplicaSet, &namespace, &new_name, |r| {
            r["status"] = json!({"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                                 "fullyLabeledReplicas": replicas, "observedGeneration": r["metadata"]["generation"]});
            Ok(())
        });
        let _ = store.update(Kind::Deployment, &namespace, &name, |d| {
            if d["metadata"]["generation"].as_i64() != Some(generation) {
                return Ok(());
            }
            d["status"] = json!({
                "observedGeneration": generation,
                "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                    condition("Progressing", "True", "NewReplicaSetAvailable", &format!("ReplicaSet \"{new_name}\" has successfully progressed.")),
                ],
            });
            Ok(())
        });
        return;
    }
    // Stuck: the new pod cannot pull its image; the old pods keep serving until the deadline.
    let deadline = deployment["spec"]["progressDeadlineSeconds"]
        .as_u64()
        .unwrap_or(600);
    tokio::time::sleep(Duration::from_secs(deadline)).await;
    let _ = store.update(Kind::Deployment, &namespace, &name, |d| {
        if d["metadata"]["generation"].as_i64() != Some(generation) {
            return Ok(());
        }
        if let Some(conditions) = d["status"]["conditions"].as_array_mut() {
            for c in conditions.iter_mut().filter(|c| c["type"] == "Progressing") {
                *c = condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                );
            }
        }
        Ok(())
    });
}
