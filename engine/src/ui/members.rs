//! A project's members page (the project's admins only): who has which role, forms to add a
//! member, change a role or remove one, and the project's anonymous-read switch. Each form
//! does what the API's member and project routes do, with the same permission check.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{Html, Redirect};
use serde::{Deserialize, Serialize};

use super::PageError;
use super::{Chrome, render, urlencode};
use crate::access::{self, Action, Principal, Role};
use crate::engine::Engine;
use crate::http::error::ApiError;
use crate::store::ProjectId;
use crate::store::access as db;

#[derive(Serialize)]
pub struct MembersPage {
    pub chrome: Chrome,
    pub project: String,
    pub anonymous_read: bool,
    pub members: Vec<MemberItem>,
    pub roles: Vec<&'static str>,
    /// What the last form did.
    pub done: String,
}

#[derive(Serialize)]
pub struct MemberItem {
    pub user: String,
    pub role: &'static str,
}

#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

async fn managed(engine: &Engine, who: &Principal, project: &str) -> Result<ProjectId, PageError> {
    let granted = access::require(&engine.store.pool, who, project, Action::ManageProject).await?;
    Ok(granted
        .project
        .ok_or_else(|| ApiError::NotFound(format!("project `{project}` not found")))?)
}

pub async fn page(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(project): Path<String>,
    Query(query): Query<DoneQuery>,
) -> Result<Html<String>, PageError> {
    let pool = &engine.store.pool;
    let id = managed(&engine, &who, &project).await?;
    let anonymous_read = db::project_access(pool, &project, None)
        .await?
        .is_some_and(|p| p.anonymous_read);
    let members = db::members(pool, id)
        .await?
        .into_iter()
        .map(|m| MemberItem {
            user: m.user,
            role: m.role.as_str(),
        })
        .collect();
    Ok(render(
        "members.html",
        &MembersPage {
            chrome: Chrome::of(&who),
            project,
            anonymous_read,
            members,
            roles: Role::ALL.iter().map(|r| r.as_str()).collect(),
            done: query.done.unwrap_or_default(),
        },
    )?)
}

fn back(project: &str, done: &str) -> Redirect {
    Redirect::to(&format!(
        "/p/{}/members?done={}",
        urlencode(project),
        urlencode(done)
    ))
}

#[derive(Deserialize)]
pub struct MemberForm {
    csrf: String,
    user: String,
    role: String,
}

/// Adds a member or changes a member's role.
pub async fn set(
    State(engine): State<Arc<Engine>>,
    mut who: Principal,
    Path(project): Path<String>,
    Form(form): Form<MemberForm>,
) -> Result<Redirect, PageError> {
    who.accept_csrf(&form.csrf);
    who.require_user(true)?;
    let id = managed(&engine, &who, &project).await?;
    let role = Role::parse(&form.role).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "`{}` is not a role (viewer, developer, maintainer, admin)",
            form.role
        ))
    })?;
    let name = form.user.trim();
    let user = db::user_by_name(&engine.store.pool, name)
        .await
        .map_err(|_| ApiError::NotFound(format!("there is no user `{name}`")))?
        .user;
    db::set_member(&engine.store.pool, id, user.id, role).await?;
    Ok(back(&project, &format!("{name} is now {}.", role.as_str())))
}

#[derive(Deserialize)]
pub struct RemoveForm {
    csrf: String,
}

pub async fn remove(
    State(engine): State<Arc<Engine>>,
    mut who: Principal,
    Path((project, name)): Path<(String, String)>,
    Form(form): Form<RemoveForm>,
) -> Result<Redirect, PageError> {
    who.accept_csrf(&form.csrf);
    who.require_user(true)?;
    let id = managed(&engine, &who, &project).await?;
    let user = db::user_by_name(&engine.store.pool, &name)
        .await
        .map_err(|_| ApiError::NotFound(format!("there is no user `{name}`")))?
        .user;
    db::remove_member(&engine.store.pool, id, user.id).await?;
    Ok(back(&project, &format!("{name} is no longer a member.")))
}

#[derive(Deserialize)]
pub struct SettingsForm {
    csrf: String,
    /// A checkbox: sent (`true`) when ticked, absent when not.
    anonymous_read: Option<String>,
}

pub async fn settings(
    State(engine): State<Arc<Engine>>,
    mut who: Principal,
    Path(project): Path<String>,
    Form(form): Form<SettingsForm>,
) -> Result<Redirect, PageError> {
    who.accept_csrf(&form.csrf);
    who.require_user(true)?;
    let id = managed(&engine, &who, &project).await?;
    let on = form.anonymous_read.as_deref() == Some("true");
    db::set_anonymous_read(&engine.store.pool, id, on).await?;
    Ok(back(
        &project,
        if on {
            "Anyone may now read this project."
        } else {
            "Only members may read this project now."
        },
    ))
}
