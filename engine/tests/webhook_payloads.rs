//! Real payloads through the webhook parsers and signature checks.
//!
//! - GitHub: every example of `@octokit/webhooks-examples` (GitHub's own recorded deliveries,
//!   pinned in tests/webhook-examples/package.json, installed by scripts/webhook-examples), and
//!   signatures made by `@octokit/webhooks-methods`, GitHub's own signer, not by our code.
//! - GitLab: tests/fixtures/webhooks/gitlab/*.json, written from the fields of GitLab's
//!   "Webhook events" documentation and validated once with PyPI `pydantic-gitlab-webhooks`
//!   0.3.54 (`validate_event_header_and_body_dict`): push.json → `PushEvent`, tag_push.json →
//!   `TagPushEvent`, merge_request_open.json and merge_request_update.json →
//!   `MergeRequestEvent`. push_delete.json fails that model only on `checkout_sha: null`, which
//!   is what GitLab sends for a deleted ref (the model declares it a string); with a string there
//!   it validates as `PushEvent` too.
//! - Gitea: tests/fixtures/webhooks/gitea/*.json in the shape of Gitea's
//!   modules/structs/hook.go (`PushPayload`, `PullRequestPayload`, `DeletePayload`).
//! - Malformed bodies: every one an `Err`, none a panic.
#![expect(
    clippy::unwrap_used,
    reason = "helpers of a test: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use gantry::pipeline::PullRequestAction;
use gantry::webhook::{
    Event, GitRef, Parsed, Provider, Rejection, gitea, github, gitlab, signature,
};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn examples_dir() -> PathBuf {
    root().join("tests/webhook-examples")
}

/// Installs the npm packages once per test binary (a no-op when they are current), so the
/// test runs on a fresh clone; fails loudly rather than passing on zero examples.
fn ensure_examples() -> &'static Path {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let index = examples_dir()
            .join("node_modules/@octokit/webhooks-examples/api.github.com/index.json");
        let status = Command::new("bash")
            .arg(root().join("scripts/webhook-examples"))
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()) && index.is_file(),
            "the GitHub webhook examples are not installed: run scripts/webhook-examples \
             (needs npm; {} is missing)",
            index.display()
        );
        index
    })
}

fn fixture(provider: &str, name: &str) -> Vec<u8> {
    let path = root().join(format!("tests/fixtures/webhooks/{provider}/{name}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ignored_reason(parsed: &Parsed) -> Option<&str> {
    match &parsed.event {
        Event::Ignored { reason } => Some(reason),
        _ => None,
    }
}

#[derive(Default, Debug)]
struct Tally {
    accepted: usize,
    ignored: usize,
    rejected: usize,
    reasons: BTreeMap<String, usize>,
}

const SUPPORTED_PR_ACTIONS: [&str; 6] = [
    "opened",
    "synchronize",
    "reopened",
    "closed",
    "edited",
    "labeled",
];

/// Every example of every event: Ok with the variant that event and action call for.
#[test]
fn every_octokit_example_parses_to_the_expected_event() {
    let index: Vec<Value> =
        serde_json::from_slice(&std::fs::read(ensure_examples()).unwrap()).unwrap();
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    for entry in &index {
        let name = entry["name"].as_str().unwrap();
        for example in entry["examples"].as_array().unwrap() {
            let body = serde_json::to_vec(example).unwrap();
            let tally = tallies.entry(name.to_owned()).or_default();
            let parsed = match github::parse(name, &body) {
                Ok(parsed) => parsed,
                Err(rejection) => {
                    tally.rejected += 1;
                    *tally.reasons.entry(rejection.to_string()).or_default() += 1;
                    continue;
                }
            };
            assert_eq!(parsed.provider, Provider::Github);
            if let Some(reason) = ignored_reason(&parsed) {
                tally.ignored += 1;
                *tally.reasons.entry(reason.to_owned()).or_default() += 1;
            } else {
                tally.accepted += 1;
            }
            check_example(name, example, &parsed);
        }
    }
    for (name, t) in &tallies {
        println!(
            "{name}: {} accepted, {} ignored, {} rejected {:?}",
            t.accepted, t.ignored, t.rejected, t.reasons
        );
    }
    let total = |name: &str| {
        tallies
            .get(name)
            .map_or(0, |t| t.accepted + t.ignored + t.rejected)
    };
    for (name, count) in [
        ("push", 7),
        ("pull_request", 29),
        ("create", 5),
        ("delete", 4),
        ("ping", 4),
    ] {
        assert_eq!(
            total(name),
            count,
            "{name} examples: is @octokit/webhooks-examples 7.6.1 installed? run scripts/webhook-examples"
        );
    }
    // No real payload, of any event, is refused.
    let rejected: Vec<_> = tallies
        .iter()
        .filter(|(_, t)| t.rejected > 0)
        .map(|(n, t)| (n, &t.reasons))
        .collect();
    assert!(rejected.is_empty(), "rejected: {rejected:?}");
    let push = &tallies["push"];
    assert_eq!((push.accepted, push.ignored), (3, 4));
    // opened 4, closed 2, labeled 2, reopened 2, synchronize 1; the other 18 are actions
    // Gantry does not act on (assigned, locked, review_requested, …).
    let pr = &tallies["pull_request"];
    assert_eq!((pr.accepted, pr.ignored), (11, 18));
    assert_eq!(tallies["ping"].accepted, 4);
}

fn check_example(name: &str, example: &Value, parsed: &Parsed) {
    let full_name = example["repository"]["full_name"].as_str();
    if let Some(full_name) = full_name {
        assert_eq!(parsed.repository.full_name, full_name, "{name}");
    }
    match name {
        "push" => {
            if example["deleted"] == Value::Bool(true) {
                let reason = ignored_reason(parsed).unwrap();
                assert!(reason.ends_with("was deleted"), "{reason}");
            } else {
                let Event::Push(push) = &parsed.event else {
                    panic!("push example became {:?}", parsed.event)
                };
                assert_eq!(push.git_ref.full(), example["ref"].as_str().unwrap());
                assert_eq!(push.after, example["after"].as_str().unwrap());
            }
        }
        "pull_request" => {
            let action = example["action"].as_str().unwrap();
            if SUPPORTED_PR_ACTIONS.contains(&action) {
                let Event::PullRequest(pr) = &parsed.event else {
                    panic!("pull_request {action} became {:?}", parsed.event)
                };
                assert_eq!(pr.number, example["number"].as_i64().unwrap());
                assert_eq!(pr.head_sha, example["pull_request"]["head"]["sha"]);
            } else {
                assert_eq!(
                    ignored_reason(parsed),
                    Some(format!("pull request action `{action}` starts nothing").as_str())
                );
            }
        }
        "create" => assert_eq!(
            ignored_reason(parsed),
            Some("a create event starts nothing: the push event for the same ref does")
        ),
        "delete" => {
            let expected = format!(
                "{} `{}` was deleted",
                example["ref_type"].as_str().unwrap(),
                example["ref"].as_str().unwrap()
            );
            assert_eq!(ignored_reason(parsed), Some(expected.as_str()));
        }
        "ping" => assert_eq!(parsed.event, Event::Ping),
        other => assert_eq!(
            ignored_reason(parsed),
            Some(format!("GitHub event `{other}` starts nothing").as_str())
        ),
    }
}

fn example(name: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let index: Vec<Value> =
        serde_json::from_slice(&std::fs::read(ensure_examples()).unwrap()).unwrap();
    index
        .into_iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["examples"].as_array()?.iter().find(|x| pick(x)).cloned())
        .unwrap_or_else(|| panic!("no matching {name} example"))
}

#[test]
fn octokit_branch_push_values() {
    let body = example("push", |x| x["ref"] == "refs/heads/master");
    let parsed = github::parse("push", &serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(parsed.repository.full_name, "Codertocat/Hello-World");
    assert!(
        parsed
            .repository
            .urls
            .contains(&"https://github.com/Codertocat/Hello-World.git".to_owned())
    );
    let Event::Push(push) = parsed.event else {
        panic!("not a push")
    };
    assert_eq!(push.git_ref, GitRef::Branch("master".into()));
    assert_eq!(push.after, "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
    assert_eq!(push.changed_files, ["README.md"]);
    assert!(push.changed_files_complete);
    assert_eq!(push.head_message.as_deref(), Some("Initial commit"));
    assert_eq!(push.sender.as_deref(), Some("Codertocat"));
}

#[test]
fn octokit_new_tag_push_lists_nothing_so_is_incomplete() {
    let body = example("push", |x| {
        x["ref"] == "refs/tags/simple-tag" && x["deleted"] == false
    });
    let parsed = github::parse("push", &serde_json::to_vec(&body).unwrap()).unwrap();
    let Event::Push(push) = parsed.event else {
        panic!("not a push")
    };
    assert_eq!(push.git_ref, GitRef::Tag("simple-tag".into()));
    assert!(push.changed_files.is_empty());
    assert!(!push.changed_files_complete);
}

#[test]
fn octokit_opened_pull_request_values() {
    let body = example("pull_request", |x| x["action"] == "opened");
    let parsed = github::parse("pull_request", &serde_json::to_vec(&body).unwrap()).unwrap();
    let Event::PullRequest(pr) = parsed.event else {
        panic!("not a pull request")
    };
    assert_eq!(pr.action, PullRequestAction::Opened);
    assert_eq!(pr.number, 2);
    assert_eq!(pr.title, "Update the README with new information.");
    assert_eq!(pr.head_sha, "ec26c3e57ca3a959ca5aad62de7213c562f8c821");
    assert_eq!(pr.head_ref, "changes");
    assert_eq!(pr.base_ref, "master");
    assert_eq!(
        pr.base_sha.as_deref(),
        Some("f95f852bd8fca8fcc58a9a2d6c842781e32a215e")
    );
    assert!(!pr.from_fork);
    assert_eq!(
        pr.head_clone_url.as_deref(),
        Some("https://github.com/Codertocat/Hello-World.git")
    );
    assert_eq!(pr.sender.as_deref(), Some("Codertocat"));
}

#[test]
fn octokit_payloads_peek_at_the_repository() {
    let body = serde_json::to_vec(&example("ping", |x| x.get("repository").is_some())).unwrap();
    assert_eq!(
        github::repository(&body).unwrap().full_name,
        "Octocoders/Hello-World"
    );
    // An organization hook's ping names no repository: the receiver cannot pick a secret.
    let org = serde_json::to_vec(&example("ping", |x| x.get("repository").is_none())).unwrap();
    assert_eq!(
        github::repository(&org),
        Err(Rejection::BadPayload(
            "payload: `repository` is missing".into()
        ))
    );
    assert_eq!(github::parse("ping", &org).unwrap().event, Event::Ping);
}

/// GitHub's own signer (`@octokit/webhooks-methods` `sign`) run under node.
fn octokit_sign(secret: &str, body: &[u8]) -> String {
    let script = "import { sign } from '@octokit/webhooks-methods';\n\
                  const chunks = [];\n\
                  for await (const c of process.stdin) chunks.push(c);\n\
                  const body = Buffer.concat(chunks).toString('utf8');\n\
                  process.stdout.write(await sign(process.env.SECRET, body));";
    let mut child = Command::new("node")
        .args(["--input-type=module", "-e", script])
        .current_dir(examples_dir())
        .env("SECRET", secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs (needed with scripts/webhook-examples)");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "node sign failed");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn signatures_from_githubs_own_signer_verify() {
    ensure_examples();
    let secret = "It's a Secret to Everybody";
    for body in [
        serde_json::to_vec(&example("push", |x| x["ref"] == "refs/heads/master")).unwrap(),
        serde_json::to_vec(&example("pull_request", |x| x["action"] == "synchronize")).unwrap(),
    ] {
        let header = octokit_sign(secret, &body);
        assert!(header.starts_with("sha256="), "{header}");
        assert_eq!(signature::sign_github(secret.as_bytes(), &body), header);
        assert_eq!(
            signature::verify_github(secret.as_bytes(), Some(&header), &body),
            Ok(())
        );
        let mut changed = body.clone();
        let last = changed.len() - 2;
        changed[last] ^= 0x01;
        assert_eq!(
            signature::verify_github(secret.as_bytes(), Some(&header), &changed),
            Err(Rejection::Unauthorized(
                "X-Hub-Signature-256 does not match the repository's webhook secret".into()
            ))
        );
    }
}

#[test]
fn gitlab_push_fixture() {
    let parsed = gitlab::parse("Push Hook", &fixture("gitlab", "push")).unwrap();
    assert_eq!(parsed.provider, Provider::Gitlab);
    assert_eq!(parsed.repository.full_name, "mike/diaspora");
    assert_eq!(
        parsed.repository.urls,
        [
            "https://gitlab.example.com/mike/diaspora.git",
            "git@gitlab.example.com:mike/diaspora.git",
            "https://gitlab.example.com/mike/diaspora",
        ]
    );
    let Event::Push(push) = parsed.event else {
        panic!("not a push")
    };
    assert_eq!(push.git_ref, GitRef::Branch("main".into()));
    assert_eq!(
        push.before.as_deref(),
        Some("95790bf891e76fee5e1747ab589903a6a1f80f22")
    );
    assert_eq!(push.after, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(
        push.changed_files,
        [
            "CHANGELOG",
            "README.md",
            "app/controller/application.rb",
            "docs/old.md"
        ]
    );
    assert!(push.changed_files_complete);
    assert_eq!(push.head_message.as_deref(), Some("fixed readme [skip ci]"));
    assert_eq!(push.sender.as_deref(), Some("jsmith"));
    assert_eq!(
        gitlab::repository(&fixture("gitlab", "push")).unwrap(),
        parsed.repository
    );
}

#[test]
fn gitlab_push_with_more_commits_than_listed_is_incomplete() {
    let mut body: Value = serde_json::from_slice(&fixture("gitlab", "push")).unwrap();
    body["total_commits_count"] = 25.into();
    let parsed = gitlab::parse("Push Hook", &serde_json::to_vec(&body).unwrap()).unwrap();
    let Event::Push(push) = parsed.event else {
        panic!("not a push")
    };
    assert!(!push.changed_files_complete);
}

#[test]
fn gitlab_tag_push_and_deletion_fixtures() {
    let parsed = gitlab::parse("Tag Push Hook", &fixture("gitlab", "tag_push")).unwrap();
    let Event::Push(push) = parsed.event else {
        panic!("not a push")
    };
    assert_eq!(push.git_ref, GitRef::Tag("v1.0.0".into()));
    assert_eq!(push.after, "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7");
    // A new tag lists no commits: git decides what changed.
    assert!(!push.changed_files_complete);

    let parsed = gitlab::parse("Push Hook", &fixture("gitlab", "push_delete")).unwrap();
    assert_eq!(
        ignored_reason(&parsed),
        Some("branch `feature/old` was deleted")
    );
    assert_eq!(parsed.repository.full_name, "mike/diaspora");
}

#[test]
fn gitlab_merge_request_fixtures() {
    let parsed = gitlab::parse(
        "Merge Request Hook",
        &fixture("gitlab", "merge_request_open"),
    )
    .unwrap();
    assert_eq!(parsed.repository.full_name, "mike/diaspora");
    let Event::PullRequest(pr) = parsed.event else {
        panic!("not a merge request")
    };
    assert_eq!(pr.action, PullRequestAction::Opened);
    assert_eq!(pr.number, 1);
    assert_eq!(pr.title, "MS-Viewport");
    assert_eq!(pr.head_sha, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(pr.head_ref, "ms-viewport");
    assert_eq!(pr.base_ref, "main");
    assert_eq!(pr.base_sha, None);
    assert!(pr.from_fork);
    assert_eq!(
        pr.head_clone_url.as_deref(),
        Some("https://gitlab.example.com/jsmith/diaspora.git")
    );
    assert_eq!(pr.sender.as_deref(), Some("root"));

    let parsed = gitlab::parse(
        "Merge Request Hook",
        &fixture("gitlab", "merge_request_update"),
    )
    .unwrap();
    let Event::PullRequest(pr) = parsed.event else {
        panic!("not a merge request")
    };
    assert_eq!(pr.action, PullRequestAction::Synchronize);
    assert_eq!(pr.head_sha, "c3f4f1e3ef3b0ba1f5e3f4a1c9e0b4e2d1a0f9e8");

    // The same update without `oldrev` changed no code.
    let mut body: Value =
        serde_json::from_slice(&fixture("gitlab", "merge_request_update")).unwrap();
    body["object_attributes"]
        .as_object_mut()
        .unwrap()
        .remove("oldrev");
    let parsed = gitlab::parse("Merge Request Hook", &serde_json::to_vec(&body).unwrap()).unwrap();
    let Event::PullRequest(pr) = parsed.event else {
        panic!("not a merge request")
    };
    assert_eq!(pr.action, PullRequestAction::Edited);

    body["object_attributes"]["action"] = "approved".into();
    let parsed = gitlab::parse("Merge Request Hook", &serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(
        ignored_reason(&parsed),
        Some("merge request action `approved` starts nothing")
    );
}

#[test]
fn gitea_push_fixture() {
    let parsed = gitea::parse("push", &fixture("gitea", "push")).unwrap();
    assert_eq!(parsed.provider, Provider::Gitea);
    assert_eq!(parsed.repository.full_name, "alice/widget");
    assert_eq!(
        parsed.repository.urls,
        [
            "https://gitea.example/alice/widget.git",
            "https://gitea.example/alice/widget",
            "git@gitea.example:alice/widget.git",
        ]
    );
    let Event::Push(push) = parsed.event else {
        panic!("not a push")
    };
    assert_eq!(push.git_ref, GitRef::Branch("main".into()));
    assert_eq!(push.after, "9a8b7c6d5e4f30211203f4e5d6c7b8a9f0e1d2c3");
    assert_eq!(
        push.changed_files,
        ["Cargo.toml", "src/lexer.rs", "src/lib.rs", "src/parser.rs"]
    );
    assert!(push.changed_files_complete);
    assert_eq!(push.head_message.as_deref(), Some("Drop the old lexer\n"));
    assert_eq!(push.sender.as_deref(), Some("alice"));
    assert_eq!(
        gitea::repository(&fixture("gitea", "push")).unwrap(),
        parsed.repository
    );
}

#[test]
fn gitea_pull_request_fixtures() {
    let parsed = gitea::parse("pull_request", &fixture("gitea", "pull_request_opened")).unwrap();
    let Event::PullRequest(pr) = parsed.event else {
        panic!("not a pull request")
    };
    assert_eq!(pr.action, PullRequestAction::Opened);
    assert_eq!(pr.number, 3);
    assert_eq!(pr.title, "Faster parser");
    assert_eq!(pr.head_sha, "0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e");
    assert_eq!(pr.head_ref, "faster");
    assert_eq!(pr.base_ref, "main");
    assert_eq!(
        pr.base_sha.as_deref(),
        Some("1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e")
    );
    assert!(pr.from_fork);
    assert_eq!(
        pr.head_clone_url.as_deref(),
        Some("https://gitea.example/bob/widget.git")
    );
    assert_eq!(pr.sender.as_deref(), Some("bob"));

    let parsed = gitea::parse(
        "pull_request",
        &fixture("gitea", "pull_request_synchronized"),
    )
    .unwrap();
    let Event::PullRequest(pr) = parsed.event else {
        panic!("not a pull request")
    };
    assert_eq!(pr.action, PullRequestAction::Synchronize);
    assert_eq!(pr.head_sha, "4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f");
}

#[test]
fn gitea_delete_fixture() {
    let parsed = gitea::parse("delete", &fixture("gitea", "delete")).unwrap();
    assert_eq!(
        ignored_reason(&parsed),
        Some("branch `feature/old` was deleted")
    );
    assert_eq!(parsed.repository.full_name, "alice/widget");
}

#[test]
fn gitea_signature_round_trip_on_a_fixture() {
    let body = fixture("gitea", "push");
    let header = signature::sign_gitea(b"s3cret", &body);
    assert_eq!(header.len(), 64);
    assert_eq!(
        signature::verify_gitea(b"s3cret", Some(&header), &body),
        Ok(())
    );
    assert!(signature::verify_gitea(b"s3cret", Some(&header), &body[1..]).is_err());
}

type Parser = fn(&str, &[u8]) -> Result<Parsed, Rejection>;

#[test]
fn malformed_bodies_are_rejected_not_panicked_on() {
    let push = fixture("gitea", "push");
    let truncated = &push[..push.len() / 2];
    let huge_number = br#"{"action":"opened","pull_request":{"number":1e400,"title":"t",
        "head":{"sha":"h","ref":"f"},"base":{"sha":"b","ref":"m"}},"repository":{"full_name":"o/r"}}"#;
    let too_big_for_i64 = br#"{"action":"opened","pull_request":{"number":99999999999999999999,"title":"t",
        "head":{"sha":"h","ref":"f"},"base":{"sha":"b","ref":"m"}},"repository":{"full_name":"o/r"}}"#;
    let wrong_types: &[&[u8]] = &[
        br#"{"ref":1,"after":"a","repository":{"full_name":"o/r"}}"#,
        br#"{"ref":"refs/heads/m","after":"a","commits":"no","repository":{"full_name":"o/r"}}"#,
        br#"{"ref":"refs/heads/m","after":{"sha":1},"repository":{"full_name":"o/r"}}"#,
        br#"[]"#,
        br#""push""#,
        br#"null"#,
    ];
    let cases: Vec<(&str, &[u8])> = [
        ("empty", &b""[..]),
        ("whitespace", b"  \n"),
        ("truncated", truncated),
        ("not utf-8", b"\xff\xfe{}"),
        ("huge number", huge_number),
        ("number too big for i64", too_big_for_i64),
    ]
    .into_iter()
    .chain(wrong_types.iter().map(|b| ("wrong type", *b)))
    .collect();
    let parsers: [(&str, Parser, &[&str]); 3] = [
        ("github", github::parse, &["push", "pull_request", "delete"]),
        ("gitea", gitea::parse, &["push", "pull_request", "delete"]),
        (
            "gitlab",
            gitlab::parse,
            &["Push Hook", "Tag Push Hook", "Merge Request Hook"],
        ),
    ];
    for (provider, parse, events) in parsers {
        for event in events {
            for (what, body) in &cases {
                match parse(event, body) {
                    Err(Rejection::BadPayload(message)) => assert!(!message.is_empty()),
                    other => panic!("{provider} {event} {what}: {other:?}"),
                }
            }
        }
    }
    // The message names the field that is wrong.
    let message = github::parse("pull_request", huge_number)
        .unwrap_err()
        .to_string();
    assert!(message.contains("pull_request payload"), "{message}");
    let message = github::parse("pull_request", too_big_for_i64)
        .unwrap_err()
        .to_string();
    assert!(message.contains("`pull_request.number`"), "{message}");
    let message = gitea::parse("push", wrong_types[1])
        .unwrap_err()
        .to_string();
    assert!(message.contains("`commits`"), "{message}");
}
