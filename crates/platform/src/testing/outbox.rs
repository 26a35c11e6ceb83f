//! Waiting for the outbox relay to publish what a service has written.

use super::wait::{eventually, DEADLINE};
use crate::store::db::Database;

/// Waits until the outbox of `db` has nothing pending: the relay has published every event
/// written so far. Panics after [`DEADLINE`], or when the outbox cannot be read.
pub async fn outbox_drained(db: &Database) {
    eventually(
        "the outbox relay to publish every event",
        DEADLINE,
        || async {
            let pending = crate::outbox::pending(db)
                .await
                .unwrap_or_else(|e| panic!("count the pending outbox rows: {e}"));
            (pending == 0).then_some(())
        },
    )
    .await;
}
