//! Database faults that pass: the disk is full (SQLite's `SQLITE_FULL`, PostgreSQL's
//! `disk_full` 53100) or the database cannot be reached (a lost connection, a server restarting or
//! shutting down, a pool that finds no connection in time). A request that meets one stored
//! nothing and can be tried again later: it is answered `503 Service Unavailable` with
//! `Retry-After` and a detail saying which ([`Outage::detail`]), never a 500. Consumers treat the
//! same errors as transient: they keep their offsets and retry until the database is back.

use std::sync::Arc;

use crate::foundation::problem::Problem;
/// The `Retry-After` of a request refused because the database is away, in seconds.
pub use crate::foundation::problem::RETRY_AFTER_SECS;
use crate::store::db::DbError;
use crate::store::group_commit::CommitError;

/// SQLite's primary result code `SQLITE_FULL` ("database or disk is full").
const SQLITE_FULL: i64 = 13;

/// PostgreSQL's SQLSTATEs of an outage: `disk_full`, and the server shutting down or starting.
const POSTGRES_FULL: &str = "53100";
const POSTGRES_GOING_AWAY: [&str; 3] = ["57P01", "57P02", "57P03"];

/// A database fault that passes by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// The database (or its disk) is full.
    Full,
    /// The database cannot be reached (connection lost, server restarting).
    Unreachable,
}

impl Outage {
    /// The 503 of a request that met this outage: its detail says which; `error` is logged as
    /// a warning (the outage passes by itself).
    pub fn problem(self, error: &dyn std::fmt::Display) -> Problem {
        tracing::warn!(%error, outage = ?self, "request refused: the database is away");
        Problem::unavailable(self.detail())
    }

    /// The outage `error` reports, if it is one.
    pub fn of(error: &sqlx::Error) -> Option<Self> {
        match error {
            sqlx::Error::Database(db) => Self::of_code(&db.code().unwrap_or_default()),
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Some(Self::Unreachable),
            _ => None,
        }
    }

    /// The outage a SQLSTATE (PostgreSQL) or result code (SQLite) reports, if it is one.
    fn of_code(code: &str) -> Option<Self> {
        if code == POSTGRES_FULL || sqlite_full(code) {
            Some(Self::Full)
        } else if POSTGRES_GOING_AWAY.contains(&code) || code.starts_with("08") {
            // Class 08: connection exception.
            Some(Self::Unreachable)
        } else {
            None
        }
    }

    /// The outage `error` or one of its sources reports (a consumer's handler error keeps
    /// the database error as a source): such an error is retried for as long as it lasts.
    pub fn in_chain(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(outage) = Self::of_one(error) {
                return Some(outage);
            }
            next = error.source();
        }
        None
    }

    /// The outage `error` itself reports, for the error types that carry one.
    fn of_one(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        use sqlx::error::DatabaseError;
        if let Some(error) = error.downcast_ref::<sqlx::Error>() {
            Self::of(error)
        } else if let Some(error) = error.downcast_ref::<Arc<sqlx::Error>>() {
            Self::of(error)
        } else if let Some(error) = error.downcast_ref::<DbError>() {
            error.outage()
        } else if let Some(error) = error.downcast_ref::<CommitError>() {
            match error {
                CommitError::Db(db) => db.outage(),
                CommitError::Stopped => None,
            }
        } else if let Some(error) = error.downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            Self::of_code(error.code())
        } else if let Some(error) = error.downcast_ref::<sqlx::sqlite::SqliteError>() {
            Self::of_code(&DatabaseError::code(error).unwrap_or_default())
        } else {
            None
        }
    }

    /// What a client is told: what is wrong, that nothing was stored, when to come back.
    pub fn detail(self) -> &'static str {
        match self {
            Self::Full => {
                "the database is out of space: the request was not stored; try again later \
                 (the service resumes by itself once space is freed)"
            }
            Self::Unreachable => {
                "the database cannot be reached: the request was not completed; try again \
                 later with the same request (the service resumes by itself once the database \
                 is back)"
            }
        }
    }
}

/// Whether a SQLite result code (the extended one, as sqlx reports it) is `SQLITE_FULL`.
fn sqlite_full(code: &str) -> bool {
    code.parse::<i64>()
        .is_ok_and(|code| code & 0xff == SQLITE_FULL)
}

impl DbError {
    /// The outage this error reports, if it is one (see [`Outage`]).
    pub fn outage(&self) -> Option<Outage> {
        match self {
            DbError::Connect { source, .. } | DbError::Query(source) => Outage::of(source),
            DbError::Commit(source) => Outage::of(source),
            DbError::Tls { .. } | DbError::Migrate(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_and_timeouts_are_outages_other_errors_not() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(Outage::of(&sqlx::Error::Io(io)), Some(Outage::Unreachable));
        assert_eq!(
            Outage::of(&sqlx::Error::PoolTimedOut),
            Some(Outage::Unreachable)
        );
        assert_eq!(Outage::of(&sqlx::Error::RowNotFound), None);
        assert!(sqlite_full("13"));
        assert!(
            !sqlite_full("2067"),
            "a unique constraint is not a full disk"
        );
        assert!(Outage::Full.detail().contains("out of space"));
        let handled =
            crate::kafka::HandleError::transient(sqlx::Error::PoolTimedOut).context("database");
        assert!(handled.is_database_outage(), "found through the sources");
        assert!(!crate::kafka::HandleError::transient("SMTP: busy").is_database_outage());
    }

    #[tokio::test]
    async fn a_sqlite_database_at_its_size_limit_is_full() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/full.db", dir.path().display());
        let db = crate::store::db::Database::connect(&url)
            .await
            .expect("database");
        let pool = db.pool();
        sqlx::query("CREATE TABLE t (v TEXT)")
            .execute(pool)
            .await
            .expect("table");
        // The limit cannot go below the current size: this caps the database where it is.
        sqlx::query("PRAGMA max_page_count = 1")
            .execute(pool)
            .await
            .expect("limit");
        let error = sqlx::query("INSERT INTO t (v) VALUES ($1)")
            .bind("x".repeat(100_000))
            .execute(pool)
            .await
            .expect_err("no room");
        assert_eq!(Outage::of(&error), Some(Outage::Full), "{error}");
    }
}
