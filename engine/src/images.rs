//! Images glue on the engine's side: how image stages reach their registries (plain HTTP only
//! where configured, credentials from the stage's `REGISTRY_AUTH` secret or the engine's docker
//! `config.json`), and the labels and timestamps every built image carries. The building
//! itself is the runner library's (`gantry_runner::image`), which the engine may also call
//! directly.

use std::path::Path;

use gantry_runner::image::auth::parse_docker_config;
use gantry_runner::image::reference::Reference;
use gantry_runner::image::task::RegistryAccess;

/// The stage secret variable whose value is a docker `config.json` for the image stage.
pub const REGISTRY_AUTH_SECRET: &str = "REGISTRY_AUTH";

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("the {REGISTRY_AUTH_SECRET} secret is not a usable docker config.json: {0}")]
    BadSecret(String),
    #[error("the registry credentials file {path}: {why}")]
    BadFile { path: String, why: String },
}

/// Access to the registries of `images` (names as written; unparsable ones are left for the
/// runner to report). Credentials: the stage secret's entry for a host, else the engine file's.
pub fn registries(
    images: &[&str],
    insecure: &[String],
    auth_file: Option<&Path>,
    stage_secret: Option<&str>,
) -> Result<Vec<RegistryAccess>, ImagesError> {
    let from_secret = match stage_secret {
        Some(json) => {
            parse_docker_config(json).map_err(|e| ImagesError::BadSecret(e.to_string()))?
        }
        None => Vec::new(),
    };
    let from_file = match auth_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ImagesError::BadFile {
                path: path.display().to_string(),
                why: e.to_string(),
            })?;
            parse_docker_config(&text).map_err(|e| ImagesError::BadFile {
                path: path.display().to_string(),
                why: e.to_string(),
            })?
        }
        None => Vec::new(),
    };
    let mut out: Vec<RegistryAccess> = Vec::new();
    for image in images {
        let Ok(reference) = Reference::parse(image) else {
            continue;
        };
        let host = reference.registry;
        if out.iter().any(|a| a.host == host) {
            continue;
        }
        let mut access = from_secret
            .iter()
            .chain(&from_file)
            .find(|a| a.host == host)
            .cloned()
            .unwrap_or_else(|| RegistryAccess {
                host: host.clone(),
                ..RegistryAccess::default()
            });
        access.plain_http = insecure.iter().any(|h| h.trim() == host);
        out.push(access);
    }
    Ok(out)
}

/// The secret values inside `accesses`, to mask in the stage log.
pub fn credential_values(accesses: &[RegistryAccess]) -> Vec<String> {
    accesses
        .iter()
        .flat_map(|a| [a.password.clone(), a.token.clone()])
        .flatten()
        .filter(|v| !v.is_empty())
        .collect()
}

/// Seconds since the epoch of the run's commit, when the trigger recorded it (`commit_time`,
/// RFC 3339 or seconds); else 0. Image timestamps come from it so that the same commit
/// builds the same image.
pub fn created_epoch(context: &serde_json::Value) -> i64 {
    let Some(value) = ["commit_time", "commit_timestamp"]
        .iter()
        .find_map(|k| context.get(*k))
    else {
        return 0;
    };
    if let Some(secs) = value.as_i64() {
        return secs.max(0);
    }
    value
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp().max(0))
}

/// The repository URL of the run's source, when the trigger recorded it.
pub fn source_url(context: &serde_json::Value) -> Option<String> {
    ["repository_url", "clone_url", "repo_url"]
        .iter()
        .find_map(|k| context.get(*k)?.as_str())
        .map(str::to_owned)
}

/// Labels every image Gantry builds carries, before the stage's own (which win).
pub fn standard_labels(
    context: &serde_json::Value,
    commit: Option<&str>,
    run_link: String,
) -> Vec<(String, String)> {
    let mut labels = vec![(
        "org.opencontainers.image.created".to_owned(),
        gantry_runner::image::oci::rfc3339(created_epoch(context)),
    )];
    if let Some(sha) = commit.filter(|s| !s.is_empty()) {
        labels.push(("org.opencontainers.image.revision".into(), sha.to_owned()));
    }
    if let Some(url) = source_url(context) {
        labels.push(("org.opencontainers.image.source".into(), url));
    }
    labels.push(("io.gantry.run".into(), run_link));
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_credentials_win_and_insecure_is_per_host() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("config.json");
        std::fs::write(
            &file,
            r#"{"auths": {"a.io": {"username": "file", "password": "f"},
                          "b.io": {"username": "file", "password": "f"}}}"#,
        )
        .expect("write");
        let secret = r#"{"auths": {"a.io": {"username": "secret", "password": "s"}}}"#;
        let accesses = registries(
            &[
                "a.io/x:1",
                "b.io/y",
                "a.io/z",
                "127.0.0.1:5000/w",
                "Not Valid",
            ],
            &["127.0.0.1:5000".into()],
            Some(&file),
            Some(secret),
        )
        .expect("valid");
        let hosts: Vec<(&str, Option<&str>, bool)> = accesses
            .iter()
            .map(|a| (a.host.as_str(), a.username.as_deref(), a.plain_http))
            .collect();
        assert_eq!(
            hosts,
            [
                ("a.io", Some("secret"), false),
                ("b.io", Some("file"), false),
                ("127.0.0.1:5000", None, true)
            ]
        );
        assert_eq!(credential_values(&accesses), ["s", "f"]);
        assert!(matches!(
            registries(&[], &[], None, Some("nope")),
            Err(ImagesError::BadSecret(_))
        ));
    }

    #[test]
    fn commit_time_sets_the_image_time() {
        assert_eq!(created_epoch(&json!({})), 0);
        assert_eq!(
            created_epoch(&json!({"commit_time": "2024-05-01T12:00:00+02:00"})),
            1_714_557_600
        );
        assert_eq!(created_epoch(&json!({"commit_timestamp": 42})), 42);
        let labels = standard_labels(&json!({}), Some("abc"), "http://e/runs/1".into());
        assert_eq!(labels[0].1, "1970-01-01T00:00:00Z");
        assert!(labels.contains(&("org.opencontainers.image.revision".into(), "abc".into())));
    }
}
