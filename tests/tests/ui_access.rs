//! Who may do what through the web UI: every role (and anonymous, and no role) against every
//! form, signed in through the real sign-in form with a real session cookie; forms without the
//! session's CSRF token are refused; pages show only the buttons the role may use.

use std::time::Duration;

use gantry::access::{Action, Role};
use gantry::store::RunId;
use gantry_tests::ui_session::Session;
use gantry_tests::{StageStatus, TestEngine};
use reqwest::StatusCode;

const WAIT: Duration = Duration::from_secs(60);

const GATED: &str = "name: gated
params:
  who:
    default: nobody
stages:
  - name: gate
    approval: true
";

async fn waiting_run(app: &TestEngine) -> RunId {
    let run = app.trigger("gated", &[]).await.run_id;
    app.wait_for_stage(run, "gate", WAIT, |s| {
        s.status == StageStatus::WaitingApproval
    })
    .await;
    run
}

/// Does `action` through its form (or page) and returns the status.
async fn attempt(app: &TestEngine, session: &Session, action: Action) -> Option<StatusCode> {
    Some(match action {
        Action::Read => {
            // Every page of the project answers a reader alike.
            let run = session
                .get(&format!("/runs/{}", waiting_run(app).await))
                .await
                .0;
            for page in ["/p/test/gated", "/p/test/deliveries", "/p/test/deployments"] {
                assert_eq!(session.get(page).await.0, run, "{page}");
            }
            run
        }
        Action::Trigger => {
            session
                .post("/p/test/gated/trigger", &[("param.who", "me")])
                .await
                .0
        }
        Action::Cancel => {
            session
                .post(&format!("/runs/{}/cancel", waiting_run(app).await), &[])
                .await
                .0
        }
        Action::Rerun => {
            let run = waiting_run(app).await;
            gantry::run::cancel(app.engine(), run, None, None)
                .await
                .expect("cancel");
            app.wait_for_run(run, WAIT).await;
            session
                .post(&format!("/runs/{run}/rerun"), &[("failed_only", "true")])
                .await
                .0
        }
        Action::Approve => {
            let run = waiting_run(app).await;
            session
                .post(&format!("/runs/{run}/stages/gate/approve"), &[])
                .await
                .0
        }
        Action::ListSecrets => session.get("/p/test/secrets").await.0,
        Action::WriteSecret => {
            session
                .post(
                    "/p/test/secrets",
                    &[("name", "API_KEY"), ("value", "v4lue")],
                )
                .await
                .0
        }
        Action::ManageProject => {
            // The members page, adding a member, removing them again, and the settings
            // form (anonymous read stays off): all or nothing.
            let page = session.get("/p/test/members").await.0;
            let (set, _) = session
                .post(
                    "/p/test/members",
                    &[("user", "outsider"), ("role", "developer")],
                )
                .await;
            let (removed, _) = session.post("/p/test/members/outsider/remove", &[]).await;
            let (settings, _) = session.post("/p/test/settings", &[]).await;
            if set == StatusCode::SEE_OTHER {
                assert_eq!(page, StatusCode::OK);
                assert_eq!(removed, StatusCode::SEE_OTHER);
                assert_eq!(settings, StatusCode::SEE_OTHER);
            } else {
                assert_ne!(page, StatusCode::OK);
                assert_eq!(removed, set);
                assert_eq!(settings, set);
            }
            set
        }
        // No UI form for applying pipelines: that is the CLI's and the API's (from Git, the
        // webhooks'). The rollback form needs a cluster: ui_deploy.rs tries it.
        Action::EditPipeline | Action::Deploy => return None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_may_use_the_forms_its_role_allows_and_no_others() {
    let app = TestEngine::start().await;
    app.apply(GATED).await;
    let base = app.url();
    let mut everyone: Vec<(String, Option<Role>, Session)> =
        vec![("anonymous".into(), None, Session::anonymous(&base).await)];
    app.create_user("nobody", "nobody-password").await;
    app.create_user("outsider", "outsider-password").await;
    everyone.push((
        "no role".into(),
        None,
        Session::sign_in(&base, "nobody", "nobody-password").await,
    ));
    for role in Role::ALL {
        let name = format!("ui-{}", role.as_str());
        app.create_user(&name, "role-password").await;
        app.grant("test", &name, role).await;
        everyone.push((
            name.clone(),
            Some(role),
            Session::sign_in(&base, &name, "role-password").await,
        ));
    }
    for (who, role, session) in &everyone {
        for action in Action::ALL {
            let Some(status) = attempt(&app, session, action).await else {
                continue;
            };
            let allowed = role.is_some_and(|r| r >= action.least_role());
            let signed_in = !session.cookie.is_empty();
            let ok = if allowed {
                status == StatusCode::OK || status == StatusCode::SEE_OTHER
            } else if !signed_in && matches!(action, Action::Read | Action::ListSecrets) {
                // A page that needs signing in sends anonymous visitors to the form.
                status == StatusCode::SEE_OTHER
            } else if !signed_in {
                status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
            } else {
                status == StatusCode::FORBIDDEN
            };
            assert!(ok, "{who} {action:?}: {status}");
        }
    }

    // What a viewer's run page offers: nothing to press; a developer's: cancel, not approve.
    let run = waiting_run(&app).await;
    let page = |name: &str| {
        everyone
            .iter()
            .find(|(who, _, _)| who == name)
            .map(|(_, _, s)| s)
            .expect("session")
    };
    let (_, viewer) = page("ui-viewer").get(&format!("/runs/{run}")).await;
    assert!(!viewer.contains("Cancel run") && !viewer.contains("Approve gate"));
    assert!(viewer.contains("You may not decide this approval"));
    let (_, developer) = page("ui-developer").get(&format!("/runs/{run}")).await;
    assert!(developer.contains("Cancel run") && !developer.contains("Approve gate"));
    let (_, maintainer) = page("ui-maintainer").get(&format!("/runs/{run}")).await;
    assert!(maintainer.contains("Approve gate") && maintainer.contains("Reject gate"));
    let (_, viewer_pipeline) = page("ui-viewer").get("/p/test/gated").await;
    assert!(!viewer_pipeline.contains("trigger-form"));

    // A form without the session's CSRF token (or with another session's) is refused.
    let admin = page("ui-admin");
    let (status, _) = admin
        .post_raw(&format!("/runs/{run}/cancel"), &[("csrf", "forged")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = admin
        .post_raw(
            &format!("/runs/{run}/cancel"),
            &[("csrf", page("ui-maintainer").csrf.as_str())],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = admin.post_raw(&format!("/runs/{run}/cancel"), &[]).await;
    assert_ne!(status, StatusCode::SEE_OTHER);
    // The secret set through the form is listed by name; its value appears on no page.
    let (_, secrets) = admin.get("/p/test/secrets").await;
    assert!(secrets.contains("API_KEY") && !secrets.contains("v4lue"));
    // The members page's forms really grant and take away: a new member reads, a developer
    // triggers, a removed one is refused; anonymous read opens the project to anyone.
    let outsider = Session::sign_in(&base, "outsider", "outsider-password").await;
    assert_eq!(outsider.get("/p/test/gated").await.0, StatusCode::FORBIDDEN);
    let (status, location) = admin
        .post(
            "/p/test/members",
            &[("user", "outsider"), ("role", "viewer")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, members) = admin.get(&location).await;
    assert!(members.contains("outsider is now viewer."), "{members}");
    assert!(members.contains(r#"aria-label="Role of outsider""#));
    assert_eq!(outsider.get("/p/test/gated").await.0, StatusCode::OK);
    let (status, _) = outsider.post("/p/test/gated/trigger", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a viewer does not trigger");
    admin
        .post(
            "/p/test/members",
            &[("user", "outsider"), ("role", "developer")],
        )
        .await;
    let (status, location) = outsider.post("/p/test/gated/trigger", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "a developer triggers");
    assert!(location.starts_with("/runs/"), "{location}");
    let (status, _) = admin.post("/p/test/members/outsider/remove", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(outsider.get("/p/test/gated").await.0, StatusCode::FORBIDDEN);
    let (status, _) = admin
        .post("/p/test/members", &[("user", "ghost"), ("role", "viewer")])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no such user");
    let (status, _) = admin
        .post(
            "/p/test/members",
            &[("user", "outsider"), ("role", "owner")],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "no such role");
    let anonymous = Session::anonymous(&base).await;
    assert_eq!(
        anonymous.get(&format!("/runs/{run}")).await.0,
        StatusCode::SEE_OTHER
    );
    admin
        .post("/p/test/settings", &[("anonymous_read", "true")])
        .await;
    assert_eq!(
        anonymous.get(&format!("/runs/{run}")).await.0,
        StatusCode::OK
    );
    admin.post("/p/test/settings", &[]).await;
    assert_eq!(
        anonymous.get(&format!("/runs/{run}")).await.0,
        StatusCode::SEE_OTHER
    );

    // Signing out ends the session.
    let (status, _) = admin.post("/logout", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = admin.get("/tokens").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "back to the sign-in form");
    app.stop().await;
}
