//! notification-service: keeps a projection of customers (`Customer.created`), emails a welcome
//! message and an alert per customer involved in each `transaction.processed` /
//! `transaction.failed`, at most once per (customer, kind, transaction) whatever the event id
//! (events are checked against their contract first), and serves the delivery log,
//! a live feed and a dashboard.
//!
//! # Layout
//!
//! - `lib.rs`: [`NotificationService`], the [`Definition`] that wires the rest.
//! - [`settings`]: the service's own settings (`SMTP_URL`, `MAIL_FROM`, the sender's timings).
//! - [`routes`]: HTTP only: the delivery log, the live feed (server-sent events), the dashboard
//!   page (`dashboard.html`) and the OpenAPI document; all read-only.
//! - [`error`]: the one error type of the HTTP side and its problem+json mapping.
//! - [`handlers`]: the Kafka event handlers: the projection and the delivery rows.
//! - [`delivery`]: the use case that writes: the sender task that leases due deliveries, sends
//!   them and records the outcome, with its retry policy.
//! - [`domain`]: the types and rules (kinds, statuses, who is told what); no HTTP, no SQL.
//! - [`messages`]: the text of each e-mail.
//! - [`mailer`]: the mail transport (SMTP, or `.eml` files in a folder), its own module as it
//!   wraps `lettre` and keeps the SMTP password out of the logs.
//! - [`retention`]: what a delivery keeps for how long (rules for the platform's pruner);
//!   [`mailbox`]: the mail folder's bound.
//! - [`feed`]: the live feed hub (updates to the streams, wake-ups of the sender).
//! - [`storage`]: SQL of the projection and the `deliveries` table.
//!
//! # Request flow
//!
//! A `transaction.processed` record is decoded and validated by
//! [`handlers::TransactionEvents`], which finds the customers in the projection and records one
//! `pending` delivery per recipient ([`messages`] writes the text) in the transaction of the
//! event's inbox claim; once committed, the [`feed::Hub`] tells the live streams and wakes the
//! [`delivery::Sender`], which leases the row, sends it through the [`mailer::Mailer`] and
//! records `sent`, `retrying` or `failed`, announced on the hub again. `GET /notifications`
//! ([`routes`]) reads the log from [`storage`].

pub mod delivery;
pub mod domain;
pub mod error;
pub mod feed;
pub mod handlers;
pub mod mailbox;
pub mod mailer;
pub mod messages;
pub mod retention;
pub mod routes;
pub mod settings;
pub mod storage;

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use contracts::topics;
use platform::kafka::ConsumerOptions;
use platform::parking::ParkingLot;
use platform::{ConfigError, Database, Definition, Env, Service};
use sqlx::migrate::Migrator;

pub use settings::Settings;

/// Service name: log field, default database file, consumer group names.
pub const NAME: &str = "notification-service";
/// Default HTTP port (`PORT` overrides).
pub const DEFAULT_PORT: u16 = 3003;
/// The customer projection and the `deliveries` table.
pub static MIGRATIONS: Migrator = sqlx::migrate!();

/// The service, as [`platform::definition::main`] runs it.
pub struct NotificationService;

impl Definition for NotificationService {
    const NAME: &'static str = NAME;
    const DEFAULT_PORT: u16 = DEFAULT_PORT;
    type Settings = Settings;
    type Storage = Database;

    fn migrations() -> &'static Migrator {
        &MIGRATIONS
    }

    fn settings(env: &impl Env) -> Result<Settings, ConfigError> {
        Settings::from_env(env)
    }

    /// Wires the service: two consumers (`Customer.created` on its own, so that it keeps flowing
    /// while a transaction event waits for its customer, and replayed from its start when the
    /// projection is empty; `transaction.processed` +
    /// `transaction.failed` on the other), the sender task, and the routes.
    fn build(service: &mut Service, settings: Settings) -> anyhow::Result<Router> {
        let mailer = mailer::Mailer::new(&settings.mail)
            .map_err(anyhow::Error::msg)
            .context("cannot set up mail delivery")?;
        let hub = feed::Hub::new();
        let waiting_alerts = handlers::TransactionEvents::parking_lot(settings.customer_wait);
        // An empty customer projection (a new database) is rebuilt from the compacted
        // Customer.created before any consumer takes work, without welcoming anyone again.
        service.consume_events_rebuilding(
            ConsumerOptions::new(handlers::CUSTOMERS_CONSUMER, &[topics::CUSTOMER_CREATED]),
            handlers::CustomerEvents::new(hub.clone(), waiting_alerts.clone()),
            handlers::CustomerEvents::rebuilding(hub.clone(), waiting_alerts.clone()),
            ParkingLot::new(handlers::CUSTOMERS_CONSUMER, Duration::ZERO),
            "customers",
        );
        service.consume_events(
            ConsumerOptions::new(
                handlers::TRANSACTIONS_CONSUMER,
                &[topics::TRANSACTION_PROCESSED, topics::TRANSACTION_FAILED],
            ),
            handlers::TransactionEvents::new(hub.clone()),
            waiting_alerts,
        );
        let sender = delivery::Sender {
            db: service.db.clone(),
            mailer,
            from: settings.from,
            hub: hub.clone(),
            retry: settings.retry,
            lease: settings.send_lease,
            send_timeout: settings.send_timeout,
        };
        service.spawn(move |shutdown| sender.run(shutdown));
        for rule in settings.retention.rules() {
            service.retain(rule);
        }
        if let mailer::MailTarget::Folder(dir) = settings.mail {
            let (keep, every) = (settings.mail_keep, service.config.retention.every);
            service.spawn(move |shutdown| mailbox::run(dir, keep, every, shutdown));
        }
        Ok(routes::router(
            routes::AppState {
                db: service.db.clone(),
                hub,
                shutdown: service.shutdown.clone(),
            },
            &service.api_keys,
        ))
    }
}
