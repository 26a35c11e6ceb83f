//! The platform crate's integration tests, one binary (`cargo test -p platform --test
//! integration`), one module per area; tests are named `<module>::<test>`. They run against the
//! local broker (`cargo xtask kafka start`) and a fresh database each (SQLite, or PostgreSQL
//! with `TEST_DATABASE_URL`); `kafka::` needs no database. The telemetry test is a binary of its
//! own (`tests/telemetry.rs`): it installs the process-wide tracing subscriber and tracer.

// Test helpers outside #[test] functions unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod db_tls;
mod health;
mod http_guards;
mod kafka;
mod outbox_inbox;
mod relay_lease;
mod retention;
mod topic_configs;
mod writer;

use contracts::CustomerCreated;

/// The platform's own tables only: the migrations a service adds are not needed here.
static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

/// A `Customer.created` for `id`.
fn customer(id: &str) -> CustomerCreated {
    CustomerCreated {
        id: id.to_string(),
        name: "Ann".to_string(),
        email: "ann@example.com".to_string(),
        created_at: chrono::Utc::now(),
    }
}
