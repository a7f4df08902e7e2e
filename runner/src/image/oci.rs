//! The documents of an image: manifests (OCI and Docker v2), indexes / manifest lists, and the
//! image config. The config is edited as raw JSON so fields Gantry does not know survive.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// What the manifest endpoint is asked to answer with.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

/// Whether a media type names an index / manifest list rather than one image.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// The entry of an index for `os`/`architecture` (the first one when several match).
pub fn pick_platform<'a>(index: &'a Index, os: &str, architecture: &str) -> Option<&'a Descriptor> {
    index.manifests.iter().find(|m| {
        m.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == architecture)
    })
}

/// The platforms an index offers (`linux/arm64`, `linux/arm/v7`), each once, in index order;
/// entries without a platform (attestations) are left out.
pub fn platforms(index: &Index) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in index.manifests.iter().filter_map(|m| m.platform.as_ref()) {
        if p.os == "unknown" {
            // BuildKit's attestation manifests carry `unknown/unknown`: not an image to run.
            continue;
        }
        let name = match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// The media types of a new image that extends `base`: the same family as the base, since
/// some registries reject a manifest that mixes Docker and OCI types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    pub manifest: &'static str,
    pub config: &'static str,
    pub layer: &'static str,
}

impl Family {
    pub fn of(manifest_media_type: &str) -> Family {
        if manifest_media_type == DOCKER_MANIFEST {
            Family {
                manifest: DOCKER_MANIFEST,
                config: DOCKER_CONFIG,
                layer: DOCKER_LAYER_GZIP,
            }
        } else {
            Family {
                manifest: OCI_MANIFEST,
                config: OCI_CONFIG,
                layer: OCI_LAYER_GZIP,
            }
        }
    }
}

/// RFC 3339 UTC for seconds since the epoch (`created` fields and the `.created` label).
pub fn rfc3339(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm): no date library needed for one format.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Edits of an image config, applied in order by [`apply`].
#[derive(Default, Debug, Clone)]
pub struct ConfigEdit {
    pub created: String,
    pub created_by: String,
    pub diff_id: String,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub ports: Vec<String>,
    pub labels: Vec<(String, String)>,
}

/// Applies `edit` to a config document (`{"architecture", "os", "config": {...}, "rootfs",
/// "history"}`), keeping every field it does not touch.
pub fn apply(config: &mut Value, edit: &ConfigEdit) -> Result<(), String> {
    let root = config
        .as_object_mut()
        .ok_or("the image config is not a JSON object")?;
    root.insert("created".into(), json!(edit.created));
    let run = root
        .entry("config")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or("the image config's `config` is not an object")?;
    if let Some(entrypoint) = &edit.entrypoint {
        run.insert("Entrypoint".into(), json!(entrypoint));
        // As in a Dockerfile: a new entrypoint drops the base's Cmd (its arguments), unless
        // new ones are given too.
        if edit.cmd.is_none() {
            run.remove("Cmd");
        }
    }
    if let Some(cmd) = &edit.cmd {
        run.insert("Cmd".into(), json!(cmd));
    }
    if !edit.env.is_empty() {
        let mut env: Vec<String> = run
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for (key, value) in &edit.env {
            let prefix = format!("{key}=");
            env.retain(|e| !e.starts_with(&prefix));
            env.push(format!("{key}={value}"));
        }
        run.insert("Env".into(), json!(env));
    }
    if let Some(workdir) = &edit.workdir {
        run.insert("WorkingDir".into(), json!(workdir));
    }
    if let Some(user) = &edit.user {
        run.insert("User".into(), json!(user));
    }
    if !edit.ports.is_empty() {
        let ports = object_at(run, "ExposedPorts")?;
        for port in &edit.ports {
            ports.insert(port.clone(), json!({}));
        }
    }
    if !edit.labels.is_empty() {
        let labels = object_at(run, "Labels")?;
        for (key, value) in &edit.labels {
            labels.insert(key.clone(), json!(value));
        }
    }
    let rootfs = root
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}))
        .as_object_mut()
        .ok_or("the image config's `rootfs` is not an object")?;
    rootfs
        .entry("diff_ids")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or("the image config's `rootfs.diff_ids` is not a list")?
        .push(json!(edit.diff_id));
    root.entry("history")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or("the image config's `history` is not a list")?
        .push(json!({"created": edit.created, "created_by": edit.created_by}));
    Ok(())
}

fn object_at<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Map<String, Value>, String> {
    let slot = map.entry(key).or_insert_with(|| json!({}));
    if slot.is_null() {
        *slot = json!({});
    }
    slot.as_object_mut()
        .ok_or_else(|| format!("the image config's `{key}` is not an object"))
}

/// A string field of the config's `config` section (`User`, `WorkingDir`).
pub fn run_field<'a>(config: &'a Value, key: &str) -> Option<&'a str> {
    config.get("config")?.get(key)?.as_str()
}

/// A label of the image.
pub fn label<'a>(config: &'a Value, key: &str) -> Option<&'a str> {
    config.get("config")?.get("Labels")?.get(key)?.as_str()
}

/// The config's `Env` as pairs.
pub fn env_of(config: &Value) -> Vec<(String, String)> {
    config
        .get("config")
        .and_then(|c| c.get("Env"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (e.to_owned(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_epoch_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn edits_keep_unknown_fields_and_replace_the_base_command() {
        let mut config = json!({
            "architecture": "amd64", "os": "linux", "x-vendor": {"kept": true},
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin", "A=1"], "Labels": null},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:base"]},
        });
        let edit = ConfigEdit {
            created: rfc3339(0),
            created_by: "test".into(),
            diff_id: "sha256:new".into(),
            entrypoint: Some(vec!["/app/hello".into()]),
            env: vec![("A".into(), "2".into())],
            ports: vec!["8080/tcp".into()],
            labels: vec![("k".into(), "v".into())],
            ..ConfigEdit::default()
        };
        apply(&mut config, &edit).expect("applies");
        assert_eq!(config["x-vendor"]["kept"], json!(true));
        assert_eq!(config["config"]["Entrypoint"], json!(["/app/hello"]));
        assert!(config["config"].get("Cmd").is_none());
        assert_eq!(config["config"]["Env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(config["config"]["ExposedPorts"], json!({"8080/tcp": {}}));
        assert_eq!(config["config"]["Labels"], json!({"k": "v"}));
        assert_eq!(
            config["rootfs"]["diff_ids"],
            json!(["sha256:base", "sha256:new"])
        );
        assert_eq!(config["history"][0]["created_by"], json!("test"));
    }

    #[test]
    fn platforms_are_picked_from_an_index() {
        let index: Index = serde_json::from_value(json!({"manifests": [
            {"mediaType": OCI_MANIFEST, "digest": "sha256:a", "size": 1,
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": OCI_MANIFEST, "digest": "sha256:b", "size": 1,
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]}))
        .expect("index");
        assert_eq!(
            pick_platform(&index, "linux", "amd64").map(|d| d.digest.as_str()),
            Some("sha256:b")
        );
        assert!(pick_platform(&index, "windows", "amd64").is_none());
    }
}
