//! customer-service against the real local broker and a real database (SQLite, or PostgreSQL
//! when `TEST_DATABASE_URL` is set). Each test has its own topic prefix and database.
//! One test binary for the crate: one module per area, the shared harness in `helpers`.

// The helpers unwrap like the tests they serve (clippy exempts only `#[test]` functions).
#![allow(clippy::unwrap_used)]

mod customers;
mod helpers;
