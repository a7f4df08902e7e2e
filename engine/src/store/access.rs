//! Users, their roles per project, API tokens, browser sessions and each project's anonymous
//! read setting. Tokens and sessions are looked up by the SHA-256 of their value: the values
//! themselves are never stored. What a role allows is decided in `crate::access`, not here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use super::{ProjectId, Result, StoreError};

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct UserId(pub i64);

/// A role in one project; each includes what the ones before it allow.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "project_role", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Developer,
    Maintainer,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Maintainer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// A user.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = User)]
pub struct UserRow {
    pub id: UserId,
    pub name: String,
    /// An engine administrator: every role in every project, and manages users.
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
}

/// A user with the hash to check a password against.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: UserRow,
    pub password_hash: Option<String>,
}

/// Creates a user; `Conflict` if the name is taken.
pub async fn create_user(
    db: impl PgExecutor<'_>,
    name: &str,
    password_hash: Option<&str>,
    is_admin: bool,
) -> Result<UserRow> {
    sqlx::query_as!(
        UserRow,
        r#"INSERT INTO users (name, password_hash, is_admin) VALUES ($1, $2, $3)
           ON CONFLICT (name) DO NOTHING
           RETURNING id AS "id: UserId", name, is_admin, created_at"#,
        name,
        password_hash,
        is_admin
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| StoreError::Conflict(format!("user `{name}` already exists")))
}

/// Creates the first administrator unless any user exists. The table lock makes concurrent
/// first starts of several replicas agree on one: only the first gets `Some`.
pub async fn create_first_admin(
    tx: &mut sqlx::PgConnection,
    name: &str,
    password_hash: &str,
) -> Result<Option<UserRow>> {
    sqlx::query!("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let any = sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM users) AS "any!""#)
        .fetch_one(&mut *tx)
        .await?;
    if any {
        return Ok(None);
    }
    Ok(Some(
        create_user(&mut *tx, name, Some(password_hash), true).await?,
    ))
}

pub async fn users(db: impl PgExecutor<'_>) -> Result<Vec<UserRow>> {
    Ok(sqlx::query_as!(
        UserRow,
        r#"SELECT id AS "id: UserId", name, is_admin, created_at FROM users ORDER BY name"#
    )
    .fetch_all(db)
    .await?)
}

pub async fn user_by_name(db: impl PgExecutor<'_>, name: &str) -> Result<Credentials> {
    let row = sqlx::query!(
        r#"SELECT id AS "id: UserId", name, is_admin, created_at, password_hash
           FROM users WHERE name = $1"#,
        name
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("user `{name}`")))?;
    Ok(Credentials {
        user: UserRow {
            id: row.id,
            name: row.name,
            is_admin: row.is_admin,
            created_at: row.created_at,
        },
        password_hash: row.password_hash,
    })
}

/// Sets a user's password and ends every web session of theirs: whoever signed in with the old
/// password (perhaps the reason it was changed) is signed out. API tokens are credentials of
/// their own and stay valid until revoked (docs/access.md).
pub async fn set_password(db: &sqlx::PgPool, user: UserId, hash: &str) -> Result<u64> {
    let mut tx = db.begin().await?;
    sqlx::query!(
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        user.0,
        hash
    )
    .execute(&mut *tx)
    .await?;
    let ended = sqlx::query!("DELETE FROM sessions WHERE user_id = $1", user.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(ended)
}

/// The user an unexpired API token belongs to, with the token's id.
pub async fn user_by_token(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<(UserRow, i64, Option<DateTime<Utc>>)>> {
    let row = sqlx::query!(
        r#"SELECT u.id AS "id: UserId", u.name, u.is_admin, u.created_at,
                  t.id AS token_id, t.last_used_at
           FROM api_tokens t JOIN users u ON u.id = t.user_id
           WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > now())"#,
        token_hash
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| {
        (
            UserRow {
                id: r.id,
                name: r.name,
                is_admin: r.is_admin,
                created_at: r.created_at,
            },
            r.token_id,
            r.last_used_at,
        )
    }))
}

pub async fn touch_token(db: impl PgExecutor<'_>, id: i64) -> Result<()> {
    sqlx::query!(
        "UPDATE api_tokens SET last_used_at = now() WHERE id = $1",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// An API token (its value is never shown again after creation).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Token)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    #[schema(required)]
    pub last_used_at: Option<DateTime<Utc>>,
    #[schema(required)]
    pub expires_at: Option<DateTime<Utc>>,
}

pub async fn create_token(
    db: impl PgExecutor<'_>,
    user: UserId,
    name: &str,
    token_hash: &[u8],
    expires_at: Option<DateTime<Utc>>,
) -> Result<TokenRow> {
    Ok(sqlx::query_as!(
        TokenRow,
        "INSERT INTO api_tokens (user_id, name, token_hash, expires_at) VALUES ($1, $2, $3, $4)
         RETURNING id, name, created_at, last_used_at, expires_at",
        user.0,
        name,
        token_hash,
        expires_at
    )
    .fetch_one(db)
    .await?)
}

pub async fn tokens_of(db: impl PgExecutor<'_>, user: UserId) -> Result<Vec<TokenRow>> {
    Ok(sqlx::query_as!(
        TokenRow,
        "SELECT id, name, created_at, last_used_at, expires_at FROM api_tokens
         WHERE user_id = $1 ORDER BY id",
        user.0
    )
    .fetch_all(db)
    .await?)
}

/// Deletes one of the user's tokens; `NotFound` if it is not theirs.
pub async fn delete_token(db: impl PgExecutor<'_>, user: UserId, id: i64) -> Result<()> {
    let deleted = sqlx::query!(
        "DELETE FROM api_tokens WHERE id = $1 AND user_id = $2",
        id,
        user.0
    )
    .execute(db)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Err(StoreError::NotFound(format!("token {id}")));
    }
    Ok(())
}

pub async fn create_session(
    db: impl PgExecutor<'_>,
    user: UserId,
    token_hash: &[u8],
    csrf: &str,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO sessions (token_hash, user_id, csrf, expires_at) VALUES ($1, $2, $3, $4)",
        token_hash,
        user.0,
        csrf,
        expires_at
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The user of an unexpired session, with the session's CSRF token.
pub async fn user_by_session(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<(UserRow, String)>> {
    let row = sqlx::query!(
        r#"SELECT u.id AS "id: UserId", u.name, u.is_admin, u.created_at, s.csrf
           FROM sessions s JOIN users u ON u.id = s.user_id
           WHERE s.token_hash = $1 AND s.expires_at > now()"#,
        token_hash
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| {
        (
            UserRow {
                id: r.id,
                name: r.name,
                is_admin: r.is_admin,
                created_at: r.created_at,
            },
            r.csrf,
        )
    }))
}

pub async fn delete_session(db: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<()> {
    sqlx::query!("DELETE FROM sessions WHERE token_hash = $1", token_hash)
        .execute(db)
        .await?;
    Ok(())
}

/// Forgets expired sessions (housekeeping).
pub async fn delete_expired_sessions(db: impl PgExecutor<'_>) -> Result<u64> {
    Ok(
        sqlx::query!("DELETE FROM sessions WHERE expires_at <= now()")
            .execute(db)
            .await?
            .rows_affected(),
    )
}

/// What a user (or nobody, for `None`) may do in one project: the project's id, whether
/// anonymous read is on, and the user's role there.
#[derive(Clone, Debug)]
pub struct ProjectAccess {
    pub project: ProjectId,
    pub anonymous_read: bool,
    pub role: Option<Role>,
}

pub async fn project_access(
    db: impl PgExecutor<'_>,
    project: &str,
    user: Option<UserId>,
) -> Result<Option<ProjectAccess>> {
    let row = sqlx::query!(
        r#"SELECT p.id AS "id: ProjectId", p.anonymous_read, m.role AS "role?: Role"
           FROM projects p
           LEFT JOIN project_members m ON m.project_id = p.id AND m.user_id = $2
           WHERE p.name = $1"#,
        project,
        user.map(|u| u.0)
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| ProjectAccess {
        project: r.id,
        anonymous_read: r.anonymous_read,
        role: r.role,
    }))
}

/// A project as the caller sees it: their role (if any) and whether anyone may read it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Project)]
pub struct ProjectRow {
    pub name: String,
    /// Anyone may read it, signed in or not.
    pub anonymous_read: bool,
    /// The role the caller acts with there.
    #[schema(required)]
    pub role: Option<Role>,
}

/// Every project with `user`'s role in it (for listings, filtered by `crate::access`).
pub async fn projects(db: impl PgExecutor<'_>, user: Option<UserId>) -> Result<Vec<ProjectRow>> {
    Ok(sqlx::query_as!(
        ProjectRow,
        r#"SELECT p.name, p.anonymous_read, m.role AS "role?: Role"
           FROM projects p
           LEFT JOIN project_members m ON m.project_id = p.id AND m.user_id = $1
           ORDER BY p.name"#,
        user.map(|u| u.0)
    )
    .fetch_all(db)
    .await?)
}

pub async fn set_anonymous_read(
    db: impl PgExecutor<'_>,
    project: ProjectId,
    on: bool,
) -> Result<()> {
    sqlx::query!(
        "UPDATE projects SET anonymous_read = $2 WHERE id = $1",
        project.0,
        on
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A user's role in a project.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Member)]
pub struct MemberRow {
    pub user: String,
    pub role: Role,
}

pub async fn members(db: impl PgExecutor<'_>, project: ProjectId) -> Result<Vec<MemberRow>> {
    Ok(sqlx::query_as!(
        MemberRow,
        r#"SELECT u.name AS user, m.role AS "role: Role"
           FROM project_members m JOIN users u ON u.id = m.user_id
           WHERE m.project_id = $1 ORDER BY u.name"#,
        project.0
    )
    .fetch_all(db)
    .await?)
}

pub async fn set_member(
    db: impl PgExecutor<'_>,
    project: ProjectId,
    user: UserId,
    role: Role,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role",
        project.0,
        user.0,
        role as Role
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn remove_member(
    db: impl PgExecutor<'_>,
    project: ProjectId,
    user: UserId,
) -> Result<()> {
    let deleted = sqlx::query!(
        "DELETE FROM project_members WHERE project_id = $1 AND user_id = $2",
        project.0,
        user.0
    )
    .execute(db)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Err(StoreError::NotFound(format!(
            "membership of user {} in project {}",
            user.0, project.0
        )));
    }
    Ok(())
}
