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

/// Reports in flight at once, across repositories (one at a time per repository).
const IN_FLIGHT: usize = 8;
/// How long a run's report is leased to the engine reporting it: longer than a report's
/// timeout, so no other engine posts for the same run meanwhile.
const LEASE_SECS: f64 = 60.0;
/// A provider's API call gives up after this.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Reports commit statuses until shutdown: each repository's reports one after the other
/// (so a commit's states arrive in order), different repositories' at once, at most
/// [`IN_FLIGHT`] together. A repository whose API hangs holds back only its own reports. At
/// shutdown the reports in flight are dropped: their leases run out and any engine sends them
/// again.
pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let client = match reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the commit status client; statuses are off");
            return;
        }
    };
    let mut in_flight: tokio::task::JoinSet<i64> = tokio::task::JoinSet::new();
    let mut busy: std::collections::HashSet<i64> = std::collections::HashSet::new();
    loop {
        if let Err(e) = start_due(&engine, &client, &mut busy, &mut in_flight).await {
            tracing::warn!(error = %e, "reading commit statuses to report failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            Some(done) = in_flight.join_next() => {
                if let Ok(repository) = done {
                    busy.remove(&repository);
                }
            }
            _ = shutdown.changed() => {
                in_flight.abort_all();
                return;
            }
        }
        while let Some(done) = in_flight.try_join_next() {
            if let Ok(repository) = done {
                busy.remove(&repository);
            }
        }
    }
}

/// Leases the next due report of each repository with none in flight and starts them.
async fn start_due(
    engine: &Arc<Engine>,
    client: &reqwest::Client,
    busy: &mut std::collections::HashSet<i64>,
    in_flight: &mut tokio::task::JoinSet<i64>,
) -> Result<usize, StatusError> {
    let free = IN_FLIGHT.saturating_sub(in_flight.len());
    if free == 0 {
        return Ok(0);
    }
    let skip: Vec<i64> = busy.iter().copied().collect();
    let due = runs::lease_statuses_due(
        &engine.store.pool,
        &skip,
        i64::try_from(free).unwrap_or(1),
        LEASE_SECS,
    )
    .await?;
    let started = due.len();
    for run in due {
        let repository = run.repository_id;
        busy.insert(repository);
        let (engine, client) = (Arc::clone(engine), client.clone());
        in_flight.spawn(async move {
            if let Err(e) = report_one(&engine, &client, run).await {
                tracing::warn!(error = %e, "recording a commit status report failed");
            }
            repository
        });
    }
    Ok(started)
}

/// Sends one run's status as it is now, and records the outcome.
async fn report_one(
    engine: &Engine,
    client: &reqwest::Client,
    mut run: StatusDue,
) -> Result<(), StatusError> {
    let pool = &engine.store.pool;
    let repo = repos::get(pool, RepoId(run.repository_id)).await?;
    // What to post is decided now, not when the run was picked: a run that ended since is
    // reported as ended, never as pending after its end.
    (run.status, run.reason) = runs::status_now(pool, run.id).await?;
    let (ours, _) = state_for(&repo.provider, run.status);
    // A newer run of the pipeline about the same commit has reported: posting this older
    // run's state would overwrite the newer one's under the same context.
    if runs::superseded_status(pool, run.id).await? {
        runs::status_reported(pool, run.id, "final").await?;
        return Ok(());
    }
    match report(engine, client, &repo, &run).await {
        Ok(()) => runs::status_reported(pool, run.id, ours).await?,
        Err(e) => {
            let delay = 2f64.powi(run.attempts.min(10)) * 2.0;
            tracing::warn!(run.id = run.id.0, error = %e, retry_secs = delay, "commit status not reported");
            runs::status_failed(pool, run.id, &e.to_string(), delay).await?;
        }
    }
    Ok(())
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
