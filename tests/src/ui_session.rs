//! Web UI sessions without a browser, for permission tests: the sign-in form posted by hand,
//! the session cookie kept, redirects not followed, forms posted with the session's CSRF token.

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

/// A browser session without a browser: cookies by hand, redirects not followed.
pub struct Session {
    pub http: reqwest::Client,
    pub base: String,
    /// `gantry_session=...`, empty for an anonymous visitor.
    pub cookie: String,
    /// The session's CSRF token, as its pages carry it.
    pub csrf: String,
}

pub fn value_after<'a>(html: &'a str, marker: &str) -> Option<&'a str> {
    let start = html.find(marker)? + marker.len();
    html[start..].split('"').next()
}

impl Session {
    pub async fn anonymous(base: &str) -> Session {
        Session {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: base.to_owned(),
            cookie: String::new(),
            csrf: String::new(),
        }
    }

    /// One try at the sign-in form: its status and `Retry-After` (a refusal is no panic).
    pub async fn try_sign_in(
        base: &str,
        user: &str,
        password: &str,
    ) -> (StatusCode, Option<String>) {
        let session = Session::anonymous(base).await;
        let form = session
            .http
            .get(format!("{base}/login"))
            .send()
            .await
            .expect("GET /login");
        let login_cookie = form
            .headers()
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("the login form sets its CSRF cookie")
            .to_owned();
        let html = form.text().await.expect("HTML");
        let csrf = value_after(&html, r#"name="csrf" value=""#).expect("csrf field");
        let answer = session
            .http
            .post(format!("{base}/login"))
            .header(COOKIE, &login_cookie)
            .form(&[
                ("name", user),
                ("password", password),
                ("csrf", csrf),
                ("next", "/"),
            ])
            .send()
            .await
            .expect("POST /login");
        let retry = answer
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (answer.status(), retry)
    }

    pub async fn sign_in(base: &str, user: &str, password: &str) -> Session {
        let mut session = Session::anonymous(base).await;
        let form = session
            .http
            .get(format!("{base}/login"))
            .send()
            .await
            .expect("GET /login");
        let login_cookie = form
            .headers()
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("the login form sets its CSRF cookie")
            .to_owned();
        let html = form.text().await.expect("HTML");
        let csrf = value_after(&html, r#"name="csrf" value=""#).expect("csrf field");
        let answer = session
            .http
            .post(format!("{base}/login"))
            .header(COOKIE, &login_cookie)
            .form(&[
                ("name", user),
                ("password", password),
                ("csrf", csrf),
                ("next", "/"),
            ])
            .send()
            .await
            .expect("POST /login");
        assert_eq!(
            answer.status(),
            StatusCode::SEE_OTHER,
            "signing in as {user}"
        );
        let set = answer
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("gantry_session="))
            .expect("a session cookie")
            .to_owned();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Lax"),
            "{set}"
        );
        session.cookie = set.split(';').next().unwrap_or_default().to_owned();
        let page = session.get("/tokens").await;
        session.csrf = value_after(&page.1, r#"name="csrf" value=""#)
            .expect("the page's CSRF token")
            .to_owned();
        session
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let answer = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .expect("GET");
        (answer.status(), answer.text().await.expect("text"))
    }

    /// Posts a form (with the session's CSRF token) and returns the status and `Location`.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
        let mut form: Vec<(&str, &str)> = vec![("csrf", self.csrf.as_str())];
        form.extend_from_slice(fields);
        self.post_raw(path, &form).await
    }

    pub async fn post_raw(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        let answer = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(form)
            .send()
            .await
            .expect("POST");
        let location = answer
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (answer.status(), location)
    }
}
