//! The one internal shape every provider's webhook becomes. Parsers (one module per provider)
//! turn a delivery's headers and body into a [`Parsed`]; everything after that — filters,
//! pipeline files, runs — knows nothing about providers.

use serde::Serialize;

use crate::pipeline::PullRequestAction;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    Gitlab,
    /// Gitea and Forgejo (same payloads; Forgejo sends `X-Forgejo-*` headers as well).
    Gitea,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
            Provider::Gitea => "gitea",
        }
    }

    pub fn parse(text: &str) -> Option<Provider> {
        match text {
            "github" => Some(Provider::Github),
            "gitlab" => Some(Provider::Gitlab),
            "gitea" | "forgejo" => Some(Provider::Gitea),
            _ => None,
        }
    }
}

/// The repository a delivery is about, as the payload names it. The receiver matches it
/// against registered repositories (by any of the URLs, then by full name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RepoRef {
    /// `owner/name` (GitHub `full_name`, GitLab `path_with_namespace`, Gitea `full_name`).
    pub full_name: String,
    /// Clone and web URLs the payload gives (https, ssh, git, html), as given.
    pub urls: Vec<String>,
}

/// A branch or a tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum GitRef {
    Branch(String),
    Tag(String),
}

impl GitRef {
    /// `refs/heads/main` → Branch("main"), `refs/tags/v1` → Tag("v1"), else None.
    pub fn from_full(full: &str) -> Option<GitRef> {
        if let Some(b) = full.strip_prefix("refs/heads/") {
            Some(GitRef::Branch(b.to_owned()))
        } else {
            full.strip_prefix("refs/tags/")
                .map(|t| GitRef::Tag(t.to_owned()))
        }
    }

    pub fn full(&self) -> String {
        match self {
            GitRef::Branch(b) => format!("refs/heads/{b}"),
            GitRef::Tag(t) => format!("refs/tags/{t}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Push {
    pub git_ref: GitRef,
    /// The commit before the push (all zeros or absent for a new branch).
    pub before: Option<String>,
    /// What the ref now points at: a commit, or for an annotated tag the tag object.
    pub after: String,
    /// For a tag, the commit the payload says it points at (GitHub and Gitea
    /// `head_commit.id`, GitLab `checkout_sha`). An annotated tag's `after` is the tag
    /// object, which is not a commit; older Gitea versions leave this out, and the engine
    /// then peels the tag itself.
    pub tag_commit: Option<String>,
    /// The head commit's message, for `[skip ci]`.
    pub head_message: Option<String>,
    /// Files added, modified or removed by the pushed commits, deduplicated, sorted.
    pub changed_files: Vec<String>,
    /// False when the payload's commit list may be cut short (GitHub lists at most 20
    /// commits, GitLab 20): the processor then asks git for the full list.
    pub changed_files_complete: bool,
    /// Who pushed (login or username), for the run's record.
    pub sender: Option<String>,
}

impl Push {
    /// The commit to build: a tag's commit when the payload gives it, else `after`.
    pub fn commit(&self) -> &str {
        match (&self.git_ref, &self.tag_commit) {
            (GitRef::Tag(_), Some(commit)) => commit,
            _ => &self.after,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PullRequest {
    #[serde(serialize_with = "action_name")]
    pub action: PullRequestAction,
    pub number: i64,
    pub title: String,
    /// The commit to build (the PR's head).
    pub head_sha: String,
    /// The source branch name (in the fork, for a fork PR).
    pub head_ref: String,
    /// The target branch.
    pub base_ref: String,
    /// The target's commit when the provider gives it (for changed files).
    pub base_sha: Option<String>,
    /// The head lives in another repository: no secrets unless the pipeline opts in.
    pub from_fork: bool,
    /// Where the head commit can be fetched when it is not in the target repository.
    pub head_clone_url: Option<String>,
    pub sender: Option<String>,
}

fn action_name<S: serde::Serializer>(a: &PullRequestAction, s: S) -> Result<S::Ok, S::Error> {
    let name = PullRequestAction::ALL
        .iter()
        .find(|(_, x)| x == a)
        .map(|(n, _)| *n)
        .unwrap_or("unknown");
    s.serialize_str(name)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The provider checking the hook works (GitHub `ping`, Gitea/GitLab test deliveries).
    Ping,
    Push(Push),
    PullRequest(PullRequest),
    /// Understood, and deliberately starts nothing; the text says why (a branch or tag
    /// deleted, a pull request action Gantry does not act on, an event type it does not use).
    Ignored {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Parsed {
    pub provider: Provider,
    pub repository: RepoRef,
    pub event: Event,
}

/// Why a delivery is refused. Each maps to a 4xx with the text as the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    /// 401: no signature/token header, or it does not match.
    #[error("{0}")]
    Unauthorized(String),
    /// 400: missing event header, body not JSON, required fields missing or of the wrong type.
    #[error("{0}")]
    BadPayload(String),
}
