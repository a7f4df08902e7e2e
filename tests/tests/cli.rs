//! The `gantry` client commands, run as the real binary against a real engine: what a person
//! types (`apply`, `trigger`, `logs -f`, `runs`, `status`, `cancel`, `approve`, `reject`,
//! `rerun`, `secret`), what they see, and the exit status scripts rely on.

use std::process::Stdio;
use std::time::Duration;

use gantry::store::{RunId, RunStatus};
use gantry_tests::{StageStatus, TestEngine, gantry_bin, stage_of};
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(60);

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// An engine as the CLI reaches it: its URL and the API token to send (`GANTRY_TOKEN`).
struct Target {
    url: String,
    token: String,
}

impl Target {
    fn admin(app: &TestEngine) -> Target {
        Target {
            url: app.url(),
            token: app.token.clone(),
        }
    }
}

/// Runs `gantry ARGS --server URL` (with `input` on stdin) and waits for it.
async fn gantry(server: &Target, args: &[&str], input: Option<&str>) -> Output {
    let mut command = tokio::process::Command::new(gantry_bin());
    command
        .args(args)
        .arg("--server")
        .arg(&server.url)
        .env("GANTRY_TOKEN", &server.token)
        .env_remove("GANTRY_DATA_DIR")
        .env_remove("GANTRY_URL")
        .env_remove("GANTRY_PROJECT")
        .env_remove("GANTRY_USER")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("start gantry");
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).await.expect("write stdin");
    }
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("gantry {args:?} did not finish within {WAIT:?}"))
        .expect("gantry ran");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The run id in `triggered PIPELINE #N (id ID)...`.
fn triggered_run(output: &Output) -> RunId {
    output
        .stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("triggered ")?
                .split_once("(id ")?
                .1
                .split(')')
                .next()?
                .parse()
                .ok()
        })
        .map(RunId)
        .unwrap_or_else(|| panic!("no run id in {output:?}"))
}

fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write pipeline file");
    path.display().to_string()
}

const COUNTING: &str = "name: counting
stages:
  - name: count
    steps:
      - for i in 1 2 3 4 5; do echo \"line $i\"; sleep 0.2; done
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_stores_a_file_once_and_lists_every_problem_of_a_broken_one() {
    let app = TestEngine::start().await;
    let url = Target::admin(&app);
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write_file(&dir, "counting.yaml", COUNTING);

    let first = gantry(&url, &["apply", "-f", &good, "--project", "test"], None).await;
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.stdout, "applied counting version 1\n", "{first:?}");
    let again = gantry(&url, &["apply", "-f", &good, "--project", "test"], None).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.stdout, "unchanged counting version 1\n", "{again:?}");

    let broken = write_file(
        &dir,
        "broken.yaml",
        "name: broken\nstages:\n  - name: a\n    stepz: []\n  - name: b\n    needs: [nowhere]\n    steps: [echo]\n",
    );
    let refused = gantry(&url, &["apply", "-f", &broken], None).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    // Each problem, then the line of the file it points at with a caret under the column.
    let (problems, snippets): (Vec<&str>, Vec<&str>) = refused
        .stderr
        .lines()
        .partition(|l| l.starts_with(&format!("{broken}:")));
    assert!(problems.len() >= 2, "{refused:?}");
    assert_eq!(snippets.len(), 3 * problems.len(), "{refused:?}");
    assert!(
        refused.stderr.contains("4 |     stepz: []\n  |     ^\n"),
        "{refused:?}"
    );
    for line in &problems {
        // FILE:LINE:COL: message
        let rest = line
            .strip_prefix(&format!("{broken}:"))
            .unwrap_or_else(|| panic!("`{line}` does not start with the file name"));
        let mut parts = rest.splitn(3, ':');
        let (row, col) = (parts.next(), parts.next());
        assert!(
            row.is_some_and(|r| r.parse::<u32>().is_ok())
                && col.is_some_and(|c| c.parse::<u32>().is_ok())
                && parts.next().is_some_and(|m| m.starts_with(' ')),
            "`{line}` is not FILE:LINE:COL: message"
        );
    }
    assert!(refused.stderr.contains("stepz"), "{refused:?}");
    assert!(refused.stderr.contains("nowhere"), "{refused:?}");

    let missing = gantry(&url, &["apply", "-f", "/nonexistent/p.yaml"], None).await;
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.contains("cannot read /nonexistent/p.yaml"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_then_logs_follow_prints_every_line_and_exits_when_the_stage_ends() {
    let app = TestEngine::start().await;
    let url = Target::admin(&app);
    let name = app.apply(COUNTING).await;

    let triggered = gantry(&url, &["trigger", &name, "--project", "test"], None).await;
    assert_eq!(triggered.code, 0, "{triggered:?}");
    let run = triggered_run(&triggered);
    assert_eq!(
        triggered.stdout,
        format!("triggered counting #1 (id {run})\n"),
        "{triggered:?}"
    );
    // Started at once, before the stage has even begun: it waits, then follows live.
    let followed = gantry(&url, &["logs", &run.to_string(), "count", "-f"], None).await;
    assert_eq!(followed.code, 0, "{followed:?}");
    let lines: Vec<&str> = followed
        .stdout
        .lines()
        .filter(|l| l.starts_with("line "))
        .collect();
    assert_eq!(
        lines,
        ["line 1", "line 2", "line 3", "line 4", "line 5"],
        "{followed:?}"
    );
    let (run_row, _) = app.wait_for_run(run, WAIT).await;
    assert_eq!(run_row.status, RunStatus::Succeeded);

    // The plain download has the same lines.
    let plain = gantry(&url, &["logs", &run.to_string(), "count"], None).await;
    assert_eq!(plain.code, 0, "{plain:?}");
    for n in 1..=5 {
        assert!(plain.stdout.contains(&format!("line {n}\n")), "{plain:?}");
    }

    // `runs` lists it, `status` shows its stage.
    let runs = gantry(&url, &["runs"], None).await;
    assert_eq!(runs.code, 0, "{runs:?}");
    let header = runs.stdout.lines().next().unwrap_or_default();
    assert!(header.starts_with("ID  "), "{runs:?}");
    for column in ["PIPELINE", "#", "STATUS", "TRIGGER", "STARTED", "DURATION"] {
        assert!(header.contains(column), "no {column} in {runs:?}");
    }
    let row = runs
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{run} ")))
        .unwrap_or_else(|| panic!("run {run} not listed: {runs:?}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..5],
        [&run.to_string(), "counting", "#1", "succeeded", "manual"]
    );
    let of_pipeline = gantry(&url, &["runs", "counting", "--project", "test"], None).await;
    assert!(of_pipeline.stdout.contains(" counting "), "{of_pipeline:?}");
    let unknown = gantry(&url, &["runs", "nope", "--project", "test"], None).await;
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert_eq!(unknown.stderr, "gantry: pipeline test/nope not found\n");
    // `--project` without a pipeline lists that project's runs only.
    gantry::run::apply(
        app.engine(),
        "other",
        "other.yaml",
        "name: elsewhere\nstages:\n  - name: a\n    steps:\n      - \"true\"\n",
    )
    .await
    .expect("apply in another project");
    gantry::run::trigger(
        app.engine(),
        "other",
        "elsewhere",
        "manual",
        Default::default(),
    )
    .await
    .expect("trigger in another project");
    let all = gantry(&url, &["runs"], None).await;
    assert!(
        all.stdout.contains(" counting ") && all.stdout.contains(" elsewhere "),
        "{all:?}"
    );
    let of_test = gantry(&url, &["runs", "--project", "test"], None).await;
    assert_eq!(of_test.code, 0, "{of_test:?}");
    assert!(of_test.stdout.contains(" counting "), "{of_test:?}");
    assert!(
        !of_test.stdout.contains(" elsewhere "),
        "another project's run: {of_test:?}"
    );
    let of_other = gantry(&url, &["runs", "--project", "other"], None).await;
    assert!(
        of_other.stdout.contains(" elsewhere ") && !of_other.stdout.contains(" counting "),
        "{of_other:?}"
    );

    let status = gantry(&url, &["status", &run.to_string()], None).await;
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status
            .stdout
            .starts_with(&format!("test/counting #1 (id {run}) succeeded\n")),
        "{status:?}"
    );
    assert!(
        status.stdout.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.starts_with(&["count", "succeeded", "1/1"])
        }),
        "{status:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_follow_prints_each_stage_and_exits_with_the_run_status() {
    let app = TestEngine::start().await;
    let url = Target::admin(&app);
    app.apply(COUNTING).await;
    app.apply(
        "name: doomed\nparams:\n  code:\n    default: \"3\"\nstages:\n  - name: build\n    steps:\n      - echo building\n  - name: test\n    needs: [build]\n    steps:\n      - echo \"failing with $GANTRY_PARAM_CODE\" && exit $GANTRY_PARAM_CODE\n",
    )
    .await;

    let ok = gantry(
        &url,
        &["trigger", "counting", "--project", "test", "--follow"],
        None,
    )
    .await;
    assert_eq!(ok.code, 0, "{ok:?}");
    for n in 1..=5 {
        assert!(ok.stdout.contains(&format!("[count] line {n}\n")), "{ok:?}");
    }
    let ok_run = triggered_run(&ok);
    assert!(
        ok.stdout
            .ends_with(&format!("==> counting #1 (id {ok_run}) succeeded\n")),
        "{ok:?}"
    );
    // The stage's log comes before the line saying how it ended.
    let last_line = ok.stdout.find("[count] line 5").unwrap_or(usize::MAX);
    let ended = ok.stdout.find("<-- count succeeded").unwrap_or(0);
    assert!(last_line < ended, "{ok:?}");

    let failed = gantry(
        &url,
        &[
            "trigger",
            "doomed",
            "--project",
            "test",
            "-p",
            "code=4",
            "--follow",
        ],
        None,
    )
    .await;
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(failed.stdout.contains("[build] building\n"), "{failed:?}");
    assert!(
        failed.stdout.contains("[test] failing with 4\n"),
        "{failed:?}"
    );
    assert!(failed.stdout.contains("<-- test failed"), "{failed:?}");
    assert!(
        failed
            .stdout
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("==> doomed #1 (id "),
        "{failed:?}"
    );

    // Rerun only what failed: `build` keeps its result. The run is named as the UI shows it.
    let run = triggered_run(&failed);
    let rerun = gantry(&url, &["rerun", "doomed#1", "--failed", "--follow"], None).await;
    assert_eq!(rerun.code, 1, "{rerun:?}");
    let rerun_id = triggered_run(&rerun);
    assert!(
        rerun.stdout.starts_with(&format!(
            "triggered doomed #2 (id {rerun_id}), a rerun of doomed #1 (id {run}) (what did not succeed)\n"
        )),
        "{rerun:?}"
    );
    assert!(
        rerun.stdout.contains("<-- build succeeded (reused"),
        "{rerun:?}"
    );
    assert!(!rerun.stdout.contains("[build]"), "{rerun:?}");
    assert!(
        rerun.stdout.contains("[test] failing with 4\n"),
        "{rerun:?}"
    );

    let bad_param = gantry(
        &url,
        &["trigger", "doomed", "--project", "test", "-p", "nope=1"],
        None,
    )
    .await;
    assert_eq!(bad_param.code, 1, "{bad_param:?}");
    assert!(
        bad_param.stderr.starts_with("gantry: unknown param `nope`"),
        "{bad_param:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_run_and_refuses_an_ended_one() {
    let app = TestEngine::start().await;
    let url = Target::admin(&app);
    let name = app
        .apply(
            "name: slow\nstages:\n  - name: wait\n    steps:\n      - echo started && sleep 60\n",
        )
        .await;
    let run = app.trigger(&name, &[]).await.run_id;
    app.wait_for_stage(run, "wait", WAIT, |s| s.status == StageStatus::Running)
        .await;

    let cancelled = gantry(&url, &["cancel", "slow#1"], None).await;
    assert_eq!(cancelled.code, 0, "{cancelled:?}");
    assert_eq!(cancelled.stdout, format!("cancelling slow #1 (id {run})\n"));
    let (run_row, stages) = app.wait_for_run(run, WAIT).await;
    assert_eq!(run_row.status, RunStatus::Cancelled);
    assert_eq!(stage_of(&stages, "wait").status, StageStatus::Cancelled);

    let again = gantry(&url, &["cancel", &run.to_string()], None).await;
    assert_eq!(again.code, 1, "{again:?}");
    assert_eq!(
        again.stderr,
        format!("gantry: run {run} has already ended\n")
    );
    let no_stage = gantry(&url, &["cancel", &run.to_string(), "nope"], None).await;
    assert_eq!(no_stage.code, 1, "{no_stage:?}");
    assert!(no_stage.stderr.contains("not found"), "{no_stage:?}");
    app.stop().await;
}

const RELEASE: &str = "name: release
stages:
  - name: build
    steps:
      - echo built
  - name: deploy
    needs: [build]
    approval:
      message: Ship build ${{ run.number }}?
    steps:
      - echo deployed
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_lets_a_waiting_stage_run_and_reject_fails_it() {
    let app = TestEngine::start().await;
    let url = Target::admin(&app);
    let name = app.apply(RELEASE).await;

    let run = app.trigger(&name, &[]).await.run_id;
    app.wait_for_stage(run, "deploy", WAIT, |s| {
        s.status == StageStatus::WaitingApproval
    })
    .await;
    // Who decides is whoever the token belongs to: here two maintainers of the project.
    let as_user = |token: String| Target {
        url: url.url.clone(),
        token,
    };
    let alice = as_user(app.create_user("alice", "alice-password").await);
    let bob = as_user(app.create_user("bob", "bob-password").await);
    app.grant("test", "alice", gantry::access::Role::Maintainer)
        .await;
    app.grant("test", "bob", gantry::access::Role::Maintainer)
        .await;
    // `status` asks the stage's question, with this run's values, and says how to answer.
    let waiting = gantry(&url, &["status", &run.to_string()], None).await;
    assert!(
        waiting.stdout.contains(&format!(
            "\ndeploy waits for approval: Ship build 1?\n  gantry approve {run} deploy"
        )),
        "{waiting:?}"
    );
    let early = gantry(&alice, &["approve", &run.to_string(), "build"], None).await;
    assert_eq!(early.code, 1, "{early:?}");
    assert!(
        early.stderr.contains("is not waiting for approval"),
        "{early:?}"
    );
    let approved = gantry(&alice, &["approve", "release", "1", "deploy"], None).await;
    assert_eq!(approved.code, 0, "{approved:?}");
    assert_eq!(
        approved.stdout,
        format!("approved stage deploy of release #1 (id {run})\n")
    );
    let (run_row, stages) = app.wait_for_run(run, WAIT).await;
    assert_eq!(run_row.status, RunStatus::Succeeded);
    assert_eq!(
        stage_of(&stages, "deploy").approved_by.as_deref(),
        Some("alice")
    );

    let run = app.trigger(&name, &[]).await.run_id;
    app.wait_for_stage(run, "deploy", WAIT, |s| {
        s.status == StageStatus::WaitingApproval
    })
    .await;
    let rejected = gantry(&bob, &["reject", "test/release#2", "deploy"], None).await;
    assert_eq!(rejected.code, 0, "{rejected:?}");
    assert_eq!(
        rejected.stdout,
        format!("rejected stage deploy of release #2 (id {run})\n")
    );
    let (run_row, stages) = app.wait_for_run(run, WAIT).await;
    assert_eq!(run_row.status, RunStatus::Failed);
    let deploy = stage_of(&stages, "deploy");
    assert_eq!(deploy.status, StageStatus::Failed);
    assert_eq!(deploy.error.as_deref(), Some("rejected by bob"));

    let status = gantry(&url, &["status", &run.to_string()], None).await;
    assert!(status.stdout.contains("rejected by bob"), "{status:?}");
    assert!(!status.stdout.contains("approved by"), "{status:?}");
    assert!(!status.stdout.contains("waits for approval"), "{status:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_set_from_stdin_and_listed_by_name_only() {
    let app = TestEngine::start().await;
    let url = Target::admin(&app);
    let value = "s3cr3t-Value with spaces";

    let set = gantry(
        &url,
        &["secret", "set", "DEPLOY_TOKEN", "--project", "test"],
        Some(&format!("{value}\n")),
    )
    .await;
    assert_eq!(set.code, 0, "{set:?}");
    assert_eq!(set.stdout, "secret DEPLOY_TOKEN set in project test\n");
    assert!(!set.stdout.contains(value) && !set.stderr.contains(value));

    let list = gantry(&url, &["secret", "list", "--project", "test"], None).await;
    assert_eq!(list.code, 0, "{list:?}");
    assert!(
        list.stdout.lines().any(|l| l.starts_with("DEPLOY_TOKEN ")),
        "{list:?}"
    );
    assert!(!list.stdout.contains("s3cr3t"), "{list:?}");

    // Stored as given, without the line end `echo` added.
    let project = gantry::store::pipelines::project_id(app.pool(), "test")
        .await
        .expect("project");
    let stored =
        gantry::store::secrets::encrypted(app.pool(), project, &["DEPLOY_TOKEN".to_owned()])
            .await
            .expect("secret");
    let (_, nonce, ciphertext) = &stored[0];
    let plain = app
        .engine()
        .secrets
        .decrypt(nonce, ciphertext)
        .expect("decrypts");
    assert_eq!(String::from_utf8_lossy(&plain), value);

    let empty = gantry(
        &url,
        &["secret", "set", "EMPTY", "--project", "test"],
        Some(""),
    )
    .await;
    assert_eq!(empty.code, 2, "{empty:?}");
    let bad_name = gantry(
        &url,
        &["secret", "set", "bad-", "--project", "test"],
        Some("x"),
    )
    .await;
    assert_eq!(bad_name.code, 1, "{bad_name:?}");
    app.stop().await;
}

#[tokio::test]
async fn an_engine_that_is_not_there_is_a_usage_error_with_a_hint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let url = format!("http://127.0.0.1:{port}");
    let target = Target {
        url: url.clone(),
        token: String::new(),
    };
    let output = gantry(&target, &["runs"], None).await;
    assert_eq!(output.code, 2, "{output:?}");
    assert_eq!(
        output.stderr,
        format!(
            "gantry: cannot reach the engine at {url}: connection refused \
             (is `gantry serve` running? set --server or GANTRY_URL)\n"
        )
    );
}

/// The first line of `gantry status`.
fn status_line(output: &Output) -> &str {
    output.stdout.lines().next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_named_by_its_pipeline_number_as_the_web_ui_shows_it() {
    let app = TestEngine::start().await;
    let url = Target::admin(&app);
    // A run elsewhere first, so that ids and numbers differ.
    gantry::run::apply(
        app.engine(),
        "other",
        "other.yaml",
        "name: elsewhere\nstages:\n  - name: a\n    steps:\n      - \"true\"\n",
    )
    .await
    .expect("apply in another project");
    gantry::run::trigger(
        app.engine(),
        "other",
        "elsewhere",
        "manual",
        Default::default(),
    )
    .await
    .expect("trigger in another project");
    app.apply(
        "name: greet\ndescription: Says hello to the team\nstages:\n  - name: hello\n    steps:\n      - echo hello from greet\n",
    )
    .await;
    let first = app.trigger("greet", &[]).await;
    let second = app.trigger("greet", &[]).await;
    assert_eq!((first.number, second.number), (1, 2));
    assert_ne!(second.run_id.0, 2, "the id must differ from the number");
    let id = second.run_id;
    app.wait_for_run(id, WAIT).await;

    // Every form names the same run, and the output names it by number and id.
    let expected = format!("test/greet #2 (id {id}) succeeded");
    let id_text = id.to_string();
    for args in [
        vec!["status", "greet#2"],
        vec!["status", "greet", "2"],
        vec!["status", "test/greet#2"],
        vec!["status", "test/greet", "2"],
        vec!["status", id_text.as_str()],
    ] {
        let shown = gantry(&url, &args, None).await;
        assert_eq!(shown.code, 0, "{args:?}: {shown:?}");
        assert_eq!(status_line(&shown), expected, "{args:?}: {shown:?}");
        // The pipeline's description is shown with it.
        assert_eq!(
            shown.stdout.lines().nth(1),
            Some("Says hello to the team"),
            "{shown:?}"
        );
    }
    let logs = gantry(&url, &["logs", "greet#2", "hello"], None).await;
    assert_eq!(logs.code, 0, "{logs:?}");
    assert!(logs.stdout.contains("hello from greet\n"), "{logs:?}");
    let followed = gantry(&url, &["logs", "greet", "1", "hello", "-f"], None).await;
    assert_eq!(followed.code, 0, "{followed:?}");
    assert!(
        followed.stdout.contains("hello from greet\n"),
        "{followed:?}"
    );

    // Mistakes say what is wrong and what to give instead.
    let missing = gantry(&url, &["status", "greet#9"], None).await;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert_eq!(
        missing.stderr,
        "gantry: pipeline test/greet has no run #9\n"
    );
    let no_number = gantry(&url, &["status", "greet"], None).await;
    assert_eq!(no_number.code, 2, "{no_number:?}");
    assert!(
        no_number.stderr.contains("`greet#N` or `greet N`"),
        "{no_number:?}"
    );
    let extra = gantry(&url, &["status", "greet#2", "hello"], None).await;
    assert_eq!(extra.code, 2, "{extra:?}");
    assert!(extra.stderr.contains("unexpected `hello`"), "{extra:?}");

    // A name two projects use needs its project; the error lists both.
    gantry::run::apply(
        app.engine(),
        "other",
        "other.yaml",
        "name: greet\nstages:\n  - name: hello\n    steps:\n      - \"true\"\n",
    )
    .await
    .expect("apply greet in another project");
    let ambiguous = gantry(&url, &["status", "greet#2"], None).await;
    assert_eq!(ambiguous.code, 1, "{ambiguous:?}");
    assert!(
        ambiguous
            .stderr
            .contains("pipeline `greet` is in several projects: other/greet, test/greet"),
        "{ambiguous:?}"
    );
    let chosen = gantry(&url, &["status", "test/greet#2"], None).await;
    assert_eq!(status_line(&chosen), expected, "{chosen:?}");

    // The endpoint by number is read as the run is: a user without a role in the project
    // is refused both ways, alike.
    let outsider = app.create_user("outsider", "outsider-password").await;
    let http = gantry_tests::authorized_client(&outsider);
    let by_id = http
        .get(format!("{}/api/v1/runs/{id}", app.url()))
        .send()
        .await
        .expect("GET run");
    let by_number = http
        .get(format!(
            "{}/api/v1/projects/test/pipelines/greet/runs/2",
            app.url()
        ))
        .send()
        .await
        .expect("GET run by number");
    assert!(by_id.status().is_client_error(), "{by_id:?}");
    assert_eq!(by_number.status(), by_id.status());
    let run = app
        .client()
        .run_by_number("test", "greet", 2)
        .await
        .expect("GET run by number");
    assert_eq!(run.id, id.0);
    assert_eq!(run.description.as_deref(), Some("Says hello to the team"));

    // The run page shows the id the CLI takes; the pipeline page shows the description.
    let page = app
        .http()
        .get(format!("{}/runs/{id}", app.url()))
        .send()
        .await
        .expect("run page")
        .text()
        .await
        .expect("HTML");
    assert!(page.contains(&format!("id <code>{id}</code>")), "{page}");
    let page = app
        .http()
        .get(format!("{}/p/test/greet", app.url()))
        .send()
        .await
        .expect("pipeline page")
        .text()
        .await
        .expect("HTML");
    assert!(
        page.contains(r#"<p class="description">Says hello to the team</p>"#),
        "{page}"
    );
    app.stop().await;
}

/// Runs `gantry ARGS --server URL` as a person would next to a local engine: no
/// `GANTRY_TOKEN` unless `token` is given, and `data_dir` as the local engine's data directory.
async fn gantry_locally(
    url: &str,
    args: &[&str],
    data_dir: &std::path::Path,
    token: Option<&str>,
) -> Output {
    let mut command = tokio::process::Command::new(gantry_bin());
    command
        .args(args)
        .arg("--server")
        .arg(url)
        .env("GANTRY_DATA_DIR", data_dir)
        .env_remove("GANTRY_TOKEN")
        .env_remove("GANTRY_URL")
        .env_remove("GANTRY_PROJECT")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("GANTRY_TOKEN", token);
    }
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("gantry {args:?} did not finish within {WAIT:?}"))
        .expect("gantry ran");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_admin_token_goes_only_to_its_engine_and_auth_errors_name_the_token_source() {
    let local = TestEngine::start().await;
    let other = TestEngine::start().await;
    local.apply(COUNTING).await;
    other.apply(COUNTING).await;
    let dir = local.data_dir.path();
    let token_file = dir.join("admin.token").display().to_string();
    // The engine recorded where it answers beside the token it wrote.
    let recorded = std::fs::read_to_string(dir.join("admin.token.url")).expect("admin.token.url");
    assert!(
        recorded.lines().any(|l| l == local.url()),
        "{recorded:?} should hold {}",
        local.url()
    );

    // Next to its own engine the token file is used by itself.
    let trigger = ["trigger", "counting", "--project", "test"];
    let mine = gantry_locally(&local.url(), &trigger, dir, None).await;
    assert_eq!(mine.code, 0, "{mine:?}");

    // Pointed at another engine, that token is not sent, and the error says why and where
    // it came from.
    let elsewhere = gantry_locally(&other.url(), &trigger, dir, None).await;
    assert_eq!(elsewhere.code, 1, "{elsewhere:?}");
    assert!(
        elsewhere.stderr.contains(&format!(
            "no token was sent ({token_file} is for the engine at {}",
            local.url()
        )) && elsewhere
            .stderr
            .contains("give one with --token or GANTRY_TOKEN"),
        "{elsewhere:?}"
    );

    // A token that is not valid is traced to the variable or the flag it came from.
    let from_env = gantry_locally(&other.url(), &trigger, dir, Some("not-a-token")).await;
    assert_eq!(from_env.code, 1, "{from_env:?}");
    assert!(
        from_env.stderr.contains("the API token is not valid")
            && from_env
                .stderr
                .contains("GANTRY_TOKEN environment variable"),
        "{from_env:?}"
    );
    let mut with_flag = trigger.to_vec();
    with_flag.extend(["--token", "not-a-token"]);
    let from_flag = gantry_locally(&other.url(), &with_flag, dir, None).await;
    assert_eq!(from_flag.code, 1, "{from_flag:?}");
    assert!(
        from_flag
            .stderr
            .contains("the token was given with --token"),
        "{from_flag:?}"
    );

    // A token file whose engine no longer knows the token (its database was replaced) is
    // traced to its file.
    let stale = tempfile::tempdir().expect("temp dir");
    std::fs::write(stale.path().join("admin.token"), "stale-token\n").expect("token");
    std::fs::write(stale.path().join("admin.token.url"), other.url()).expect("url");
    let refused = gantry_locally(&other.url(), &trigger, stale.path(), None).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "the token was read from {}",
            stale.path().join("admin.token").display()
        )),
        "{refused:?}"
    );
    local.stop().await;
    other.stop().await;
}
