//! Who may do what, through the API: every role (and anonymous, and no role at all) against
//! every action; anonymous read; API tokens (hashed, shown once, revocable); the first start's
//! administrator; approvals that name their approvers; secrets that stay write-only.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use gantry::access::{Action, Role};
use gantry::store::RunId;
use gantry_tests::{StageStatus, TestEngine, authorized_client};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// A run of it waits at `gate` until someone decides; nothing runs, so runs are cheap.
const GATED: &str = "name: gated
stages:
  - name: gate
    approval: true
";

const NAMED: &str = "name: named
stages:
  - name: gate
    approval:
      approvers: [dora, \"role:admin\"]
";

/// Who asks: a user with a role in project `test`, one with none, an engine administrator, or
/// nobody.
#[derive(Clone, Copy, Debug)]
enum Who {
    Anonymous,
    NoRole,
    Member(Role),
    EngineAdmin,
}

impl Who {
    fn role(self) -> Option<Role> {
        match self {
            Who::Member(r) => Some(r),
            Who::EngineAdmin => Some(Role::Admin),
            _ => None,
        }
    }
}

async fn client_for(app: &TestEngine, who: Who) -> reqwest::Client {
    match who {
        Who::Anonymous => reqwest::Client::new(),
        Who::EngineAdmin => app.http(),
        Who::NoRole => authorized_client(&app.create_user("stranger", "stranger-pw").await),
        Who::Member(role) => {
            let name = format!("user-{}", role.as_str());
            let token = app.create_user(&name, "member-password").await;
            app.grant("test", &name, role).await;
            authorized_client(&token)
        }
    }
}

async fn waiting_run(app: &TestEngine) -> RunId {
    let run = app.trigger("gated", &[]).await.run_id;
    app.wait_for_stage(run, "gate", WAIT, |s| {
        s.status == StageStatus::WaitingApproval
    })
    .await;
    run
}

/// Sends the request that does `action` and returns its status.
async fn attempt(app: &TestEngine, http: &reqwest::Client, action: Action) -> u16 {
    let api = format!("{}/api/v1", app.url());
    let request = match action {
        Action::Read => {
            let run = app.trigger("gated", &[]).await.run_id;
            http.get(format!("{api}/runs/{run}"))
        }
        Action::Trigger => http.post(format!("{api}/projects/test/pipelines/gated/runs")),
        Action::Cancel => http.post(format!("{api}/runs/{}/cancel", waiting_run(app).await)),
        Action::Rerun => {
            let run = waiting_run(app).await;
            gantry::run::cancel(app.engine(), run, None, None)
                .await
                .expect("cancel");
            app.wait_for_run(run, WAIT).await;
            http.post(format!("{api}/runs/{run}/rerun"))
        }
        Action::Approve => http.post(format!(
            "{api}/runs/{}/stages/gate/approve",
            waiting_run(app).await
        )),
        Action::EditPipeline => http
            .post(format!("{api}/projects/test/pipelines"))
            .body(GATED),
        Action::ListSecrets => http.get(format!("{api}/projects/test/secrets")),
        Action::WriteSecret => http
            .put(format!("{api}/projects/test/secrets/PASSWORD"))
            .body("hunter22"),
        Action::ManageProject => http.get(format!("{api}/projects/test/members")),
        // Rolling back needs a cluster: ui_deploy.rs tries the API's undo route (and the UI's
        // button) for every role against the Kubernetes stand-in.
        Action::Deploy => return 0,
    };
    request.send().await.expect("request").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_may_do_what_its_role_allows_and_nothing_else() {
    let app = TestEngine::start().await;
    app.apply(GATED).await;
    let everyone = [
        Who::Anonymous,
        Who::NoRole,
        Who::Member(Role::Viewer),
        Who::Member(Role::Developer),
        Who::Member(Role::Maintainer),
        Who::Member(Role::Admin),
        Who::EngineAdmin,
    ];
    let mut table = Vec::new();
    for who in everyone {
        let http = client_for(&app, who).await;
        for action in Action::ALL {
            if action == Action::Deploy {
                continue;
            }
            let status = attempt(&app, &http, action).await;
            let allowed = who.role().is_some_and(|r| r >= action.least_role());
            let expected: &[u16] = match (allowed, who) {
                (true, _) => &[200, 201, 202, 204],
                (false, Who::Anonymous) => &[401],
                (false, _) => &[403],
            };
            table.push(format!("{who:?} {action:?} -> {status}"));
            assert!(
                expected.contains(&status),
                "{who:?} {action:?}: {status}, expected one of {expected:?}\n{}",
                table.join("\n")
            );
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_read_opens_reads_only_and_every_route_refuses_anonymous_otherwise() {
    let app = TestEngine::start().await;
    app.apply(GATED).await;
    let run = waiting_run(&app).await;
    let anonymous = reqwest::Client::new();
    let api = format!("{}/api/v1", app.url());
    // Every documented route, without a token, on a private project: 401, never data.
    for (method, template) in gantry::http::openapi::operations() {
        let (method, template) = (method.as_str(), template.as_str());
        let path = template
            .replace("{project}", "test")
            .replace("{name}", "gated")
            .replace("{id}", &run.to_string())
            .replace("{key}", "gate")
            .replace("{artifact}", "1")
            .replace("{user}", "admin")
            .replace("{number}", "1");
        let url = format!("{api}{path}");
        let request = match method {
            "get" => anonymous.get(&url),
            "post" => anonymous.post(&url).json(&json!({ "name": "x" })),
            "put" => anonymous.put(&url).json(&json!({ "role": "admin" })),
            "delete" => anonymous.delete(&url),
            other => panic!("no request for {other}"),
        };
        let answer = request.send().await.expect("request");
        assert_eq!(answer.status(), 401, "{method} {template}");
        let body: Value = answer.json().await.expect("JSON error");
        assert!(body["error"].as_str().is_some(), "{body}");
    }
    // A wrong token is refused outright, not taken for anonymous.
    let forged = authorized_client("gty_not-a-real-token");
    let answer = forged
        .get(format!("{api}/runs/{run}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(answer.status(), 401);

    // The project's admin opens it for reading.
    let admin = app.http();
    let opened = admin
        .put(format!("{api}/projects/test"))
        .json(&json!({ "anonymous_read": true }))
        .send()
        .await
        .expect("PUT project");
    assert_eq!(opened.status(), 204);
    let read = anonymous
        .get(format!("{api}/runs/{run}"))
        .send()
        .await
        .expect("GET run");
    assert_eq!(read.status(), 200);
    let listed: Value = anonymous
        .get(format!("{api}/runs"))
        .send()
        .await
        .expect("GET runs")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let log = anonymous
        .get(format!("{api}/runs/{run}/stages/gate/logs"))
        .send()
        .await
        .expect("GET log");
    assert_eq!(log.status(), 200);
    // Reading only: steering still needs a user.
    for url in [
        format!("{api}/runs/{run}/cancel"),
        format!("{api}/runs/{run}/stages/gate/approve"),
        format!("{api}/projects/test/pipelines/gated/runs"),
    ] {
        let answer = anonymous.post(&url).send().await.expect("POST");
        assert_eq!(answer.status(), 401, "{url}");
    }
    let secrets = anonymous
        .get(format!("{api}/projects/test/secrets"))
        .send()
        .await
        .expect("GET secrets");
    assert_eq!(secrets.status(), 401);

    // Other projects stay closed: a second, private project's runs are not listed.
    gantry::run::apply(app.engine(), "private", "p.yaml", GATED)
        .await
        .expect("apply");
    gantry::run::trigger(
        app.engine(),
        "private",
        "gated",
        "manual",
        Default::default(),
    )
    .await
    .expect("trigger");
    let listed: Value = anonymous
        .get(format!("{api}/runs"))
        .send()
        .await
        .expect("GET runs")
        .json()
        .await
        .expect("JSON");
    assert!(
        listed
            .as_array()
            .into_iter()
            .flatten()
            .all(|r| r["project"] == "test"),
        "{listed}"
    );
    let all: Value = admin
        .get(format!("{api}/runs"))
        .send()
        .await
        .expect("GET runs")
        .json()
        .await
        .expect("JSON");
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_writes_private_admin_credentials_and_tokens_are_shown_once() {
    let app = TestEngine::start().await;
    for file in ["admin.token", "admin.password"] {
        let path = app.data_dir.path().join(file);
        let mode = std::fs::metadata(&path).expect(file).permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let password =
        std::fs::read_to_string(app.data_dir.path().join("admin.password")).expect("password file");
    let stored = gantry::store::access::user_by_name(app.pool(), "admin")
        .await
        .expect("admin");
    assert!(stored.user.is_admin);
    let hash = stored.password_hash.expect("a password hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(gantry::access::password::verify(password.trim(), &hash));

    // A token is in the creation answer and nowhere else; the database keeps only its hash.
    let api = format!("{}/api/v1", app.url());
    let created: Value = app
        .http()
        .post(format!("{api}/tokens"))
        .json(&json!({ "name": "deploy bot" }))
        .send()
        .await
        .expect("POST token")
        .json()
        .await
        .expect("JSON");
    let token = created["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("gty_"));
    let listed = app
        .http()
        .get(format!("{api}/tokens"))
        .send()
        .await
        .expect("GET tokens")
        .text()
        .await
        .expect("text");
    assert!(
        listed.contains("deploy bot") && !listed.contains(&token),
        "{listed}"
    );
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_all(app.pool())
        .await
        .expect("hashes");
    assert!(
        stored
            .iter()
            .all(|h| h.len() == 32 && !token.as_bytes().starts_with(h))
    );

    // The new token works until it is revoked.
    let bot = authorized_client(&token);
    let me: Value = bot
        .get(format!("{api}/me"))
        .send()
        .await
        .expect("GET me")
        .json()
        .await
        .expect("JSON");
    assert_eq!(me["name"], "admin");
    let revoked = app
        .http()
        .delete(format!("{api}/tokens/{}", created["id"]))
        .send()
        .await
        .expect("DELETE token");
    assert_eq!(revoked.status(), 204);
    let after = bot.get(format!("{api}/me")).send().await.expect("GET me");
    assert_eq!(after.status(), 401);

    // Only engine administrators manage users.
    let user = authorized_client(&app.create_user("erin", "erin-password").await);
    let refused = user
        .post(format!("{api}/users"))
        .json(&json!({ "name": "mallory", "is_admin": true }))
        .send()
        .await
        .expect("POST user");
    assert_eq!(refused.status(), 403);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_named_by_the_stage_decide_and_are_recorded() {
    let app = TestEngine::start().await;
    app.apply(NAMED).await;
    let api = format!("{}/api/v1", app.url());
    // dora is named (a viewer is enough); carl is a maintainer but not named.
    let dora = authorized_client(&app.create_user("dora", "dora-password").await);
    app.grant("test", "dora", Role::Viewer).await;
    let carl = authorized_client(&app.create_user("carl", "carl-password").await);
    app.grant("test", "carl", Role::Maintainer).await;
    let run = app.trigger("named", &[]).await.run_id;
    app.wait_for_stage(run, "gate", WAIT, |s| {
        s.status == StageStatus::WaitingApproval
    })
    .await;
    let url = format!("{api}/runs/{run}/stages/gate/approve");
    let refused = carl.post(&url).send().await.expect("POST");
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("approvers: dora, role:admin")),
        "{body}"
    );
    let approved = dora.post(&url).send().await.expect("POST");
    assert_eq!(approved.status(), 204);
    let stage = app.stage(run, "gate").await;
    assert_eq!(stage.approved_by.as_deref(), Some("dora"));
    // `role:admin` lets the engine administrator decide the next one.
    let run = app.trigger("named", &[]).await.run_id;
    app.wait_for_stage(run, "gate", WAIT, |s| {
        s.status == StageStatus::WaitingApproval
    })
    .await;
    let rejected = app
        .http()
        .post(format!("{api}/runs/{run}/stages/gate/reject"))
        .send()
        .await
        .expect("POST");
    assert_eq!(rejected.status(), 204);
    assert_eq!(
        app.stage(run, "gate").await.error.as_deref(),
        Some("rejected by admin")
    );
    app.stop().await;
}
