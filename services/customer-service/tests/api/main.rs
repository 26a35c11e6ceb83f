//! customer-service against the real local broker and a real database (SQLite, or PostgreSQL
//! when `TEST_DATABASE_URL` is set). Each test has its own topic prefix and database.
//! One test binary for the crate: one module per area; the harness is `platform::testing`, and
//! what is specific to this service is in `helpers`.

mod customers;
mod helpers;
