//! The Job of one stage attempt, built by a pure function so it can be snapshot-tested and
//! validated against the Kubernetes schemas without a cluster.
//!
//! Shape (as Tekton does it): an init container copies `gantry-runner` from the runner image
//! into an emptyDir, so the stage's own image needs nothing of Gantry's; the stage container
//! runs that copy in a workspace emptyDir. Services are native sidecars (init containers with
//! `restartPolicy: Always`), which the kubelet stops once the stage container ends, so the Job
//! completes. Retries are Gantry's: `backoffLimit: 0`, `restartPolicy: Never`.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HostAlias,
    LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::executor::{PodRequest, Quantities, StartRequest};
use gantry_runner::wire;

/// Labels on everything Gantry creates; the watcher selects on the first.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "gantry";
pub const LABEL_RUN: &str = "gantry.dev/run";
pub const LABEL_STAGE: &str = "gantry.dev/stage";
pub const LABEL_ATTEMPT: &str = "gantry.dev/attempt";
pub const LABEL_PROJECT: &str = "gantry.dev/project";
pub const LABEL_PIPELINE: &str = "gantry.dev/pipeline";
/// Stage keys (`test[os=linux]`) are not valid label values: they go in an annotation.
pub const ANNOTATION_STAGE_KEY: &str = "gantry.dev/stage-key";
/// The label the Job controller puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// The stage container's name; failures are reported against it.
pub const STAGE_CONTAINER: &str = "stage";
pub const INSTALL_CONTAINER: &str = "gantry-runner";
/// Where the runner image keeps the binary, and where the stage container finds its copy.
pub const RUNNER_IN_IMAGE: &str = "/usr/local/bin/gantry-runner";
pub const RUNNER_DIR: &str = "/gantry/bin";
pub const WORKSPACE: &str = "/workspace";

/// A Job may outlive the stage timeout this much: the runner stops a late stage itself and
/// reports it; the deadline is only the backstop for a runner that cannot.
pub const DEADLINE_GRACE_SECS: u64 = 60;
/// The timeout of a stage that sets none, for its Job's `activeDeadlineSeconds` (a pod that
/// can never start must not wait forever); the same bound the engine puts on its token.
pub const DEFAULT_TIMEOUT_SECS: u64 = 24 * 3600;
/// Who stage containers run as unless `kubernetes.security_context` says otherwise: any
/// non-root id passes Pod Security `restricted`, and a numeric one lets the kubelet check it
/// without reading the image's user.
pub const DEFAULT_UID: i64 = 1000;
/// The runner-installing init container's user: fixed and non-root whatever the stage's
/// (it only copies a file into an emptyDir); 65532 is the conventional "nonroot".
pub const INSTALL_UID: i64 = 65532;
/// The home directory of a non-root stage user (images have no passwd entry for it).
pub const HOME_DIR: &str = "/gantry/home";

/// Engine-wide settings that shape every Job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSettings {
    /// Where Jobs go unless the pipeline names a namespace.
    pub namespace: String,
    /// The image holding `gantry-runner` (built by `gantry images build-runner`).
    pub runner_image: String,
    /// The stage image when a `steps` stage names none.
    pub default_image: String,
    /// Finished Jobs are deleted by Kubernetes after this long.
    pub ttl_secs: i32,
    /// The runner's SIGTERM-to-SIGKILL grace for steps; the pod gets a little more.
    pub kill_grace_secs: u64,
    pub image_pull_policy: Option<String>,
    /// How long a pod may wait to start (for a node, then for its images) before the engine
    /// gives up on it: added to the stage's timeout for the Job's deadline, since the
    /// deadline counts from the Job's start and the timeout from the runner's.
    pub start_allowance_secs: u64,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            namespace: "default".into(),
            runner_image: "gantry-runner:latest".into(),
            default_image: "debian:bookworm-slim".into(),
            ttl_secs: 3600,
            kill_grace_secs: 10,
            image_pull_policy: None,
            start_allowance_secs: 600,
        }
    }
}

/// `gantry-<stage run>-<attempt>`: unique per attempt, so a retry never meets the Job of the
/// attempt before it, and short enough for the `job-name` label its pods get.
pub fn job_name(stage_run_id: i64, attempt: i32) -> String {
    format!("gantry-{stage_run_id}-{attempt}")
}

pub fn namespace_for(pod: &PodRequest, settings: &JobSettings) -> String {
    pod.kubernetes
        .namespace
        .clone()
        .unwrap_or_else(|| settings.namespace.clone())
}

fn labels(request: &StartRequest, pod: &PodRequest) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (LABEL_RUN.to_owned(), request.run_id.to_string()),
        (LABEL_STAGE.to_owned(), request.stage_run_id.to_string()),
        (LABEL_ATTEMPT.to_owned(), request.attempt.to_string()),
    ]);
    // Project and pipeline names follow label-value rules (the pipeline format enforces it).
    if !pod.project.is_empty() {
        labels.insert(LABEL_PROJECT.to_owned(), pod.project.clone());
    }
    if !pod.pipeline.is_empty() {
        labels.insert(LABEL_PIPELINE.to_owned(), pod.pipeline.clone());
    }
    labels
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn quantities(q: &Quantities) -> Option<BTreeMap<String, Quantity>> {
    let mut out = BTreeMap::new();
    if let Some(cpu) = &q.cpu {
        out.insert("cpu".to_owned(), Quantity(cpu.clone()));
    }
    if let Some(memory) = &q.memory {
        out.insert("memory".to_owned(), Quantity(memory.clone()));
    }
    (!out.is_empty()).then_some(out)
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The pod's security context: Gantry's defaults (Pod Security `restricted`) under what the
/// pipeline asked for. A pipeline asking for user 0 gets root, not a refusal to start.
fn pod_security(asked: &crate::pipeline::SecurityContext) -> PodSecurityContext {
    let user = asked.run_as_user.unwrap_or(DEFAULT_UID);
    let root = user == 0;
    let group = asked
        .run_as_group
        .unwrap_or(if root { 0 } else { DEFAULT_UID });
    let seccomp = match asked.seccomp_profile.as_deref() {
        Some(profile) => match profile.strip_prefix("Localhost/") {
            Some(path) => SeccompProfile {
                type_: "Localhost".to_owned(),
                localhost_profile: Some(path.to_owned()),
            },
            None => SeccompProfile {
                type_: profile.to_owned(),
                localhost_profile: None,
            },
        },
        None => SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        },
    };
    PodSecurityContext {
        run_as_user: Some(user),
        run_as_group: Some(group),
        // The workspace and home emptyDirs are group-owned by it, so the stage user can write.
        fs_group: Some(asked.fs_group.unwrap_or(group)),
        run_as_non_root: Some(asked.run_as_non_root.unwrap_or(!root)),
        seccomp_profile: Some(seccomp),
        ..PodSecurityContext::default()
    }
}

/// Every container's security context: no privilege escalation and no capabilities but those
/// asked for, unless the pipeline asks for a privileged container.
fn container_security(asked: &crate::pipeline::SecurityContext) -> SecurityContext {
    let privileged = asked.privileged == Some(true);
    SecurityContext {
        privileged: privileged.then_some(true),
        // The API server refuses `privileged` with `allowPrivilegeEscalation: false`.
        allow_privilege_escalation: Some(asked.allow_privilege_escalation.unwrap_or(privileged)),
        capabilities: (!privileged).then(|| Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: (!asked.capabilities.is_empty()).then(|| asked.capabilities.clone()),
        }),
        ..SecurityContext::default()
    }
}

/// The Job for one attempt of a stage.
pub fn job_for(request: &StartRequest, pod: &PodRequest, settings: &JobSettings) -> Job {
    let labels = labels(request, pod);
    let annotations = BTreeMap::from([(ANNOTATION_STAGE_KEY.to_owned(), request.key.clone())]);
    let pull_policy = settings.image_pull_policy.clone();
    let asked = &pod.kubernetes.security_context;
    let security = container_security(asked);
    let stage_uid = asked.run_as_user.unwrap_or(DEFAULT_UID);

    let install = Container {
        name: INSTALL_CONTAINER.to_owned(),
        image: Some(settings.runner_image.clone()),
        image_pull_policy: pull_policy.clone(),
        command: Some(vec![
            RUNNER_IN_IMAGE.to_owned(),
            "install".to_owned(),
            format!("{RUNNER_DIR}/gantry-runner"),
        ]),
        volume_mounts: Some(vec![mount("gantry-bin", RUNNER_DIR, false)]),
        resources: Some(ResourceRequirements {
            requests: quantities(&Quantities {
                cpu: Some("10m".into()),
                memory: Some("16Mi".into()),
            }),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(INSTALL_UID),
            run_as_group: Some(INSTALL_UID),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let sidecars = pod.services.iter().map(|service| Container {
        name: service.name.clone(),
        image: Some(service.image.clone()),
        image_pull_policy: pull_policy.clone(),
        // A service's `command` replaces the image's default arguments (CMD), as in Compose.
        args: service.command.clone(),
        env: (!service.env.is_empty())
            .then(|| service.env.iter().map(|(k, v)| env(k, v.clone())).collect()),
        ports: (!service.ports.is_empty()).then(|| {
            service
                .ports
                .iter()
                .map(|&(port, udp)| ContainerPort {
                    container_port: i32::from(port),
                    protocol: Some(if udp { "UDP" } else { "TCP" }.to_owned()),
                    ..ContainerPort::default()
                })
                .collect()
        }),
        // A native sidecar: started before the stage container, stopped after it.
        restart_policy: Some("Always".to_owned()),
        security_context: Some(security.clone()),
        ..Container::default()
    });
    let mut init_containers = vec![install];
    init_containers.extend(sidecars);

    let mut stage_env = vec![
        env(wire::ENV_ENGINE_URL, request.engine_url.clone()),
        env(wire::ENV_TOKEN, request.token.clone()),
        env(wire::ENV_WORKSPACE, WORKSPACE),
        env(
            "GANTRY_RUNNER_KILL_GRACE_SECS",
            settings.kill_grace_secs.to_string(),
        ),
    ];
    if stage_uid != 0 {
        stage_env.push(env("HOME", HOME_DIR));
    }
    for secret in &pod.kubernetes.secret_env {
        stage_env.push(EnvVar {
            name: secret.env.clone(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.secret.clone(),
                    key: secret.key.clone(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    let resources = ResourceRequirements {
        requests: quantities(&pod.requests),
        limits: quantities(&pod.limits),
        ..ResourceRequirements::default()
    };
    let stage = Container {
        name: STAGE_CONTAINER.to_owned(),
        image: Some(
            pod.image
                .clone()
                .unwrap_or_else(|| settings.default_image.clone()),
        ),
        image_pull_policy: pull_policy,
        command: Some(vec![format!("{RUNNER_DIR}/gantry-runner")]),
        env: Some(stage_env),
        working_dir: Some(WORKSPACE.to_owned()),
        volume_mounts: Some(vec![
            mount("gantry-bin", RUNNER_DIR, true),
            mount("workspace", WORKSPACE, false),
            mount("home", HOME_DIR, false),
        ]),
        resources: (resources.requests.is_some() || resources.limits.is_some())
            .then_some(resources),
        security_context: Some(security),
        ..Container::default()
    };

    let options = &pod.kubernetes;
    let tolerations: Vec<Toleration> = options
        .tolerations
        .iter()
        .map(|t| Toleration {
            key: t.key.clone(),
            operator: t.operator.clone(),
            value: t.value.clone(),
            effect: t.effect.clone(),
            toleration_seconds: t.toleration_seconds,
        })
        .collect();
    let spec = PodSpec {
        restart_policy: Some("Never".to_owned()),
        init_containers: Some(init_containers),
        containers: vec![stage],
        volumes: Some(vec![
            Volume {
                name: "gantry-bin".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
            Volume {
                name: "workspace".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
            Volume {
                name: "home".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]),
        security_context: Some(pod_security(asked)),
        // Steps reach services by name, as documented; in one pod they share localhost.
        host_aliases: (!pod.services.is_empty()).then(|| {
            vec![HostAlias {
                ip: "127.0.0.1".to_owned(),
                hostnames: Some(pod.services.iter().map(|s| s.name.clone()).collect()),
            }]
        }),
        service_account_name: options.service_account.clone(),
        // Steps get no API token unless the pipeline asks for a service account.
        automount_service_account_token: Some(options.service_account.is_some()),
        enable_service_links: Some(false),
        node_selector: (!options.node_selector.is_empty())
            .then(|| options.node_selector.iter().cloned().collect()),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        image_pull_secrets: (!options.image_pull_secrets.is_empty()).then(|| {
            options
                .image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        termination_grace_period_seconds: Some(
            i64::try_from(settings.kill_grace_secs + 5).unwrap_or(30),
        ),
        ..PodSpec::default()
    };

    Job {
        metadata: ObjectMeta {
            name: Some(job_name(request.stage_run_id, request.attempt)),
            namespace: Some(namespace_for(pod, settings)),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            // Always set: a pod that can never start would otherwise wait forever.
            active_deadline_seconds: i64::try_from(
                pod.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS)
                    + settings.start_allowance_secs
                    + DEADLINE_GRACE_SECS,
            )
            .ok(),
            ttl_seconds_after_finished: Some(settings.ttl_secs),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(spec),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::executor::ServiceRequest;
    use crate::pipeline::{KubeSecretEnv, KubernetesOptions, Toleration as Tol};

    /// A stage with everything a Job can carry, for the snapshot and schema checks.
    pub fn full_example() -> (StartRequest, PodRequest, JobSettings) {
        let request = StartRequest {
            stage_run_id: 42,
            attempt: 2,
            run_id: 7,
            key: "test[os=linux]".into(),
            engine_url: "http://gantry.gantry.svc:8080".into(),
            token: "tok".into(),
            pod: None,
        };
        let pod = PodRequest {
            project: "default".into(),
            pipeline: "web".into(),
            image: Some("rust:1.80".into()),
            timeout_secs: Some(600),
            requests: Quantities {
                cpu: Some("500m".into()),
                memory: Some("1Gi".into()),
            },
            limits: Quantities {
                cpu: Some("2".into()),
                memory: Some("4Gi".into()),
            },
            services: vec![ServiceRequest {
                name: "postgres".into(),
                image: "postgres:16".into(),
                env: vec![("POSTGRES_PASSWORD".into(), "test".into())],
                command: Some(vec!["postgres".into(), "-c".into(), "fsync=off".into()]),
                ports: vec![(5432, false)],
            }],
            kubernetes: KubernetesOptions {
                namespace: Some("ci".into()),
                service_account: Some("builder".into()),
                node_selector: vec![("disktype".into(), "ssd".into())],
                tolerations: vec![Tol {
                    key: Some("dedicated".into()),
                    operator: Some("Equal".into()),
                    value: Some("ci".into()),
                    effect: Some("NoSchedule".into()),
                    toleration_seconds: None,
                }],
                image_pull_secrets: vec!["regcred".into()],
                secret_env: vec![KubeSecretEnv {
                    env: "AWS_ACCESS_KEY_ID".into(),
                    secret: "aws".into(),
                    key: "access-key".into(),
                }],
                security_context: crate::pipeline::SecurityContext {
                    capabilities: vec!["NET_BIND_SERVICE".into()],
                    ..crate::pipeline::SecurityContext::default()
                },
            },
        };
        let settings = JobSettings {
            runner_image: "registry.example.com/gantry/runner:0.1.0".into(),
            ..JobSettings::default()
        };
        (request, pod, settings)
    }

    #[test]
    fn a_stage_becomes_one_job_with_the_runner_copied_in() {
        let (request, pod, settings) = full_example();
        let job = job_for(&request, &pod, &settings);
        assert_eq!(job.metadata.name.as_deref(), Some("gantry-42-2"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("ci"));
        let spec = job.spec.as_ref().expect("spec");
        assert_eq!(spec.backoff_limit, Some(0));
        // The stage's 600 s, the default start allowance (600 s) and the grace.
        assert_eq!(spec.active_deadline_seconds, Some(1260));
        let pod_spec = spec.template.spec.as_ref().expect("pod spec");
        assert_eq!(pod_spec.restart_policy.as_deref(), Some("Never"));
        let init = pod_spec.init_containers.as_ref().expect("init");
        assert_eq!(init[0].name, INSTALL_CONTAINER);
        assert_eq!(init[1].restart_policy.as_deref(), Some("Always"));
        assert_eq!(pod_spec.containers[0].image.as_deref(), Some("rust:1.80"));
    }

    #[test]
    fn job_matches_its_snapshot() {
        let (request, pod, settings) = full_example();
        let job = job_for(&request, &pod, &settings);
        let text = serde_json::to_string_pretty(&job).expect("serialises") + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/kubernetes/job-full.json");
        if std::env::var_os("GANTRY_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, &text).expect("bless");
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (GANTRY_BLESS=1 writes it)", path.display()));
        assert_eq!(
            text, expected,
            "the Job changed; review and GANTRY_BLESS=1 to accept"
        );
    }

    #[test]
    fn a_minimal_stage_gets_defaults_and_no_api_token() {
        let (request, _, settings) = full_example();
        let job = job_for(&request, &PodRequest::default(), &settings);
        let spec = job.spec.expect("spec");
        assert_eq!(
            spec.active_deadline_seconds,
            Some(24 * 3600 + 600 + 60),
            "a stage without a timeout still gets a deadline"
        );
        let pod_spec = spec.template.spec.expect("pod spec");
        assert_eq!(restricted_violations(&pod_spec), Vec::<String>::new());
        assert_eq!(
            pod_spec
                .security_context
                .as_ref()
                .and_then(|c| c.run_as_user),
            Some(DEFAULT_UID)
        );
        assert_eq!(pod_spec.automount_service_account_token, Some(false));
        assert_eq!(
            pod_spec.containers[0].image.as_deref(),
            Some(settings.default_image.as_str())
        );
        assert!(pod_spec.host_aliases.is_none());
        assert_eq!(job.metadata.namespace.as_deref(), Some("default"));
    }

    /// Pod Security Standards `restricted` (v1.30+ rules), the checks a Gantry Job could fail.
    /// The real admission plugin judges the Jobs in the control-plane tests; this keeps the
    /// feedback in the unit tests too.
    fn restricted_violations(spec: &PodSpec) -> Vec<String> {
        let mut out = Vec::new();
        let pod = spec.security_context.clone().unwrap_or_default();
        let pod_seccomp = pod.seccomp_profile.as_ref().map(|p| p.type_.clone());
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers);
        for c in containers {
            let sc = c.security_context.clone().unwrap_or_default();
            if sc.run_as_non_root.or(pod.run_as_non_root) != Some(true) {
                out.push(format!("{}: runAsNonRoot", c.name));
            }
            if sc.run_as_user.or(pod.run_as_user) == Some(0) {
                out.push(format!("{}: runAsUser 0", c.name));
            }
            if sc.allow_privilege_escalation != Some(false) {
                out.push(format!("{}: allowPrivilegeEscalation", c.name));
            }
            if sc.privileged == Some(true) {
                out.push(format!("{}: privileged", c.name));
            }
            let caps = sc.capabilities.clone().unwrap_or_default();
            if !caps.drop.iter().flatten().any(|d| d == "ALL") {
                out.push(format!("{}: capabilities not dropped", c.name));
            }
            if caps.add.iter().flatten().any(|a| a != "NET_BIND_SERVICE") {
                out.push(format!("{}: capabilities added", c.name));
            }
            let seccomp = sc
                .seccomp_profile
                .as_ref()
                .map(|p| p.type_.clone())
                .or(pod_seccomp.clone());
            if !matches!(seccomp.as_deref(), Some("RuntimeDefault" | "Localhost")) {
                out.push(format!("{}: seccomp", c.name));
            }
        }
        for v in spec.volumes.iter().flatten() {
            if v.empty_dir.is_none() && v.secret.is_none() && v.config_map.is_none() {
                out.push(format!("volume {}: type", v.name));
            }
        }
        out
    }

    #[test]
    fn jobs_pass_pod_security_restricted_unless_asked_otherwise() {
        let (request, pod, settings) = full_example();
        let job = job_for(&request, &pod, &settings);
        let spec = job.spec.and_then(|s| s.template.spec).expect("pod spec");
        assert_eq!(restricted_violations(&spec), Vec::<String>::new());
        let install = &spec.init_containers.as_ref().expect("init")[0];
        let install_sc = install.security_context.as_ref().expect("install context");
        assert_eq!(install_sc.run_as_user, Some(INSTALL_UID));

        // An image that needs root says so, and gets it.
        let mut root = pod.clone();
        root.kubernetes.security_context = crate::pipeline::SecurityContext {
            run_as_user: Some(0),
            ..crate::pipeline::SecurityContext::default()
        };
        let spec = job_for(&request, &root, &settings)
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod spec");
        let pod_sc = spec.security_context.clone().expect("pod context");
        assert_eq!(pod_sc.run_as_user, Some(0));
        assert_eq!(pod_sc.run_as_group, Some(0));
        assert_eq!(pod_sc.run_as_non_root, Some(false));
        let stage_env = spec.containers[0].env.clone().unwrap_or_default();
        assert!(
            !stage_env.iter().any(|e| e.name == "HOME"),
            "root keeps the image's HOME"
        );
        // The install container stays non-root whatever the stage asks.
        let install_sc = spec.init_containers.as_ref().expect("init")[0]
            .security_context
            .clone()
            .expect("install context");
        assert_eq!(install_sc.run_as_non_root, Some(true));

        let mut privileged = pod;
        privileged.kubernetes.security_context.privileged = Some(true);
        let spec = job_for(&request, &privileged, &settings)
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod spec");
        let stage_sc = spec.containers[0].security_context.clone().expect("stage");
        assert_eq!(stage_sc.privileged, Some(true));
        assert_eq!(stage_sc.allow_privilege_escalation, Some(true));
        assert!(stage_sc.capabilities.is_none());
    }
}
