//! Who may do what. A request comes from a [`Principal`]: nobody (anonymous), or a user who
//! sent an API token or a session cookie. Each project gives its members a [`Role`]; every
//! [`Action`] needs at least one role, and [`require`] is the one check that the API and the
//! UI both call before they act. Engine administrators hold every role everywhere; a project
//! may let anyone read it.

pub mod bootstrap;
pub mod credential;
pub mod password;
pub mod throttle;

use sqlx::PgPool;

use crate::store::access::{self as db, ProjectAccess};
pub use crate::store::access::{Role, UserId, UserRow};
use crate::store::{ProjectId, StoreError};

/// Something a principal may want to do in a project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// See pipelines, runs, stages, logs, artifacts and images.
    Read,
    Trigger,
    Cancel,
    Rerun,
    /// Approve or reject a stage waiting for approval (a stage's `approvers` narrow it).
    Approve,
    /// Apply pipeline files.
    EditPipeline,
    /// List the names of the project's secrets (values are never shown to anyone).
    ListSecrets,
    WriteSecret,
    /// Roll a deployment out or back.
    Deploy,
    /// Members, roles and anonymous read.
    ManageProject,
}

impl Action {
    pub const ALL: [Action; 10] = [
        Action::Read,
        Action::Trigger,
        Action::Cancel,
        Action::Rerun,
        Action::Approve,
        Action::EditPipeline,
        Action::ListSecrets,
        Action::WriteSecret,
        Action::Deploy,
        Action::ManageProject,
    ];

    /// The least role that allows the action.
    pub fn least_role(self) -> Role {
        match self {
            Action::Read => Role::Viewer,
            Action::Trigger | Action::Cancel | Action::Rerun => Role::Developer,
            Action::Approve
            | Action::EditPipeline
            | Action::ListSecrets
            | Action::WriteSecret
            | Action::Deploy => Role::Maintainer,
            Action::ManageProject => Role::Admin,
        }
    }

    /// For messages: "trigger runs".
    pub fn describe(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Trigger => "trigger runs",
            Action::Cancel => "cancel runs",
            Action::Rerun => "rerun runs",
            Action::Approve => "approve stages",
            Action::EditPipeline => "apply pipelines",
            Action::ListSecrets => "list secrets",
            Action::WriteSecret => "set secrets",
            Action::Deploy => "deploy",
            Action::ManageProject => "manage the project",
        }
    }

    /// Whether the action changes something (and so, through a session, needs the CSRF token).
    pub fn writes(self) -> bool {
        !matches!(self, Action::Read | Action::ListSecrets)
    }
}

/// How a user proved who they are.
#[derive(Clone, Debug)]
pub enum Via {
    /// An API token (`Authorization: Bearer ...`): not sent by browsers on their own, so no
    /// CSRF token is needed.
    Token,
    /// A session cookie: browsers send it with any request, so a write must also present the
    /// session's CSRF token (`csrf_ok`).
    Session { csrf: String, csrf_ok: bool },
}

#[derive(Clone, Debug)]
pub struct Caller {
    pub user: UserRow,
    pub via: Via,
}

/// Who is asking.
#[derive(Clone, Debug)]
pub enum Principal {
    Anonymous,
    User(Caller),
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("sign in (or send `Authorization: Bearer <token>`) to {0}")]
    Unauthenticated(String),
    #[error("`{user}` may not {action} in project `{project}` (that needs the {role} role)")]
    Forbidden {
        user: String,
        action: &'static str,
        project: String,
        role: &'static str,
    },
    #[error("only engine administrators may {0}")]
    AdminOnly(&'static str),
    #[error(
        "the request lacks the session's CSRF token (send it as the `csrf` form field or the `X-CSRF-Token` header)"
    )]
    Csrf,
    #[error("the API token is not valid (unknown, revoked or expired)")]
    BadToken,
    #[error("project `{0}` not found")]
    NoProject(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`require`] found: the project (absent only for an administrator applying to a
/// project that does not exist yet) and the role the principal acts with.
#[derive(Clone, Debug)]
pub struct Granted {
    pub project: Option<ProjectId>,
    pub role: Option<Role>,
}

impl Principal {
    pub fn user(&self) -> Option<&UserRow> {
        match self {
            Principal::Anonymous => None,
            Principal::User(c) => Some(&c.user),
        }
    }

    pub fn name(&self) -> &str {
        self.user().map_or("anonymous", |u| u.name.as_str())
    }

    pub fn is_admin(&self) -> bool {
        self.user().is_some_and(|u| u.is_admin)
    }

    /// The session's CSRF token, for the forms a page renders.
    pub fn csrf(&self) -> Option<&str> {
        match self {
            Principal::User(Caller {
                via: Via::Session { csrf, .. },
                ..
            }) => Some(csrf),
            _ => None,
        }
    }

    /// Accepts the CSRF token a form sent (compared in constant time).
    pub fn accept_csrf(&mut self, presented: &str) {
        if let Principal::User(Caller {
            via: Via::Session { csrf, csrf_ok },
            ..
        }) = self
            && credential::same(csrf, presented)
        {
            *csrf_ok = true;
        }
    }

    /// Fails a write made through a session without the CSRF token.
    fn check_csrf(&self) -> Result<(), AccessError> {
        match self {
            Principal::User(Caller {
                via: Via::Session { csrf_ok: false, .. },
                ..
            }) => Err(AccessError::Csrf),
            _ => Ok(()),
        }
    }

    /// The signed-in user, for actions about oneself (tokens, password).
    pub fn require_user(&self, writes: bool) -> Result<&UserRow, AccessError> {
        if writes {
            self.check_csrf()?;
        }
        self.user()
            .ok_or_else(|| AccessError::Unauthenticated("do that".into()))
    }

    /// An engine administrator, for managing users and creating projects.
    pub fn require_admin(&self, what: &'static str, writes: bool) -> Result<&UserRow, AccessError> {
        let user = self.require_user(writes)?;
        if user.is_admin {
            Ok(user)
        } else {
            Err(AccessError::AdminOnly(what))
        }
    }

    /// The role this principal acts with in a project, given what the database says.
    pub fn role_in(&self, access: &ProjectAccess) -> Option<Role> {
        if self.is_admin() {
            return Some(Role::Admin);
        }
        match (self, access.role) {
            (Principal::User(_), Some(role)) => Some(role),
            _ if access.anonymous_read => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// Decides whether `who` may do `action` in `project`: the single permission check.
pub async fn require(
    db: &PgPool,
    who: &Principal,
    project: &str,
    action: Action,
) -> Result<Granted, AccessError> {
    if action.writes() {
        who.check_csrf()?;
    }
    let access = db::project_access(db, project, who.user().map(|u| u.id)).await?;
    let Some(access) = access else {
        // Only an administrator learns that a project does not exist (and may create one
        // by applying a pipeline to it); everyone else gets the same answer as for a
        // project they may not see.
        return match who {
            // Applying a pipeline or setting a secret creates the project.
            _ if who.is_admin() && matches!(action, Action::EditPipeline | Action::WriteSecret) => {
                Ok(Granted {
                    project: None,
                    role: Some(Role::Admin),
                })
            }
            _ if who.is_admin() => Err(AccessError::NoProject(project.to_owned())),
            Principal::Anonymous => Err(AccessError::Unauthenticated(action.describe().into())),
            Principal::User(c) => Err(forbidden(&c.user.name, project, action)),
        };
    };
    let role = who.role_in(&access);
    if role.is_some_and(|r| r >= action.least_role()) {
        return Ok(Granted {
            project: Some(access.project),
            role,
        });
    }
    Err(match who {
        Principal::Anonymous => AccessError::Unauthenticated(action.describe().into()),
        Principal::User(c) => forbidden(&c.user.name, project, action),
    })
}

fn forbidden(user: &str, project: &str, action: Action) -> AccessError {
    AccessError::Forbidden {
        user: user.to_owned(),
        action: action.describe(),
        project: project.to_owned(),
        role: action.least_role().as_str(),
    }
}

/// The projects `who` may read: `None` means all of them (an administrator).
pub async fn readable_projects(
    db: &PgPool,
    who: &Principal,
) -> Result<Option<Vec<String>>, AccessError> {
    if who.is_admin() {
        return Ok(None);
    }
    let rows = db::projects(db, who.user().map(|u| u.id)).await?;
    let readable: Vec<String> = rows
        .into_iter()
        .filter(|p| p.anonymous_read || (who.user().is_some() && p.role.is_some()))
        .map(|p| p.name)
        .collect();
    if readable.is_empty() && matches!(who, Principal::Anonymous) {
        return Err(AccessError::Unauthenticated("see any project".into()));
    }
    Ok(Some(readable))
}

/// Whether `who` may decide an approval whose stage names `approvers` (user names and
/// `role:NAME` entries; empty means anyone with the Approve action), given their `role` in
/// the project.
pub fn may_approve(who: &Principal, role: Option<Role>, approvers: &[String]) -> bool {
    let Some(user) = who.user() else {
        return false;
    };
    if approvers.is_empty() {
        return role.is_some_and(|r| r >= Action::Approve.least_role());
    }
    approvers
        .iter()
        .any(|entry| match entry.strip_prefix("role:") {
            Some(name) => Role::parse(name).is_some_and(|needed| role.is_some_and(|r| r >= needed)),
            None => *entry == user.name && role.is_some(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, admin: bool) -> Principal {
        Principal::User(Caller {
            user: UserRow {
                id: UserId(1),
                name: name.into(),
                is_admin: admin,
                created_at: chrono::Utc::now(),
            },
            via: Via::Token,
        })
    }

    fn access(role: Option<Role>, anonymous_read: bool) -> ProjectAccess {
        ProjectAccess {
            project: ProjectId(1),
            anonymous_read,
            role,
        }
    }

    #[test]
    fn roles_include_the_ones_below_them() {
        let allowed = |role: Role| -> Vec<Action> {
            Action::ALL
                .into_iter()
                .filter(|a| role >= a.least_role())
                .collect()
        };
        assert_eq!(allowed(Role::Viewer), vec![Action::Read]);
        assert_eq!(
            allowed(Role::Developer),
            vec![Action::Read, Action::Trigger, Action::Cancel, Action::Rerun]
        );
        assert!(!allowed(Role::Maintainer).contains(&Action::ManageProject));
        assert_eq!(allowed(Role::Admin), Action::ALL.to_vec());
    }

    #[test]
    fn anonymous_read_gives_viewer_to_everyone_and_nothing_more() {
        assert_eq!(
            Principal::Anonymous.role_in(&access(None, true)),
            Some(Role::Viewer)
        );
        assert_eq!(Principal::Anonymous.role_in(&access(None, false)), None);
        assert_eq!(
            user("bob", false).role_in(&access(None, true)),
            Some(Role::Viewer)
        );
        assert_eq!(
            user("bob", false).role_in(&access(Some(Role::Developer), true)),
            Some(Role::Developer)
        );
        assert_eq!(
            user("root", true).role_in(&access(None, false)),
            Some(Role::Admin)
        );
    }

    #[test]
    fn approvers_name_users_or_least_roles() {
        let alice = user("alice", false);
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // No list: maintainers and up.
        assert!(may_approve(&alice, Some(Role::Maintainer), &[]));
        assert!(!may_approve(&alice, Some(Role::Developer), &[]));
        // Named: alice even as a viewer, but not without any role in the project.
        assert!(may_approve(&alice, Some(Role::Viewer), &names(&["alice"])));
        assert!(!may_approve(&alice, None, &names(&["alice"])));
        assert!(!may_approve(&alice, Some(Role::Admin), &names(&["bob"])));
        // Roles: that role or a higher one; unknown role names match nobody.
        assert!(may_approve(
            &alice,
            Some(Role::Admin),
            &names(&["bob", "role:maintainer"])
        ));
        assert!(!may_approve(
            &alice,
            Some(Role::Developer),
            &names(&["role:maintainer"])
        ));
        assert!(!may_approve(
            &alice,
            Some(Role::Admin),
            &names(&["role:release-managers"])
        ));
        assert!(!may_approve(&Principal::Anonymous, Some(Role::Admin), &[]));
    }

    #[test]
    fn session_writes_need_the_csrf_token() {
        let mut who = Principal::User(Caller {
            user: UserRow {
                id: UserId(1),
                name: "carol".into(),
                is_admin: true,
                created_at: chrono::Utc::now(),
            },
            via: Via::Session {
                csrf: "right".into(),
                csrf_ok: false,
            },
        });
        assert!(matches!(who.check_csrf(), Err(AccessError::Csrf)));
        who.accept_csrf("wrong");
        assert!(matches!(who.check_csrf(), Err(AccessError::Csrf)));
        who.accept_csrf("right");
        assert!(who.check_csrf().is_ok());
    }
}
