//! GitHub deliveries: the `X-GitHub-Event` header and the JSON body become a [`Parsed`].
//!
//! The structs below declare only the fields Gantry reads; serde skips the rest, so GitHub
//! adding fields (or changing the type of one we never read, like `repository.created_at`,
//! an integer in push payloads and a string elsewhere) cannot break a delivery.
//!
//! This module also holds the pieces the other providers share — decoding with errors that name
//! the field, the all-zero SHA test and the changed-files union — because Gitea's payloads are
//! copies of GitHub's and GitLab's differ only in names.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::event::{Event, GitRef, Parsed, Provider, PullRequest, Push, Rejection, RepoRef};
use crate::pipeline::PullRequestAction;

/// GitHub cuts the commit list of timeline events at 20 (webhook deliveries go further, to
/// 2048). A list this long may be cut short, and the cost of assuming so is one `git diff`.
const LISTED_COMMITS_LIMIT: usize = 20;

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    clone_url: Option<String>,
    html_url: Option<String>,
    ssh_url: Option<String>,
    git_url: Option<String>,
}

impl Repository {
    fn into_ref(self) -> RepoRef {
        let urls = [self.clone_url, self.html_url, self.ssh_url, self.git_url];
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

/// Only the repository: what [`repository`] and the events Gantry ignores need.
#[derive(Deserialize)]
struct RepositoryPeek {
    repository: Option<Repository>,
}

#[derive(Deserialize)]
pub(super) struct User {
    pub(super) login: String,
}

/// One entry of a push's `commits` (GitHub and Gitea use the same shape).
#[derive(Deserialize)]
pub(super) struct Commit {
    added: Option<Vec<String>>,
    modified: Option<Vec<String>>,
    removed: Option<Vec<String>>,
}

impl Commit {
    pub(super) fn file_lists(&self) -> [&Option<Vec<String>>; 3] {
        [&self.added, &self.modified, &self.removed]
    }
}

#[derive(Deserialize)]
pub(super) struct HeadCommit {
    pub(super) id: Option<String>,
    pub(super) message: Option<String>,
}

impl HeadCommit {
    /// A tag push's commit: GitHub (and Gitea since 1.16) put the tagged commit in
    /// `head_commit` while `after` names the tag object of an annotated tag.
    pub(super) fn tag_commit(head: Option<&HeadCommit>, git_ref: &GitRef) -> Option<String> {
        match git_ref {
            GitRef::Tag(_) => head
                .and_then(|c| c.id.clone())
                .filter(|id| !is_zero_sha(id)),
            GitRef::Branch(_) => None,
        }
    }
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    before: Option<String>,
    after: String,
    #[serde(default)]
    deleted: bool,
    commits: Option<Vec<Commit>>,
    head_commit: Option<HeadCommit>,
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
pub(super) struct PullRequestBody {
    pub(super) number: i64,
    pub(super) title: String,
    pub(super) head: Branch,
    pub(super) base: Branch,
}

/// `pull_request.head` / `.base` (the same in Gitea).
#[derive(Deserialize)]
pub(super) struct Branch {
    pub(super) sha: String,
    #[serde(rename = "ref")]
    pub(super) git_ref: String,
    /// Null when the head's repository (a fork) has been deleted.
    pub(super) repo: Option<BranchRepo>,
}

#[derive(Deserialize)]
pub(super) struct BranchRepo {
    pub(super) full_name: String,
    pub(super) clone_url: Option<String>,
}

#[derive(Deserialize)]
struct RefPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    ref_type: String,
    repository: Option<Repository>,
}

/// Parses one delivery; `event` is the `X-GitHub-Event` header.
pub fn parse(event: &str, body: &[u8]) -> Result<Parsed, Rejection> {
    let (repository, event) = match event {
        "push" => parse_push(body)?,
        "pull_request" => parse_pull_request(body)?,
        "ping" => (peek(body, "ping payload")?, Event::Ping),
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
                "missing X-GitHub-Event header".to_owned(),
            ));
        }
        other => (
            peek(body, "payload")?,
            ignored(&format!("GitHub event `{other}` starts nothing")),
        ),
    };
    Ok(Parsed {
        provider: Provider::Github,
        repository,
        event,
    })
}

/// Reads only `repository`, so the receiver can find the repository's secret and check the
/// signature before parsing the rest.
pub fn repository(body: &[u8]) -> Result<RepoRef, Rejection> {
    let peeked: RepositoryPeek = decode("payload", body)?;
    peeked
        .repository
        .map(Repository::into_ref)
        .ok_or_else(|| Rejection::BadPayload("payload: `repository` is missing".to_owned()))
}

/// The repository when the payload has one. Events Gantry ignores (and an organization hook's
/// ping) may name none; they still deserve a 202, not a 400.
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
    if p.deleted || is_zero_sha(&p.after) {
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
        // Missing: nothing is known. A new ref with nothing listed: GitHub lists only commits
        // new to the repository, which says nothing about how the ref differs from its base.
        None => false,
        Some([]) if new_ref => false,
        Some(list) => lists_complete && list.len() < LISTED_COMMITS_LIMIT,
    };
    let push = Push {
        tag_commit: HeadCommit::tag_commit(p.head_commit.as_ref(), &git_ref),
        git_ref,
        before: p.before,
        after: p.after,
        head_message: p.head_commit.and_then(|c| c.message),
        changed_files,
        changed_files_complete,
        sender: p.sender.map(|u| u.login),
    };
    Ok((repository, Event::Push(push)))
}

fn parse_pull_request(body: &[u8]) -> Result<(RepoRef, Event), Rejection> {
    let p: PullRequestPayload = decode("pull_request payload", body)?;
    let repository = p.repository.into_ref();
    let action = match p.action.as_str() {
        "opened" => PullRequestAction::Opened,
        "synchronize" => PullRequestAction::Synchronize,
        "reopened" => PullRequestAction::Reopened,
        "closed" => PullRequestAction::Closed,
        "edited" => PullRequestAction::Edited,
        "labeled" => PullRequestAction::Labeled,
        other => {
            let reason = format!("pull request action `{other}` starts nothing");
            return Ok((repository, ignored(&reason)));
        }
    };
    let sender = p.sender.map(|u| u.login);
    let pr = pull_request(action, p.pull_request, &repository.full_name, sender);
    Ok((repository, Event::PullRequest(pr)))
}

/// Builds the event from GitHub's (and Gitea's) `pull_request` object. `target` is the
/// delivery's repository, the base when `base.repo` is absent.
pub(super) fn pull_request(
    action: PullRequestAction,
    body: PullRequestBody,
    target: &str,
    sender: Option<String>,
) -> PullRequest {
    let base_name = body.base.repo.as_ref().map_or(target, |r| &r.full_name);
    // A null head repository is a deleted fork: treat it as foreign.
    let from_fork = body
        .head
        .repo
        .as_ref()
        .is_none_or(|r| r.full_name != base_name);
    PullRequest {
        action,
        number: body.number,
        title: body.title,
        head_sha: body.head.sha,
        head_ref: body.head.git_ref,
        base_ref: body.base.git_ref,
        base_sha: Some(body.base.sha).filter(|s| !s.is_empty()),
        from_fork,
        head_clone_url: body.head.repo.and_then(|r| r.clone_url),
        sender,
    }
}

pub(super) fn ignored(reason: &str) -> Event {
    Event::Ignored {
        reason: reason.to_owned(),
    }
}

pub(super) fn deleted(git_ref: &GitRef) -> Event {
    match git_ref {
        GitRef::Branch(b) => ignored(&format!("branch `{b}` was deleted")),
        GitRef::Tag(t) => ignored(&format!("tag `{t}` was deleted")),
    }
}

/// A `delete` event: `ref_type` is `branch` or `tag` and `ref` the short name (GitHub and
/// Gitea); a full `refs/...` name is shortened too.
pub(super) fn ref_deleted(ref_type: &str, name: &str) -> Event {
    match GitRef::from_full(name) {
        Some(git_ref) => deleted(&git_ref),
        None if ref_type == "tag" => ignored(&format!("tag `{name}` was deleted")),
        None => ignored(&format!("branch `{name}` was deleted")),
    }
}

/// `0000…` stands for "no commit": the old side of a new ref, the new side of a deleted one.
pub(super) fn is_zero_sha(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// The union of the commits' `added`, `modified` and `removed` lists, sorted and deduplicated,
/// and whether every list was there.
pub(super) fn changed_files<'a>(
    lists: impl IntoIterator<Item = &'a Option<Vec<String>>>,
) -> (Vec<String>, bool) {
    let mut files = BTreeSet::new();
    let mut complete = true;
    for list in lists {
        match list {
            Some(list) => files.extend(list.iter().cloned()),
            None => complete = false,
        }
    }
    (files.into_iter().collect(), complete)
}

/// Deserializes `body`; the error names what was being read (`what`, e.g. "push payload") and,
/// for a missing or mistyped field, the field's path (`pull_request.head.sha`).
pub(super) fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, Rejection> {
    // serde's derived structs also accept an array of the fields in order; no provider sends
    // one, so anything but an object is refused before it could be read that way.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b) if *b != b'{') {
        return Err(Rejection::BadPayload(format!(
            "{what} is not a JSON object"
        )));
    }
    serde_json::from_slice(body).map_err(|err| payload_error(what, body, &err))
}

fn payload_error(what: &str, body: &[u8], err: &serde_json::Error) -> Rejection {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    if !err.is_data() {
        return Rejection::BadPayload(format!("{what} is not JSON: {full}"));
    }
    let at = byte_offset(body, err.line(), err.column());
    let text = match message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        Some(field) => {
            let object = json_path(body, at, PathAt::EnclosingObject);
            format!("{what}: `{}` is missing", join_path(&object, field))
        }
        None => match json_path(body, at, PathAt::Value).as_str() {
            "" => format!("{what}: {message}"),
            path => format!("{what}: `{path}` has the wrong type ({message})"),
        },
    };
    Rejection::BadPayload(text)
}

fn join_path(object: &str, field: &str) -> String {
    if object.is_empty() {
        field.to_owned()
    } else {
        format!("{object}.{field}")
    }
}

/// serde_json reports a 1-based line and a column; turn them back into an offset in `body`.
fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match body[start..].iter().position(|&b| b == b'\n') {
            Some(n) => start += n + 1,
            None => break,
        }
    }
    (start + column).min(body.len())
}

#[derive(Clone, Copy, PartialEq)]
enum PathAt {
    /// The value serde_json stopped at (a wrong type).
    Value,
    /// The object serde_json just finished (a missing field is reported after its `}`).
    EnclosingObject,
}

enum Frame {
    Object { key: Option<String> },
    Array { index: usize },
}

/// The JSON path (`commits[2].added`) at offset `at`, by scanning `body` up to it. Only used to
/// word an error, so a body that is not JSON up to `at` just gives a shorter path.
fn json_path(body: &[u8], at: usize, want: PathAt) -> String {
    let mut stack: Vec<Frame> = Vec::new();
    let mut last_string: Option<&[u8]> = None;
    let mut last_token = b' ';
    let mut i = 0;
    while i < at {
        match body[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < at && body[i] != b'"' {
                    if body[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                last_string = body.get(start..i.min(at));
            }
            b'{' => stack.push(Frame::Object { key: None }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(Frame::Object { key }) = stack.last_mut() {
                    *key = last_string.map(|s| String::from_utf8_lossy(s).into_owned());
                }
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { key }) => *key = None,
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            _ => {}
        }
        if let Some(&b) = body.get(i).filter(|b| !b.is_ascii_whitespace()) {
            last_token = b;
        }
        i += 1;
    }
    if want == PathAt::EnclosingObject && last_token != b'}' {
        // Still inside the object: its own current key is not part of its path.
        if let Some(Frame::Object { key }) = stack.last_mut() {
            *key = None;
        }
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object { key: Some(k) } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Frame::Object { key: None } => {}
            Frame::Array { index } => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_body(after: &str, commits: &str) -> String {
        format!(
            r#"{{"ref":"refs/heads/main","before":"1111111111111111111111111111111111111111",
            "after":"{after}","commits":{commits},"head_commit":{{"message":"fix [skip ci]"}},
            "sender":{{"login":"octocat"}},
            "repository":{{"full_name":"o/r","clone_url":"https://github.com/o/r.git",
            "html_url":"https://github.com/o/r","ssh_url":"git@github.com:o/r.git",
            "git_url":"git://github.com/o/r.git","created_at":1700000000}}}}"#
        )
    }

    fn bad(result: Result<Parsed, Rejection>) -> String {
        match result {
            Err(Rejection::BadPayload(m)) => m,
            other => panic!("expected BadPayload, got {other:?}"),
        }
    }

    #[test]
    fn push_unions_sorts_and_dedups_changed_files() {
        let commits = r#"[{"added":["b.rs"],"modified":["a.rs"],"removed":[]},
                          {"added":[],"modified":["a.rs","c.rs"],"removed":["d.rs"]}]"#;
        let body = push_body("2222222222222222222222222222222222222222", commits);
        let parsed = parse("push", body.as_bytes()).unwrap();
        assert_eq!(parsed.repository.full_name, "o/r");
        assert_eq!(parsed.repository.urls.len(), 4);
        let Event::Push(push) = parsed.event else {
            panic!("not a push: {:?}", parsed.event)
        };
        assert_eq!(push.git_ref, GitRef::Branch("main".into()));
        assert_eq!(push.changed_files, ["a.rs", "b.rs", "c.rs", "d.rs"]);
        assert!(push.changed_files_complete);
        assert_eq!(push.head_message.as_deref(), Some("fix [skip ci]"));
        assert_eq!(push.sender.as_deref(), Some("octocat"));
    }

    #[test]
    fn twenty_commits_may_be_a_cut_list() {
        let one = r#"{"added":[],"modified":["a"],"removed":[]}"#;
        let commits = format!("[{}]", vec![one; 20].join(","));
        let body = push_body("2222222222222222222222222222222222222222", &commits);
        let Event::Push(push) = parse("push", body.as_bytes()).unwrap().event else {
            panic!("not a push")
        };
        assert!(!push.changed_files_complete);
    }

    #[test]
    fn a_zero_after_is_a_deleted_branch() {
        let body = push_body("0000000000000000000000000000000000000000", "[]");
        let parsed = parse("push", body.as_bytes()).unwrap();
        assert_eq!(parsed.event, ignored("branch `main` was deleted"));
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let body = push_body("x", "[]").replace(r#""after":"x","#, "");
        assert_eq!(
            bad(parse("push", body.as_bytes())),
            "push payload: `after` is missing"
        );
        let body = push_body("x", r#"[{"added":[1]}]"#);
        let message = bad(parse("push", body.as_bytes()));
        assert!(
            message.starts_with("push payload: `commits[0].added[0]` has the wrong type"),
            "{message}"
        );
        let body = br#"{"action":"opened","pull_request":{"number":1,"title":"t",
            "head":{"ref":"f","repo":null},"base":{"sha":"b","ref":"main"}},
            "repository":{"full_name":"o/r"}}"#;
        assert_eq!(
            bad(parse("pull_request", body)),
            "pull_request payload: `pull_request.head.sha` is missing"
        );
    }

    #[test]
    fn field_paths_survive_pretty_printing() {
        let body = "{\n  \"action\": \"opened\",\n  \"pull_request\": {\n    \"number\": 1,\n    \
                    \"title\": \"t\",\n    \"head\": {\n      \"ref\": \"f\"\n    },\n    \
                    \"base\": {\"sha\": \"b\", \"ref\": \"m\"}\n  },\n  \
                    \"repository\": {\"full_name\": \"o/r\"}\n}\n";
        assert_eq!(
            bad(parse("pull_request", body.as_bytes())),
            "pull_request payload: `pull_request.head.sha` is missing"
        );
        let body = "{\n  \"ref\": \"refs/heads/m\",\n  \"after\": 5\n}";
        let message = bad(parse("push", body.as_bytes()));
        assert!(
            message.starts_with("push payload: `after` has the wrong type"),
            "{message}"
        );
    }

    #[test]
    fn a_pull_request_from_a_deleted_fork_is_foreign() {
        let body = br#"{"action":"synchronize","pull_request":{"number":7,"title":"t",
            "head":{"sha":"h","ref":"f","repo":null},
            "base":{"sha":"b","ref":"main","repo":{"full_name":"o/r"}}},
            "repository":{"full_name":"o/r"}}"#;
        let Event::PullRequest(pr) = parse("pull_request", body).unwrap().event else {
            panic!("not a pull request")
        };
        assert!(pr.from_fork);
        assert_eq!(pr.action, PullRequestAction::Synchronize);
        assert_eq!(pr.head_clone_url, None);
        assert_eq!(pr.base_sha.as_deref(), Some("b"));
    }

    #[test]
    fn not_json_is_a_bad_payload() {
        assert!(bad(parse("push", b"")).starts_with("push payload is not JSON"));
        assert!(bad(parse("push", b"{\"ref\":")).starts_with("push payload is not JSON"));
        assert!(bad(parse("ping", b"{\"repository\":{")).starts_with("ping payload is not JSON"));
        assert_eq!(
            bad(parse("ping", b" [1,2]")),
            "ping payload is not a JSON object"
        );
    }

    #[test]
    fn other_events_are_ignored_with_their_name() {
        let parsed = parse("issues", br#"{"repository":{"full_name":"o/r"}}"#).unwrap();
        assert_eq!(
            parsed.event,
            ignored("GitHub event `issues` starts nothing")
        );
        let parsed = parse("delete", br#"{"ref":"v1","ref_type":"tag"}"#).unwrap();
        assert_eq!(parsed.event, ignored("tag `v1` was deleted"));
    }
}
