//! The inbox: event ids a consumer has applied. Claiming an id happens in the same transaction as
//! the effect, so a redelivered event is recognised and skipped.

use chrono::Utc;

use crate::db::{timestamp, Conn, DbError};

/// Records that `consumer` applies `event_id`; `false` when it already did (skip the event).
/// Call inside the transaction that applies the event.
pub async fn claim(conn: &mut Conn, consumer: &str, event_id: &str) -> Result<bool, DbError> {
    let result = sqlx::query(
        "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(timestamp(Utc::now()))
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected() == 1)
}
