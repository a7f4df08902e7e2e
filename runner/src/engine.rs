//! The engine's runner API as the runner calls it: one method per call of the table in
//! [`crate::wire`], each retried through engine restarts.
//!
//! Connection errors, timeouts, 5xx, 408 and 429 are retried with [`Backoff`] until the configured
//! budget is spent: an engine killed with `kill -9` and started again must find its runners still
//! there. Any other 4xx is final: the engine has decided, and retrying would not change its mind.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::wire::{
    API_PREFIX, Completion, ErrorBody, HeartbeatReply, LogAck, StageSpec, StepReport,
};

/// Small JSON calls answer quickly unless something is wrong; a hung engine must not hang us.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A log batch is at most 4 MiB and the engine stores it before answering.
const LOGS_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the engine rejected {call} with {status}: {message}")]
    Rejected {
        call: &'static str,
        status: u16,
        message: String,
    },
    #[error("gave up on {call} after {secs} s of failures (last: {last})")]
    GaveUp {
        call: &'static str,
        secs: u64,
        last: String,
    },
    #[error("the engine's answer to {call} is not valid: {why}")]
    BadAnswer { call: &'static str, why: String },
    #[error("cannot create the HTTP client: {0}")]
    Client(String),
}

/// What one try of a call came to.
pub enum Attempt<T, E> {
    Done(T),
    /// Worth trying again after a pause; the text says why, for the give-up message.
    Retry(String),
    Fatal(E),
}

impl<T, E> Attempt<T, E> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Attempt<U, E> {
        match self {
            Attempt::Done(value) => Attempt::Done(f(value)),
            Attempt::Retry(why) => Attempt::Retry(why),
            Attempt::Fatal(err) => Attempt::Fatal(err),
        }
    }
}

/// The engine's answer to a log batch.
#[derive(Debug, Clone, PartialEq)]
pub enum LogReply {
    Stored(LogAck),
    /// 409: the batch started after a line the engine lacks; resend from `acked + 1`.
    Gap(LogAck),
}

pub struct EngineClient {
    http: reqwest::Client,
    /// The engines this runner may call (its own first, then the replicas its spec names),
    /// each as `http://host:port/api/runner/v1`.
    bases: std::sync::RwLock<Vec<String>>,
    /// Which of `bases` calls go to: a call that has to be retried moves on to the next, so a
    /// runner whose engine is gone carries on with a replica (a token works on any).
    current: std::sync::atomic::AtomicUsize,
    auth: HeaderValue,
    give_up_after: Duration,
}

impl EngineClient {
    pub fn new(config: &Config) -> Result<EngineClient, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // Notices an engine host that vanished without closing the connection.
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("gantry-runner/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Client(e.to_string()))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", config.token))
            .map_err(|_| ApiError::Client("the token is not a valid header value".into()))?;
        auth.set_sensitive(true);
        Ok(EngineClient {
            http,
            bases: std::sync::RwLock::new(vec![format!("{}{API_PREFIX}", config.engine_url)]),
            current: std::sync::atomic::AtomicUsize::new(0),
            auth,
            give_up_after: config.give_up_after,
        })
    }

    /// Adds the engines a spec names (`http://host:port`) to those this runner may call.
    pub fn add_engines(&self, engines: &[String]) {
        let Ok(mut bases) = self.bases.write() else {
            return;
        };
        for engine in engines {
            let base = format!("{}{API_PREFIX}", engine.trim_end_matches('/'));
            if !bases.contains(&base) {
                bases.push(base);
            }
        }
    }

    /// The engine calls go to now.
    fn base(&self) -> String {
        let bases = self
            .bases
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = self.current.load(std::sync::atomic::Ordering::Relaxed) % bases.len().max(1);
        bases.get(at).cloned().unwrap_or_default()
    }

    /// Moves on to the next engine, when there is more than one.
    fn next_engine(&self) {
        let count = self.bases.read().map(|b| b.len()).unwrap_or(1);
        if count > 1 {
            let at = self
                .current
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            eprintln!("gantry-runner: trying engine {} of {count}", at % count + 1);
        }
    }

    /// Runs `attempt` until it is done, fatal, or the retry budget is spent.
    pub async fn retrying<T, E, F, Fut>(&self, call: &'static str, mut attempt: F) -> Result<T, E>
    where
        E: From<ApiError>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T, E>>,
    {
        let mut backoff: Option<Backoff> = None;
        loop {
            match attempt().await {
                Attempt::Done(value) => {
                    if backoff.is_some() {
                        eprintln!("gantry-runner: {call}: the engine answers again");
                    }
                    return Ok(value);
                }
                Attempt::Fatal(err) => return Err(err),
                Attempt::Retry(why) => {
                    self.next_engine();
                    let backoff = backoff.get_or_insert_with(|| {
                        eprintln!(
                            "gantry-runner: {call} failed ({why}); retrying for up to {} s",
                            self.give_up_after.as_secs()
                        );
                        Backoff::new(self.give_up_after)
                    });
                    let now = Instant::now();
                    match backoff.next_delay(now) {
                        Some(delay) => tokio::time::sleep(delay).await,
                        None => {
                            return Err(ApiError::GaveUp {
                                call,
                                secs: backoff.elapsed(now).as_secs(),
                                last: why,
                            }
                            .into());
                        }
                    }
                }
            }
        }
    }

    /// A request to `path` (below the API prefix) carrying the runner's token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base()))
            .header(AUTHORIZATION, self.auth.clone())
    }

    pub async fn spec(&self) -> Result<StageSpec, ApiError> {
        self.json_call("spec", || self.request(Method::GET, "/spec"))
            .await
    }

    pub async fn heartbeat(&self) -> Result<HeartbeatReply, ApiError> {
        self.json_call("heartbeat", || self.request(Method::POST, "/heartbeat"))
            .await
    }

    pub async fn step_reports(&self, reports: &[StepReport]) -> Result<(), ApiError> {
        self.no_answer_call("steps", || {
            self.request(Method::POST, "/steps").json(reports)
        })
        .await
    }

    pub async fn complete(&self, completion: &Completion) -> Result<(), ApiError> {
        self.no_answer_call("complete", || {
            self.request(Method::POST, "/complete").json(completion)
        })
        .await
    }

    /// Sends one batch of encoded log lines starting at line `first_seq`.
    pub async fn post_logs(&self, first_seq: u64, body: Bytes) -> Result<LogReply, ApiError> {
        const CALL: &str = "logs";
        self.retrying(CALL, || async {
            let sent = self
                .request(Method::POST, &format!("/logs?first_seq={first_seq}"))
                .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                .timeout(LOGS_TIMEOUT)
                .body(body.clone())
                .send()
                .await;
            match sent {
                // A gap is an answer, not a refusal: the body says where to resume.
                Ok(r) if r.status() == StatusCode::CONFLICT => {
                    read_json(CALL, r).await.map(LogReply::Gap)
                }
                sent => checked_json(CALL, sent).await.map(LogReply::Stored),
            }
        })
        .await
    }

    async fn json_call<T: DeserializeOwned>(
        &self,
        call: &'static str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<T, ApiError> {
        self.retrying(call, || async {
            checked_json(call, build().timeout(CALL_TIMEOUT).send().await).await
        })
        .await
    }

    async fn no_answer_call(
        &self,
        call: &'static str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<(), ApiError> {
        self.retrying(call, || async {
            check(call, build().timeout(CALL_TIMEOUT).send().await)
                .await
                .map(|_| ())
        })
        .await
    }
}

/// Sorts a response into success, worth retrying, or final refusal.
pub async fn check(
    call: &'static str,
    sent: Result<Response, reqwest::Error>,
) -> Attempt<Response, ApiError> {
    let response = match sent {
        Ok(response) => response,
        Err(err) => return Attempt::Retry(describe(&err)),
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Done(response);
    }
    if is_transient(status) {
        return Attempt::Retry(format!("HTTP {status}"));
    }
    let body = response.bytes().await.unwrap_or_default();
    Attempt::Fatal(ApiError::Rejected {
        call,
        status: status.as_u16(),
        message: error_message(&body),
    })
}

/// Statuses that say "not now" rather than "no".
pub fn is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// The `error` of an [`ErrorBody`], or the start of whatever else the engine sent.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        return parsed.error;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(no error message)".to_owned();
    }
    text.chars().take(500).collect()
}

/// [`check`], then the JSON answer of a successful response.
async fn checked_json<T: DeserializeOwned>(
    call: &'static str,
    sent: Result<Response, reqwest::Error>,
) -> Attempt<T, ApiError> {
    match check(call, sent).await {
        Attempt::Done(response) => read_json(call, response).await,
        Attempt::Retry(why) => Attempt::Retry(why),
        Attempt::Fatal(err) => Attempt::Fatal(err),
    }
}

async fn read_json<T: DeserializeOwned, E: From<ApiError>>(
    call: &'static str,
    response: Response,
) -> Attempt<T, E> {
    // Reading the body can fail like sending did (the engine died mid-answer): retry that.
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(err) => return Attempt::Retry(describe(&err)),
    };
    match serde_json::from_slice(&body) {
        Ok(value) => Attempt::Done(value),
        Err(err) => Attempt::Fatal(
            ApiError::BadAnswer {
                call,
                why: err.to_string(),
            }
            .into(),
        ),
    }
}

/// reqwest's top-level message hides the cause ("error sending request"); include the chain.
pub fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_read_for_their_message() {
        assert_eq!(error_message(br#"{"error":"bad token"}"#), "bad token");
        assert_eq!(error_message(b"  plain text\n"), "plain text");
        assert_eq!(error_message(b""), "(no error message)");
    }

    #[test]
    fn only_server_side_trouble_is_retried() {
        assert!(is_transient(StatusCode::BAD_GATEWAY));
        assert!(is_transient(StatusCode::SERVICE_UNAVAILABLE));
        assert!(is_transient(StatusCode::TOO_MANY_REQUESTS));
        assert!(!is_transient(StatusCode::UNAUTHORIZED));
        assert!(!is_transient(StatusCode::NOT_FOUND));
        assert!(!is_transient(StatusCode::CONFLICT));
    }

    fn client(give_up: Duration) -> EngineClient {
        let config = Config {
            // Port 9 (discard) on loopback: nothing listens, connections are refused at once.
            engine_url: "http://127.0.0.1:9".into(),
            token: "t".into(),
            workspace: ".".into(),
            give_up_after: give_up,
            kill_grace: Duration::from_secs(1),
            isolation_error: None,
        };
        EngineClient::new(&config).expect("client")
    }

    #[tokio::test]
    async fn an_unreachable_engine_is_retried_until_the_budget_is_spent() {
        let client = client(Duration::from_millis(700));
        let started = Instant::now();
        let err = client.heartbeat().await.expect_err("nobody listens");
        let took = started.elapsed();
        assert!(
            matches!(
                err,
                ApiError::GaveUp {
                    call: "heartbeat",
                    ..
                }
            ),
            "{err}"
        );
        assert!(took >= Duration::from_millis(650), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test]
    async fn retrying_stops_at_the_first_success() {
        let client = client(Duration::from_secs(10));
        let mut tries = 0;
        let value: Result<u32, ApiError> = client
            .retrying("test", || {
                tries += 1;
                let n = tries;
                async move {
                    if n < 3 {
                        Attempt::Retry("not yet".into())
                    } else {
                        Attempt::Done(n)
                    }
                }
            })
            .await;
        assert_eq!(value.expect("third try"), 3);
    }
}
