//! The API tokens page: a user's tokens (names and dates, never values), a form to create one
//! (its value is shown on the answer page, once) and buttons to revoke them; and the form to
//! change one's own password (how someone given an initial password makes it their own).

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{Html, Redirect};

use crate::access::password;
use crate::http::error::ApiError;
use serde::{Deserialize, Serialize};

use super::PageError;
use super::{Chrome, render};
use crate::access::Principal;
use crate::engine::Engine;
use crate::http::users::{NewToken, issue_token};
use crate::store::access as db;

#[derive(Serialize)]
pub struct TokensPage {
    pub chrome: Chrome,
    pub tokens: Vec<TokenItem>,
    /// Just created: shown this once.
    pub created: Option<String>,
}

#[derive(Serialize)]
pub struct TokenItem {
    pub id: i64,
    pub name: String,
    pub created: String,
    pub last_used: String,
    pub expires: String,
}

async fn show(
    engine: &Engine,
    who: &Principal,
    created: Option<String>,
) -> Result<Html<String>, PageError> {
    let me = who.require_user(false)?;
    let tokens = db::tokens_of(&engine.store.pool, me.id)
        .await?
        .into_iter()
        .map(|t| TokenItem {
            id: t.id,
            name: t.name,
            created: super::pages::time(&t.created_at),
            last_used: t
                .last_used_at
                .map(|t| super::pages::time(&t))
                .unwrap_or_default(),
            expires: t
                .expires_at
                .map(|t| super::pages::time(&t))
                .unwrap_or_default(),
        })
        .collect();
    Ok(render(
        "tokens.html",
        &TokensPage {
            chrome: Chrome::of(who),
            tokens,
            created,
        },
    )?)
}

pub async fn page(
    State(engine): State<Arc<Engine>>,
    who: Principal,
) -> Result<Html<String>, PageError> {
    show(&engine, &who, None).await
}

#[derive(Deserialize)]
pub struct CreateForm {
    csrf: String,
    name: String,
    expires_in_days: Option<String>,
}

pub async fn create(
    State(engine): State<Arc<Engine>>,
    mut who: Principal,
    Form(form): Form<CreateForm>,
) -> Result<Html<String>, PageError> {
    who.accept_csrf(&form.csrf);
    let days = form
        .expires_in_days
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<u32>().map_err(|_| {
                crate::http::error::ApiError::BadRequest(format!("`{d}` is not a number of days"))
            })
        })
        .transpose()?;
    let created = issue_token(
        &engine,
        &who,
        &NewToken {
            name: form.name,
            expires_in_days: days,
        },
    )
    .await?;
    show(&engine, &who, Some(created.token)).await
}

#[derive(Deserialize)]
pub struct DeleteForm {
    csrf: String,
}

pub async fn delete(
    State(engine): State<Arc<Engine>>,
    mut who: Principal,
    Path(id): Path<i64>,
    Form(form): Form<DeleteForm>,
) -> Result<Redirect, PageError> {
    who.accept_csrf(&form.csrf);
    let me = who.require_user(true)?;
    db::delete_token(&engine.store.pool, me.id, id).await?;
    Ok(Redirect::to("/tokens"))
}

#[derive(Deserialize)]
pub struct PasswordForm {
    csrf: String,
    current: String,
    new: String,
    repeat: String,
}

/// Changes the signed-in user's own password, after checking the current one. Every session
/// of theirs ends with it (this one too), so the answer is the sign-in form.
pub async fn change_password(
    State(engine): State<Arc<Engine>>,
    mut who: Principal,
    Form(form): Form<PasswordForm>,
) -> Result<Redirect, PageError> {
    who.accept_csrf(&form.csrf);
    let me = who.require_user(true)?;
    let now = std::time::Instant::now();
    // A stolen session must not become a way to guess the password: the sign-in throttle counts.
    if let Some(wait) = engine.logins.wait(&me.name, None, now) {
        return Err(ApiError::BadRequest(format!(
            "too many wrong passwords; try again in {} s",
            wait.as_secs().max(1)
        ))
        .into());
    }
    let stored = db::user_by_name(&engine.store.pool, &me.name)
        .await?
        .password_hash
        .unwrap_or_default();
    if !password::verify_blocking(form.current, stored).await {
        engine.logins.failed(&me.name, None, now);
        return Err(ApiError::BadRequest(
            "the current password is wrong, so the password was not changed".into(),
        )
        .into());
    }
    if form.new != form.repeat {
        return Err(ApiError::BadRequest(
            "the new password and its repetition differ, so the password was not changed".into(),
        )
        .into());
    }
    let hash = password::hash_blocking(form.new).await?;
    let ended = db::set_password(&engine.store.pool, me.id, &hash).await?;
    tracing::info!(user = %me.name, sessions_ended = ended, "password changed in the web UI");
    Ok(Redirect::to("/login?next=/tokens&changed=true"))
}
