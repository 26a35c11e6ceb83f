//! Throw-away databases and unique names.

use std::path::PathBuf;

use crate::store::db::Database;

/// A PostgreSQL server with TLS on: `TEST_DATABASE_URL` and the CA of its certificate
/// (`TEST_DATABASE_CA`, a PEM file), as `cargo xtask test` sets them for its test cluster, whose
/// certificate names `127.0.0.1` only.
#[derive(Debug, Clone)]
pub struct TlsCluster {
    /// The superuser's URL (no query).
    pub url: String,
    /// The CA certificate file.
    pub ca: PathBuf,
}

/// The TLS cluster of `TEST_DATABASE_URL` and `TEST_DATABASE_CA`; `None`, with a printed note,
/// when either is unset (the test then has nothing to run against).
pub fn tls_cluster() -> Option<TlsCluster> {
    let url = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"));
    let ca = std::env::var_os("TEST_DATABASE_CA").filter(|ca| !ca.is_empty());
    match (url, ca) {
        (Some(url), Some(ca)) => Some(TlsCluster {
            url,
            ca: PathBuf::from(ca),
        }),
        _ => {
            println!("note: skipped: no TLS PostgreSQL (TEST_DATABASE_URL and TEST_DATABASE_CA)");
            None
        }
    }
}

/// A name unique to this test run: `<prefix>-<uuid>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A fresh, empty database: a new PostgreSQL database on the server of `TEST_DATABASE_URL`
/// when set, otherwise a new SQLite file in the temp folder.
pub async fn fresh_database_url() -> String {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(admin_url) if admin_url.starts_with("postgres") => fresh_database_on(&admin_url).await,
        _ => {
            let path = std::env::temp_dir().join(format!("{}.db", unique("ems-test")));
            format!("sqlite://{}", path.display())
        }
    }
}

/// A new, empty PostgreSQL database on the server of `admin_url` (a superuser's URL); its URL.
pub async fn fresh_database_on(admin_url: &str) -> String {
    use sqlx::{Connection, Executor};
    let name = unique("t").replace('-', "_");
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("connect to {admin_url}: {e}"));
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
    let (base, _) = admin_url.rsplit_once('/').unwrap_or((admin_url, ""));
    format!("{base}/{name}")
}

/// A fresh database (see [`fresh_database_url`]) with `migrations` run.
pub async fn fresh_database(migrations: &sqlx::migrate::Migrator) -> Database {
    connect(&fresh_database_url().await, migrations).await
}

/// A new pool on `url` with `migrations` run: how one more replica sees a shared database.
pub async fn connect(url: &str, migrations: &sqlx::migrate::Migrator) -> Database {
    let db = Database::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to the test database: {e}"));
    db.migrate(migrations)
        .await
        .unwrap_or_else(|e| panic!("migrate the test database: {e}"));
    db
}
