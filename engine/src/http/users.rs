//! The API for access itself: who am I, users (administrators manage them), API tokens (each
//! user their own; a token is shown once, when created), and each project's members, roles and
//! anonymous read (the project's admins manage them).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Input, Path, Text};
use super::openapi::{
    Conflict, Forbidden, Internal, MemberPath, NotFound, Password, ProjectPath, TokenPath,
    Unauthorized, Unprocessable, UserPath,
};
use crate::access::{self, Action, Principal, Role, credential, password};
use crate::engine::Engine;
use crate::store::{access as db, pipelines};

/// The caller and the projects they may see, with the role they act with in each.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    pub name: String,
    /// An engine administrator: every role in every project, and manages users.
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

#[utoipa::path(
    get, path = "/me", tag = "access", operation_id = "getMe",
    summary = "The caller: name, whether an engine administrator, and the projects they may see with their role in each.",
    responses(
        (status = 200, description = "The caller.", body = Me),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub async fn me(State(engine): State<Arc<Engine>>, who: Principal) -> Result<Json<Me>, ApiError> {
    let user = who.require_user(false)?;
    Ok(Json(Me {
        name: user.name.clone(),
        is_admin: user.is_admin,
        projects: visible_projects(&engine, &who).await?,
    }))
}

#[utoipa::path(
    get, path = "/projects", tag = "access", operation_id = "listProjects",
    summary = "The projects the caller may see, with their role in each.",
    responses(
        (status = 200, description = "The projects.", body = Vec<db::ProjectRow>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub async fn projects(
    State(engine): State<Arc<Engine>>,
    who: Principal,
) -> Result<Json<Vec<db::ProjectRow>>, ApiError> {
    access::readable_projects(&engine.store.pool, &who).await?;
    Ok(Json(visible_projects(&engine, &who).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ProjectSettings {
    /// Anyone may read it, signed in or not (null or left out: unchanged).
    pub anonymous_read: Option<bool>,
}

/// Creates a project (administrators) or changes its settings (the project's admins).
#[utoipa::path(
    put, path = "/projects/{project}", tag = "access", operation_id = "putProject",
    summary = "Create a project (engine administrators) or change its settings (the project's admins).",
    params(ProjectPath),
    request_body = ProjectSettings,
    responses(
        (status = 201, description = "Created."),
        (status = 204, description = "Changed."),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
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

#[utoipa::path(
    get, path = "/projects/{project}/members", tag = "access", operation_id = "listMembers",
    summary = "The project's members and their roles (the project's admins).",
    params(ProjectPath),
    responses(
        (status = 200, description = "The members.", body = Vec<db::MemberRow>),
        (status = 404, response = NotFound),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub async fn members(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path(project): Path<String>,
) -> Result<Json<Vec<db::MemberRow>>, ApiError> {
    let id = managed_project(&engine, &who, &project).await?;
    Ok(Json(db::members(&engine.store.pool, id).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = MemberRequest)]
pub struct MemberBody {
    // A string, not a `Role`: an unknown one is answered with the roles there are.
    #[schema(value_type = Role)]
    pub role: String,
}

#[utoipa::path(
    put, path = "/projects/{project}/members/{user}", tag = "access", operation_id = "putMember",
    summary = "Give a user a role in the project (the project's admins).",
    params(MemberPath),
    request_body = MemberBody,
    responses(
        (status = 204, description = "Set."),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
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

#[utoipa::path(
    delete, path = "/projects/{project}/members/{user}", tag = "access", operation_id = "removeMember",
    summary = "Take a user's role in the project away (the project's admins).",
    params(MemberPath),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, response = NotFound),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
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

#[utoipa::path(
    get, path = "/users", tag = "access", operation_id = "listUsers",
    summary = "Every user (engine administrators).",
    responses(
        (status = 200, description = "The users.", body = Vec<db::UserRow>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub async fn list_users(
    State(engine): State<Arc<Engine>>,
    who: Principal,
) -> Result<Json<Vec<db::UserRow>>, ApiError> {
    who.require_admin("list users", false)?;
    Ok(Json(db::users(&engine.store.pool).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct NewUser {
    #[schema(pattern = "^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")]
    pub name: String,
    /// Without one (or null) the user cannot sign in to the web UI until one is set
    /// (`PUT /users/{name}/password`).
    #[schema(min_length = 8)]
    pub password: Option<String>,
    #[serde(default)]
    #[schema(default = false)]
    pub is_admin: bool,
}

#[utoipa::path(
    post, path = "/users", tag = "access", operation_id = "createUser",
    summary = "Create a user (engine administrators).",
    request_body = NewUser,
    responses(
        (status = 201, description = "Created.", body = db::UserRow),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
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
#[utoipa::path(
    put, path = "/users/{name}/password", tag = "access", operation_id = "setPassword",
    summary = "Set a user's password (one's own, or anyone's for engine administrators).",
    params(UserPath),
    request_body(
        content = inline(Password), content_type = "text/plain",
        description = "The new password (at least 8 characters)."
    ),
    responses(
        (status = 204, description = "Set."),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
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

#[utoipa::path(
    get, path = "/tokens", tag = "access", operation_id = "listTokens",
    summary = "The caller's API tokens (never their values).",
    responses(
        (status = 200, description = "The tokens.", body = Vec<db::TokenRow>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
pub async fn list_tokens(
    State(engine): State<Arc<Engine>>,
    who: Principal,
) -> Result<Json<Vec<db::TokenRow>>, ApiError> {
    let me = who.require_user(false)?;
    Ok(Json(db::tokens_of(&engine.store.pool, me.id).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct NewToken {
    /// 1 to 100 characters, not only spaces (leading and trailing ones are dropped).
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
    /// Days until the token expires, 1 to 3650 (ten years). Default (or null): never.
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u32>,
}

/// The longest a token may be given to live, in days (ten years).
pub const MAX_TOKEN_DAYS: u32 = 3650;

/// A token just created, with its value: keep it, it is not shown again.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub row: db::TokenRow,
    /// The token (`gty_...`): send it as `Authorization: Bearer TOKEN`.
    pub token: String,
}

/// Creates an API token for the caller.
#[utoipa::path(
    post, path = "/tokens", tag = "access", operation_id = "createToken",
    summary = "Create an API token for the caller. Its value is in this answer only: it is stored hashed.",
    request_body = NewToken,
    responses(
        (status = 201, description = "Created.", body = CreatedToken),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
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
#[utoipa::path(
    delete, path = "/tokens/{id}", tag = "access", operation_id = "deleteToken",
    summary = "Revoke one of the caller's API tokens.",
    params(TokenPath),
    responses(
        (status = 204, description = "Revoked."),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    )
)]
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
