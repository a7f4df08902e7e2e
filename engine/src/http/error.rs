//! The one place errors become HTTP responses: not found → 404, invalid input → 422 with the
//! details, conflicts → 409, not signed in → 401, not allowed → 403, anything else → 500 with the detail logged, not sent.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

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
    /// Too busy right now: 503 with `Retry-After` (seconds).
    #[error("{message}")]
    Busy {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Internal(String),
}

impl From<crate::webhook::intake::IntakeError> for ApiError {
    fn from(e: crate::webhook::intake::IntakeError) -> Self {
        use crate::webhook::intake::{IntakeError, RETRY_AFTER_SECS};
        match e {
            IntakeError::Busy(_) => ApiError::Busy {
                message: e.to_string(),
                retry_after_secs: RETRY_AFTER_SECS,
            },
            IntakeError::Failed(detail) => ApiError::Internal(detail),
        }
    }
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

impl From<crate::webhook::generic::GenericError> for ApiError {
    fn from(e: crate::webhook::generic::GenericError) -> Self {
        use crate::webhook::generic::GenericError;
        match e {
            GenericError::Denied { .. } => ApiError::Unauthorized(e.to_string()),
            GenericError::BadBody(_) => ApiError::BadPayload(e.to_string()),
            GenericError::Store(s) => s.into(),
            GenericError::Run(r) => r.into(),
            GenericError::Secret(detail) => ApiError::Internal(detail),
        }
    }
}

impl From<crate::attempt::AttemptError> for ApiError {
    fn from(e: crate::attempt::AttemptError) -> Self {
        use crate::attempt::AttemptError;
        match e {
            AttemptError::Stale { .. } | AttemptError::Conflict(_) | AttemptError::Failed(_) => {
                ApiError::Conflict(e.to_string())
            }
            AttemptError::BadReport(m) => ApiError::BadRequest(m),
            AttemptError::Store(s) => s.into(),
            AttemptError::Run(r) => r.into(),
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

/// The body of every error answer. `problems` is there only for an invalid pipeline.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
// No other fields are ever sent: this also has the document say so (`additionalProperties`).
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// For an invalid pipeline: one `FILE:LINE:COL: message` per problem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl ErrorBody {
    fn new(error: impl Into<String>) -> Json<ErrorBody> {
        Json(ErrorBody {
            error: error.into(),
            problems: Vec::new(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, ErrorBody::new(m)),
            ApiError::BadRequest(m) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorBody::new(m)),
            ApiError::Invalid(problems) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(ErrorBody {
                    error: "invalid pipeline".into(),
                    problems,
                }),
            ),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, ErrorBody::new(m)),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, ErrorBody::new(m)),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, ErrorBody::new(m)),
            ApiError::BadPayload(m) => (StatusCode::BAD_REQUEST, ErrorBody::new(m)),
            ApiError::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorBody::new(m)),
            ApiError::Busy {
                message,
                retry_after_secs,
            } => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(
                        axum::http::header::RETRY_AFTER,
                        retry_after_secs.to_string(),
                    )],
                    ErrorBody::new(message),
                )
                    .into_response();
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorBody::new("internal error; see the engine's log"),
                )
            }
        };
        (status, body).into_response()
    }
}

/// What a request that axum's own extractors refuse becomes: their rejections answer in plain
/// text, with 400 or 415, neither of which the API documents; ours answer with the one JSON
/// error, as 422 (the request is not valid), naming what was wrong.
fn rejected(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(text)
    } else if status.is_server_error() {
        ApiError::Internal(text)
    } else {
        ApiError::BadRequest(text)
    }
}

/// A JSON request body whose rejection (malformed JSON, a missing field) is a 422 with the
/// usual error body, like every other error.
pub struct Input<T>(pub T);

impl<T, S> FromRequest<S> for Input<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match <Json<T> as FromRequest<S>>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Input(value)),
            Err(rejection) => Err(rejected(rejection.status(), rejection.body_text())),
        }
    }
}

/// `Option<Input<T>>`: no body (no `Content-Type`) is `None`; a body that is not the JSON
/// asked for is a 422, as for [`Input`].
impl<T, S> OptionalFromRequest<S> for Input<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        match <Json<T> as OptionalFromRequest<S>>::from_request(req, state).await {
            Ok(value) => Ok(value.map(|Json(value)| Input(value))),
            Err(rejection) => Err(rejected(rejection.status(), rejection.body_text())),
        }
    }
}

/// Path parameters (`/runs/{id}`) whose rejection (not UTF-8 once decoded, not the type asked
/// for) is a 422 with the usual error body.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(rejected(rejection.status(), rejection.body_text())),
        }
    }
}

/// Query parameters (`?limit=50`) whose rejection (`limit=ten`) is a 422 with the usual
/// error body, naming the parameter.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(rejected(rejection.status(), rejection.body_text())),
        }
    }
}

/// A text request body (a pipeline file, a secret's value, a password) whose rejection (not
/// UTF-8) is a 422 with the usual error body.
pub struct Text(pub String);

impl<S> FromRequest<S> for Text
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match String::from_request(req, state).await {
            Ok(text) => Ok(Text(text)),
            Err(rejection) => Err(rejected(rejection.status(), rejection.body_text())),
        }
    }
}
