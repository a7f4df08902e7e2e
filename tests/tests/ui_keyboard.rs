//! The web UI without a mouse, in a real browser (headless Chromium): sign in, open a
//! pipeline, start a run, approve it and search its log with the keyboard alone, focus always
//! visible, in the dark theme; and every page fits a 1280 px window and gives every control a
//! name a screen reader can announce.

use std::time::Duration;

use fantoccini::key::Key;
use gantry::store::{RunId, RunStatus};
use gantry_tests::browser::Browser;
use gantry_tests::{StageStatus, TestEngine};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

const PIPELINE: &str = "name: kbd
params:
  greeting:
    default: hello
  loud:
    type: bool
    default: false
  target:
    type: choice
    options: [staging, production]
    default: staging
stages:
  - name: build
    steps:
      - run: |
          echo \"say $GREETING\"
          echo alpha
          echo beta one
          echo gamma
          echo beta two
    env:
      GREETING: ${{ params.greeting }}
  - name: ship
    needs: [build]
    approval:
      message: Ship it?
";

fn key(k: Key) -> String {
    char::from(k).to_string()
}

/// Whether the focused element shows that it has focus (an outline or a box shadow).
async fn focus_is_visible(browser: &Browser) -> bool {
    browser
        .js(
            "const s = getComputedStyle(document.activeElement);
             return (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== 'none';",
            vec![],
        )
        .await
        == json!(true)
}

/// Tabs to `css`, checks its focus is visible, and presses Enter on it.
async fn tab_and_enter(browser: &Browser, css: &str) {
    browser.tab_to(css, 60).await;
    assert!(
        focus_is_visible(browser).await,
        "focus on `{css}` is not visible"
    );
    browser.press(&key(Key::Enter)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_trigger_approve_and_search_with_the_keyboard_alone() {
    let app = TestEngine::start().await;
    app.apply(PIPELINE).await;
    let base = app.url();
    let browser = Browser::start("keyboard").await;

    // The sign-in form starts with its first field focused; Tab goes on to the next.
    browser.goto(&format!("{base}/login")).await;
    browser.tab_to("#name", 0).await;
    browser.press("admin").await;
    browser.press(&key(Key::Tab)).await;
    browser.tab_to("#password", 0).await;
    browser.press(&app.admin_password()).await;
    browser.press(&key(Key::Enter)).await;
    browser
        .wait_for(
            "the dashboard",
            "return location.pathname === '/' && document.readyState === 'complete';",
            WAIT,
        )
        .await;

    // On other pages the first Tab lands on the skip link, which shows itself.
    browser.tab_to("a.skip", 1).await;
    assert!(focus_is_visible(&browser).await, "the skip link shows");
    let shown = browser
        .js(
            "return document.activeElement.getBoundingClientRect().left >= 0;",
            vec![],
        )
        .await;
    assert_eq!(shown, json!(true), "the focused skip link is on screen");

    // The theme toggle works from the keyboard and is remembered (headless Chromium starts
    // light): the rest of this test runs dark.
    let background = "return getComputedStyle(document.body).backgroundColor;";
    assert_eq!(browser.js(background, vec![]).await, "rgb(251, 251, 252)");
    tab_and_enter(&browser, "#theme-toggle").await;
    assert_eq!(browser.js(background, vec![]).await, "rgb(15, 18, 22)");
    browser.screenshot("0-dashboard-dark").await;

    // Dashboard → pipeline → the trigger form, filled in by keyboard.
    tab_and_enter(&browser, "a[href='/p/test/kbd']").await;
    browser
        .wait_for(
            "the pipeline page",
            "return location.pathname === '/p/test/kbd' && document.readyState === 'complete';",
            WAIT,
        )
        .await;
    assert_eq!(
        browser.js(background, vec![]).await,
        "rgb(15, 18, 22)",
        "the next page is dark too"
    );
    browser.tab_to("#param-greeting", 30).await;
    browser.press(&(key(Key::End) + "-by-keys")).await;
    browser.tab_to("#param-loud", 5).await;
    browser.press(" ").await;
    browser.tab_to("#param-target", 5).await;
    browser.press(&key(Key::Down)).await;
    browser.screenshot("1-form").await;
    tab_and_enter(&browser, "#trigger-form button[type=submit]").await;
    browser
        .wait_for(
            "the run page",
            "return location.pathname.startsWith('/runs/') && document.readyState === 'complete';",
            WAIT,
        )
        .await;
    let url = browser.url().await;
    let run = RunId(
        url.rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no run id in {url}")),
    );
    let row = gantry::store::runs::get(app.pool(), run)
        .await
        .expect("run");
    assert_eq!(
        row.params,
        json!({"greeting": "hello-by-keys", "loud": "true", "target": "production"}),
        "what was typed, toggled and chosen"
    );

    // Approve with the keyboard once the button shows.
    app.wait_for_stage(run, "ship", WAIT, |s| {
        s.status == StageStatus::WaitingApproval
    })
    .await;
    browser
        .wait_for(
            "the approve button",
            "const b = [...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Approve ship'); return b && b.offsetParent !== null;",
            WAIT,
        )
        .await;
    browser.screenshot("2-approve").await;
    tab_and_enter(&browser, "form[action$='/stages/ship/approve'] button").await;
    let (row, _) = app.wait_for_run(run, WAIT).await;
    assert_eq!(row.status, RunStatus::Succeeded, "{:?}", row.reason);

    // `/` jumps to the log search; Enter moves to the next match.
    browser
        .wait_for(
            "the succeeded run page",
            "return document.querySelector('#run-status .badge.s-succeeded') && document.readyState === 'complete';",
            WAIT,
        )
        .await;
    // Show build's log: its node in the graph is a link reached by Tab.
    tab_and_enter(&browser, ".graph a[href$='#stage-0']").await;
    browser
        .wait_for(
            "build's log",
            "return [...document.querySelectorAll('#log-rows .row .tx')].some(r => r.textContent === 'say hello-by-keys');",
            WAIT,
        )
        .await;
    browser.js("document.activeElement.blur();", vec![]).await;
    browser.press("/").await;
    browser.tab_to("#log-search", 0).await;
    browser.press("beta").await;
    browser
        .wait_for(
            "the matches of beta",
            "return document.getElementById('log-matches').textContent === '1 of 2' && [...document.querySelectorAll('#log-rows .row.sel .tx')].some(r => r.textContent === 'beta one');",
            WAIT,
        )
        .await;
    browser.press(&key(Key::Enter)).await;
    browser
        .wait_for(
            "the second match selected",
            "return document.getElementById('log-matches').textContent === '2 of 2' && [...document.querySelectorAll('#log-rows .row.sel .tx')].some(r => r.textContent === 'beta two');",
            WAIT,
        )
        .await;
    browser.screenshot("3-search").await;
    browser.close().await;
    app.stop().await;
}

/// Every visible form control on the page with no accessible name: no `<label for>`, no
/// wrapping label, no `aria-label` / `aria-labelledby`, and (for buttons and links) no text.
const UNNAMED: &str = "
    const named = e => (e.labels && [...e.labels].some(l => l.textContent.trim()))
        || (e.getAttribute('aria-label') || '').trim()
        || (e.getAttribute('aria-labelledby') || '').split(' ').some(id => document.getElementById(id))
        || (['BUTTON', 'A'].includes(e.tagName) && e.textContent.trim())
        || (e.tagName === 'INPUT' && ['submit', 'button'].includes(e.type) && e.value.trim());
    return [...document.querySelectorAll('input, select, textarea, button, a[href]')]
        .filter(e => e.type !== 'hidden' && !named(e))
        .map(e => e.outerHTML.slice(0, 120));";

async fn unnamed_controls(browser: &Browser, url: &str) -> Vec<String> {
    browser.goto(url).await;
    browser
        .wait_for(
            "the page",
            "return document.readyState === 'complete';",
            WAIT,
        )
        .await;
    // The live parts of the run page fill in after load; give them their first update.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Fits a laptop screen (the browser window is 1280 px wide): no sideways scrolling.
    let overflow = browser
        .js(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await;
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "{url} is {overflow} px wider than the window"
    );
    let found: Value = browser.js(UNNAMED, vec![]).await;
    let fields = browser
        .js(
            "return document.querySelectorAll('input:not([type=hidden]), select, textarea').length;",
            vec![],
        )
        .await;
    eprintln!("{url}: {fields} fields");
    found
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_names_its_controls_and_fits_a_laptop_screen() {
    let app = TestEngine::start().await;
    app.apply(PIPELINE).await;
    let run = app.trigger("kbd", &[]).await.run_id;
    app.wait_for_stage(run, "ship", WAIT, |s| {
        s.status == StageStatus::WaitingApproval
    })
    .await;
    let base = app.url();
    let browser = Browser::start("labels").await;
    let mut problems = Vec::new();
    for control in unnamed_controls(&browser, &format!("{base}/login")).await {
        problems.push(format!("/login: {control}"));
    }
    browser.sign_in(&base, "admin", &app.admin_password()).await;
    let pages = [
        "/".to_owned(),
        "/p/test/kbd".to_owned(),
        format!("/runs/{run}"),
        "/p/test/secrets".to_owned(),
        "/p/test/deliveries".to_owned(),
        "/p/test/deployments".to_owned(),
        "/p/test/members".to_owned(),
        "/tokens".to_owned(),
    ];
    for page in &pages {
        for control in unnamed_controls(&browser, &format!("{base}{page}")).await {
            problems.push(format!("{page}: {control}"));
        }
    }
    assert!(
        problems.is_empty(),
        "controls without a name:\n{}",
        problems.join("\n")
    );
    // The check itself finds an unnamed field.
    browser
        .js(
            "document.querySelector('main').insertAdjacentHTML('beforeend', '<input id=stray>');",
            vec![],
        )
        .await;
    let found = browser.js(UNNAMED, vec![]).await;
    assert_eq!(found, json!(["<input id=\"stray\">"]));
    browser.close().await;
    app.stop().await;
}
