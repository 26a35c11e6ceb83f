//! Shared plumbing of every service: configuration (including the IBM Event Streams variables),
//! Kafka producer/consumer/admin, the database (SQLite or PostgreSQL), the transactional outbox
//! and its relay, the inbox, telemetry, and the HTTP bootstrap. Services hold only their domain.
//!
//! # Layout
//!
//! The modules sit on six layers. A module imports only from the layers below its own and, on
//! its own layer, from the modules listed before it: no import runs back up and no two files
//! import each other (the import-circles check of issue 22 reads the whole repository and finds
//! no circle). Bottom-up:
//!
//! 1. **Foundations**, importing nothing of the crate: [`env`] (the configuration primitives:
//!    [`Env`], [`ConfigError`], [`Secret`], the readers of numbers, durations and flags, the
//!    log format), [`problem`] (RFC 9457 [`Problem`] and its documented body), [`redact`],
//!    [`retry`], [`failpoint`], [`shutdown`], [`ops`] (the operational routes' names),
//!    [`health`] (what the running parts report about themselves for `/readyz`) and [`db_tls`].
//! 2. **Cross-cutting**: [`telemetry`] (logs, spans, metrics; given its settings, it reads no
//!    service configuration), [`auth`] (API keys and scopes) and [`limits`] (request sizes),
//!    which answer with a [`Problem`].
//! 3. **The database, the broker and the HTTP guards**: [`db`] (SQLite or PostgreSQL, the
//!    platform's schema, the SQLite writer), [`db_binding`], [`group_commit`]; [`kafka`] (in
//!    it, bottom-up: `config` and `client` (the errors and client contexts), `producer`, the
//!    `consumer` (its leaves: `error`, `record`, `handler`, `options`, `lanes`, then `context`,
//!    `lane_env`, `lane`, `dispatch`), `dead_letter`, `dead_letters`, `admin`, `replay`;
//!    `kafka/mod.rs` only declares and re-exports); [`bind`], [`rate_limit`] and [`server`]
//!    (listening, connection limits, the rate limit in front of the router).
//! 4. **Event processing on the database and the broker**: [`apply`] (what a consumer's domain
//!    logic implements: `Apply`, `Applied`, `Attempt`, `Batch`), [`parking`] (events that wait
//!    for others), [`inbox`] (effectively-once application, on `apply` and `parking`),
//!    [`outbox`] (the transactional outbox and its relay), [`retention`], [`rebuild`] and
//!    [`readiness`] (`/readyz`'s checks of the database and the broker).
//! 5. **The HTTP edge**: [`http`] (the router's layers, the JSON extractor, the operational
//!    routes, serving through [`server`]; the mapping of database and commit errors to a
//!    [`Problem`]).
//! 6. **Assembly**: [`config`] (a service's whole [`ServiceConfig`], gathered from the settings
//!    each module reads with [`env`]), [`service`] (the runtime: migrations, relay, consumers,
//!    HTTP), [`definition`] (the one `main` of every service) and, with the feature `testing`,
//!    the test harness `testing` (its `wait`, `port` and `database` leaves under the rest).
//!
//! The service crates sit on top of all of it and reach it through these module paths (the
//! items below are re-exported at the root for them).

pub mod apply;
pub mod auth;
pub mod bind;
pub mod config;
pub mod db;
pub mod db_binding;
pub mod db_outage;
pub mod db_tls;
mod db_writer;
pub mod definition;
pub mod env;
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
pub mod problem;
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
pub use http::{ApiJson, ApiQuery};
pub use kafka::{HandleError, Handler, KafkaConfig, Record};
pub use outbox::Outbox;
pub use problem::Problem;
pub use service::Service;
