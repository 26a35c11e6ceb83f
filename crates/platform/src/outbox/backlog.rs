//! The outbox's backlog: rows not yet published, for the gauges, `/readyz` and tests.

use chrono::Utc;
use sqlx::Row;

use crate::store::db::{parse_timestamp, Database, DbError};

/// Sets the backlog gauges: rows not yet published and the age of the oldest; returns the
/// number of rows.
pub(super) async fn report_backlog(db: &Database) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE sent_at IS NULL",
    )
    .fetch_one(db.reads())
    .await?;
    let pending: i64 = row.try_get("n")?;
    let oldest: Option<String> = row.try_get("oldest")?;
    let age = match oldest {
        Some(oldest) => (Utc::now() - parse_timestamp(&oldest)?)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64(),
        None => 0.0,
    };
    metrics::gauge!("outbox_pending_rows").set(pending as f64);
    metrics::gauge!("outbox_oldest_pending_age_seconds").set(age);
    Ok(pending)
}

/// Number of rows not yet published (for metrics and tests).
pub async fn pending(db: &Database) -> Result<i64, DbError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL")
        .fetch_one(db.reads())
        .await?;
    Ok(row.try_get::<i64, _>("n")?)
}
