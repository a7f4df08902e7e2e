//! The typed pipeline model: what a `.gantry.yaml` file means once decoded.
//!
//! Everything the scheduler, executors and UI read comes from these types; positions are
//! kept on the values that later checks may need to blame.

use std::time::Duration;

use super::condition::Condition;
use super::template::Template;
use super::yaml::Pos;

/// A value together with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> Spanned<T> {
    pub fn new(value: T, pos: Pos) -> Self {
        Spanned { value, pos }
    }
}

/// Environment variables in the order written. Values may use `${{ ... }}`.
pub type Env = Vec<(Spanned<String>, Template)>;

#[derive(Clone, Debug)]
pub struct Pipeline {
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub env: Env,
    pub params: Vec<Param>,
    pub on: Triggers,
    pub stages: Vec<Stage>,
    /// Stages that run after all others have ended, whatever their outcome.
    pub finally: Vec<Stage>,
    pub concurrency: Option<Concurrency>,
    /// Where and how stages run when the engine runs them as Kubernetes Jobs.
    pub kubernetes: KubernetesOptions,
}

/// The `kubernetes:` section of a pipeline or a stage: what a stage's Job gets. A stage's
/// section adds to the pipeline's (its values win); `namespace` is the pipeline's only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KubernetesOptions {
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    pub node_selector: Vec<(String, String)>,
    pub tolerations: Vec<Toleration>,
    pub image_pull_secrets: Vec<String>,
    /// Environment variables taken from Kubernetes Secrets by the kubelet (the values never
    /// pass through Gantry).
    pub secret_env: Vec<KubeSecretEnv>,
    /// Who the Job's containers run as, where Gantry's defaults (which pass Pod Security
    /// `restricted`) do not suit the image.
    pub security_context: SecurityContext,
}

/// `kubernetes.security_context`. Unset fields keep Gantry's defaults: user and group 1000,
/// no root, no privilege escalation, every capability dropped, the runtime's seccomp profile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecurityContext {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub fs_group: Option<i64>,
    pub run_as_non_root: Option<bool>,
    pub allow_privilege_escalation: Option<bool>,
    pub privileged: Option<bool>,
    /// Capabilities added back after dropping them all (`NET_BIND_SERVICE`).
    pub capabilities: Vec<String>,
    /// `RuntimeDefault`, `Unconfined` or `Localhost/<profile>`.
    pub seccomp_profile: Option<String>,
}

impl SecurityContext {
    /// `self` with the fields `over` sets replacing its own.
    pub fn merged(&self, over: &SecurityContext) -> SecurityContext {
        SecurityContext {
            run_as_user: over.run_as_user.or(self.run_as_user),
            run_as_group: over.run_as_group.or(self.run_as_group),
            fs_group: over.fs_group.or(self.fs_group),
            run_as_non_root: over.run_as_non_root.or(self.run_as_non_root),
            allow_privilege_escalation: over
                .allow_privilege_escalation
                .or(self.allow_privilege_escalation),
            privileged: over.privileged.or(self.privileged),
            capabilities: if over.capabilities.is_empty() {
                self.capabilities.clone()
            } else {
                over.capabilities.clone()
            },
            seccomp_profile: over
                .seccomp_profile
                .clone()
                .or_else(|| self.seccomp_profile.clone()),
        }
    }
}

impl KubernetesOptions {
    /// The pipeline's options with a stage's on top.
    pub fn merged(&self, stage: &KubernetesOptions) -> KubernetesOptions {
        let mut out = self.clone();
        if stage.service_account.is_some() {
            out.service_account = stage.service_account.clone();
        }
        for (k, v) in &stage.node_selector {
            out.node_selector.retain(|(key, _)| key != k);
            out.node_selector.push((k.clone(), v.clone()));
        }
        out.tolerations.extend(stage.tolerations.iter().cloned());
        for secret in &stage.image_pull_secrets {
            if !out.image_pull_secrets.contains(secret) {
                out.image_pull_secrets.push(secret.clone());
            }
        }
        for env in &stage.secret_env {
            out.secret_env.retain(|e| e.env != env.env);
            out.secret_env.push(env.clone());
        }
        out.security_context = self.security_context.merged(&stage.security_context);
        out
    }
}

/// A Kubernetes toleration, as the Pod API spells it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Toleration {
    pub key: Option<String>,
    /// `Equal` or `Exists`.
    pub operator: Option<String>,
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: Option<String>,
    pub toleration_seconds: Option<i64>,
}

/// `VAR: secret-name/key`.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeSecretEnv {
    pub env: String,
    pub secret: String,
    pub key: String,
}

/// Runs in the same group never overlap: a newer run either waits for the older ones or, with
/// `cancel_in_progress`, cancels them.
#[derive(Clone, Debug)]
pub struct Concurrency {
    /// Rendered per run, e.g. `${{ git.branch }}`.
    pub group: Template,
    pub cancel_in_progress: bool,
}

impl Pipeline {
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name.value == name)
    }
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub kind: ParamKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ParamKind {
    String {
        default: Option<String>,
    },
    Bool {
        default: Option<bool>,
    },
    Choice {
        options: Vec<String>,
        default: Option<String>,
    },
}

impl ParamKind {
    /// The default as text (params reach steps as strings), if any.
    pub fn default_text(&self) -> Option<String> {
        match self {
            ParamKind::String { default } | ParamKind::Choice { default, .. } => default.clone(),
            ParamKind::Bool { default } => default.map(|b| b.to_string()),
        }
    }
}

/// The `on:` section. A pipeline without `on:` can only be started by hand.
#[derive(Clone, Debug, Default)]
pub struct Triggers {
    pub push: Option<PushTrigger>,
    pub pull_request: Option<PullRequestTrigger>,
    pub schedule: Vec<ScheduleTrigger>,
    pub manual: bool,
    pub webhook: Option<WebhookTrigger>,
}

/// A compiled glob with the text it came from.
#[derive(Clone, Debug)]
pub struct Glob {
    pub pattern: Spanned<String>,
    pub matcher: globset::GlobMatcher,
}

impl Glob {
    pub fn is_match(&self, candidate: &str) -> bool {
        self.matcher.is_match(candidate)
    }
}

/// Positive globs filtered by negative ones. Empty `include` matches everything.
fn filter_matches(include: &[Glob], exclude: &[Glob], candidate: &str) -> bool {
    (include.is_empty() || include.iter().any(|g| g.is_match(candidate)))
        && !exclude.iter().any(|g| g.is_match(candidate))
}

/// Whether a change to `changed` files passes `paths` / `paths_ignore`: with `paths`, at least
/// one file must match; with only `paths_ignore`, at least one file must not be ignored.
fn paths_match(paths: &[Glob], paths_ignore: &[Glob], changed: &[&str]) -> bool {
    if paths.is_empty() && paths_ignore.is_empty() {
        return true;
    }
    changed
        .iter()
        .any(|file| filter_matches(paths, paths_ignore, file))
}

#[derive(Clone, Debug, Default)]
pub struct PushTrigger {
    pub branches: Vec<Glob>,
    pub branches_ignore: Vec<Glob>,
    pub tags: Vec<Glob>,
    pub tags_ignore: Vec<Glob>,
    pub paths: Vec<Glob>,
    pub paths_ignore: Vec<Glob>,
}

impl PushTrigger {
    fn filters_branches(&self) -> bool {
        !self.branches.is_empty() || !self.branches_ignore.is_empty()
    }

    fn filters_tags(&self) -> bool {
        !self.tags.is_empty() || !self.tags_ignore.is_empty()
    }

    /// A push to `branch`. When only tag filters are given, branch pushes do not trigger.
    pub fn matches_branch(&self, branch: &str, changed: &[&str]) -> bool {
        if self.filters_tags() && !self.filters_branches() {
            return false;
        }
        filter_matches(&self.branches, &self.branches_ignore, branch)
            && paths_match(&self.paths, &self.paths_ignore, changed)
    }

    /// Whether the branch filters alone pass `branch` (paths aside): for saying why not.
    pub fn matches_branch_name(&self, branch: &str) -> bool {
        (self.filters_branches() || !self.filters_tags())
            && filter_matches(&self.branches, &self.branches_ignore, branch)
    }

    /// A pushed tag. When only branch filters are given, tag pushes do not trigger.
    /// Path filters do not apply to tags (a tag has no "changed files").
    pub fn matches_tag(&self, tag: &str) -> bool {
        if self.filters_branches() && !self.filters_tags() {
            return false;
        }
        filter_matches(&self.tags, &self.tags_ignore, tag)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullRequestAction {
    Opened,
    Synchronize,
    Reopened,
    Closed,
    Edited,
    Labeled,
}

impl PullRequestAction {
    pub const ALL: [(&'static str, PullRequestAction); 6] = [
        ("opened", PullRequestAction::Opened),
        ("synchronize", PullRequestAction::Synchronize),
        ("reopened", PullRequestAction::Reopened),
        ("closed", PullRequestAction::Closed),
        ("edited", PullRequestAction::Edited),
        ("labeled", PullRequestAction::Labeled),
    ];
    pub const DEFAULT: [PullRequestAction; 3] = [
        PullRequestAction::Opened,
        PullRequestAction::Synchronize,
        PullRequestAction::Reopened,
    ];
}

#[derive(Clone, Debug)]
pub struct PullRequestTrigger {
    /// Globs over the target (base) branch.
    pub branches: Vec<Glob>,
    pub branches_ignore: Vec<Glob>,
    pub types: Vec<PullRequestAction>,
    pub paths: Vec<Glob>,
    pub paths_ignore: Vec<Glob>,
    /// Pull requests from forks get no secrets unless this is set.
    pub secrets_for_forks: bool,
}

impl PullRequestTrigger {
    /// Whether the target-branch filters alone pass `target` (action and paths aside).
    pub fn targets(&self, target: &str) -> bool {
        filter_matches(&self.branches, &self.branches_ignore, target)
    }

    pub fn matches(&self, action: PullRequestAction, target: &str, changed: &[&str]) -> bool {
        self.types.contains(&action)
            && filter_matches(&self.branches, &self.branches_ignore, target)
            && paths_match(&self.paths, &self.paths_ignore, changed)
    }
}

#[derive(Clone, Debug)]
pub struct ScheduleTrigger {
    pub cron: Spanned<String>,
    pub schedule: croner::Cron,
    pub timezone: chrono_tz::Tz,
    /// The branch whose pipeline file and head commit a scheduled run uses.
    pub branch: Option<String>,
    pub params: Vec<(Spanned<String>, String)>,
}

#[derive(Clone, Debug)]
pub struct WebhookTrigger {
    /// Name of the Gantry secret holding the token callers must present.
    pub secret: Spanned<String>,
}

#[derive(Clone, Debug)]
pub struct Stage {
    pub name: Spanned<String>,
    pub pos: Pos,
    /// `None`: follows the stage above it. `Some(vec![])`: starts at once.
    pub needs: Option<Vec<Spanned<String>>>,
    pub when: Option<Condition>,
    pub image: Option<Template>,
    pub env: Env,
    pub kind: StageKind,
    pub timeout: Option<Spanned<Duration>>,
    pub retries: u32,
    pub resources: Resources,
    pub services: Vec<Service>,
    pub matrix: Option<Matrix>,
    pub artifacts: Vec<Spanned<String>>,
    pub cache: Option<Cache>,
    pub secrets: Vec<SecretRef>,
    pub approval: Option<Approval>,
    pub allow_failure: bool,
    pub kubernetes: KubernetesOptions,
}

#[derive(Clone, Debug)]
pub enum StageKind {
    Steps(Vec<Step>),
    S2i(S2i),
    B2i(B2i),
    Deploy(Deploy),
    /// Only an approval gate: nothing runs, the stage succeeds once approved.
    Gate,
}

impl StageKind {
    pub fn label(&self) -> &'static str {
        match self {
            StageKind::Steps(_) => "steps",
            StageKind::S2i(_) => "s2i",
            StageKind::B2i(_) => "b2i",
            StageKind::Deploy(_) => "deploy",
            StageKind::Gate => "approval",
        }
    }

    /// Stages whose kind failed to decode are kept as empty `steps` so cross-stage checks still
    /// run; a valid pipeline never has one (`steps: []` is rejected).
    pub fn is_placeholder(&self) -> bool {
        matches!(self, StageKind::Steps(steps) if steps.is_empty())
    }

    /// The image a stage of this kind produces, for `${{ stages.NAME.image }}`.
    pub fn produces_image(&self) -> bool {
        matches!(self, StageKind::S2i(_) | StageKind::B2i(_))
    }
}

#[derive(Clone, Debug)]
pub struct Step {
    pub name: Option<String>,
    pub pos: Pos,
    /// A shell script, run with `sh -e`. Never interpolated.
    pub run: String,
    pub env: Env,
    pub timeout: Option<Spanned<Duration>>,
}

#[derive(Clone, Debug)]
pub struct S2i {
    pub builder: Template,
    pub context_dir: Option<String>,
    pub output: Template,
    pub env: Env,
    pub incremental: bool,
    /// Overrides the builder's `io.openshift.s2i.scripts-url` label.
    pub scripts_url: Option<String>,
    pub compression: ImageCompression,
}

/// How hard an image stage compresses its new layer (gzip level 1, 6 or 9): build time
/// against layer size. The level is one of the inputs of the image's digest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageCompression {
    #[default]
    Fast,
    Default,
    Best,
}

impl ImageCompression {
    pub const ALL: [(&'static str, ImageCompression); 3] = [
        ("fast", ImageCompression::Fast),
        ("default", ImageCompression::Default),
        ("best", ImageCompression::Best),
    ];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum B2iPreset {
    Binary,
    Jar,
    War,
    Tarball,
}

impl B2iPreset {
    pub const ALL: [(&'static str, B2iPreset); 4] = [
        ("binary", B2iPreset::Binary),
        ("jar", B2iPreset::Jar),
        ("war", B2iPreset::War),
        ("tarball", B2iPreset::Tarball),
    ];
}

#[derive(Clone, Debug)]
pub struct B2i {
    /// A path inside the artifacts of a needed stage.
    pub artifact: Spanned<String>,
    /// The needed stage that produces it; found among `needs` when omitted.
    pub from: Option<Spanned<String>>,
    pub preset: B2iPreset,
    pub base: Template,
    pub output: Template,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub workdir: Option<String>,
    /// Where a `war` goes in the base image (default `/usr/local/tomcat/webapps`).
    pub webapps_dir: Option<String>,
    pub user: Option<String>,
    pub ports: Vec<Port>,
    pub env: Env,
    pub labels: Vec<(String, Template)>,
    pub compression: ImageCompression,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub number: u16,
    pub udp: bool,
}

#[derive(Clone, Debug)]
pub struct Deploy {
    pub namespace: String,
    pub deployment: String,
    /// The container to update; the Deployment's only container when omitted.
    pub container: Option<String>,
    pub image: Template,
    pub timeout: Option<Spanned<Duration>>,
    pub rollback_on_failure: bool,
    pub change_cause: Option<Template>,
}

#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub requests: Quantities,
    pub limits: Quantities,
}

/// Kubernetes resource quantities, kept as written (`500m`, `1Gi`) after checking their syntax.
#[derive(Clone, Debug, Default)]
pub struct Quantities {
    pub cpu: Option<Spanned<String>>,
    pub memory: Option<Spanned<String>>,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub name: Spanned<String>,
    pub image: Template,
    pub env: Env,
    pub command: Option<Vec<String>>,
    pub ports: Vec<Port>,
}

#[derive(Clone, Debug)]
pub struct Matrix {
    pub pos: Pos,
    /// Axes in the order written, each with its values in order.
    pub axes: Vec<(Spanned<String>, Vec<Spanned<String>>)>,
    /// Partial combinations to leave out: each entry's pairs must all match.
    pub exclude: Vec<Spanned<Vec<(String, String)>>>,
}

#[derive(Clone, Debug)]
pub struct Cache {
    pub key: Template,
    pub paths: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct SecretRef {
    /// The environment variable the step sees.
    pub env: Spanned<String>,
    /// The Gantry secret's name.
    pub secret: Spanned<String>,
}

#[derive(Clone, Debug)]
pub struct Approval {
    pub message: Option<Template>,
    /// Users or `role:NAME` entries allowed to approve; empty means any maintainer.
    pub approvers: Vec<String>,
    pub timeout: Option<Spanned<Duration>>,
}
