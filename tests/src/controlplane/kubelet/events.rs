//! Events about a pod, as the kubelet records them (core/v1 Events from component `kubelet`
//! on host NODE, e.g. `Pulling`, `Failed`, `BackOff`, `Started`, `Killing`, `Evicted`), so
//! `kubectl describe` and `kubectl get events` show what they would on a real node.
//! Recording is best effort (a failure is not the pod's), and awaited, so the events of a pod
//! are created in the order they happened.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use super::Kubelet;
use super::status::now;

/// Event severity.
#[derive(Clone, Copy)]
pub(super) enum Type {
    Normal,
    Warning,
}

/// Records an event about `pod` (optionally about one of its containers, `field_path`).
pub(super) async fn record(
    kubelet: &Arc<Kubelet>,
    pod: &Value,
    field_path: Option<String>,
    kind: Type,
    reason: &str,
    message: &str,
) {
    let namespace = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let mut involved = json!({"apiVersion": "v1", "kind": "Pod", "namespace": namespace,
                              "name": name, "uid": pod["metadata"]["uid"]});
    if let Some(path) = field_path {
        involved["fieldPath"] = json!(path);
    }
    let unique = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let event = json!({
        "metadata": {"name": format!("{name}.{unique:x}"), "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": match kind { Type::Normal => "Normal", Type::Warning => "Warning" },
        "source": {"component": "kubelet", "host": kubelet.node},
        "firstTimestamp": now(),
        "lastTimestamp": now(),
        "count": 1,
        "reportingComponent": "kubelet",
        "reportingInstance": kubelet.node,
    });
    let Ok(event) = serde_json::from_value::<Event>(event) else {
        return;
    };
    let api: Api<Event> = Api::namespaced(kubelet.client.clone(), &namespace);
    let _ = api.create(&PostParams::default(), &event).await;
}
