//! Errors as RFC 9457 problems: the database's and the write path's errors, and the middleware
//! that turns every other error response (a framework rejection, an over-long request target)
//! into a problem.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::foundation::problem::Problem;

impl From<crate::store::group_commit::CommitError> for Problem {
    fn from(error: crate::store::group_commit::CommitError) -> Self {
        let outage = match &error {
            crate::store::group_commit::CommitError::Db(db) => db.outage(),
            crate::store::group_commit::CommitError::Stopped => None,
        };
        match outage {
            Some(outage) => outage.problem(&error),
            None => {
                tracing::error!(%error, "write not committed");
                Problem::unavailable(
                    "the write could not be committed; nothing was stored, try again",
                )
            }
        }
    }
}

impl From<crate::store::db::DbError> for Problem {
    fn from(error: crate::store::db::DbError) -> Self {
        match error.outage() {
            Some(outage) => outage.problem(&error),
            None => Problem::internal(&error),
        }
    }
}

impl From<sqlx::Error> for Problem {
    fn from(error: sqlx::Error) -> Self {
        match crate::store::db_outage::Outage::of(&error) {
            Some(outage) => outage.problem(&error),
            None => Problem::internal(&error),
        }
    }
}

/// Marks an error response whose body is meant as it is (the readiness report), not a problem.
#[derive(Debug, Clone, Copy)]
pub(super) struct NotAProblem;

/// The longest request target (path and query) accepted; longer ones get a 414 problem.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Middleware: refuses an over-long request target (414), and turns an error response that is not
/// problem+json (nor the readiness report, which is JSON of its own) — a framework rejection such as 405, 413, or a path or query that does not parse
/// — into one with the same status, its text as the detail, and its `Allow`, `Retry-After` and
/// `WWW-Authenticate` headers.
pub(super) async fn problems_for_every_error(request: Request, next: Next) -> Response {
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target_len > MAX_URI_BYTES {
        return Problem::new(
            StatusCode::URI_TOO_LONG,
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        )
        .with("limit", MAX_URI_BYTES)
        .into_response();
    }
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"))
        || response.extensions().get::<NotAProblem>().is_some();
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let detail = match (status, text.is_empty()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("this route does not take that method; it takes: {allowed}")
        }
        (_, false) => text,
        (_, true) => status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_string(),
    };
    let mut problem = Problem::new(status, detail).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(value) = parts.headers.get(&name) {
            problem.headers_mut().insert(name, value.clone());
        }
    }
    *problem.extensions_mut() = parts.extensions;
    problem
}
