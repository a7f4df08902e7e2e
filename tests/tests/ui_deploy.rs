//! The deployments page against the Kubernetes stand-in (tests/src/kube: a local API server
//! speaking the real wire protocol, with a Deployment controller that makes ReplicaSets and
//! revisions): a deploy stage's revisions listed newest first on the deployments page and on
//! the run page, a rollback from the browser putting the old image back as a new revision,
//! and who may see and press the button (and use the API's history and undo routes).

use std::time::Duration;

use gantry::access::{Action, Role};
use gantry_tests::browser::Browser;
use gantry_tests::kube::StandIn;
use gantry_tests::kube::store::Kind;
use gantry_tests::ui_session::Session;
use gantry_tests::{TestEngine, assert_succeeded};
use reqwest::StatusCode;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

const PIPELINE: &str = "name: ship
params:
  image:
    default: web:2
stages:
  - name: rollout
    deploy:
      namespace: demo
      deployment: web
      image: ${{ params.image }}
      timeout: 30s
      change_cause: gantry run ${{ run.number }}
";

fn web_deployment() -> Value {
    json!({
        "metadata": {"name": "web", "annotations": {"kubernetes.io/change-cause": "first install"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]}
            }
        }
    })
}

/// A stand-in with `demo/web` at revision 1 (`web:1`), and an engine whose `ship` pipeline
/// has rolled it out to revision 2 (`web:2`).
async fn deployed() -> (StandIn, TestEngine, gantry::store::RunId) {
    let standin = StandIn::for_tests().await;
    standin.create(Kind::Deployment, "demo", web_deployment());
    standin
        .wait_for("the first revision", Kind::ReplicaSet, LIMIT, |sets| {
            sets.len() == 1
        })
        .await;
    let engine = standin.engine().await;
    engine.apply(PIPELINE).await;
    let run = engine.trigger("ship", &[]).await;
    let (row, _) = engine.wait_for_run(run.run_id, LIMIT).await;
    assert_succeeded(&row);
    assert_eq!(standin.deployment_image("demo", "web"), "web:2");
    (standin, engine, run.run_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployments_page_lists_revisions_and_rolls_back_from_the_browser() {
    let (standin, app, run) = deployed().await;
    let base = app.url();
    let browser = Browser::start("deployments").await;
    browser.sign_in(&base, "admin", &app.admin_password()).await;

    // The pipeline page links to the deployments page.
    browser.goto(&format!("{base}/p/test/ship")).await;
    browser.click("a[href='/p/test/deployments']").await;
    browser
        .wait_for(
            "the deployments page",
            "return location.pathname === '/p/test/deployments' && document.querySelector('#deploy-demo-web table');",
            LIMIT,
        )
        .await;
    // Newest first: revision 2 (current, web:2, this run's cause), then the first install.
    let rows = browser
        .js(
            "return [...document.querySelectorAll('#deploy-demo-web tbody tr')].map(r => [...r.cells].slice(0, 3).map(c => c.textContent.trim()));",
            vec![],
        )
        .await;
    assert_eq!(
        rows,
        json!([
            ["2 current", "web=web:2", "gantry run 1"],
            ["1", "web=web:1", "first install"]
        ])
    );
    let buttons = browser
        .js(
            "return [...document.querySelectorAll('#deploy-demo-web button')].map(b => b.textContent.trim());",
            vec![],
        )
        .await;
    assert_eq!(
        buttons,
        json!(["Roll back to revision 1"]),
        "no button for the current revision"
    );
    browser.screenshot("0-history").await;

    // The run page shows the same history for its deploy stage, and its button rolls back.
    browser.goto(&format!("{base}/runs/{run}")).await;
    let on_run_page = browser
        .js(
            "return [...document.querySelectorAll('#deploy-demo-web tbody tr')].map(r => [...r.cells].slice(0, 3).map(c => c.textContent.trim()));",
            vec![],
        )
        .await;
    assert_eq!(on_run_page, rows, "the run page's deployment history");
    browser
        .js(
            "document.getElementById('deploy-demo-web').scrollIntoView();",
            vec![],
        )
        .await;
    browser.screenshot("1-run-page").await;
    browser.click_button("Roll back to revision 1").await;
    browser
        .wait_for(
            "the rollback's confirmation",
            "const s = document.querySelector('p.ok[role=status]'); return s && s.textContent === 'demo/web rolled back to revision 1; it is now the newest revision.';",
            LIMIT,
        )
        .await;
    assert_eq!(
        standin.deployment_image("demo", "web"),
        "web:1",
        "the old template is back"
    );
    // As with kubectl, the ReplicaSet rolled back to becomes the newest revision (3).
    let deployment = standin
        .get(Kind::Deployment, "demo", "web")
        .expect("deployment");
    assert_eq!(
        deployment["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "first install"
    );
    browser.client.refresh().await.expect("reload");
    browser
        .wait_for(
            "revision 3 current",
            "const r = document.querySelector('#deploy-demo-web tbody tr'); return r && r.classList.contains('current') && r.cells[0].textContent.trim() === '3 current' && r.cells[1].textContent.trim() === 'web=web:1';",
            LIMIT,
        )
        .await;
    browser.screenshot("2-rolled-back").await;
    browser.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_those_who_may_deploy_see_and_use_the_rollback_button() {
    let (standin, app, run) = deployed().await;
    let base = app.url();
    // Each with a web session and an API token (none for anonymous).
    let mut everyone: Vec<(String, Option<Role>, Session, Option<String>)> = vec![(
        "anonymous".into(),
        None,
        Session::anonymous(&base).await,
        None,
    )];
    let token = app.create_user("nobody", "nobody-password").await;
    everyone.push((
        "no role".into(),
        None,
        Session::sign_in(&base, "nobody", "nobody-password").await,
        Some(token),
    ));
    for role in Role::ALL {
        let name = format!("ui-{}", role.as_str());
        let token = app.create_user(&name, "role-password").await;
        app.grant("test", &name, role).await;
        let session = Session::sign_in(&base, &name, "role-password").await;
        everyone.push((name, Some(role), session, Some(token)));
    }
    let may = |role: Option<Role>, action: Action| role.is_some_and(|r| r >= action.least_role());
    let api = format!("{base}/api/v1/projects/test/deployments/demo/web");
    let undo_through_api = || async {
        app.http()
            .post(format!("{api}/undo"))
            .json(&json!({}))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("undo through the API");
    };
    for (who, role, session, token) in &everyone {
        // The API's history and undo routes answer the same as the pages and forms.
        let http = reqwest::Client::new();
        let with_token = |request: reqwest::RequestBuilder| match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let expected_refusal = if token.is_some() { 403 } else { 401 };
        let status = with_token(http.get(format!("{api}/history")))
            .send()
            .await
            .expect("GET history")
            .status()
            .as_u16();
        let expected = if may(*role, Action::Read) {
            200
        } else {
            expected_refusal
        };
        assert_eq!(status, expected, "{who}: API history");
        let status = with_token(http.post(format!("{api}/undo")).json(&json!({})))
            .send()
            .await
            .expect("POST undo")
            .status()
            .as_u16();
        if may(*role, Action::Deploy) {
            assert_eq!(status, 200, "{who}: API undo");
            assert_eq!(standin.deployment_image("demo", "web"), "web:1");
            undo_through_api().await;
            assert_eq!(standin.deployment_image("demo", "web"), "web:2");
        } else {
            assert_eq!(status, expected_refusal, "{who}: API undo");
            assert_eq!(
                standin.deployment_image("demo", "web"),
                "web:2",
                "{who} changed nothing"
            );
        }

        let signed_in = !session.cookie.is_empty();
        let (status, page) = session.get("/p/test/deployments").await;
        if may(*role, Action::Read) {
            assert_eq!(status, StatusCode::OK, "{who} reads the page");
            assert!(page.contains("web=web:2"), "{who}: {page}");
            assert_eq!(
                page.contains("Roll back to revision"),
                may(*role, Action::Deploy),
                "{who} sees the button only when they may deploy"
            );
            let (status, run_page) = session.get(&format!("/runs/{run}")).await;
            assert_eq!(status, StatusCode::OK, "{who} reads the run");
            assert!(run_page.contains("web=web:2"), "{who}: {run_page}");
            assert_eq!(
                run_page.contains("Roll back to revision"),
                may(*role, Action::Deploy),
                "{who} sees the run page's button only when they may deploy"
            );
        } else if signed_in {
            assert_eq!(status, StatusCode::FORBIDDEN, "{who} reads the page");
        } else {
            assert_eq!(status, StatusCode::SEE_OTHER, "{who}: to the sign-in form");
        }

        let before = standin.deployment_image("demo", "web");
        // No revision: the one before the current one (web:1; rolling back makes revisions
        // new, so its number changes from one role to the next).
        let (status, location) = session
            .post("/p/test/deployments/demo/web/undo", &[("to_revision", "")])
            .await;
        if may(*role, Action::Deploy) {
            assert_eq!(status, StatusCode::SEE_OTHER, "{who} rolls back");
            assert!(
                location.starts_with("/p/test/deployments?undone=demo/web&revision="),
                "{who}: {location}"
            );
            assert_eq!(standin.deployment_image("demo", "web"), "web:1");
            // Back to web:2 for the next one (the newest revision with web:2).
            undo_through_api().await;
            assert_eq!(standin.deployment_image("demo", "web"), "web:2");
        } else {
            let expected = if signed_in {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            assert_eq!(status, expected, "{who} may not roll back");
            assert_eq!(
                standin.deployment_image("demo", "web"),
                before,
                "{who} changed nothing"
            );
        }
    }

    let admin = &everyone
        .iter()
        .find(|(who, ..)| who == "ui-admin")
        .expect("admin")
        .2;
    // Without the session's CSRF token: refused, nothing changes.
    let (status, _) = admin
        .post_raw(
            "/p/test/deployments/demo/web/undo",
            &[("csrf", "forged"), ("to_revision", "1")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(standin.deployment_image("demo", "web"), "web:2");
    // A Deployment no pipeline of the project rolls out to is not the project's to steer.
    let (status, _) = admin
        .post(
            "/p/test/deployments/demo/other/undo",
            &[("to_revision", "1")],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A revision that does not exist is named; a revision that is not a number too.
    let (status, _) = admin
        .post(
            "/p/test/deployments/demo/web/undo",
            &[("to_revision", "99")],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let page = admin
        .http
        .post(format!("{base}/p/test/deployments/demo/web/undo"))
        .header(reqwest::header::COOKIE, &admin.cookie)
        .form(&[("csrf", admin.csrf.as_str()), ("to_revision", "two")])
        .send()
        .await
        .expect("POST");
    assert_eq!(page.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = page.text().await.expect("text");
    assert!(text.contains("`two` is not a revision number"), "{text}");
    assert_eq!(standin.deployment_image("demo", "web"), "web:2");
    app.stop().await;
}
