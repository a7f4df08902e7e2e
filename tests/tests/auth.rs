//! Credentials under pressure: token lifetimes out of range are refused with the range, repeated
//! wrong passwords meet a growing wait (per user and per address), and a password change ends
//! the user's web sessions.

use gantry_tests::TestEngine;
use gantry_tests::ui_session::Session;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_lifetime_out_of_range_is_refused_with_the_range() {
    let app = TestEngine::start().await;
    let url = format!("{}/api/v1/tokens", app.url());
    for days in [0_u64, 3651, 4_294_967_295] {
        let answer = app
            .http()
            .post(&url)
            .json(&json!({"name": format!("t{days}"), "expires_in_days": days}))
            .send()
            .await
            .expect("POST /tokens");
        assert_eq!(
            answer.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{days} days"
        );
        let body: Value = answer.json().await.expect("the JSON error");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("1 to 3650"), "{days}: {error}");
    }
    let answer = app
        .http()
        .post(&url)
        .json(&json!({"name": "year", "expires_in_days": 365}))
        .send()
        .await
        .expect("POST /tokens");
    assert_eq!(answer.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_meet_a_growing_wait() {
    let app = TestEngine::start().await;
    app.create_user("alice", "alice-password").await;
    let base = app.url();
    for i in 0..5 {
        let (status, _) = Session::try_sign_in(&base, "alice", "wrong guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // Now even the right password waits: the attempt is refused before it is checked.
    let (status, retry) = Session::try_sign_in(&base, "alice", "alice-password").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = retry
        .and_then(|r| r.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=900).contains(&retry), "{retry}");
    // The address is held back too: another user's guess from it waits as well.
    app.create_user("bob", "bob-password").await;
    let (status, _) = Session::try_sign_in(&base, "bob", "bob-password").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_the_users_sessions() {
    let app = TestEngine::start().await;
    let token = app.create_user("carol", "carol-password").await;
    let base = app.url();
    let session = Session::sign_in(&base, "carol", "carol-password").await;
    assert_eq!(session.get("/tokens").await.0, StatusCode::OK);
    let changed = reqwest::Client::new()
        .put(format!("{base}/api/v1/users/carol/password"))
        .bearer_auth(&token)
        .body("carol-new-password")
        .send()
        .await
        .expect("PUT password");
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let (status, _) = session.get("/tokens").await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the old session leads to the sign-in form"
    );
    // Her API token is a credential of its own and still works (docs/access.md).
    let me = reqwest::Client::new()
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /me");
    assert_eq!(me.status(), StatusCode::OK);
    let (status, _) = Session::try_sign_in(&base, "carol", "carol-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old password is gone");
    Session::sign_in(&base, "carol", "carol-new-password").await;
}
