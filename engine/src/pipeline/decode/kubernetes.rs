//! The `kubernetes:` section (of the pipeline or of a stage): what a stage's Job gets when the
//! engine runs stages on Kubernetes — namespace, service account, node selector, tolerations,
//! image pull secrets and environment variables from Kubernetes Secrets. Checked here against
//! Kubernetes' own name rules, so a typo fails at `gantry validate`, not at Job creation.

use super::reader::{Reader, is_env_name};
use super::stage::{is_dns_label, is_dns_subdomain};
use crate::pipeline::model::{KubeSecretEnv, KubernetesOptions, SecurityContext, Toleration};
use crate::pipeline::yaml::{Node, Resolved};

pub const KUBERNETES_KEYS: &[&str] = &[
    "namespace",
    "service_account",
    "node_selector",
    "tolerations",
    "image_pull_secrets",
    "secrets",
    "security_context",
];
/// A stage's section (for the schema): the namespace belongs to the whole pipeline.
pub const STAGE_KUBERNETES_KEYS: &[&str] = &[
    "service_account",
    "node_selector",
    "tolerations",
    "image_pull_secrets",
    "secrets",
    "security_context",
];
pub const SECURITY_CONTEXT_KEYS: &[&str] = &[
    "run_as_user",
    "run_as_group",
    "fs_group",
    "run_as_non_root",
    "allow_privilege_escalation",
    "privileged",
    "capabilities",
    "seccomp_profile",
];
pub const TOLERATION_KEYS: &[&str] = &["key", "operator", "value", "effect", "toleration_seconds"];
const OPERATORS: [&str; 2] = ["Equal", "Exists"];
const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

pub fn decode(r: &mut Reader<'_>, node: &Node, pipeline_level: bool) -> KubernetesOptions {
    let Some(map) = r.map(node, "`kubernetes`", KUBERNETES_KEYS) else {
        return KubernetesOptions::default();
    };
    let mut out = KubernetesOptions::default();
    if !pipeline_level && let Some(k) = map.key_node("namespace") {
        r.error(
            k,
            "a pipeline's stages share one namespace: set `kubernetes.namespace` at the top of the pipeline, not in a stage",
        );
    } else if let Some(n) = map.get("namespace")
        && let Some(s) = r.non_empty_string(n, "`kubernetes.namespace`")
    {
        if is_dns_label(&s.value) {
            out.namespace = Some(s.value);
        } else {
            r.error(
                n,
                format!(
                    "namespace `{}` is not a valid Kubernetes name (lower-case letters, digits and `-`, at most 63)",
                    s.value
                ),
            );
        }
    }
    if let Some(n) = map.get("service_account")
        && let Some(s) = r.non_empty_string(n, "`service_account`")
    {
        if is_dns_subdomain(&s.value) {
            out.service_account = Some(s.value);
        } else {
            r.error(
                n,
                format!(
                    "service account `{}` is not a valid Kubernetes name",
                    s.value
                ),
            );
        }
    }
    if let Some(n) = map.get("node_selector")
        && let Some(m) = r.open_map(n, "`node_selector`")
    {
        for (key, key_node, value) in m.entries() {
            if !is_label_key(key) {
                r.error(
                    key_node,
                    format!("`{key}` is not a valid Kubernetes label key"),
                );
                continue;
            }
            let Some(v) = scalar_text(value) else {
                r.error(value, format!("node selector `{key}` must be a string"));
                continue;
            };
            if !is_label_value(&v) {
                r.error(
                    value,
                    format!("`{v}` is not a valid Kubernetes label value"),
                );
                continue;
            }
            out.node_selector.push((key.to_owned(), v));
        }
    }
    if let Some(n) = map.get("tolerations")
        && let Some(items) = r.seq(n, "`tolerations`")
    {
        for item in items {
            if let Some(t) = decode_toleration(r, item) {
                out.tolerations.push(t);
            }
        }
    }
    if let Some(n) = map.get("image_pull_secrets") {
        for s in r.strings(n, "`image_pull_secrets`") {
            if is_dns_subdomain(&s.value) {
                out.image_pull_secrets.push(s.value);
            } else {
                r.sink.error(
                    s.pos,
                    format!("`{}` is not a valid Kubernetes Secret name", s.value),
                );
            }
        }
    }
    if let Some(n) = map.get("secrets")
        && let Some(m) = r.open_map(n, "`kubernetes.secrets`")
    {
        for (var, key_node, value) in m.entries() {
            if !is_env_name(var) || var.starts_with("GANTRY_") {
                r.error(
                    key_node,
                    format!("`{var}` is not a valid environment variable name (or uses the GANTRY_ prefix)"),
                );
                continue;
            }
            let text = scalar_text(value).unwrap_or_default();
            match text.split_once('/') {
                Some((secret, key))
                    if is_dns_subdomain(secret) && !key.is_empty() && is_secret_key(key) =>
                {
                    out.secret_env.push(KubeSecretEnv {
                        env: var.to_owned(),
                        secret: secret.to_owned(),
                        key: key.to_owned(),
                    });
                }
                _ => r.error(
                    value,
                    format!(
                        "`{var}` must name a Kubernetes Secret and key as `SECRET/KEY`, e.g. `aws-credentials/access-key`"
                    ),
                ),
            }
        }
    }
    if let Some(n) = map.get("security_context")
        && let Some(sc) = decode_security_context(r, n)
    {
        out.security_context = sc;
    }
    out
}

/// User and group ids as Kubernetes takes them (0 to 2^31-1).
const MAX_ID: i64 = i32::MAX as i64;

fn decode_security_context(r: &mut Reader<'_>, node: &Node) -> Option<SecurityContext> {
    let map = r.map(node, "`security_context`", SECURITY_CONTEXT_KEYS)?;
    let id = |r: &mut Reader<'_>, key: &str| {
        map.get(key)
            .and_then(|n| r.int_in(n, &format!("`security_context.{key}`"), 0, MAX_ID))
    };
    let flag = |r: &mut Reader<'_>, key: &str| {
        map.get(key)
            .and_then(|n| r.bool(n, &format!("`security_context.{key}`")))
    };
    let mut out = SecurityContext {
        run_as_user: id(r, "run_as_user"),
        run_as_group: id(r, "run_as_group"),
        fs_group: id(r, "fs_group"),
        run_as_non_root: flag(r, "run_as_non_root"),
        allow_privilege_escalation: flag(r, "allow_privilege_escalation"),
        privileged: flag(r, "privileged"),
        ..SecurityContext::default()
    };
    if out.run_as_user == Some(0)
        && out.run_as_non_root == Some(true)
        && let Some(n) = map.get("run_as_non_root")
    {
        r.error(n, "`run_as_non_root: true` contradicts `run_as_user: 0`");
    }
    if out.privileged == Some(true)
        && out.allow_privilege_escalation == Some(false)
        && let Some(n) = map.get("allow_privilege_escalation")
    {
        r.error(
            n,
            "a privileged container always can escalate: drop `allow_privilege_escalation: false` or `privileged: true`",
        );
    }
    if let Some(n) = map.get("capabilities") {
        for cap in r.strings(n, "`security_context.capabilities`") {
            let name = cap.value.as_str();
            if let Some(bare) = name.strip_prefix("CAP_") {
                r.sink.error(
                    cap.pos,
                    format!("write the capability as Kubernetes does, `{bare}`, without `CAP_`"),
                );
            } else if name.is_empty() || !name.bytes().all(|c| c.is_ascii_uppercase() || c == b'_')
            {
                r.sink.error(
                    cap.pos,
                    format!(
                        "`{name}` is not a capability name (upper case, like `NET_BIND_SERVICE`)"
                    ),
                );
            } else {
                out.capabilities.push(cap.value);
            }
        }
    }
    if let Some(n) = map.get("seccomp_profile")
        && let Some(s) = r.non_empty_string(n, "`security_context.seccomp_profile`")
    {
        let ok = matches!(s.value.as_str(), "RuntimeDefault" | "Unconfined")
            || s.value
                .strip_prefix("Localhost/")
                .is_some_and(|p| !p.is_empty() && !p.starts_with('/'));
        if ok {
            out.seccomp_profile = Some(s.value);
        } else {
            r.error(
                n,
                format!(
                    "seccomp profile `{}` must be `RuntimeDefault`, `Unconfined` or `Localhost/<path relative to the kubelet's seccomp directory>`",
                    s.value
                ),
            );
        }
    }
    Some(out)
}

fn decode_toleration(r: &mut Reader<'_>, node: &Node) -> Option<Toleration> {
    let map = r.map(node, "a toleration", TOLERATION_KEYS)?;
    let text = |r: &mut Reader<'_>, key: &str| {
        map.get(key)
            .and_then(|n| r.string(n, &format!("toleration `{key}`")))
            .map(|s| (s.value, s.pos))
    };
    let key = text(r, "key").map(|(v, _)| v);
    let operator = text(r, "operator");
    let value = text(r, "value").map(|(v, _)| v);
    let effect = text(r, "effect");
    if let Some((op, pos)) = &operator
        && !OPERATORS.contains(&op.as_str())
    {
        r.sink.error(
            *pos,
            format!("toleration operator `{op}` must be `Equal` or `Exists`"),
        );
        return None;
    }
    if let Some((e, pos)) = &effect
        && !EFFECTS.contains(&e.as_str())
    {
        r.sink.error(
            *pos,
            format!(
                "toleration effect `{e}` must be `NoSchedule`, `PreferNoSchedule` or `NoExecute`"
            ),
        );
        return None;
    }
    if operator.as_ref().is_some_and(|(o, _)| o == "Exists") && value.is_some() {
        r.error(node, "a toleration with operator `Exists` takes no `value`");
        return None;
    }
    let toleration_seconds = map
        .get("toleration_seconds")
        .and_then(|n| r.int_in(n, "`toleration_seconds`", 0, i64::from(i32::MAX)));
    Some(Toleration {
        key,
        operator: operator.map(|(v, _)| v),
        value,
        effect: effect.map(|(v, _)| v),
        toleration_seconds,
    })
}

fn scalar_text(node: &Node) -> Option<String> {
    let scalar = node.as_scalar()?;
    match scalar.resolve() {
        Resolved::Null => None,
        _ => Some(scalar.text.clone()),
    }
}

/// `[prefix/]name`: an optional DNS subdomain prefix and a name of at most 63 characters.
pub fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

/// At most 63 letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit
/// (or empty).
pub fn is_label_value(value: &str) -> bool {
    let b = value.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
}

fn is_secret_key(key: &str) -> bool {
    key.len() <= 253
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_rules_follow_kubernetes() {
        assert!(is_label_key("disktype"));
        assert!(is_label_key("kubernetes.io/arch"));
        assert!(!is_label_key("Bad_Prefix/x"));
        assert!(!is_label_key("-x"));
        assert!(is_label_value(""));
        assert!(is_label_value("ssd.v1"));
        assert!(!is_label_value("a b"));
        assert!(!is_label_value(&"x".repeat(64)));
    }

    fn pipeline(
        kubernetes: &str,
        stage_kubernetes: &str,
    ) -> Result<crate::pipeline::Pipeline, String> {
        let text = format!(
            "name: p\nkubernetes:\n{kubernetes}\nstages:\n  - name: build\n    kubernetes:\n{stage_kubernetes}\n    steps: [make]\n"
        );
        crate::pipeline::parse("p.yaml", &text).map_err(|r| r.to_string())
    }

    #[test]
    fn security_contexts_merge_field_by_field() {
        let p = pipeline(
            "  security_context:\n    run_as_user: 2000\n    capabilities: [NET_BIND_SERVICE]",
            "      security_context:\n        run_as_group: 3000\n        seccomp_profile: Localhost/gantry.json",
        )
        .expect("valid");
        let merged = p
            .kubernetes
            .merged(&p.stages[0].kubernetes)
            .security_context;
        assert_eq!(merged.run_as_user, Some(2000));
        assert_eq!(merged.run_as_group, Some(3000));
        assert_eq!(merged.capabilities, vec!["NET_BIND_SERVICE".to_owned()]);
        assert_eq!(
            merged.seccomp_profile.as_deref(),
            Some("Localhost/gantry.json")
        );
    }

    #[test]
    fn security_context_mistakes_are_named() {
        let err = pipeline(
            "  security_context:\n    run_as_user: 0\n    run_as_non_root: true\n    capabilities: [CAP_SYS_ADMIN, net_raw]\n    seccomp_profile: /etc/x.json\n    run_as_group: -1",
            "      security_context:\n        privileged: true\n        allow_privilege_escalation: false\n        fsgroup: 1",
        )
        .expect_err("invalid");
        for wanted in [
            "p.yaml:5:22: `run_as_non_root: true` contradicts `run_as_user: 0`",
            "write the capability as Kubernetes does, `SYS_ADMIN`, without `CAP_`",
            "`net_raw` is not a capability name",
            "seccomp profile `/etc/x.json` must be",
            "`security_context.run_as_group`",
            "a privileged container always can escalate",
            "fsgroup",
        ] {
            assert!(err.contains(wanted), "{wanted:?} not in:\n{err}");
        }
    }
}
