//! Signing in and out of the web UI. A session is a random cookie value (stored hashed) with a
//! CSRF token every form must echo; the sign-in form itself is protected by a short-lived
//! double-submit cookie, since there is no session yet to hold its token.

use std::sync::{Arc, OnceLock};

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::PageError;
use super::{Chrome, render};
use crate::access::{Principal, credential, password};
use crate::engine::Engine;
use crate::http::auth::{self, LOGIN_CSRF_COOKIE, SESSION_COOKIE};
use crate::store::access as db;

/// How long a session lasts.
pub const SESSION_DAYS: i64 = 7;

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
    /// Set after a password change (which ended the session).
    changed: Option<bool>,
}

#[derive(Serialize)]
pub(crate) struct LoginPage {
    pub chrome: Chrome,
    pub csrf: String,
    pub next: String,
    pub name: String,
    pub error: Option<String>,
    /// Good news for whoever signs in (their password was changed).
    pub notice: Option<String>,
}

/// Only a path on this site (not `//other.host`) may be where signing in leads.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

fn login_form(
    engine: &Engine,
    headers: &HeaderMap,
    status: StatusCode,
    next: String,
    name: String,
    error: Option<String>,
    notice: Option<String>,
) -> Result<Response, PageError> {
    let csrf = credential::random();
    let page = LoginPage {
        chrome: Chrome::of(&Principal::Anonymous),
        csrf: csrf.clone(),
        next,
        name,
        error,
        notice,
    };
    let cookie = auth::set_cookie(
        LOGIN_CSRF_COOKIE,
        &csrf,
        3600,
        auth::secure_cookies(engine, headers),
    );
    Ok((
        status,
        [(header::SET_COOKIE, cookie)],
        render("login.html", &page)?,
    )
        .into_response())
}

pub async fn login_page(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    Query(query): Query<NextQuery>,
) -> Result<Response, PageError> {
    let next = safe_next(query.next.as_deref());
    let notice = (query.changed == Some(true))
        .then(|| "Your password was changed: sign in with the new one.".to_owned());
    login_form(
        &engine,
        &headers,
        StatusCode::OK,
        next,
        String::new(),
        None,
        notice,
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

/// A hash no password matches, checked when the user does not exist so that the answer
/// takes as long as for a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| password::hash(&credential::random()).unwrap_or_default())
}

pub async fn login(
    State(engine): State<Arc<Engine>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let address = peer.map(|axum::Extension(info)| info.0.ip());
    let next = safe_next(form.next.as_deref());
    let pool = &engine.store.pool;
    let cookie_csrf = auth::cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if cookie_csrf.is_empty() || !credential::same(cookie_csrf, &form.csrf) {
        return login_form(
            &engine,
            &headers,
            StatusCode::FORBIDDEN,
            next,
            form.name,
            Some("The form expired; please sign in again.".into()),
            None,
        );
    }
    // Refused before the password is checked: guessing is slowed, not only answered slowly.
    let now = std::time::Instant::now();
    if let Some(wait) = engine.logins.wait(&form.name, address, now) {
        let seconds = wait.as_secs().max(1);
        tracing::warn!(user = %form.name, address = ?address, wait_secs = seconds, "sign-in refused: too many failed attempts");
        let mut page = login_form(
            &engine,
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            next,
            form.name,
            Some(format!(
                "Too many failed sign-ins; try again in {seconds} s."
            )),
            None,
        )?;
        if let Ok(value) = seconds.to_string().parse() {
            page.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(page);
    }
    let found = match db::user_by_name(pool, &form.name).await {
        Ok(c) => Some(c),
        Err(crate::store::StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let stored = found
        .as_ref()
        .and_then(|c| c.password_hash.clone())
        .unwrap_or_else(|| decoy_hash().to_owned());
    let matches = password::verify_blocking(form.password, stored).await;
    let Some(user) = found.filter(|c| matches && c.password_hash.is_some()) else {
        engine.logins.failed(&form.name, address, now);
        return login_form(
            &engine,
            &headers,
            StatusCode::UNAUTHORIZED,
            next,
            form.name,
            Some("Wrong user name or password.".into()),
            None,
        );
    };
    engine.logins.succeeded(&form.name);
    // Housekeeping where sessions are made: expired ones go when someone signs in.
    db::delete_expired_sessions(pool).await?;
    let value = credential::random();
    let csrf = credential::random();
    let expires = chrono::Utc::now() + chrono::TimeDelta::days(SESSION_DAYS);
    db::create_session(
        pool,
        user.user.id,
        &credential::hash(&value),
        &csrf,
        expires,
    )
    .await?;
    tracing::info!(user = %user.user.name, "signed in to the web UI");
    let secure = auth::secure_cookies(&engine, &headers);
    let session = auth::set_cookie(SESSION_COOKIE, &value, SESSION_DAYS * 86_400, secure);
    let clear = auth::set_cookie(LOGIN_CSRF_COOKIE, "", 0, secure);
    let mut response = Redirect::to(&next).into_response();
    let h = response.headers_mut();
    for cookie in [session, clear] {
        if let Ok(v) = cookie.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

pub async fn logout(
    State(engine): State<Arc<Engine>>,
    mut who: Principal,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    who.accept_csrf(&form.csrf);
    who.require_user(true)?;
    if let Some(value) = auth::cookie(&headers, SESSION_COOKIE) {
        db::delete_session(&engine.store.pool, &credential::hash(value)).await?;
    }
    let clear = auth::set_cookie(
        SESSION_COOKIE,
        "",
        0,
        auth::secure_cookies(&engine, &headers),
    );
    Ok(([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_signing_in() {
        assert_eq!(safe_next(Some("/runs/4")), "/runs/4");
        for bad in [
            "//evil.example/x",
            "https://evil.example",
            "/\\evil",
            "runs",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
