//! The one place errors become HTTP responses: not found → 404, invalid input → 422 with the
//! details, conflicts → 409, not signed in → 401, not allowed → 403, anything else → 500 with the detail logged, not sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::EngineError;
use crate::run::RunError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid pipeline")]
    Invalid(Vec<String>),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// A webhook delivery that is not what its provider sends (400).
    #[error("{0}")]
    BadPayload(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Internal(String),
}

impl From<crate::webhook::Rejection> for ApiError {
    fn from(e: crate::webhook::Rejection) -> Self {
        use crate::webhook::Rejection;
        match e {
            Rejection::Unauthorized(m) => ApiError::Unauthorized(m),
            Rejection::BadPayload(m) => ApiError::BadPayload(m),
        }
    }
}

impl From<crate::webhook::process::ProcessError> for ApiError {
    fn from(e: crate::webhook::process::ProcessError) -> Self {
        use crate::webhook::process::ProcessError;
        match e {
            ProcessError::Store(s) => s.into(),
            ProcessError::Run(r) => r.into(),
            ProcessError::Source(s) => ApiError::Conflict(s.to_string()),
        }
    }
}

impl From<crate::access::AccessError> for ApiError {
    fn from(e: crate::access::AccessError) -> Self {
        use crate::access::AccessError;
        match e {
            AccessError::Unauthenticated(_) | AccessError::BadToken => {
                ApiError::Unauthorized(e.to_string())
            }
            AccessError::Forbidden { .. } | AccessError::AdminOnly(_) | AccessError::Csrf => {
                ApiError::Forbidden(e.to_string())
            }
            AccessError::NoProject(_) => ApiError::NotFound(e.to_string()),
            AccessError::Store(s) => s.into(),
        }
    }
}

impl From<crate::access::password::PasswordError> for ApiError {
    fn from(e: crate::access::password::PasswordError) -> Self {
        use crate::access::password::PasswordError;
        match e {
            PasswordError::TooShort => ApiError::BadRequest(e.to_string()),
            PasswordError::Hash(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::Conflict(c) => ApiError::Conflict(c),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(s) => s.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::deploy::DeployError> for ApiError {
    fn from(e: crate::deploy::DeployError) -> Self {
        use crate::deploy::DeployError;
        match e {
            DeployError::NotFound(_) | DeployError::NoRevision(_) => {
                ApiError::NotFound(e.to_string())
            }
            DeployError::Paused(_) | DeployError::NoCluster => ApiError::Conflict(e.to_string()),
            DeployError::NoSuchContainer { .. } | DeployError::WhichContainer { .. } => {
                ApiError::BadRequest(e.to_string())
            }
            DeployError::Kube(detail) => ApiError::Internal(detail),
        }
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Invalid(report) => ApiError::Invalid(report.lines().collect()),
            RunError::BadRequest(m) => ApiError::BadRequest(m),
            RunError::Conflict(m) => ApiError::Conflict(m),
            RunError::Store(s) => s.into(),
            RunError::Engine(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, json!({ "error": m })),
            ApiError::BadRequest(m) => (StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": m })),
            ApiError::Invalid(problems) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "error": "invalid pipeline", "problems": problems }),
            ),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, json!({ "error": m })),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, json!({ "error": m })),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, json!({ "error": m })),
            ApiError::BadPayload(m) => (StatusCode::BAD_REQUEST, json!({ "error": m })),
            ApiError::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, json!({ "error": m })),
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": "internal error; see the engine's log" }),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

/// An error on a web UI page: the same mapping to a status as [`ApiError`], shown as an HTML
/// page instead of JSON (a page that needs a signed-in user redirects to the sign-in form;
/// see `ui::router`).
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError(e.into())
    }
}

impl From<crate::ui::UiError> for ApiError {
    fn from(e: crate::ui::UiError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match &self.0 {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            ApiError::BadRequest(m) => (StatusCode::UNPROCESSABLE_ENTITY, m.clone()),
            ApiError::Invalid(problems) => (StatusCode::UNPROCESSABLE_ENTITY, problems.join("\n")),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.clone()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            ApiError::BadPayload(m) => (StatusCode::BAD_REQUEST, m.clone()),
            ApiError::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m.clone()),
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error on a page");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the engine's log".to_owned(),
                )
            }
        };
        crate::ui::error_page(status, &message)
    }
}
