//! A pod's status as the kubelet reports it: phase, IPs, the five pod conditions (kept
//! consistent with the container statuses, transition times moving only on change) and one
//! status per container in spec order, written whole with a merge patch (the kubelet's status
//! manager patches too, with the pod's UID as a precondition).

use serde_json::{Value, json};

/// Now, as the API server formats `metav1.Time` (whole seconds).
pub(crate) fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Which list a container's status goes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Init,
    Main,
}

impl Kind {
    fn field(self) -> &'static str {
        match self {
            Kind::Init => "initContainerStatuses",
            Kind::Main => "containerStatuses",
        }
    }

    /// The field path events name a container by.
    pub(super) fn field_path(self, container: &str) -> String {
        match self {
            Kind::Init => format!("spec.initContainers{{{container}}}"),
            Kind::Main => format!("spec.containers{{{container}}}"),
        }
    }
}

pub(super) struct Status {
    value: Value,
    /// Init containers, and whether each is a native sidecar (`restartPolicy: Always`).
    init: Vec<(String, bool)>,
    main: Vec<String>,
}

/// `{"waiting": {"reason": …, "message": …}}` (no message when empty).
pub(super) fn waiting(reason: &str, message: &str) -> Value {
    let mut state = json!({"waiting": {"reason": reason}});
    if !message.is_empty() {
        state["waiting"]["message"] = json!(message);
    }
    state
}

pub(super) fn running(started_at: &str) -> Value {
    json!({"running": {"startedAt": started_at}})
}

pub(super) fn terminated(code: i64, reason: &str, started_at: &str, container_id: &str) -> Value {
    json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": started_at,
                          "finishedAt": now(), "containerID": container_id}})
}

impl Status {
    /// The status of a pod the kubelet has just admitted: Pending, on this node's address,
    /// every container waiting.
    pub(super) fn new(pod: &Value) -> Status {
        let spec = &pod["spec"];
        let names = |list: &Value| -> Vec<(String, bool)> {
            list.as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or("").to_owned(),
                        c["restartPolicy"].as_str() == Some("Always"),
                    )
                })
                .collect()
        };
        let init = names(&spec["initContainers"]);
        let main: Vec<String> = names(&spec["containers"])
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let scheduled = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "PodScheduled")
            .cloned()
            .unwrap_or_else(
                || json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}),
            );
        let mut status = Status {
            value: json!({
                "phase": "Pending",
                "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                "startTime": now(),
                "conditions": [
                    {"type": "PodReadyToStartContainers", "status": "False", "lastTransitionTime": now()},
                    {"type": "Initialized", "status": "False", "lastTransitionTime": now()},
                    {"type": "Ready", "status": "False", "lastTransitionTime": now()},
                    {"type": "ContainersReady", "status": "False", "lastTransitionTime": now()},
                    scheduled,
                ],
            }),
            init,
            main,
        };
        let first_wait = if status.init.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        for (name, _) in status.init.clone() {
            status.put(Kind::Init, &name, pod, waiting("PodInitializing", ""), None);
        }
        for name in status.main.clone() {
            status.put(Kind::Main, &name, pod, waiting(first_wait, ""), None);
        }
        status.refresh();
        status
    }

    pub(super) fn value(&self) -> &Value {
        &self.value
    }

    pub(super) fn phase(&self) -> &str {
        self.value["phase"].as_str().unwrap_or("")
    }

    pub(super) fn set_phase(&mut self, phase: &str) {
        self.value["phase"] = json!(phase);
        self.refresh();
    }

    /// Sets `status.reason`/`message` (an eviction's).
    pub(super) fn set_reason(&mut self, reason: &str, message: &str) {
        self.value["reason"] = json!(reason);
        self.value["message"] = json!(message);
    }

    /// Sets condition `kind`; its transition time moves only when its status does.
    pub(super) fn set_condition(&mut self, kind: &str, status: bool, reason: &str, message: &str) {
        let status = if status { "True" } else { "False" };
        let conditions = self.value["conditions"].as_array_mut().expect("conditions");
        let index = match conditions.iter().position(|c| c["type"] == kind) {
            Some(i) => i,
            None => {
                conditions.push(json!({"type": kind, "status": "", "lastTransitionTime": now()}));
                conditions.len() - 1
            }
        };
        let condition = &mut conditions[index];
        if condition["status"] != status {
            condition["lastTransitionTime"] = json!(now());
        }
        condition["status"] = json!(status);
        let object = condition.as_object_mut().expect("a condition is an object");
        for (field, text) in [("reason", reason), ("message", message)] {
            if text.is_empty() {
                object.remove(field);
            } else {
                object.insert(field.to_owned(), json!(text));
            }
        }
    }

    /// Sets the status of container `name` to `state`; `ids` are its image's and its own ID
    /// once it was created.
    pub(super) fn put(
        &mut self,
        kind: Kind,
        name: &str,
        pod: &Value,
        state: Value,
        ids: Option<(&str, &str)>,
    ) {
        let spec_list = match kind {
            Kind::Init => &pod["spec"]["initContainers"],
            Kind::Main => &pod["spec"]["containers"],
        };
        let image = spec_list
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .map(|c| c["image"].clone())
            .unwrap_or(Value::Null);
        let is_running = state.get("running").is_some();
        let mut status = json!({
            "name": name, "image": image, "imageID": "", "restartCount": 0,
            "ready": is_running, "started": is_running, "state": state, "lastState": {},
        });
        if let Some((image_id, container_id)) = ids {
            status["imageID"] = json!(image_id);
            status["containerID"] = json!(container_id);
        }
        let field = kind.field();
        if !self.value[field].is_array() {
            self.value[field] = json!([]);
        }
        let list = self.value[field].as_array_mut().expect("a list");
        match list.iter_mut().find(|s| s["name"] == name) {
            Some(existing) => *existing = status,
            None => list.push(status),
        }
        self.refresh();
    }

    fn state_of(&self, kind: Kind, name: &str) -> Value {
        self.value[kind.field()]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == name)
            .map(|s| s["state"].clone())
            .unwrap_or(Value::Null)
    }

    /// Initialized, ContainersReady and Ready from the container statuses, with the
    /// kubelet's reasons and messages.
    fn refresh(&mut self) {
        let terminal = matches!(self.phase(), "Succeeded" | "Failed");
        let incomplete: Vec<String> = self
            .init
            .iter()
            .filter(|(name, sidecar)| {
                let state = self.state_of(Kind::Init, name);
                if *sidecar {
                    state.get("running").is_none() && state.get("terminated").is_none()
                } else {
                    state["terminated"]["exitCode"] != 0
                }
            })
            .map(|(name, _)| name.clone())
            .collect();
        let unready: Vec<String> = self
            .init
            .iter()
            .filter(|(_, sidecar)| *sidecar)
            .map(|(name, _)| (Kind::Init, name.clone()))
            .chain(self.main.iter().map(|name| (Kind::Main, name.clone())))
            .filter(|(kind, name)| self.state_of(*kind, name).get("running").is_none())
            .map(|(_, name)| name)
            .collect();
        let list = |names: &[String]| format!("[{}]", names.join(" "));
        if terminal {
            self.set_condition("Initialized", incomplete.is_empty(), "PodCompleted", "");
            self.set_condition("ContainersReady", false, "PodCompleted", "");
            self.set_condition("Ready", false, "PodCompleted", "");
            return;
        }
        if incomplete.is_empty() {
            self.set_condition("Initialized", true, "", "");
        } else {
            let message = format!("containers with incomplete status: {}", list(&incomplete));
            self.set_condition("Initialized", false, "ContainersNotInitialized", &message);
        }
        if unready.is_empty() {
            self.set_condition("ContainersReady", true, "", "");
            self.set_condition("Ready", true, "", "");
        } else {
            let message = format!("containers with unready status: {}", list(&unready));
            self.set_condition("ContainersReady", false, "ContainersNotReady", &message);
            self.set_condition("Ready", false, "ContainersNotReady", &message);
        }
    }
}
