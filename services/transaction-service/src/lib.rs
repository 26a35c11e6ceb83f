//! transaction-service: the ledger. Accounts are opened from `Customer.created`; transactions are
//! requested over HTTP (or straight into Kafka by other producers) and applied effectively once
//! by the consumer of `transaction.requested`, which writes `transaction.processed` or
//! `transaction.failed` through the outbox.
//!
//! # Layout
//!
//! - [`routes`]: HTTP only — handlers, the views they answer with, the OpenAPI document.
//! - [`error`]: the one [`Error`] of the service and its problem+json answer.
//! - [`acceptance`]: the write use case — a request body validated, written with its
//!   `transaction.requested` event through the group commit; idempotency and conflicts.
//! - [`backpressure`]: refuses new requests (503) while the ledger is `MAX_APPLY_BACKLOG`
//!   accepted requests behind in applying them.
//! - [`ledger`]: applying a requested transaction to the balances (the consumer's domain step).
//! - [`domain`]: requests and their rules (validation, fingerprint); no HTTP, no SQL.
//! - [`storage`]: the SQL (accounts, transactions, journal entries).
//! - [`handlers`]: the Kafka event handlers, [`handlers::OpenAccounts`] and
//!   [`handlers::ApplyTransactions`].
//! - [`settings`]: [`LedgerSettings`], read from the environment.
//!
//! # Request flow
//!
//! `POST /transactions` → [`routes::create_transaction`] → [`acceptance::Intake::accept`]
//! (validate; refuse a new request while the ledger is too far behind, see [`backpressure`];
//! [`acceptance::Acceptance`] inserts the transaction and its event in the outbox, one database
//! transaction shared by concurrent requests) → 202. The relay publishes the event on
//! `transaction.requested`; [`handlers::ApplyTransactions`] records it if it came from another
//! producer, decides it with [`ledger::Book`] against the accounts the batch locked once (debit,
//! credit, journal) and writes `transaction.processed` or `transaction.failed` through the
//! outbox — a batch with a fixed number of statements, in the same transaction as its inbox
//! claims. A request for an account not open yet is parked until
//! [`handlers::OpenAccounts`] opens it (from `Customer.created`) or its grace period ends.

pub mod acceptance;
pub mod backpressure;
pub mod domain;
pub mod error;
pub mod handlers;
pub mod ledger;
pub mod routes;
pub mod settings;
pub mod storage;

use axum::routing::{get, post};
use axum::Router;
use contracts::topics;
use platform::auth::{protect, Area};
use platform::kafka::ConsumerOptions;
use platform::parking::ParkingLot;
use platform::{ConfigError, Database, Definition, Env, Service};
use sqlx::migrate::Migrator;

pub use error::Error;
pub use settings::LedgerSettings;

/// Service name: logs, consumer groups, event source.
pub const NAME: &str = "transaction-service";
/// Port when `PORT` is unset.
pub const DEFAULT_PORT: u16 = 3002;
/// The ledger's schema (versions >= 100; the platform owns 1..99).
pub static MIGRATIONS: Migrator = sqlx::migrate!();

/// The service, as [`platform::definition::main`] runs it.
pub struct TransactionService;

impl Definition for TransactionService {
    const NAME: &'static str = NAME;
    const DEFAULT_PORT: u16 = DEFAULT_PORT;
    type Settings = LedgerSettings;
    type Storage = Database;

    fn migrations() -> &'static Migrator {
        &MIGRATIONS
    }

    fn settings(env: &impl Env) -> Result<LedgerSettings, ConfigError> {
        LedgerSettings::from_env(env)
    }

    /// Registers the two consumers (accounts, requests) and the backlog's sampler, and returns
    /// the routes.
    fn build(service: &mut Service, settings: LedgerSettings) -> anyhow::Result<Router> {
        let waiting_requests = handlers::ApplyTransactions::parking_lot(&settings);
        let max_amount_minor = settings.max_amount_minor;
        let backlog = backpressure::ApplyBacklog::new(settings.max_apply_backlog);
        // A new database opens every existing customer's account from the compacted
        // Customer.created before any consumer takes work.
        service.consume_events_rebuilding(
            ConsumerOptions::new(handlers::ACCOUNTS_GROUP, &[topics::CUSTOMER_CREATED]),
            handlers::OpenAccounts::new(settings.clone(), waiting_requests.clone()),
            handlers::OpenAccounts::new(settings, waiting_requests.clone()),
            ParkingLot::new(handlers::ACCOUNTS_GROUP, std::time::Duration::ZERO),
            "accounts",
        );
        service.consume_events(
            ConsumerOptions::new(handlers::REQUESTS_GROUP, &[topics::TRANSACTION_REQUESTED]),
            handlers::ApplyTransactions::new(service.outbox.clone(), max_amount_minor),
            waiting_requests,
        );

        let db = service.db.clone();
        service.spawn({
            let backlog = backlog.clone();
            move |shutdown| backlog.sample(db, shutdown)
        });
        let intake = acceptance::Intake {
            commit: service.group_commit(acceptance::Acceptance::new(service.outbox.clone())),
            backlog,
            db: service.db.clone(),
            max_amount_minor,
        };
        let state = routes::AppState {
            db: service.db.clone(),
            intake,
        };
        // With API keys configured, all but the OpenAPI document need one: `transactions:write` to
        // request, `transactions:read` to read.
        let ledger = Router::new()
            .route("/transactions", post(routes::create_transaction))
            .route("/transactions/{id}", get(routes::get_transaction))
            .route("/accounts/{id}", get(routes::get_account))
            .route("/accounts/{id}/entries", get(routes::get_entries));
        Ok(protect(ledger, &service.api_keys, Area::Transactions)
            .route("/openapi.json", get(routes::openapi))
            .with_state(state))
    }
}
