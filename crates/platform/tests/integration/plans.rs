//! PostgreSQL plans follow the tables as they are: a statement prepared and run while a table
//! was small still looks rows up by key once the table has grown (no cached generic plan that
//! scans the whole table until the next `ANALYZE`).

use platform::db::Backend;
use platform::testing::fresh_database;
use sqlx::Acquire;

static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

/// Sequential scans of `table` in the connection's current transaction.
async fn seq_scans(conn: &mut sqlx::AnyConnection, table: &str) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = $1")
        .bind(table)
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn on_postgres_a_statement_planned_on_a_small_table_uses_its_key_once_it_has_grown() {
    let db = fresh_database(&NO_MIGRATIONS).await;
    if db.backend() != Backend::Postgres {
        return;
    }
    let mut conn = db.pool().acquire().await.unwrap();
    sqlx::query("CREATE TABLE ledger_rows (id TEXT PRIMARY KEY, status TEXT NOT NULL)")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO ledger_rows SELECT 'r' || g, 'done' FROM generate_series(1, 20) g")
        .execute(&mut *conn)
        .await
        .unwrap();
    let lookup = format!(
        "SELECT id, status FROM ledger_rows WHERE id IN ({})",
        db.backend().json_list(1)
    );
    // More than the five runs after which PostgreSQL may switch to a cached generic plan.
    for _ in 0..8 {
        sqlx::query(&lookup)
            .bind(r#"["r1","r2"]"#)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO ledger_rows SELECT 'g' || g, 'done' FROM generate_series(1, 100000) g",
    )
    .execute(&mut *conn)
    .await
    .unwrap();

    let mut tx = conn.begin().await.unwrap();
    let before = seq_scans(&mut tx, "ledger_rows").await;
    let found = sqlx::query(&lookup)
        .bind(r#"["r1","g99999"]"#)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(
        seq_scans(&mut tx, "ledger_rows").await,
        before,
        "the lookup scanned the whole table"
    );
}
