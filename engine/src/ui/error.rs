//! Errors on web UI pages: the API's mapping of errors to statuses ([`ApiError`]), shown as an
//! HTML page instead of JSON.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;

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

impl From<super::UiError> for ApiError {
    fn from(e: super::UiError) -> Self {
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
            ApiError::Busy { message, .. } => (StatusCode::SERVICE_UNAVAILABLE, message.clone()),
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error on a page");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the engine's log".to_owned(),
                )
            }
        };
        super::error_page(status, &message)
    }
}
