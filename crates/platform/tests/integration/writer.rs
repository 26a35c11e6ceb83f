//! Write transactions ([`Database::begin`]) on both databases. On SQLite they are jobs of the
//! writer's shared cycle (one COMMIT for every job that queued while the previous one ran): a
//! failing job rolls back alone, and a failed COMMIT is every job's error. On PostgreSQL each is
//! a transaction of its own: the same tests state what that means there.

use std::time::Duration;

use platform::db::Backend;
use platform::testing::fresh_database;
use platform::Database;

static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

/// Long enough for a spawned task to queue for the writer.
const QUEUE: Duration = Duration::from_millis(300);

async fn insert(db: &Database, sql: &'static str) -> Result<(), platform::DbError> {
    let mut tx = db.begin().await?;
    sqlx::query(sql).execute(&mut *tx).await?;
    tx.commit().await
}

/// A database with the table `items`, and `rows` inserted outside any job.
async fn with_items(rows: &[&str]) -> Database {
    let db = fresh_database(&NO_MIGRATIONS).await;
    sqlx::query("CREATE TABLE items (id TEXT PRIMARY KEY)")
        .execute(db.pool())
        .await
        .unwrap();
    for row in rows {
        sqlx::query("INSERT INTO items (id) VALUES ($1)")
            .bind(*row)
            .execute(db.pool())
            .await
            .unwrap();
    }
    db
}

async fn ids(db: &Database, table: &str) -> Vec<String> {
    sqlx::query_scalar(&format!("SELECT id FROM {table} ORDER BY id"))
        .fetch_all(db.reads())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_inside_a_cycle_rolls_back_alone_and_the_others_commit() {
    let db = with_items(&["taken"]).await;

    // The first job holds the writer while the others queue behind it: one cycle on SQLite.
    let mut first = db.begin().await.unwrap();
    sqlx::query("INSERT INTO items (id) VALUES ('a')")
        .execute(&mut *first)
        .await
        .unwrap();
    let failing = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.begin().await?;
            sqlx::query("INSERT INTO items (id) VALUES ('b')")
                .execute(&mut *tx)
                .await?;
            // A duplicate key: the job fails after one good write, which must not stay.
            sqlx::query("INSERT INTO items (id) VALUES ('taken')")
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
    });
    let last = tokio::spawn({
        let db = db.clone();
        async move { insert(&db, "INSERT INTO items (id) VALUES ('c')").await }
    });
    tokio::time::sleep(QUEUE).await;
    first.commit().await.unwrap();

    assert!(
        failing.await.unwrap().is_err(),
        "the duplicate key fails its job"
    );
    last.await.unwrap().unwrap();
    assert_eq!(ids(&db, "items").await, ["a", "c", "taken"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_the_error_of_every_job_of_its_cycle() {
    let db = fresh_database(&NO_MIGRATIONS).await;
    let deferred = "DEFERRABLE INITIALLY DEFERRED";
    for sql in [
        "CREATE TABLE parents (id TEXT PRIMARY KEY)".to_string(),
        format!("CREATE TABLE children (id TEXT PRIMARY KEY, parent TEXT REFERENCES parents (id) {deferred})"),
    ] {
        sqlx::query(&sql).execute(db.pool()).await.unwrap();
    }

    let mut first = db.begin().await.unwrap();
    sqlx::query("INSERT INTO parents (id) VALUES ('p')")
        .execute(&mut *first)
        .await
        .unwrap();
    // A child without its parent: accepted by the statement, refused by the COMMIT.
    let orphan = tokio::spawn({
        let db = db.clone();
        async move {
            insert(
                &db,
                "INSERT INTO children (id, parent) VALUES ('o', 'nobody')",
            )
            .await
        }
    });
    tokio::time::sleep(QUEUE).await;
    let first = first.commit().await;

    let orphan = orphan.await.unwrap();
    assert!(orphan.is_err(), "the orphan's COMMIT is refused");
    assert!(ids(&db, "children").await.is_empty());
    match db.backend() {
        // One COMMIT for both: both get its error, and neither write stays.
        Backend::Sqlite => {
            assert!(
                first.is_err(),
                "the cycle's COMMIT failed for every job in it"
            );
            assert!(ids(&db, "parents").await.is_empty());
        }
        // A transaction each: only the orphan's fails.
        Backend::Postgres => {
            first.unwrap();
            assert_eq!(ids(&db, "parents").await, ["p"]);
        }
    }

    // The writer goes on: the next job commits.
    insert(&db, "INSERT INTO parents (id) VALUES ('q')")
        .await
        .unwrap();
    assert!(ids(&db, "parents").await.contains(&"q".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_job_leaves_nothing_and_the_writer_stays_usable() {
    let db = with_items(&[]).await;
    {
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO items (id) VALUES ('dropped')")
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    // Statements outside a job get the connection once the writer is idle again.
    tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::query("INSERT INTO items (id) VALUES ('direct')").execute(db.pool()),
    )
    .await
    .expect("the writer gave its connection back")
    .unwrap();
    insert(&db, "INSERT INTO items (id) VALUES ('kept')")
        .await
        .unwrap();
    assert_eq!(ids(&db, "items").await, ["direct", "kept"]);
}
