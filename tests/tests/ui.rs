//! The web UI in a real browser (headless Chromium): sign in, trigger a run from the pipeline
//! page's form, watch log lines appear while the step still runs, approve, cancel, rerun; a
//! 100,000-line log stays a few dozen DOM rows and is searchable. Screenshots of each step are
//! kept under `target/debug/ui-screenshots/`.

use std::time::Duration;

use gantry::store::{RunId, RunStatus};
use gantry_tests::browser::Browser;
use gantry_tests::{StageStatus, TestEngine, open_temp_dir};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn pipeline(gate: &std::path::Path) -> String {
    format!(
        r#"name: web
params:
  greeting:
    default: hello
stages:
  - name: build
    env:
      GATE: {gate}
      GREETING: ${{{{ params.greeting }}}}
    steps:
      - run: |
          echo "start $GREETING"
          printf '\033[32mgreen text\033[0m\n'
          printf '\033]0;a window title\007\033]8;;https://example.com\033\\a link\033]8;;\033\\ and \033[2Kmore\n'
          while [ ! -e "$GATE" ]; do sleep 0.05; done
          echo "after the gate"
  - name: deploy
    needs: [build]
    approval:
      message: Ship build ${{{{ run.number }}}}?
"#,
        gate = gate.display()
    )
}

fn run_id_of(url: &str) -> RunId {
    let id = url
        .rsplit('/')
        .next()
        .and_then(|s| s.split('#').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no run id in {url}"));
    RunId(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_trigger_watch_the_log_live_approve_cancel_and_rerun() {
    let app = TestEngine::start().await;
    let dir = open_temp_dir();
    let gate = dir.path().join("gate");
    app.apply(&pipeline(&gate)).await;
    let base = app.url();
    let browser = Browser::start("flow").await;

    // Signing in is required: the dashboard sends us to the form and back.
    browser.goto(&format!("{base}/p/test/web")).await;
    assert!(
        browser.url().await.contains("/login?next="),
        "{}",
        browser.url().await
    );
    browser.fill("#name", "admin").await;
    browser.fill("#password", &app.admin_password()).await;
    browser
        .click("form[action='/login'] button[type=submit]")
        .await;
    browser
        .wait_for(
            "the pipeline page after signing in",
            "return location.pathname === '/p/test/web' && document.querySelector('#trigger-form');",
            WAIT,
        )
        .await;
    browser.screenshot("1-pipeline").await;

    // Trigger with a param from the form.
    browser.fill("#param-greeting", "howdy").await;
    browser.click_button("Run web").await;
    browser
        .wait_for(
            "the run page",
            "return location.pathname.startsWith('/runs/');",
            WAIT,
        )
        .await;
    let run = run_id_of(&browser.url().await);

    // The step's first lines show while it still runs (it waits for the gate file).
    browser
        .wait_for(
            "the first log line",
            "return [...document.querySelectorAll('#log-rows .row .tx')].some(r => r.textContent === 'start howdy');",
            WAIT,
        )
        .await;
    assert_eq!(app.stage(run, "build").await.status, StageStatus::Running);
    let green = browser
        .js(
            "return [...document.querySelectorAll('#log-rows .tx span.f2')].map(s => s.textContent).join();",
            vec![],
        )
        .await;
    assert_eq!(green, json!("green text"), "ANSI green became a class");
    // Other escape sequences (a window title, an OSC 8 link, erasing) are dropped: the link's
    // text stays, none of the sequences' own characters show.
    let rows = browser
        .js(
            "return [...document.querySelectorAll('#log-rows .row .tx')].map(r => r.textContent);",
            vec![],
        )
        .await;
    let rows: Vec<String> = serde_json::from_value(rows).expect("rows");
    assert!(rows.contains(&"a link and more".to_owned()), "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| !r.contains('\u{1b}') && !r.contains("]8;;") && !r.contains("window title")),
        "{rows:?}"
    );
    browser
        .wait_for(
            "the graph showing build running",
            "return document.querySelector('.graph .node.s-running[data-key=\"build\"]');",
            WAIT,
        )
        .await;
    browser.screenshot("2-live-log").await;

    // Let the step finish; deploy then waits, and its Approve button appears by itself.
    std::fs::write(&gate, "").expect("open the gate");
    browser
        .wait_for(
            "the approve button",
            "const b = [...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Approve deploy'); return b && b.offsetParent !== null;",
            WAIT,
        )
        .await;
    browser.screenshot("3-waiting-approval").await;
    browser.click_button("Approve deploy").await;
    let (row, stages) = app.wait_for_run(run, WAIT).await;
    assert_eq!(row.status, RunStatus::Succeeded, "{:?}", row.reason);
    assert_eq!(
        gantry_tests::stage_of(&stages, "deploy")
            .approved_by
            .as_deref(),
        Some("admin")
    );
    browser
        .wait_for(
            "the succeeded badge",
            "return document.querySelector('#run-status .badge.s-succeeded');",
            WAIT,
        )
        .await;
    browser.screenshot("4-approved").await;

    // Cancel a run waiting for its approval.
    browser.goto(&format!("{base}/p/test/web")).await;
    browser.click_button("Run web").await;
    browser
        .wait_for(
            "the second run's page",
            &format!("return location.pathname.startsWith('/runs/') && location.pathname !== '/runs/{run}';"),
            WAIT,
        )
        .await;
    let second = run_id_of(&browser.url().await);
    app.wait_for_stage(second, "deploy", WAIT, |s| {
        s.status == StageStatus::WaitingApproval
    })
    .await;
    // While it waits, the dashboard and the pipeline page say so, not just "running".
    browser.goto(&format!("{base}/")).await;
    let on_dashboard = browser
        .js(
            &format!("return document.querySelector('a.branch[href=\"/runs/{second}\"] .badge').textContent;"),
            vec![],
        )
        .await;
    assert_eq!(on_dashboard, json!("waiting for approval"));
    browser.screenshot("5a-dashboard-waiting").await;
    browser.goto(&format!("{base}/p/test/web")).await;
    let on_pipeline_page = browser
        .js(
            &format!("return document.querySelector('table a[href=\"/runs/{second}\"]').closest('tr').querySelector('.badge').textContent;"),
            vec![],
        )
        .await;
    assert_eq!(on_pipeline_page, json!("waiting for approval"));
    // The approval-only stage has no log: its pane asks the question (with this run's number)
    // and offers Approve and Reject, rather than "Loading…" forever.
    browser.goto(&format!("{base}/runs/{second}")).await;
    browser.click("button[data-open='deploy']").await;
    browser
        .wait_for(
            "the question in the log pane",
            "const pane = document.getElementById('log-approval'); \
             const shown = (t) => [...pane.querySelectorAll('button')].some(b => b.textContent.trim() === t && b.offsetParent !== null); \
             return document.getElementById('log-state').textContent === 'No log: this stage waits for approval.' \
               && pane.textContent.includes('Ship build 2?') && shown('Approve deploy') && shown('Reject deploy');",
            WAIT,
        )
        .await;
    browser.screenshot("5b-approval-log-pane").await;
    browser.click_button("Cancel run").await;
    let (row, _) = app.wait_for_run(second, WAIT).await;
    assert_eq!(row.status, RunStatus::Cancelled);
    browser
        .wait_for(
            "the rerun buttons of the cancelled run",
            "const b = [...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Rerun'); return b && b.offsetParent !== null && document.querySelector('#run-status .badge.s-cancelled');",
            WAIT,
        )
        .await;
    browser.screenshot("5-cancelled").await;

    // Rerun it: a new run of the same version and params.
    browser.click_button("Rerun").await;
    browser
        .wait_for(
            "the rerun's page",
            &format!("return location.pathname.startsWith('/runs/') && location.pathname !== '/runs/{second}';"),
            WAIT,
        )
        .await;
    let third = run_id_of(&browser.url().await);
    let rerun = gantry::store::runs::get(app.pool(), third)
        .await
        .expect("run");
    assert_eq!(rerun.rerun_of, Some(second));
    assert_eq!(rerun.params["greeting"], "hello");
    browser
        .wait_for(
            "the rerun's log",
            "return [...document.querySelectorAll('#log-rows .row .tx')].some(r => r.textContent === 'after the gate');",
            WAIT,
        )
        .await;
    browser.screenshot("6-rerun").await;
    browser.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100000_line_log_is_a_few_dozen_rows_and_searchable() {
    let app = TestEngine::start().await;
    app.apply("name: long\nstages:\n  - name: spew\n    steps:\n      - seq 1 100000\n")
        .await;
    let run = app.trigger("long", &[]).await.run_id;
    let (row, _) = app.wait_for_run(run, WAIT).await;
    assert_eq!(row.status, RunStatus::Succeeded);
    let browser = Browser::start("long-log").await;
    browser
        .sign_in(&app.url(), "admin", &app.admin_password())
        .await;
    let opened = std::time::Instant::now();
    browser.goto(&format!("{}/runs/{run}", app.url())).await;
    // The step's header line, 100,000 numbers and the step's end line.
    browser
        .wait_for(
            "every line loaded",
            "return document.getElementById('log-state').textContent === '100002 lines · the attempt has ended';",
            WAIT,
        )
        .await;
    let loaded = opened.elapsed();
    let rows = browser
        .js(
            "return document.querySelectorAll('#log-rows .row').length;",
            vec![],
        )
        .await;
    let rows = rows.as_u64().expect("a count");
    assert!(rows > 10 && rows < 200, "{rows} rows in the DOM");
    // Following: the last line is in view.
    browser
        .wait_for(
            "the last line in view",
            "return [...document.querySelectorAll('#log-rows .row .tx')].some(r => r.textContent === '100000');",
            WAIT,
        )
        .await;
    browser.fill("#log-search", "77777").await;
    browser
        .wait_for(
            "the search result",
            "return document.getElementById('log-matches').textContent === '1 of 1' && [...document.querySelectorAll('#log-rows .row.sel .tx')].some(r => r.textContent === '77777');",
            WAIT,
        )
        .await;
    browser.screenshot("search").await;
    // A link to a line opens the log there.
    browser
        .goto(&format!("{}/runs/{run}#stage-0-L5001", app.url()))
        .await;
    browser.client.refresh().await.expect("reload");
    browser
        .wait_for(
            "the linked line",
            "return [...document.querySelectorAll('#log-rows .row.sel .tx')].some(r => r.textContent === '5000');",
            WAIT,
        )
        .await;
    eprintln!("100,001 lines loaded in the browser in {loaded:?}");
    browser.close().await;
    app.stop().await;
}
