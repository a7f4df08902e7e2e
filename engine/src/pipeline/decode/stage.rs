//! One stage and everything inside it: steps, kinds (s2i, b2i, deploy), matrix, resources,
//! services, artifacts, cache, secrets and approval.

use super::reader::{Map, Reader, is_env_name};
use super::{NAME_RULE, is_valid_name};
use crate::pipeline::condition::Condition;
use crate::pipeline::model::{
    Approval, B2i, B2iPreset, Cache, Deploy, ImageCompression, Matrix, Quantities, Resources, S2i,
    SecretRef, Service, Spanned, Stage, StageKind, Step,
};
use crate::pipeline::yaml::{Node, Value};

pub const STAGE_KEYS: &[&str] = &[
    "name",
    "needs",
    "when",
    "image",
    "steps",
    "s2i",
    "b2i",
    "deploy",
    "env",
    "timeout",
    "retries",
    "resources",
    "services",
    "matrix",
    "artifacts",
    "cache",
    "secrets",
    "approval",
    "allow_failure",
    "kubernetes",
];
pub const STEP_KEYS: &[&str] = &["name", "run", "env", "timeout"];
pub const S2I_KEYS: &[&str] = &[
    "builder",
    "context_dir",
    "output",
    "env",
    "incremental",
    "scripts_url",
    "compression",
];
pub const B2I_KEYS: &[&str] = &[
    "artifact",
    "from",
    "preset",
    "base",
    "output",
    "entrypoint",
    "cmd",
    "workdir",
    "webapps_dir",
    "user",
    "ports",
    "env",
    "labels",
    "compression",
];
pub const DEPLOY_KEYS: &[&str] = &[
    "namespace",
    "deployment",
    "container",
    "image",
    "timeout",
    "rollback_on_failure",
    "change_cause",
];
pub const RESOURCES_KEYS: &[&str] = &["requests", "limits"];
pub const QUANTITY_KEYS: &[&str] = &["cpu", "memory"];
pub const SERVICE_KEYS: &[&str] = &["name", "image", "env", "command", "ports"];
pub const CACHE_KEYS: &[&str] = &["key", "paths"];
pub const APPROVAL_KEYS: &[&str] = &["message", "approvers", "timeout"];
pub const ARTIFACTS_KEYS: &[&str] = &["paths"];
const KINDS: [&str; 4] = ["steps", "s2i", "b2i", "deploy"];

/// Most retries a stage may ask for.
pub const MAX_RETRIES: i64 = 10;

pub fn decode_list(r: &mut Reader<'_>, node: &Node, what: &str) -> Vec<Stage> {
    if node.is_null() {
        return Vec::new();
    }
    let Some(items) = r.seq(node, what) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| decode_stage(r, item))
        .collect()
}

fn decode_stage(r: &mut Reader<'_>, node: &Node) -> Option<Stage> {
    let map = r.map(node, "stage", STAGE_KEYS)?;
    let name = match map.get("name") {
        Some(n) => {
            let name = r
                .non_empty_string(n, "stage `name`")
                .unwrap_or_else(|| Spanned::new(String::new(), n.pos));
            if !name.value.is_empty() && !is_valid_name(&name.value) {
                r.error(
                    n,
                    format!("stage name `{}` is not valid: {NAME_RULE}", name.value),
                );
            }
            name
        }
        None => {
            r.error(node, "stage has no `name`");
            Spanned::new(String::new(), node.pos)
        }
    };
    let label = if name.value.is_empty() {
        "unnamed stage".to_owned()
    } else {
        format!("stage `{}`", name.value)
    };

    let needs = map.get("needs").map(|n| {
        if n.is_null() {
            Vec::new()
        } else {
            r.strings(n, "`needs`")
        }
    });
    let when = map.get("when").and_then(|n| {
        let source = r.non_empty_string(n, "`when`")?;
        match Condition::compile(source) {
            Ok(c) => Some(c),
            Err(message) => {
                r.error(n, message);
                None
            }
        }
    });
    let image = map.get("image").and_then(|n| r.template(n, "`image`"));
    let env = map
        .get("env")
        .map(|n| r.env(n, "`env`"))
        .unwrap_or_default();
    let timeout = map.get("timeout").and_then(|n| r.duration(n, "`timeout`"));
    let retries = map
        .get("retries")
        .and_then(|n| r.int_in(n, "`retries`", 0, MAX_RETRIES))
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let allow_failure = map
        .get("allow_failure")
        .and_then(|n| r.bool(n, "`allow_failure`"))
        .unwrap_or(false);
    let resources = map
        .get("resources")
        .map(|n| decode_resources(r, n))
        .unwrap_or_default();
    let services = map
        .get("services")
        .and_then(|n| r.seq(n, "`services`"))
        .map(|items| items.iter().filter_map(|i| decode_service(r, i)).collect())
        .unwrap_or_default();
    let matrix = map.get("matrix").and_then(|n| decode_matrix(r, n));
    let artifacts = map
        .get("artifacts")
        .map(|n| decode_artifacts(r, n))
        .unwrap_or_default();
    let cache = map.get("cache").and_then(|n| decode_cache(r, n));
    let secrets = map
        .get("secrets")
        .map(|n| decode_secrets(r, n))
        .unwrap_or_default();
    let approval = map.get("approval").and_then(|n| decode_approval(r, n));
    let kubernetes = map
        .get("kubernetes")
        .map(|n| super::kubernetes::decode(r, n, false))
        .unwrap_or_default();

    // A stage whose kind is broken is kept with no steps, so that checks across stages
    // (needs, cycles, references) still run and report their problems too. The pipeline is
    // rejected anyway because the kind's problem was reported.
    let kind = decode_kind(r, &map, node, &label, approval.is_some())
        .unwrap_or(StageKind::Steps(Vec::new()));
    if !matches!(kind, StageKind::Steps(_)) {
        // Images of s2i/b2i/deploy stages are given inside their own sections.
        if let Some(k) = map.key_node("image") {
            r.error(
                k,
                format!(
                    "`image` applies to stages with `steps`, not to {label} (kind: {})",
                    kind.label()
                ),
            );
        }
    }

    Some(Stage {
        name,
        pos: node.pos,
        needs,
        when,
        image,
        env,
        kind,
        timeout,
        retries,
        resources,
        services,
        matrix,
        artifacts,
        cache,
        secrets,
        approval,
        allow_failure,
        kubernetes,
    })
}

fn decode_kind(
    r: &mut Reader<'_>,
    map: &Map<'_>,
    node: &Node,
    label: &str,
    has_approval: bool,
) -> Option<StageKind> {
    let present: Vec<&str> = KINDS.iter().copied().filter(|k| map.has(k)).collect();
    match present.as_slice() {
        [] if has_approval => Some(StageKind::Gate),
        [] => {
            r.error(
                node,
                format!("{label} has nothing to do: give it `steps`, `s2i`, `b2i`, `deploy` or an `approval`"),
            );
            None
        }
        [kind] => {
            let n = map.get(kind)?;
            match *kind {
                "steps" => decode_steps(r, n).map(StageKind::Steps),
                "s2i" => decode_s2i(r, n).map(StageKind::S2i),
                "b2i" => decode_b2i(r, n).map(StageKind::B2i),
                _ => decode_deploy(r, n).map(StageKind::Deploy),
            }
        }
        [_, second, ..] => {
            let k = map.key_node(second).unwrap_or(node);
            r.error(
                k,
                format!(
                    "{label} has both `{}` and `{second}`; a stage does one kind of work — split it into two stages",
                    present[0]
                ),
            );
            None
        }
    }
}

fn decode_steps(r: &mut Reader<'_>, node: &Node) -> Option<Vec<Step>> {
    let items = r.seq(node, "`steps`")?;
    if items.is_empty() {
        r.error(node, "`steps` is empty");
        return None;
    }
    let steps: Vec<Step> = items.iter().filter_map(|i| decode_step(r, i)).collect();
    Some(steps)
}

fn check_script(r: &mut Reader<'_>, node: &Node, script: &str) {
    if script.contains("${{") {
        r.error(
            node,
            "`${{ }}` is not expanded in `run` scripts, so event data cannot inject shell; \
             read it from an environment variable instead (e.g. \"$GANTRY_BRANCH\", or an `env:` entry)",
        );
    }
}

fn decode_step(r: &mut Reader<'_>, node: &Node) -> Option<Step> {
    // `- cargo test` is shorthand for `- run: cargo test`.
    if let Value::Scalar(_) = &node.value {
        let run = r.non_empty_string(node, "a step")?;
        check_script(r, node, &run.value);
        return Some(Step {
            name: None,
            pos: node.pos,
            run: run.value,
            env: Vec::new(),
            timeout: None,
        });
    }
    let map = r.map(node, "step", STEP_KEYS)?;
    let Some(run_node) = map.get("run") else {
        r.error(node, "step has no `run` script");
        return None;
    };
    let run = r.non_empty_string(run_node, "`run`")?;
    check_script(r, run_node, &run.value);
    Some(Step {
        name: map
            .get("name")
            .and_then(|n| r.non_empty_string(n, "step `name`"))
            .map(|s| s.value),
        pos: node.pos,
        run: run.value,
        env: map
            .get("env")
            .map(|n| r.env(n, "`env`"))
            .unwrap_or_default(),
        timeout: map
            .get("timeout")
            .and_then(|n| r.duration(n, "step `timeout`")),
    })
}

fn required<'n>(r: &mut Reader<'_>, map: &Map<'n>, key: &str, what: &str) -> Option<&'n Node> {
    let found = map.get(key);
    if found.is_none() {
        r.error(map.node, format!("{what} needs `{key}`"));
    }
    found
}

fn decode_s2i(r: &mut Reader<'_>, node: &Node) -> Option<S2i> {
    let map = r.map(node, "`s2i`", S2I_KEYS)?;
    let builder = required(r, &map, "builder", "`s2i`").and_then(|n| r.template(n, "`builder`"));
    let output = required(r, &map, "output", "`s2i`").and_then(|n| r.template(n, "`output`"));
    let context_dir = map
        .get("context_dir")
        .and_then(|n| relative_path(r, n, "`context_dir`"));
    let env = map
        .get("env")
        .map(|n| r.env(n, "`env`"))
        .unwrap_or_default();
    let incremental = map
        .get("incremental")
        .and_then(|n| r.bool(n, "`incremental`"))
        .unwrap_or(false);
    let scripts_url = map
        .get("scripts_url")
        .and_then(|n| r.non_empty_string(n, "`scripts_url`"))
        .map(|s| s.value);
    let compression = compression(r, &map);
    Some(S2i {
        builder: builder?,
        context_dir,
        output: output?,
        env,
        incremental,
        scripts_url,
        compression,
    })
}

/// An image stage's `compression` (default `fast`).
fn compression(r: &mut Reader<'_>, map: &Map<'_>) -> ImageCompression {
    let Some(node) = map.get("compression") else {
        return ImageCompression::default();
    };
    let Some(text) = r.string(node, "`compression`") else {
        return ImageCompression::default();
    };
    let found = ImageCompression::ALL
        .iter()
        .find(|(name, _)| *name == text.value)
        .map(|(_, c)| *c);
    if found.is_none() {
        r.error(
            node,
            format!(
                "unknown compression `{}` (expected fast, default or best)",
                text.value
            ),
        );
    }
    found.unwrap_or_default()
}

fn relative_path(r: &mut Reader<'_>, node: &Node, what: &str) -> Option<String> {
    let path = r.non_empty_string(node, what)?;
    let p = path.value.as_str();
    if p.starts_with('/') || p.split('/').any(|seg| seg == "..") {
        r.error(
            node,
            format!("{what} `{p}` must be a path inside the workspace (relative, without `..`)"),
        );
        return None;
    }
    Some(path.value)
}

fn decode_b2i(r: &mut Reader<'_>, node: &Node) -> Option<B2i> {
    let map = r.map(node, "`b2i`", B2I_KEYS)?;
    let artifact = required(r, &map, "artifact", "`b2i`").and_then(|n| {
        let path = relative_path(r, n, "`artifact`")?;
        Some(Spanned::new(path, n.pos))
    });
    let from = map
        .get("from")
        .and_then(|n| r.non_empty_string(n, "`from`"));
    let base = required(r, &map, "base", "`b2i`").and_then(|n| r.template(n, "`base`"));
    let output = required(r, &map, "output", "`b2i`").and_then(|n| r.template(n, "`output`"));
    let inferred = artifact
        .as_ref()
        .map(|a| preset_for(&a.value))
        .unwrap_or(B2iPreset::Binary);
    let preset = match map.get("preset").map(|n| (n, r.string(n, "`preset`"))) {
        Some((n, Some(text))) => {
            let found = B2iPreset::ALL
                .iter()
                .find(|(name, _)| *name == text.value)
                .map(|(_, p)| *p);
            if found.is_none() {
                r.error(
                    n,
                    format!(
                        "unknown b2i preset `{}` (expected binary, jar, war or tarball)",
                        text.value
                    ),
                );
            }
            found.unwrap_or(inferred)
        }
        _ => inferred,
    };
    let labels = map
        .get("labels")
        .and_then(|n| r.open_map(n, "`labels`"))
        .map(|m| {
            m.entries()
                .filter_map(|(k, _, v)| {
                    r.template(v, &format!("label `{k}`"))
                        .map(|t| (k.to_owned(), t))
                })
                .collect()
        })
        .unwrap_or_default();
    let entrypoint = map
        .get("entrypoint")
        .and_then(|n| r.command(n, "`entrypoint`"));
    let cmd = map.get("cmd").and_then(|n| r.command(n, "`cmd`"));
    let mut text = |key: &str| {
        map.get(key)
            .and_then(|n| r.non_empty_string(n, &format!("`{key}`")))
            .map(|s| s.value)
    };
    let (workdir, webapps_dir, user) = (text("workdir"), text("webapps_dir"), text("user"));
    let ports = map
        .get("ports")
        .map(|n| r.ports(n, "`ports`"))
        .unwrap_or_default();
    let env = map
        .get("env")
        .map(|n| r.env(n, "`env`"))
        .unwrap_or_default();
    let compression = compression(r, &map);
    // Every field is read before giving up on a missing one, so all problems are reported.
    let b2i = B2i {
        artifact: artifact?,
        from,
        preset,
        base: base?,
        output: output?,
        entrypoint,
        cmd,
        workdir,
        webapps_dir,
        user,
        ports,
        env,
        labels,
        compression,
    };
    if b2i.webapps_dir.is_some()
        && b2i.preset != B2iPreset::War
        && let Some(k) = map.key_node("webapps_dir")
    {
        r.error(k, "`webapps_dir` only applies to the `war` preset");
    }
    Some(b2i)
}

/// The preset implied by an artifact's file name.
pub fn preset_for(path: &str) -> B2iPreset {
    let lower = path.to_ascii_lowercase();
    if lower.ends_with(".jar") {
        B2iPreset::Jar
    } else if lower.ends_with(".war") {
        B2iPreset::War
    } else if [".tar", ".tar.gz", ".tgz"]
        .iter()
        .any(|s| lower.ends_with(s))
    {
        B2iPreset::Tarball
    } else {
        B2iPreset::Binary
    }
}

fn decode_deploy(r: &mut Reader<'_>, node: &Node) -> Option<Deploy> {
    let map = r.map(node, "`deploy`", DEPLOY_KEYS)?;
    let k8s_name = |r: &mut Reader<'_>, n: &Node, what: &str| -> Option<String> {
        let s = r.non_empty_string(n, what)?;
        if !is_dns_label(&s.value) {
            r.error(
                n,
                format!("{what} `{}` is not a valid Kubernetes name (lower-case letters, digits and `-`, at most 63)", s.value),
            );
            return None;
        }
        Some(s.value)
    };
    let namespace = match map.get("namespace") {
        Some(n) => k8s_name(r, n, "`namespace`"),
        None => Some("default".to_owned()),
    };
    let deployment = required(r, &map, "deployment", "`deploy`").and_then(|n| {
        let s = r.non_empty_string(n, "`deployment`")?;
        if is_dns_subdomain(&s.value) {
            Some(s.value)
        } else {
            r.error(
                n,
                format!(
                    "`deployment` `{}` is not a valid Kubernetes name (lower-case letters, digits, `-` and `.`, at most 253)",
                    s.value
                ),
            );
            None
        }
    });
    let image = match map.get("image") {
        Some(n) => r.template(n, "`image`"),
        None => {
            r.error(
                node,
                "`deploy` has no `image`: say which image to roll out, e.g. `image: ${{ stages.package.image }}`",
            );
            None
        }
    };
    let container = map
        .get("container")
        .and_then(|n| k8s_name(r, n, "`container`"));
    Some(Deploy {
        namespace: namespace?,
        deployment: deployment?,
        container,
        image: image?,
        timeout: map.get("timeout").and_then(|n| r.duration(n, "`timeout`")),
        rollback_on_failure: map
            .get("rollback_on_failure")
            .and_then(|n| r.bool(n, "`rollback_on_failure`"))
            .unwrap_or(true),
        change_cause: map
            .get("change_cause")
            .and_then(|n| r.template(n, "`change_cause`")),
    })
}

/// RFC 1123 label: what Kubernetes requires of namespaces and container names.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// RFC 1123 subdomain: what Kubernetes requires of Deployment names.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn decode_resources(r: &mut Reader<'_>, node: &Node) -> Resources {
    let Some(map) = r.map(node, "`resources`", RESOURCES_KEYS) else {
        return Resources::default();
    };
    let mut quantities = |key: &str| -> Quantities {
        let Some(m) = map
            .get(key)
            .and_then(|n| r.map(n, &format!("`resources.{key}`"), QUANTITY_KEYS))
        else {
            return Quantities::default();
        };
        let mut q = |field: &str| {
            m.get(field).and_then(|n| {
                let s = r.string(n, &format!("`{field}`"))?;
                if parse_quantity(&s.value).is_none() {
                    r.error(
                        n,
                        format!(
                            "`{}` is not a Kubernetes quantity (e.g. `500m` or `2` for cpu, `512Mi` or `2Gi` for memory)",
                            s.value
                        ),
                    );
                    return None;
                }
                Some(s)
            })
        };
        Quantities {
            cpu: q("cpu"),
            memory: q("memory"),
        }
    };
    let resources = Resources {
        requests: quantities("requests"),
        limits: quantities("limits"),
    };
    for (field, request, limit) in [
        ("cpu", &resources.requests.cpu, &resources.limits.cpu),
        (
            "memory",
            &resources.requests.memory,
            &resources.limits.memory,
        ),
    ] {
        if let (Some(req), Some(lim)) = (request, limit)
            && parse_quantity(&req.value) > parse_quantity(&lim.value)
        {
            r.sink.error(
                req.pos,
                format!(
                    "{field} request `{}` is above its limit `{}`",
                    req.value, lim.value
                ),
            );
        }
    }
    resources
}

/// The value of a Kubernetes quantity (`500m` = 0.5, `1Ki` = 1024), or `None` if malformed.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number.matches('.').count() > 1 || number == "." {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => {
            let exp: i32 = suffix.strip_prefix(['e', 'E'])?.parse().ok()?;
            10f64.powi(exp)
        }
    };
    Some(value * multiplier)
}

fn decode_service(r: &mut Reader<'_>, node: &Node) -> Option<Service> {
    let map = r.map(node, "service", SERVICE_KEYS)?;
    let name = required(r, &map, "name", "a service").and_then(|n| {
        let s = r.non_empty_string(n, "service `name`")?;
        if is_dns_label(&s.value) {
            Some(s)
        } else {
            r.error(
                n,
                format!(
                    "service name `{}` must be a DNS label (lower-case letters, digits, `-`)",
                    s.value
                ),
            );
            None
        }
    });
    let image =
        required(r, &map, "image", "a service").and_then(|n| r.template(n, "service `image`"));
    let env = map
        .get("env")
        .map(|n| r.env(n, "`env`"))
        .unwrap_or_default();
    let command = map.get("command").and_then(|n| r.command(n, "`command`"));
    let ports = map
        .get("ports")
        .map(|n| r.ports(n, "`ports`"))
        .unwrap_or_default();
    Some(Service {
        name: name?,
        image: image?,
        env,
        command,
        ports,
    })
}

fn decode_matrix(r: &mut Reader<'_>, node: &Node) -> Option<Matrix> {
    let map = r.open_map(node, "`matrix`")?;
    let mut axes = Vec::new();
    let mut exclude_node = None;
    for (key, key_node, value) in map.entries() {
        if key == "exclude" {
            exclude_node = Some(value);
            continue;
        }
        if !is_env_name(key) {
            r.error(
                key_node,
                format!("matrix axis `{key}` must be a name of letters, digits and `_`"),
            );
            continue;
        }
        let Some(items) = r.seq(value, &format!("matrix axis `{key}`")) else {
            continue;
        };
        if items.is_empty() {
            r.error(value, format!("matrix axis `{key}` has no values"));
            continue;
        }
        let mut values: Vec<Spanned<String>> = Vec::new();
        for item in items {
            let Some(v) = r.string(item, &format!("a value of matrix axis `{key}`")) else {
                continue;
            };
            if values.iter().any(|x| x.value == v.value) {
                r.error(
                    item,
                    format!("matrix axis `{key}` lists `{}` twice", v.value),
                );
                continue;
            }
            values.push(v);
        }
        axes.push((Spanned::new(key.to_owned(), key_node.pos), values));
    }
    let wrote_axes = map.entries().any(|(k, _, _)| k != "exclude");
    if axes.is_empty() {
        if !wrote_axes {
            r.error(node, "`matrix` has no axes");
        }
        return None;
    }
    let mut exclude = Vec::new();
    if let Some(list) = exclude_node.and_then(|n| r.seq(n, "`matrix.exclude`")) {
        for entry in list {
            let Some(m) = r.open_map(entry, "a `matrix.exclude` entry") else {
                continue;
            };
            let mut pairs = Vec::new();
            for (key, key_node, value) in m.entries() {
                let Some((_, values)) = axes.iter().find(|(a, _)| a.value == key) else {
                    let names: Vec<&str> = axes.iter().map(|(a, _)| a.value.as_str()).collect();
                    let hint = crate::pipeline::diagnostic::suggestion(key, names.iter().copied())
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    r.error(
                        key_node,
                        format!("`matrix.exclude` names unknown axis `{key}`{hint}"),
                    );
                    continue;
                };
                let Some(v) = r.string(value, "an excluded value") else {
                    continue;
                };
                if !values.iter().any(|x| x.value == v.value) {
                    r.error(
                        value,
                        format!("`{}` is not a value of matrix axis `{key}`", v.value),
                    );
                    continue;
                }
                pairs.push((key.to_owned(), v.value));
            }
            exclude.push(Spanned::new(pairs, entry.pos));
        }
    }
    Some(Matrix {
        pos: node.pos,
        axes,
        exclude,
    })
}

fn decode_artifacts(r: &mut Reader<'_>, node: &Node) -> Vec<Spanned<String>> {
    let list = match &node.value {
        Value::Map(_) => match r
            .map(node, "`artifacts`", ARTIFACTS_KEYS)
            .and_then(|m| m.get("paths"))
        {
            Some(n) => n,
            None => return Vec::new(),
        },
        _ => node,
    };
    let Some(items) = r.seq(list, "`artifacts`") else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| {
            let path = relative_path(r, i, "artifact path")?;
            Some(Spanned::new(path, i.pos))
        })
        .collect()
}

fn decode_cache(r: &mut Reader<'_>, node: &Node) -> Option<Cache> {
    let map = r.map(node, "`cache`", CACHE_KEYS)?;
    let key = required(r, &map, "key", "`cache`").and_then(|n| r.template(n, "cache `key`"));
    let paths_node = required(r, &map, "paths", "`cache`")?;
    let paths: Vec<String> = match r.seq(paths_node, "cache `paths`") {
        Some(items) => items
            .iter()
            .filter_map(|i| relative_path(r, i, "cache path"))
            .collect(),
        None => Vec::new(),
    };
    Some(Cache { key: key?, paths })
}

fn decode_secrets(r: &mut Reader<'_>, node: &Node) -> Vec<SecretRef> {
    let mut refs = Vec::new();
    match &node.value {
        // `secrets: [NPM_TOKEN]`: the variable has the secret's name.
        Value::Seq(_) | Value::Scalar(_) => {
            for name in r.strings(node, "`secrets`") {
                if name.value.starts_with("GANTRY_") {
                    r.sink.error(
                        name.pos,
                        format!(
                            "`{}`: names starting with `GANTRY_` are set by Gantry itself",
                            name.value
                        ),
                    );
                } else if is_env_name(&name.value) {
                    refs.push(SecretRef {
                        env: name.clone(),
                        secret: name,
                    });
                } else {
                    r.sink.error(
                        name.pos,
                        format!(
                            "secret `{}` cannot be an environment variable name; map it: `secrets: {{ VAR: {} }}`",
                            name.value, name.value
                        ),
                    );
                }
            }
        }
        Value::Map(_) => {
            let Some(map) = r.open_map(node, "`secrets`") else {
                return refs;
            };
            for (var, key_node, value) in map.entries() {
                if !is_env_name(var) {
                    r.error(
                        key_node,
                        format!("`{var}` is not a valid environment variable name"),
                    );
                    continue;
                }
                if let Some(secret) = r.non_empty_string(value, &format!("secret for `{var}`")) {
                    refs.push(SecretRef {
                        env: Spanned::new(var.to_owned(), key_node.pos),
                        secret,
                    });
                }
            }
        }
    }
    refs
}

fn decode_approval(r: &mut Reader<'_>, node: &Node) -> Option<Approval> {
    if let Some(b) = node.as_scalar().map(|s| s.resolve()) {
        return match b {
            crate::pipeline::yaml::Resolved::Bool(true) | crate::pipeline::yaml::Resolved::Null => {
                Some(Approval {
                    message: None,
                    approvers: Vec::new(),
                    timeout: None,
                })
            }
            crate::pipeline::yaml::Resolved::Bool(false) => None,
            _ => {
                r.error(
                    node,
                    "`approval` must be true or a mapping with `message`, `approvers`, `timeout`",
                );
                None
            }
        };
    }
    let map = r.map(node, "`approval`", APPROVAL_KEYS)?;
    Some(Approval {
        message: map
            .get("message")
            .and_then(|n| r.template(n, "approval `message`")),
        approvers: map
            .get("approvers")
            .map(|n| {
                r.strings(n, "`approvers`")
                    .into_iter()
                    .map(|s| s.value)
                    .collect()
            })
            .unwrap_or_default(),
        timeout: map
            .get("timeout")
            .and_then(|n| r.duration(n, "approval `timeout`")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_kubernetes_syntax() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1Gi"), Some(1024f64.powi(3)));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("1.5G"), Some(1.5e9));
        assert_eq!(parse_quantity("lots"), None);
        assert_eq!(parse_quantity("1GB"), None);
        assert_eq!(parse_quantity(""), None);
    }

    #[test]
    fn presets_follow_the_file_name() {
        assert_eq!(preset_for("target/app.jar"), B2iPreset::Jar);
        assert_eq!(preset_for("build/ROOT.war"), B2iPreset::War);
        assert_eq!(preset_for("dist/site.tar.gz"), B2iPreset::Tarball);
        assert_eq!(preset_for("target/release/server"), B2iPreset::Binary);
    }

    #[test]
    fn kubernetes_names() {
        assert!(is_dns_label("web-1"));
        assert!(!is_dns_label("Web"));
        assert!(!is_dns_label("-web"));
        assert!(is_dns_subdomain("api.v2"));
    }
}
