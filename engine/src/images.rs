//! Images glue on the engine's side: how image stages reach their registries (plain HTTP only
//! where configured, credentials from the stage's `REGISTRY_AUTH` secret or the engine's docker
//! `config.json`), and the labels and timestamps every built image carries: only facts of the
//! inputs (commit, its time, source), never of the run, so the same inputs give the same image
//! digest (the run's own record keeps which image each stage pushed). The building
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
/// RFC 3339 or seconds). Image timestamps come from it (`SOURCE_DATE_EPOCH` semantics) so
/// that the same commit builds the same image on any day.
pub fn commit_time(context: &serde_json::Value) -> Option<i64> {
    let value = ["commit_time", "commit_timestamp"]
        .iter()
        .find_map(|k| context.get(*k))?;
    if let Some(secs) = value.as_i64() {
        return Some(secs.max(0));
    }
    value
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp().max(0))
}

/// [`commit_time`], or 0 (1970-01-01: still the same for the same inputs) when unknown.
pub fn created_epoch(context: &serde_json::Value) -> i64 {
    commit_time(context).unwrap_or(0)
}

/// The runner's compression for a stage's `compression`.
pub fn compression(
    chosen: crate::pipeline::model::ImageCompression,
) -> gantry_runner::image::Compression {
    use crate::pipeline::model::ImageCompression as Chosen;
    use gantry_runner::image::Compression;
    match chosen {
        Chosen::Fast => Compression::Fast,
        Chosen::Default => Compression::Default,
        Chosen::Best => Compression::Best,
    }
}

/// The repository URL of the run's source, when the trigger recorded it.
pub fn source_url(context: &serde_json::Value) -> Option<String> {
    ["repository_url", "clone_url", "repo_url"]
        .iter()
        .find_map(|k| context.get(*k)?.as_str())
        .map(str::to_owned)
}

/// Labels every image Gantry builds carries, before the stage's own (which win). Nothing
/// about the run (its number, its URL): that would make every run's image a new digest. The
/// runner adds `org.opencontainers.image.created` from the time it dates the image with.
pub fn standard_labels(context: &serde_json::Value, commit: Option<&str>) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    if let Some(sha) = commit.filter(|s| !s.is_empty()) {
        labels.push(("org.opencontainers.image.revision".into(), sha.to_owned()));
    }
    if let Some(url) = source_url(context) {
        labels.push(("org.opencontainers.image.source".into(), url));
    }
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
        assert_eq!(commit_time(&json!({"commit_time": "yesterday"})), None);
    }

    /// `compression:` of a b2i and an s2i stage, as the runner gets it.
    fn compressions(extra: &str) -> Result<Vec<gantry_runner::image::Compression>, String> {
        use crate::pipeline::model::StageKind;
        let yaml = format!(
            "name: c\nstages:\n  - name: build\n    steps: [make]\n    artifacts: [out/]\n  \
             - name: pack\n    needs: [build]\n    b2i:\n      artifact: out/app\n      \
             base: r.io/b:1\n      output: r.io/o:1\n{extra}  - name: src\n    s2i:\n      \
             builder: r.io/s:1\n      output: r.io/p:1\n{extra}"
        );
        let pipeline = crate::pipeline::parse("c.yaml", &yaml).map_err(|r| r.to_string())?;
        Ok(pipeline
            .stages
            .iter()
            .filter_map(|s| match &s.kind {
                StageKind::B2i(b) => Some(compression(b.compression)),
                StageKind::S2i(s) => Some(compression(s.compression)),
                _ => None,
            })
            .collect())
    }

    #[test]
    fn image_stages_choose_their_compression() {
        use gantry_runner::image::Compression;
        assert_eq!(
            compressions(""),
            Ok(vec![Compression::Fast, Compression::Fast])
        );
        assert_eq!(
            compressions("      compression: best\n"),
            Ok(vec![Compression::Best, Compression::Best])
        );
        assert_eq!(Compression::Best.gzip_level(), 9);
        assert_eq!(Compression::Default.gzip_level(), 6);
        let err = compressions("      compression: zstd\n").expect_err("not a choice");
        assert!(
            err.contains("unknown compression `zstd` (expected fast, default or best)"),
            "{err}"
        );
    }

    #[test]
    fn standard_labels_carry_nothing_of_the_run() {
        let context = json!({"event": "manual", "commit_sha": "abc", "commit_time": 7});
        let labels = standard_labels(&context, Some("abc"));
        assert_eq!(
            labels,
            [(
                "org.opencontainers.image.revision".to_owned(),
                "abc".to_owned()
            )]
        );
    }
}
