//! Turns a YAML node tree into the typed [`Pipeline`] model, reporting every wrong type,
//! missing field and unknown key (with a "did you mean") it meets on the way.
//!
//! Cross-stage rules (needs, cycles, references between stages) live in `validate`; this
//! module only checks what one node can tell on its own.

pub mod kubernetes;
mod reader;
pub mod stage;
pub mod triggers;

pub use reader::{MAX_DURATION, is_env_name, parse_duration};

use crate::pipeline::diagnostic::Sink;
use crate::pipeline::model::{Param, ParamKind, Pipeline, Spanned, Triggers};
use crate::pipeline::yaml::{Node, Pos};
use reader::Reader;

pub const PIPELINE_KEYS: &[&str] = &[
    "name",
    "description",
    "env",
    "params",
    "on",
    "stages",
    "finally",
    "concurrency",
    "kubernetes",
];
pub const CONCURRENCY_KEYS: &[&str] = &["group", "cancel_in_progress"];
pub const PARAM_KEYS: &[&str] = &["type", "default", "description", "options"];

/// Names of pipelines and stages end up in URLs and Kubernetes label values, so they follow
/// label-value rules (63 characters, letters, digits, `-`, `_`, `.`, starting and ending with a
/// letter or digit). Param names become environment variables and follow shell rules instead.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

const NAME_RULE: &str =
    "use 1-63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit";

/// Decodes a whole document. Returns `None` only when the top level is unusable; otherwise a
/// best-effort pipeline comes back even when problems were reported, so that later checks
/// can find more of them.
pub fn decode(root: &Node, sink: &mut Sink) -> Option<Pipeline> {
    let mut r = Reader { sink };
    let map = r.map(root, "the pipeline", PIPELINE_KEYS)?;

    let name = match map.get("name") {
        Some(n) => r.non_empty_string(n, "`name`").and_then(|s| {
            if is_valid_name(&s.value) {
                Some(s)
            } else {
                r.error(
                    n,
                    format!("pipeline name `{}` is not valid: {NAME_RULE}", s.value),
                );
                None
            }
        }),
        None => {
            r.error(root, "the pipeline has no `name`");
            None
        }
    }
    .unwrap_or_else(|| Spanned::new(String::new(), root.pos));

    let description = map
        .get("description")
        .and_then(|n| r.string(n, "`description`"))
        .map(|s| s.value);
    let env = map
        .get("env")
        .map(|n| r.env(n, "`env`"))
        .unwrap_or_default();
    let params = map
        .get("params")
        .map(|n| decode_params(&mut r, n))
        .unwrap_or_default();
    let on = map
        .get("on")
        .map(|n| triggers::decode(&mut r, n))
        .unwrap_or_else(|| Triggers {
            manual: true,
            ..Triggers::default()
        });

    let stages = match map.get("stages") {
        Some(n) => stage::decode_list(&mut r, n, "`stages`"),
        None => {
            r.error(root, "the pipeline has no `stages`");
            Vec::new()
        }
    };
    if let Some(n) = map.get("stages") {
        let written_empty = n.is_null()
            || matches!(&n.value, crate::pipeline::yaml::Value::Seq(items) if items.is_empty());
        if written_empty {
            r.error(n, "`stages` is empty; a pipeline needs at least one stage");
        }
    }
    let finally = map
        .get("finally")
        .map(|n| stage::decode_list(&mut r, n, "`finally`"))
        .unwrap_or_default();

    let concurrency = map.get("concurrency").and_then(|n| {
        let m = r.map(n, "`concurrency`", CONCURRENCY_KEYS)?;
        let group = match m.get("group") {
            Some(g) => r.template(g, "`concurrency.group`")?,
            None => {
                r.error(
                    n,
                    "`concurrency` needs `group`, e.g. `group: ${{ git.branch }}`",
                );
                return None;
            }
        };
        let cancel_in_progress = m
            .get("cancel_in_progress")
            .and_then(|c| r.bool(c, "`cancel_in_progress`"))
            .unwrap_or(false);
        Some(crate::pipeline::model::Concurrency {
            group,
            cancel_in_progress,
        })
    });

    let kubernetes = map
        .get("kubernetes")
        .map(|n| kubernetes::decode(&mut r, n, true))
        .unwrap_or_default();

    Some(Pipeline {
        name,
        concurrency,
        kubernetes,
        description,
        env,
        params,
        on,
        stages,
        finally,
    })
}

fn decode_params(r: &mut Reader<'_>, node: &Node) -> Vec<Param> {
    let Some(map) = r.open_map(node, "`params`") else {
        return Vec::new();
    };
    let mut params = Vec::new();
    for (name, key_node, spec) in map.entries() {
        if !is_env_name(name) {
            r.error(
                key_node,
                format!("param name `{name}` is not valid: use letters, digits and `_` (it becomes GANTRY_PARAM_{})", name.to_uppercase()),
            );
            continue;
        }
        let upper = name.to_uppercase();
        if let Some(other) = params
            .iter()
            .find(|p: &&Param| p.name.value.to_uppercase() == upper)
        {
            r.error(
                key_node,
                format!(
                    "params `{}` and `{name}` would both be GANTRY_PARAM_{upper}; rename one",
                    other.name.value
                ),
            );
            continue;
        }
        let what = format!("param `{name}`");
        if spec.is_null() {
            // `params: {version: }`: a string param with no default.
            params.push(Param {
                name: Spanned::new(name.to_owned(), key_node.pos),
                description: None,
                kind: ParamKind::String { default: None },
            });
            continue;
        }
        let Some(fields) = r.map(spec, &what, PARAM_KEYS) else {
            continue;
        };
        let kind_name = fields
            .get("type")
            .and_then(|n| r.string(n, "`type`"))
            .map(|s| (s.value, s.pos));
        let description = fields
            .get("description")
            .and_then(|n| r.string(n, "`description`"))
            .map(|s| s.value);
        let options: Option<Vec<String>> = fields.get("options").map(|n| {
            r.strings(n, "`options`")
                .into_iter()
                .map(|s| s.value)
                .collect()
        });
        let kind = match kind_name.as_ref().map(|(k, pos)| (k.as_str(), *pos)) {
            None | Some(("string", _)) => ParamKind::String {
                default: fields
                    .get("default")
                    .and_then(|n| r.string(n, "`default`"))
                    .map(|s| s.value),
            },
            Some(("bool", _)) => ParamKind::Bool {
                default: fields.get("default").and_then(|n| r.bool(n, "`default`")),
            },
            Some(("choice", pos)) => {
                let options = options.clone().unwrap_or_default();
                if options.is_empty() {
                    r.sink
                        .error(pos, format!("{what} is a `choice` but lists no `options`"));
                }
                let default = fields
                    .get("default")
                    .and_then(|n| r.string(n, "`default`").map(|s| (s, n)));
                if let Some((d, n)) = &default
                    && !options.is_empty()
                    && !options.contains(&d.value)
                {
                    r.error(
                        n,
                        format!(
                            "default `{}` of {what} is not one of its options ({})",
                            d.value,
                            options.join(", ")
                        ),
                    );
                }
                ParamKind::Choice {
                    options,
                    default: default.map(|(d, _)| d.value),
                }
            }
            Some((other, pos)) => {
                let alias = match other {
                    "boolean" => Some("bool"),
                    "str" | "text" => Some("string"),
                    "enum" | "select" => Some("choice"),
                    _ => None,
                };
                let hint = alias
                    .or_else(|| {
                        crate::pipeline::diagnostic::suggestion(other, ["string", "bool", "choice"])
                    })
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                r.sink.error(
                    pos,
                    format!("unknown param type `{other}` (expected string, bool or choice){hint}"),
                );
                continue;
            }
        };
        if options.is_some()
            && !matches!(kind, ParamKind::Choice { .. })
            && let Some(k) = fields.key_node("options")
        {
            r.error(
                k,
                format!("`options` only applies to `type: choice` ({what})"),
            );
        }
        params.push(Param {
            name: Spanned::new(name.to_owned(), key_node.pos),
            description,
            kind,
        });
    }
    params
}

/// Position of a file's first line, for problems that belong to no particular node.
pub const FILE_START: Pos = Pos { line: 1, col: 1 };

#[cfg(test)]
mod tests {
    #[test]
    fn concurrency_is_decoded() {
        let p = crate::pipeline::parse(
            "t.yaml",
            "name: x\nconcurrency:\n  group: ${{ git.branch }}\n  cancel_in_progress: true\nstages:\n  - {name: a, steps: [x]}\n",
        )
        .expect("valid");
        let c = p.concurrency.expect("has concurrency");
        assert!(c.cancel_in_progress);
        assert_eq!(c.group.raw.value, "${{ git.branch }}");
        let err = crate::pipeline::parse(
            "t.yaml",
            "name: x\nconcurrency:\n  group: ${{ matrix.os }}\nstages:\n  - {name: a, steps: [x]}\n",
        )
        .expect_err("matrix in group");
        assert!(err.to_string().contains("belongs to one stage"), "{err}");
    }
}
