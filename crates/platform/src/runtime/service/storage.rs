//! Where a service keeps its state, the type parameter of [`Service`](super::Service): its
//! [`Database`] (migrated; with it the transactional outbox and its relay, the pool gauges, the
//! pruner and `/readyz`'s database check), or [`NoDatabase`] for a process that keeps nothing
//! and writes nothing (the console): no migrations, relay, pruner or producer, no topics
//! created, and `/readyz` checks no database.

use std::future::Future;

use sqlx::migrate::Migrator;

use crate::runtime::config::ServiceConfig;
use crate::store::db::{Database, DbError};

/// Where a service keeps its state: [`Database`] or [`NoDatabase`] (the only two).
pub trait Storage: Clone + Send + Sync + 'static + sealed::Sealed {
    /// Whether it is a database: the runtime then relays the outbox, prunes, opens the producer
    /// and creates the topics; without one it only reads.
    const DATABASE: bool;
    /// What it is opened with: the service's migrations, or `()`.
    type Migrations: Send + 'static;

    /// Opens it for `config`: connects and migrates (nothing without a database).
    fn open(
        config: &ServiceConfig,
        migrations: Self::Migrations,
    ) -> impl Future<Output = Result<Self, DbError>> + Send;

    /// The database, when there is one.
    fn database(&self) -> Option<&Database>;
}

impl Storage for Database {
    const DATABASE: bool = true;
    type Migrations = &'static Migrator;

    async fn open(config: &ServiceConfig, migrations: &'static Migrator) -> Result<Self, DbError> {
        let db =
            Database::connect_with_ca(&config.database_url, config.database_ca.as_ref()).await?;
        db.migrate(migrations).await?;
        Ok(db)
    }

    fn database(&self) -> Option<&Database> {
        Some(self)
    }
}

/// No database: the storage of a read-only process (the console). Its `DATABASE_URL` is read
/// with the rest of the configuration and not used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoDatabase;

impl Storage for NoDatabase {
    const DATABASE: bool = false;
    type Migrations = ();

    async fn open(_config: &ServiceConfig, _migrations: ()) -> Result<Self, DbError> {
        Ok(Self)
    }

    fn database(&self) -> Option<&Database> {
        None
    }
}

mod sealed {
    /// Keeps `Storage` to the two kinds the runtime knows.
    pub trait Sealed {}
    impl Sealed for crate::store::db::Database {}
    impl Sealed for crate::runtime::service::storage::NoDatabase {}
}
