//! Request limits every service enforces, and the check of a path or query value's length. Each
//! service keeps its own limits (id, name and email lengths, page sizes, the largest amount) in
//! one place too (`limits` in customer-service and notification-service, `domain` and
//! `settings` in transaction-service); README's "Request limits" lists them all.

use crate::http::Problem;

/// Largest request body, in bytes: a larger one is answered 413 (problem+json naming the limit).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A path or query value of at most `max` characters; a longer one is a 422 naming `field` and
/// the limit.
pub fn check_length(field: &str, value: &str, max: usize) -> Result<(), Problem> {
    contracts::validation::check_length(field, value, max)
        .map_err(|e| Problem::invalid_field(field, e.detail).with("limit", max))
}

/// The 413 answer to a body larger than [`MAX_BODY_BYTES`].
pub fn body_too_large() -> Problem {
    Problem::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than the limit of {MAX_BODY_BYTES} bytes"),
    )
    .with("limit", MAX_BODY_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_counted_in_characters() {
        assert!(check_length("id", &"é".repeat(4), 4).is_ok());
        let problem = check_length("id", "abcde", 4).unwrap_err();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.extensions["field"], "id");
        assert_eq!(problem.extensions["limit"], 4);
        assert!(problem.detail.contains("at most 4"), "{}", problem.detail);
    }
}
