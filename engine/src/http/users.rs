//! The API for access itself: who am I, users (administrators manage them), API tokens (each
//! user their own; a token is shown once, when created), and each project's members, roles and
//! anonymous read (the project's admins manage them).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Input, Path, Text};
use crate::access::{self, Action, Principal, Role, credential, password};
use crate::engine::Engine;
use crate::store::{access as db, pipelines};

/// The caller and the projects they may see, with the role they act with in each.
#[derive(Serialize)]
pub struct Me {
    pub name: String,
    pub is_admin: bool,
    pub projects: Vec<db::ProjectRow>,
}

/// Every project `who` may read, with the role `who` acts with there.
pub async fn visible_projects(
    engine: &Engine,
    who: &Principal,
) -> Result<Vec<db::ProjectRow>, ApiError> {
    let rows = db::projects(&engine.store.pool, who.user().map(|u| u.id)).await?;
    Ok(rows
        .into_iter()
        .filter_map(|mut p| {
            let access = db::ProjectAccess {
                project: crate::store::ProjectId(0),
                anonymous_read: p.anonymous_read,
                role: p.role,
            };
            p.role = who.role_in(&access);
            p.role.is_some().then_some(p)
        })
        .collect())
}

pub async fn me(State(engine): State<Arc<Engine>>, who: Principal) -> Result<Json<Me>, ApiError> {
    let user = who.require_user(false)?;
    Ok(Json(Me {
        name: user.name.clone(),
        is_admin: user.is_admin,
        projects: visible_projects(&engine, &who).await?,
    }))
}

pub async fn projects(
    State(engine): State<Arc<Engine>>,
    who: Principal,
) -> Result<Json<Vec<db::ProjectRow>>, ApiError> {
    access::readable_projects(&engine.store.pool, &who).await?;
    Ok(Json(visible_projects(&engine, &who).await?))
}

#[derive(Deserialize)]
pub struct ProjectSettings {
    /// Whether anyone, signed in or not, may read the project.
    pub anonymous_read: Option<bool>,
}

/// Creates a project (administrators) or changes its settings (the project's admins).
pub async fn put_project(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(project): Path<String>,
    Input(settings): Input<ProjectSettings>,
) -> Result<StatusCode, ApiError> {
    let pool = &engine.store.pool;
    let (id, status) = match db::project_access(pool, &project, None).await? {
        Some(_) => {
            let granted = access::require(pool, &who, &project, Action::ManageProject).await?;
            (granted.project, StatusCode::NO_CONTENT)
        }
        None => {
            who.require_admin("create projects", true)?;
            if !crate::pipeline::decode::is_valid_name(&project) {
                return Err(ApiError::BadRequest(format!(
                    "project name `{project}` is not valid"
                )));
            }
            (
                Some(pipelines::ensure_project(pool, &project).await?),
                StatusCode::CREATED,
            )
        }
    };
    if let (Some(id), Some(on)) = (id, settings.anonymous_read) {
        db::set_anonymous_read(pool, id, on).await?;
    }
    Ok(status)
}

async fn managed_project(
    engine: &Engine,
    who: &Principal,
    project: &str,
) -> Result<crate::store::ProjectId, ApiError> {
    let granted = access::require(&engine.store.pool, who, project, Action::ManageProject).await?;
    granted
        .project
        .ok_or_else(|| ApiError::NotFound(format!("project `{project}` not found")))
}

pub async fn members(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(project): Path<String>,
) -> Result<Json<Vec<db::MemberRow>>, ApiError> {
    let id = managed_project(&engine, &who, &project).await?;
    Ok(Json(db::members(&engine.store.pool, id).await?))
}

#[derive(Deserialize)]
pub struct MemberBody {
    pub role: String,
}

pub async fn put_member(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((project, user)): Path<(String, String)>,
    Input(body): Input<MemberBody>,
) -> Result<StatusCode, ApiError> {
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "`{}` is not a role (viewer, developer, maintainer, admin)",
            body.role
        ))
    })?;
    let id = managed_project(&engine, &who, &project).await?;
    let user = db::user_by_name(&engine.store.pool, &user).await?.user;
    db::set_member(&engine.store.pool, id, user.id, role).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_member(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((project, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = managed_project(&engine, &who, &project).await?;
    let user = db::user_by_name(&engine.store.pool, &user).await?.user;
    db::remove_member(&engine.store.pool, id, user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_users(
    State(engine): State<Arc<Engine>>,
    who: Principal,
) -> Result<Json<Vec<db::UserRow>>, ApiError> {
    who.require_admin("list users", false)?;
    Ok(Json(db::users(&engine.store.pool).await?))
}

#[derive(Deserialize)]
pub struct NewUser {
    pub name: String,
    /// Without one the user cannot sign in to the web UI until one is set
    /// (`PUT /users/{name}/password`).
    pub password: Option<String>,
    #[serde(default)]
    pub is_admin: bool,
}

pub async fn create_user(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Input(new): Input<NewUser>,
) -> Result<(StatusCode, Json<db::UserRow>), ApiError> {
    who.require_admin("create users", true)?;
    if !crate::pipeline::decode::is_valid_name(&new.name) {
        return Err(ApiError::BadRequest(format!(
            "user name `{}` is not valid (letters, digits, `.`, `_`, `-`)",
            new.name
        )));
    }
    let hash = match new.password {
        Some(p) => Some(password::hash_blocking(p).await?),
        None => None,
    };
    let user =
        db::create_user(&engine.store.pool, &new.name, hash.as_deref(), new.is_admin).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Body: the new password. Users set their own; administrators anyone's.
pub async fn set_password(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(name): Path<String>,
    Text(new_password): Text,
) -> Result<StatusCode, ApiError> {
    let me = who.require_user(true)?;
    if me.name != name && !me.is_admin {
        return Err(access::AccessError::AdminOnly("set other users' passwords").into());
    }
    let user = db::user_by_name(&engine.store.pool, &name).await?.user;
    let hash = password::hash_blocking(new_password).await?;
    let ended = db::set_password(&engine.store.pool, user.id, &hash).await?;
    tracing::info!(user = %user.name, sessions_ended = ended, "password changed");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_tokens(
    State(engine): State<Arc<Engine>>,
    who: Principal,
) -> Result<Json<Vec<db::TokenRow>>, ApiError> {
    let me = who.require_user(false)?;
    Ok(Json(db::tokens_of(&engine.store.pool, me.id).await?))
}

#[derive(Deserialize)]
pub struct NewToken {
    pub name: String,
    /// Days until it expires (default: never).
    pub expires_in_days: Option<u32>,
}

/// The longest a token may be given to live, in days (ten years).
pub const MAX_TOKEN_DAYS: u32 = 3650;

/// A token as created: the only time its value is shown.
#[derive(Serialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub row: db::TokenRow,
    pub token: String,
}

/// Creates an API token for the caller.
pub async fn create_token(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Input(new): Input<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let created = issue_token(&engine, &who, &new).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn issue_token(
    engine: &Engine,
    who: &Principal,
    new: &NewToken,
) -> Result<CreatedToken, ApiError> {
    let me = who.require_user(true)?;
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "a token needs a name of 1 to 100 characters".into(),
        ));
    }
    // Ten years at most: `TimeDelta::days` panics past its range, and a token for longer than
    // anyone keeps a key is one that should not expire at all (leave the field out).
    let expires = match new.expires_in_days {
        None => None,
        Some(days @ 1..=MAX_TOKEN_DAYS) => {
            Some(chrono::Utc::now() + chrono::TimeDelta::days(i64::from(days)))
        }
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "expires_in_days is {other}; give 1 to {MAX_TOKEN_DAYS} days, or leave it out for a token that does not expire"
            )));
        }
    };
    let token = credential::new_token();
    let row = db::create_token(
        &engine.store.pool,
        me.id,
        name,
        &credential::hash(&token),
        expires,
    )
    .await?;
    Ok(CreatedToken { row, token })
}

/// Revokes one of the caller's tokens.
pub async fn delete_token(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let me = who.require_user(true)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("`{id}` is not a token id")))?;
    db::delete_token(&engine.store.pool, me.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
