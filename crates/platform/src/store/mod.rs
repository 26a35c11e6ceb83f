//! The database (SQLite or PostgreSQL): connections and TLS, the SQLite writer, the group commit
//! and the outages; on `foundation` only (but for a unit test of `db_outage`, on `kafka`).

pub mod db;
pub mod db_binding;
pub mod db_outage;
pub mod db_tls;
mod db_writer;
pub mod group_commit;
