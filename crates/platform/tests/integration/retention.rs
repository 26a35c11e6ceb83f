//! Retention of inbox keys against the real database (SQLite, or PostgreSQL with
//! TEST_DATABASE_URL): keys older than their window go, in bounded batches; a key still inside
//! its window keeps deduplicating.

use std::time::Duration;

use chrono::Utc;
use platform::db::timestamp;
use platform::inbox;
use platform::retention::Rule;
use platform::testing::fresh_database;
use platform::Database;

use crate::NO_MIGRATIONS;

/// The window of the tests' inbox keys.
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// Claims `ids` for `consumer` as if at `age` ago.
async fn claim_aged(db: &Database, consumer: &str, ids: &[String], age: Duration) {
    let at = timestamp(Utc::now() - chrono::Duration::from_std(age).unwrap());
    for id in ids {
        sqlx::query("INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)")
            .bind(consumer)
            .bind(id.as_str())
            .bind(at.as_str())
            .execute(db.pool())
            .await
            .unwrap();
    }
}

async fn keys(db: &Database, consumer: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE consumer = $1")
        .bind(consumer)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

async fn claim(db: &Database, consumer: &str, id: &str) -> bool {
    let mut tx = db.begin().await.unwrap();
    let fresh = inbox::claim(&mut tx, consumer, id).await.unwrap();
    tx.commit().await.unwrap();
    fresh
}

#[tokio::test]
async fn inbox_keys_past_their_window_are_pruned_in_batches_and_fresh_ones_still_deduplicate() {
    let db = fresh_database(&NO_MIGRATIONS).await;
    let old: Vec<String> = (0..25).map(|n| format!("old-{n}")).collect();
    claim_aged(&db, "c", &old, WEEK + Duration::from_secs(3600)).await;
    claim_aged(&db, "other", &old, WEEK + Duration::from_secs(3600)).await;
    let recent: Vec<String> = (0..5).map(|n| format!("recent-{n}")).collect();
    claim_aged(&db, "c", &recent, WEEK - Duration::from_secs(3600)).await;
    assert!(claim(&db, "c", "fresh").await);

    let rule = Rule::inbox("c", WEEK);
    // One statement handles at most a batch.
    assert_eq!(rule.prune_batch(&db, Utc::now(), 10).await.unwrap(), 10);
    assert_eq!(keys(&db, "c").await, 31 - 10);
    assert_eq!(rule.prune(&db, Utc::now(), 10).await.unwrap(), 15);
    assert_eq!(
        keys(&db, "c").await,
        6,
        "the recent keys and the fresh one stay"
    );
    assert_eq!(
        keys(&db, "other").await,
        25,
        "another consumer's keys are its own"
    );
    assert_eq!(rule.prune(&db, Utc::now(), 10).await.unwrap(), 0);

    // A redelivered record inside its window is still recognised.
    assert!(!claim(&db, "c", "fresh").await);
    assert!(!claim(&db, "c", "recent-0").await);
    // One whose key was pruned (its topic can no longer redeliver it) would be claimed again.
    assert!(claim(&db, "c", "old-0").await);

    // A week later, everything claimed now is past the window.
    let later = Utc::now() + chrono::Duration::from_std(WEEK + Duration::from_secs(60)).unwrap();
    assert_eq!(rule.prune(&db, later, 1_000).await.unwrap(), 7);
    assert_eq!(keys(&db, "c").await, 0);
}
