//! Errors on web UI pages: the API's mapping of errors to statuses ([`ApiError`]), shown as an
//! HTML page instead of JSON. A handler's error leaves only a note on its response
//! ([`ErrorNote`]); `ui::router`'s middleware renders every error answer (these notes, and
//! axum's own bare ones: unknown paths, wrong methods, unreadable forms) as the error page,
//! with the signed-in user's header and a way back.

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

/// What went wrong, for people: put on an error response for the middleware to render.
#[derive(Clone, Debug)]
pub struct ErrorNote(pub String);

impl PageError {
    /// The status and the message people see (internal details are logged, not shown).
    pub fn status_and_message(&self) -> (StatusCode, String) {
        match &self.0 {
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
                    "Something went wrong inside the engine; the details are in the engine's log."
                        .to_owned(),
                )
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = self.status_and_message();
        // The text body is what a client outside the UI's router would see; the middleware
        // replaces it with the page.
        let mut response = (status, message.clone()).into_response();
        response.extensions_mut().insert(ErrorNote(message));
        response
    }
}

/// What to tell people about an error answer that carries no [`ErrorNote`] (axum's own: no
/// such route, a method the route does not take, a form or address it could not read), given
/// the request's method and path and the answer's text.
pub fn bare_error_message(status: StatusCode, method: &str, path: &str, body: &str) -> String {
    let body = body.trim();
    match status {
        StatusCode::NOT_FOUND => format!("There is no page at {path}."),
        StatusCode::METHOD_NOT_ALLOWED if method == "GET" => format!(
            "{path} is where a button on another page sends its form; it is not a page to open. \
             Go back to the page and use its button."
        ),
        StatusCode::METHOD_NOT_ALLOWED => format!("{path} does not take {method} requests."),
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            let detail = if body.is_empty() {
                String::new()
            } else {
                format!(" ({body})")
            };
            format!(
                "The engine could not read this request{detail}. Go back, reload the page and try \
                 again."
            )
        }
        _ if !body.is_empty() => body.to_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("Something went wrong")
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_errors_say_what_is_wrong_and_what_to_do() {
        let not_found = bare_error_message(StatusCode::NOT_FOUND, "GET", "/nope", "");
        assert_eq!(not_found, "There is no page at /nope.");
        let method =
            bare_error_message(StatusCode::METHOD_NOT_ALLOWED, "GET", "/runs/1/cancel", "");
        assert!(method.contains("use its button"), "{method}");
        let form = bare_error_message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "POST",
            "/tokens",
            "Failed to deserialize form body: missing field `csrf`",
        );
        assert!(
            form.contains("missing field `csrf`") && form.contains("reload the page"),
            "{form}"
        );
    }
}
