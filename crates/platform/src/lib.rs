//! Shared plumbing of every service: configuration (including the IBM Event Streams variables),
//! Kafka producer/consumer/admin, the database (SQLite or PostgreSQL), the transactional outbox
//! and its relay, the inbox, telemetry, and the HTTP bootstrap. Services hold only their domain.

pub mod auth;
pub mod bind;
pub mod config;
pub mod db;
pub mod db_binding;
pub mod db_outage;
pub mod db_tls;
mod db_writer;
pub mod definition;
pub mod failpoint;
pub mod group_commit;
pub mod health;
pub mod http;
pub mod inbox;
pub mod kafka;
pub mod limits;
pub mod metrics_scope;
pub mod ops;
pub mod outbox;
pub mod parking;
pub mod rate_limit;
pub mod readiness;
pub mod rebuild;
pub mod redact;
pub mod retention;
pub mod retry;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod telemetry;
#[cfg(test)]
mod test_logs;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{ConfigError, Env, Secret, ServiceConfig};
pub use db::{Database, DbError, Tx};
pub use definition::Definition;
pub use http::{ApiJson, ApiQuery, Problem};
pub use kafka::{HandleError, Handler, KafkaConfig, Record};
pub use outbox::Outbox;
pub use service::Service;
