//! Request limits every service enforces, and the check of a path or query value's length. Each
//! service keeps its own limits (id, name and email lengths, page sizes, the largest amount) in
//! one place too (`limits` in customer-service and notification-service, `domain` and
//! `settings` in transaction-service); README's "Request limits" lists them all.

use crate::foundation::problem::Problem;

/// Largest request body, in bytes: a larger one is answered 413 (problem+json naming the limit).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A path or query value of at most `max` characters; a longer one is a 422 naming `field` and
/// the limit.
pub fn check_length(field: &str, value: &str, max: usize) -> Result<(), Problem> {
    contracts::validation::check_length(field, value, max)
        .map_err(|e| Problem::invalid_field(field, e.detail).with("limit", max))
}

/// An optional integer query parameter (e.g. a page size): `default` when absent, else an integer
/// within `min..=max`; anything else (a blank value included) is a 422 naming `name`.
pub fn bounded(
    name: &'static str,
    value: Option<&str>,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, Problem> {
    let Some(text) = value else {
        return Ok(default);
    };
    match text.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(Problem::invalid_field(
            name,
            format!("`{name}` must be an integer from {min} to {max}"),
        )),
    }
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
    fn query_bounds() {
        assert_eq!(bounded("limit", None, 50, 1, 500).unwrap(), 50);
        assert_eq!(bounded("limit", Some("7"), 50, 1, 500).unwrap(), 7);
        for bad in ["0", "501", "-1", "x", "1.5", "", " 7"] {
            let p = bounded("limit", Some(bad), 50, 1, 500).unwrap_err();
            assert_eq!(p.extensions["field"], "limit", "{bad}");
        }
    }

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
