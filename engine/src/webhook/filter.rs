//! The `on:` filters applied to one event: does this pipeline run for it, and if not, why not
//! (the reason is kept on the delivery, so "why did nothing run?" has an answer).

use super::event::{Event, GitRef};
use crate::pipeline::Pipeline;

/// What the filters decided for one pipeline.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Run,
    Skip(String),
}

/// Whether the head commit asks not to be built: `[skip ci]`, `[ci skip]`, `[no ci]`,
/// `[skip gantry]` anywhere in the message (case-insensitive), as GitHub and GitLab honour.
pub fn skip_ci(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    [
        "[skip ci]",
        "[ci skip]",
        "[no ci]",
        "[skip gantry]",
        "[gantry skip]",
    ]
    .iter()
    .any(|m| lower.contains(m))
}

/// Does `pipeline` run for `event`? `changed` lists the files the event changed (for `paths`).
pub fn decide(pipeline: &Pipeline, event: &Event, changed: &[&str]) -> Decision {
    let on = &pipeline.on;
    match event {
        Event::Push(push) => {
            let Some(trigger) = &on.push else {
                return Decision::Skip("the pipeline has no `on.push`".into());
            };
            match &push.git_ref {
                GitRef::Branch(branch) => {
                    if trigger.matches_branch(branch, changed) {
                        Decision::Run
                    } else if !trigger.matches_branch_name(branch) {
                        Decision::Skip(format!(
                            "branch `{branch}` does not match `on.push` branches"
                        ))
                    } else {
                        Decision::Skip(format!(
                            "no changed file matches `on.push.paths` ({} files changed)",
                            changed.len()
                        ))
                    }
                }
                GitRef::Tag(tag) => {
                    if trigger.matches_tag(tag) {
                        Decision::Run
                    } else {
                        Decision::Skip(format!("tag `{tag}` does not match `on.push` tags"))
                    }
                }
            }
        }
        Event::PullRequest(pr) => {
            let Some(trigger) = &on.pull_request else {
                return Decision::Skip("the pipeline has no `on.pull_request`".into());
            };
            if !trigger.types.contains(&pr.action) {
                return Decision::Skip(format!(
                    "pull request action `{}` is not in `on.pull_request.types`",
                    action_name(pr.action)
                ));
            }
            if trigger.matches(pr.action, &pr.base_ref, changed) {
                Decision::Run
            } else if !trigger.targets(&pr.base_ref) {
                Decision::Skip(format!(
                    "target branch `{}` does not match `on.pull_request.branches`",
                    pr.base_ref
                ))
            } else {
                Decision::Skip(format!(
                    "no changed file matches `on.pull_request.paths` ({} files changed)",
                    changed.len()
                ))
            }
        }
        Event::Ping => Decision::Skip("a ping starts nothing".into()),
        Event::Ignored { reason } => Decision::Skip(reason.clone()),
    }
}

pub fn action_name(action: crate::pipeline::PullRequestAction) -> &'static str {
    crate::pipeline::PullRequestAction::ALL
        .iter()
        .find(|(_, a)| *a == action)
        .map_or("unknown", |(n, _)| n)
}

/// Whether the pipeline's filters look at changed files at all (computing them may need git).
pub fn needs_changed_files(pipeline: &Pipeline, event: &Event) -> bool {
    match event {
        Event::Push(p) if matches!(p.git_ref, GitRef::Branch(_)) => pipeline
            .on
            .push
            .as_ref()
            .is_some_and(|t| !t.paths.is_empty() || !t.paths_ignore.is_empty()),
        Event::PullRequest(_) => pipeline
            .on
            .pull_request
            .as_ref()
            .is_some_and(|t| !t.paths.is_empty() || !t.paths_ignore.is_empty()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::PullRequestAction;
    use crate::webhook::event::{PullRequest, Push};

    fn pipeline(on: &str) -> Pipeline {
        let yaml = format!(
            "name: p\non:\n{on}\nstages:\n  - name: a\n    image: alpine\n    steps:\n      - run: \"true\"\n"
        );
        match crate::pipeline::parse("p.yaml", &yaml) {
            Ok(p) => p,
            Err(report) => panic!("{report}"),
        }
    }

    fn push(git_ref: GitRef) -> Event {
        Event::Push(Push {
            git_ref,
            before: None,
            after: "a".repeat(40),
            tag_commit: None,
            head_message: None,
            changed_files: vec![],
            changed_files_complete: true,
            sender: None,
        })
    }

    fn pr(action: PullRequestAction, base: &str) -> Event {
        Event::PullRequest(PullRequest {
            action,
            number: 7,
            title: "t".into(),
            head_sha: "b".repeat(40),
            head_ref: "feature".into(),
            base_ref: base.into(),
            base_sha: None,
            from_fork: false,
            head_clone_url: None,
            sender: None,
        })
    }

    #[test]
    fn push_to_a_matching_branch_runs_and_others_say_why_not() {
        let p = pipeline("  push:\n    branches: [main, \"release/*\"]");
        assert_eq!(
            decide(&p, &push(GitRef::Branch("main".into())), &[]),
            Decision::Run
        );
        assert_eq!(
            decide(&p, &push(GitRef::Branch("release/1.2".into())), &[]),
            Decision::Run
        );
        assert_eq!(
            decide(&p, &push(GitRef::Branch("dev".into())), &[]),
            Decision::Skip("branch `dev` does not match `on.push` branches".into())
        );
        assert_eq!(
            decide(&p, &push(GitRef::Tag("v1".into())), &[]),
            Decision::Skip("tag `v1` does not match `on.push` tags".into())
        );
    }

    #[test]
    fn path_filters_look_at_changed_files() {
        let p = pipeline("  push:\n    paths: [\"src/**\"]");
        let event = push(GitRef::Branch("main".into()));
        assert!(needs_changed_files(&p, &event));
        assert_eq!(decide(&p, &event, &["src/lib.rs"]), Decision::Run);
        assert_eq!(
            decide(&p, &event, &["README.md"]),
            Decision::Skip("no changed file matches `on.push.paths` (1 files changed)".into())
        );
    }

    #[test]
    fn pull_requests_filter_on_action_and_target_branch() {
        let p = pipeline("  pull_request:\n    branches: [main]");
        assert_eq!(
            decide(&p, &pr(PullRequestAction::Opened, "main"), &[]),
            Decision::Run
        );
        assert_eq!(
            decide(&p, &pr(PullRequestAction::Closed, "main"), &[]),
            Decision::Skip("pull request action `closed` is not in `on.pull_request.types`".into())
        );
        assert_eq!(
            decide(&p, &pr(PullRequestAction::Opened, "dev"), &[]),
            Decision::Skip("target branch `dev` does not match `on.pull_request.branches`".into())
        );
        let push_only = pipeline("  push: {}");
        assert_eq!(
            decide(&push_only, &pr(PullRequestAction::Opened, "main"), &[]),
            Decision::Skip("the pipeline has no `on.pull_request`".into())
        );
    }

    #[test]
    fn skip_ci_markers_are_found_anywhere_in_any_case() {
        assert!(skip_ci("docs: typo [skip ci]"));
        assert!(skip_ci("[CI SKIP] wip"));
        assert!(skip_ci("x\n\n[no ci]"));
        assert!(!skip_ci("skip ci without brackets"));
    }
}
