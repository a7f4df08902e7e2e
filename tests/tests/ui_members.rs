//! Adding someone without an account from a project's members page, in a real browser at a
//! phone's width: the page offers to create the account, a project admin (not an engine admin)
//! creates it, the initial password is shown once, and its new owner signs in with it and
//! makes it their own. Nobody below a project admin may create accounts this way.

use std::time::Duration;

use gantry::access::Role;
use gantry_tests::TestEngine;
use gantry_tests::browser::Browser;
use gantry_tests::ui_session::Session;
use reqwest::StatusCode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

const PIPELINE: &str = "name: hello
stages:
  - name: greet
    steps:
      - run: echo hello
";

async fn emulate(browser: &Browser, width: u32, height: u32, mobile: bool) {
    browser
        .devtools(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
}

/// Screenshots of the page as it is, at the laptop's size and then the phone's.
async fn screenshots(browser: &Browser, name: &str) {
    emulate(browser, 1280, 800, false).await;
    browser.screenshot(&format!("laptop-{name}")).await;
    emulate(browser, 390, 844, true).await;
    browser.screenshot(&format!("phone-{name}")).await;
}

async fn wait_for_page(browser: &Browser, what: &str, script: &str) {
    browser
        .wait_for(
            what,
            &format!("return document.readyState === 'complete' && ({script});"),
            WAIT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_admin_creates_an_account_for_a_new_member_who_signs_in_with_it() {
    let app = TestEngine::start().await;
    app.apply(PIPELINE).await;
    let base = app.url();
    app.create_user("pat", "pat-password").await;
    app.grant("test", "pat", Role::Admin).await;
    app.create_user("dev", "dev-password").await;
    app.grant("test", "dev", Role::Developer).await;

    let browser = Browser::start("members").await;
    emulate(&browser, 390, 844, true).await;
    browser.sign_in(&base, "pat", "pat-password").await;
    browser.goto(&format!("{base}/p/test/members")).await;
    browser.fill("#member-user", "newbie").await;
    browser
        .js(
            "document.getElementById('member-role').value = 'developer';",
            vec![],
        )
        .await;
    browser.click_button("Add member").await;
    // No such user: the page says so and offers to create the account, with the same role.
    wait_for_page(
        &browser,
        "the offer",
        "document.getElementById('offer-h') !== null",
    )
    .await;
    let offer = browser
        .js(
            "return document.getElementById('offer-h').closest('section').innerText;",
            vec![],
        )
        .await;
    assert!(
        offer
            .as_str()
            .is_some_and(|t| t.contains("There is no user newbie")),
        "{offer}"
    );
    assert!(
        gantry::store::access::user_by_name(app.pool(), "newbie")
            .await
            .is_err(),
        "nothing is created before the admin says so"
    );
    screenshots(&browser, "members-offer").await;
    browser
        .click_button("Create newbie and add as developer")
        .await;
    wait_for_page(
        &browser,
        "the new password",
        "document.getElementById('new-password') !== null",
    )
    .await;
    let password = browser
        .js(
            "return document.getElementById('new-password').textContent.trim();",
            vec![],
        )
        .await
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        password.len() >= 16,
        "a strong initial password: {password:?}"
    );
    let listed = browser
        .js(
            "const row = document.getElementById('member-newbie');
             return row && row.querySelector('select').value;",
            vec![],
        )
        .await;
    assert_eq!(
        listed,
        json!("developer"),
        "newbie is listed as a developer"
    );
    screenshots(&browser, "members-created").await;
    let newbie = gantry::store::access::user_by_name(app.pool(), "newbie")
        .await
        .expect("the account exists")
        .user;
    assert!(!newbie.is_admin, "a project admin creates plain users only");
    // Shown once: the members page does not show it again.
    browser.goto(&format!("{base}/p/test/members")).await;
    wait_for_page(&browser, "the members page", "true").await;
    let again = browser
        .js(
            "return document.body.innerText.includes(arguments[0]);",
            vec![json!(password)],
        )
        .await;
    assert_eq!(again, json!(false), "the password is not shown twice");

    // Only a project admin may create accounts: a developer's form is refused, and nothing is
    // created.
    let dev = Session::sign_in(&base, "dev", "dev-password").await;
    let (status, _) = dev
        .post(
            "/p/test/members/create",
            &[("user", "intruder"), ("role", "admin")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        gantry::store::access::user_by_name(app.pool(), "intruder")
            .await
            .is_err()
    );

    // newbie signs in with the password they were given and sees the project.
    browser.click("header form[action='/logout'] button").await;
    wait_for_page(
        &browser,
        "the sign-in form",
        "location.pathname === '/login'",
    )
    .await;
    browser.sign_in(&base, "newbie", &password).await;
    wait_for_page(
        &browser,
        "newbie's dashboard",
        "location.pathname === '/' && document.querySelector(\"a[href='/p/test/hello']\") !== null",
    )
    .await;
    // ... and makes the password their own: every session ends, the new one signs in, the
    // old one no longer does.
    browser.goto(&format!("{base}/tokens")).await;
    browser.fill("#password-current", &password).await;
    browser.fill("#password-new", "newbie's own password").await;
    browser
        .fill("#password-repeat", "newbie's own password")
        .await;
    screenshots(&browser, "tokens-password").await;
    emulate(&browser, 390, 844, true).await;
    browser.click_button("Change password").await;
    wait_for_page(
        &browser,
        "the sign-in form after the change",
        "location.pathname === '/login' && document.body.innerText.includes('Your password was changed')",
    )
    .await;
    let (old, _) = Session::try_sign_in(&base, "newbie", &password).await;
    assert_eq!(
        old,
        StatusCode::UNAUTHORIZED,
        "the initial password is gone"
    );
    // The sign-in form the change led to brings newbie back to where they were.
    browser.fill("#name", "newbie").await;
    browser.fill("#password", "newbie's own password").await;
    browser
        .click("form[action='/login'] button[type=submit]")
        .await;
    wait_for_page(
        &browser,
        "the tokens page again",
        "location.pathname === '/tokens'",
    )
    .await;

    // A wrong current password changes nothing, and says so.
    browser.fill("#password-current", "not my password").await;
    browser.fill("#password-new", "yet another password").await;
    browser
        .fill("#password-repeat", "yet another password")
        .await;
    browser.click_button("Change password").await;
    wait_for_page(
        &browser,
        "the refusal",
        "document.body.innerText.includes('the current password is wrong')",
    )
    .await;
    let (status, _) = Session::try_sign_in(&base, "newbie", "newbie's own password").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the password is unchanged");
    browser.close().await;
    app.stop().await;
}
