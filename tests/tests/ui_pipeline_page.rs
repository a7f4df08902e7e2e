//! The pipeline page in a real browser (headless Chromium), at a laptop's size and a phone's:
//! its runs' duration trend (a bar per run, linking to it), the run list's short commit and
//! who triggered, and the applied YAML of each version with its plan and its line diff to the
//! version before. Screenshots are kept (`pipeline-page-<size>-pipeline-page*.png`).

use std::time::Duration;

use gantry::run::{RunContext, TriggerRequest};
use gantry::store::RunStatus;
use gantry_tests::TestEngine;
use gantry_tests::browser::Browser;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

const V1: &str = "name: shipping
description: Builds, tests and packages the shop
stages:
  - name: build
    steps:
      - run: echo building
  - name: test
    needs: [build]
    steps:
      - run: echo testing
";

/// Version 2 changes the build step and adds a stage with a line far wider than a phone.
const V2: &str = "name: shipping
description: Builds, tests and packages the shop
stages:
  - name: build
    steps:
      - run: echo building the release
  - name: test
    needs: [build]
    steps:
      - run: echo testing
  - name: package
    needs: [test]
    steps:
      - run: echo packaging-the-release-into-an-archive-whose-name-is-much-longer-than-any-phone-is-wide.tar.gz
      - run: sleep 2
";

/// (name, width, height, mobile) of the screens looked at.
const SCREENS: [(&str, u32, u32, bool); 2] =
    [("laptop", 1280, 800, false), ("phone", 390, 844, true)];

async fn text_list(browser: &Browser, script: &str) -> Vec<String> {
    let found = browser.js(script, vec![]).await;
    found
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Opens `path` and waits until it has loaded.
async fn open(browser: &Browser, url: &str) {
    browser.goto(url).await;
    browser
        .wait_for(
            url,
            "return document.readyState === 'complete' && document.getElementById('yaml') !== null;",
            WAIT,
        )
        .await;
}

/// `[innerWidth, scrollWidth]`, and the elements sticking out past the right edge.
async fn width_problem(browser: &Browser, width: u32) -> Option<Value> {
    let sizes = browser
        .js(
            "const w = window.innerWidth + 0.5;
             return [window.innerWidth, document.documentElement.scrollWidth,
                 [...document.querySelectorAll('body *')]
                    .filter(e => e.getBoundingClientRect().right > w)
                    .slice(0, 5).map(e => e.outerHTML.slice(0, 100))];",
            vec![],
        )
        .await;
    (sizes[0] != json!(width) || sizes[1].as_i64() > sizes[0].as_i64()).then_some(sizes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_page_shows_each_versions_yaml_its_diff_and_a_trend_bar_per_run() {
    let app = TestEngine::start().await;
    let pipeline = app.apply(V1).await;
    let first = gantry::run::trigger_by(
        app.engine(),
        "test",
        &pipeline,
        "manual",
        TriggerRequest {
            params: Default::default(),
            context: Some(RunContext {
                event: "manual".into(),
                branch: Some("main".into()),
                commit_sha: Some("4b825dc642cb6eb9a060e54bf8d69288fbee4904".into()),
                ..RunContext::default()
            }),
        },
        Some("alice"),
    )
    .await
    .expect("run 1 triggers");
    let (run1, _) = app.wait_for_run(first.run_id, WAIT).await;
    assert_eq!(run1.status, RunStatus::Succeeded);
    assert_eq!(app.apply(V2).await, pipeline);
    let second = app.trigger(&pipeline, &[]).await;
    let (run2, _) = app.wait_for_run(second.run_id, WAIT).await;
    assert_eq!(run2.status, RunStatus::Succeeded);

    let base = app.url();
    let page = format!("{base}/p/test/{pipeline}");
    let browser = Browser::start("pipeline-page").await;
    browser.sign_in(&base, "admin", &app.admin_password()).await;
    let mut problems = Vec::new();
    for (screen, width, height, mobile) in SCREENS {
        browser
            .devtools(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
            )
            .await;

        // The newest version by default: its YAML exactly, its stages in plan order.
        open(&browser, &page).await;
        let yaml = browser
            .js(
                "return document.getElementById('yaml').textContent;",
                vec![],
            )
            .await;
        assert_eq!(yaml.as_str(), Some(V2), "{screen}: version 2's YAML");
        let stages = text_list(
            &browser,
            "return [...document.querySelectorAll('ol.plan li code')].map(c => c.textContent);",
        )
        .await;
        assert_eq!(stages, ["build", "test", "package"], "{screen}");

        // The diff to version 1: the changed step removed and re-added, the new stage added.
        let heading = browser
            .js(
                "return document.getElementById('diff-h').textContent;",
                vec![],
            )
            .await;
        assert!(
            heading.as_str().is_some_and(
                |h| h.contains("Changes from version 1") && h.contains("6 added, 1 removed")
            ),
            "{screen}: {heading}"
        );
        let removed = text_list(
            &browser,
            "return [...document.querySelectorAll('#diff del')].map(d => d.textContent);",
        )
        .await;
        assert_eq!(removed, ["-      - run: echo building"], "{screen}");
        let added = text_list(
            &browser,
            "return [...document.querySelectorAll('#diff ins')].map(d => d.textContent);",
        )
        .await;
        assert_eq!(
            added,
            [
                "+      - run: echo building the release",
                "+  - name: package",
                "+    needs: [test]",
                "+    steps:",
                "+      - run: echo packaging-the-release-into-an-archive-whose-name-is-much-longer-than-any-phone-is-wide.tar.gz",
                "+      - run: sleep 2",
            ],
            "{screen}"
        );

        // A trend bar per run, oldest first, each linking to its run and named for it.
        let bars = browser
            .js(
                "return [...document.querySelectorAll('svg.trend-chart a.bar')].map(a =>
                    [a.getAttribute('href'), a.getAttribute('class'), a.getAttribute('aria-label'),
                     a.querySelector('rect').getBoundingClientRect().height]);",
                vec![],
            )
            .await;
        let bars = bars.as_array().cloned().unwrap_or_default();
        assert_eq!(bars.len(), 2, "{screen}: {bars:?}");
        for (bar, run) in bars.iter().zip([&run1, &run2]) {
            assert_eq!(bar[0], json!(format!("/runs/{}", run.id)), "{screen}");
            assert_eq!(bar[1], json!("bar s-succeeded"), "{screen}");
            assert!(
                bar[2]
                    .as_str()
                    .is_some_and(|l| l.starts_with(&format!("#{} succeeded in ", run.number))),
                "{screen}: {bar}"
            );
            assert!(bar[3].as_f64().is_some_and(|h| h > 0.0), "{screen}: {bar}");
        }
        // Run 2 sleeps two seconds more than run 1 does: its bar is taller.
        assert!(
            bars[1][3].as_f64() > bars[0][3].as_f64(),
            "{screen}: the longer run's bar is taller: {bars:?}"
        );

        // The run list: short commit and who triggered.
        let list = browser
            .js(
                "return document.querySelector('table.runs').innerText;",
                vec![],
            )
            .await;
        let list = list.as_str().unwrap_or_default();
        for expected in ["4b825dc6", "manual by alice", "#2", "#1"] {
            assert!(list.contains(expected), "{screen}: {expected} in {list}");
        }
        if let Some(problem) = width_problem(&browser, width).await {
            problems.push(format!("{screen}, newest version: {problem}"));
        }
        browser.screenshot(&format!("{screen}-pipeline-page")).await;
        for part in ["yaml-h", "diff-h"] {
            browser
                .js(
                    "document.getElementById(arguments[0]).scrollIntoView();",
                    vec![json!(part)],
                )
                .await;
            browser
                .screenshot(&format!("{screen}-pipeline-page-{part}"))
                .await;
        }

        // Version 1, picked from the version links: its YAML, and nothing to compare with.
        browser.click("nav.versions a[href='?version=1']").await;
        browser
            .wait_for(
                "version 1",
                "return location.search === '?version=1' && document.readyState === 'complete'
                    && document.getElementById('yaml') !== null;",
                WAIT,
            )
            .await;
        let yaml = browser
            .js(
                "return document.getElementById('yaml').textContent;",
                vec![],
            )
            .await;
        assert_eq!(yaml.as_str(), Some(V1), "{screen}: version 1's YAML");
        let first_version = browser
            .js(
                "return [document.getElementById('diff') === null,
                         document.querySelector('nav.versions [aria-current]').textContent,
                         document.body.innerText.includes(\"is the pipeline's first\")];",
                vec![],
            )
            .await;
        assert_eq!(first_version, json!([true, "v1", true]), "{screen}");
        if let Some(problem) = width_problem(&browser, width).await {
            problems.push(format!("{screen}, version 1: {problem}"));
        }
        browser
            .screenshot(&format!("{screen}-pipeline-page-v1"))
            .await;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // A version that does not exist is a 404 page that says which versions there are.
    browser.goto(&format!("{page}?version=9")).await;
    let said = browser
        .wait_for(
            "the missing version's page",
            "return document.readyState === 'complete' && document.querySelector('main').innerText;",
            WAIT,
        )
        .await;
    assert!(
        said.as_str()
            .is_some_and(|t| t.contains("has no version 9") && t.contains("1 to 2")),
        "{said}"
    );
    browser.close().await;
    app.stop().await;
}
