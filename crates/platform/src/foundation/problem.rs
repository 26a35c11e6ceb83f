//! RFC 9457 problem+json: [`Problem`], the error response of every service, and
//! [`ProblemDetails`], its body as the OpenAPI documents describe it. Imports nothing of the crate:
//! every layer that answers HTTP requests (auth, limits, rate limit, the HTTP bootstrap) builds
//! its errors with it.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// The `Retry-After` of every 503, in seconds, unless its caller sets another.
pub const RETRY_AFTER_SECS: u64 = 2;

/// An RFC 9457 problem: every error response of every service.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable explanation of this occurrence.
    pub detail: String,
    /// Extra members (e.g. the field that failed validation).
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem with `status` and `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            extensions: serde_json::Map::new(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 404 Not Found.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 409 Conflict.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    /// 422 Unprocessable Content, naming the offending field.
    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail).with("field", field)
    }

    /// 500, without internals (they go to the log).
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server could not complete the request; it has been logged",
        )
    }

    /// 503 Service Unavailable.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extensions.insert(key.to_string(), value.into());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("type".into(), "about:blank".into());
        body.insert(
            "title".into(),
            self.status.canonical_reason().unwrap_or("Error").into(),
        );
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("detail".into(), self.detail.into());
        body.extend(self.extensions);
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            Json(serde_json::Value::Object(body)),
        )
            .into_response();
        // Every 503 passes: say when to come back (a caller may set its own value after).
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// The body of every error response, as documented in the services' OpenAPI documents (the
/// response itself is built by [`Problem`]).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProblemDetails {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP reason phrase.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong.
    pub detail: String,
    /// The request member at fault (validation errors).
    pub field: Option<String>,
}
