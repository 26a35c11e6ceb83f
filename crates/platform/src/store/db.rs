//! The database: SQLite by default (a file per service, zero set-up), PostgreSQL when
//! `DATABASE_URL` says so. Queries are written once in portable SQL (`$1` placeholders, `TEXT`
//! timestamps, `BIGINT` numbers) and run through sqlx's `Any` driver. TLS to PostgreSQL: see
//! [`crate::store::db_tls`].

mod database;
mod error;
mod sql;
mod tx;
mod urls;

pub use crate::store::db_tls::{DatabaseCa, TlsRefusal};
pub use database::Database;
pub use error::DbError;
pub use sql::{is_unique_violation, json_param, parse_timestamp, timestamp, Backend, SqlType};
pub use tx::{Conn, Tx};
pub use urls::redact_url;
