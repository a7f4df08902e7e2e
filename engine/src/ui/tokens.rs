//! The API tokens page: a user's tokens (names and dates, never values), a form to create one
//! (its value is shown on the answer page, once) and buttons to revoke them.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{Html, Redirect};
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
