//! The service's one error type and its HTTP mapping (problem+json): the edge. Handlers return
//! [`Error`]; the domain, the use case and storage convert into it with `From`.

use axum::extract::rejection::PathRejection;
use axum::response::{IntoResponse, Response};
use platform::group_commit::CommitError;
use platform::Problem;

use crate::domain::CustomerError;

/// Why a customer-service request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A customer rule refused it: an invalid field (422), an unknown customer (404), an id taken
    /// by another customer (409).
    #[error(transparent)]
    Customer(#[from] CustomerError),
    /// A request value failed a platform check, already answered as a problem (a length limit,
    /// a page parameter).
    #[error("{}", .0.detail)]
    Request(Problem),
    /// A path that cannot be read (e.g. not UTF-8): 400.
    #[error(transparent)]
    Path(#[from] PathRejection),
    /// The registration was not committed (nothing stored): 503.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// A query failed: 500, the cause logged.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<Problem> for Error {
    fn from(problem: Problem) -> Self {
        Error::Request(problem)
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        match error {
            Error::Customer(error) => customer_problem(error),
            Error::Request(problem) => problem,
            Error::Path(rejection) => Problem::bad_request(rejection.body_text()),
            Error::Commit(error) => error.into(),
            Error::Database(error) => error.into(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

fn customer_problem(error: CustomerError) -> Problem {
    let detail = error.to_string();
    match error {
        CustomerError::Invalid { field, .. } => Problem::invalid_field(field, detail),
        CustomerError::NotFound(_) => Problem::not_found(detail),
        CustomerError::Conflict(_) => Problem::conflict(detail),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    fn problem(error: CustomerError) -> Problem {
        Problem::from(Error::from(error))
    }

    #[test]
    fn errors_map_to_problems() {
        let p = problem(CustomerError::Conflict("c".into()));
        assert_eq!(p.status, StatusCode::CONFLICT);
        let p = problem(CustomerError::Invalid {
            field: "email",
            detail: "bad".into(),
        });
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(p.extensions["field"], "email");
        let p = problem(CustomerError::NotFound("c".into()));
        assert_eq!(p.status, StatusCode::NOT_FOUND);
    }
}
