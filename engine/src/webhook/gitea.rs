//! Gitea and Forgejo deliveries: the `X-Gitea-Event` header (Forgejo sends the same value, and
//! `X-Forgejo-Event` as well) and the JSON body become a [`Parsed`]. The payloads follow
//! Gitea's `modules/structs/hook.go`, which copies GitHub's shapes, so the `pull_request`
//! object, commit lists and helpers are GitHub's; the differences are the action names
//! (`synchronized`, `label_updated`), `total_commits` and `pusher`.

use serde::Deserialize;

use super::event::{Event, GitRef, Parsed, Provider, Push, Rejection, RepoRef};
use super::github::{
    Commit, HeadCommit, PullRequestBody, User, changed_files, decode, deleted, ignored,
    is_zero_sha, pull_request, ref_deleted,
};
use crate::pipeline::PullRequestAction;

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    clone_url: Option<String>,
    html_url: Option<String>,
    ssh_url: Option<String>,
}

impl Repository {
    fn into_ref(self) -> RepoRef {
        let urls = [self.clone_url, self.html_url, self.ssh_url];
        RepoRef {
            full_name: self.full_name,
            urls: urls
                .into_iter()
                .flatten()
                .filter(|u| !u.is_empty())
                .collect(),
        }
    }
}

#[derive(Deserialize)]
struct RepositoryPeek {
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    before: Option<String>,
    after: String,
    commits: Option<Vec<Commit>>,
    /// How many commits the push had; `commits` holds at most a configured number of them.
    total_commits: Option<usize>,
    head_commit: Option<HeadCommit>,
    pusher: Option<User>,
    sender: Option<User>,
    repository: Repository,
}

#[derive(Deserialize)]
struct PullRequestPayload {
    action: String,
    pull_request: PullRequestBody,
    sender: Option<User>,
    repository: Repository,
}

#[derive(Deserialize)]
struct RefPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    ref_type: String,
    repository: Option<Repository>,
}

/// Parses one delivery; `event` is the `X-Gitea-Event` (or `X-Forgejo-Event`) header.
pub fn parse(event: &str, body: &[u8]) -> Result<Parsed, Rejection> {
    let (repository, event) = match event {
        "push" => parse_push(body)?,
        "pull_request" => parse_pull_request(body)?,
        "create" => (
            peek(body, "create payload")?,
            ignored("a create event starts nothing: the push event for the same ref does"),
        ),
        "delete" => {
            let deleted: RefPayload = decode("delete payload", body)?;
            let event = ref_deleted(&deleted.ref_type, &deleted.git_ref);
            let repository = deleted.repository.map(Repository::into_ref);
            (repository.unwrap_or_default(), event)
        }
        "" => {
            return Err(Rejection::BadPayload(
                "missing X-Gitea-Event header".to_owned(),
            ));
        }
        other => (
            peek(body, "payload")?,
            ignored(&format!("Gitea event `{other}` starts nothing")),
        ),
    };
    Ok(Parsed {
        provider: Provider::Gitea,
        repository,
        event,
    })
}

/// Reads only `repository`, so the receiver can find the secret before the full parse.
pub fn repository(body: &[u8]) -> Result<RepoRef, Rejection> {
    let peeked: RepositoryPeek = decode("payload", body)?;
    peeked
        .repository
        .map(Repository::into_ref)
        .ok_or_else(|| Rejection::BadPayload("payload: `repository` is missing".to_owned()))
}

fn peek(body: &[u8], what: &str) -> Result<RepoRef, Rejection> {
    let peeked: RepositoryPeek = decode(what, body)?;
    Ok(peeked
        .repository
        .map(Repository::into_ref)
        .unwrap_or_default())
}

fn parse_push(body: &[u8]) -> Result<(RepoRef, Event), Rejection> {
    let p: PushPayload = decode("push payload", body)?;
    let repository = p.repository.into_ref();
    let Some(git_ref) = GitRef::from_full(&p.git_ref) else {
        let reason = format!("ref `{}` is neither a branch nor a tag", p.git_ref);
        return Ok((repository, ignored(&reason)));
    };
    if is_zero_sha(&p.after) {
        return Ok((repository, deleted(&git_ref)));
    }
    let commits = p.commits.as_deref();
    let (changed_files, lists_complete) = changed_files(
        commits
            .unwrap_or_default()
            .iter()
            .flat_map(Commit::file_lists),
    );
    let new_ref = p.before.as_deref().is_none_or(is_zero_sha);
    let changed_files_complete = match commits {
        None => false,
        // Gitea lists a new branch's commits relative to nothing useful: ask git.
        Some([]) if new_ref => false,
        Some(list) => lists_complete && p.total_commits.is_none_or(|total| total <= list.len()),
    };
    let push = Push {
        tag_commit: HeadCommit::tag_commit(p.head_commit.as_ref(), &git_ref),
        git_ref,
        before: p.before,
        after: p.after,
        head_message: p.head_commit.and_then(|c| c.message),
        changed_files,
        changed_files_complete,
        // The pusher is who pushed; the sender is the same user for a push, and the only one
        // older versions fill in.
        sender: p
            .pusher
            .or(p.sender)
            .map(|u| u.login)
            .filter(|l| !l.is_empty()),
    };
    Ok((repository, Event::Push(push)))
}

fn parse_pull_request(body: &[u8]) -> Result<(RepoRef, Event), Rejection> {
    let p: PullRequestPayload = decode("pull_request payload", body)?;
    let repository = p.repository.into_ref();
    let action = match p.action.as_str() {
        "opened" => PullRequestAction::Opened,
        "synchronized" => PullRequestAction::Synchronize,
        "reopened" => PullRequestAction::Reopened,
        "closed" => PullRequestAction::Closed,
        "edited" => PullRequestAction::Edited,
        "label_updated" => PullRequestAction::Labeled,
        other => {
            let reason = format!("pull request action `{other}` starts nothing");
            return Ok((repository, ignored(&reason)));
        }
    };
    let sender = p.sender.map(|u| u.login);
    let pr = pull_request(action, p.pull_request, &repository.full_name, sender);
    Ok((repository, Event::PullRequest(pr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronized_is_a_new_commit_on_the_pull_request() {
        let body = br#"{"action":"synchronized","number":3,"pull_request":{"number":3,
            "title":"t","head":{"sha":"h","ref":"f","repo":{"full_name":"me/r",
            "clone_url":"https://gitea.example/me/r.git"}},
            "base":{"sha":"b","ref":"main","repo":{"full_name":"o/r"}}},
            "repository":{"full_name":"o/r"},"sender":{"login":"me"}}"#;
        let Event::PullRequest(pr) = parse("pull_request", body).unwrap().event else {
            panic!("not a pull request")
        };
        assert_eq!(pr.action, PullRequestAction::Synchronize);
        assert!(pr.from_fork);
        assert_eq!(
            pr.head_clone_url.as_deref(),
            Some("https://gitea.example/me/r.git")
        );
    }

    #[test]
    fn a_cut_commit_list_is_incomplete() {
        let body = br#"{"ref":"refs/heads/main","before":"1111","after":"2222",
            "commits":[{"added":["a"],"modified":[],"removed":[]}],"total_commits":30,
            "repository":{"full_name":"o/r"}}"#;
        let Event::Push(push) = parse("push", body).unwrap().event else {
            panic!("not a push")
        };
        assert!(!push.changed_files_complete);
        assert_eq!(push.changed_files, ["a"]);
    }
}
