//! The web UI: server-rendered pages (tera templates from `engine/templates/`, compiled into
//! the binary and parsed once at start-up) with small vanilla-JS assets for the live parts
//! (the run page's statuses and log panes, which read the same JSON and SSE API as the CLI).
//! Every page and form checks the caller's permission with the same `access::require` as the
//! API; every form carries the session's CSRF token.

pub mod actions;
pub mod diff;
pub mod error;
pub mod graph;
pub mod members;
pub mod pages;
pub mod session;
pub mod tokens;
pub mod trend;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Serialize;

pub use error::PageError;

use crate::access::Principal;
use crate::engine::Engine;

/// Every template, by name, compiled in.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("macros.html", include_str!("../../templates/macros.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("error.html", include_str!("../../templates/error.html")),
    (
        "dashboard.html",
        include_str!("../../templates/dashboard.html"),
    ),
    (
        "pipeline.html",
        include_str!("../../templates/pipeline.html"),
    ),
    ("run.html", include_str!("../../templates/run.html")),
    ("secrets.html", include_str!("../../templates/secrets.html")),
    (
        "deliveries.html",
        include_str!("../../templates/deliveries.html"),
    ),
    (
        "deployments.html",
        include_str!("../../templates/deployments.html"),
    ),
    ("members.html", include_str!("../../templates/members.html")),
    ("tokens.html", include_str!("../../templates/tokens.html")),
];

/// Static files, compiled in: (name, content type, body).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/app.js"),
    ),
    (
        "run.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/run.js"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("rendering {name}: {detail}")]
    Render { name: String, detail: String },
}

static TERA: OnceLock<Result<tera::Tera, String>> = OnceLock::new();

/// Parses the templates (once per process).
pub fn templates() -> Result<&'static tera::Tera, UiError> {
    TERA.get_or_init(|| {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![".html"]);
        tera.add_raw_templates(TEMPLATES.iter().copied())
            .map_err(|e| error_chain(&e))?;
        Ok(tera)
    })
    .as_ref()
    .map_err(|detail| UiError::Render {
        name: "templates".into(),
        detail: detail.clone(),
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Renders template `name` with `context` (a page's context struct).
pub fn render(name: &str, context: &impl Serialize) -> Result<Html<String>, UiError> {
    let error = |detail: String| UiError::Render {
        name: name.to_owned(),
        detail,
    };
    let context = tera::Context::from_serialize(context).map_err(|e| error(error_chain(&e)))?;
    templates()?
        .render(name, &context)
        .map(Html)
        .map_err(|e| error(error_chain(&e)))
}

/// What every page's header needs: who is signed in, the CSRF token for its forms, and the
/// asset URLs (versioned, so browsers may cache them for good).
#[derive(Clone, Debug, Serialize)]
pub struct Chrome {
    pub user: Option<String>,
    pub is_admin: bool,
    pub csrf: String,
    pub assets: String,
}

impl Chrome {
    pub fn of(who: &Principal) -> Chrome {
        Chrome {
            user: who.user().map(|u| u.name.clone()),
            is_admin: who.is_admin(),
            csrf: who.csrf().unwrap_or_default().to_owned(),
            assets: format!("/assets/{}", asset_version()),
        }
    }
}

/// Changes whenever an asset does (a hash of them all).
pub fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        for (_, _, body) in ASSETS {
            hash.update(body.as_bytes());
        }
        hex::encode(&hash.finalize()[..6])
    })
}

/// An error page: the status, a message for people, and links onwards (`back`: the page
/// the visitor came from, when it was one of ours).
pub fn error_page(
    who: &Principal,
    status: StatusCode,
    message: &str,
    back: Option<&str>,
) -> Response {
    #[derive(Serialize)]
    struct ErrorPage<'a> {
        chrome: Chrome,
        status: u16,
        reason: &'a str,
        message: &'a str,
        back: Option<&'a str>,
    }
    let page = ErrorPage {
        chrome: Chrome::of(who),
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("Error"),
        message,
        back,
    };
    match render("error.html", &page) {
        Ok(html) => (status, html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the error page");
            (status, message.to_owned()).into_response()
        }
    }
}

/// The UI's pages and forms, and the fallback for every path no router knows. `engine` is for
/// the middleware, which shows error pages with the signed-in user's header.
pub fn router(engine: Arc<Engine>) -> Router<Arc<Engine>> {
    Router::new()
        .route("/", get(pages::dashboard))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/p/{project}/{pipeline}", get(pages::pipeline))
        .route("/p/{project}/{pipeline}/trigger", post(actions::trigger))
        .route(
            "/p/{project}/secrets",
            get(pages::secrets).post(actions::set_secret),
        )
        .route("/p/{project}/deliveries", get(pages::deliveries))
        .route("/p/{project}/deployments", get(pages::deployments))
        .route(
            "/p/{project}/deployments/{namespace}/{name}/undo",
            post(actions::undo_deployment),
        )
        .route(
            "/p/{project}/members",
            get(members::page).post(members::set),
        )
        .route("/p/{project}/members/create", post(members::create))
        .route("/p/{project}/members/{user}/remove", post(members::remove))
        .route("/p/{project}/settings", post(members::settings))
        .route("/runs/{id}", get(pages::run))
        .route("/runs/{id}/cancel", post(actions::cancel))
        .route("/runs/{id}/rerun", post(actions::rerun))
        .route("/runs/{id}/stages/{key}/approve", post(actions::approve))
        .route("/runs/{id}/stages/{key}/reject", post(actions::reject))
        .route("/tokens", get(tokens::page).post(tokens::create))
        .route("/tokens/{id}/delete", post(tokens::delete))
        .route("/password", post(tokens::change_password))
        .route("/assets/{version}/{file}", get(asset))
        .fallback(no_such_page)
        .layer(axum::middleware::from_fn_with_state(engine, page_headers))
}

/// Paths that belong to programs, not people: their errors stay as their routers made them
/// (JSON for the API), never an HTML page.
fn is_machine_path(path: &str) -> bool {
    [
        "/api/", "/hooks/", "/assets/", "/healthz", "/readyz", "/metrics",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
}

/// Every path no route matches: a page for people, the API's JSON for programs.
async fn no_such_page(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if is_machine_path(path) {
        return crate::http::error::ApiError::NotFound(format!("no route for {path}"))
            .into_response();
    }
    let mut response = StatusCode::NOT_FOUND.into_response();
    response.extensions_mut().insert(error::ErrorNote(format!(
        "There is no page at {path}. Check the address, or find what you are looking for from \
         the dashboard."
    )));
    response
}

/// The page the visitor came from, when it is one of ours (and not the page that failed).
fn came_from(headers: &HeaderMap, path: &str) -> Option<String> {
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let rest = referer
        .strip_prefix("http://")
        .or_else(|| referer.strip_prefix("https://"))?;
    let (authority, local) = rest.split_at(rest.find('/')?);
    let local_path = local.split(['?', '#']).next().unwrap_or(local);
    (authority == host && local_path != path && !local.starts_with("//")).then(|| local.to_owned())
}

/// Sends a page that needs a signed-in user to the sign-in form (coming back afterwards),
/// shows every other error answer as the error page, and adds the headers every page gets: no
/// framing by other sites, no inline scripts.
async fn page_headers(State(engine): State<Arc<Engine>>, request: Request, next: Next) -> Response {
    let back = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let headers = request.headers().clone();
    let mut response = next.run(request).await;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED && method == axum::http::Method::GET {
        let target = format!("/login?next={}", urlencode(&back));
        response = Redirect::to(&target).into_response();
    } else if (status.is_client_error() || status.is_server_error())
        && !is_machine_path(&path)
        && needs_error_page(&response)
    {
        response = error_page_for(&engine, response, &method, &path, &headers).await;
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Whether an error answer still needs the error page: it carries a handler's note, or it is
/// not a page at all (axum's own text answers). A handler's own page (say, the members page
/// answering 404 with the offer to create the account) is left as it is.
fn needs_error_page(response: &Response) -> bool {
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    response.extensions().get::<error::ErrorNote>().is_some() || !html
}

/// How much of a bare error answer's text is read for its message.
const BARE_ERROR_LIMIT: usize = 4096;

/// `response` (an error answer) as the error page, with the header of whoever asked.
async fn error_page_for(
    engine: &Engine,
    response: Response,
    method: &axum::http::Method,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    let status = response.status();
    let message = match response.extensions().get::<error::ErrorNote>() {
        Some(note) => note.0.clone(),
        None => {
            let body = axum::body::to_bytes(response.into_body(), BARE_ERROR_LIMIT)
                .await
                .unwrap_or_default();
            error::bare_error_message(
                status,
                method.as_str(),
                path,
                &String::from_utf8_lossy(&body),
            )
        }
    };
    // Who asked, for the page's header; a request whose credentials fail shows as anonymous.
    let who = crate::http::auth::authenticate(engine, headers, method)
        .await
        .unwrap_or(Principal::Anonymous);
    error_page(&who, status, &message, came_from(headers, path).as_deref())
}

/// Percent-encodes everything but unreserved characters.
pub fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Only the current version may be cached forever; an old URL gets the current file for
    // a short while (a page loaded before an upgrade).
    let cache = if version == asset_version() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, cache),
        ],
        *body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::pages::*;
    use super::*;
    use crate::access::Role;
    use crate::store::RunId;

    fn chrome() -> Chrome {
        Chrome {
            user: Some("alice".into()),
            is_admin: false,
            csrf: "CSRF-TOKEN".into(),
            assets: "/assets/v".into(),
        }
    }

    fn run_item() -> RunItem {
        RunItem {
            id: RunId(7),
            number: 3,
            status: "running",
            trigger: "manual by alice".into(),
            pipeline: "build".into(),
            branch: "main".into(),
            commit: "0123abcd".into(),
            message: "Fix <script>alert(3)</script> in the footer".into(),
            author: "Alice & Bob".into(),
            created: "2026-12-03 10:00:00 UTC".into(),
            duration: "5s".into(),
            reason: String::new(),
            waiting_approval: false,
        }
    }

    /// Renders `name` and checks the page is whole and escapes what it shows.
    fn rendered(name: &str, context: &impl Serialize) -> String {
        let Html(html) = render(name, context).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(html.contains("</html>"), "{name}");
        assert!(!html.contains("<script>alert"), "{name} does not escape");
        html
    }

    #[test]
    fn every_template_renders() {
        let mut names: Vec<&str> = TEMPLATES.iter().map(|(n, _)| *n).collect();
        names.retain(|n| !matches!(*n, "base.html" | "macros.html"));
        let mut done = Vec::new();

        let html = rendered(
            "login.html",
            &session::LoginPage {
                chrome: Chrome::of(&Principal::Anonymous),
                csrf: "c".into(),
                next: "/runs/1".into(),
                name: "<script>alert(1)</script>".into(),
                error: Some("Wrong user name or password.".into()),
                notice: Some("Your password was changed.".into()),
            },
        );
        assert!(
            html.contains(r#"name="next" value="&#x2F;runs&#x2F;1""#),
            "{html}"
        );
        done.push("login.html");

        let html = rendered(
            "error.html",
            &serde_json::json!({
                "chrome": chrome(),
                "status": 403,
                "reason": "Forbidden",
                "message": "`bob` may not trigger runs <script>alert(3)</script>",
                "back": "/p/web/build",
            }),
        );
        assert!(
            html.contains(r#"href="&#x2F;p&#x2F;web&#x2F;build""#),
            "{html}"
        );
        assert!(html.contains("ask an admin of the project"), "{html}");
        let response = error_page(
            &Principal::Anonymous,
            StatusCode::FORBIDDEN,
            "`bob` may not trigger runs",
            None,
        );
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        done.push("error.html");

        let html = rendered(
            "dashboard.html",
            &DashboardPage {
                chrome: chrome(),
                projects: vec![ProjectCard {
                    name: "web".into(),
                    role: "developer".into(),
                    anonymous_read: true,
                    can_secrets: false,
                    can_manage: false,
                    runs: vec![run_item()],
                    pipelines: vec![PipelineCard {
                        name: "build".into(),
                        version: 2,
                        branches: vec![BranchItem {
                            branch: "main".into(),
                            run_id: RunId(7),
                            number: 3,
                            status: "failed",
                            waiting_approval: false,
                            when: "now".into(),
                        }],
                    }],
                }],
            },
        );
        assert!(html.contains(r#"href="/runs/7""#) && html.contains("badge s-failed"));
        // The project's recent runs: pipeline and number, branch and short commit, who.
        assert!(
            html.contains("build #3") && html.contains("<code>0123abcd</code>"),
            "{html}"
        );
        assert!(html.contains("manual by alice"), "{html}");
        // The commit's subject and author, escaped.
        let subject = "Fix &lt;script&gt;alert(3)&lt;&#x2F;script&gt; in the footer";
        assert!(html.contains(subject), "{html}");
        assert!(html.contains("Alice &amp; Bob"), "{html}");
        done.push("dashboard.html");

        let html = rendered(
            "pipeline.html",
            &PipelinePage {
                chrome: chrome(),
                project: "web".into(),
                pipeline: "build".into(),
                version: 2,
                description: "Builds <the> site".into(),
                runs: vec![run_item()],
                params: vec![
                    ParamField {
                        name: "target".into(),
                        description: "where".into(),
                        kind: "choice",
                        default: "prod".into(),
                        options: vec!["dev".into(), "prod".into()],
                    },
                    ParamField {
                        name: "fast".into(),
                        description: String::new(),
                        kind: "bool",
                        default: "true".into(),
                        options: vec![],
                    },
                    ParamField {
                        name: "note".into(),
                        description: String::new(),
                        kind: "string",
                        default: "<script>alert(2)</script>".into(),
                        options: vec![],
                    },
                ],
                can_trigger: true,
                can_secrets: true,
                deploys: true,
                older: Some(RunId(5)),
                trend: trend::of(&[], &[], chrono::Utc::now()),
                versions: vec![],
                shown: pages::VersionView {
                    version: 2,
                    applied: "now".into(),
                    yaml: "name: build # <b>\n".into(),
                    previous: Some(1),
                    diff: diff::lines("name: old\n", "name: build # <b>\n"),
                    added: 1,
                    removed: 1,
                    stages: vec![],
                },
            },
        );
        // The shown version's YAML and its diff, escaped.
        assert!(html.contains("name: build # &lt;b&gt;"), "{html}");
        assert!(
            html.contains(r#"<del class="d-removed"><span class="mark">-</span>name: old</del>"#),
            "{html}"
        );
        // Every field is labelled, and the form carries the CSRF token.
        for id in ["param-target", "param-fast", "param-note"] {
            assert!(html.contains(&format!(r#"<label for="{id}">"#)), "{id}");
        }
        assert!(html.contains(r#"name="csrf" value="CSRF-TOKEN""#));
        assert!(
            html.contains(r#"<p class="description">Builds &lt;the&gt; site</p>"#),
            "the pipeline's description, escaped: {html}"
        );
        assert!(
            html.contains("in the footer</span>") && html.contains("Alice &amp; Bob"),
            "{html}"
        );
        done.push("pipeline.html");

        let stages = vec![("build".to_owned(), vec![]), ("deploy".to_owned(), vec![0])];
        let graph = graph::layout(&stages);
        let html = rendered(
            "run.html",
            &RunPage {
                chrome: chrome(),
                run: run_item(),
                project: "web".into(),
                pipeline: "build".into(),
                version: 2,
                finished: false,
                rerun_of: Some(RunId(2)),
                params: [("target".to_owned(), "prod".to_owned())].into(),
                commit: "0123456789abcdef".into(),
                nodes: graph
                    .nodes
                    .iter()
                    .map(|n| NodeView {
                        index: n.index,
                        key: n.key.clone(),
                        x: n.x,
                        y: n.y,
                        status: "waiting_approval",
                        duration: String::new(),
                    })
                    .collect(),
                graph,
                stages: vec![StageItem {
                    key: "deploy[env=prod]".into(),
                    index: 1,
                    status: "waiting_approval",
                    attempt: 0,
                    max_attempts: 1,
                    duration: String::new(),
                    error: String::new(),
                    approved_by: String::new(),
                    image: "registry/app@sha256:abc".into(),
                    reused: false,
                    allow_failure: false,
                    finally: false,
                    approval: Some(ApprovalItem {
                        message: "Ship it?".into(),
                        approvers: vec!["alice".into()],
                        may_decide: true,
                        gate: false,
                    }),
                }],
                artifacts: vec![ArtifactItem {
                    id: 4,
                    stage: "build".into(),
                    name: "dist".into(),
                    size_text: size_text(2048),
                    sha256: "ff".into(),
                }],
                images: vec![ImageItem::new(
                    "build".into(),
                    "registry/app@sha256:abc".into(),
                )],
                deployments: vec![DeploymentItem {
                    namespace: "demo".into(),
                    name: "web".into(),
                    anchor: "demo-web".into(),
                    deployed_by: vec!["build / deploy".into()],
                    revisions: vec![crate::deploy::history::Revision {
                        revision: 1,
                        replica_set: "web-1".into(),
                        change_cause: None,
                        images: vec!["web=web:1".into()],
                        current: false,
                        created: None,
                    }],
                    error: String::new(),
                }],
                cluster: true,
                can_deploy: true,
                can_cancel: true,
                can_rerun: true,
            },
        );
        assert!(
            html.contains("/runs/7/stages/deploy%5Benv%3Dprod%5D/approve"),
            "{html}"
        );
        assert!(html.contains("2.0 KiB") && html.contains("<svg"));
        assert!(html.contains("Roll back to revision 1"), "{html}");
        assert!(
            html.contains(r#"href="/api/v1/runs/7/artifacts/4""#),
            "{html}"
        );
        assert!(html.contains("<code>registry&#x2F;app</code>") && html.contains("sha256:abc"));
        // The id the CLI and the API take, beside the number the page is titled with.
        assert!(html.contains("id <code>7</code>"), "{html}");
        assert!(
            html.contains("in the footer</span>") && html.contains("Alice &amp; Bob"),
            "{html}"
        );
        done.push("run.html");

        rendered(
            "secrets.html",
            &SecretsPage {
                chrome: chrome(),
                project: "web".into(),
                secrets: vec![SecretItem {
                    name: "TOKEN".into(),
                    updated: "now".into(),
                }],
                can_write: true,
                saved: Some("TOKEN".into()),
            },
        );
        done.push("secrets.html");

        let html = rendered(
            "tokens.html",
            &tokens::TokensPage {
                chrome: chrome(),
                tokens: vec![tokens::TokenItem {
                    id: 1,
                    name: "ci".into(),
                    created: "now".into(),
                    last_used: String::new(),
                    expires: String::new(),
                }],
                created: Some("gty_secret".into()),
            },
        );
        assert!(html.contains("gty_secret") && html.contains("never"));
        done.push("tokens.html");

        let html = rendered(
            "deliveries.html",
            &DeliveriesPage {
                chrome: chrome(),
                project: "web".into(),
                repositories: vec!["acme/web (github)".into()],
                deliveries: vec![DeliveryItem {
                    id: 3,
                    received: "now".into(),
                    provider: "github".into(),
                    repository: "acme/web".into(),
                    delivery_key: "d-1".into(),
                    event: "push".into(),
                    status: "ignored",
                    summary: ".gantry.yaml (`web`): branch `dev` <does not match>".into(),
                    runs: vec![DeliveryRunItem {
                        id: 9,
                        pipeline: "web".into(),
                        number: 2,
                        status: "succeeded",
                    }],
                }],
            },
        );
        assert!(html.contains("&lt;does not match&gt;"), "escaped: {html}");
        assert!(html.contains(r#"href="/runs/9""#) && html.contains("badge s-ignored"));
        done.push("deliveries.html");

        let html = rendered(
            "deployments.html",
            &DeploymentsPage {
                chrome: chrome(),
                project: "web".into(),
                cluster: true,
                can_deploy: true,
                targets: vec![DeploymentItem {
                    namespace: "demo".into(),
                    name: "web".into(),
                    anchor: "demo-web".into(),
                    deployed_by: vec!["web / rollout".into()],
                    revisions: [2, 1]
                        .into_iter()
                        .map(|revision| crate::deploy::history::Revision {
                            revision,
                            replica_set: format!("web-{revision}"),
                            change_cause: Some(format!("<run {revision}>")),
                            images: vec![format!("web=web:{revision}")],
                            current: revision == 2,
                            created: None,
                        })
                        .collect(),
                    error: String::new(),
                }],
                done: "demo/web rolled back to revision 1.".into(),
            },
        );
        // A button for the old revision only, posting its number with the CSRF token.
        assert!(html.contains(r#"action="/p/web/deployments/demo/web/undo""#));
        assert!(html.contains(r#"name="to_revision" value="1""#));
        assert!(!html.contains(r#"name="to_revision" value="2""#));
        assert!(html.contains(r#"name="csrf" value="CSRF-TOKEN""#));
        assert!(html.contains("&lt;run 1&gt;"), "escaped: {html}");
        done.push("deployments.html");

        let html = rendered(
            "members.html",
            &members::MembersPage {
                chrome: chrome(),
                project: "web".into(),
                anonymous_read: true,
                members: vec![members::MemberItem {
                    user: "alice".into(),
                    role: "maintainer",
                }],
                roles: Role::ALL.iter().map(|r| r.as_str()).collect(),
                done: "alice is now maintainer.".into(),
                offer: Some(members::NewMember {
                    user: "bob".into(),
                    role: "developer",
                }),
                created: Some(members::CreatedUser {
                    user: "carol".into(),
                    role: "viewer",
                    password: "INITIAL-SECRET".into(),
                }),
                login_url: "https://ci.example/login".into(),
            },
        );
        // The offer posts the name and role to the create form; the new password shows once.
        assert!(html.contains(r#"action="/p/web/members/create""#), "{html}");
        assert!(
            html.contains(r#"name="user" value="bob""#)
                && html.contains("Create bob and add as developer")
        );
        assert!(html.contains(r#"<code id="new-password" class="token">INITIAL-SECRET</code>"#));
        assert!(
            html.contains("<option selected>maintainer</option>"),
            "{html}"
        );
        assert!(html.contains(r#"action="/p/web/members/alice/remove""#));
        assert!(html.contains(r#"name="anonymous_read" value="true" checked"#));
        done.push("members.html");

        names.sort_unstable();
        done.sort_unstable();
        assert_eq!(names, done, "render every template here");
    }

    #[test]
    fn urls_are_encoded_for_the_next_parameter() {
        assert_eq!(urlencode("/runs/7?x=a b"), "/runs/7%3Fx%3Da%20b");
    }
}
