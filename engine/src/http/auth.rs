//! Who is calling: the [`Principal`] extractor every API and UI handler takes. An
//! `Authorization: Bearer <API token>` header names a user (a wrong token is refused, never
//! treated as anonymous); otherwise a session cookie does; otherwise the caller is anonymous.
//! Whether the principal may act is then `access::require`'s decision, not this module's.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};

use super::error::ApiError;
use crate::access::{AccessError, Caller, Principal, Via, credential};
use crate::engine::Engine;
use crate::store::access as db;

/// The browser session cookie.
pub const SESSION_COOKIE: &str = "gantry_session";
/// Before signing in: the CSRF token of the login form (double-submit).
pub const LOGIN_CSRF_COOKIE: &str = "gantry_login_csrf";
/// The header a cookie-authenticated API write carries the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A token's last use is recorded at most this often, so reads do not each write a row.
const TOUCH_EVERY: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

impl FromRequestParts<Arc<Engine>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, engine: &Arc<Engine>) -> Result<Self, ApiError> {
        Ok(authenticate(engine, &parts.headers, &parts.method).await?)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub async fn authenticate(
    engine: &Engine,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Principal, AccessError> {
    let pool = &engine.store.pool;
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(AccessError::BadToken)?;
        let (user, token_id, last_used) = db::user_by_token(pool, &credential::hash(token))
            .await?
            .ok_or(AccessError::BadToken)?;
        if last_used.is_none_or(|t| chrono::Utc::now() - t > TOUCH_EVERY) {
            db::touch_token(pool, token_id).await?;
        }
        return Ok(Principal::User(Caller {
            user,
            via: Via::Token,
        }));
    }
    if let Some(value) = cookie(headers, SESSION_COOKIE) {
        // A stale cookie (signed out, expired) is simply no session.
        if let Some((user, csrf)) = db::user_by_session(pool, &credential::hash(value)).await? {
            let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
            let csrf_ok = safe
                || headers
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| credential::same(v, &csrf));
            return Ok(Principal::User(Caller {
                user,
                via: Via::Session { csrf, csrf_ok },
            }));
        }
    }
    Ok(Principal::Anonymous)
}

/// Whether cookies get the `Secure` attribute: when the engine is reached over HTTPS (its
/// public URL, or a TLS-terminating proxy saying so).
pub fn secure_cookies(engine: &Engine, headers: &HeaderMap) -> bool {
    engine.url.starts_with("https://")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, Secure over HTTPS; `max_age`
/// seconds (0 deletes the cookie).
pub fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_several_headers_and_pairs() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            "a=1; gantry_session=abc".parse().expect("value"),
        );
        headers.append(header::COOKIE, "b=2".parse().expect("value"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
        assert_eq!(
            set_cookie("n", "v", 60, true),
            "n=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
    }
}
