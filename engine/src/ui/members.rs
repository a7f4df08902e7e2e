//! A project's members page (the project's admins only): who has which role, forms to add a
//! member, change a role or remove one, and the project's anonymous-read switch. Each form
//! does what the API's member and project routes do, with the same permission check.
//!
//! Adding someone who has no account yet offers to create it: the project's admins (engine
//! administrators included) may create plain users this way, never administrators. The new
//! account gets a random initial password, shown on the answer page once (like a new API
//! token) for the admin to hand over; its owner changes it on the API tokens page.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::PageError;
use super::{Chrome, render, urlencode};
use crate::access::{self, Action, Principal, Role, credential, password};
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
    /// The add form named someone without an account: the offer to create it.
    pub offer: Option<NewMember>,
    /// Just created: the account and its initial password, shown this once.
    pub created: Option<CreatedUser>,
    /// Where people sign in (for the note that goes with a new password).
    pub login_url: String,
}

#[derive(Clone, Serialize)]
pub struct NewMember {
    pub user: String,
    pub role: &'static str,
}

#[derive(Serialize)]
pub struct CreatedUser {
    pub user: String,
    pub role: &'static str,
    pub password: String,
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

/// The page itself, with what the last form left to say.
async fn show(
    engine: &Engine,
    who: &Principal,
    project: String,
    id: ProjectId,
    done: String,
    offer: Option<NewMember>,
    created: Option<CreatedUser>,
) -> Result<Html<String>, PageError> {
    let pool = &engine.store.pool;
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
            chrome: Chrome::of(who),
            project,
            anonymous_read,
            members,
            roles: Role::ALL.iter().map(|r| r.as_str()).collect(),
            done,
            offer,
            created,
            login_url: format!("{}/login", engine.url.trim_end_matches('/')),
        },
    )?)
}

pub async fn page(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(project): Path<String>,
    Query(query): Query<DoneQuery>,
) -> Result<Html<String>, PageError> {
    let id = managed(&engine, &who, &project).await?;
    let done = query.done.unwrap_or_default();
    show(&engine, &who, project, id, done, None, None).await
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

fn parse_role(text: &str) -> Result<Role, ApiError> {
    Role::parse(text).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "`{text}` is not a role (viewer, developer, maintainer, admin)"
        ))
    })
}

/// Adds a member or changes a member's role. Someone without an account gets the members page
/// again (as 404: there is no such user) offering to create the account.
pub async fn set(
    State(engine): State<Arc<Engine>>,
    mut who: Principal,
    Path(project): Path<String>,
    Form(form): Form<MemberForm>,
) -> Result<Response, PageError> {
    who.accept_csrf(&form.csrf);
    who.require_user(true)?;
    let id = managed(&engine, &who, &project).await?;
    let role = parse_role(&form.role)?;
    let name = form.user.trim();
    let user = match db::user_by_name(&engine.store.pool, name).await {
        Ok(found) => found.user,
        Err(crate::store::StoreError::NotFound(_)) => {
            let offer = NewMember {
                user: name.to_owned(),
                role: role.as_str(),
            };
            let page = show(&engine, &who, project, id, String::new(), Some(offer), None).await?;
            return Ok((StatusCode::NOT_FOUND, page).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    db::set_member(&engine.store.pool, id, user.id, role).await?;
    Ok(back(&project, &format!("{name} is now {}.", role.as_str())).into_response())
}

/// Creates a user (never an administrator) with a random initial password and makes them a
/// member; the answer page shows the password, this once.
pub async fn create(
    State(engine): State<Arc<Engine>>,
    mut who: Principal,
    Path(project): Path<String>,
    Form(form): Form<MemberForm>,
) -> Result<Html<String>, PageError> {
    who.accept_csrf(&form.csrf);
    who.require_user(true)?;
    let id = managed(&engine, &who, &project).await?;
    let role = parse_role(&form.role)?;
    let name = form.user.trim();
    if !crate::pipeline::decode::is_valid_name(name) {
        return Err(ApiError::BadRequest(format!(
            "`{name}` cannot be a user name: use letters, digits, `.`, `_` and `-`"
        ))
        .into());
    }
    let initial = credential::random();
    let hash = password::hash_blocking(initial.clone()).await?;
    // One transaction: an account is never left behind without the membership it was made for.
    let mut tx = engine
        .store
        .pool
        .begin()
        .await
        .map_err(crate::store::StoreError::from)?;
    let user = db::create_user(&mut *tx, name, Some(&hash), false).await?;
    db::set_member(&mut *tx, id, user.id, role).await?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    tracing::info!(user = %user.name, project = %project, by = %who.name(), "user created from the members page");
    let created = CreatedUser {
        user: user.name.clone(),
        role: role.as_str(),
        password: initial,
    };
    let done = format!("{} now has an account and is {}.", user.name, role.as_str());
    show(&engine, &who, project, id, done, None, Some(created)).await
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
