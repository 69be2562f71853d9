//! Errors as Sync Gateway reports them: `{"error":…,"reason":…}` with its statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The realm named in `WWW-Authenticate` on every 401.
pub(crate) const REALM: &str = "Basic realm=\"Couchbase Sync Gateway\"";

/// An HTTP error answered as Sync Gateway does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) reason: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, reason)
    }

    pub(crate) fn unauthorized(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, reason)
    }

    pub(crate) fn not_found(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, reason)
    }

    pub(crate) fn conflict(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, reason)
    }

    pub(crate) fn internal(reason: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Internal error: {reason}"),
        )
    }

    /// The `error` member: `not_found`, `conflict`, or Go's status text.
    pub(crate) fn name(&self) -> String {
        error_name(self.status)
    }
}

/// `not_found` for 404, `conflict` for 409, else the status text ("Bad Request", …).
pub(crate) fn error_name(status: StatusCode) -> String {
    match status {
        StatusCode::NOT_FOUND => "not_found".into(),
        StatusCode::CONFLICT => "conflict".into(),
        other => other.canonical_reason().unwrap_or("Error").into(),
    }
}

impl From<ferrolite::Error> for ApiError {
    fn from(e: ferrolite::Error) -> ApiError {
        use ferrolite::ErrorCode;
        let code = e.code();
        if e.domain() != ferrolite::ErrorDomain::Ferrolite {
            return ApiError::internal(e);
        }
        if code == ErrorCode::NotFound as i32 {
            ApiError::not_found("missing")
        } else if code == ErrorCode::Conflict as i32 {
            ApiError::conflict("Document revision conflict")
        } else if code == ErrorCode::InvalidParameter as i32
            || code == ErrorCode::BadDocId as i32
            || code == ErrorCode::BadRevisionId as i32
        {
            ApiError::bad_request(e.message().to_owned())
        } else if code == ErrorCode::NotOpen as i32 || code == ErrorCode::Busy as i32 {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "DB is currently under maintenance",
            )
        } else {
            ApiError::internal(e)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.name(), "reason": self.reason});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
        }
        response
    }
}
