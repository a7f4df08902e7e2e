//! A container as a local process: its command line, environment and working directory from
//! the container spec, with absolute paths mapped onto this machine (volume mounts onto the
//! pod's volume directories, then the image's root directory when it has one), started in a
//! process group of its own with stdout and stderr in the container's log file.
//!
//! The environment is built as the kubelet builds it: the `kubernetes` Service's variables
//! first, then `envFrom`, then `env` (later wins), `valueFrom` resolved (Secrets and
//! ConfigMaps read as the node, the downward API's `fieldRef`s) and `$(VAR)` references
//! expanded in values, command and arguments. A Secret or ConfigMap that is missing gives the
//! kubelet's `CreateContainerConfigError` message, and the kubelet retries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use serde_json::Value;

use super::Kubelet;
use crate::kube::lock;

pub(super) struct Prepared {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// The user and group it runs as (`runAsUser`/`runAsGroup`, the container's over the
    /// pod's), when the spec names a user.
    pub user: Option<(u32, u32)>,
}

/// Who the container runs as, as the kubelet decides it: the container's security context
/// over the pod's; an image's own user is taken to be root (no image here has another).
/// `Err` is the kubelet's message when `runAsNonRoot` forbids that.
fn identity(pod: &Value, container: &Value) -> Result<Option<(u32, u32)>, String> {
    let (pod_context, own) = (
        &pod["spec"]["securityContext"],
        &container["securityContext"],
    );
    let user = own["runAsUser"]
        .as_u64()
        .or(pod_context["runAsUser"].as_u64());
    let group = own["runAsGroup"]
        .as_u64()
        .or(pod_context["runAsGroup"].as_u64());
    let non_root = own["runAsNonRoot"]
        .as_bool()
        .or(pod_context["runAsNonRoot"].as_bool())
        == Some(true);
    let who = || {
        format!(
            "(pod: \"{}_{}({})\", container: {})",
            pod["metadata"]["name"].as_str().unwrap_or(""),
            pod["metadata"]["namespace"].as_str().unwrap_or(""),
            pod["metadata"]["uid"].as_str().unwrap_or(""),
            container["name"].as_str().unwrap_or("")
        )
    };
    match user {
        Some(0) if non_root => Err(format!(
            "container's runAsUser breaks non-root policy {}",
            who()
        )),
        None if non_root => Err(format!(
            "container has runAsNonRoot and image will run as root {}",
            who()
        )),
        None => Ok(None),
        Some(user) => {
            let id =
                |n: u64| u32::try_from(n).map_err(|_| format!("user or group {n} out of range"));
            Ok(Some((id(user)?, id(group.unwrap_or(0))?)))
        }
    }
}

/// Maps a container path onto this machine: the longest matching volume mount first, then
/// the image's root directory if the path exists there; anything else is left as it is.
fn map_path(path: &str, mounts: &[(String, PathBuf)], root: Option<&Path>) -> String {
    if !path.starts_with('/') {
        return path.to_owned();
    }
    let best = mounts
        .iter()
        .filter(|(m, _)| path == m || path.starts_with(&format!("{}/", m.trim_end_matches('/'))))
        .max_by_key(|(m, _)| m.len());
    if let Some((mount, host)) = best {
        let rest = path[mount.len()..].trim_start_matches('/');
        return host.join(rest).display().to_string();
    }
    if let Some(root) = root {
        let candidate = root.join(path.trim_start_matches('/'));
        if candidate.exists() {
            return candidate.display().to_string();
        }
    }
    path.to_owned()
}

/// Expands `$(NAME)` with the variables defined so far, as the kubelet does: `$$` is a
/// literal `$`, and a reference to an undefined variable stays as written.
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, value)) => out.push_str(value),
                None => out.push_str(&rest[i..i + 2 + end + 1]),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A downward-API field of the pod (`metadata.name`, `metadata.labels['app']`, `status.podIP`…).
fn field_ref(pod: &Value, path: &str) -> String {
    let keyed = |prefix: &str, map: &str| -> Option<String> {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(pod["metadata"][map][key].as_str().unwrap_or("").to_owned())
    };
    if let Some(v) = keyed("metadata.labels", "labels") {
        return v;
    }
    if let Some(v) = keyed("metadata.annotations", "annotations") {
        return v;
    }
    let value = match path {
        "metadata.name" => &pod["metadata"]["name"],
        "metadata.namespace" => &pod["metadata"]["namespace"],
        "metadata.uid" => &pod["metadata"]["uid"],
        "spec.nodeName" => &pod["spec"]["nodeName"],
        "spec.serviceAccountName" => &pod["spec"]["serviceAccountName"],
        // This node's address, where every pod on it is.
        "status.hostIP" | "status.hostIPs" | "status.podIP" | "status.podIPs" => {
            return "127.0.0.1".to_owned();
        }
        _ => &Value::Null,
    };
    value.as_str().unwrap_or("").to_owned()
}

impl Kubelet {
    /// The container's process, or `None` when it has no `command` (its image's entrypoint
    /// would run, which no image here has: such a container counts as running until its pod
    /// is stopped). `Err` is a `CreateContainerConfigError` message.
    pub(super) async fn prepare(
        &self,
        pod: &Value,
        container: &Value,
        volumes: &HashMap<String, PathBuf>,
        pod_dir: &Path,
    ) -> Result<Option<Prepared>, String> {
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("");
        let user = identity(pod, container)?;
        let image = container["image"].as_str().unwrap_or("");
        let root = lock(&self.images).roots.get(image).cloned();
        let mounts: Vec<(String, PathBuf)> = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let host = volumes.get(m["name"].as_str()?)?;
                Some((m["mountPath"].as_str()?.to_owned(), host.clone()))
            })
            .collect();
        // Processes reach the API server where it really is, not at the Service's
        // cluster IP (nothing routes 10.0.0.1 here).
        let port = self.apiserver_port.to_string();
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            (
                "HOSTNAME".into(),
                pod["metadata"]["name"].as_str().unwrap_or("").into(),
            ),
            ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
            ("KUBERNETES_SERVICE_PORT".into(), port.clone()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port),
        ];
        let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
            env.retain(|(k, _)| *k != name);
            env.push((name, value));
        };
        for source in container["envFrom"].as_array().into_iter().flatten() {
            let prefix = source["prefix"].as_str().unwrap_or("");
            let (data, optional) = if let Some(r) = source["secretRef"].as_object() {
                let name = r.get("name").and_then(Value::as_str).unwrap_or("");
                (
                    self.secret(namespace, name).await,
                    r.get("optional") == Some(&Value::Bool(true)),
                )
            } else if let Some(r) = source["configMapRef"].as_object() {
                let name = r.get("name").and_then(Value::as_str).unwrap_or("");
                (
                    self.config_map(namespace, name).await,
                    r.get("optional") == Some(&Value::Bool(true)),
                )
            } else {
                continue;
            };
            match data {
                Ok(data) => {
                    for (key, value) in data {
                        set(&mut env, format!("{prefix}{key}"), value);
                    }
                }
                Err(_) if optional => {}
                Err(message) => return Err(message),
            }
        }
        for var in container["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap_or("").to_owned();
            let from = &var["valueFrom"];
            let value = if let Some(value) = var["value"].as_str() {
                map_path(&expand(value, &env), &mounts, None)
            } else if let Some(r) = from["secretKeyRef"].as_object() {
                let source = r.get("name").and_then(Value::as_str).unwrap_or("");
                let key = r.get("key").and_then(Value::as_str).unwrap_or("");
                let optional = r.get("optional") == Some(&Value::Bool(true));
                match self.secret(namespace, source).await.and_then(|data| {
                    data.get(key).cloned().ok_or_else(|| {
                        format!("couldn't find key {key} in Secret {namespace}/{source}")
                    })
                }) {
                    Ok(value) => value,
                    Err(_) if optional => continue,
                    Err(message) => return Err(message),
                }
            } else if let Some(r) = from["configMapKeyRef"].as_object() {
                let source = r.get("name").and_then(Value::as_str).unwrap_or("");
                let key = r.get("key").and_then(Value::as_str).unwrap_or("");
                let optional = r.get("optional") == Some(&Value::Bool(true));
                match self.config_map(namespace, source).await.and_then(|data| {
                    data.get(key).cloned().ok_or_else(|| {
                        format!("couldn't find key {key} in ConfigMap {namespace}/{source}")
                    })
                }) {
                    Ok(value) => value,
                    Err(_) if optional => continue,
                    Err(message) => return Err(message),
                }
            } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                field_ref(pod, path)
            } else {
                // resourceFieldRef (limits and requests as numbers) is not needed by Gantry.
                String::new()
            };
            set(&mut env, name, value);
        }
        let argv: Vec<String> = container["command"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(container["args"].as_array().into_iter().flatten())
            .filter_map(|a| a.as_str())
            .map(|a| map_path(&expand(a, &env), &mounts, root.as_deref()))
            .collect();
        if container["command"].as_array().is_none_or(Vec::is_empty) {
            return Ok(None);
        }
        let cwd = container["workingDir"]
            .as_str()
            .map(|w| PathBuf::from(map_path(w, &mounts, None)))
            .unwrap_or_else(|| pod_dir.to_path_buf());
        Ok(Some(Prepared {
            program: PathBuf::from(&argv[0]),
            args: argv[1..].to_vec(),
            env,
            cwd,
            user,
        }))
    }

    /// A Secret's data, decoded; `Err` is the kubelet's message.
    async fn secret(&self, namespace: &str, name: &str) -> Result<HashMap<String, String>, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(secret)) => Ok(secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect()),
            Ok(None) => Err(format!("secret \"{name}\" not found")),
            // The Node authorizer learns of a pod's Secrets from its own watch: right after
            // the pod is bound it may still refuse (the kubelet retries, as here).
            Err(e) => Err(format!("failed to sync secret cache: {e}")),
        }
    }

    /// A ConfigMap's data; `Err` is the kubelet's message.
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<HashMap<String, String>, String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(map)) => Ok(map.data.unwrap_or_default().into_iter().collect()),
            Ok(None) => Err(format!("configmap \"{name}\" not found")),
            Err(e) => Err(format!("failed to sync configmap cache: {e}")),
        }
    }

    /// Starts the container's process, its output in a fresh log file; `Err` is the
    /// runtime's `StartError` message. It runs as the user its spec names when the tests run
    /// as root (otherwise as whoever runs them); supplementary groups (`fsGroup`,
    /// `supplementalGroups`) are not set, which volumes make up for by being world-writable
    /// as emptyDirs are.
    pub(super) fn spawn(
        &self,
        namespace: &str,
        pod: &str,
        name: &str,
        prepared: &Prepared,
    ) -> Result<tokio::process::Child, String> {
        let log_path = self.log_path(namespace, pod, name);
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = tokio::process::Command::new(&prepared.program);
        if let Some((user, group)) = prepared.user
            && nix::unistd::geteuid().is_root()
        {
            command.uid(user).gid(group);
        }
        let child = command
            .args(&prepared.args)
            .env_clear()
            .envs(prepared.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&prepared.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!(
                    "failed to create containerd task: failed to create shim task: OCI runtime create \
                     failed: runc create failed: unable to start container process: exec: {:?}: {e}: unknown",
                    prepared.program
                )
            })?;
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            self.add_group(pid);
        }
        self.set_running(namespace, pod, name, true);
        Ok(child)
    }
}

/// The exit code a runtime reports: the process's, or 128 + the signal that killed it.
pub(super) fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i64 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s
            .code()
            .map(i64::from)
            .or_else(|| s.signal().map(|sig| 128 + i64::from(sig)))
            .unwrap_or(1),
        Err(_) => 1,
    }
}
