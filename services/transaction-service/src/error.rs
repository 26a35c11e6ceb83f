//! The service's one error type and its HTTP mapping (problem+json): the edge. Validation,
//! storage, group-commit and ledger failures convert into [`Error`] with `From`; the consumer's
//! handlers turn it into a transient `HandleError`.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use platform::group_commit::CommitError;
use platform::{DbError, Problem};

use crate::backpressure::Overloaded;
use crate::domain::Invalid;

/// What can go wrong in transaction-service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is not valid (422 naming the field).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The transaction id is taken by another request (409).
    #[error(
        "transaction `{0}` was already requested with a different body; \
         use a new transactionId for a new transaction"
    )]
    Conflict(String),
    /// No such transaction (404).
    #[error("transaction `{0}` not found")]
    TransactionNotFound(String),
    /// No such account (404).
    #[error("account `{0}` not found")]
    AccountNotFound(String),
    /// A bad path or query string (400).
    #[error("{0}")]
    BadRequest(String),
    /// Input a platform helper refused (a length or paging limit), as its problem.
    #[error("{}", .0.detail)]
    Refused(Problem),
    /// The write was not committed (503: nothing stored, try again).
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// The ledger is too far behind to take a new request (503 with `Retry-After`).
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    /// The database failed (503 while it is full or away, else 500).
    #[error(transparent)]
    Db(#[from] DbError),
    /// A query failed (503 while the database is full or away, else 500; the consumer
    /// retries).
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// The database did not behave as the locks promise (e.g. a concurrent writer without locks).
    #[error("ledger inconsistency: {0}")]
    Inconsistent(String),
}

impl From<Problem> for Error {
    fn from(problem: Problem) -> Self {
        Error::Refused(problem)
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => Problem::invalid_field(&invalid.field, invalid.detail),
            Error::Conflict(_) => Problem::conflict(error.to_string()),
            Error::TransactionNotFound(_) | Error::AccountNotFound(_) => {
                Problem::not_found(error.to_string())
            }
            Error::BadRequest(detail) => Problem::bad_request(detail),
            Error::Refused(problem) => problem,
            Error::Commit(error) => error.into(),
            Error::Overloaded(_) => Problem::unavailable(error.to_string()),
            // An outage (full disk, database away) is a 503; anything else a 500.
            Error::Db(error) => error.into(),
            Error::Sql(error) => error.into(),
            Error::Inconsistent(_) => Problem::internal(&error),
        }
    }
}

impl IntoResponse for Error {
    /// The problem; an [`Error::Overloaded`] also says when to retry (`Retry-After`).
    fn into_response(self) -> Response {
        let retry_after = match &self {
            Error::Overloaded(overloaded) => Some(overloaded.retry_after_secs),
            _ => None,
        };
        let mut response = Problem::from(self).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn each_error_has_its_status() {
        let cases = [
            (
                Error::from(Invalid::new("amount", "bad")),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (Error::Conflict("t".into()), StatusCode::CONFLICT),
            (
                Error::TransactionNotFound("t".into()),
                StatusCode::NOT_FOUND,
            ),
            (Error::AccountNotFound("a".into()), StatusCode::NOT_FOUND),
            (Error::BadRequest("bad".into()), StatusCode::BAD_REQUEST),
            (
                Error::from(CommitError::Stopped),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Error::Inconsistent("x".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(Problem::from(error).status, status);
        }
    }

    #[test]
    fn an_overloaded_ledger_says_when_to_retry() {
        let overloaded = Overloaded {
            backlog: 12,
            limit: 10,
            retry_after_secs: 2,
        };
        let response = Error::from(overloaded).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
