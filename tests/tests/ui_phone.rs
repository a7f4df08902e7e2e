//! Every page of the web UI at a phone's size (390×844 CSS px, as recent iPhones show pages) and
//! a laptop's (1280×800), in a real browser (headless Chromium told by DevTools to act as that
//! device): no page scrolls sideways, and a waiting approval's Approve and Reject buttons are
//! wholly on screen. The pages carry long names, values, digests and tokens, as real ones do.
//! Screenshots of every page at both sizes are kept (`<size>-<page>.png`).

use std::time::Duration;

use gantry::run::{RunContext, TriggerRequest};
use gantry::store::RunId;
use gantry_tests::browser::Browser;
use gantry_tests::{StageStatus, TestEngine};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

const PIPELINE: &str = "name: release-candidate-of-the-storefront
params:
  target:
    default: a-rather-long-default-value-for-the-deployment-target-parameter
stages:
  - name: build-the-application-and-its-documentation
    steps:
      - run: |
          mkdir -p out
          head -c 2048 /dev/zero > out/storefront-bundle-with-a-long-file-name.tar
          echo 'a long log line that goes on and on and on and on and on and on and on and on and on and on and on and on'
    artifacts: [out/storefront-bundle-with-a-long-file-name.tar]
  - name: ship-to-production-in-eu-west
    needs: [build-the-application-and-its-documentation]
    approval:
      message: Ship the storefront release candidate to production in eu-west now?
";

/// A device to look at the pages as.
struct Screen {
    name: &'static str,
    width: u32,
    height: u32,
    mobile: bool,
}

const SCREENS: [Screen; 2] = [
    Screen {
        name: "laptop",
        width: 1280,
        height: 800,
        mobile: false,
    },
    Screen {
        name: "phone",
        width: 390,
        height: 844,
        mobile: true,
    },
];

async fn emulate(browser: &Browser, screen: &Screen) {
    browser
        .devtools(
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": screen.width,
                "height": screen.height,
                "deviceScaleFactor": 1,
                "mobile": screen.mobile,
            }),
        )
        .await;
}

/// Opens `path`, waits for it (and for `ready`, a script the live parts need), checks that it
/// is exactly as wide as the screen, and keeps a screenshot. Returns the problems found.
async fn look_at(
    browser: &Browser,
    base: &str,
    screen: &Screen,
    (name, path, ready): (&str, &str, &str),
) -> Vec<String> {
    browser.goto(&format!("{base}{path}")).await;
    browser
        .wait_for(
            &format!("{path} at {} px", screen.width),
            &format!("return document.readyState === 'complete' && ({ready});"),
            WAIT,
        )
        .await;
    let mut problems = Vec::new();
    if let Some(problem) = overflow(browser, screen.width).await {
        problems.push(format!("{path}: {problem}"));
    }
    browser.screenshot(&format!("{}-{name}", screen.name)).await;
    problems
}

/// What is wrong with the page's width on a screen `width` px wide, if anything: the layout
/// is not that wide (a mobile browser widens it, zooming out, when the content is wider than
/// the viewport tag allows), or the page is wider than the window (it scrolls sideways).
async fn overflow(browser: &Browser, width: u32) -> Option<String> {
    let sizes = browser
        .js(
            "return [window.innerWidth, document.documentElement.scrollWidth];",
            vec![],
        )
        .await;
    if sizes[0] != json!(width) {
        return Some(format!(
            "the layout is {} px wide, not {width}: {}",
            sizes[0],
            widest(browser, width).await
        ));
    }
    if sizes[1].as_i64() > sizes[0].as_i64() {
        return Some(format!(
            "at {width} px the page is {} px wide: {}",
            sizes[1],
            widest(browser, width).await
        ));
    }
    None
}

/// The elements sticking out past the right edge (for the failure message).
async fn widest(browser: &Browser, width: u32) -> Value {
    browser
        .js(
            "const w = arguments[0] + 0.5;
             return [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > w)
                .filter(e => !e.parentElement || e.parentElement.getBoundingClientRect().right <= w)
                .slice(0, 5).map(e => e.outerHTML.slice(0, 100));",
            vec![json!(width)],
        )
        .await
}

/// Where the button whose text is `text` is, once scrolled to: whether it is wholly inside
/// the viewport of a screen `width` px wide, and its box (for the message).
async fn button_on_screen(browser: &Browser, text: &str, width: u32) -> (bool, Value) {
    let found = browser
        .js(
            "const b = [...document.querySelectorAll('button')].find(b => b.textContent.trim() === arguments[0]);
             if (!b) return [false, 'no such button'];
             b.scrollIntoView({block: 'center', inline: 'nearest'});
             const r = b.getBoundingClientRect();
             const inside = r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0
                 && r.right <= Math.min(window.innerWidth, arguments[1]) && r.bottom <= window.innerHeight;
             return [inside, [r.left, r.top, r.right, r.bottom, window.innerWidth, window.innerHeight]];",
            vec![json!(text), json!(width)],
        )
        .await;
    (found[0] == json!(true), found[1].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_a_phone_and_a_laptop_with_approve_and_reject_on_screen() {
    let app = TestEngine::start().await;
    let pipeline = app.apply(PIPELINE).await;
    let triggered = gantry::run::trigger(
        app.engine(),
        "test",
        &pipeline,
        "manual",
        TriggerRequest {
            params: [(
                "target".to_owned(),
                "eu-west-production-cluster-with-a-name-longer-than-a-phone-is-wide".to_owned(),
            )]
            .into(),
            context: Some(RunContext {
                event: "push".into(),
                branch: Some("feature/a-branch-name-as-long-as-the-ones-people-really-push".into()),
                commit_sha: Some("9f2c4e1b7a6d5c3e8f0a1b2c3d4e5f60718293a4".into()),
                // A subject as long as real ones get, with a URL that cannot break at a space.
                commit_message: Some("Make the storefront's checkout page readable on phones (see https://example.com/issues/storefront/checkout-layout-on-narrow-screens-and-tablets)".into()),
                commit_author: Some("Alexandra Konstantinopoulou-Whitfield".into()),
                ..RunContext::default()
            }),
        },
    )
    .await
    .expect("run triggers");
    let run: RunId = triggered.run_id;
    let ship = "ship-to-production-in-eu-west";
    app.wait_for_stage(run, ship, WAIT, |s| {
        s.status == StageStatus::WaitingApproval
    })
    .await;
    let base = app.url();
    let browser = Browser::start("fit").await;

    // Content the pages list: a secret and an API token (shown once, long) through their forms.
    browser.sign_in(&base, "admin", &app.admin_password()).await;
    browser.goto(&format!("{base}/p/test/secrets")).await;
    browser
        .fill("#secret-name", "A_SECRET_WITH_A_NAME_LONGER_THAN_USUAL")
        .await;
    browser.fill("#secret-value", "s3cr3t-value").await;
    browser
        .click("form[action='/p/test/secrets'] button[type=submit]")
        .await;
    browser
        .wait_for(
            "the saved secret",
            "return document.querySelector('p.ok') !== null;",
            WAIT,
        )
        .await;

    // The dashboard lists the project's recent runs: which pipeline and number, the branch,
    // short commit, its subject and author, what triggered it.
    browser.goto(&format!("{base}/")).await;
    let recent = browser
        .wait_for(
            "the recent runs",
            "const t = document.querySelector('table.runs'); return t && t.innerText;",
            WAIT,
        )
        .await;
    let recent = recent.as_str().unwrap_or_default();
    for expected in [
        "release-candidate-of-the-storefront #1",
        "feature/a-branch-name-as-long-as-the-ones-people-really-push",
        "9f2c4e1b",
        "Make the storefront's checkout page readable on phones",
        "Alexandra Konstantinopoulou-Whitfield",
        "manual",
    ] {
        assert!(recent.contains(expected), "{expected} in {recent}");
    }

    let approve = format!("Approve {ship}");
    let reject = format!("Reject {ship}");
    let run_ready = format!(
        "[...document.querySelectorAll('button')].some(b => b.textContent.trim() === '{approve}' && b.offsetParent !== null)"
    );
    let pipeline_path = format!("/p/test/{pipeline}");
    let run_path = format!("/runs/{run}");
    let pages: Vec<(&str, &str, &str)> = vec![
        ("dashboard", "/", "true"),
        ("pipeline", &pipeline_path, "true"),
        ("run-waiting", &run_path, &run_ready),
        ("secrets", "/p/test/secrets", "true"),
        ("deliveries", "/p/test/deliveries", "true"),
        ("deployments", "/p/test/deployments", "true"),
        ("members", "/p/test/members", "true"),
        ("tokens", "/tokens", "true"),
        ("error-404", "/p/test/no-such-pipeline", "true"),
        ("error-unknown-path", "/no/such/page/at/all", "true"),
    ];
    let mut problems = Vec::new();
    for screen in &SCREENS {
        emulate(&browser, screen).await;
        for page in &pages {
            problems.extend(look_at(&browser, &base, screen, *page).await);
        }
        // The waiting approval's buttons, wholly on screen.
        browser.goto(&format!("{base}{run_path}")).await;
        browser
            .wait_for("the approve button", &format!("return {run_ready};"), WAIT)
            .await;
        for text in [&approve, &reject] {
            let (inside, rect) = button_on_screen(&browser, text, screen.width).await;
            if !inside {
                problems.push(format!(
                    "at {} px, `{text}` is not wholly on screen: {rect}",
                    screen.width
                ));
            }
        }
        browser
            .screenshot(&format!("{}-run-approve", screen.name))
            .await;
        // A new API token, shown once (a long unbroken code).
        browser.goto(&format!("{base}/tokens")).await;
        browser
            .fill(
                "#token-name",
                &format!("a token made on the {}", screen.name),
            )
            .await;
        browser
            .click("form[action='/tokens'] button[type=submit]")
            .await;
        browser
            .wait_for(
                "the new token",
                "return document.getElementById('new-token') !== null;",
                WAIT,
            )
            .await;
        if let Some(problem) = overflow(&browser, screen.width).await {
            problems.push(format!("the new token's page: {problem}"));
        }
        browser
            .screenshot(&format!("{}-tokens-created", screen.name))
            .await;
    }
    // Signed out: the sign-in form at both sizes.
    browser.click("header form[action='/logout'] button").await;
    browser
        .wait_for(
            "the sign-in form",
            "return location.pathname === '/login' && document.readyState === 'complete';",
            WAIT,
        )
        .await;
    for screen in &SCREENS {
        emulate(&browser, screen).await;
        problems.extend(look_at(&browser, &base, screen, ("login", "/login", "true")).await);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The check itself finds a page that is too wide, and a button off screen (styled
    // through the DOM: the pages' Content-Security-Policy refuses inline styles).
    browser
        .js(
            "const main = document.querySelector('main');
             const wide = document.createElement('div');
             wide.style.width = '600px';
             wide.textContent = 'wide';
             const off = document.createElement('button');
             off.textContent = 'Off';
             off.style.position = 'relative';
             off.style.left = '500px';
             main.append(wide, off);",
            vec![],
        )
        .await;
    assert!(
        overflow(&browser, 390).await.is_some(),
        "a 600 px element makes the phone page too wide"
    );
    assert!(!button_on_screen(&browser, "Off", 390).await.0);
    browser.close().await;
    app.stop().await;
}
