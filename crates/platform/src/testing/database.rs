//! Throw-away databases and unique names.

use crate::Database;

/// A name unique to this test run: `<prefix>-<uuid>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A fresh, empty database: a new PostgreSQL database on the server of `TEST_DATABASE_URL`
/// when set, otherwise a new SQLite file in the temp folder.
pub async fn fresh_database_url() -> String {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(admin_url) if admin_url.starts_with("postgres") => {
            use sqlx::{Connection, Executor};
            let name = unique("t").replace('-', "_");
            let mut admin = sqlx::PgConnection::connect(&admin_url)
                .await
                .unwrap_or_else(|e| panic!("TEST_DATABASE_URL: {e}"));
            admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap_or_else(|e| panic!("create database {name}: {e}"));
            let (base, _) = admin_url.rsplit_once('/').unwrap_or((&admin_url, ""));
            format!("{base}/{name}")
        }
        _ => {
            let path = std::env::temp_dir().join(format!("{}.db", unique("ems-test")));
            format!("sqlite://{}", path.display())
        }
    }
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
