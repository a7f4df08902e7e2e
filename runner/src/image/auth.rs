//! Registry credentials and challenges: reading a docker `config.json` (the format `docker
//! login`, Kubernetes pull secrets and most CI systems share), and parsing the
//! `WWW-Authenticate` header a registry answers `401` with (Basic, or a Bearer token service).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

use super::task::RegistryAccess;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("not a docker config.json: {0}")]
    Json(String),
    #[error("the `auth` of `{0}` is not base64 of USER:PASSWORD")]
    BadAuth(String),
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
    registrytoken: Option<String>,
}

/// The credentials of a docker `config.json`, one [`RegistryAccess`] per registry host
/// (`https://index.docker.io/v1/` and friends become `docker.io`). Credential helpers
/// (`credsStore`) are not consulted: a CI engine has no desktop keychain.
pub fn parse_docker_config(json: &str) -> Result<Vec<RegistryAccess>, AuthError> {
    let config: DockerConfig =
        serde_json::from_str(json).map_err(|e| AuthError::Json(e.to_string()))?;
    let mut out = Vec::new();
    for (key, entry) in config.auths {
        let host = host_of(&key);
        let (mut username, mut password) = (entry.username, entry.password);
        if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| AuthError::BadAuth(key.clone()))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| AuthError::BadAuth(key.clone()))?;
            username = Some(user.to_owned());
            password = Some(pass.to_owned());
        }
        out.push(RegistryAccess {
            host,
            plain_http: false,
            username,
            password,
            token: entry.identitytoken.or(entry.registrytoken),
        });
    }
    Ok(out)
}

/// `https://index.docker.io/v1/` → `docker.io`; `reg.example.com:5000/` → `reg.example.com:5000`.
pub fn host_of(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        other => other.to_owned(),
    }
}

/// What a registry's `401` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="https://auth/token",service="reg",scope="..."`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let params = parse_params(params);
            Some(Challenge::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
            })
        }
        _ => None,
    }
}

/// `a="x,y",b=z` → {a: "x,y", b: "z"} (commas inside quotes do not split).
fn parse_params(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_owned());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_entries_become_accesses_per_host() {
        let auth = base64::engine::general_purpose::STANDARD.encode("ci:s3cret:with:colons");
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{auth}"}},
                "127.0.0.1:5000": {{"username": "u", "password": "p"}},
                "ghcr.io": {{"identitytoken": "tok"}}
            }}, "credsStore": "desktop"}}"#
        );
        let accesses = parse_docker_config(&json).expect("valid");
        let find = |h: &str| {
            accesses
                .iter()
                .find(|a| a.host == h)
                .unwrap_or_else(|| panic!("no {h}"))
        };
        assert_eq!(find("docker.io").username.as_deref(), Some("ci"));
        assert_eq!(
            find("docker.io").password.as_deref(),
            Some("s3cret:with:colons")
        );
        assert_eq!(find("127.0.0.1:5000").password.as_deref(), Some("p"));
        assert_eq!(find("ghcr.io").token.as_deref(), Some("tok"));
        assert!(!format!("{:?}", find("127.0.0.1:5000")).contains("\"p\""));
    }

    #[test]
    fn broken_configs_are_reported() {
        assert!(matches!(parse_docker_config("{"), Err(AuthError::Json(_))));
        assert_eq!(
            parse_docker_config(r#"{"auths": {"r.io": {"auth": "bm9jb2xvbg=="}}}"#),
            Err(AuthError::BadAuth("r.io".into()))
        );
    }

    #[test]
    fn challenges_are_parsed() {
        assert_eq!(
            parse_challenge(r#"Basic realm="registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg.example".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }
}
