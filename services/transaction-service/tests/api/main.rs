//! The integration tests of transaction-service, one binary: the service in-process against the
//! local broker and a fresh database (SQLite, or PostgreSQL with `TEST_DATABASE_URL`).

// Helpers unwrap what the tests set up themselves; clippy exempts only `#[test]` functions.
#![allow(clippy::unwrap_used)]

mod backpressure;
mod faults;
mod helpers;
mod http;
mod processing;
mod rebuild;
mod replicas;
