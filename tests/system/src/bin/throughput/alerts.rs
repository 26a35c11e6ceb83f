//! The alerts notification-service recorded, read from its database (`deliveries`: one row per
//! notification, written when the transaction event is consumed; sending comes later).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use platform::Database;

/// Read access to notification-service's database.
pub struct Alerts {
    db: Database,
}

/// How many alerts of a run were recorded, and when the last one was.
#[derive(Debug, Clone, Copy)]
pub struct Recorded {
    /// Alerts recorded.
    pub count: i64,
    /// When the last one was recorded (wall clock).
    pub last: Option<SystemTime>,
}

impl Alerts {
    /// Opens the database at `url` (the service's own `DATABASE_URL`).
    pub async fn open(url: &str) -> Result<Self> {
        let db = Database::connect(url)
            .await
            .context("notification-service's database")?;
        Ok(Self { db })
    }

    /// The connection to notification-service's database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The alerts about transactions whose id starts with `prefix`.
    pub async fn recorded(&self, prefix: &str) -> Result<Recorded> {
        let (count, last): (i64, Option<String>) = sqlx::query_as(
            "SELECT COUNT(*), MAX(created_at) FROM deliveries WHERE transaction_id LIKE $1",
        )
        .bind(format!("{prefix}%"))
        .fetch_one(self.db.pool())
        .await?;
        let last = match last {
            Some(text) => {
                let millis = platform::db::parse_timestamp(&text)?.timestamp_millis();
                Some(UNIX_EPOCH + Duration::from_millis(u64::try_from(millis)?))
            }
            None => None,
        };
        Ok(Recorded { count, last })
    }

    /// Polls until `expected` alerts about `prefix` transactions are recorded, or `timeout`.
    pub async fn wait(&self, prefix: &str, expected: i64, timeout: Duration) -> Result<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let recorded = self.recorded(prefix).await?;
            if recorded.count >= expected || tokio::time::Instant::now() >= deadline {
                return Ok(recorded);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
