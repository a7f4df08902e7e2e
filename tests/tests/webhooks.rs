//! Webhooks end to end: real bare repositories served by `git daemon` and by `git
//! http-backend` (smart HTTP under lighttpd), commits pushed with the git CLI, the payload the
//! provider would send delivered over HTTP with its real signature, and then the runs, the
//! checked-out content and the step environment asserted from what the steps printed.

use std::time::Duration;

use gantry::store::{RunId, RunStatus, runs};
use gantry::webhook::signature;
use gantry_tests::git::{BareRepo, GitDaemon, GitHttp, git};
use gantry_tests::{StageStatus, TestEngine, stage_of};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);
const SECRET: &str = "s3cret-webhook-key";

async fn register(
    app: &TestEngine,
    provider: &str,
    full_name: &str,
    clone_url: &str,
    extra: Value,
) {
    let mut body = json!({
        "provider": provider,
        "full_name": full_name,
        "clone_url": clone_url,
        "webhook_secret": SECRET,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let response = app
        .http()
        .post(format!("{}/api/v1/projects/test/repositories", app.url()))
        .json(&body)
        .send()
        .await
        .expect("register");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "registering the repository: {status} {text}"
    );
}

/// What GitHub sends for a push (the fields its documentation lists that Gantry reads, and a
/// few it does not).
fn github_push(
    full_name: &str,
    clone_url: &str,
    git_ref: &str,
    before: &str,
    after: &str,
    message: &str,
    changed: &[&str],
) -> Value {
    json!({
        "ref": git_ref,
        "before": before,
        "after": after,
        "created": before.bytes().all(|b| b == b'0'),
        "deleted": false,
        "forced": false,
        "compare": "https://github.com/compare",
        "commits": [{
            "id": after, "message": message, "distinct": true,
            "added": changed, "modified": [], "removed": [],
            "author": {"name": "Dev", "email": "dev@example.com"}
        }],
        "head_commit": {"id": after, "message": message, "added": changed, "modified": [], "removed": []},
        "repository": {
            "id": 1, "name": full_name.split('/').nth(1), "full_name": full_name,
            "clone_url": clone_url, "html_url": format!("https://github.com/{full_name}"),
            "default_branch": "main", "created_at": 1_700_000_000, "pushed_at": 1_700_000_100
        },
        "pusher": {"name": "dev", "email": "dev@example.com"},
        "sender": {"login": "dev", "id": 7}
    })
}

async fn deliver_github(
    app: &TestEngine,
    event: &str,
    delivery: &str,
    body: &Value,
) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).expect("json");
    let response = reqwest::Client::new()
        .post(format!("{}/hooks/github", app.url()))
        .header("content-type", "application/json")
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header(
            "X-Hub-Signature-256",
            signature::sign_github(SECRET.as_bytes(), &bytes),
        )
        .body(bytes)
        .send()
        .await
        .expect("deliver");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until the delivery is processed and returns it (as the API shows it).
async fn processed(app: &TestEngine, id: i64) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let d: Value = app
            .http()
            .get(format!("{}/api/v1/deliveries/{id}", app.url()))
            .send()
            .await
            .expect("get delivery")
            .json()
            .await
            .expect("delivery json");
        if d["status"] != "received" {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery {id} still unprocessed: {d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn run_ids(delivery: &Value) -> Vec<RunId> {
    delivery["runs"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .filter_map(|r| r["id"].as_i64())
                .map(RunId)
                .collect()
        })
        .unwrap_or_default()
}

const PIPELINE: &str = r#"name: build
on:
  push:
    branches: [main]
  pull_request:
    branches: [main]
stages:
  - name: show
    steps:
      - cat hello.txt
      - echo "event=$GANTRY_EVENT branch=$GANTRY_BRANCH tag=$GANTRY_TAG repo=$GANTRY_REPOSITORY"
      - echo "sha=$GANTRY_COMMIT_SHA head=$(git rev-parse HEAD)"
      - test -x tool.sh && ./tool.sh
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_push_served_by_git_daemon_runs_the_pipeline_of_that_commit() {
    let app = TestEngine::start().await;
    let served = tempfile::tempdir().expect("dir");
    let bare = BareRepo::create(served.path(), "app");
    let daemon = GitDaemon::start(served.path());
    let url = daemon.url("app");
    let work = bare.work_clone();
    work.write(".gantry.yaml", PIPELINE, 0o644)
        .write("hello.txt", "hello from the commit\n", 0o644)
        .write("tool.sh", "#!/bin/sh\necho tool ran\n", 0o755);
    let first = work.commit("first");
    work.push();
    register(&app, "github", "acme/app", &url, json!({})).await;

    let push = github_push(
        "acme/app",
        &url,
        "refs/heads/main",
        &"0".repeat(40),
        &first,
        "first",
        &["hello.txt"],
    );
    let (status, answer) = deliver_github(&app, "push", "d-1", &push).await;
    assert_eq!(status, 202, "{answer}");
    let delivery = processed(&app, answer["delivery"].as_i64().expect("id")).await;
    assert_eq!(delivery["status"], "triggered", "{delivery}");
    let ids = run_ids(&delivery);
    assert_eq!(ids.len(), 1, "{delivery}");
    let (run, stages) = app.wait_for_run(ids[0], WAIT).await;
    assert_eq!(
        run.status,
        RunStatus::Succeeded,
        "{:?} {:?}",
        run.reason,
        stages
    );
    assert_eq!(run.trigger, "push");
    // What run lists show beside the short id: the subject and the author, read from the
    // commit itself (the same for every provider), and the time images are dated with.
    assert_eq!(run.context["commit_message"], "first", "{}", run.context);
    assert_eq!(
        run.context["commit_author"], "Gantry Test",
        "{}",
        run.context
    );
    assert!(
        run.context["commit_time"].as_i64().is_some(),
        "{}",
        run.context
    );
    let lines = app.log_lines(ids[0], "show").await;
    assert!(
        lines.contains(&"hello from the commit".to_owned()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"event=push branch=main tag= repo=acme/app".to_owned()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!("sha={first} head={first}")),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"tool ran".to_owned()),
        "the executable bit survives: {lines:#?}"
    );

    // A redelivery of the same delivery id is answered but starts nothing new.
    let (status, again) = deliver_github(&app, "push", "d-1", &push).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["status"], "duplicate");
    let count = runs::list(&app.engine().store.pool, None, None, 100, None)
        .await
        .expect("runs")
        .len();
    assert_eq!(count, 1);

    // A second commit: the run sees the new content (the mirror fetches what is new).
    work.write("hello.txt", "second version\n", 0o644);
    let second = work.commit("second");
    work.push();
    let push = github_push(
        "acme/app",
        &url,
        "refs/heads/main",
        &first,
        &second,
        "second",
        &["hello.txt"],
    );
    let (_, answer) = deliver_github(&app, "push", "d-2", &push).await;
    let delivery = processed(&app, answer["delivery"].as_i64().expect("id")).await;
    let ids = run_ids(&delivery);
    let (run, _) = app.wait_for_run(ids[0], WAIT).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.reason);
    let lines = app.log_lines(ids[0], "show").await;
    assert!(lines.contains(&"second version".to_owned()), "{lines:#?}");
    assert!(
        lines.contains(&format!("sha={second} head={second}")),
        "{lines:#?}"
    );

    // Started by hand, the repository's pipeline builds the head of the default branch.
    let manual = app
        .client()
        .trigger("test", "build", &Default::default())
        .await
        .expect("trigger");
    let id = RunId(manual.run_id);
    let (run, _) = app.wait_for_run(id, WAIT).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.reason);
    assert_eq!(run.context["commit_message"], "second", "{}", run.context);
    let lines = app.log_lines(id, "show").await;
    assert!(
        lines.contains(&format!("sha={second} head={second}")),
        "{lines:#?}"
    );
    // Another project's pipeline may not name this repository as its source: the checkout
    // would use the repository's clone token.
    let repos: Value = app
        .http()
        .get(format!("{}/api/v1/projects/test/repositories", app.url()))
        .send()
        .await
        .expect("repositories")
        .json()
        .await
        .expect("json");
    let repo_id = repos[0]["id"].as_i64().expect("the repository's id");
    gantry::run::apply(
        app.engine(),
        "elsewhere",
        "borrow.yaml",
        "name: borrow\nstages:\n  - name: s\n    steps: [\"true\"]\n",
    )
    .await
    .expect("a pipeline in another project");
    let borrowed = app
        .http()
        .post(format!(
            "{}/api/v1/projects/elsewhere/pipelines/borrow/runs",
            app.url()
        ))
        .json(&json!({"context": {"event": "manual", "repository_id": repo_id, "commit_sha": second}}))
        .send()
        .await
        .expect("trigger");
    assert_eq!(borrowed.status(), 422);
    let answer: Value = borrowed.json().await.expect("json");
    assert_eq!(
        answer["error"],
        format!("context.repository_id {repo_id} is not a repository of project `elsewhere`")
    );

    // The pipeline page lists each run with its commit's subject and author.
    let page = app
        .http()
        .get(format!("{}/p/test/build", app.url()))
        .send()
        .await
        .expect("pipeline page")
        .text()
        .await
        .expect("page");
    for shown in [
        format!(
            "<code>{}</code> <span class=\"msg\">second</span>",
            &second[..8]
        ),
        format!(
            "<code>{}</code> <span class=\"msg\">first</span>",
            &first[..8]
        ),
        "Gantry Test".to_owned(),
    ] {
        assert!(page.contains(&shown), "{shown} not in {page}");
    }

    // The ping GitHub sends when a hook is created.
    let ping = json!({"zen": "Keep it logically awesome.", "hook_id": 1,
                      "repository": {"full_name": "acme/app", "clone_url": url}});
    let (status, answer) = deliver_github(&app, "ping", "d-ping", &ping).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "ignored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deliveries_get_a_4xx_with_a_reason_and_start_nothing() {
    let app = TestEngine::start_with(|c| c.webhook_max_bytes = 64 * 1024).await;
    let served = tempfile::tempdir().expect("dir");
    let _bare = BareRepo::create(served.path(), "app");
    let url = format!("file://{}/app.git", served.path().display());
    register(&app, "github", "acme/app", &url, json!({})).await;
    let push = github_push(
        "acme/app",
        &url,
        "refs/heads/main",
        &"0".repeat(40),
        &"a".repeat(40),
        "x",
        &[],
    );
    let bytes = serde_json::to_vec(&push).expect("json");
    let client = reqwest::Client::new();
    let hook = format!("{}/hooks/github", app.url());

    let no_signature = client
        .post(&hook)
        .header("X-GitHub-Event", "push")
        .body(bytes.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(no_signature.status(), 401);
    let reason: Value = no_signature.json().await.expect("json");
    assert!(
        reason["error"]
            .as_str()
            .unwrap_or("")
            .contains("X-Hub-Signature-256"),
        "{reason}"
    );

    let wrong = signature::sign_github(b"another secret", &bytes);
    let bad = client
        .post(&hook)
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", wrong)
        .body(bytes.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), 401);

    let signed = signature::sign_github(SECRET.as_bytes(), &bytes);
    let no_event = client
        .post(&hook)
        .header("X-Hub-Signature-256", &signed)
        .body(bytes.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(no_event.status(), 400);
    assert!(
        no_event
            .text()
            .await
            .unwrap_or_default()
            .contains("x-github-event")
    );

    let not_json = b"this is not json".to_vec();
    let garbage = client
        .post(&hook)
        .header("X-GitHub-Event", "push")
        .header(
            "X-Hub-Signature-256",
            signature::sign_github(SECRET.as_bytes(), &not_json),
        )
        .body(not_json)
        .send()
        .await
        .expect("send");
    assert_eq!(garbage.status(), 400);

    let other = github_push(
        "someone/else",
        "https://example.invalid/x.git",
        "refs/heads/main",
        &"0".repeat(40),
        &"a".repeat(40),
        "x",
        &[],
    );
    let other = serde_json::to_vec(&other).expect("json");
    let unknown = client
        .post(&hook)
        .header("X-GitHub-Event", "push")
        .header(
            "X-Hub-Signature-256",
            signature::sign_github(SECRET.as_bytes(), &other),
        )
        .body(other)
        .send()
        .await
        .expect("send");
    assert_eq!(unknown.status(), 404);
    assert!(
        unknown
            .text()
            .await
            .unwrap_or_default()
            .contains("someone/else")
    );

    let huge = vec![b' '; 100 * 1024];
    let too_big = client
        .post(&hook)
        .header("X-GitHub-Event", "push")
        .body(huge)
        .send()
        .await
        .expect("send");
    assert_eq!(too_big.status(), 413);
    assert!(too_big.text().await.unwrap_or_default().contains("64 KiB"));

    let count = runs::list(&app.engine().store.pool, None, None, 100, None)
        .await
        .expect("runs")
        .len();
    assert_eq!(count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_skip_ci_and_deletions_start_nothing_and_the_delivery_says_why() {
    let app = TestEngine::start().await;
    let served = tempfile::tempdir().expect("dir");
    let bare = BareRepo::create(served.path(), "app");
    let daemon = GitDaemon::start(served.path());
    let url = daemon.url("app");
    let work = bare.work_clone();
    work.write(".gantry.yaml", "name: docs\non:\n  push:\n    branches: [main]\n    paths: [\"docs/**\"]\nstages:\n  - name: a\n    steps:\n      - echo docs\n", 0o644)
        .write("README", "x\n", 0o644);
    let first = work.commit("first");
    work.push();
    git(
        work.path(),
        &["push", "-q", "origin", "HEAD:refs/heads/dev"],
    );
    register(&app, "github", "acme/app", &url, json!({})).await;
    let zero = "0".repeat(40);

    let cases = [
        (
            "skip",
            github_push(
                "acme/app",
                &url,
                "refs/heads/main",
                &zero,
                &first,
                "wip [skip ci]",
                &["docs/a.md"],
            ),
            "skip CI",
        ),
        (
            "branch",
            github_push(
                "acme/app",
                &url,
                "refs/heads/dev",
                &zero,
                &first,
                "x",
                &["docs/a.md"],
            ),
            "branch `dev` does not match",
        ),
        (
            "paths",
            github_push(
                "acme/app",
                &url,
                "refs/heads/main",
                &zero,
                &first,
                "x",
                &["README"],
            ),
            "no changed file matches `on.push.paths`",
        ),
    ];
    for (id, payload, why) in cases {
        let (status, answer) = deliver_github(&app, "push", id, &payload).await;
        assert_eq!(status, 202, "{answer}");
        let d = processed(&app, answer["delivery"].as_i64().expect("id")).await;
        assert_eq!(d["status"], "ignored", "{id}: {d}");
        assert!(
            d["summary"].as_str().unwrap_or("").contains(why),
            "{id}: {d}"
        );
    }
    let mut deleted = github_push("acme/app", &url, "refs/heads/dev", &first, &zero, "x", &[]);
    deleted["deleted"] = json!(true);
    let (_, answer) = deliver_github(&app, "push", "del", &deleted).await;
    let d = processed(&app, answer["delivery"].as_i64().expect("id")).await;
    assert_eq!(d["status"], "ignored", "{d}");
    assert!(
        d["summary"].as_str().unwrap_or("").contains("deleted"),
        "{d}"
    );

    // The path filter passes a change under docs/.
    let ok = github_push(
        "acme/app",
        &url,
        "refs/heads/main",
        &zero,
        &first,
        "x",
        &["docs/guide.md"],
    );
    let (_, answer) = deliver_github(&app, "push", "docs", &ok).await;
    let d = processed(&app, answer["delivery"].as_i64().expect("id")).await;
    assert_eq!(d["status"], "triggered", "{d}");
    let count = runs::list(&app.engine().store.pool, None, None, 100, None)
        .await
        .expect("runs")
        .len();
    assert_eq!(count, 1);

    // Every delivery is listed with its outcome.
    let all: Value = app
        .http()
        .get(format!("{}/api/v1/projects/test/deliveries", app.url()))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(all.as_array().map(Vec::len), Some(5), "{all}");

    // And on the web UI's deliveries page.
    let page = app
        .http()
        .get(format!("{}/p/test/deliveries", app.url()))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("does not match"), "{html}");
    assert!(html.contains("skip CI"), "{html}");
    assert!(
        html.contains("href=\"/runs/"),
        "the triggered delivery links its run: {html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_push_with_a_broken_pipeline_file_is_a_failed_run_naming_file_line_and_column() {
    let app = TestEngine::start().await;
    let served = tempfile::tempdir().expect("dir");
    let bare = BareRepo::create(served.path(), "app");
    let http = GitHttp::start(served.path());
    let url = http.url("app");
    let work = bare.work_clone();
    work.write(
        ".gantry/ci.yaml",
        "name: ci\non:\n  push: {}\nstages:\n  - name: a\n    stepz:\n      - echo hi\n",
        0o644,
    )
    .write(
        ".gantry/ok.yaml",
        "name: ok\non:\n  push: {}\nstages:\n  - name: a\n    steps:\n      - cat README\n",
        0o644,
    )
    .write("README", "served over smart http\n", 0o644);
    let commit = work.commit("broken ci");
    work.push();
    register(&app, "gitlab", "group/app", &url, json!({})).await;

    let payload = json!({
        "object_kind": "push", "event_name": "push",
        "before": "0".repeat(40), "after": commit, "ref": "refs/heads/main",
        "checkout_sha": commit, "user_username": "dev", "total_commits_count": 1,
        "project": {"id": 3, "path_with_namespace": "group/app", "git_http_url": url,
                    "git_ssh_url": "git@example.com:group/app.git", "web_url": "https://gitlab.example.com/group/app"},
        "commits": [{"id": commit, "message": "broken ci", "added": [".gantry/ci.yaml"], "modified": [], "removed": []}],
        "repository": {"name": "app", "git_http_url": url}
    });
    let response = reqwest::Client::new()
        .post(format!("{}/hooks/gitlab", app.url()))
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Token", SECRET)
        .header("X-Gitlab-Event-UUID", "uuid-1")
        .json(&payload)
        .send()
        .await
        .expect("deliver");
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.expect("json");
    let d = processed(&app, answer["delivery"].as_i64().expect("id")).await;
    assert_eq!(d["status"], "triggered", "{d}");
    let ids = run_ids(&d);
    assert_eq!(ids.len(), 2, "{d}");
    let mut failed = 0;
    for id in ids {
        let (run, stages) = app.wait_for_run(id, WAIT).await;
        match run.status {
            RunStatus::Failed => {
                failed += 1;
                let reason = run.reason.unwrap_or_default();
                assert!(reason.contains(".gantry/ci.yaml:6:5:"), "{reason}");
                assert!(stages.is_empty());
            }
            RunStatus::Succeeded => {
                assert_eq!(stage_of(&stages, "a").status, StageStatus::Succeeded);
                let lines = app.log_lines(id, "a").await;
                assert!(
                    lines.contains(&"served over smart http".to_owned()),
                    "{lines:#?}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(failed, 1);
    // A wrong token is refused.
    let refused = reqwest::Client::new()
        .post(format!("{}/hooks/gitlab", app.url()))
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Token", "wrong")
        .json(&payload)
        .send()
        .await
        .expect("deliver");
    assert_eq!(refused.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitea_pull_request_from_a_fork_runs_the_head_commit_without_secrets() {
    let app = TestEngine::start().await;
    let served = tempfile::tempdir().expect("dir");
    let bare = BareRepo::create(served.path(), "app");
    let http = GitHttp::start(served.path());
    let url = http.url("app");
    let work = bare.work_clone();
    let pipeline = "name: pr\non:\n  pull_request:\n    branches: [main]\nstages:\n  - name: check\n    secrets:\n      TOKEN: deploy-token\n    steps:\n      - cat change.txt\n      - echo \"pr=$GANTRY_PR_NUMBER title=$GANTRY_PR_TITLE event=$GANTRY_EVENT token=[${TOKEN:-none}]\"\n";
    work.write(".gantry.yaml", pipeline, 0o644)
        .write("change.txt", "base\n", 0o644);
    let base = work.commit("base");
    work.push();
    git(work.path(), &["checkout", "-q", "-b", "feature"]);
    work.write("change.txt", "the fork's change\n", 0o644);
    let head = work.commit("change");
    // Gitea publishes a pull request's head in the target repository as refs/pull/N/head.
    git(
        work.path(),
        &["push", "-q", "origin", "HEAD:refs/pull/5/head"],
    );
    register(&app, "gitea", "acme/app", &url, json!({})).await;
    app.client()
        .set_secret("test", "deploy-token", "very-secret-value".to_owned())
        .await
        .expect("secret");

    let payload = json!({
        "action": "opened", "number": 5,
        "pull_request": {
            "id": 50, "number": 5, "title": "Fix things", "state": "open",
            "head": {"ref": "feature", "sha": head, "repo": {"full_name": "forker/app", "clone_url": "http://example.invalid/forker/app.git"}},
            "base": {"ref": "main", "sha": base, "repo": {"full_name": "acme/app", "clone_url": url}}
        },
        "repository": {"full_name": "acme/app", "clone_url": url, "html_url": "https://gitea.example.com/acme/app"},
        "sender": {"login": "forker"}
    });
    let bytes = serde_json::to_vec(&payload).expect("json");
    let response = reqwest::Client::new()
        .post(format!("{}/hooks/gitea", app.url()))
        .header("X-Gitea-Event", "pull_request")
        .header("X-Gitea-Delivery", "g-1")
        .header(
            "X-Gitea-Signature",
            signature::sign_gitea(SECRET.as_bytes(), &bytes),
        )
        .body(bytes)
        .send()
        .await
        .expect("deliver");
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.expect("json");
    let d = processed(&app, answer["delivery"].as_i64().expect("id")).await;
    assert_eq!(d["status"], "triggered", "{d}");
    let ids = run_ids(&d);
    let (run, _) = app.wait_for_run(ids[0], WAIT).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.reason);
    let lines = app.log_lines(ids[0], "check").await;
    assert!(
        lines.contains(&"the fork's change".to_owned()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"pr=5 title=Fix things event=pull_request token=[none]".to_owned()),
        "a fork's pull request gets no secrets: {lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_statuses_are_reported_pending_then_final_to_the_providers_api() {
    use std::sync::Arc;
    let recorded: Recorded = Arc::default();
    let seen = Arc::clone(&recorded);
    let api = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let seen = Arc::clone(&seen);
        async move {
            let path = req.uri().path().to_owned();
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            seen.lock().expect("lock").push((path, auth, json));
            (axum::http::StatusCode::CREATED, "{}")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, api).await });

    let app = TestEngine::start().await;
    let served = tempfile::tempdir().expect("dir");
    let bare = BareRepo::create(served.path(), "app");
    let daemon = GitDaemon::start(served.path());
    let url = daemon.url("app");
    let work = bare.work_clone();
    // The stage waits until the test has seen the pending status: a run that ended before its
    // pending status went out is reported as ended, which this test is not about.
    let gates = gantry_tests::open_temp_dir();
    let gate = gates.path().join("pending-seen");
    work.write(
        ".gantry.yaml",
        &format!(
            "name: build\non:\n  push: {{}}\nstages:\n  - name: a\n    steps:\n      - while [ ! -e {} ]; do sleep 0.05; done\n",
            gate.display()
        ),
        0o644,
    );
    let commit = work.commit("c");
    work.push();
    app.client()
        .set_secret("test", "gh-token", "ghp_token_value".to_owned())
        .await
        .expect("secret");
    register(
        &app,
        "github",
        "acme/app",
        &url,
        json!({"token_secret": "gh-token", "api_url": api_url}),
    )
    .await;
    let push = github_push(
        "acme/app",
        &url,
        "refs/heads/main",
        &"0".repeat(40),
        &commit,
        "c",
        &[],
    );
    let (_, answer) = deliver_github(&app, "push", "s-1", &push).await;
    let d = processed(&app, answer["delivery"].as_i64().expect("id")).await;
    let ids = run_ids(&d);
    until_state(&recorded, ids[0].0, "pending").await;
    std::fs::write(&gate, "").expect("gate");
    let (run, _) = app.wait_for_run(ids[0], WAIT).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    let calls = until_final_success(&recorded, run.id.0).await;
    let states = states_of(&calls, run.id.0);
    assert_eq!(states.first(), Some(&"pending"), "{calls:?}");
    for (path, auth, body) in &calls {
        assert_eq!(path, &format!("/repos/acme/app/statuses/{commit}"));
        assert_eq!(auth, "Bearer ghp_token_value");
        assert_eq!(body["context"], "gantry/build");
        assert!(
            body["target_url"]
                .as_str()
                .unwrap_or("")
                .ends_with(&format!("/runs/{}", run.id)),
            "{body}"
        );
    }
    // A run started by hand builds the branch head and reports its status too.
    std::fs::remove_file(&gate).expect("close the gate");
    let manual = app
        .client()
        .trigger("test", "build", &Default::default())
        .await
        .expect("trigger")
        .run_id;
    until_state(&recorded, manual, "pending").await;
    std::fs::write(&gate, "").expect("gate");
    let (run, _) = app.wait_for_run(RunId(manual), WAIT).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.reason);
    let calls = until_final_success(&recorded, manual).await;
    assert!(
        calls
            .iter()
            .all(|c| c.0 == format!("/repos/acme/app/statuses/{commit}"))
    );
}

/// What the recording provider API received: (path, Authorization, JSON body).
type Recorded = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Value)>>>;

/// The states reported for one run (its status links to `/runs/ID`), in order.
fn states_of(calls: &[(String, String, Value)], run: i64) -> Vec<&str> {
    let link = format!("/runs/{run}");
    calls
        .iter()
        .filter(|c| c.2["target_url"].as_str().unwrap_or("").ends_with(&link))
        .filter_map(|c| c.2["state"].as_str())
        .collect()
}

/// Waits until `state` has been reported for `run`.
async fn until_state(recorded: &Recorded, run: i64, state: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let calls = recorded.lock().expect("lock").clone();
        if states_of(&calls, run).contains(&state) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {state} status for run {run}: {calls:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the last state reported for `run` is success; returns every call so far.
async fn until_final_success(recorded: &Recorded, run: i64) -> Vec<(String, String, Value)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let calls = recorded.lock().expect("lock").clone();
        if states_of(&calls, run).last() == Some(&"success") {
            return calls;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "statuses so far: {calls:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_deliveries_is_processed_in_batches_each_exactly_once() {
    let app = TestEngine::start().await;
    // Nothing here reaches git: `[skip ci]` pushes and events that start nothing.
    register(
        &app,
        "github",
        "acme/burst",
        "/nonexistent/burst.git",
        json!({}),
    )
    .await;
    let repo: i64 =
        sqlx::query_scalar("SELECT id FROM repositories WHERE full_name = 'acme/burst'")
            .fetch_one(app.pool())
            .await
            .expect("the repository");
    let zero = "0".repeat(40);
    let sha = "a".repeat(40);
    let push = serde_json::to_vec(&github_push(
        "acme/burst",
        "/nonexistent/burst.git",
        "refs/heads/main",
        &zero,
        &sha,
        "wip [skip ci]",
        &[],
    ))
    .expect("json");
    let issue = serde_json::to_vec(&json!({
        "action": "opened",
        "repository": {"full_name": "acme/burst"},
        "sender": {"login": "dev"}
    }))
    .expect("json");
    // 40 deliveries become visible at once (one transaction), as under a burst of traffic.
    let mut tx = app.pool().begin().await.expect("begin");
    let mut ids = Vec::new();
    for n in 0..40 {
        let (event, payload) = if n % 2 == 0 {
            ("push", push.as_slice())
        } else {
            ("issues", issue.as_slice())
        };
        let key = format!("burst-{n}");
        let id = gantry::store::deliveries::insert(
            &mut *tx,
            gantry::store::deliveries::NewDelivery {
                provider: "github",
                delivery_key: &key,
                repository: Some(gantry::store::repos::RepoId(repo)),
                pipeline: None,
                event,
                payload,
                status: gantry::store::deliveries::DeliveryStatus::Received,
                summary: None,
            },
        )
        .await
        .expect("insert")
        .expect("a new delivery");
        ids.push(id);
    }
    tx.commit().await.expect("commit");

    for (n, id) in ids.iter().enumerate() {
        let delivery = processed(&app, *id).await;
        assert_eq!(delivery["status"], "ignored", "{delivery}");
        let expected = if n % 2 == 0 {
            "the head commit asks to skip CI ([skip ci])"
        } else {
            "GitHub event `issues` starts nothing"
        };
        assert_eq!(delivery["summary"], expected, "{delivery}");
    }
    // Each processed once, and together: a batch shares its transaction, whose start time is
    // `processed_at`; 40 deliveries at most 32 to a batch need two (one per transaction
    // before batching, 40 distinct times).
    let (attempts, batches): (i64, i64) = sqlx::query_as(
        "SELECT max(attempts)::int8, count(DISTINCT processed_at) FROM deliveries WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(app.pool())
    .await
    .expect("counts");
    assert_eq!(attempts, 1, "every delivery was processed once");
    assert!(batches <= 2, "{batches} transactions for 40 deliveries");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_are_each_stored_once_and_a_repeated_id_only_once() {
    let app = TestEngine::start().await;
    register(
        &app,
        "github",
        "acme/many",
        "/nonexistent/many.git",
        json!({}),
    )
    .await;
    let zero = "0".repeat(40);
    let sha = "b".repeat(40);
    let push = github_push(
        "acme/many",
        "/nonexistent/many.git",
        "refs/heads/main",
        &zero,
        &sha,
        "wip [skip ci]",
        &[],
    );
    // 30 different deliveries and 30 copies of one, all at once: the receivers' inserts share
    // statements (webhook::intake), which must keep every answer right.
    let distinct = (0..30).map(|n| {
        let push = push.clone();
        let app = &app;
        async move { deliver_github(app, "push", &format!("many-{n}"), &push).await }
    });
    let repeated = (0..30).map(|_| {
        let push = push.clone();
        let app = &app;
        async move { deliver_github(app, "push", "many-same", &push).await }
    });
    let (distinct, repeated) = tokio::join!(
        futures_util::future::join_all(distinct),
        futures_util::future::join_all(repeated)
    );
    let mut ids: Vec<i64> = distinct
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 202, "{body}");
            body["delivery"].as_i64().expect("an id")
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 30, "30 rows for 30 deliveries");
    let accepted: Vec<&Value> = repeated
        .iter()
        .filter(|(status, _)| *status == 202)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(accepted.len(), 1, "{repeated:?}");
    let first = accepted[0]["delivery"].as_i64().expect("id");
    for (status, body) in &repeated {
        if *status != 202 {
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body["status"], "duplicate");
            assert_eq!(body["delivery"], first, "names the stored delivery");
        }
    }
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE delivery_key LIKE 'many-%'")
            .fetch_one(app.pool())
            .await
            .expect("count");
    assert_eq!(rows, 31);
    for id in ids.iter().chain([&first]) {
        let delivery = processed(&app, *id).await;
        assert_eq!(delivery["status"], "ignored", "{delivery}");
    }
    app.stop().await;
}

const RELEASE: &str = r#"name: release
on:
  push:
    tags: ["v*"]
stages:
  - name: show
    steps:
      - cat hello.txt
      - echo "tag=$GANTRY_TAG sha=$GANTRY_COMMIT_SHA head=$(git rev-parse HEAD)"
"#;

/// Delivers `payload` as `provider` would (its event header, delivery id and signature or
/// token) and returns the processed delivery.
async fn deliver_as(app: &TestEngine, provider: &str, id: &str, payload: &Value) -> Value {
    let bytes = serde_json::to_vec(payload).expect("json");
    let request = reqwest::Client::new()
        .post(format!("{}/hooks/{provider}", app.url()))
        .header("content-type", "application/json");
    let request = match provider {
        "github" => request
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", id)
            .header(
                "X-Hub-Signature-256",
                signature::sign_github(SECRET.as_bytes(), &bytes),
            ),
        "gitlab" => request
            .header("X-Gitlab-Event", "Tag Push Hook")
            .header("X-Gitlab-Event-UUID", id)
            .header("X-Gitlab-Token", SECRET),
        _ => request
            .header("X-Gitea-Event", "push")
            .header("X-Gitea-Delivery", id)
            .header(
                "X-Gitea-Signature",
                signature::sign_gitea(SECRET.as_bytes(), &bytes),
            ),
    };
    let response = request.body(bytes).send().await.expect("deliver");
    assert_eq!(response.status(), 202, "{provider} delivery {id}");
    let answer: Value = response.json().await.expect("json");
    processed(app, answer["delivery"].as_i64().expect("delivery id")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_and_lightweight_tags_start_tag_pipelines_for_every_provider() {
    let app = TestEngine::start().await;
    let served = tempfile::tempdir().expect("dir");
    let bare = BareRepo::create(served.path(), "app");
    let http = GitHttp::start(served.path());
    let url = http.url("app");
    let work = bare.work_clone();
    work.write(".gantry.yaml", RELEASE, 0o644)
        .write("hello.txt", "released content\n", 0o644);
    let commit = work.commit("release me");
    work.push();
    // `git tag -a`, the way releases are cut: the ref points at a tag object, not a commit.
    git(work.path(), &["tag", "-a", "v1.0.0", "-m", "release 1.0.0"]);
    git(work.path(), &["tag", "v1.0.1"]);
    git(work.path(), &["push", "-q", "origin", "--tags"]);
    let object = git(work.path(), &["rev-parse", "v1.0.0"]).trim().to_owned();
    assert_ne!(object, commit, "an annotated tag is an object of its own");
    for provider in ["github", "gitlab", "gitea"] {
        register(&app, provider, "acme/app", &url, json!({})).await;
    }
    let zero = "0".repeat(40);
    let repository = json!({"full_name": "acme/app", "clone_url": url,
                            "html_url": "https://git.example.com/acme/app"});
    // GitHub: `after` is the tag object, `head_commit.id` the commit.
    let github = json!({
        "ref": "refs/tags/v1.0.0", "before": zero, "after": object, "created": true,
        "deleted": false, "base_ref": "refs/heads/main", "commits": [],
        "head_commit": {"id": commit, "message": "release me"},
        "repository": repository, "sender": {"login": "dev"}
    });
    // GitLab's Tag Push Hook: `after` is the tag object, `checkout_sha` the commit.
    let gitlab = json!({
        "object_kind": "tag_push", "event_name": "tag_push", "ref": "refs/tags/v1.0.0",
        "before": zero, "after": object, "checkout_sha": commit, "user_username": "dev",
        "total_commits_count": 0, "commits": [],
        "project": {"path_with_namespace": "acme/app", "git_http_url": url}
    });
    // Gitea since 1.16 fills in `head_commit`; before it sent none, and Gantry peels the
    // tag object itself.
    let gitea_new = json!({
        "ref": "refs/tags/v1.0.0", "before": zero, "after": object, "commits": [],
        "head_commit": {"id": commit, "message": "release me"},
        "repository": repository, "pusher": {"login": "dev"}
    });
    let gitea_old = json!({
        "ref": "refs/tags/v1.0.0", "before": zero, "after": object, "commits": [],
        "head_commit": null, "repository": repository, "pusher": {"login": "dev"}
    });
    // A lightweight tag: `after` is the commit itself.
    let lightweight = json!({
        "ref": "refs/tags/v1.0.1", "before": zero, "after": commit, "created": true,
        "deleted": false, "commits": [], "head_commit": {"id": commit, "message": "release me"},
        "repository": repository, "sender": {"login": "dev"}
    });
    for (provider, id, payload, tag) in [
        ("github", "t-1", &github, "v1.0.0"),
        ("gitlab", "t-2", &gitlab, "v1.0.0"),
        ("gitea", "t-3", &gitea_new, "v1.0.0"),
        ("gitea", "t-4", &gitea_old, "v1.0.0"),
        ("github", "t-5", &lightweight, "v1.0.1"),
    ] {
        let d = deliver_as(&app, provider, id, payload).await;
        assert_eq!(d["status"], "triggered", "{provider} {id}: {d}");
        let summary = d["summary"].as_str().unwrap_or_default();
        if tag == "v1.0.0" {
            assert!(
                summary.contains(&format!(
                    "annotated tag `v1.0.0` (tag object {}) points at commit {}",
                    &object[..12],
                    &commit[..12]
                )),
                "{provider} {id}: {summary}"
            );
        }
        let ids = run_ids(&d);
        assert_eq!(ids.len(), 1, "{provider} {id}: {d}");
        let (run, stages) = app.wait_for_run(ids[0], WAIT).await;
        assert_eq!(
            run.status,
            RunStatus::Succeeded,
            "{provider} {id}: {:?} {stages:?}",
            run.reason
        );
        assert_eq!(run.trigger, "tag");
        let context = &run.context;
        assert_eq!(context["commit_sha"], commit.as_str(), "{context}");
        if tag == "v1.0.0" {
            assert_eq!(context["tag_object"], object.as_str(), "both are recorded");
        } else {
            assert!(context.get("tag_object").is_none(), "{context}");
        }
        let lines = app.log_lines(ids[0], "show").await;
        assert!(lines.contains(&"released content".to_owned()), "{lines:#?}");
        assert!(
            lines.contains(&format!("tag={tag} sha={commit} head={commit}")),
            "{provider} {id}: {lines:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_only_file_is_armed_on_registration_rearmed_by_pushes_and_disarmed_when_removed()
{
    use chrono::{TimeDelta, Timelike, Utc};
    use gantry::webhook::cron;

    let app = TestEngine::start().await;
    let served = tempfile::tempdir().expect("dir");
    let bare = BareRepo::create(served.path(), "app");
    let http = GitHttp::start(served.path());
    let url = http.url("app");
    let work = bare.work_clone();
    let nightly = |cron: &str| {
        format!(
            "name: nightly\non:\n  schedule:\n    - cron: \"{cron}\"\nstages:\n  - name: build\n    steps:\n      - cat hello.txt\n      - echo \"event=$GANTRY_EVENT sha=$GANTRY_COMMIT_SHA\"\n"
        )
    };
    work.write(".gantry/nightly.yaml", &nightly("*/5 * * * *"), 0o644)
        .write("hello.txt", "nightly content\n", 0o644);
    let first = work.commit("nightly build");
    work.push();

    // Registration reads the default branch and arms the schedule: no push is needed.
    let answer: Value = app
        .http()
        .post(format!("{}/api/v1/projects/test/repositories", app.url()))
        .json(
            &json!({"provider": "github", "full_name": "acme/app", "clone_url": url,
                      "webhook_secret": SECRET}),
        )
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    assert_eq!(
        answer["schedules"],
        json!([".gantry/nightly.yaml (`nightly`): schedule `*/5 * * * *` armed"]),
        "{answer}"
    );
    let pipeline = gantry::store::pipelines::find(app.pool(), "test", "nightly")
        .await
        .expect("the schedule-only pipeline is stored");

    // Its next slot fires a run that builds the head of the default branch.
    let slot = (Utc::now() + TimeDelta::minutes(10))
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("whole minute");
    let slot = slot - TimeDelta::minutes(i64::from(slot.minute() % 5));
    assert_eq!(
        cron::tick(app.engine(), slot + TimeDelta::seconds(3))
            .await
            .expect("tick"),
        1
    );
    let fired = cron::fired(app.engine(), pipeline.id).await.expect("slots");
    let run = fired
        .iter()
        .find(|f| f.1 == slot)
        .and_then(|f| f.2)
        .expect("the slot's run");
    let (done, stages) = app.wait_for_run(run, WAIT).await;
    assert_eq!(
        done.status,
        RunStatus::Succeeded,
        "{:?} {stages:?}",
        done.reason
    );
    assert_eq!(done.trigger, "schedule");
    let lines = app.log_lines(run, "build").await;
    assert!(lines.contains(&"nightly content".to_owned()), "{lines:#?}");
    assert!(
        lines.contains(&format!("event=schedule sha={first}")),
        "{lines:#?}"
    );

    // A push to the default branch that changes the schedule re-arms it.
    work.write(".gantry/nightly.yaml", &nightly("0 3 * * *"), 0o644);
    let second = work.commit("nightly at three");
    work.push();
    let push = github_push(
        "acme/app",
        &url,
        "refs/heads/main",
        &first,
        &second,
        "nightly at three",
        &[".gantry/nightly.yaml"],
    );
    let (status, answer) = deliver_github(&app, "push", "arm-1", &push).await;
    assert_eq!(status, 202, "{answer}");
    let d = processed(&app, answer["delivery"].as_i64().expect("id")).await;
    let summary = d["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains(".gantry/nightly.yaml (`nightly`): schedule `0 3 * * *` armed"),
        "{d}"
    );
    // A push to another branch arms nothing, whatever its files say.
    git(work.path(), &["checkout", "-q", "-b", "feature"]);
    work.write(".gantry/nightly.yaml", &nightly("* * * * *"), 0o644);
    let feature = work.commit("every minute, on a branch");
    git(work.path(), &["push", "-q", "origin", "feature"]);
    let push = github_push(
        "acme/app",
        &url,
        "refs/heads/feature",
        &second,
        &feature,
        "branch",
        &[".gantry/nightly.yaml"],
    );
    let (_, answer) = deliver_github(&app, "push", "arm-2", &push).await;
    let d = processed(&app, answer["delivery"].as_i64().expect("id")).await;
    assert!(
        !d["summary"].as_str().unwrap_or_default().contains("armed"),
        "{d}"
    );
    let three = (slot + TimeDelta::days(1))
        .with_hour(3)
        .and_then(|t| t.with_minute(0))
        .expect("03:00");
    // Only the armed `0 3 * * *` fires: not the branch's every-minute schedule.
    assert_eq!(
        cron::tick(app.engine(), three + TimeDelta::minutes(1))
            .await
            .expect("tick"),
        1
    );

    // Removing the file from the default branch disarms it.
    git(work.path(), &["checkout", "-q", "main"]);
    work.remove(".gantry/nightly.yaml");
    let third = work.commit("no more nightly");
    work.push();
    let push = github_push(
        "acme/app",
        &url,
        "refs/heads/main",
        &second,
        &third,
        "no more nightly",
        &[".gantry/nightly.yaml"],
    );
    let (_, answer) = deliver_github(&app, "push", "arm-3", &push).await;
    let d = processed(&app, answer["delivery"].as_i64().expect("id")).await;
    let summary = d["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("`nightly`: its file is gone from `main`; schedule disarmed"),
        "{d}"
    );
    assert_eq!(
        cron::tick(
            app.engine(),
            three + TimeDelta::days(1) + TimeDelta::minutes(1)
        )
        .await
        .expect("tick"),
        0,
        "a disarmed schedule fires nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_intake_answers_503_with_retry_after_and_keeps_every_delivery_it_accepted() {
    let app = TestEngine::start_with(|c| c.webhook_queue = 2).await;
    register(
        &app,
        "github",
        "acme/app",
        "http://127.0.0.1:9/app.git",
        json!({}),
    )
    .await;
    // Hold the database back: while this transaction locks the deliveries table, the writers'
    // INSERTs wait, and so does every receiver whose delivery they hold.
    let mut lock = app.pool().begin().await.expect("begin");
    sqlx::query("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let url = format!("{}/hooks/github", app.url());
    let sends: Vec<_> = (0..12)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let body = serde_json::to_vec(&json!({"zen": "z", "hook_id": i,
                    "repository": {"full_name": "acme/app", "clone_url": "http://127.0.0.1:9/app.git"}}))
                    .expect("json");
                let answer = reqwest::Client::new()
                    .post(url)
                    .header("content-type", "application/json")
                    .header("X-GitHub-Event", "watch")
                    .header("X-GitHub-Delivery", format!("q-{i}"))
                    .header("X-Hub-Signature-256", signature::sign_github(SECRET.as_bytes(), &body))
                    .body(body)
                    .send()
                    .await
                    .expect("deliver");
                let retry = answer
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let status = answer.status().as_u16();
                (status, retry, answer.text().await.unwrap_or_default())
            })
        })
        .collect();
    // Two writers hold at most two deliveries each and two more may wait: of twelve at once,
    // at least six are refused, and they are refused while the database is still held.
    let mut refused = 0;
    let mut pending = Vec::new();
    for send in sends {
        if send.is_finished() {
            let (status, retry, body) = send.await.expect("task");
            assert_eq!(status, 503, "{body}");
            assert_eq!(retry.as_deref(), Some("5"), "Retry-After");
            assert!(body.contains("waiting to be stored"), "{body}");
            refused += 1;
        } else {
            pending.push(send);
        }
    }
    // The ones not answered yet are either queued (202 once stored) or refused in a moment.
    let deadline = tokio::time::Instant::now() + WAIT;
    while refused < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {refused} refused"
        );
        let mut still = Vec::new();
        for send in pending {
            if send.is_finished() {
                let (status, retry, body) = send.await.expect("task");
                assert_eq!(status, 503, "{body}");
                assert_eq!(retry.as_deref(), Some("5"));
                refused += 1;
            } else {
                still.push(send);
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lock.rollback().await.expect("release");
    let mut accepted = 0;
    for send in pending {
        let (status, _, body) = send.await.expect("task");
        match status {
            202 => accepted += 1,
            503 => refused += 1,
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(accepted + refused, 12);
    assert!(accepted >= 1, "some deliveries were accepted");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(app.pool())
        .await
        .expect("count");
    assert_eq!(
        stored, accepted,
        "every accepted delivery is stored, no refused one is"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_encoded_github_delivery_is_taken_like_json_and_its_signature_checked_as_sent() {
    let app = TestEngine::start().await;
    let served = tempfile::tempdir().expect("dir");
    let bare = BareRepo::create(served.path(), "app");
    let http = GitHttp::start(served.path());
    let url = http.url("app");
    let work = bare.work_clone();
    work.write(".gantry.yaml", PIPELINE, 0o644)
        .write("hello.txt", "sent as a form\n", 0o644)
        .write("tool.sh", "#!/bin/sh\necho tool ran\n", 0o755);
    let commit = work.commit("form");
    work.push();
    register(&app, "github", "acme/app", &url, json!({})).await;
    let push = github_push(
        "acme/app",
        &url,
        "refs/heads/main",
        &"0".repeat(40),
        &commit,
        "form",
        &["hello.txt"],
    );
    // What GitHub sends with "Content type: application/x-www-form-urlencoded", its default.
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &push.to_string())
        .finish();
    let send = |body: String, signature: String| {
        reqwest::Client::new()
            .post(format!("{}/hooks/github", app.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "form-1")
            .header("X-Hub-Signature-256", signature)
            .body(body)
            .send()
    };
    // Signed over the JSON instead of the form as sent: refused.
    let wrong = signature::sign_github(SECRET.as_bytes(), push.to_string().as_bytes());
    let refused = send(form.clone(), wrong).await.expect("send");
    assert_eq!(refused.status(), 401);
    let signed = signature::sign_github(SECRET.as_bytes(), form.as_bytes());
    let answer = send(form.clone(), signed).await.expect("send");
    assert_eq!(answer.status(), 202);
    let answer: Value = answer.json().await.expect("json");
    let d = processed(&app, answer["delivery"].as_i64().expect("id")).await;
    assert_eq!(d["status"], "triggered", "{d}");
    let ids = run_ids(&d);
    let (run, stages) = app.wait_for_run(ids[0], WAIT).await;
    assert_eq!(
        run.status,
        RunStatus::Succeeded,
        "{:?} {stages:?}",
        run.reason
    );
    let lines = app.log_lines(ids[0], "show").await;
    assert!(lines.contains(&"sent as a form".to_owned()), "{lines:#?}");
    // A form without the payload field says what is missing.
    let empty = "zen=hello".to_owned();
    let signed = signature::sign_github(SECRET.as_bytes(), empty.as_bytes());
    let answer = send(empty, signed).await.expect("send");
    assert_eq!(answer.status(), 400);
    let text = answer.text().await.unwrap_or_default();
    assert!(text.contains("`payload` field"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_status_api_holds_back_no_other_repository_and_no_shutdown() {
    use std::sync::Arc;
    // One provider API for both repositories: `/repos/slow/...` never answers until released;
    // `/repos/fast/...` answers at once. Both record what they received.
    let recorded: Recorded = Arc::default();
    let release = Arc::new(tokio::sync::Notify::new());
    let (seen, hold) = (Arc::clone(&recorded), Arc::clone(&release));
    let api = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (seen, hold) = (Arc::clone(&seen), Arc::clone(&hold));
        async move {
            let path = req.uri().path().to_owned();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            seen.lock()
                .expect("lock")
                .push((path.clone(), String::new(), json));
            if path.starts_with("/repos/slow/") {
                hold.notified().await;
            }
            (axum::http::StatusCode::CREATED, "{}")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, api).await });

    let app = TestEngine::start().await;
    app.client()
        .set_secret("test", "gh-token", "ghp_token_value".to_owned())
        .await
        .expect("secret");
    let served = tempfile::tempdir().expect("dir");
    let http = GitHttp::start(served.path());
    let mut commits = Vec::new();
    for name in ["slow", "fast"] {
        let bare = BareRepo::create(served.path(), name);
        let work = bare.work_clone();
        work.write(
            ".gantry.yaml",
            &format!("name: {name}\non:\n  push: {{}}\nstages:\n  - name: a\n    steps:\n      - \"true\"\n"),
            0o644,
        );
        let commit = work.commit(name);
        work.push();
        let url = http.url(name);
        register(
            &app,
            "github",
            &format!("{name}/app"),
            &url,
            json!({"token_secret": "gh-token", "api_url": api_url}),
        )
        .await;
        commits.push((name, url, commit));
    }
    // The slow repository's push first: its pending status hangs in the provider's API.
    let mut runs = Vec::new();
    for (name, url, commit) in &commits {
        let push = github_push(
            &format!("{name}/app"),
            url,
            "refs/heads/main",
            &"0".repeat(40),
            commit,
            "c",
            &[],
        );
        let (_, answer) = deliver_github(&app, "push", &format!("h-{name}"), &push).await;
        let d = processed(&app, answer["delivery"].as_i64().expect("id")).await;
        runs.push(run_ids(&d)[0]);
        if *name == "slow" {
            let deadline = tokio::time::Instant::now() + WAIT;
            while !recorded
                .lock()
                .expect("lock")
                .iter()
                .any(|c| c.0.starts_with("/repos/slow/"))
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no call reached the slow API"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let (slow, fast) = (runs[0], runs[1]);
    let (run, _) = app.wait_for_run(fast, WAIT).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    // The fast repository's statuses, pending then success, arrive while the slow one's first
    // call still hangs.
    let calls = until_final_success(&recorded, fast.0).await;
    let states = states_of(&calls, fast.0);
    assert_eq!(states.last(), Some(&"success"), "{calls:?}");
    assert!(
        !states
            .iter()
            .skip_while(|s| **s != "success")
            .any(|s| *s == "pending"),
        "no pending after the final state: {states:?}"
    );
    let slow_calls: Vec<_> = calls
        .iter()
        .filter(|c| c.0.starts_with("/repos/slow/"))
        .collect();
    assert_eq!(
        slow_calls.len(),
        1,
        "the slow API got one call, still hanging: {slow_calls:?}"
    );
    // Its run ended meanwhile: what the slow repository gets next is its final state, never a
    // pending posted after it.
    let (run, _) = app.wait_for_run(slow, WAIT).await;
    assert_eq!(run.status, RunStatus::Succeeded);

    // Stopping the engine does not wait on the hanging call.
    let started = std::time::Instant::now();
    app.stop().await;
    let took = started.elapsed();
    assert!(
        took < gantry::server::STOP_WITHIN + Duration::from_secs(5),
        "stopping took {took:?} with a status call hanging"
    );
    release.notify_waiters();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_projects_flood_holds_back_no_other_project() {
    use gantry::store::deliveries::{self, DeliveryStatus, NewDelivery};
    use std::sync::Arc;
    const FLOOD: usize = 1000;
    // A provider API recording every status it is sent.
    let recorded: Recorded = Arc::default();
    let seen = Arc::clone(&recorded);
    let api = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let seen = Arc::clone(&seen);
        async move {
            let path = req.uri().path().to_owned();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            seen.lock().expect("lock").push((path, String::new(), json));
            (axum::http::StatusCode::CREATED, "{}")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, api).await });

    // At most two runs of a project run at once.
    let app = TestEngine::start_with(|c| c.project_runs = 2).await;
    let gates = gantry_tests::open_temp_dir();
    let gate = gates.path().join("never");
    let served = tempfile::tempdir().expect("dir");
    let http = GitHttp::start(served.path());
    let mut repos = Vec::new();
    for (project, name, step) in [
        (
            "a",
            "flood",
            format!("while [ ! -e {} ]; do sleep 0.2; done", gate.display()),
        ),
        ("b", "quiet", "echo quiet ran".to_owned()),
    ] {
        let bare = BareRepo::create(served.path(), name);
        let work = bare.work_clone();
        work.write(
            ".gantry.yaml",
            &format!("name: {name}\non:\n  push: {{}}\nstages:\n  - name: a\n    steps:\n      - {step}\n"),
            0o644,
        );
        let commit = work.commit(name);
        work.push();
        let url = http.url(name);
        for (path, body) in [
            (
                format!("projects/{project}/repositories"),
                Some(
                    json!({"provider": "github", "full_name": format!("{name}/app"), "clone_url": url,
                            "webhook_secret": SECRET, "token_secret": "gh-token", "api_url": api_url}),
                ),
            ),
            (format!("projects/{project}/secrets/gh-token"), None),
        ] {
            let request = app.http().request(
                if body.is_some() {
                    reqwest::Method::POST
                } else {
                    reqwest::Method::PUT
                },
                format!("{}/api/v1/{path}", app.url()),
            );
            let request = match body {
                Some(body) => request.json(&body),
                None => request.body("ghp_token_value"),
            };
            let answer = request.send().await.expect("setup");
            assert!(answer.status().is_success(), "{path}: {}", answer.status());
        }
        let row = gantry::store::repos::list(
            app.pool(),
            gantry::store::pipelines::project_id(app.pool(), project)
                .await
                .expect("project"),
        )
        .await
        .expect("repos")
        .into_iter()
        .next()
        .expect("registered");
        let push = github_push(
            &format!("{name}/app"),
            &url,
            "refs/heads/main",
            &"0".repeat(40),
            &commit,
            name,
            &[],
        );
        repos.push((row.id, serde_json::to_vec(&push).expect("json")));
    }
    // A thousand pushes to project a's repository queued, then one to project b's: stored in
    // one statement, as the intake stores a burst, b's last.
    let keys: Vec<String> = (0..=FLOOD).map(|i| format!("flood-{i}")).collect();
    let batch: Vec<NewDelivery<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let (repository, payload) = if i < FLOOD { &repos[0] } else { &repos[1] };
            NewDelivery {
                provider: "github",
                delivery_key: key,
                repository: Some(*repository),
                pipeline: None,
                event: "push",
                payload,
                status: DeliveryStatus::Received,
                summary: None,
            }
        })
        .collect();
    let ids = deliveries::insert_many(app.pool(), &batch)
        .await
        .expect("store");
    let quiet = ids.last().copied().flatten().expect("b's delivery");
    let d = processed(&app, quiet).await;
    assert_eq!(d["status"], "triggered", "{d}");
    let quiet_run = run_ids(&d)[0];
    // b's delivery went in the first batches: most of a's thousand, stored before it, were
    // processed after it.
    let before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries WHERE delivery_key LIKE 'flood-%' AND delivery_key <> $1
           AND processed_at IS NOT NULL
           AND processed_at < (SELECT processed_at FROM deliveries WHERE id = $2)",
    )
    .bind(format!("flood-{FLOOD}"))
    .bind(quiet)
    .fetch_one(app.pool())
    .await
    .expect("count");
    assert!(
        before < 200,
        "{before} of project a's deliveries were processed before project b's"
    );
    // Its run ran, though project a has a thousand runs waiting, and its statuses went out.
    let (run, stages) = app.wait_for_run(quiet_run, WAIT).await;
    assert_eq!(
        run.status,
        RunStatus::Succeeded,
        "{:?} {stages:?}",
        run.reason
    );
    assert!(
        app.log_lines(quiet_run, "a")
            .await
            .contains(&"quiet ran".to_owned())
    );
    let calls = until_final_success(&recorded, quiet_run.0).await;
    assert!(calls.iter().any(|c| c.0.starts_with("/repos/quiet/app/")));
    // Project a never ran more than two runs at once.
    let by_status: Vec<(String, i64)> = sqlx::query_as(
        "SELECT r.status::text, count(*) FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
         WHERE p.name = 'flood' GROUP BY r.status ORDER BY 1",
    )
    .fetch_all(app.pool())
    .await
    .expect("runs");
    let running = by_status
        .iter()
        .find(|s| s.0 == "running")
        .map_or(0, |s| s.1);
    assert!(running <= 2, "{by_status:?}");
    let ended = by_status
        .iter()
        .filter(|s| !matches!(s.0.as_str(), "running" | "queued"))
        .map(|s| s.1)
        .sum::<i64>();
    assert_eq!(ended, 0, "no flood run could end: {by_status:?}");

    // Every one of a's deliveries started its run: numbered without gap in the order the
    // deliveries were stored (a batch's runs are created together), each summary naming its
    // own run's number.
    for id in ids.iter().take(FLOOD) {
        processed(&app, id.expect("stored")).await;
    }
    let numbered: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
        "SELECT r.number::int8, d.id, d.summary FROM runs r
           JOIN pipelines p ON p.id = r.pipeline_id
           JOIN deliveries d ON d.id = r.delivery_id
         WHERE p.name = 'flood' ORDER BY d.id",
    )
    .fetch_all(app.pool())
    .await
    .expect("runs");
    assert_eq!(numbered.len(), FLOOD, "one run per delivery");
    for (i, (number, delivery, summary)) in numbered.iter().enumerate() {
        assert_eq!(*number, i as i64 + 1, "delivery {delivery}'s run");
        let summary = summary.as_deref().unwrap_or_default();
        assert!(
            summary.contains(&format!(": run {number} started")),
            "delivery {delivery}: {summary}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_delivery_payloads_are_pruned_and_their_deliveries_kept() {
    use gantry::store::deliveries::{self, DeliveryStatus, NewDelivery};
    let app = TestEngine::start().await;
    register(
        &app,
        "github",
        "acme/app",
        "http://127.0.0.1:9/app.git",
        json!({}),
    )
    .await;
    let repo = gantry::store::repos::list(
        app.pool(),
        gantry::store::pipelines::project_id(app.pool(), "test")
            .await
            .expect("project"),
    )
    .await
    .expect("repos")[0]
        .id;
    let payload = br#"{"zen":"kept for a while"}"#;
    let new = |key: &'static str, status| NewDelivery {
        provider: "github",
        delivery_key: key,
        repository: Some(repo),
        pipeline: None,
        event: "watch",
        payload,
        status,
        summary: Some("done before"),
    };
    let ids = deliveries::insert_many(
        app.pool(),
        &[
            new("old", DeliveryStatus::Ignored),
            new("recent", DeliveryStatus::Ignored),
        ],
    )
    .await
    .expect("store");
    let ids: Vec<i64> = ids.into_iter().map(|id| id.expect("stored")).collect();
    sqlx::query("UPDATE deliveries SET received_at = now() - interval '31 days' WHERE id = $1")
        .bind(ids[0])
        .execute(app.pool())
        .await
        .expect("age it");
    let pruned = gantry::webhook::retention::prune(
        app.pool(),
        chrono::Utc::now() - chrono::TimeDelta::days(30),
    )
    .await
    .expect("prune");
    assert_eq!(pruned, 1, "only the old delivery");
    let rows: Vec<(i64, Vec<u8>, Option<String>, bool)> = sqlx::query_as(
        "SELECT id, payload, summary, payload_pruned_at IS NOT NULL FROM deliveries WHERE id = ANY($1) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(app.pool())
    .await
    .expect("rows");
    assert_eq!(rows[0].1, b"".to_vec(), "the old payload is emptied");
    assert_eq!(
        rows[0].2.as_deref(),
        Some("done before"),
        "its summary stays"
    );
    assert!(rows[0].3);
    assert_eq!(rows[1].1, payload.to_vec(), "a recent payload stays");
    assert!(!rows[1].3);
    // The API still shows the pruned delivery.
    let shown: Value = app
        .http()
        .get(format!("{}/api/v1/deliveries/{}", app.url(), ids[0]))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(shown["summary"], "done before", "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_file_that_is_a_symbolic_link_is_refused_with_the_reason() {
    let app = TestEngine::start().await;
    let served = tempfile::tempdir().expect("dir");
    let bare = BareRepo::create(served.path(), "app");
    let http = GitHttp::start(served.path());
    let url = http.url("app");
    let work = bare.work_clone();
    work.write(
        "ci/real.yaml",
        "name: real\non:\n  push: {}\nstages:\n  - name: a\n    steps:\n      - \"true\"\n",
        0o644,
    )
    .symlink(".gantry/linked.yaml", "../ci/real.yaml")
    .symlink(".gantry.yaml", "ci/real.yaml");
    let commit = work.commit("links");
    work.push();
    register(&app, "github", "acme/app", &url, json!({})).await;
    let push = github_push(
        "acme/app",
        &url,
        "refs/heads/main",
        &"0".repeat(40),
        &commit,
        "links",
        &[],
    );
    let (_, answer) = deliver_github(&app, "push", "link-1", &push).await;
    let d = processed(&app, answer["delivery"].as_i64().expect("id")).await;
    let summary = d["summary"].as_str().unwrap_or_default();
    assert!(summary.contains(".gantry.yaml: invalid"), "{d}");
    assert!(summary.contains(".gantry/linked.yaml: invalid"), "{d}");
    for id in run_ids(&d) {
        let (run, _) = app.wait_for_run(id, WAIT).await;
        assert_eq!(run.status, RunStatus::Failed);
        let reason = run.reason.unwrap_or_default();
        assert!(
            reason.contains("is a symbolic link: pipeline files must be regular files"),
            "{reason}"
        );
    }
}
