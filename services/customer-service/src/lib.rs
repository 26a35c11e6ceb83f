//! customer-service: registers customers (`POST /app/customers`) and publishes `Customer.created`
//! through the transactional outbox; reads them back (`GET /app/customers[/{id}]`).
//!
//! # Layout
//!
//! - `lib.rs`: [`CustomerService`], the [`Definition`] the platform runs (no settings of its own,
//!   no consumers).
//! - [`routes`]: HTTP only: the handlers, their extractors, the OpenAPI document.
//! - [`error`]: the service's one error type, [`error::Error`], and its problem+json mapping.
//! - [`registration`]: the use case, the one write: a customer and its event in one transaction.
//! - [`domain`]: the types and rules (what a valid registration is); no HTTP, no SQL.
//! - [`storage`]: the SQL of the `customers` table.
//!
//! # Request flow
//!
//! `POST /app/customers` → [`routes::create_customer`] reads the JSON body →
//! [`domain::NewCustomer::parse`] validates it (the rules of `contracts::validation`) →
//! [`registration::Registrations`], through the group committer, inserts the row
//! ([`storage::insert`]) and enqueues `Customer.created` in the outbox in the same transaction →
//! 201 (200 for an exact repeat; 409 for an id taken by another customer, as a problem by
//! [`error::Error`]) → after the commit the platform's outbox relay publishes the event.

pub mod domain;
pub mod error;
pub mod registration;
pub mod routes;
pub mod storage;

use axum::Router;
use platform::{ConfigError, Database, Definition, Env, Service};
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
    type Storage = Database;

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
            registrations: service
                .group_commit(registration::Registrations::new(service.outbox.clone())),
        };
        Ok(routes::router(state, &service.api_keys))
    }
}
