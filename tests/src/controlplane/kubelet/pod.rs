//! One pod's worker, as the kubelet's pod worker runs a pod: the sandbox (volume directories),
//! then each init container in order (a native sidecar, `restartPolicy: Always`, is started and
//! left running), then the main containers; each image pulled first and each container's
//! configuration resolved first, both retried with back-off while they fail. The pod ends
//! when its main containers have (`restartPolicy: Never` is all Gantry uses: nothing is
//! restarted), its sidecars are then stopped, and its phase is Succeeded or Failed.
//!
//! Deletion is graceful as on a node: the API server sets a deletionTimestamp and a grace
//! period, the worker sends SIGTERM, waits that long, sends SIGKILL, reports the containers'
//! ends and then deletes the pod with grace period 0, which is the kubelet's confirmation
//! that lets the API server remove it (once finalizers, such as the Job controller's, are
//! gone).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::container::exit_code;
use super::events::{Type, record};
use super::images::{PullContext, fake_digest, pull_policy};
use super::status::{Kind, Status, now, running, terminated, waiting};
use super::{Fault, Gate, Kubelet, Stop};

/// The message of the kubelet's eviction manager for memory pressure (what `kubectl describe`
/// shows on an evicted pod).
const EVICTION_MESSAGE: &str = "The node was low on resource: memory. Threshold quantity: 100Mi, \
available: 51200Ki. Container stage was using 1536Mi, request is 0, has larger consumption of memory. ";

/// What stopped the worker's progress: the pod is being deleted, or is gone.
type Step<T> = Result<T, Stop>;

/// A container that was started.
struct Proc {
    name: String,
    kind: Kind,
    sidecar: bool,
    /// Its process group; `None` for a container without a command (nothing to run here:
    /// it counts as running until the pod stops).
    group: Option<i32>,
    started_at: String,
    image_id: String,
    container_id: String,
    exit: Option<i64>,
    /// Killed by an injected OOM.
    oom: bool,
}

enum Next {
    Exit(usize, i64),
    Stop(Stop),
    Fault,
}

struct Worker {
    kubelet: Arc<Kubelet>,
    pod: Value,
    namespace: String,
    name: String,
    uid: String,
    api: Api<Pod>,
    status: Status,
    faults: Vec<Fault>,
    stop: watch::Receiver<Stop>,
    dir: PathBuf,
    volumes: HashMap<String, PathBuf>,
    /// Injected pull failures still to come, per container.
    pull_failures: HashMap<String, u32>,
    procs: Vec<Proc>,
    exits: mpsc::UnboundedReceiver<(usize, i64)>,
    exits_tx: mpsc::UnboundedSender<(usize, i64)>,
}

/// Runs the pod, then waits for its deletion and confirms it.
pub(super) async fn run(
    kubelet: Arc<Kubelet>,
    pod: Pod,
    faults: Vec<Fault>,
    stop: watch::Receiver<Stop>,
) {
    let value = serde_json::to_value(&pod).unwrap_or_default();
    let namespace = value["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let name = value["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let pulls = faults
        .iter()
        .find_map(|f| match f {
            Fault::PullFails(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(0);
    let containers = value["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(value["spec"]["containers"].as_array().into_iter().flatten());
    let pull_failures = containers
        .filter_map(|c| c["name"].as_str())
        .map(|c| (c.to_owned(), pulls))
        .collect();
    let (exits_tx, exits) = mpsc::unbounded_channel();
    let mut worker = Worker {
        api: Api::namespaced(kubelet.client.clone(), &namespace),
        dir: kubelet.pod_dir(&namespace, &name),
        uid: value["metadata"]["uid"].as_str().unwrap_or("").to_owned(),
        status: Status::new(&value),
        kubelet,
        pod: value,
        namespace,
        name,
        faults,
        stop,
        volumes: HashMap::new(),
        pull_failures,
        procs: Vec::new(),
        exits,
        exits_tx,
    };
    let finished = matches!(
        worker.pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if !finished
        && worker.stopping().is_none()
        && let Err(stop) = worker.start().await
    {
        worker.terminate(stop).await;
    }
    worker.confirm_deletion().await;
}

impl Worker {
    fn stopping(&self) -> Option<Stop> {
        let stop = *self.stop.borrow();
        (stop != Stop::No).then_some(stop)
    }

    /// Sleeps `d`, unless the pod is stopped first.
    async fn sleep(&mut self, d: Duration) -> Step<()> {
        let deadline = Instant::now() + d;
        loop {
            if let Some(stop) = self.stopping() {
                return Err(stop);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        // The kubelet shut down.
                        return Err(Stop::Gone);
                    }
                }
            }
        }
    }

    /// Waits until `gate` opens, unless the pod is stopped first.
    async fn until_open(&mut self, gate: &Gate) -> Step<()> {
        loop {
            if let Some(stop) = self.stopping() {
                return Err(stop);
            }
            tokio::select! {
                () = gate.opened() => return Ok(()),
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        return Err(Stop::Gone);
                    }
                }
            }
        }
    }

    /// Waits until the pod is stopped.
    async fn until_stopped(&mut self) -> Stop {
        loop {
            if let Some(stop) = self.stopping() {
                return stop;
            }
            if self.stop.changed().await.is_err() {
                return Stop::Gone;
            }
        }
    }

    /// The back-off after the `failures`-th failure: doubling from the kubelet's first,
    /// capped at 30 times that.
    fn backoff(&self, failures: u32) -> Duration {
        let first = self.kubelet.options.backoff;
        first
            .saturating_mul(1u32 << failures.saturating_sub(1).min(10))
            .min(first * 30)
    }

    /// Writes the status (a merge patch of the whole status, UID as a precondition, as the
    /// kubelet's status manager does). A pod gone meanwhile is no error: its deletion comes.
    async fn flush(&self) {
        let patch = json!({"metadata": {"uid": self.uid}, "status": self.status.value()});
        let _ = self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await;
    }

    async fn event(
        &self,
        kind: Kind,
        container: &str,
        severity: Type,
        reason: &str,
        message: &str,
    ) {
        let path = (!container.is_empty()).then(|| kind.field_path(container));
        record(&self.kubelet, &self.pod, path, severity, reason, message).await;
    }

    fn spec_list(&self, kind: Kind) -> Vec<Value> {
        let field = match kind {
            Kind::Init => "initContainers",
            Kind::Main => "containers",
        };
        self.pod["spec"][field]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Runs the pod to its end (`Ok`), or until it is stopped (`Err`).
    async fn start(&mut self) -> Step<()> {
        self.flush().await;
        for fault in self.faults.clone() {
            match fault {
                Fault::PendingFor(d) => self.sleep(d).await?,
                Fault::PendingUntil(gate) => self.until_open(&gate).await?,
                _ => {}
            }
        }
        // The sandbox: a directory per volume (emptyDir, and any other kind: what a Secret or
        // ConfigMap volume would hold is not written), world-writable as an emptyDir is, and
        // with `fsGroup` group-owned by it with the setgid bit, as the kubelet sets it up.
        let fs_group = self.pod["spec"]["securityContext"]["fsGroup"]
            .as_u64()
            .and_then(|g| u32::try_from(g).ok());
        for volume in self.pod["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(name) = volume["name"].as_str() {
                let dir = self.dir.join("volumes").join(name);
                let _ = std::fs::create_dir_all(&dir);
                let mut mode = 0o777;
                if let Some(group) = fs_group
                    && std::os::unix::fs::chown(&dir, None, Some(group)).is_ok()
                {
                    mode |= 0o2000;
                }
                let _ = std::fs::set_permissions(
                    &dir,
                    std::os::unix::fs::PermissionsExt::from_mode(mode),
                );
                self.volumes.insert(name.to_owned(), dir);
            }
        }
        let _ = std::fs::create_dir_all(&self.dir);
        self.status
            .set_condition("PodReadyToStartContainers", true, "", "");
        self.flush().await;

        for container in self.spec_list(Kind::Init) {
            let sidecar = container["restartPolicy"].as_str() == Some("Always");
            let Some(index) = self
                .start_container(Kind::Init, &container, sidecar)
                .await?
            else {
                return Ok(()); // it could not start: the pod has failed
            };
            if sidecar {
                continue;
            }
            let code = self.wait_for(index).await?;
            if code != 0 {
                self.complete().await;
                return Ok(());
            }
        }
        for container in self.spec_list(Kind::Main) {
            if self
                .start_container(Kind::Main, &container, false)
                .await?
                .is_none()
            {
                return Ok(());
            }
        }
        self.status.set_phase("Running");
        self.flush().await;
        self.run_main().await
    }

    /// Pulls the image, configures and starts one container; `None` when it cannot start
    /// (the pod is then Failed, as `restartPolicy: Never` wants).
    async fn start_container(
        &mut self,
        kind: Kind,
        container: &Value,
        sidecar: bool,
    ) -> Step<Option<usize>> {
        let name = container["name"].as_str().unwrap_or("").to_owned();
        let image_id = self.pull(kind, container).await?;
        let prepared = self.configure(kind, container).await?;
        let container_id = format!(
            "containerd://{}",
            fake_digest(&format!("{}/{name}", self.uid)).trim_start_matches("sha256:")
        );
        self.event(
            kind,
            &name,
            Type::Normal,
            "Created",
            &format!("Created container: {name}"),
        )
        .await;
        let started_at = now();
        let mut group = None;
        if let Some(prepared) = prepared {
            match self
                .kubelet
                .spawn(&self.namespace, &self.name, &name, &prepared)
            {
                Ok(mut child) => {
                    group = child.id().and_then(|p| i32::try_from(p).ok());
                    let (tx, kubelet, index) = (
                        self.exits_tx.clone(),
                        Arc::clone(&self.kubelet),
                        self.procs.len(),
                    );
                    let (namespace, pod, cname) =
                        (self.namespace.clone(), self.name.clone(), name.clone());
                    tokio::spawn(async move {
                        let code = exit_code(child.wait().await);
                        if let Some(group) = group {
                            kubelet.reap_group(group);
                        }
                        kubelet.set_running(&namespace, &pod, &cname, false);
                        let _ = tx.send((index, code));
                    });
                }
                Err(message) => {
                    self.event(
                        kind,
                        &name,
                        Type::Warning,
                        "Failed",
                        &format!("Error: {message}"),
                    )
                    .await;
                    let mut state = terminated(128, "StartError", &started_at, &container_id);
                    state["terminated"]["message"] = json!(message);
                    self.status.put(
                        kind,
                        &name,
                        &self.pod,
                        state,
                        Some((&image_id, &container_id)),
                    );
                    self.complete().await;
                    return Ok(None);
                }
            }
        }
        self.event(
            kind,
            &name,
            Type::Normal,
            "Started",
            &format!("Started container {name}"),
        )
        .await;
        self.status.put(
            kind,
            &name,
            &self.pod,
            running(&started_at),
            Some((&image_id, &container_id)),
        );
        self.flush().await;
        self.procs.push(Proc {
            name,
            kind,
            sidecar,
            group,
            started_at,
            image_id,
            container_id,
            exit: None,
            oom: false,
        });
        Ok(Some(self.procs.len() - 1))
    }

    /// Pulls a container's image as its pull policy says, retrying with back-off as long as
    /// it fails (`ErrImagePull`, then `ImagePullBackOff` until the next try); its image ID.
    async fn pull(&mut self, kind: Kind, container: &Value) -> Step<String> {
        let name = container["name"].as_str().unwrap_or("").to_owned();
        let image = container["image"].as_str().unwrap_or("").to_owned();
        let injected = self.pull_failures.get(&name).copied().unwrap_or(0) > 0;
        let present = self.kubelet.image_present(&image);
        let policy = pull_policy(container).to_owned();
        if let Some(id) = present.clone().filter(|_| policy != "Always" && !injected) {
            let message = format!("Container image \"{image}\" already present on machine");
            self.event(kind, &name, Type::Normal, "Pulled", &message)
                .await;
            return Ok(id);
        }
        if policy == "Never" && !injected {
            let message =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            self.event(kind, &name, Type::Warning, "ErrImageNeverPull", &message)
                .await;
            self.status.put(
                kind,
                &name,
                &self.pod,
                waiting("ErrImageNeverPull", &message),
                None,
            );
            self.flush().await;
            // The kubelet keeps trying; it never succeeds.
            return Err(self.until_stopped().await);
        }
        let context = PullContext {
            namespace: &self.namespace.clone(),
            secrets: self.pod["spec"]["imagePullSecrets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect(),
        };
        let mut failures = 0;
        loop {
            self.event(
                kind,
                &name,
                Type::Normal,
                "Pulling",
                &format!("Pulling image \"{image}\""),
            )
            .await;
            let began = Instant::now();
            let result = match self.pull_failures.get_mut(&name) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    Err(format!(
                        "rpc error: code = Unavailable desc = failed to pull and unpack image \"{image}\": \
                         failed to resolve reference \"{image}\": unexpected status from HEAD request: \
                         503 Service Unavailable"
                    ))
                }
                _ => self.kubelet.pull(&image, &context).await,
            };
            match result {
                Ok(id) => {
                    let took = began.elapsed();
                    let message = format!(
                        "Successfully pulled image \"{image}\" in {took:?} ({took:?} including waiting). Image size: 0 bytes."
                    );
                    self.event(kind, &name, Type::Normal, "Pulled", &message)
                        .await;
                    return Ok(id);
                }
                Err(error) => {
                    failures += 1;
                    let failed = format!("Failed to pull image \"{image}\": {error}");
                    self.event(kind, &name, Type::Warning, "Failed", &failed)
                        .await;
                    self.event(kind, &name, Type::Warning, "Failed", "Error: ErrImagePull")
                        .await;
                    self.status.put(
                        kind,
                        &name,
                        &self.pod,
                        waiting("ErrImagePull", &error),
                        None,
                    );
                    self.flush().await;
                    // The kubelet's next sync finds the image in back-off.
                    let backoff = self.backoff(failures);
                    self.sleep(backoff / 2).await?;
                    let message = format!("Back-off pulling image \"{image}\"");
                    self.event(kind, &name, Type::Normal, "BackOff", &message)
                        .await;
                    self.event(
                        kind,
                        &name,
                        Type::Warning,
                        "Failed",
                        "Error: ImagePullBackOff",
                    )
                    .await;
                    let message = format!("{message}: ErrImagePull: {error}");
                    self.status.put(
                        kind,
                        &name,
                        &self.pod,
                        waiting("ImagePullBackOff", &message),
                        None,
                    );
                    self.flush().await;
                    self.sleep(backoff - backoff / 2).await?;
                }
            }
        }
    }

    /// Resolves a container's command and environment, retrying with back-off while a Secret
    /// or ConfigMap it needs is missing (`CreateContainerConfigError`).
    async fn configure(
        &mut self,
        kind: Kind,
        container: &Value,
    ) -> Step<Option<super::container::Prepared>> {
        let name = container["name"].as_str().unwrap_or("").to_owned();
        let mut failures = 0;
        loop {
            match self
                .kubelet
                .prepare(&self.pod, container, &self.volumes, &self.dir)
                .await
            {
                Ok(prepared) => return Ok(prepared),
                Err(message) => {
                    failures += 1;
                    self.event(
                        kind,
                        &name,
                        Type::Warning,
                        "Failed",
                        &format!("Error: {message}"),
                    )
                    .await;
                    let state = waiting("CreateContainerConfigError", &message);
                    self.status.put(kind, &name, &self.pod, state, None);
                    self.flush().await;
                    let backoff = self.backoff(failures);
                    self.sleep(backoff).await?;
                }
            }
        }
    }

    /// The next thing that happens: a container exits, the pod is stopped, or `fault_at`
    /// comes.
    async fn next(&mut self, fault_at: Option<Instant>) -> Next {
        if let Some(stop) = self.stopping() {
            return Next::Stop(stop);
        }
        let fault = async {
            match fault_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((index, code)) = self.exits.recv() => Next::Exit(index, code),
            changed = self.stop.changed() => match changed {
                Ok(()) => match self.stopping() {
                    Some(stop) => Next::Stop(stop),
                    None => Next::Stop(Stop::No),
                },
                Err(_) => Next::Stop(Stop::Gone),
            },
            () = fault => Next::Fault,
        }
    }

    /// Records a container's end in its status.
    async fn exited(&mut self, index: usize, code: i64) {
        let proc = &mut self.procs[index];
        proc.exit = Some(code);
        let reason = if proc.oom && code == 137 {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let state = terminated(code, reason, &proc.started_at, &proc.container_id);
        let (kind, name) = (proc.kind, proc.name.clone());
        let ids = (proc.image_id.clone(), proc.container_id.clone());
        self.status
            .put(kind, &name, &self.pod, state, Some((&ids.0, &ids.1)));
        self.flush().await;
    }

    /// Waits for container `index` to exit; its exit code.
    async fn wait_for(&mut self, index: usize) -> Step<i64> {
        loop {
            match self.next(None).await {
                Next::Exit(i, code) => {
                    self.exited(i, code).await;
                    if i == index {
                        return Ok(code);
                    }
                }
                Next::Stop(Stop::No) | Next::Fault => {}
                Next::Stop(stop) => return Err(stop),
            }
        }
    }

    fn mains_done(&self) -> bool {
        self.procs
            .iter()
            .filter(|p| p.kind == Kind::Main)
            .all(|p| p.exit.is_some())
    }

    /// Waits for the main containers to end, injecting the OOM or eviction fault when its
    /// time comes.
    async fn run_main(&mut self) -> Step<()> {
        let began = Instant::now();
        let mut timed: Vec<Fault> = self
            .faults
            .iter()
            .filter(|f| matches!(f, Fault::Oom { .. } | Fault::Evicted { .. }))
            .cloned()
            .collect();
        let at = |f: &Fault| match f {
            Fault::Oom { after, .. } | Fault::Evicted { after } => began + *after,
            _ => began,
        };
        while !self.mains_done() {
            let first = timed.iter().map(at).min();
            match self.next(first).await {
                Next::Exit(i, code) => self.exited(i, code).await,
                Next::Stop(Stop::No) => {}
                Next::Stop(stop) => return Err(stop),
                Next::Fault => {
                    let now = Instant::now();
                    let due: Vec<Fault> = timed.iter().filter(|f| at(f) <= now).cloned().collect();
                    timed.retain(|f| at(f) > now);
                    for fault in due {
                        match fault {
                            Fault::Oom { container, .. } => {
                                if let Some(p) = self
                                    .procs
                                    .iter_mut()
                                    .find(|p| p.name == container && p.exit.is_none())
                                {
                                    p.oom = true;
                                    signal(p.group, Signal::SIGKILL);
                                }
                            }
                            Fault::Evicted { .. } => {
                                self.evict().await;
                                return Ok(());
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        self.complete().await;
        Ok(())
    }

    /// Stops the sidecars (SIGTERM, then SIGKILL after the grace period) and writes the
    /// pod's final phase: Succeeded when every main container exited 0.
    async fn complete(&mut self) {
        let grace = self.grace();
        self.stop_all(Signal::SIGTERM, grace).await;
        let mains: Vec<&Proc> = self.procs.iter().filter(|p| p.kind == Kind::Main).collect();
        let started = mains.len() == self.spec_list(Kind::Main).len();
        let succeeded = started && mains.iter().all(|p| p.exit == Some(0));
        self.status
            .set_phase(if succeeded { "Succeeded" } else { "Failed" });
        self.flush().await;
        self.clean_up();
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(
            self.pod["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30),
        )
    }

    /// Sends `first` to every container still running (main containers before sidecars, as
    /// the kubelet stops them), then SIGKILL to what is left after `grace` (or at once when
    /// the pod object goes meanwhile), and records each end. A container with no process
    /// ends at once, with 0.
    async fn stop_all(&mut self, first: Signal, grace: Duration) {
        let live: Vec<usize> = (0..self.procs.len())
            .filter(|&i| self.procs[i].exit.is_none())
            .collect();
        let mut order = live.clone();
        order.sort_by_key(|&i| self.procs[i].sidecar);
        for &i in &order {
            let (kind, name) = (self.procs[i].kind, self.procs[i].name.clone());
            self.event(
                kind,
                &name,
                Type::Normal,
                "Killing",
                &format!("Stopping container {name}"),
            )
            .await;
            match self.procs[i].group {
                Some(group) => signal(Some(group), first),
                None => self.exited(i, 0).await,
            }
        }
        let deadline = Instant::now() + grace;
        let mut killed = false;
        while live.iter().any(|&i| self.procs[i].exit.is_none()) {
            let kill_now = tokio::select! {
                Some((i, code)) = self.exits.recv() => {
                    self.exited(i, code).await;
                    false
                }
                () = tokio::time::sleep_until(deadline), if !killed => true,
                changed = self.stop.changed(), if !killed => {
                    changed.is_err() || *self.stop.borrow() == Stop::Gone
                }
            };
            if kill_now {
                killed = true;
                for &i in &live {
                    if self.procs[i].exit.is_none() {
                        signal(self.procs[i].group, Signal::SIGKILL);
                    }
                }
            }
        }
    }

    /// Evicts the pod as the kubelet's eviction manager does under memory pressure: every
    /// container killed at once, phase Failed, reason Evicted, a DisruptionTarget condition.
    async fn evict(&mut self) {
        self.event(
            Kind::Main,
            "",
            Type::Warning,
            "Evicted",
            EVICTION_MESSAGE.trim_end(),
        )
        .await;
        self.status.set_reason("Evicted", EVICTION_MESSAGE);
        self.status.set_condition(
            "DisruptionTarget",
            true,
            "TerminationByKubelet",
            EVICTION_MESSAGE,
        );
        self.stop_all(Signal::SIGKILL, Duration::ZERO).await;
        self.status.set_phase("Failed");
        self.flush().await;
        self.clean_up();
    }

    /// The pod is being deleted (or is gone) before it ended by itself.
    async fn terminate(&mut self, stop: Stop) {
        match stop {
            Stop::Gone => {
                for p in &self.procs {
                    if p.exit.is_none() {
                        signal(p.group, Signal::SIGKILL);
                    }
                }
            }
            Stop::Delete { grace } => {
                if !self.procs.is_empty() {
                    self.stop_all(Signal::SIGTERM, grace).await;
                    let mains: Vec<&Proc> =
                        self.procs.iter().filter(|p| p.kind == Kind::Main).collect();
                    let succeeded = mains.len() == self.spec_list(Kind::Main).len()
                        && mains.iter().all(|p| p.exit == Some(0));
                    self.status
                        .set_phase(if succeeded { "Succeeded" } else { "Failed" });
                    self.flush().await;
                }
            }
            Stop::No => {}
        }
        self.clean_up();
    }

    /// Kills anything a container left working in the pod's directory (a process that left
    /// its process group): a runtime would have torn the pod's namespaces down.
    fn clean_up(&self) {
        for pid in crate::proc::live_under(&self.dir) {
            crate::proc::kill9(pid);
        }
    }

    /// Once the pod is being deleted, confirms it with a deletion of grace period 0 (UID as
    /// the precondition: a new pod of the same name is not this one's).
    async fn confirm_deletion(&mut self) {
        loop {
            match self.stopping() {
                Some(Stop::Gone) => return,
                Some(Stop::Delete { .. }) => break,
                _ => {
                    if self.stop.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        for attempt in 1..=5 {
            match self.api.delete(&self.name, &params).await {
                Ok(_) => return,
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => return,
                Err(_) => {
                    let backoff = self.backoff(attempt);
                    if self.sleep(backoff).await == Err(Stop::Gone) {
                        return;
                    }
                }
            }
        }
    }
}

fn signal(group: Option<i32>, signal: Signal) {
    if let Some(group) = group {
        let _ = killpg(Pid::from_raw(group), signal);
    }
}
