//! customer-service: registers customers (`POST /app/customers`) and publishes `Customer.created`
//! through the transactional outbox; reads them back (`GET /app/customers[/{id}]`).

pub mod domain;
pub mod registration;
pub mod routes;
pub mod storage;

use axum::Router;
use platform::group_commit::GroupCommit;
use platform::{ConfigError, Definition, Env, Service};
use sqlx::migrate::Migrator;

/// Service name: log field, event source (`/customer-service`), default database file.
pub const NAME: &str = "customer-service";
/// Default HTTP port (`PORT` overrides).
pub const DEFAULT_PORT: u16 = 3001;
/// The `customers` table.
pub static MIGRATIONS: Migrator = sqlx::migrate!();

/// The service, as [`platform::definition::main`] runs it.
pub struct CustomerService;

impl Definition for CustomerService {
    const NAME: &'static str = NAME;
    const DEFAULT_PORT: u16 = DEFAULT_PORT;
    /// customer-service has no settings of its own.
    type Settings = ();

    fn migrations() -> &'static Migrator {
        &MIGRATIONS
    }

    fn settings(_env: &impl Env) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Returns the routes (the service has no consumers).
    fn build(service: &mut Service, (): ()) -> anyhow::Result<Router> {
        let state = routes::AppState {
            db: service.db.clone(),
            registrations: GroupCommit::start(
                service.db.clone(),
                registration::Registrations::new(service.outbox.clone()),
            ),
        };
        Ok(routes::router(state, &service.api_keys))
    }
}
