//! The Node object and its heartbeats: the node is created as a kubelet creates it (the
//! TaintNodesByCondition admission plugin gives it the `node.kubernetes.io/not-ready` taint),
//! its status then says Ready, and the node lifecycle controller lifts the taint. The Lease in
//! `kube-node-lease` is renewed every 10 s and the status every minute, as the kubelet does,
//! so the controller never finds the node gone quiet.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::Kubelet;
use super::status::now;

const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;
const LEASE_RENEW: Duration = Duration::from_secs(10);
const STATUS_EVERY: Duration = Duration::from_secs(60);

/// `2026-12-04T10:00:00.000000Z`: a Lease's times are MicroTime.
fn now_micro() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// The node's conditions, unchanged `since` (registration), beating now.
fn conditions(since: &str) -> Value {
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now(), "lastTransitionTime": since})
    };
    json!([
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status"
        ),
    ])
}

fn status(kubelet: &Kubelet, since: &str) -> Value {
    let o = &kubelet.options;
    let resources = json!({"cpu": o.cpu, "memory": o.memory, "pods": o.max_pods.to_string(),
                           "ephemeral-storage": "100Gi"});
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions(since),
        // Only the address the API server is to reach the kubelet at (it is started with
        // --kubelet-preferred-address-types=InternalIP).
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                      {"type": "Hostname", "address": kubelet.node}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port}},
        "nodeInfo": {
            "machineID": "gantry-test", "systemUUID": "gantry-test", "bootID": "gantry-test",
            "kernelVersion": "", "osImage": "Gantry fake kubelet",
            "containerRuntimeVersion": "fake://0", "kubeletVersion": "v1.37.2",
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
        },
    })
}

/// Creates the Node, sets its status, and creates its Lease; returns when that was.
pub(super) async fn register(kubelet: &Arc<Kubelet>) -> String {
    let since = now();
    let nodes: Api<Node> = Api::all(kubelet.client.clone());
    let mut labels = json!({
        "kubernetes.io/hostname": kubelet.node,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    });
    for (name, value) in &kubelet.options.labels {
        labels[name] = json!(value);
    }
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": kubelet.node, "labels": labels},
        "spec": {},
    }))
    .expect("a Node");
    let created = nodes
        .create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("registering node {}: {e}", kubelet.node));
    nodes
        .patch_status(
            &kubelet.node,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status(kubelet, &since)})),
        )
        .await
        .unwrap_or_else(|e| panic!("node {} status: {e}", kubelet.node));
    let leases: Api<Lease> = Api::namespaced(kubelet.client.clone(), LEASE_NAMESPACE);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {
            "name": kubelet.node,
            // As the kubelet does: the lease goes with its node.
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": kubelet.node,
                                  "uid": created.metadata.uid}],
        },
        "spec": {"holderIdentity": kubelet.node, "leaseDurationSeconds": LEASE_SECONDS,
                 "renewTime": now_micro()},
    }))
    .expect("a Lease");
    leases
        .create(&PostParams::default(), &lease)
        .await
        .unwrap_or_else(|e| panic!("node lease {}: {e}", kubelet.node));
    since
}

/// Renews the Lease, and the status's heartbeat times now and then; failures (the API
/// server busy a moment) are retried at the next beat, as the kubelet does.
pub(super) async fn heartbeat(kubelet: Arc<Kubelet>, since: String) {
    let leases: Api<Lease> = Api::namespaced(kubelet.client.clone(), LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(kubelet.client.clone());
    let mut last_status = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(LEASE_RENEW).await;
        let _ = leases
            .patch(
                &kubelet.node,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"renewTime": now_micro()}})),
            )
            .await;
        if last_status.elapsed() >= STATUS_EVERY {
            last_status = tokio::time::Instant::now();
            let _ = nodes
                .patch_status(
                    &kubelet.node,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"conditions": conditions(&since)}})),
                )
                .await;
        }
    }
}

/// Whether the node is Ready and carries no taint the scheduler would keep pods off for.
pub(crate) fn schedulable(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| {
            t.iter()
                .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        });
    ready && !tainted
}
