//! The JSON Schema of the pipeline format, for editors (the YAML language server completes and
//! checks `.gantry.yaml` with it) and for `gantry schema`.
//!
//! The property lists come from the same key tables the decoder checks unknown keys against,
//! and a test compares them, so the schema cannot drift from the parser. The schema is looser
//! than `gantry validate` (it cannot check needs, cycles or CEL); it is a typing aid.

use serde_json::{Map, Value, json};

use super::decode::kubernetes::{
    KUBERNETES_KEYS, SECURITY_CONTEXT_KEYS, STAGE_KUBERNETES_KEYS, TOLERATION_KEYS,
};
use super::decode::stage::{
    APPROVAL_KEYS, B2I_KEYS, CACHE_KEYS, DEPLOY_KEYS, QUANTITY_KEYS, RESOURCES_KEYS, S2I_KEYS,
    SERVICE_KEYS, STAGE_KEYS, STEP_KEYS,
};
use super::decode::triggers::{
    PULL_REQUEST_KEYS, PUSH_KEYS, SCHEDULE_KEYS, TRIGGER_KEYS, WEBHOOK_KEYS,
};
use super::decode::{PARAM_KEYS, PIPELINE_KEYS};
use super::model::{B2iPreset, ImageCompression, PullRequestAction};

pub const SCHEMA_ID: &str = "https://gantry.dev/schemas/pipeline.schema.json";

/// An object with exactly `keys`, each described by `describe`.
fn object(keys: &[&str], required: &[&str], describe: impl Fn(&str) -> Value) -> Value {
    let properties: Map<String, Value> = keys
        .iter()
        .map(|k| ((*k).to_owned(), describe(k)))
        .collect();
    let mut o = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": properties,
    });
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    o
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/$defs/{name}") })
}

fn doc(mut v: Value, text: &str) -> Value {
    v["description"] = json!(text);
    v
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn boolean() -> Value {
    json!({ "type": "boolean" })
}

pub fn schema() -> Value {
    let pipeline = object(PIPELINE_KEYS, &["name", "stages"], |k| match k {
        "name" => doc(r("name"), "The pipeline's name."),
        "description" => doc(string(), "What the pipeline is for."),
        "env" => doc(r("env"), "Environment variables for every step."),
        "params" => doc(
            json!({ "type": "object", "additionalProperties": r("param"), "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" } }),
            "Typed parameters, asked for on manual runs; steps see GANTRY_PARAM_<NAME>.",
        ),
        "on" => doc(
            r("on"),
            "What starts a run. Without `on`, only manual runs.",
        ),
        "stages" => doc(
            json!({ "type": "array", "items": r("stage"), "minItems": 1 }),
            "The stages, in order.",
        ),
        "concurrency" => doc(
            object(super::decode::CONCURRENCY_KEYS, &["group"], |k| match k {
                "group" => doc(
                    string(),
                    "Runs with the same rendered group never overlap, e.g. `${{ git.branch }}`.",
                ),
                _ => doc(
                    boolean(),
                    "Cancel older runs of the group instead of waiting for them.",
                ),
            }),
            "Keeps runs of one group from overlapping.",
        ),
        "kubernetes" => doc(
            r("kubernetes"),
            "What every stage's Kubernetes Job gets (namespace, service account, scheduling, secrets).",
        ),
        _ => doc(
            json!({ "type": "array", "items": r("stage") }),
            "Stages that run after all others, whatever the outcome.",
        ),
    });

    let param = object(PARAM_KEYS, &[], |k| match k {
        "type" => json!({ "enum": ["string", "bool", "choice"], "default": "string" }),
        "default" => json!({ "type": ["string", "boolean", "number"] }),
        "options" => json!({ "type": "array", "items": { "type": ["string", "number"] } }),
        _ => string(),
    });

    let trigger_names = json!({ "enum": ["push", "pull_request", "manual"] });
    let on = json!({ "oneOf": [
        trigger_names,
        { "type": "array", "items": trigger_names },
        object(TRIGGER_KEYS, &[], |k| match k {
            "push" => json!({ "oneOf": [{ "type": "null" }, object(PUSH_KEYS, &[], |_| r("globs"))] }),
            "pull_request" => json!({ "oneOf": [{ "type": "null" }, object(PULL_REQUEST_KEYS, &[], |k| match k {
                "types" => json!({ "type": "array", "items": { "enum": PullRequestAction::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>() } }),
                "secrets_for_forks" => doc(boolean(), "Give pull requests from forks the stage secrets (off by default)."),
                _ => r("globs"),
            })] }),
            "schedule" => json!({ "oneOf": [r("schedule"), { "type": "array", "items": r("schedule") }] }),
            "manual" => json!({ "type": ["boolean", "null"] }),
            _ => object(WEBHOOK_KEYS, &["secret"], |_| doc(string(), "Name of the Gantry secret holding the webhook token.")),
        }),
    ]});

    let schedule = object(SCHEDULE_KEYS, &["cron"], |k| match k {
        "cron" => doc(
            string(),
            "Five-field cron (minute hour day-of-month month day-of-week) or @daily, @hourly, ...",
        ),
        "timezone" => doc(string(), "IANA time zone, default UTC."),
        "params" => {
            json!({ "type": "object", "additionalProperties": { "type": ["string", "number", "boolean"] } })
        }
        _ => string(),
    });

    let stage = object(STAGE_KEYS, &["name"], |k| match k {
        "name" => r("name"),
        "needs" => doc(
            json!({ "oneOf": [{ "type": "null" }, string(), { "type": "array", "items": string() }] }),
            "Stages this one waits for. Omitted: the stage above. []: none.",
        ),
        "when" => doc(
            string(),
            "A CEL condition over event, branch, tag, params, env and matrix.",
        ),
        "image" => doc(string(), "Container image the steps run in."),
        "steps" => json!({ "type": "array", "minItems": 1, "items": r("step") }),
        "s2i" => r("s2i"),
        "b2i" => r("b2i"),
        "deploy" => r("deploy"),
        "env" => r("env"),
        "timeout" => r("duration"),
        "retries" => {
            json!({ "type": "integer", "minimum": 0, "maximum": super::decode::stage::MAX_RETRIES })
        }
        "resources" => object(RESOURCES_KEYS, &[], |_| {
            object(
                QUANTITY_KEYS,
                &[],
                |_| json!({ "type": ["string", "number"] }),
            )
        }),
        "services" => {
            json!({ "type": "array", "items": object(SERVICE_KEYS, &["name", "image"], |k| match k {
            "env" => r("env"),
            "command" => r("command"),
            "ports" => r("ports"),
            _ => string(),
        }) })
        }
        "matrix" => json!({
            "type": "object",
            "properties": { "exclude": { "type": "array", "items": { "type": "object", "additionalProperties": { "type": ["string", "number", "boolean"] } } } },
            "additionalProperties": { "type": "array", "minItems": 1, "items": { "type": ["string", "number", "boolean"] } },
        }),
        "artifacts" => json!({ "oneOf": [
            { "type": "array", "items": string() },
            object(super::decode::stage::ARTIFACTS_KEYS, &["paths"], |_| json!({ "type": "array", "items": string() })),
        ] }),
        "cache" => object(CACHE_KEYS, &["key", "paths"], |k| match k {
            "key" => string(),
            _ => json!({ "type": "array", "items": string() }),
        }),
        "secrets" => json!({ "oneOf": [
            { "type": "array", "items": string() },
            { "type": "object", "additionalProperties": string() },
        ] }),
        "approval" => {
            json!({ "oneOf": [boolean(), { "type": "null" }, object(APPROVAL_KEYS, &[], |k| match k {
            "approvers" => json!({ "type": "array", "items": string() }),
            "timeout" => r("duration"),
            _ => string(),
        })] })
        }
        "kubernetes" => doc(
            r("stage_kubernetes"),
            "What this stage's Kubernetes Job gets, on top of the pipeline's `kubernetes`.",
        ),
        _ => boolean(),
    });

    let kube_field = |k: &str| match k {
        "namespace" => doc(string(), "The namespace the pipeline's Jobs run in."),
        "service_account" => doc(string(), "The Job's service account."),
        "node_selector" => json!({ "type": "object", "additionalProperties": string() }),
        "tolerations" => {
            json!({ "type": "array", "items": object(TOLERATION_KEYS, &[], |k| match k {
            "operator" => json!({ "enum": ["Equal", "Exists"] }),
            "effect" => json!({ "enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"] }),
            "toleration_seconds" => json!({ "type": "integer", "minimum": 0 }),
            _ => string(),
        }) })
        }
        "image_pull_secrets" => json!({ "type": "array", "items": string() }),
        "security_context" => doc(
            object(SECURITY_CONTEXT_KEYS, &[], |k| match k {
                "run_as_user" | "run_as_group" | "fs_group" => {
                    json!({ "type": "integer", "minimum": 0, "maximum": i32::MAX })
                }
                "capabilities" => {
                    json!({ "type": "array", "items": { "type": "string", "pattern": "^[A-Z_]+$" } })
                }
                "seccomp_profile" => {
                    json!({ "type": "string", "pattern": "^(RuntimeDefault|Unconfined|Localhost/[^/].*)$" })
                }
                _ => boolean(),
            }),
            "Who the Job's containers run as. Unset fields keep the defaults, which pass Pod Security `restricted`: user and group 1000, no root, no privilege escalation, all capabilities dropped, seccomp `RuntimeDefault`.",
        ),
        _ => doc(
            json!({ "type": "object", "additionalProperties": { "type": "string", "pattern": "^[a-z0-9.-]+/[A-Za-z0-9._-]+$" } }),
            "Environment variables from Kubernetes Secrets, as `VAR: SECRET/KEY`.",
        ),
    };
    let kubernetes = object(KUBERNETES_KEYS, &[], kube_field);
    let stage_kubernetes = object(STAGE_KUBERNETES_KEYS, &[], kube_field);

    let step = json!({ "oneOf": [
        doc(string(), "A shell script (shorthand for `run:`)."),
        object(STEP_KEYS, &["run"], |k| match k {
            "env" => r("env"),
            "timeout" => r("duration"),
            "run" => doc(string(), "Shell script run with `sh -e`. `${{ }}` is not expanded here: use environment variables."),
            _ => string(),
        }),
    ]});

    let compression = || {
        doc(
            json!({ "enum": ImageCompression::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>() }),
            "How hard the new layer is compressed: `fast` (gzip 1, the default), `default` (gzip 6), `best` (gzip 9). Smaller layers cost build time; see docs/performance.md.",
        )
    };
    let s2i = object(S2I_KEYS, &["builder", "output"], |k| match k {
        "env" => r("env"),
        "compression" => compression(),
        "incremental" => boolean(),
        "builder" => doc(string(), "The S2I builder image."),
        "output" => doc(string(), "Where to push the built image."),
        _ => string(),
    });
    let b2i = object(B2I_KEYS, &["artifact", "base", "output"], |k| match k {
        "preset" => json!({ "enum": B2iPreset::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>() }),
        "compression" => compression(),
        "entrypoint" | "cmd" => r("command"),
        "ports" => r("ports"),
        "env" => r("env"),
        "labels" => json!({ "type": "object", "additionalProperties": string() }),
        "artifact" => doc(
            string(),
            "Path of the file in the artifacts of a needed stage.",
        ),
        "from" => doc(
            string(),
            "The needed stage that keeps the artifact (found automatically when omitted).",
        ),
        _ => string(),
    });
    let deploy = object(DEPLOY_KEYS, &["deployment", "image"], |k| match k {
        "timeout" => r("duration"),
        "rollback_on_failure" => boolean(),
        "namespace" => doc(string(), "Kubernetes namespace, default `default`."),
        _ => string(),
    });

    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Gantry pipeline",
        "description": "A Gantry pipeline-as-code file (.gantry.yaml). See docs/pipeline-format.md.",
        "$ref": "#/$defs/pipeline",
        "$defs": {
            "pipeline": pipeline,
            "param": param,
            "on": on,
            "schedule": schedule,
            "stage": stage,
            "step": step,
            "s2i": s2i,
            "b2i": b2i,
            "deploy": deploy,
            "kubernetes": kubernetes,
            "stage_kubernetes": stage_kubernetes,
            "name": { "type": "string", "pattern": "^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$" },
            "env": {
                "type": "object",
                "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "not": { "pattern": "^GANTRY_" } },
                "additionalProperties": { "type": ["string", "number", "boolean"] },
            },
            "duration": { "type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ms|s|m|h|d))+$" },
            "globs": { "oneOf": [string(), { "type": "array", "items": string() }] },
            "command": { "oneOf": [string(), { "type": "array", "items": string() }] },
            "ports": { "type": "array", "items": { "oneOf": [
                { "type": "integer", "minimum": 1, "maximum": 65535 },
                { "type": "string", "pattern": "^[0-9]{1,5}(/(tcp|udp))?$" },
            ] } },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(v: &Value) -> Vec<String> {
        let mut keys: Vec<String> = v["properties"]
            .as_object()
            .expect("has properties")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn schema_objects_list_exactly_the_keys_the_decoder_accepts() {
        let s = schema();
        let defs = &s["$defs"];
        assert_eq!(keys_of(&defs["pipeline"]), sorted(PIPELINE_KEYS));
        assert_eq!(keys_of(&defs["param"]), sorted(PARAM_KEYS));
        assert_eq!(keys_of(&defs["stage"]), sorted(STAGE_KEYS));
        assert_eq!(keys_of(&defs["step"]["oneOf"][1]), sorted(STEP_KEYS));
        assert_eq!(keys_of(&defs["s2i"]), sorted(S2I_KEYS));
        assert_eq!(keys_of(&defs["b2i"]), sorted(B2I_KEYS));
        assert_eq!(keys_of(&defs["deploy"]), sorted(DEPLOY_KEYS));
        assert_eq!(keys_of(&defs["schedule"]), sorted(SCHEDULE_KEYS));
        assert_eq!(
            keys_of(&defs["pipeline"]["properties"]["concurrency"]),
            sorted(super::super::decode::CONCURRENCY_KEYS)
        );
        let on = &defs["on"]["oneOf"][2];
        assert_eq!(keys_of(on), sorted(TRIGGER_KEYS));
        assert_eq!(
            keys_of(&on["properties"]["push"]["oneOf"][1]),
            sorted(PUSH_KEYS)
        );
        assert_eq!(
            keys_of(&on["properties"]["pull_request"]["oneOf"][1]),
            sorted(PULL_REQUEST_KEYS)
        );
        let stage = &defs["stage"]["properties"];
        assert_eq!(keys_of(&stage["resources"]), sorted(RESOURCES_KEYS));
        assert_eq!(keys_of(&stage["cache"]), sorted(CACHE_KEYS));
        assert_eq!(keys_of(&stage["services"]["items"]), sorted(SERVICE_KEYS));
        assert_eq!(
            keys_of(&stage["approval"]["oneOf"][2]),
            sorted(APPROVAL_KEYS)
        );
    }
}
