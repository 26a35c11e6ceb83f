//! Exponential backoff (the `backon` crate) for the loops that retry until they succeed or the
//! service shuts down: the delay starts at `initial` and doubles up to `max`, without jitter
//! and without a limit on the number of attempts.

use std::time::Duration;

pub use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays from `initial`, doubling up to `max`, endless (`.build()` gives the iterator; or
/// hand it to `backon::Retryable::retry`).
pub fn exponential(initial: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(initial)
        .with_max_delay(max)
        .without_max_times()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_never_end() {
        let delays: Vec<u64> = exponential(Duration::from_millis(100), Duration::from_secs(1))
            .build()
            .take(7)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
    }
}
