//! customer-service: registers customers (`POST /app/customers`) and publishes `Customer.created`
//! through the transactional outbox; reads them back (`GET /app/customers[/{id}]`).

pub mod domain;
pub mod registration;
pub mod routes;
pub mod storage;

use axum::Router;
use platform::group_commit::GroupCommit;
use platform::Service;
use sqlx::migrate::Migrator;

/// Service name: log field, event source (`/customer-service`), default database file.
pub const NAME: &str = "customer-service";
/// Default HTTP port (`PORT` overrides).
pub const DEFAULT_PORT: u16 = 3001;
/// The `customers` table.
pub static MIGRATIONS: Migrator = sqlx::migrate!();

/// Wires the service: returns its routes (it has no consumers).
pub fn build(service: &mut Service) -> Router {
    let state = routes::AppState {
        db: service.db.clone(),
        registrations: GroupCommit::start(
            service.db.clone(),
            registration::Registrations::new(service.outbox.clone()),
        ),
    };
    routes::router(state, &service.api_keys)
}
