//! The integration tests of notification-service, one binary: the service against the real local
//! broker, a real database (SQLite, or PostgreSQL when `TEST_DATABASE_URL` is set) and a real
//! SMTP server (aiosmtpd). Every test here touches the database.

// The helpers unwrap (clippy exempts only the #[test] functions themselves).
#![allow(clippy::unwrap_used)]

mod customer_wait;
mod helpers;
mod notifications;
mod rebuild;
mod retention;
mod smtp_failures;
mod smtp_stall;
