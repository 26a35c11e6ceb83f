//! The service's one error type and its HTTP mapping: every route answers its errors as RFC 9457
//! problem+json ([`platform::Problem`]), built here and nowhere else.

use axum::response::{IntoResponse, Response};
use platform::Problem;

/// The detail of [`Error::MissingCustomerId`].
const MISSING_CUSTOMER_ID: &str = "the query parameter customerId is required";

/// Why a request to the service failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query parameter the platform's checks refused (a `limit` out of range, a `customerId`
    /// too long): 422 naming the parameter (and the limit).
    #[error("{}", .0.detail)]
    Parameter(Problem),
    /// `GET /notifications` without a `customerId` (or a blank one): 422 naming it.
    #[error("{MISSING_CUSTOMER_ID}")]
    MissingCustomerId,
    /// The database failed: 503 while it is full or away, else 500; the cause goes to the log
    /// only.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<Problem> for Error {
    fn from(problem: Problem) -> Self {
        Error::Parameter(problem)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match self {
            Error::Parameter(problem) => problem,
            Error::MissingCustomerId => Problem::invalid_field("customerId", MISSING_CUSTOMER_ID),
            // A full or unreachable database is a 503 (see `platform::db_outage`).
            Error::Database(error) => error.into(),
        };
        problem.into_response()
    }
}
