//! The pool of connections to the service's database ([`Database`]): opening it (SQLite or
//! PostgreSQL, with TLS), migrating it, and starting write transactions.

use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

use crate::store::db_tls::DatabaseCa;
use crate::store::db_writer::Cycles;

use super::error::DbError;
use super::sql::Backend;
use super::tx::{Tx, TxKind};
use super::urls::{prepare_sqlite_url, redact_url};

static PLATFORM_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");
static INSTALL_DRIVERS: Once = Once::new();

/// A pool of connections to the service's database.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    /// Read-only connections (SQLite: their own, so reads never queue behind the writer;
    /// PostgreSQL: the pool).
    reads: AnyPool,
    backend: Backend,
    /// SQLite's one writer: the shared cycle of every write transaction.
    cycles: Option<Cycles>,
    /// The file of the CA given to [`Database::connect_with_ca`], kept while the pool lives.
    _ca_file: Option<std::sync::Arc<tempfile::TempPath>>,
}

impl Database {
    /// Opens the database at `url` (creating a SQLite file and its folder when missing).
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        Self::connect_with_ca(url, None).await
    }

    /// Opens the database at `url`; a PostgreSQL server's certificate must chain to `ca` when
    /// given (`sslmode=verify-full` unless the URL names a `sslmode`; ignored for SQLite).
    pub async fn connect_with_ca(url: &str, ca: Option<&DatabaseCa>) -> Result<Self, DbError> {
        INSTALL_DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let connect_error = |source| DbError::Connect {
            url: redact_url(url),
            source,
        };
        let open_error = |source| match crate::store::db_tls::refusal(&source, url) {
            Some(reason) => DbError::Tls {
                url: redact_url(url),
                reason,
            },
            None => connect_error(source),
        };
        let mut ca_file = None;
        let url = match backend {
            Backend::Sqlite => {
                prepare_sqlite_url(url).map_err(|e| connect_error(sqlx::Error::Io(e)))?
            }
            Backend::Postgres => {
                let (url, file) = crate::store::db_tls::with_ca(url, ca).map_err(connect_error)?;
                ca_file = file.map(std::sync::Arc::new);
                url
            }
        };
        let options: AnyConnectOptions = url.parse().map_err(connect_error)?;
        // No ping before each acquire (sqlx's default): a round trip per transaction, and a
        // broken connection's first statement reports the same error.
        let pool_options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false);
        let (pool, reads) = match backend {
            // One writer at a time is SQLite's model: a single writing connection avoids lock
            // upgrades failing with SQLITE_BUSY between our own tasks. Reads have connections
            // of their own (WAL: readers never wait for the writer).
            Backend::Sqlite => {
                let writer = sqlite_pool(pool_options.clone(), 1, false)
                    .connect_with(options.clone())
                    .await
                    .map_err(open_error)?;
                let reads = sqlite_pool(pool_options, SQLITE_READERS, true)
                    .connect_with(options)
                    .await
                    .map_err(open_error)?;
                (writer, reads)
            }
            Backend::Postgres => {
                let pool = postgres_pool(pool_options)
                    .connect_with(options)
                    .await
                    .map_err(open_error)?;
                (pool.clone(), pool)
            }
        };
        let cycles = (backend == Backend::Sqlite).then(|| Cycles::start(pool.clone()));
        Ok(Self {
            pool,
            reads,
            backend,
            cycles,
            _ca_file: ca_file,
        })
    }

    /// Applies the platform's migrations (outbox, inbox) and then the service's own.
    pub async fn migrate(&self, service_migrations: &Migrator) -> Result<(), DbError> {
        for migrator in [&PLATFORM_MIGRATIONS, service_migrations] {
            // Each migrator ignores the versions the other one applied.
            let migrator = Migrator {
                migrations: migrator.migrations.clone(),
                ignore_missing: true,
                locking: migrator.locking,
                no_tx: migrator.no_tx,
            };
            migrator.run(&self.pool).await?;
        }
        install_outbox_sequence(self).await
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Connections for reads only (GET handlers, counts, the relay's scan): on SQLite they
    /// never queue behind the writer; on PostgreSQL they are [`Database::pool`].
    pub fn reads(&self) -> &AnyPool {
        &self.reads
    }

    /// The engine behind the pool.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction: on SQLite a job in the writer's shared cycle (see [`Tx`]).
    pub async fn begin(&self) -> Result<Tx, DbError> {
        Ok(Tx(match &self.cycles {
            Some(cycles) => TxKind::Shared(cycles.job().await?),
            None => TxKind::Own(self.pool.begin().await?),
        }))
    }

    /// Checks that the database answers (readiness).
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.reads).await?;
        Ok(())
    }

    /// Sets the pool gauges: `db_pool_connections{state=idle|in_use}` and
    /// `db_pool_max_connections`.
    pub fn report_pool_metrics(&self) {
        let size = self.pool.size() as usize;
        let idle = self.pool.num_idle().min(size);
        metrics::gauge!("db_pool_connections", "state" => "idle").set(idle as f64);
        metrics::gauge!("db_pool_connections", "state" => "in_use").set((size - idle) as f64);
        metrics::gauge!("db_pool_max_connections")
            .set(f64::from(self.pool.options().get_max_connections()));
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.reads.close().await;
        self.pool.close().await;
    }
}

/// Read-only connections of a SQLite database.
const SQLITE_READERS: u32 = 4;

/// The options of a SQLite pool of `size` connections (WAL, durable commits, foreign keys), read
/// only when `read_only`.
fn sqlite_pool(options: AnyPoolOptions, size: u32, read_only: bool) -> AnyPoolOptions {
    options.max_connections(size).after_connect(move |conn, _| {
        Box::pin(async move {
            conn.execute(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
            )
            .await?;
            if read_only {
                conn.execute("PRAGMA query_only = ON;").await?;
            }
            Ok(())
        })
    })
}

/// Connections of a PostgreSQL pool.
const POSTGRES_CONNECTIONS: u32 = 10;

/// The options of a PostgreSQL pool.
fn postgres_pool(options: AnyPoolOptions) -> AnyPoolOptions {
    options.max_connections(POSTGRES_CONNECTIONS)
}

/// Creates what the outbox ([`crate::outbox`]) needs beside the migrations: PostgreSQL's
/// `outbox_seq` sequence (portable migrations cannot declare it). Idempotent; replicas starting
/// together serialize on an advisory lock.
async fn install_outbox_sequence(db: &Database) -> Result<(), DbError> {
    if db.backend() != Backend::Postgres {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    sqlx::query("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(7370516301)) AS l")
        .execute(&mut *tx)
        .await?;
    sqlx::query("CREATE SEQUENCE IF NOT EXISTS outbox_seq")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
