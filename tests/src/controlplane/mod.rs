//! A REAL Kubernetes control plane for the tests: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler v1.37.2 (built by `scripts/controlplane`, see
//! tests/controlplane/README.md), started on loopback with certificates of its own, and a
//! fake kubelet ([`kubelet`]) as its one node. Unlike the stand-in (crate::kube), everything
//! but the kubelet is the real thing: authentication and RBAC, admission (PodSecurity,
//! ServiceAccount, NodeRestriction), validation and defaulting, watches, TokenRequest, and
//! the real Job, Deployment/ReplicaSet, garbage-collector, namespace, TTL and node lifecycle
//! controllers and the real scheduler.
//!
//! Each [`ControlPlane`] is its own: own directory, own etcd, own ports; it takes a few
//! seconds to start (the controller manager's first controllers take most of them), and
//! everything it started is killed when it is dropped. A test may kill the API server and
//! start it again on the same port, and compact etcd meanwhile: with
//! `--watch-cache=false` ([`Options::apiserver_args`]) every watch then resumes from a
//! resourceVersion etcd no longer has and is answered 410 Gone.
//!
//! The commands and flags are those of tests/controlplane/START.md, with two changes: the
//! API server's port is one its own process is seen listening on (no race with other
//! tests), and it is told how to reach the kubelet (`--kubelet-*`) for `pods/log`.

mod bins;
mod component;
mod etcd;
pub mod kubeconfig;
pub mod kubelet;
pub mod pki;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use component::Component;
pub use kubelet::{Fault, Gate, Images, Kubelet, KubeletOptions, Target};

/// How long each part may take to come up before the start fails (generous: the machine
/// may be compiling beside the tests).
const START_LIMIT: Duration = Duration::from_secs(120);
/// How often a condition is polled while waiting for it.
const POLL: Duration = Duration::from_millis(50);

/// The service cluster IP range; the first address is the `kubernetes` Service's.
const SERVICE_RANGE: &str = "10.0.0.0/24";

/// The API server's audit policy: every request at the Metadata level (who, what, the
/// answer's code), except the control plane's own (the controllers, the scheduler, the API
/// server) and health checks, which would drown the rest.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  userGroups: [\"system:serviceaccounts:kube-system\"]
- level: None
  users: [\"system:kube-scheduler\", \"system:kube-controller-manager\", \"system:apiserver\"]
- level: None
  nonResourceURLs: [\"/healthz*\", \"/readyz*\", \"/livez*\"]
- level: Metadata
";

/// How long each part of the start took.
#[derive(Clone, Debug, Default)]
pub struct Startup {
    pub certificates: Duration,
    pub etcd: Duration,
    /// Until `/readyz` answers 200.
    pub apiserver: Duration,
    /// From the API server ready until the controllers run (the serviceaccount controller has
    /// made `default/default`).
    pub controllers: Duration,
    /// From then until the node is schedulable (the node lifecycle controller has lifted its
    /// `not-ready` taint).
    pub node: Duration,
    pub total: Duration,
}

/// What to start a control plane with.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub kubelet: KubeletOptions,
    /// Images the kubelet knows besides the runner image (which [`ControlPlane::start`]
    /// always maps to the test build's `gantry-runner`).
    pub images: Images,
    /// kube-apiserver flags after the harness's own (a later one wins), e.g.
    /// `--watch-cache=false` to serve every watch from etcd itself, so that compacting etcd
    /// ([`ControlPlane::compact_etcd`]) expires watches as it would on a busy cluster.
    pub apiserver_args: Vec<String>,
}

/// How kube-apiserver was started, to start it again the same way (same port, same flags).
struct ApiserverCommand {
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

/// A running control plane with one fake node. Dropping it kills every process it started
/// (the kubelet's containers first) and removes its directory.
pub struct ControlPlane {
    kubelet: Arc<Kubelet>,
    /// In start order; stopped in reverse.
    components: Vec<Component>,
    client: kube::Client,
    port: u16,
    apiserver: ApiserverCommand,
    etcd_socket: PathBuf,
    pki: pki::Pki,
    pub startup: Startup,
    dir: tempfile::TempDir,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // A failed test shows how the components ended; GANTRY_CONTROLPLANE_KEEP=1 keeps
        // everything (logs, certificates, kubeconfigs, etcd's data) for a closer look.
        if std::thread::panicking() {
            for c in &self.components {
                eprintln!("--- the end of {}:\n{}", c.log.display(), c.log_tail(10));
            }
        }
        if std::env::var_os("GANTRY_CONTROLPLANE_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "control plane directory kept: {}",
                self.dir.path().display()
            );
        }
        self.kubelet.shutdown();
        while let Some(component) = self.components.pop() {
            drop(component);
        }
    }
}

/// Polls the API server's `/readyz` with `client` until it answers `ok`.
async fn apiserver_ready(client: &kube::Client) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + START_LIMIT;
    loop {
        let request = axum::http::Request::get("/readyz")
            .body(Vec::new())
            .expect("a request");
        if client
            .request_text(request)
            .await
            .is_ok_and(|text| text.trim() == "ok")
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("/readyz not ok within {START_LIMIT:?}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

impl ControlPlane {
    /// Starts a control plane whose kubelet maps [`crate::kube::RUNNER_IMAGE`] to the test
    /// build's `gantry-runner`.
    pub async fn start() -> ControlPlane {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(mut options: Options) -> ControlPlane {
        let began = Instant::now();
        let mut startup = Startup::default();
        // Under /tmp with a short name: etcd's unix socket path must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("gcp-")
            .tempdir_in("/tmp")
            .expect("control plane dir");
        let root = dir.path().to_path_buf();
        // Containers may run as other users (their securityContext): they must be able to
        // pass through to their volumes and the runner image.
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o711))
            .expect("chmod the control plane dir");
        let logs = root.join("log");
        std::fs::create_dir_all(&logs).expect("log dir");
        let bins = tokio::task::spawn_blocking(|| bins::dir().to_path_buf())
            .await
            .expect("finding the binaries");
        let bin = |name: &str| bins.join(name);

        let t = Instant::now();
        let pki = pki::Pki::generate(&root.join("pki")).await;
        let node = options.kubelet.node_name.clone();
        let node_user = format!("system:node:{node}");
        let (admin, kcm, scheduler, node_client, kubelet_client, kubelet_serving) = tokio::join!(
            pki.client("admin", "gantry-admin", &["system:masters"]),
            pki.client(
                "kube-controller-manager",
                "system:kube-controller-manager",
                &[]
            ),
            pki.client("kube-scheduler", "system:kube-scheduler", &[]),
            pki.client("node", &node_user, &["system:nodes"]),
            // The API server's identity towards kubelets (kubeadm's apiserver-kubelet-client).
            pki.client(
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                &[]
            ),
            pki.serving("kubelet", &node, "IP:127.0.0.1,DNS:localhost"),
        );
        startup.certificates = t.elapsed();

        // etcd: clients on a unix socket, the (unused) peer listener on port 0: no port picked.
        let t = Instant::now();
        let socket = root.join("etcd.sock");
        let s = |v: &str| v.to_owned();
        let mut etcd = Component::spawn(
            "etcd",
            &bin("etcd"),
            &[
                s("--name=gantry"),
                format!("--data-dir={}", root.join("etcd").display()),
                format!("--listen-client-urls=unix://{}", socket.display()),
                // Cannot be a unix URL ("missing port in address"); nothing uses it.
                s("--advertise-client-urls=http://127.0.0.111:0"),
                s("--listen-peer-urls=http://127.0.0.1:0"),
                s("--initial-advertise-peer-urls=http://127.0.0.1:0"),
                s("--initial-cluster=gantry=http://127.0.0.1:0"),
                s("--log-level=warn"),
                s("--quota-backend-bytes=2147483648"),
            ],
            logs.join("etcd.log"),
        );
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        while !etcd::healthy(&socket).await {
            if let Err(e) = etcd.check_alive() {
                panic!("{e}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd not healthy within {START_LIMIT:?}: {}",
                etcd.log_tail(20)
            );
            tokio::time::sleep(POLL).await;
        }
        startup.etcd = t.elapsed();
        let mut components = vec![etcd];

        // kube-apiserver, on a port its own process is seen listening on.
        let t = Instant::now();
        let ca = pki.ca();
        let audit_policy = root.join("audit-policy.yaml");
        std::fs::write(&audit_policy, AUDIT_POLICY).expect("write the audit policy");
        let mut apiserver_args = vec![
            format!("--etcd-servers=unix://{}", socket.display()),
            s("--bind-address=127.0.0.1"),
            s("--advertise-address=127.0.0.1"),
            // The default (lease) refuses a loopback advertise address.
            s("--endpoint-reconciler-type=none"),
            format!("--tls-cert-file={}", pki.path("apiserver").cert.display()),
            format!(
                "--tls-private-key-file={}",
                pki.path("apiserver").key.display()
            ),
            format!("--client-ca-file={}", ca.display()),
            s("--authorization-mode=Node,RBAC"),
            s("--enable-admission-plugins=NodeRestriction,PodSecurity"),
            s("--service-account-issuer=https://kubernetes.default.svc.cluster.local"),
            format!("--service-account-key-file={}", pki.sa_pub().display()),
            format!(
                "--service-account-signing-key-file={}",
                pki.sa_key().display()
            ),
            format!("--service-cluster-ip-range={SERVICE_RANGE}"),
            // pods/log and friends: the kubelet at its node's InternalIP, its certificate
            // checked against the test CA.
            format!("--kubelet-certificate-authority={}", ca.display()),
            format!(
                "--kubelet-client-certificate={}",
                kubelet_client.cert.display()
            ),
            format!("--kubelet-client-key={}", kubelet_client.key.display()),
            s("--kubelet-preferred-address-types=InternalIP"),
            // Who asked for what and how it was answered, for tests that check what a client
            // (Gantry) did: see `ControlPlane::audit`.
            format!("--audit-policy-file={}", audit_policy.display()),
            format!("--audit-log-path={}", logs.join("audit.log").display()),
            s("--audit-log-format=json"),
            s("--allow-privileged=false"),
            s("--profiling=false"),
        ];
        apiserver_args.extend(options.apiserver_args.iter().cloned());
        let apiserver_bin = bin("kube-apiserver");
        let apiserver_log = logs.join("kube-apiserver.log");
        let (child, port) = {
            let (args, program, log) = (
                apiserver_args.clone(),
                apiserver_bin.clone(),
                apiserver_log.clone(),
            );
            tokio::task::spawn_blocking(move || {
                crate::serve::on_free_port("kube-apiserver", |port| {
                    let mut args = args.clone();
                    args.push(format!("--secure-port={port}"));
                    component::command(&program, &args, &log)
                        .spawn()
                        .expect("start kube-apiserver")
                })
            })
            .await
            .expect("starting kube-apiserver")
        };
        apiserver_args.push(format!("--secure-port={port}"));
        components.push(Component::new(
            "kube-apiserver",
            child,
            apiserver_log.clone(),
        ));
        let server = format!("https://127.0.0.1:{port}");
        let kubeconfig = |name: &str, pair: &pki::Pair| {
            let path = root.join(format!("{name}.kubeconfig"));
            kubeconfig::write(
                &path,
                &server,
                &ca,
                name,
                kubeconfig::Credentials::Certificate(pair),
                None,
            );
            path
        };
        let admin_kubeconfig = kubeconfig("admin", &admin);
        let kcm_kubeconfig = kubeconfig("kube-controller-manager", &kcm);
        let scheduler_kubeconfig = kubeconfig("kube-scheduler", &scheduler);
        let node_kubeconfig = kubeconfig("node", &node_client);
        let client = kubeconfig::client(&admin_kubeconfig).await;

        // The controller manager and the scheduler can start now: they wait for the API
        // server themselves. Their own HTTPS (healthz) on ports they are seen listening on.
        let kcm_args = vec![
            format!("--kubeconfig={}", kcm_kubeconfig.display()),
            s("--bind-address=127.0.0.1"),
            format!("--cert-dir={}", root.join("kcm-certs").display()),
            s("--controllers=*"),
            s("--use-service-account-credentials=true"),
            s("--leader-elect=false"),
            format!("--root-ca-file={}", ca.display()),
            format!(
                "--service-account-private-key-file={}",
                pki.sa_key().display()
            ),
            format!("--cluster-signing-cert-file={}", ca.display()),
            format!(
                "--cluster-signing-key-file={}",
                pki.path("ca").key.display()
            ),
            format!("--service-cluster-ip-range={SERVICE_RANGE}"),
            // The default is created on the host otherwise.
            format!(
                "--flex-volume-plugin-dir={}",
                root.join("flexvolume").display()
            ),
            s("--profiling=false"),
        ];
        let scheduler_args = vec![
            format!("--kubeconfig={}", scheduler_kubeconfig.display()),
            s("--bind-address=127.0.0.1"),
            format!("--cert-dir={}", root.join("scheduler-certs").display()),
            s("--leader-elect=false"),
            s("--profiling=false"),
        ];
        let start_on_port =
            |name: &'static str, program: PathBuf, args: Vec<String>, log: PathBuf| {
                tokio::task::spawn_blocking(move || {
                    let (child, _) = crate::serve::on_free_port(name, |port| {
                        let mut args = args.clone();
                        args.push(format!("--secure-port={port}"));
                        component::command(&program, &args, &log)
                            .spawn()
                            .unwrap_or_else(|e| panic!("start {name}: {e}"))
                    });
                    Component::new(name, child, log)
                })
            };
        let kcm_task = start_on_port(
            "kube-controller-manager",
            bin("kube-controller-manager"),
            kcm_args,
            logs.join("kube-controller-manager.log"),
        );
        let scheduler_task = start_on_port(
            "kube-scheduler",
            bin("kube-scheduler"),
            scheduler_args,
            logs.join("kube-scheduler.log"),
        );
        let (kcm, scheduler, ready) =
            tokio::join!(kcm_task, scheduler_task, apiserver_ready(&client));
        if let Err(e) = ready {
            let apiserver = &mut components[1];
            panic!(
                "kube-apiserver: {e}; {:?}\n{}",
                apiserver.check_alive(),
                apiserver.log_tail(30)
            );
        }
        startup.apiserver = t.elapsed();
        components.push(kcm.expect("starting kube-controller-manager"));
        components.push(scheduler.expect("starting kube-scheduler"));

        // The kubelet, as its node; its runner image is the test build's gantry-runner.
        let t = Instant::now();
        let runner_root = root.join("images/runner");
        std::fs::create_dir_all(runner_root.join("usr/local/bin")).expect("runner image root");
        std::os::unix::fs::symlink(
            crate::runner_bin(),
            runner_root.join("usr/local/bin/gantry-runner"),
        )
        .expect("runner in its image");
        // A caller's own mapping (a benchmark's release runner) wins.
        options
            .images
            .roots
            .entry(crate::kube::RUNNER_IMAGE.to_owned())
            .or_insert(runner_root);
        let kubelet = Kubelet::start(
            kubeconfig::client(&node_kubeconfig).await,
            root.join("pods"),
            &kubelet_serving,
            options.kubelet,
            options.images,
            port,
        )
        .await;
        let mut plane = ControlPlane {
            kubelet,
            components,
            client,
            port,
            apiserver: ApiserverCommand {
                program: apiserver_bin,
                args: apiserver_args,
                log: apiserver_log,
            },
            etcd_socket: socket,
            pki,
            startup: Startup::default(),
            dir,
        };
        let service_accounts: Api<ServiceAccount> =
            Api::namespaced(plane.client.clone(), "default");
        let accounts = &service_accounts;
        plane
            .wait_until(
                "the default ServiceAccount (the controllers run)",
                || async move { accounts.get_opt("default").await.ok().flatten().is_some() },
            )
            .await;
        startup.controllers = t.elapsed();
        let t = Instant::now();
        let nodes: Api<Node> = Api::all(plane.client.clone());
        let (nodes, name) = (&nodes, &node);
        plane
            .wait_until(&format!("node {node} to be schedulable"), || async move {
                nodes
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|n| kubelet::node_schedulable(&n))
            })
            .await;
        startup.node = t.elapsed();
        startup.total = began.elapsed();
        plane.startup = startup;
        plane
    }

    /// Polls `ready` until it holds, failing with the logs of whichever component died.
    async fn wait_until<F: Future<Output = bool>>(&mut self, what: &str, ready: impl Fn() -> F) {
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            if ready().await {
                return;
            }
            for component in &mut self.components {
                if let Err(e) = component.check_alive() {
                    panic!("waiting for {what}: {e}");
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let tails: Vec<String> = self
                    .components
                    .iter()
                    .map(|c| format!("--- {}:\n{}", c.name, c.log_tail(15)))
                    .collect();
                panic!("{what}: not within {START_LIMIT:?}\n{}", tails.join("\n"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills kube-apiserver (SIGKILL: every connection to it breaks at once, watches
    /// included, as when its machine dies). Nothing reaches the cluster until
    /// [`ControlPlane::start_apiserver`]; etcd goes on running.
    pub fn kill_apiserver(&mut self) {
        let at = self
            .components
            .iter()
            .position(|c| c.name == "kube-apiserver")
            .expect("kube-apiserver runs");
        // Dropping it kills its process group and reaps it: the port is free afterwards.
        drop(self.components.remove(at));
    }

    /// Starts kube-apiserver again after [`ControlPlane::kill_apiserver`], with the same
    /// flags on the same port, and returns once it is ready, with how long that took. The
    /// other components and every client (the kubelet's, engines') reconnect by themselves.
    pub async fn start_apiserver(&mut self) -> Duration {
        let began = Instant::now();
        assert!(
            self.components.iter().all(|c| c.name != "kube-apiserver"),
            "kube-apiserver is already running"
        );
        let command = &self.apiserver;
        let child = component::command(&command.program, &command.args, &command.log)
            .spawn()
            .expect("start kube-apiserver again");
        // Right after etcd, where it was: the components stop in reverse order.
        self.components.insert(
            1,
            Component::new("kube-apiserver", child, command.log.clone()),
        );
        if let Err(e) = apiserver_ready(&self.client).await {
            let apiserver = &mut self.components[1];
            panic!(
                "kube-apiserver started again: {e}; {:?}\n{}",
                apiserver.check_alive(),
                apiserver.log_tail(30)
            );
        }
        began.elapsed()
    }

    /// etcd's current revision (the newest resourceVersion anything in the cluster has).
    pub async fn etcd_revision(&self) -> i64 {
        etcd::revision(&self.etcd_socket).await
    }

    /// Advances etcd's revision by two writes of a key of the test's own (outside
    /// `/registry/`: the API server never sees it), then compacts etcd to that revision,
    /// which it returns. Every resourceVersion anything has seen so far is then gone: a
    /// watch the API server serves from etcd (see [`Options::apiserver_args`]) that resumes
    /// from one ends at once with 410 Gone (`Expired`, "The resourceVersion for the provided
    /// watch is too old."). With the API server killed meanwhile nothing else writes, so
    /// that holds for every watch there was.
    pub async fn compact_etcd(&self) -> i64 {
        // Two: a watch from resourceVersion R resumes at revision R + 1.
        for _ in 0..2 {
            etcd::put(&self.etcd_socket, "/gantry-test/compaction", "advance").await;
        }
        let revision = self.etcd_revision().await;
        etcd::compact(&self.etcd_socket, revision).await;
        revision
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The kubeconfig of an administrator (group `system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// A client as the administrator.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    pub fn kubelet(&self) -> &Arc<Kubelet> {
        &self.kubelet
    }

    /// The CA every certificate here is signed by (the API server's included).
    pub fn ca(&self) -> PathBuf {
        self.pki.ca()
    }

    /// Where the components' logs are (`etcd.log`, `kube-apiserver.log`, …).
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// The audit events so far (`audit.k8s.io/v1` Events, one per request that completed):
    /// everything but the control plane's own requests. E.g. `user.username`, `verb`,
    /// `objectRef`, `requestURI`, `responseStatus.code`.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.log_dir().join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Resident memory of each component now and at its peak, in kB.
    pub fn memory_kb(&self) -> Vec<(&'static str, u64, u64)> {
        self.components
            .iter()
            .map(|c| {
                let (rss, peak) = c.memory_kb();
                (c.name, rss, peak)
            })
            .collect()
    }

    /// Runs the built kubectl (the same version as the server) as the administrator, its
    /// discovery cache in this control plane's directory.
    pub async fn kubectl(&self, args: &[&str]) -> std::process::Output {
        self.kubectl_with(&self.kubeconfig(), args, None).await
    }

    /// Runs kubectl with `kubeconfig`, `stdin` fed to it.
    pub async fn kubectl_with(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> std::process::Output {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new(bins::dir().join("kubectl"))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("KUBECACHEDIR", self.dir.path().join("kube-cache"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start kubectl");
        let mut input = child.stdin.take().expect("kubectl's stdin");
        if let Some(text) = stdin {
            input
                .write_all(text.as_bytes())
                .await
                .expect("feed kubectl");
        }
        drop(input);
        child.wait_with_output().await.expect("kubectl runs")
    }

    /// kubectl as the administrator, which must succeed; its stdout.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of `manifest` (YAML or JSON) as the administrator.
    pub async fn apply(&self, manifest: &str) {
        let out = self
            .kubectl_with(&self.kubeconfig(), &["apply", "-f", "-"], Some(manifest))
            .await;
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{manifest}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates namespace `name`, enforcing Pod Security level `pod_security` (`restricted`,
    /// `baseline`, `privileged`) when given, and waits for its `default` ServiceAccount
    /// (without it the ServiceAccount admission plugin refuses every pod there).
    pub async fn create_namespace(&self, name: &str, pod_security: Option<&str>) {
        let mut labels = json!({});
        if let Some(level) = pod_security {
            labels["pod-security.kubernetes.io/enforce"] = json!(level);
            labels["pod-security.kubernetes.io/enforce-version"] = json!("latest");
        }
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                .expect("a Namespace");
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), name);
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        while accounts.get_opt("default").await.ok().flatten().is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "namespace {name} got no default ServiceAccount within {START_LIMIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Creates ServiceAccount `namespace/name`.
    pub async fn create_service_account(&self, namespace: &str, name: &str) {
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("a ServiceAccount");
        Api::<ServiceAccount>::namespaced(self.client(), namespace)
            .create(&PostParams::default(), &account)
            .await
            .unwrap_or_else(|e| panic!("creating ServiceAccount {namespace}/{name}: {e}"));
    }

    /// Gives `who` the permissions `rules` (PolicyRules, JSON) in `namespace` only: a Role
    /// and a RoleBinding, both named `name`.
    pub async fn grant(
        &self,
        namespace: &str,
        name: &str,
        who: &Identity<'_>,
        rules: serde_json::Value,
    ) {
        let subject = match who {
            Identity::ServiceAccount { namespace, name } => {
                json!({"kind": "ServiceAccount", "name": name, "namespace": namespace})
            }
            Identity::User { name, .. } => {
                json!({"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"})
            }
        };
        let manifest = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": name, "namespace": namespace}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": name, "namespace": namespace},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
             "subjects": [subject]},
        ]});
        self.apply(&manifest.to_string()).await;
    }

    /// A kubeconfig for `who` (its context's namespace `namespace`): a bearer token from the
    /// TokenRequest API (valid an hour) for a ServiceAccount, a client certificate signed by
    /// the cluster's CA for a user.
    pub async fn kubeconfig_for(&self, who: &Identity<'_>, namespace: Option<&str>) -> PathBuf {
        let dir = self.dir.path().join("identities");
        std::fs::create_dir_all(&dir).expect("identities dir");
        match who {
            Identity::ServiceAccount {
                namespace: sa_namespace,
                name,
            } => {
                let token = self
                    .token(sa_namespace, name, Duration::from_secs(3600))
                    .await;
                let path = dir.join(format!("sa-{sa_namespace}-{name}.kubeconfig"));
                let user = format!("system:serviceaccount:{sa_namespace}:{name}");
                kubeconfig::write(
                    &path,
                    &self.server(),
                    &self.ca(),
                    &user,
                    kubeconfig::Credentials::Token(&token),
                    namespace,
                );
                path
            }
            Identity::User { name, groups } => {
                let pki = pki::Pki {
                    dir: self.pki.dir.clone(),
                };
                let pair = pki.client(&format!("user-{name}"), name, groups).await;
                let path = dir.join(format!("user-{name}.kubeconfig"));
                kubeconfig::write(
                    &path,
                    &self.server(),
                    &self.ca(),
                    name,
                    kubeconfig::Credentials::Certificate(&pair),
                    namespace,
                );
                path
            }
        }
    }

    /// A token of ServiceAccount `namespace/name` from the TokenRequest API.
    pub async fn token(&self, namespace: &str, name: &str, valid: Duration) -> String {
        let request = serde_json::from_value(json!({
            "spec": {"audiences": [], "expirationSeconds": valid.as_secs()}
        }))
        .expect("a TokenRequest");
        Api::<ServiceAccount>::namespaced(self.client(), namespace)
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("a token for {namespace}/{name}: {e}"))
            .status
            .map(|s| s.token)
            .unwrap_or_default()
    }

    /// Points an engine's configuration at this control plane with `kubeconfig`, running its
    /// stages as Jobs in `namespace` by default with the runner image the kubelet maps.
    pub fn configure(
        &self,
        config: &mut gantry::engine::Config,
        kubeconfig: &Path,
        namespace: &str,
    ) {
        use gantry::executor::kubernetes::{KubeSettings, job::JobSettings};
        config.executor = "kubernetes".into();
        config.kubernetes = Some(KubeSettings {
            kubeconfig: Some(kubeconfig.to_path_buf()),
            namespace: Some(namespace.to_owned()),
            jobs: JobSettings {
                runner_image: crate::kube::RUNNER_IMAGE.into(),
                ttl_secs: 600,
                ..JobSettings::default()
            },
            ..KubeSettings::default()
        });
    }

    /// An engine on a fresh database running its stages as Jobs in `namespace` (created here
    /// if it does not exist yet) as the administrator.
    pub async fn engine(&self, namespace: &str) -> crate::TestEngine {
        let exists = Api::<Namespace>::all(self.client())
            .get_opt(namespace)
            .await
            .ok()
            .flatten()
            .is_some();
        if !exists {
            self.create_namespace(namespace, None).await;
        }
        let kubeconfig = self.kubeconfig();
        crate::TestEngine::start_with(|c| self.configure(c, &kubeconfig, namespace)).await
    }
}

/// Who a kubeconfig is for.
pub enum Identity<'a> {
    ServiceAccount {
        namespace: &'a str,
        name: &'a str,
    },
    /// A user authenticated by a client certificate (CN the name, O the groups).
    User {
        name: &'a str,
        groups: &'a [&'a str],
    },
}
