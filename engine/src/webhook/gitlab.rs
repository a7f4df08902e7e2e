//! GitLab deliveries: the `X-Gitlab-Event` header and the JSON body become a [`Parsed`]. The
//! fields are those of GitLab's "Webhook events" documentation: push and tag push events share
//! one shape (a "Test Hook" delivery from the settings page is an ordinary push payload), and
//! merge request events carry everything in `object_attributes`.

use serde::Deserialize;

use super::event::{Event, GitRef, Parsed, Provider, PullRequest, Push, Rejection, RepoRef};
use super::github::{changed_files, decode, deleted, ignored, is_zero_sha};
use crate::pipeline::PullRequestAction;

/// `project` in current payloads; `repository` is the older block that still comes along.
#[derive(Deserialize)]
struct Project {
    path_with_namespace: Option<String>,
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
    web_url: Option<String>,
}

#[derive(Deserialize)]
struct LegacyRepository {
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
    homepage: Option<String>,
}

#[derive(Deserialize)]
struct RepositoryPeek {
    project: Option<Project>,
    repository: Option<LegacyRepository>,
}

impl RepositoryPeek {
    fn into_ref(self) -> Option<RepoRef> {
        repo_ref(self.project, self.repository)
    }
}

/// `project.path_with_namespace` names the repository; its URLs come from `project`, or from
/// the older `repository` block where `project` lacks them.
fn repo_ref(project: Option<Project>, legacy: Option<LegacyRepository>) -> Option<RepoRef> {
    let project = project?;
    let full_name = project.path_with_namespace.filter(|n| !n.is_empty())?;
    let (l_http, l_ssh, l_web) = match legacy {
        Some(r) => (r.git_http_url, r.git_ssh_url, r.homepage),
        None => (None, None, None),
    };
    let urls = [
        project.git_http_url.or(l_http),
        project.git_ssh_url.or(l_ssh),
        project.web_url.or(l_web),
    ];
    Some(RepoRef {
        full_name,
        urls: urls
            .into_iter()
            .flatten()
            .filter(|u| !u.is_empty())
            .collect(),
    })
}

#[derive(Deserialize)]
struct Commit {
    id: Option<String>,
    message: Option<String>,
    added: Option<Vec<String>>,
    modified: Option<Vec<String>>,
    removed: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    before: Option<String>,
    after: String,
    /// Null when the push deleted the ref.
    checkout_sha: Option<String>,
    commits: Option<Vec<Commit>>,
    /// The push's commit count; `commits` lists at most 20 of them.
    total_commits_count: Option<usize>,
    user_username: Option<String>,
    project: Option<Project>,
    repository: Option<LegacyRepository>,
}

#[derive(Deserialize)]
struct MergeRequestPayload {
    user: Option<User>,
    object_attributes: MergeRequest,
    project: Option<Project>,
    repository: Option<LegacyRepository>,
}

#[derive(Deserialize)]
struct User {
    username: String,
}

#[derive(Deserialize)]
struct MergeRequest {
    iid: i64,
    title: String,
    source_branch: String,
    target_branch: String,
    /// Null when the source project has been deleted.
    source_project_id: Option<i64>,
    target_project_id: i64,
    action: Option<String>,
    /// Present on `update` only when the update pushed commits.
    oldrev: Option<String>,
    last_commit: LastCommit,
    source: Option<Project>,
}

#[derive(Deserialize)]
struct LastCommit {
    id: String,
}

/// Parses one delivery; `event` is the `X-Gitlab-Event` header.
pub fn parse(event: &str, body: &[u8]) -> Result<Parsed, Rejection> {
    let (repository, event) = match event {
        "Push Hook" => parse_push("push payload", body)?,
        "Tag Push Hook" => parse_push("tag push payload", body)?,
        "Merge Request Hook" => parse_merge_request(body)?,
        "" => {
            return Err(Rejection::BadPayload(
                "missing X-Gitlab-Event header".to_owned(),
            ));
        }
        // System hooks are instance-wide (a project is created, a user added); Gantry takes
        // repository hooks only.
        other => {
            let peeked: RepositoryPeek = decode("payload", body)?;
            let reason = format!("GitLab event `{other}` starts nothing");
            (peeked.into_ref(), ignored(&reason))
        }
    };
    Ok(Parsed {
        provider: Provider::Gitlab,
        // Events Gantry ignores may name no project (system hooks); they still get a 202.
        repository: repository.unwrap_or_default(),
        event,
    })
}

/// Reads only `project` (and the older `repository` block), so the receiver can find the
/// token before the full parse.
pub fn repository(body: &[u8]) -> Result<RepoRef, Rejection> {
    let peeked: RepositoryPeek = decode("payload", body)?;
    peeked.into_ref().ok_or_else(|| {
        Rejection::BadPayload("payload: `project.path_with_namespace` is missing".to_owned())
    })
}

fn parse_push(what: &str, body: &[u8]) -> Result<(Option<RepoRef>, Event), Rejection> {
    let p: PushPayload = decode(what, body)?;
    let repository = repo_ref(p.project, p.repository);
    let Some(git_ref) = GitRef::from_full(&p.git_ref) else {
        let reason = format!("ref `{}` is neither a branch nor a tag", p.git_ref);
        return Ok((repository, ignored(&reason)));
    };
    if p.checkout_sha.is_none() || is_zero_sha(&p.after) {
        return Ok((repository, deleted(&git_ref)));
    }
    let commits = p.commits.unwrap_or_default();
    let (changed_files, lists_complete) = changed_files(
        commits
            .iter()
            .flat_map(|c| [&c.added, &c.modified, &c.removed]),
    );
    let new_ref = p.before.as_deref().is_none_or(is_zero_sha);
    let changed_files_complete = lists_complete
        && !(commits.is_empty() && new_ref)
        && p.total_commits_count
            .is_none_or(|total| total <= commits.len());
    // GitLab has no head_commit: the head is the listed commit the ref now points at.
    let head_message = commits
        .iter()
        .find(|c| c.id.as_deref() == Some(p.after.as_str()))
        .and_then(|c| c.message.clone());
    // A Tag Push Hook names the tag object in `after` for an annotated tag, and the commit it
    // points at in `checkout_sha`.
    let tag_commit = match git_ref {
        GitRef::Tag(_) => p.checkout_sha.clone(),
        GitRef::Branch(_) => None,
    };
    let push = Push {
        git_ref,
        before: p.before,
        after: p.after,
        tag_commit,
        head_message,
        changed_files,
        changed_files_complete,
        sender: p.user_username,
    };
    Ok((repository, Event::Push(push)))
}

fn parse_merge_request(body: &[u8]) -> Result<(Option<RepoRef>, Event), Rejection> {
    let p: MergeRequestPayload = decode("merge request payload", body)?;
    let repository = repo_ref(p.project, p.repository);
    let mr = p.object_attributes;
    let action = match mr.action.as_deref() {
        Some("open") => PullRequestAction::Opened,
        Some("update") if mr.oldrev.is_some() => PullRequestAction::Synchronize,
        // An update without `oldrev` changed the title, labels, assignees…: no new commit.
        Some("update") => PullRequestAction::Edited,
        Some("reopen") => PullRequestAction::Reopened,
        Some("close" | "merge") => PullRequestAction::Closed,
        Some(other) => {
            let reason = format!("merge request action `{other}` starts nothing");
            return Ok((repository, ignored(&reason)));
        }
        None => {
            let reason = "a merge request event without an action starts nothing";
            return Ok((repository, ignored(reason)));
        }
    };
    let pr = PullRequest {
        action,
        number: mr.iid,
        title: mr.title,
        head_sha: mr.last_commit.id,
        head_ref: mr.source_branch,
        base_ref: mr.target_branch,
        // GitLab's merge request events do not carry the target's commit.
        base_sha: None,
        // A deleted source project (null id) is as foreign as a fork.
        from_fork: mr.source_project_id != Some(mr.target_project_id),
        head_clone_url: mr.source.and_then(|s| s.git_http_url),
        sender: p.user.map(|u| u.username),
    };
    Ok((repository, Event::PullRequest(pr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_without_oldrev_is_an_edit() {
        let body = br#"{"object_kind":"merge_request","user":{"username":"root"},
            "project":{"path_with_namespace":"g/p","git_http_url":"https://gl/g/p.git"},
            "object_attributes":{"iid":4,"title":"t","source_branch":"f","target_branch":"main",
            "source_project_id":1,"target_project_id":1,"action":"update",
            "last_commit":{"id":"abc"}}}"#;
        let parsed = parse("Merge Request Hook", body).unwrap();
        assert_eq!(parsed.repository.full_name, "g/p");
        let Event::PullRequest(pr) = parsed.event else {
            panic!("not a merge request")
        };
        assert_eq!(pr.action, PullRequestAction::Edited);
        assert!(!pr.from_fork);
    }

    #[test]
    fn a_null_checkout_sha_is_a_deletion() {
        let body = br#"{"ref":"refs/tags/v1","before":"abc",
            "after":"0000000000000000000000000000000000000000","checkout_sha":null,
            "commits":[],"total_commits_count":0,"project":{"path_with_namespace":"g/p"}}"#;
        let parsed = parse("Tag Push Hook", body).unwrap();
        assert_eq!(parsed.event, ignored("tag `v1` was deleted"));
    }

    #[test]
    fn system_hooks_are_ignored() {
        let parsed = parse("System Hook", br#"{"event_name":"project_create"}"#).unwrap();
        assert_eq!(
            parsed.event,
            ignored("GitLab event `System Hook` starts nothing")
        );
    }
}
