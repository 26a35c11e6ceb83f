//! The outbox relay across replicas: one lease holder publishes, a standby takes over from a dead
//! holder, a holder whose lease was taken stops, and (PostgreSQL) rows leave in commit order and
//! a holder losing its lease in the middle of a round leaves the rest to the new one.
//! SQLite by default, PostgreSQL with TEST_DATABASE_URL.

use std::collections::HashMap;
use std::time::Duration;

use contracts::topics;

use crate::{customer, NO_MIGRATIONS};
use platform::kafka::{KafkaConfig, Producer};
use platform::outbox::{self, lease, RelayOptions};
use platform::testing::{
    connect, fresh_database_url, outbox_drained, poll_until, read_to_end, read_topic, LocalKafka,
    RecordExt,
};
use platform::{Database, Outbox};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A database as one replica sees it: its own pool on the shared URL.
async fn replica_db(url: &str) -> Database {
    connect(url, &NO_MIGRATIONS).await
}

async fn kafka() -> KafkaConfig {
    LocalKafka::load().isolated_with_topics().await
}

/// Fast lease timings, so takeovers happen within the test's patience.
fn options(holder: &str) -> RelayOptions {
    RelayOptions {
        holder: holder.to_string(),
        lease_ttl: Duration::from_secs(3),
        renew_every: Duration::from_millis(200),
        standby_poll: Duration::from_millis(200),
        ..RelayOptions::default()
    }
}

struct Relay {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

fn spawn_relay(db: &Database, kafka: &KafkaConfig, outbox: &Outbox, holder: &str) -> Relay {
    let stop = CancellationToken::new();
    let task = tokio::spawn(outbox::run_relay_with(
        db.clone(),
        Producer::new(kafka, holder).expect("producer"),
        outbox.clone(),
        stop.clone(),
        options(holder),
    ));
    Relay { stop, task }
}

async fn enqueue(db: &Database, outbox: &Outbox, key: &str) -> String {
    let mut tx = db.begin().await.expect("begin");
    let meta = outbox
        .enqueue(&mut tx, &customer(key), None)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    outbox.notify();
    meta.id
}

async fn wait_holder(db: &Database, holder: &str) -> i64 {
    poll_until(TIMEOUT, || async {
        match lease::holder(db).await.expect("lease") {
            Some((name, epoch)) if name == holder => Some(epoch),
            _ => None,
        }
    })
    .await
    .unwrap_or_else(|| panic!("{holder} never held the lease"))
}

/// The ids on `Customer.created`, in topic order per key.
async fn published(kafka: &KafkaConfig) -> HashMap<String, Vec<String>> {
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    for record in read_to_end(kafka, topics::CUSTOMER_CREATED).await {
        let key = record.key.clone().unwrap_or_default();
        by_key.entry(key).or_default().push(record.metadata().id);
    }
    by_key
}

#[tokio::test]
async fn two_relays_on_one_outbox_publish_each_row_once_in_order() {
    let kafka = kafka().await;
    let url = fresh_database_url().await;
    let (db_a, db_b) = (replica_db(&url).await, replica_db(&url).await);
    let (outbox_a, outbox_b) = (Outbox::new("a"), Outbox::new("b"));
    let a = spawn_relay(&db_a, &kafka, &outbox_a, "relay-a");
    let b = spawn_relay(&db_b, &kafka, &outbox_b, "relay-b");
    // Both replicas write while both relays run.
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for n in 0..60 {
        let key = format!("k{}", n % 3);
        let (db, outbox) = if n % 2 == 0 {
            (&db_a, &outbox_a)
        } else {
            (&db_b, &outbox_b)
        };
        let id = enqueue(db, outbox, &key).await;
        expected.entry(key).or_default().push(id);
    }
    outbox_drained(&db_a).await;
    let holder = lease::holder(&db_a).await.expect("lease").expect("taken");
    assert_eq!(holder.1, 1, "nobody took the lease over: {holder:?}");
    assert_eq!(
        published(&kafka).await,
        expected,
        "each row once, in write order per key"
    );
    for relay in [a, b] {
        relay.stop.cancel();
        relay.task.await.expect("relay");
    }
}

#[tokio::test]
async fn a_standby_relay_takes_over_from_a_dead_holder() {
    let kafka = kafka().await;
    let url = fresh_database_url().await;
    let (db_a, db_b) = (replica_db(&url).await, replica_db(&url).await);
    let outbox = Outbox::new("test");
    let a = spawn_relay(&db_a, &kafka, &outbox, "relay-a");
    let first_epoch = wait_holder(&db_a, "relay-a").await;
    let b = spawn_relay(&db_b, &kafka, &outbox, "relay-b");
    let before = enqueue(&db_a, &outbox, "k").await;
    outbox_drained(&db_a).await;
    // The holder dies without a word (as under kill -9): its lease is not released.
    a.task.abort();
    let _ = a.task.await;
    let after = enqueue(&db_b, &outbox, "k").await;
    let epoch = wait_holder(&db_b, "relay-b").await;
    assert!(epoch > first_epoch, "a takeover starts a new epoch");
    outbox_drained(&db_b).await;
    assert_eq!(
        published(&kafka).await.remove("k"),
        Some(vec![before, after])
    );
    b.stop.cancel();
    b.task.await.expect("relay");
}

#[tokio::test]
async fn a_holder_whose_lease_was_taken_stops_publishing_until_it_is_free_again() {
    let metrics = platform::telemetry::metrics_handle();
    let kafka = kafka().await;
    let db = replica_db(&fresh_database_url().await).await;
    let outbox = Outbox::new("test");
    let a = spawn_relay(&db, &kafka, &outbox, "relay-fenced");
    let epoch = wait_holder(&db, "relay-fenced").await;
    assert!(lease_gauge(&metrics, "relay-fenced", 1).await);
    // Another replica took the lease (as after a pause longer than the lease).
    let far = platform::db::timestamp(chrono::Utc::now() + chrono::Duration::hours(1));
    sqlx::query("UPDATE outbox_lease SET holder = 'intruder', epoch = epoch + 1, expires_at = $1")
        .bind(&far)
        .execute(db.pool())
        .await
        .expect("take the lease");
    assert!(
        lease_gauge(&metrics, "relay-fenced", 0).await,
        "the relay reports it lost the lease"
    );
    enqueue(&db, &outbox, "k").await;
    // The intruder's lease expires: the relay takes it back and publishes.
    sqlx::query("UPDATE outbox_lease SET expires_at = '1970-01-01T00:00:00.000Z'")
        .execute(db.pool())
        .await
        .expect("expire the lease");
    let again = wait_holder(&db, "relay-fenced").await;
    assert_eq!(again, epoch + 2);
    outbox_drained(&db).await;
    assert_eq!(published(&kafka).await["k"].len(), 1);
    a.stop.cancel();
    a.task.await.expect("relay");
}

/// Waits until the lease gauge of `holder` reads `value`; false if it never does.
async fn lease_gauge(
    metrics: &metrics_exporter_prometheus::PrometheusHandle,
    holder: &str,
    value: u8,
) -> bool {
    let line = format!("outbox_relay_lease_held{{holder=\"{holder}\"}} {value}");
    poll_until(TIMEOUT, || async {
        metrics.render().lines().any(|l| l == line).then_some(())
    })
    .await
    .is_some()
}

/// The expiry the lease holder last wrote (it renews after every round of publishing).
async fn lease_expiry(db: &Database) -> String {
    sqlx::query_scalar("SELECT expires_at FROM outbox_lease")
        .fetch_one(db.pool())
        .await
        .expect("lease row")
}

#[tokio::test]
async fn on_postgres_a_row_waits_for_older_transactions_still_open() {
    let url = fresh_database_url().await;
    if !url.starts_with("postgres") {
        println!("skipped: commit order across concurrent writers is a PostgreSQL matter (SQLite has one writer)");
        return;
    }
    let kafka = kafka().await;
    let db = replica_db(&url).await;
    let outbox = Outbox::new("test");
    // An older transaction writes first and stays open...
    let mut older = db.begin().await.expect("begin");
    let first = outbox
        .enqueue(&mut older, &customer("k"), None)
        .await
        .expect("enqueue")
        .id;
    // ...while a younger one commits an event for the same key.
    let second = enqueue(&db, &outbox, "k").await;
    let relay = spawn_relay(&db, &kafka, &outbox, "relay");
    wait_holder(&db, "relay").await;
    // The holder renews before each round: two renewals after the commit mean a whole round
    // ran with the younger row visible.
    for _ in 0..2 {
        let seen = lease_expiry(&db).await;
        let renewed = poll_until(TIMEOUT, || async {
            (lease_expiry(&db).await != seen).then_some(())
        })
        .await;
        assert!(renewed.is_some(), "the relay keeps renewing");
    }
    assert_eq!(
        outbox::pending(&db).await.expect("pending"),
        1,
        "the younger row waits for the older transaction"
    );
    older.commit().await.expect("commit");
    outbox.notify();
    outbox_drained(&db).await;
    assert_eq!(published(&kafka).await["k"], vec![first, second]);
    relay.stop.cancel();
    relay.task.await.expect("relay");
}

#[tokio::test]
async fn a_relay_replaces_a_producer_that_hit_a_fatal_error() {
    let kafka = kafka().await;
    let db = replica_db(&fresh_database_url().await).await;
    let outbox = Outbox::new("test");
    let producer = Producer::new(&kafka, "relay-fatal").expect("producer");
    let stop = CancellationToken::new();
    let relay = tokio::spawn(outbox::run_relay_with(
        db.clone(),
        producer.clone(),
        outbox.clone(),
        stop.clone(),
        options("relay-fatal"),
    ));
    let before = enqueue(&db, &outbox, "k").await;
    outbox_drained(&db).await;
    // The idempotent producer is fenced for good: nothing it is given can be delivered.
    producer.inject_fatal_error();
    assert!(producer.fatal_error().is_some());
    let after = enqueue(&db, &outbox, "k").await;
    outbox_drained(&db).await;
    assert_eq!(published(&kafka).await["k"], vec![before, after]);
    stop.cancel();
    relay.await.expect("relay");
}

/// Rows of the mid-round test: those the first holder's round takes, and those written after
/// the takeover.
const ROUND_ROWS: usize = 20;
const LATER_ROWS: usize = 10;

/// A holder that loses its lease in the middle of a round (PostgreSQL: the table lock that
/// stalls its delete is a matter of concurrent writers): its round has published, but its
/// last delete of the sent rows (it is stopping) waits on a lock while its lease is taken (the
/// test moves the epoch on and lets the lease run out, as a replica paused past its lease would
/// find) and a standby takes over. The new holder publishes the stalled round's rows again and everything after;
/// the old holder's fenced delete removes nothing and it stands by. Nothing is lost; the
/// duplicates carry the same event id (`ce_id`, what consumers deduplicate by) and the same
/// payload.
#[tokio::test]
async fn on_postgres_a_holder_losing_its_lease_mid_round_leaves_the_rest_to_the_new_one() {
    let url = fresh_database_url().await;
    if !url.starts_with("postgres") {
        println!(
            "skipped: a stalled delete beside a takeover needs concurrent writers (PostgreSQL)"
        );
        return;
    }
    // Arm: rows waiting; a lock that lets reads through and stalls writes to the outbox.
    let kafka = kafka().await;
    let (db_a, db_b, test_db) = (
        replica_db(&url).await,
        replica_db(&url).await,
        replica_db(&url).await,
    );
    let outbox = Outbox::new("test");
    let mut expected = Vec::new();
    for _ in 0..ROUND_ROWS {
        expected.push(enqueue(&test_db, &outbox, "k").await);
    }
    let mut lock = test_db.begin().await.expect("begin");
    sqlx::query("LOCK TABLE outbox IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock the outbox");

    // Load: the first holder publishes the round, is told to stop, and stalls in its last
    // delete (so it neither renews nor takes the lease again); its lease is taken from it,
    // and the standby takes the lease over and publishes the same rows.
    let a = spawn_relay(&db_a, &kafka, &outbox, "relay-a");
    let first = wait_holder(&test_db, "relay-a").await;
    read_topic(&kafka, topics::CUSTOMER_CREATED, TIMEOUT, |r| {
        r.len() >= ROUND_ROWS
    })
    .await;
    a.stop.cancel();
    sqlx::query(
        "UPDATE outbox_lease SET epoch = epoch + 1, expires_at = '1970-01-01T00:00:00.000Z'",
    )
    .execute(test_db.pool())
    .await
    .expect("take the lease from relay-a");
    let b = spawn_relay(&db_b, &kafka, &outbox, "relay-b");
    let second = wait_holder(&test_db, "relay-b").await;
    assert_eq!(
        second,
        first + 2,
        "taken from relay-a, then relay-b's takeover"
    );
    let copies = read_topic(&kafka, topics::CUSTOMER_CREATED, TIMEOUT, |r| {
        r.len() >= 2 * ROUND_ROWS
    })
    .await;
    assert_eq!(
        copies.len(),
        2 * ROUND_ROWS,
        "both holders published the round"
    );
    lock.commit().await.expect("unlock");
    for _ in 0..LATER_ROWS {
        expected.push(enqueue(&test_db, &outbox, "k").await);
    }
    outbox_drained(&test_db).await;

    // Judge: every row out, in order; the stalled round's rows twice, identical; the new
    // holder kept the lease (its own delete was not fenced off, the old holder's was).
    let records = read_to_end(&kafka, topics::CUSTOMER_CREATED).await;
    assert_copies(&records, &expected, ROUND_ROWS);
    let holder = lease::holder(&test_db).await.expect("lease");
    assert_eq!(holder, Some(("relay-b".to_string(), second)));
    for relay in [a, b] {
        relay.stop.cancel();
        relay.task.await.expect("relay");
    }
}

/// Asserts that `records` hold each of `expected` in order (by first copy), the first `twice`
/// of them two times and the rest once, every copy with the same `ce_id` header and payload.
fn assert_copies(records: &[platform::Record], expected: &[String], twice: usize) {
    let mut distinct: Vec<String> = Vec::new();
    let mut seen: HashMap<String, (usize, Vec<u8>)> = HashMap::new();
    for record in records {
        let id = record.metadata().id;
        assert_eq!(record.header("ce_id").as_deref(), Some(id.as_str()));
        let entry = seen.entry(id.clone()).or_insert_with(|| {
            distinct.push(id.clone());
            (0, record.payload.clone())
        });
        entry.0 += 1;
        assert_eq!(entry.1, record.payload, "a copy of {id} differs");
    }
    assert_eq!(
        distinct, expected,
        "nothing lost, first copies in write order"
    );
    for (n, id) in expected.iter().enumerate() {
        let want = if n < twice { 2 } else { 1 };
        assert_eq!(seen[id].0, want, "copies of row {n} ({id})");
    }
}
