//! A small client of the engine's JSON API (`/api/v1`), for the `gantry` commands that talk to
//! a running engine (`apply`, `trigger`, `runs`, `logs`, ...). It turns transport failures and
//! the API's error bodies into `ClientError`s whose messages can be shown as they are.

pub mod commands;
pub mod credential;
pub mod follow;
pub mod run_ref;
pub mod show;
pub mod sse;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::store::{RunStatus, StageStatus};

/// Where `gantry serve` listens unless told otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{url}` is not a usable engine URL: {detail}")]
    BadUrl { url: String, detail: String },
    #[error(
        "cannot reach the engine at {url}: {detail} (is `gantry serve` running? set --server or GANTRY_URL)"
    )]
    Unreachable { url: String, detail: String },
    /// The engine answered with an error body: `message` is its `error` field, `problems` its
    /// `problems` (one `FILE:LINE:COL: message` line each, for an invalid pipeline).
    #[error("{message}")]
    Api {
        status: StatusCode,
        message: String,
        problems: Vec<String>,
    },
    /// Something answered, but not as a Gantry engine does.
    #[error("{0}")]
    Protocol(String),
}

impl ClientError {
    /// 1 when the engine refused or failed the operation, 2 when it could not be asked.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ClientError::Api { .. } => ExitCode::FAILURE,
            _ => ExitCode::from(2),
        }
    }

    /// Whether trying again later may work (the engine restarting, a dropped connection).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Api { status, .. } => {
                status.is_server_error() && *status != StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => false,
        }
    }
}

/// The most useful words of a transport error: the innermost I/O error's kind when there is
/// one ("connection refused"), else the innermost message.
fn transport_detail(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".into();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut innermost = error.to_string();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::UnexpectedEof => io.kind().to_string(),
                _ => io.to_string(),
            };
        }
        innermost = e.to_string();
        source = e.source();
    }
    innermost
}

/// The JSON body of an API error.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    problems: Vec<String>,
}

// What the commands read from the API's answers (the API sends more; unknown fields are
// ignored so older clients keep working against newer engines).

#[derive(Clone, Debug, Deserialize)]
pub struct Applied {
    pub project: String,
    pub name: String,
    pub version: i32,
    pub created: bool,
}

#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Triggered {
    pub run_id: i64,
    pub number: i32,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Run {
    pub id: i64,
    pub project: String,
    pub pipeline: String,
    pub number: i32,
    pub trigger: String,
    /// Who triggered it: a user, a webhook's sender, `schedule`.
    #[serde(default)]
    pub triggered_by: Option<String>,
    /// Who cancelled it, if someone did.
    #[serde(default)]
    pub cancelled_by: Option<String>,
    pub status: RunStatus,
    pub reason: Option<String>,
    pub rerun_of: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The pipeline's `description` (only in `GET /runs/{id}`, when it has one).
    #[serde(default)]
    pub description: Option<String>,
    /// Only in `GET /runs/{id}`.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// What the run is about (`commit_sha`, `commit_message`, `branch`, …).
    #[serde(default)]
    pub context: serde_json::Value,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Pipeline {
    pub project: String,
    pub name: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Stage {
    pub key: String,
    pub status: StageStatus,
    pub attempt: i32,
    pub max_attempts: i32,
    pub error: Option<String>,
    pub approved_by: Option<String>,
    /// The approval question as asked, once the stage waits for approval.
    #[serde(default)]
    pub approval_message: Option<String>,
    pub reused_from: Option<i64>,
    /// What an image stage pushed: `registry/repository@sha256:...`.
    #[serde(default)]
    pub image: Option<String>,
    pub allow_failure: bool,
    pub finally: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Secret {
    pub name: String,
    pub updated_at: DateTime<Utc>,
}

/// One line of a followed log (the `data` of a log stream event).
#[derive(Clone, Debug, Deserialize)]
pub struct LogLine {
    pub n: i64,
    pub text: String,
}

/// A client of one engine.
#[derive(Clone, Debug)]
pub struct Client {
    base: Url,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer` with every request.
    token: Option<String>,
    /// Where `token` came from, named in authentication errors.
    token_source: credential::TokenSource,
}

/// Non-streaming requests give up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl Client {
    /// A client of the engine at `url` (`http://HOST:PORT`, optionally with a path prefix).
    pub fn new(url: &str) -> Result<Client, ClientError> {
        let bad = |detail: String| ClientError::BadUrl {
            url: url.to_owned(),
            detail,
        };
        // `HOST:PORT` alone means plain HTTP, as `gantry serve --listen` takes it.
        let full = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let base = Url::parse(&full).map_err(|e| bad(e.to_string()))?;
        if base.scheme() != "http" {
            return Err(bad(format!(
                "only http:// is supported, not {}://",
                base.scheme()
            )));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(bad("it has no host".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("gantry-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Client {
            base,
            http,
            token: None,
            token_source: credential::TokenSource::Nothing { skipped: None },
        })
    }

    /// Sends the credential's token (if any) with every request.
    pub fn with_credential(mut self, credential: credential::Credential) -> Client {
        self.token = credential.token;
        self.token_source = credential.source;
        self
    }

    /// The engine's URL as given (for messages).
    pub fn server(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// `/api/v1/<segments...>`, each segment percent-encoded (stage keys hold `[`, `=`, `,`).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    fn unreachable(&self, error: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.server(),
            detail: transport_detail(error),
        }
    }

    /// Sends a request and turns error answers into `ClientError::Api`.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        timeout: bool,
    ) -> Result<reqwest::Response, ClientError> {
        let request = if timeout {
            request.timeout(REQUEST_TIMEOUT)
        } else {
            request
        };
        let (client, request) = request.build_split();
        let request = request.map_err(|e| ClientError::BadUrl {
            url: self.server(),
            detail: e.to_string(),
        })?;
        let what = format!("{} {}", request.method(), request.url().path());
        let response = client
            .execute(request)
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&body) {
            Ok(error) => Err(ClientError::Api {
                status,
                // Which token was refused (or that none was sent), so a stale one is traced to
                // its flag, variable or file.
                message: if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    format!("{} ({})", error.error, self.token_source.hint())
                } else {
                    error.error
                },
                problems: error.problems,
            }),
            Err(_) => Err(ClientError::Protocol(format!(
                "{} answered {status} to {what}: is it a Gantry engine?",
                self.server()
            ))),
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.send(request, true).await?;
        let url = response.url().path().to_owned();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Protocol(format!(
                "unexpected answer from {} to {url}: {e}",
                self.server()
            ))
        })
    }

    fn request(&self, method: Method, segments: &[&str]) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(segments));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn apply(
        &self,
        project: &str,
        file: &str,
        yaml: String,
    ) -> Result<Applied, ClientError> {
        let request = self
            .request(Method::POST, &["projects", project, "pipelines"])
            .query(&[("file", file)])
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(yaml);
        self.json(request).await
    }

    pub async fn trigger(
        &self,
        project: &str,
        pipeline: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Triggered, ClientError> {
        let request = self
            .request(
                Method::POST,
                &["projects", project, "pipelines", pipeline, "runs"],
            )
            .json(&serde_json::json!({ "params": params }));
        self.json(request).await
    }

    /// Newest first; of one pipeline of `project`, or of every pipeline.
    /// Recent runs: of one pipeline (of `project`, `default` unless given), of one project, or
    /// of every project the caller may read.
    pub async fn runs(
        &self,
        project: Option<&str>,
        pipeline: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Run>, ClientError> {
        let request = match (pipeline, project) {
            (Some(name), project) => self.request(
                Method::GET,
                &[
                    "projects",
                    project.unwrap_or("default"),
                    "pipelines",
                    name,
                    "runs",
                ],
            ),
            (None, Some(project)) => self
                .request(Method::GET, &["runs"])
                .query(&[("project", project)]),
            (None, None) => self.request(Method::GET, &["runs"]),
        };
        self.json(request.query(&[("limit", limit)])).await
    }

    /// The run with its stages.
    pub async fn run(&self, id: i64) -> Result<Run, ClientError> {
        self.json(self.request(Method::GET, &["runs", &id.to_string()]))
            .await
    }

    /// Run `number` of a pipeline, with its stages.
    pub async fn run_by_number(
        &self,
        project: &str,
        pipeline: &str,
        number: i32,
    ) -> Result<Run, ClientError> {
        self.json(self.request(
            Method::GET,
            &[
                "projects",
                project,
                "pipelines",
                pipeline,
                "runs",
                &number.to_string(),
            ],
        ))
        .await
    }

    /// Every pipeline the caller may read.
    pub async fn pipelines(&self) -> Result<Vec<Pipeline>, ClientError> {
        self.json(self.request(Method::GET, &["pipelines"])).await
    }

    pub async fn stage(&self, run: i64, key: &str) -> Result<Stage, ClientError> {
        self.json(self.request(Method::GET, &["runs", &run.to_string(), "stages", key]))
            .await
    }

    /// The plain log of an attempt (default: the current one), as a byte stream.
    pub async fn log(
        &self,
        run: i64,
        key: &str,
        attempt: Option<i32>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self.request(
            Method::GET,
            &["runs", &run.to_string(), "stages", key, "logs"],
        );
        if let Some(attempt) = attempt {
            request = request.query(&[("attempt", attempt)]);
        }
        self.send(request, false).await
    }

    /// Opens the live log stream of an attempt, resuming after line `after`.
    pub async fn log_stream(
        &self,
        run: i64,
        key: &str,
        attempt: i32,
        after: Option<i64>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self
            .request(
                Method::GET,
                &["runs", &run.to_string(), "stages", key, "logs", "stream"],
            )
            .query(&[("attempt", attempt)])
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(after) = after {
            request = request.header("Last-Event-ID", after.to_string());
        }
        self.send(request, false).await
    }

    /// Reads the next piece of a streamed answer; a broken connection is `Unreachable`.
    pub async fn next_chunk(
        &self,
        response: &mut reqwest::Response,
    ) -> Result<Option<bytes::Bytes>, ClientError> {
        response.chunk().await.map_err(|e| self.unreachable(&e))
    }

    async fn no_content(&self, request: reqwest::RequestBuilder) -> Result<(), ClientError> {
        self.send(request, true).await.map(drop)
    }

    pub async fn cancel(&self, run: i64, stage: Option<&str>) -> Result<(), ClientError> {
        let run = run.to_string();
        let request = match stage {
            Some(key) => self.request(Method::POST, &["runs", &run, "stages", key, "cancel"]),
            None => self.request(Method::POST, &["runs", &run, "cancel"]),
        };
        self.no_content(request).await
    }

    /// Approves (`approve`) or rejects a stage waiting for approval.
    pub async fn decide(&self, run: i64, key: &str, approve: bool) -> Result<(), ClientError> {
        let verb = if approve { "approve" } else { "reject" };
        let request = self.request(
            Method::POST,
            &["runs", &run.to_string(), "stages", key, verb],
        );
        self.no_content(request).await
    }

    pub async fn rerun(&self, run: i64, failed_only: bool) -> Result<Triggered, ClientError> {
        let request = self
            .request(Method::POST, &["runs", &run.to_string(), "rerun"])
            .json(&serde_json::json!({ "failed_only": failed_only }));
        self.json(request).await
    }

    pub async fn set_secret(
        &self,
        project: &str,
        name: &str,
        value: String,
    ) -> Result<(), ClientError> {
        let request = self
            .request(Method::PUT, &["projects", project, "secrets", name])
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(value);
        self.no_content(request).await
    }

    pub async fn secrets(&self, project: &str) -> Result<Vec<Secret>, ClientError> {
        self.json(self.request(Method::GET, &["projects", project, "secrets"]))
            .await
    }

    pub async fn deploy_history(
        &self,
        project: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<crate::deploy::history::Revision>, ClientError> {
        self.json(self.request(
            Method::GET,
            &[
                "projects",
                project,
                "deployments",
                namespace,
                name,
                "history",
            ],
        ))
        .await
    }

    pub async fn deploy_undo(
        &self,
        project: &str,
        namespace: &str,
        name: &str,
        to_revision: i64,
    ) -> Result<crate::deploy::history::Undone, ClientError> {
        let request = self
            .request(
                Method::POST,
                &["projects", project, "deployments", namespace, name, "undo"],
            )
            .json(&serde_json::json!({ "to_revision": to_revision }));
        self.json(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded_under_the_base_path() {
        let client = Client::new("http://127.0.0.1:8080/gantry/").expect("client");
        let url = client.url(&["runs", "7", "stages", "test[os=a/b,v=1 2]", "logs"]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/gantry/api/v1/runs/7/stages/test[os=a%2Fb,v=1%202]/logs"
        );
        let client = Client::new("http://localhost:1").expect("client");
        assert_eq!(
            client.url(&["runs"]).as_str(),
            "http://localhost:1/api/v1/runs"
        );
    }

    #[test]
    fn only_http_urls_with_a_host_are_accepted_and_the_scheme_may_be_left_out() {
        for bad in ["https://ci.example", "ftp://x", "not a url", "http://"] {
            assert!(
                matches!(Client::new(bad), Err(ClientError::BadUrl { .. })),
                "{bad}"
            );
        }
        let bare = Client::new("127.0.0.1:8080").expect("HOST:PORT is enough");
        assert_eq!(bare.server(), "http://127.0.0.1:8080");
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_server_and_the_fix() {
        // Bind and drop a listener to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let client = Client::new(&format!("http://127.0.0.1:{port}")).expect("client");
        let error = client.run(1).await.expect_err("nobody listens");
        assert_eq!(
            error.to_string(),
            format!(
                "cannot reach the engine at http://127.0.0.1:{port}: connection refused \
                 (is `gantry serve` running? set --server or GANTRY_URL)"
            )
        );
        assert_eq!(error.exit_code(), ExitCode::from(2));
    }
}
