//! notification-service: keeps a projection of customers (`Customer.created`), emails a welcome
//! message and an alert per customer involved in each `transaction.processed` /
//! `transaction.failed`, at most once per (customer, kind, transaction) whatever the event id
//! (events are checked against their contract first), and serves the delivery log,
//! a live feed and a dashboard.

pub mod events;
pub mod feed;
pub mod mailer;
pub mod messages;
pub mod routes;
pub mod sender;
pub mod settings;
pub mod storage;

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use contracts::topics;
use platform::kafka::ConsumerOptions;
use platform::parking::ParkingLot;
use platform::{ConfigError, Definition, Env, Service};
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

    fn migrations() -> &'static Migrator {
        &MIGRATIONS
    }

    fn settings(env: &impl Env) -> Result<Settings, ConfigError> {
        Settings::from_env(env)
    }

    /// Wires the service: two consumers (`Customer.created` on its own, so that it keeps flowing
    /// while a transaction event waits for its customer; `transaction.processed` +
    /// `transaction.failed` on the other), the sender task, and the routes.
    fn build(service: &mut Service, settings: Settings) -> anyhow::Result<Router> {
        let mailer = mailer::Mailer::new(&settings.mail)
            .map_err(anyhow::Error::msg)
            .context("cannot set up mail delivery")?;
        let hub = feed::Hub::new();
        let waiting_alerts = events::TransactionEvents::parking_lot(settings.customer_wait);
        service.consume_events(
            ConsumerOptions::new(events::CUSTOMERS_CONSUMER, &[topics::CUSTOMER_CREATED]),
            events::CustomerEvents::new(hub.clone(), waiting_alerts.clone()),
            ParkingLot::new(events::CUSTOMERS_CONSUMER, Duration::ZERO),
        );
        service.consume_events(
            ConsumerOptions::new(
                events::TRANSACTIONS_CONSUMER,
                &[topics::TRANSACTION_PROCESSED, topics::TRANSACTION_FAILED],
            ),
            events::TransactionEvents::new(hub.clone()),
            waiting_alerts,
        );
        let sender = sender::Sender {
            db: service.db.clone(),
            mailer,
            from: settings.from,
            hub: hub.clone(),
            retry: settings.retry,
            lease: settings.send_lease,
            send_timeout: settings.send_timeout,
        };
        service.spawn(move |shutdown| sender.run(shutdown));
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
