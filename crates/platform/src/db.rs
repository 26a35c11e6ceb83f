//! The database: SQLite by default (a file per service, zero set-up), PostgreSQL when
//! `DATABASE_URL` says so. Queries are written once in portable SQL (`$1` placeholders, `TEXT`
//! timestamps, `BIGINT` numbers) and run through sqlx's `Any` driver. TLS to PostgreSQL: see
//! [`crate::db_tls`].

use std::sync::{Arc, Once};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

pub use crate::db_tls::{DatabaseCa, TlsRefusal};
use crate::db_writer::{Cycles, Job};

/// An open write transaction ([`Database::begin`]): derefs to the connection; commit it with
/// [`Tx::commit`], drop it to roll it back.
///
/// On PostgreSQL it is a transaction of its own. On SQLite it is a job in the writer's shared
/// cycle ([`crate::db_writer`]): its writes roll back alone, and `commit` returns once the
/// cycle's one `COMMIT` (one fsync for every job in it) returned.
#[derive(Debug)]
pub struct Tx(TxKind);

#[derive(Debug)]
enum TxKind {
    Own(sqlx::Transaction<'static, sqlx::Any>),
    Shared(Job),
}

impl Tx {
    /// Commits the writes; `Ok` once they are durable.
    pub async fn commit(self) -> Result<(), DbError> {
        match self.0 {
            TxKind::Own(tx) => {
                tx.commit().await?;
                crate::failpoint!("db.after_commit");
                Ok(())
            }
            // The cycle's committer passes the crash point after its COMMIT.
            TxKind::Shared(job) => job.commit().await.map_err(DbError::Commit),
        }
    }
}

impl Tx {
    /// Rolls the writes back (SQLite: the job's alone, before anything else runs in its cycle).
    pub async fn rollback(self) -> Result<(), DbError> {
        match self.0 {
            TxKind::Own(tx) => Ok(tx.rollback().await?),
            TxKind::Shared(job) => {
                drop(job);
                Ok(())
            }
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        match &self.0 {
            TxKind::Own(tx) => tx,
            TxKind::Shared(job) => job,
        }
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        match &mut self.0 {
            TxKind::Own(tx) => tx,
            TxKind::Shared(job) => job,
        }
    }
}

/// A connection, as borrowed from a transaction (`&mut *tx`).
pub type Conn = sqlx::AnyConnection;

/// Which database engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The engine behind `conn`.
    pub fn of(conn: &Conn) -> Self {
        if conn.backend_name().eq_ignore_ascii_case("sqlite") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }

    /// A `FROM` item named `alias` whose rows are the objects of the JSON array bound as
    /// parameter `$param`, one column per entry of `columns` (named as the objects' fields).
    ///
    /// Set-based statements use it: one statement and one fixed text (prepared once) whatever the
    /// number of rows, where a `VALUES` list would grow its text with the batch.
    pub fn json_rows(self, param: usize, alias: &str, columns: &[(&str, SqlType)]) -> String {
        match self {
            Backend::Postgres => {
                let columns: Vec<String> = columns
                    .iter()
                    .map(|(name, kind)| format!("{name} {}", kind.postgres()))
                    .collect();
                format!(
                    "json_to_recordset(${param}::json) AS {alias}({})",
                    columns.join(", ")
                )
            }
            Backend::Sqlite => {
                let columns: Vec<String> = columns
                    .iter()
                    .map(|(name, _)| format!("json_extract(value, '$.{name}') AS {name}"))
                    .collect();
                format!(
                    "(SELECT {} FROM json_each(${param})) AS {alias}",
                    columns.join(", ")
                )
            }
        }
    }

    /// A query selecting, as column `value`, the strings of the JSON array bound as parameter
    /// `$param` (for `IN (...)` or a `FROM` item): one fixed text whatever their number.
    pub fn json_list(self, param: usize) -> String {
        match self {
            Backend::Postgres => {
                format!("SELECT value FROM json_array_elements_text(${param}::json) AS value")
            }
            Backend::Sqlite => format!("SELECT value FROM json_each(${param})"),
        }
    }
}

/// The SQL type of a column read from JSON by [`Backend::json_rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    /// `TEXT` (a JSON string or null).
    Text,
    /// `BIGINT` (a JSON integer or null).
    BigInt,
}

impl SqlType {
    fn postgres(self) -> &'static str {
        match self {
            SqlType::Text => "text",
            SqlType::BigInt => "bigint",
        }
    }
}

/// A JSON array of `items`, the parameter of a set-based statement ([`Backend::json_rows`],
/// [`Backend::json_list`]).
pub fn json_param<T: serde::Serialize + ?Sized>(items: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(items).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Database errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be opened (the URL is shown without its password).
    #[error("cannot open database {url}: {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver error.
        source: sqlx::Error,
    },
    /// PostgreSQL's TLS handshake was refused (the URL is shown without its password).
    #[error("cannot open database {url}: TLS refused: {reason}")]
    Tls {
        /// The URL, password redacted.
        url: String,
        /// Why.
        reason: TlsRefusal,
    },
    /// A schema migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    /// The shared commit of SQLite's write cycle failed: nothing of the write was committed.
    #[error("database error: commit failed: {0}")]
    Commit(#[source] Arc<sqlx::Error>),
}

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
        let open_error = |source| match crate::db_tls::refusal(&source, url) {
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
                let (url, file) = crate::db_tls::with_ca(url, ca).map_err(connect_error)?;
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

/// A timestamp as stored: RFC 3339, UTC, milliseconds (sorts as text).
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a stored timestamp.
pub fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// True when `error` is a unique-constraint violation (a concurrent duplicate insert).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// `url` without its passwords, for messages: the one in the user information and the value of
/// every query parameter whose name holds `password` (`?password=`, `sslpassword=`) become `***`.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut redacted = match (head.find("://"), head.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            match head[scheme_end + 3..at].split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &head[..scheme_end + 3], &head[at..]),
                None => head.to_string(),
            }
        }
        _ => head.to_string(),
    };
    if let Some(query) = query {
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| match parameter.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().contains("password") => {
                    format!("{name}=***")
                }
                _ => parameter.to_string(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&parameters.join("&"));
    }
    redacted
}

/// Adds `mode=rwc` (create when missing) and creates the file's folder.
fn prepare_sqlite_url(url: &str) -> std::io::Result<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:" && !path.is_empty() {
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)?;
            }
        }
    }
    if query.contains("mode=") {
        return Ok(url.to_string());
    }
    let separator = if query.is_empty() { "?" } else { "&" };
    Ok(format!("{url}{separator}mode=rwc"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite://data/a.db"), "sqlite://data/a.db");
        assert_eq!(
            redact_url("postgres://app@db/x?sslmode=require&password=hunter2&PassWord=x"),
            "postgres://app@db/x?sslmode=require&password=***&PassWord=***"
        );
        assert_eq!(
            redact_url("postgres://app:p@ss@db/x?sslpassword=k3y&application_name=a"),
            "postgres://app:***@db/x?sslpassword=***&application_name=a"
        );
        assert_eq!(
            redact_url("smtp://127.0.0.1:25?tls=required"),
            "smtp://127.0.0.1:25?tls=required"
        );
    }

    #[test]
    fn sqlite_urls_create_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/a.db", dir.path().display());
        let prepared = prepare_sqlite_url(&url).unwrap();
        assert!(prepared.ends_with("a.db?mode=rwc"));
        assert!(dir.path().join("sub").is_dir());
        assert!(prepare_sqlite_url("sqlite://x.db?mode=ro")
            .unwrap()
            .ends_with("mode=ro"));
    }

    #[test]
    fn timestamps_round_trip_and_sort_as_text() {
        let a: DateTime<Utc> = "2026-01-02T03:04:05.123Z".parse().unwrap();
        let b: DateTime<Utc> = "2026-01-02T03:04:05.124Z".parse().unwrap();
        assert_eq!(timestamp(a), "2026-01-02T03:04:05.123Z");
        assert!(timestamp(a) < timestamp(b));
        assert_eq!(parse_timestamp(&timestamp(a)).unwrap(), a);
    }
}
