//! Image "pulls": an image with a root directory ([`super::Images::roots`]) is present; an
//! image on a registry of this machine (`127.0.0.1:PORT/…`, `localhost:PORT/…`) is looked up
//! there for real, with the credentials of the pod's `imagePullSecrets` when the registry
//! wants some; an image marked missing fails as a tag that does not exist does; any other
//! image pulls fine (there is nothing to run from it: containers run this machine's
//! programs). Error messages are containerd's, as the kubelet passes them on.

use base64::Engine as _;
use serde_json::Value;

use super::Kubelet;
use crate::kube::lock;

/// What pulling needs to know about the pod.
pub(super) struct PullContext<'a> {
    pub namespace: &'a str,
    /// Names of the pod's `imagePullSecrets`.
    pub secrets: Vec<String>,
}

/// `sha256:` and 64 hex digits derived from `text`: a stable, plausible digest.
pub(super) fn fake_digest(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hex = String::from("sha256:");
    for round in 0u8..4 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (text, round).hash(&mut hasher);
        hex.push_str(&format!("{:016x}", hasher.finish()));
    }
    hex
}

/// The repository part of an image reference (no tag or digest).
fn repository(image: &str) -> &str {
    if let Some((repo, _)) = image.split_once('@') {
        return repo;
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

/// `IfNotPresent` unless the container says otherwise or the tag is `latest` (or missing),
/// as the API server defaults it.
pub(super) fn pull_policy(container: &Value) -> &str {
    if let Some(policy) = container["imagePullPolicy"].as_str() {
        return policy;
    }
    let image = container["image"].as_str().unwrap_or("");
    let tagged = image.contains('@') || repository(image) != image;
    if !tagged || image.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

impl Kubelet {
    /// The image ID of `image` if it was pulled on this node already (or has a root
    /// directory).
    pub(super) fn image_present(&self, image: &str) -> Option<String> {
        if lock(&self.images).roots.contains_key(image) {
            return Some(fake_digest(image));
        }
        lock(&self.present).get(image).cloned()
    }

    /// Pulls `image`: its image ID, or the error the runtime would give.
    pub(super) async fn pull(
        &self,
        image: &str,
        context: &PullContext<'_>,
    ) -> Result<String, String> {
        let not_found = || {
            format!(
                "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": \
                 failed to resolve reference \"{image}\": {image}: not found"
            )
        };
        {
            let images = lock(&self.images);
            if images.missing.contains(image) {
                return Err(not_found());
            }
            if images.roots.contains_key(image) {
                return Ok(fake_digest(image));
            }
        }
        let local = image
            .split_once('/')
            .filter(|(host, _)| host.starts_with("127.0.0.1:") || host.starts_with("localhost:"));
        let Some((host, rest)) = local else {
            let id = format!("{}@{}", repository(image), fake_digest(image));
            lock(&self.present).insert(image.to_owned(), id.clone());
            return Ok(id);
        };
        let (repo, reference) = match rest.split_once('@') {
            Some((repo, digest)) => (repo, digest),
            None => match rest.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo, tag),
                _ => (rest, "latest"),
            },
        };
        let url = format!("http://{host}/v2/{repo}/manifests/{reference}");
        let head = |auth: Option<String>| {
            let mut request = self.http.head(&url).header(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
                 application/vnd.docker.distribution.manifest.v2+json, \
                 application/vnd.docker.distribution.manifest.list.v2+json",
            );
            if let Some(auth) = auth {
                request = request.header("Authorization", format!("Basic {auth}"));
            }
            request.send()
        };
        let unavailable = |e: reqwest::Error| {
            format!(
                "rpc error: code = Unavailable desc = failed to pull and unpack image \"{image}\": \
                 failed to resolve reference \"{image}\": {e}"
            )
        };
        let mut answer = head(None).await.map_err(unavailable)?;
        if answer.status() == reqwest::StatusCode::UNAUTHORIZED
            && let Some(auth) = self.registry_auth(host, context).await
        {
            answer = head(Some(auth)).await.map_err(unavailable)?;
        }
        match answer.status() {
            s if s.is_success() => {
                let digest = answer
                    .headers()
                    .get("Docker-Content-Digest")
                    .and_then(|d| d.to_str().ok())
                    .map(str::to_owned)
                    .unwrap_or_else(|| fake_digest(image));
                let id = format!("{host}/{repo}@{digest}");
                lock(&self.present).insert(image.to_owned(), id.clone());
                Ok(id)
            }
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => Err(format!(
                "rpc error: code = Unknown desc = failed to pull and unpack image \"{image}\": \
                 failed to resolve reference \"{image}\": pull access denied, repository does not \
                 exist or may require authorization: authorization failed: {}",
                answer.status()
            )),
            _ => Err(not_found()),
        }
    }

    /// Basic credentials for `host` from the pod's pull secrets (docker config JSON), read as
    /// the node (the Node authorizer allows exactly the Secrets its pods name).
    async fn registry_auth(&self, host: &str, context: &PullContext<'_>) -> Option<String> {
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(self.client.clone(), context.namespace);
        for name in &context.secrets {
            let Ok(Some(secret)) = api.get_opt(name).await else {
                continue;
            };
            let data = secret.data.unwrap_or_default();
            let Some(config) = data
                .get(".dockerconfigjson")
                .and_then(|d| serde_json::from_slice::<Value>(&d.0).ok())
            else {
                continue;
            };
            let entry = &config["auths"][host];
            if let Some(auth) = entry["auth"].as_str() {
                return Some(auth.to_owned());
            }
            if let (Some(user), Some(password)) =
                (entry["username"].as_str(), entry["password"].as_str())
            {
                return Some(
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")),
                );
            }
        }
        None
    }
}
