//! Shared plumbing of every service: configuration (including the IBM Event Streams variables),
//! Kafka producer/consumer/admin, the database (SQLite or PostgreSQL), the transactional outbox
//! and its relay, the inbox, telemetry, and the HTTP bootstrap. Services hold only their domain.
//!
//! # Layout
//!
//! The modules sit in folders, one folder a layer. A folder imports only from the folders below
//! it and, inside it, a module imports only from the modules listed before it: no import runs
//! back up and no two files import each other (the import-circles check of issue 22 reads the
//! whole repository and finds no circle). Bottom-up:
//!
//! 1. **`foundation/`**, importing no other folder: [`env`] (the configuration primitives:
//!    [`Env`], [`ConfigError`], [`Secret`], the readers of numbers, durations and flags, the
//!    log format), [`problem`] (RFC 9457 [`Problem`] and its documented body), [`redact`],
//!    [`retry`], [`failpoint`], [`shutdown`], [`ops`] (the operational routes' names),
//!    [`health`] (what the running parts report about themselves for `/readyz`),
//!    [`metrics_scope`] (the metrics registry of the service whose work runs) and [`telemetry`]
//!    (logs, spans, metrics; given its settings, it reads no service configuration).
//! 2. **`store/`**, the database: [`db_tls`], the SQLite writer (private), [`db`] (SQLite or
//!    PostgreSQL, the platform's schema), [`db_binding`], [`group_commit`] and [`db_outage`]
//!    (a full or unreachable database, answered with a 503). One import runs up, in a unit
//!    test: `db_outage`'s tests build a [`HandleError`] to see an outage found through it.
//! 3. **`kafka/`**, the broker ([`kafka`]; in it, bottom-up: `config` and `client` (the errors
//!    and client contexts), `producer`, the `consumer` (its leaves: `error`, `record`,
//!    `handler`, `options`, `lanes`, then `context`, `lane_env`, `lane`, `dispatch`),
//!    `dead_letter`, `dead_letters`, `admin`, `replay`; `kafka/mod.rs` only declares and
//!    re-exports).
//! 4. **`outbox/`**: [`outbox`], the transactional outbox and its relay.
//! 5. **`events/`**, event processing on the database and the broker: [`apply`] (what a
//!    consumer's domain logic implements: `Apply`, `Applied`, `Attempt`, `Batch`), [`parking`]
//!    (events that wait for others), [`inbox`] (effectively-once application, on `apply` and
//!    `parking`), [`retention`], [`rebuild`] and [`readiness`] (`/readyz`'s checks of the
//!    database and the broker).
//! 6. **`guard/`**, in front of the router, on `foundation/` only: [`auth`] (API keys and
//!    scopes), [`limits`] (request sizes), [`bind`], [`rate_limit`] and [`server`] (listening,
//!    connection limits, the rate limit in front of the router).
//! 7. **`http/`**, the HTTP edge: [`http`] (the router's layers, the JSON extractor, the
//!    operational routes, serving through [`server`]; the mapping of database and commit errors
//!    to a [`Problem`]).
//! 8. **`runtime/`**, the assembly: [`config`] (a service's whole [`ServiceConfig`], gathered
//!    from the settings each module reads with [`env`]), [`service`] (the runtime: migrations,
//!    relay, consumers, HTTP) and [`definition`] (the one `main` of every service); over it,
//!    with the feature `testing`, the test harness `testing/` (its `wait`, `port` and
//!    `database` leaves under the rest).
//!
//! The service crates sit on top of all of it. They reach every module at the root
//! (`platform::db`, `platform::kafka`, `platform::config`, …: this file re-exports them, and the
//! items below); inside the crate, imports name the folder (`crate::store::db`), so that the
//! layer of each import shows.

mod events;
mod foundation;
mod guard;
pub mod http;
pub mod kafka;
pub mod outbox;
mod runtime;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use events::{apply, inbox, parking, readiness, rebuild, retention};
pub use foundation::{
    env, failpoint, health, metrics_scope, ops, problem, redact, retry, shutdown, telemetry,
};
pub use guard::{auth, bind, limits, rate_limit, server};
pub use runtime::{config, definition, service};
pub use store::{db, db_binding, db_outage, db_tls, group_commit};

pub use foundation::problem::Problem;
pub use http::{ApiJson, ApiQuery};
pub use kafka::{HandleError, Handler, KafkaConfig, Record};
pub use outbox::Outbox;
pub use runtime::config::{ConfigError, Env, Secret, ServiceConfig};
pub use runtime::definition::Definition;
pub use runtime::service::Service;
pub use store::db::{Database, DbError, Tx};
