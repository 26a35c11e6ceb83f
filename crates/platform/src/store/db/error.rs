//! Database errors ([`DbError`]).

use std::sync::Arc;

use crate::store::db_tls::TlsRefusal;

/// Database errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be opened (the URL is shown without its password).
    #[error("cannot open database {url}: {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver error.
        source: sqlx::Error,
    },
    /// PostgreSQL's TLS handshake was refused (the URL is shown without its password).
    #[error("cannot open database {url}: TLS refused: {reason}")]
    Tls {
        /// The URL, password redacted.
        url: String,
        /// Why.
        reason: TlsRefusal,
    },
    /// A schema migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    /// The shared commit of SQLite's write cycle failed: nothing of the write was committed.
    #[error("database error: commit failed: {0}")]
    Commit(#[source] Arc<sqlx::Error>),
}
