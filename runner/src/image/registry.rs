//! The OCI distribution API, as far as building images needs it: manifests (following an index
//! to one platform), blobs downloaded to files and uploaded from files as streams (a layer is
//! never whole in memory), existence checks, cross-repository mounts, and the auth handshake
//! (anonymous, Basic, or a Bearer token from the registry's token service).
//!
//! Uploads are monolithic (`POST` then one `PUT` with the whole blob as a streamed body): with
//! the size known that is one round trip less than chunked `PATCH`es, and the registry gets the
//! digest to verify at the end.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::auth::{Challenge, parse_challenge};
use super::oci::{self, Descriptor, Index, MANIFEST_ACCEPT, Manifest};
use super::reference::api_host;
use super::task::RegistryAccess;

/// Manifests and configs are small; anything larger is not what we asked for.
const DOCUMENT_LIMIT: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    NotFound(String),
    /// An index (multi-platform image) without an entry for the platform wanted.
    #[error("the image has no {wanted} entry; it is built for {}", offered_list(.offered))]
    NoPlatform {
        wanted: String,
        /// `os/architecture[/variant]` of each entry, in index order.
        offered: Vec<String>,
    },
    #[error(
        "registry {host} requires credentials and none are configured for it (a docker config.json in the stage's REGISTRY_AUTH secret, or the engine's --registry-auth file)"
    )]
    NeedsCredentials { host: String },
    #[error("registry {host} rejected the credentials of user `{user}` (authentication failed)")]
    BadCredentials { host: String, user: String },
    #[error("registry {host} denied {what}: {message}")]
    Denied {
        host: String,
        what: String,
        message: String,
    },
    #[error("registry {host} answered {what} with HTTP {status}: {message}")]
    Http {
        host: String,
        what: String,
        status: u16,
        message: String,
    },
    #[error("cannot reach registry {host} ({detail})")]
    Unreachable { host: String, detail: String },
    #[error("registry {host}: {why}")]
    Protocol { host: String, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// A manifest resolved to one image (an index already followed to this platform's entry).
#[derive(Clone, Debug)]
pub struct Resolved {
    pub manifest: Manifest,
    pub media_type: String,
    pub digest: String,
}

/// A connection to one registry, authorised for the repositories it was opened for.
pub struct Registry {
    http: reqwest::Client,
    host: String,
    base: String,
    authorization: Mutex<Option<HeaderValue>>,
}

impl Registry {
    /// Opens `access.host` and authenticates for `scopes` (`repository:NAME:pull,push`).
    pub async fn connect(
        access: &RegistryAccess,
        scopes: &[String],
    ) -> Result<Registry, RegistryError> {
        let scheme = if access.plain_http { "http" } else { "https" };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("gantry-runner/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RegistryError::Protocol {
                host: access.host.clone(),
                why: format!("cannot create the HTTP client: {e}"),
            })?;
        let registry = Registry {
            http,
            host: access.host.clone(),
            base: format!("{scheme}://{}", api_host(&access.host)),
            authorization: Mutex::new(None),
        };
        registry.authenticate(access, scopes).await?;
        Ok(registry)
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    async fn authenticate(
        &self,
        access: &RegistryAccess,
        scopes: &[String],
    ) -> Result<(), RegistryError> {
        let answer = self
            .send(self.http.get(format!("{}/v2/", self.base)), "the API check")
            .await?;
        if answer.status() != StatusCode::UNAUTHORIZED {
            return if answer.status().is_success() {
                Ok(())
            } else {
                Err(self.failure("the API check", answer).await)
            };
        }
        let challenge = answer
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
            .ok_or_else(|| RegistryError::Protocol {
                host: self.host.clone(),
                why: "it answered 401 without an authentication challenge Gantry understands"
                    .into(),
            })?;
        let user = access
            .username
            .clone()
            .or_else(|| access.token.as_ref().map(|_| "<token>".to_owned()));
        let secret = access.password.clone().or_else(|| access.token.clone());
        let basic = match (&user, &secret) {
            (Some(user), Some(secret)) => Some(basic_header(user, secret)?),
            _ => None,
        };
        match challenge {
            Challenge::Basic => {
                let basic = basic.ok_or_else(|| RegistryError::NeedsCredentials {
                    host: self.host.clone(),
                })?;
                let again = self
                    .send(
                        self.http
                            .get(format!("{}/v2/", self.base))
                            .header(AUTHORIZATION, basic.clone()),
                        "the API check",
                    )
                    .await?;
                if again.status() == StatusCode::UNAUTHORIZED {
                    return Err(RegistryError::BadCredentials {
                        host: self.host.clone(),
                        user: user.unwrap_or_default(),
                    });
                }
                if !again.status().is_success() {
                    return Err(self.failure("the API check", again).await);
                }
                self.set_authorization(basic);
            }
            Challenge::Bearer { realm, service } => {
                let mut query: Vec<(&str, &str)> = Vec::new();
                if let Some(service) = &service {
                    query.push(("service", service));
                }
                for scope in scopes {
                    query.push(("scope", scope));
                }
                let mut request = self.http.get(&realm).query(&query);
                if let Some(basic) = &basic {
                    request = request.header(AUTHORIZATION, basic.clone());
                }
                let answer = self.send(request, "the token request").await?;
                if answer.status() == StatusCode::UNAUTHORIZED {
                    return Err(match user {
                        Some(user) => RegistryError::BadCredentials {
                            host: self.host.clone(),
                            user,
                        },
                        None => RegistryError::NeedsCredentials {
                            host: self.host.clone(),
                        },
                    });
                }
                if !answer.status().is_success() {
                    return Err(self.failure("the token request", answer).await);
                }
                let body: serde_json::Value =
                    answer.json().await.map_err(|e| RegistryError::Protocol {
                        host: self.host.clone(),
                        why: format!(
                            "its token service answered with something else than JSON: {e}"
                        ),
                    })?;
                let token = body
                    .get("token")
                    .or_else(|| body.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| RegistryError::Protocol {
                        host: self.host.clone(),
                        why: "its token service answered without a token".into(),
                    })?;
                let mut header =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        RegistryError::Protocol {
                            host: self.host.clone(),
                            why: "its token is not a valid header value".into(),
                        }
                    })?;
                header.set_sensitive(true);
                self.set_authorization(header);
            }
        }
        Ok(())
    }

    fn set_authorization(&self, value: HeaderValue) {
        if let Ok(mut slot) = self.authorization.lock() {
            *slot = Some(value);
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut request = self.http.request(method, url);
        if let Some(auth) = self.authorization.lock().ok().and_then(|a| a.clone()) {
            request = request.header(AUTHORIZATION, auth);
        }
        request
    }

    async fn send(&self, request: RequestBuilder, what: &str) -> Result<Response, RegistryError> {
        request.send().await.map_err(|e| self.unreachable(what, e))
    }

    /// A transport error, without the request's URL: an upload URL carries a session id and
    /// state that run to hundreds of characters and say nothing to the reader; `host/repository`
    /// says where.
    fn unreachable(&self, what: &str, e: reqwest::Error) -> RegistryError {
        let place = e.url().map(short_place);
        let cause = crate::engine::describe(&e.without_url());
        RegistryError::Unreachable {
            host: self.host.clone(),
            detail: match place {
                Some(place) if !what.contains(&place) => format!("{what} at {place}: {cause}"),
                _ => format!("{what}: {cause}"),
            },
        }
    }

    /// Turns an unsuccessful answer into an error carrying the registry's own message.
    async fn failure(&self, what: &str, answer: Response) -> RegistryError {
        let status = answer.status();
        let body = answer.bytes().await.unwrap_or_default();
        let (code, message) = registry_message(&body);
        let what = what.to_owned();
        match (status, code.as_deref()) {
            (StatusCode::NOT_FOUND, _)
            | (_, Some("MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "BLOB_UNKNOWN")) => {
                RegistryError::NotFound(format!("{what}: {message}"))
            }
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => RegistryError::Denied {
                host: self.host.clone(),
                what,
                message,
            },
            _ => RegistryError::Http {
                host: self.host.clone(),
                what,
                status: status.as_u16(),
                message,
            },
        }
    }

    /// The manifest `reference` (tag or digest) of `repository`: its bytes and media type.
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, String), RegistryError> {
        let what = format!("manifest {repository}:{reference}");
        let answer = self
            .send(
                self.request(
                    Method::GET,
                    &format!("/v2/{repository}/manifests/{reference}"),
                )
                .header(ACCEPT, MANIFEST_ACCEPT),
                &what,
            )
            .await?;
        if !answer.status().is_success() {
            return Err(self.failure(&what, answer).await);
        }
        let header_type = answer
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let body = self.limited_body(answer, &what).await?;
        let media_type = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
            })
            .or(header_type)
            .unwrap_or_else(|| oci::OCI_MANIFEST.to_owned());
        Ok((body, media_type))
    }

    /// The image `reference` names for `os`/`architecture`, following an index.
    pub async fn resolve(
        &self,
        repository: &str,
        reference: &str,
        os: &str,
        architecture: &str,
    ) -> Result<Resolved, RegistryError> {
        let (mut body, mut media_type) = self.manifest(repository, reference).await?;
        if oci::is_index(&media_type) {
            let index: Index = serde_json::from_slice(&body).map_err(|e| self.bad_document(&e))?;
            let entry = oci::pick_platform(&index, os, architecture).ok_or_else(|| {
                RegistryError::NoPlatform {
                    wanted: format!("{os}/{architecture}"),
                    offered: oci::platforms(&index),
                }
            })?;
            let digest = entry.digest.clone();
            (body, media_type) = self.manifest(repository, &digest).await?;
        }
        if media_type != oci::OCI_MANIFEST && media_type != oci::DOCKER_MANIFEST {
            return Err(RegistryError::Protocol {
                host: self.host.clone(),
                why: format!(
                    "unsupported manifest type `{media_type}` (Docker schema 1 images are not supported)"
                ),
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(&body).map_err(|e| self.bad_document(&e))?;
        Ok(Resolved {
            manifest,
            media_type,
            digest: sha256_digest(&body),
        })
    }

    fn bad_document(&self, e: &serde_json::Error) -> RegistryError {
        RegistryError::Protocol {
            host: self.host.clone(),
            why: format!("a manifest it sent is not valid: {e}"),
        }
    }

    async fn limited_body(
        &self,
        mut answer: Response,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut body = Vec::new();
        while let Some(chunk) = answer
            .chunk()
            .await
            .map_err(|e| self.unreachable(what, e))?
        {
            if body.len() + chunk.len() > DOCUMENT_LIMIT {
                return Err(RegistryError::Protocol {
                    host: self.host.clone(),
                    why: format!("{what} is larger than {DOCUMENT_LIMIT} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// A small blob (an image config), checked against its digest.
    pub async fn blob_bytes(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let what = format!("blob {digest} of {repository}");
        let answer = self
            .send(
                self.request(Method::GET, &format!("/v2/{repository}/blobs/{digest}")),
                &what,
            )
            .await?;
        if !answer.status().is_success() {
            return Err(self.failure(&what, answer).await);
        }
        let body = self.limited_body(answer, &what).await?;
        if sha256_digest(&body) != digest {
            return Err(self.digest_mismatch(&what));
        }
        Ok(body)
    }

    fn digest_mismatch(&self, what: &str) -> RegistryError {
        RegistryError::Protocol {
            host: self.host.clone(),
            why: format!("{what} does not match its digest"),
        }
    }

    /// Downloads a blob to `path` as it arrives, checking its digest; returns its size.
    pub async fn blob_to_file(
        &self,
        repository: &str,
        digest: &str,
        path: &Path,
    ) -> Result<u64, RegistryError> {
        let what = format!("blob {digest} of {repository}");
        let answer = self
            .send(
                self.request(Method::GET, &format!("/v2/{repository}/blobs/{digest}")),
                &what,
            )
            .await?;
        if !answer.status().is_success() {
            return Err(self.failure(&what, answer).await);
        }
        let io = |source| RegistryError::Io {
            what: format!("writing {}", path.display()),
            source,
        };
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut stream = answer.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(&what, e))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        if format!("sha256:{}", hex::encode(hasher.finalize())) != digest {
            return Err(self.digest_mismatch(&what));
        }
        Ok(size)
    }

    pub async fn has_blob(&self, repository: &str, digest: &str) -> Result<bool, RegistryError> {
        let what = format!("a check for blob {digest} in {repository}");
        let answer = self
            .send(
                self.request(Method::HEAD, &format!("/v2/{repository}/blobs/{digest}")),
                &what,
            )
            .await?;
        match answer.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.failure(&what, answer).await),
        }
    }

    /// Asks the registry to link a blob of `from` into `repository` without uploading it.
    /// `false`: not mounted (the registry started an upload instead, or refused): upload it.
    pub async fn mount(&self, repository: &str, digest: &str, from: &str) -> bool {
        let path = format!("/v2/{repository}/blobs/uploads/?mount={digest}&from={from}");
        let Ok(answer) = self
            .request(Method::POST, &path)
            .header(CONTENT_LENGTH, "0")
            .send()
            .await
        else {
            return false;
        };
        if answer.status() == StatusCode::CREATED {
            return true;
        }
        // A 202 opened an upload session we will not use: close it rather than leave it.
        if answer.status() == StatusCode::ACCEPTED
            && let Some(location) = answer.headers().get(LOCATION).and_then(|v| v.to_str().ok())
        {
            let _ = self.request(Method::DELETE, location).send().await;
        }
        false
    }

    /// Starts an upload; returns the URL to `PUT` the blob to.
    async fn start_upload(&self, repository: &str, what: &str) -> Result<String, RegistryError> {
        let answer = self
            .send(
                self.request(Method::POST, &format!("/v2/{repository}/blobs/uploads/"))
                    .header(CONTENT_LENGTH, "0"),
                what,
            )
            .await?;
        if answer.status() != StatusCode::ACCEPTED {
            return Err(self.failure(what, answer).await);
        }
        answer
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| RegistryError::Protocol {
                host: self.host.clone(),
                why: format!("{what}: the upload answer has no Location"),
            })
    }

    async fn finish_upload(
        &self,
        location: &str,
        digest: &str,
        size: u64,
        body: reqwest::Body,
        what: &str,
    ) -> Result<(), RegistryError> {
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={digest}");
        let answer = self
            .send(
                self.request(Method::PUT, &url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size.to_string())
                    .body(body),
                what,
            )
            .await?;
        if answer.status() != StatusCode::CREATED {
            return Err(self.failure(what, answer).await);
        }
        Ok(())
    }

    /// Starts an upload of a blob whose digest is not known yet (it is being made while it is
    /// sent); returns where to [`send_stream`](Self::send_stream) it.
    pub async fn begin_stream(&self, repository: &str) -> Result<String, RegistryError> {
        self.start_upload(repository, &format!("an upload to {repository}"))
            .await
    }

    /// Sends a whole blob as one streamed `PATCH`; returns where to
    /// [`end_stream`](Self::end_stream) the upload.
    pub async fn send_stream(
        &self,
        location: &str,
        body: reqwest::Body,
    ) -> Result<String, RegistryError> {
        let what = "a streamed upload";
        let answer = self
            .send(
                self.request(Method::PATCH, location)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(body),
                what,
            )
            .await?;
        if answer.status() != StatusCode::ACCEPTED {
            return Err(self.failure(what, answer).await);
        }
        Ok(answer
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| location.to_owned(), str::to_owned))
    }

    /// Ends a streamed upload: the registry checks what it received against `digest`.
    pub async fn end_stream(&self, location: &str, digest: &str) -> Result<(), RegistryError> {
        let what = format!("the end of the upload of blob {digest}");
        self.finish_upload(location, digest, 0, reqwest::Body::from(Vec::new()), &what)
            .await
    }

    /// Uploads the file at `path` as blob `digest`, streamed from disk.
    pub async fn upload_file(
        &self,
        repository: &str,
        digest: &str,
        path: &Path,
        size: u64,
    ) -> Result<(), RegistryError> {
        let what = format!("the upload of blob {digest} to {repository}");
        let location = self.start_upload(repository, &what).await?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| RegistryError::Io {
                what: format!("reading {}", path.display()),
                source,
            })?;
        self.finish_upload(&location, digest, size, reqwest::Body::from(file), &what)
            .await
    }

    pub async fn upload_bytes(
        &self,
        repository: &str,
        digest: &str,
        bytes: Vec<u8>,
    ) -> Result<(), RegistryError> {
        let what = format!("the upload of blob {digest} to {repository}");
        let location = self.start_upload(repository, &what).await?;
        let size = bytes.len() as u64;
        self.finish_upload(&location, digest, size, reqwest::Body::from(bytes), &what)
            .await
    }

    /// Stores a manifest under `tag`; returns its digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String, RegistryError> {
        let what = format!("the manifest {repository}:{tag}");
        let digest = sha256_digest(&bytes);
        let answer = self
            .send(
                self.request(Method::PUT, &format!("/v2/{repository}/manifests/{tag}"))
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes),
                &what,
            )
            .await?;
        if answer.status() != StatusCode::CREATED {
            return Err(self.failure(&what, answer).await);
        }
        if let Some(theirs) = answer
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            && theirs != digest
        {
            return Err(RegistryError::Protocol {
                host: self.host.clone(),
                why: format!("it stored {what} as {theirs}, but its bytes hash to {digest}"),
            });
        }
        Ok(digest)
    }

    /// Makes blob `blob` of `from_repository` (on `source`, which may be this registry)
    /// present in `repository` here: already there, mounted, or copied through a file in
    /// `scratch`.
    pub async fn ensure_blob(
        &self,
        repository: &str,
        blob: &Descriptor,
        source: &Registry,
        from_repository: &str,
        scratch: &Path,
    ) -> Result<Ensured, RegistryError> {
        if self.has_blob(repository, &blob.digest).await? {
            return Ok(Ensured::Present);
        }
        if source.host == self.host
            && from_repository != repository
            && self.mount(repository, &blob.digest, from_repository).await
        {
            return Ok(Ensured::Mounted);
        }
        let path = scratch.join(blob.digest.replace(':', "-"));
        if !path.exists() {
            source
                .blob_to_file(from_repository, &blob.digest, &path)
                .await?;
        }
        let size = tokio::fs::metadata(&path)
            .await
            .map_err(|source| RegistryError::Io {
                what: format!("reading {}", path.display()),
                source,
            })?
            .len();
        self.upload_file(repository, &blob.digest, &path, size)
            .await?;
        Ok(Ensured::Copied(size))
    }
}

/// How [`Registry::ensure_blob`] made a blob present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ensured {
    Present,
    Mounted,
    /// Downloaded and uploaded: that many bytes.
    Copied(u64),
}

/// Where a request went, short: `host[:port]/repository` for the distribution API
/// (`/v2/REPOSITORY/blobs/...`, `/manifests/...`), `host[:port]/path` otherwise (a token
/// service); never the query.
pub fn short_place(url: &reqwest::Url) -> String {
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => String::new(),
    };
    let path = url.path().trim_start_matches('/');
    let repository = path.strip_prefix("v2/").map(|rest| {
        ["/blobs/", "/manifests/", "/tags/", "/referrers/"]
            .iter()
            .filter_map(|marker| rest.find(marker))
            .min()
            .map_or(rest.trim_end_matches('/'), |at| &rest[..at])
    });
    match repository {
        Some(repository) if !repository.is_empty() => format!("{host}/{repository}"),
        Some(_) => host,
        None if path.is_empty() => host,
        None => format!("{host}/{path}"),
    }
}

/// `a, b and c` (or `no platform at all` for an index whose entries name none).
pub fn offered_list(offered: &[String]) -> String {
    match offered {
        [] => "no platform at all (its entries name none)".to_owned(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn basic_header(user: &str, secret: &str) -> Result<HeaderValue, RegistryError> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
        RegistryError::Protocol {
            host: String::new(),
            why: "the credentials are not a valid header value".into(),
        }
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The first error of a distribution error body (`{"errors": [{"code", "message"}]}`).
fn registry_message(body: &[u8]) -> (Option<String>, String) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let first = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| e.get(0));
    match first {
        Some(e) => (
            e.get("code").and_then(|c| c.as_str()).map(str::to_owned),
            e.get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("(no message)")
                .to_owned(),
        ),
        None => (None, crate::engine::error_message(body)),
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The token scope for `repository` with `actions` (`pull` or `pull,push`).
pub fn scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_errors_name_host_and_repository_not_the_upload_url() {
        let long = format!(
            "http://127.0.0.1:5000/v2/team/app/blobs/uploads/3f0e-uuid?_state={}&digest=sha256:ab",
            "x".repeat(180)
        );
        let url = reqwest::Url::parse(&long).expect("url");
        assert_eq!(short_place(&url), "127.0.0.1:5000/team/app");
        let manifest = reqwest::Url::parse("https://r.io/v2/a/b/c/manifests/1").expect("url");
        assert_eq!(short_place(&manifest), "r.io/a/b/c");
        let token = reqwest::Url::parse("https://auth.r.io/token?scope=x").expect("url");
        assert_eq!(short_place(&token), "auth.r.io/token");
        let check = reqwest::Url::parse("https://r.io:8443/v2/").expect("url");
        assert_eq!(short_place(&check), "r.io:8443");
    }

    /// A real transport failure (nothing listens on the port) on an upload URL of 200+
    /// characters: the message keeps what and where, not the URL.
    #[tokio::test]
    async fn a_failed_upload_says_where_in_a_short_message() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let registry = Registry {
            http: reqwest::Client::new(),
            host: format!("127.0.0.1:{port}"),
            base: format!("http://127.0.0.1:{port}"),
            authorization: Mutex::new(None),
        };
        let location = format!(
            "http://127.0.0.1:{port}/v2/team/app/blobs/uploads/0b7c?_state={}",
            "s".repeat(200)
        );
        let err = registry
            .send_stream(&location, reqwest::Body::from(vec![1u8; 10]))
            .await
            .expect_err("nothing listens");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot reach registry 127.0.0.1:{port} (a streamed upload at 127.0.0.1:{port}/team/app: "
            )),
            "{text}"
        );
        assert!(!text.contains("_state"), "{text}");
        assert!(text.len() < 200, "{} characters: {text}", text.len());
    }

    #[test]
    fn an_index_for_other_platforms_lists_them() {
        let index: Index = serde_json::from_value(serde_json::json!({"manifests": [
            {"mediaType": oci::OCI_MANIFEST, "digest": "sha256:a", "size": 1,
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": oci::OCI_MANIFEST, "digest": "sha256:b", "size": 1,
             "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"mediaType": oci::OCI_MANIFEST, "digest": "sha256:c", "size": 1,
             "platform": {"os": "unknown", "architecture": "unknown"}},
        ]}))
        .expect("index");
        let err = RegistryError::NoPlatform {
            wanted: "linux/amd64".into(),
            offered: oci::platforms(&index),
        };
        let image = crate::image::ImageError::registry("base image", "r.io/base:1")(err);
        assert_eq!(
            image.to_string(),
            "base image `r.io/base:1` exists, but not for linux/amd64 (the platform this runner \
             builds for): it is built for linux/arm64 and linux/arm/v7; choose an image with a \
             linux/amd64 variant, or run the stage on a linux/amd64 runner"
        );
        assert!(!image.to_string().contains("does not exist"));
    }

    #[test]
    fn registry_errors_keep_the_registry_message() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            registry_message(body),
            (Some("MANIFEST_UNKNOWN".into()), "manifest unknown".into())
        );
        assert_eq!(
            registry_message(b"gateway down"),
            (None, "gateway down".into())
        );
    }
}
