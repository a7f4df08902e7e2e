//! Commit statuses: the provider is told a run is pending, then how it ended, with a link to
//! the run. A reporter task compares each repository run's state with what was last reported
//! (columns on the run), so a report lost to a crash or an unreachable provider is sent again
//! later (with a growing delay, a bounded number of times) and never blocks a run.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::engine::Engine;
use crate::store::RunStatus;
use crate::store::repos::{self, RepoId, RepoRow};
use crate::store::runs::{self, StatusDue};

const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Run(#[from] crate::run::RunError),
    #[error("{0}")]
    Source(#[from] super::source::SourceError),
    #[error("the provider answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("cannot reach the provider: {0}")]
    Http(#[from] reqwest::Error),
}

/// The state a run's status should show: (ours, as the provider names it).
pub fn state_for(provider: &str, status: RunStatus) -> (&'static str, &'static str) {
    let ours = match status {
        RunStatus::Queued | RunStatus::Running => "pending",
        _ => "final",
    };
    let theirs = match (provider, status) {
        (_, RunStatus::Queued | RunStatus::Running) => "pending",
        (_, RunStatus::Succeeded) => "success",
        ("gitlab", RunStatus::Cancelled) => "canceled",
        ("gitlab", _) => "failed",
        (_, RunStatus::Cancelled) => "error",
        (_, _) => "failure",
    };
    (ours, theirs)
}

/// The provider's API base: the registration's `api_url`, else derived from the clone URL
/// (github.com → api.github.com; GitHub Enterprise `/api/v3`; GitLab `/api/v4`; Gitea `/api/v1`).
pub fn api_base(repo: &RepoRow) -> Option<String> {
    if let Some(url) = &repo.api_url {
        return Some(url.trim_end_matches('/').to_owned());
    }
    let (scheme, rest) = repo.clone_url.split_once("://")?;
    let host = rest.split('/').next()?.rsplit('@').next()?;
    let scheme = if scheme == "http" { "http" } else { "https" };
    Some(match repo.provider.as_str() {
        "github" if host == "github.com" => "https://api.github.com".to_owned(),
        "github" => format!("{scheme}://{host}/api/v3"),
        "gitlab" => format!("{scheme}://{host}/api/v4"),
        _ => format!("{scheme}://{host}/api/v1"),
    })
}

pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the commit status client; statuses are off");
            return;
        }
    };
    loop {
        if let Err(e) = report_due(&engine, &client).await {
            tracing::warn!(error = %e, "reporting commit statuses failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Reports every run whose status lags. Returns how many reports were sent.
pub async fn report_due(engine: &Engine, client: &reqwest::Client) -> Result<usize, StatusError> {
    let due = runs::statuses_due(&engine.store.pool, 50).await?;
    let mut sent = 0;
    let mut repos_seen: Vec<RepoRow> = Vec::new();
    for run in due {
        let repo = match repos_seen.iter().find(|r| r.id.0 == run.repository_id) {
            Some(r) => r.clone(),
            None => {
                let r = repos::get(&engine.store.pool, RepoId(run.repository_id)).await?;
                repos_seen.push(r.clone());
                r
            }
        };
        let (ours, _) = state_for(&repo.provider, run.status);
        match report(engine, client, &repo, &run).await {
            Ok(()) => {
                runs::status_reported(&engine.store.pool, run.id, ours).await?;
                sent += 1;
            }
            Err(e) => {
                let delay = 2f64.powi(run.attempts.min(10)) * 2.0;
                tracing::warn!(run.id = run.id.0, error = %e, retry_secs = delay, "commit status not reported");
                runs::status_failed(&engine.store.pool, run.id, &e.to_string(), delay).await?;
            }
        }
    }
    Ok(sent)
}

async fn report(
    engine: &Engine,
    client: &reqwest::Client,
    repo: &RepoRow,
    run: &StatusDue,
) -> Result<(), StatusError> {
    let context: crate::run::RunContext =
        serde_json::from_value(run.context.clone()).unwrap_or_default();
    let Some(sha) = context.commit_sha else {
        return Ok(());
    };
    let Some(token) = super::source::token(engine, repo).await? else {
        // Nothing to authenticate with: not an error worth retrying.
        return Ok(());
    };
    let Some(api) = api_base(repo) else {
        return Ok(());
    };
    let (_, state) = state_for(&repo.provider, run.status);
    let base_url = engine.config.public_url.as_deref().unwrap_or(&engine.url);
    let target_url = format!("{}/runs/{}", base_url.trim_end_matches('/'), run.id);
    let mut description = match run.status {
        RunStatus::Queued => format!("run #{} is queued", run.number),
        RunStatus::Running => format!("run #{} is running", run.number),
        RunStatus::Succeeded => format!("run #{} succeeded", run.number),
        other => match &run.reason {
            Some(r) => format!(
                "run #{} {}: {}",
                run.number,
                other.as_str(),
                r.lines().next().unwrap_or("")
            ),
            None => format!("run #{} {}", run.number, other.as_str()),
        },
    };
    // GitHub refuses descriptions over 140 characters.
    if description.chars().count() > 140 {
        description = description.chars().take(139).collect::<String>() + "…";
    }
    let name = format!("gantry/{}", run.pipeline);
    let request = match repo.provider.as_str() {
        "gitlab" => client
            .post(format!(
                "{api}/projects/{}/statuses/{sha}",
                urlencode(&repo.full_name)
            ))
            .header("PRIVATE-TOKEN", &token)
            .json(&json!({ "state": state, "target_url": target_url, "description": description, "name": name })),
        "github" => client
            .post(format!("{api}/repos/{}/statuses/{sha}", repo.full_name))
            .bearer_auth(&token)
            .header("Accept", "application/vnd.github+json")
            .json(&json!({ "state": state, "target_url": target_url, "description": description, "context": name })),
        _ => client
            .post(format!("{api}/repos/{}/statuses/{sha}", repo.full_name))
            .header("Authorization", format!("token {token}"))
            .json(&json!({ "state": state, "target_url": target_url, "description": description, "context": name })),
    };
    let response = request.send().await?;
    if !response.status().is_success() {
        let status = response.status().as_u16();
        let body: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        return Err(StatusError::Refused { status, body });
    }
    Ok(())
}

/// GitLab names a project in a path by its URL-encoded full path (`group%2Fproject`).
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_each_providers_vocabulary() {
        assert_eq!(
            state_for("github", RunStatus::Running),
            ("pending", "pending")
        );
        assert_eq!(
            state_for("github", RunStatus::Succeeded),
            ("final", "success")
        );
        assert_eq!(
            state_for("github", RunStatus::TimedOut),
            ("final", "failure")
        );
        assert_eq!(state_for("gitea", RunStatus::Cancelled), ("final", "error"));
        assert_eq!(state_for("gitlab", RunStatus::Failed), ("final", "failed"));
        assert_eq!(
            state_for("gitlab", RunStatus::Cancelled),
            ("final", "canceled")
        );
    }

    #[test]
    fn gitlab_project_paths_are_encoded() {
        assert_eq!(urlencode("group/sub/project"), "group%2Fsub%2Fproject");
    }
}
