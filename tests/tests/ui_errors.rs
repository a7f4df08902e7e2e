//! Every way a page can fail shows the error page: its status, what is wrong, the header of
//! whoever is signed in, and links onwards (the dashboard, the page one came from) — for
//! unknown paths, projects, pipelines and runs, refusals, wrong methods and unreadable forms.
//! Programs keep their JSON: an unknown API path is no HTML page. Seen in a real browser at a
//! phone's and a laptop's width too.

use std::time::Duration;

use gantry::access::Role;
use gantry_tests::TestEngine;
use gantry_tests::browser::Browser;
use gantry_tests::ui_session::Session;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

const PIPELINE: &str = "name: hello
stages:
  - name: greet
    steps:
      - run: echo hello
";

/// Checks an answer is the error page with `status`, saying `says`, with `vic`'s header.
fn assert_error_page(what: &str, status: StatusCode, html: &str, expected: StatusCode, says: &str) {
    assert_eq!(status, expected, "{what}: {html}");
    // The text as a browser shows it (the templates escape `/` and `'` too).
    let html = &html.replace("&#x2F;", "/").replace("&#x27;", "'");
    let reason = expected.canonical_reason().unwrap_or_default();
    assert!(
        html.contains(&format!("<h1>{} {reason}</h1>", expected.as_u16())),
        "{what}: not the error page: {html}"
    );
    assert!(html.contains(says), "{what}: does not say `{says}`: {html}");
    assert!(
        html.contains(r#"<span class="user">vic"#),
        "{what}: the header shows who is signed in: {html}"
    );
    assert!(
        html.contains(r#"<a href="/">Dashboard</a>"#),
        "{what}: {html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_a_page_that_says_what_is_wrong_and_leads_on() {
    let app = TestEngine::start().await;
    app.apply(PIPELINE).await;
    let run = app.trigger("hello", &[]).await.run_id;
    app.wait_for_run(run, WAIT).await;
    let base = app.url();
    app.create_user("vic", "vic-password").await;
    app.grant("test", "vic", Role::Viewer).await;
    let vic = Session::sign_in(&base, "vic", "vic-password").await;

    let cases = [
        (
            "an unknown path".to_owned(),
            StatusCode::NOT_FOUND,
            "There is no page at /no/such/page",
        ),
        (
            "/p/test/no-such-pipeline".to_owned(),
            StatusCode::NOT_FOUND,
            "no-such-pipeline",
        ),
        ("/runs/987654".to_owned(), StatusCode::NOT_FOUND, "987654"),
        (
            "/p/elsewhere/hello".to_owned(),
            StatusCode::FORBIDDEN,
            "may not read in project `elsewhere`",
        ),
        (
            "/p/test/members".to_owned(),
            StatusCode::FORBIDDEN,
            "may not manage the project",
        ),
        (
            format!("/runs/{run}/cancel"),
            StatusCode::METHOD_NOT_ALLOWED,
            "use its button",
        ),
    ];
    for (what, expected, says) in cases {
        let path = if what == "an unknown path" {
            "/no/such/page".to_owned()
        } else {
            what.clone()
        };
        let (status, html) = vic.get(&path).await;
        assert_error_page(&what, status, &html, expected, says);
    }
    // A refusal names a way on: signing in as someone else.
    let (_, html) = vic.get("/p/test/members").await;
    assert!(html.contains("Sign in as someone else"), "{html}");

    // A form the engine cannot read (a field missing) is the error page too, not axum's text.
    let answer = vic
        .http
        .post(format!("{base}/tokens"))
        .header(COOKIE, &vic.cookie)
        .form(&[("csrf", vic.csrf.as_str())])
        .send()
        .await
        .expect("POST /tokens");
    let status = answer.status();
    let html = answer.text().await.expect("text");
    assert!(status.is_client_error(), "{status}");
    assert_error_page(
        "a form without its fields",
        status,
        &html,
        status,
        "could not read this request",
    );

    // Programs get JSON, not a page.
    let answer = app
        .http()
        .get(format!("{base}/api/v1/no-such-route"))
        .send()
        .await
        .expect("GET");
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    let kind = answer
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(kind.starts_with("application/json"), "{kind}");

    // In the browser: following a link to a run that is gone leads to the error page, whose
    // "back" link returns to the page the link was on; at both widths it fits the screen.
    let browser = Browser::start("errors").await;
    browser.sign_in(&base, "vic", "vic-password").await;
    for (name, width, height, mobile) in [("laptop", 1280, 800, false), ("phone", 390, 844, true)] {
        browser
            .devtools(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
            )
            .await;
        browser.goto(&format!("{base}/p/test/hello")).await;
        browser
            .wait_for(
                "the pipeline page",
                "return document.readyState === 'complete' && location.pathname === '/p/test/hello';",
                WAIT,
            )
            .await;
        browser
            .js(
                "document.querySelector('main').insertAdjacentHTML('beforeend', '<a id=gone href=\"/runs/987654\">gone</a>');
                 document.getElementById('gone').click();",
                vec![],
            )
            .await;
        browser
            .wait_for(
                "the error page",
                "return document.readyState === 'complete' && location.pathname === '/runs/987654' && document.querySelector('h1') && document.querySelector('h1').textContent === '404 Not Found';",
                WAIT,
            )
            .await;
        let fits = browser
            .js(
                "return document.documentElement.scrollWidth <= window.innerWidth && window.innerWidth === arguments[0];",
                vec![json!(width)],
            )
            .await;
        assert_eq!(fits, json!(true), "the error page fits {width} px");
        browser.screenshot(&format!("{name}-run-gone")).await;
        browser.click("nav.onwards a[href='/p/test/hello']").await;
        browser
            .wait_for(
                "back on the pipeline page",
                "return document.readyState === 'complete' && location.pathname === '/p/test/hello';",
                WAIT,
            )
            .await;
    }
    browser.close().await;
    app.stop().await;
}
