//! Short stalls: work that has waited without progress for longer than [`STALL_NOTICE`] (a
//! broker failover, a hung leader) shows within seconds in `event_stall_seconds{stage}` (for the
//! `EventFlowStalled` alert) and in the `/readyz` body, while readiness stays up: only a stall
//! longer than `READY_STALL_SECS` fails a check.

use std::time::Duration;

/// How long work may wait without progress before `/readyz` names the stall.
pub const STALL_NOTICE: Duration = Duration::from_secs(5);

/// Sets `event_stall_seconds{stage}`: how long work of `stage` (`relay`, `consumer:<group>`) has
/// waited without progress (0 when nothing waits or it moves).
pub(crate) fn report(stage: &str, stalled_for: Duration) {
    metrics::gauge!("event_stall_seconds", "stage" => stage.to_string())
        .set(stalled_for.as_secs_f64());
}

/// `"stalled for N s: <what>"` when `waited` is past [`STALL_NOTICE`].
pub(crate) fn note(waited: Duration, what: impl FnOnce() -> String) -> Option<String> {
    (waited > STALL_NOTICE).then(|| format!("stalled for {} s: {}", waited.as_secs(), what()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_past_the_notice_is_named_and_a_shorter_one_is_not() {
        assert_eq!(note(Duration::from_secs(2), || "x".into()), None);
        assert_eq!(
            note(Duration::from_secs(7), || "3 outbox rows waiting".into()).as_deref(),
            Some("stalled for 7 s: 3 outbox rows waiting")
        );
    }
}
