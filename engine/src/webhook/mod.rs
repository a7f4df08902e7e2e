//! Webhooks from GitHub, GitLab and Gitea/Forgejo, and the generic token hook: verify, parse into
//! one [`event::Event`], store the delivery, answer 202, and process it asynchronously
//! ([`process`]). Each provider's module only turns its payloads into events; filters, pipeline
//! files and runs know nothing about providers.

pub mod arming;
pub mod cache;
pub mod commit_status;
pub mod cron;
pub mod event;
pub mod filter;
pub mod generic;
pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod in_flight;
pub mod intake;
pub mod process;
pub mod retention;
pub mod signature;
pub mod source;

pub use event::{Event, GitRef, Parsed, Provider, PullRequest, Push, Rejection, RepoRef};

/// The largest delivery body accepted by default (GitHub caps payloads at 25 MB, but a push
/// that large is a pathological one; the limit is configurable).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 5 * 1024 * 1024;

/// The JSON of a delivery. GitHub's webhook form offers `application/x-www-form-urlencoded`
/// (its default) besides `application/json`: the JSON is then the form's `payload` field. The
/// signature is over the body as sent, so it is checked against `body`, not against this.
pub fn json_of(content_type: Option<&str>, body: &bytes::Bytes) -> Result<bytes::Bytes, Rejection> {
    let form = content_type.is_some_and(|t| {
        t.split(';').next().is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if !form {
        return Ok(body.clone());
    }
    form_urlencoded::parse(body)
        .find(|(name, _)| name == "payload")
        .map(|(_, json)| bytes::Bytes::from(json.into_owned()))
        .ok_or_else(|| {
            Rejection::BadPayload(
                "a form-encoded delivery carries its JSON in the `payload` field, and this one has none (or choose the content type application/json)".into(),
            )
        })
}

/// Parses a delivery of `provider` with the given event header value.
pub fn parse(provider: Provider, event: &str, body: &[u8]) -> Result<Parsed, Rejection> {
    match provider {
        Provider::Github => github::parse(event, body),
        Provider::Gitlab => gitlab::parse(event, body),
        Provider::Gitea => gitea::parse(event, body),
    }
}

/// The repository a delivery names, read before the signature is checked (the secret to
/// check it with belongs to that repository); nothing else of the body is trusted yet.
pub fn repository(provider: Provider, body: &[u8]) -> Result<RepoRef, Rejection> {
    match provider {
        Provider::Github => github::repository(body),
        Provider::Gitlab => gitlab::repository(body),
        Provider::Gitea => gitea::repository(body),
    }
}

/// The headers each provider names its event, its delivery id and its signature with.
pub struct Headers {
    pub event: &'static [&'static str],
    pub delivery: &'static [&'static str],
}

pub fn headers(provider: Provider) -> Headers {
    match provider {
        Provider::Github => Headers {
            event: &["x-github-event"],
            delivery: &["x-github-delivery"],
        },
        Provider::Gitlab => Headers {
            event: &["x-gitlab-event"],
            delivery: &["x-gitlab-event-uuid", "x-gitlab-webhook-uuid"],
        },
        Provider::Gitea => Headers {
            event: &["x-gitea-event", "x-forgejo-event", "x-gogs-event"],
            delivery: &["x-gitea-delivery", "x-forgejo-delivery", "x-gogs-delivery"],
        },
    }
}

/// Checks a delivery's signature (or token) against the repository's webhook secret.
pub fn verify(
    provider: Provider,
    secret: &[u8],
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<(), Rejection> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match provider {
        Provider::Github => signature::verify_github(secret, get("x-hub-signature-256"), body),
        Provider::Gitlab => signature::verify_gitlab(secret, get("x-gitlab-token")),
        Provider::Gitea => signature::verify_gitea(
            secret,
            get("x-gitea-signature").or_else(|| get("x-forgejo-signature")),
            body,
        ),
    }
}
