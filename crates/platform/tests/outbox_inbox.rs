//! Outbox, relay, inbox and the consumer loop against the real broker and database
//! (SQLite, or PostgreSQL with TEST_DATABASE_URL).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use contracts::{topics, CustomerCreated};
use platform::kafka::{run_consumer, ConsumerOptions, HandleError, Handler, Producer, Record};
use platform::testing::{
    fresh_database_url, produce_raw, read_to_end, read_topic, unique, LocalKafka,
};
use platform::{inbox, outbox, Database, Outbox};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(30);

static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

async fn database() -> Database {
    let db = Database::connect(&fresh_database_url().await)
        .await
        .expect("connect");
    db.migrate(&NO_MIGRATIONS).await.expect("migrate");
    db
}

fn customer(id: &str) -> CustomerCreated {
    CustomerCreated {
        id: id.to_string(),
        name: "Ann".to_string(),
        email: "ann@example.com".to_string(),
        created_at: chrono::Utc::now(),
    }
}

#[tokio::test]
async fn migrations_run_twice_without_harm() {
    let db = database().await;
    db.migrate(&NO_MIGRATIONS)
        .await
        .expect("second run is a no-op");
    db.ping().await.expect("ping");
}

#[tokio::test]
async fn inbox_claims_an_event_once() {
    let db = database().await;
    let mut tx = db.begin().await.unwrap();
    assert!(inbox::claim(&mut tx, "c", "e1").await.unwrap());
    assert!(!inbox::claim(&mut tx, "c", "e1").await.unwrap());
    assert!(inbox::claim(&mut tx, "other", "e1").await.unwrap());
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_rolled_back_transaction_publishes_nothing() {
    let db = database().await;
    let outbox = Outbox::new("test");
    let mut tx = db.begin().await.unwrap();
    outbox
        .enqueue(&mut tx, &customer("c1"), None)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(outbox::pending(&db).await.unwrap(), 0);
}

#[tokio::test]
async fn the_relay_publishes_committed_events_in_order_and_marks_them_sent() {
    let kafka = LocalKafka::load().isolated();
    platform::kafka::ensure_topics(&kafka, &topics::all_with_dead_letters())
        .await
        .unwrap();
    let db = database().await;
    let outbox = Outbox::new("test");
    let mut ids = Vec::new();
    for n in 0..20 {
        let mut tx = db.begin().await.unwrap();
        let meta = outbox
            .enqueue(&mut tx, &customer("same-key"), None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        ids.push((n, meta.id));
    }
    assert_eq!(outbox::pending(&db).await.unwrap(), 20);

    let stop = CancellationToken::new();
    let relay = tokio::spawn(outbox::run_relay(
        db.clone(),
        Producer::new(&kafka, "relay").unwrap(),
        outbox.clone(),
        stop.clone(),
    ));
    outbox.notify();
    // Rows are marked sent only once the broker acknowledged them.
    let drained = platform::testing::eventually(TIMEOUT, || {
        let db = db.clone();
        async move { (outbox::pending(&db).await.ok()? == 0).then_some(()) }
    })
    .await;
    assert!(drained.is_some(), "rows are marked sent");
    // So every partition, read to its end, holds each event exactly once, in commit order.
    let read = read_to_end(&kafka, topics::CUSTOMER_CREATED).await;
    let read_ids: Vec<String> = read.iter().map(|r| r.metadata().id).collect();
    let expected: Vec<String> = ids.into_iter().map(|(_, id)| id).collect();
    assert_eq!(
        read_ids, expected,
        "one key, one partition: commit order is kept"
    );
    stop.cancel();
    relay.await.unwrap();
}

/// Counts records; fails the first `transient_failures` attempts, dead-letters bad JSON.
#[derive(Clone)]
struct Counting {
    db: Database,
    applied: Arc<AtomicUsize>,
    attempts: Arc<AtomicUsize>,
    transient_failures: usize,
}

impl Handler for Counting {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let (meta, _customer) = record.decode::<CustomerCreated>()?;
        if self.attempts.fetch_add(1, Ordering::SeqCst) < self.transient_failures {
            return Err(HandleError::Transient("not yet".into()));
        }
        let mut tx = self
            .db
            .begin()
            .await
            .map_err(|e| HandleError::Transient(e.to_string()))?;
        if inbox::claim(&mut tx, "counting", &meta.id)
            .await
            .map_err(|e| HandleError::Transient(e.to_string()))?
        {
            self.applied.fetch_add(1, Ordering::SeqCst);
        }
        tx.commit()
            .await
            .map_err(|e| HandleError::Transient(e.to_string()))
    }
}

#[tokio::test]
async fn the_consumer_retries_dedupes_and_dead_letters() {
    let kafka = LocalKafka::load().isolated();
    platform::kafka::ensure_topics(&kafka, &topics::all_with_dead_letters())
        .await
        .unwrap();
    let good = serde_json::to_string(&customer("k")).unwrap();
    let headers = [("ce_id", "evt-1"), ("ce_type", "customer.created.v1")];
    // The same event twice (a redelivery), a record that is not JSON, then another event.
    produce_raw(&kafka, topics::CUSTOMER_CREATED, "k", &good, &headers).await;
    produce_raw(&kafka, topics::CUSTOMER_CREATED, "k", &good, &headers).await;
    produce_raw(&kafka, topics::CUSTOMER_CREATED, "k", "{not json", &[]).await;
    produce_raw(
        &kafka,
        topics::CUSTOMER_CREATED,
        "k",
        &good,
        &[("ce_id", "evt-2")],
    )
    .await;

    let handler = Counting {
        db: database().await,
        applied: Arc::default(),
        attempts: Arc::default(),
        transient_failures: 2,
    };
    let stop = CancellationToken::new();
    let mut options = ConsumerOptions::new(unique("group"), &[topics::CUSTOMER_CREATED]);
    options.initial_backoff = Duration::from_millis(10);
    let consumer = tokio::spawn({
        let handler = handler.clone();
        let kafka = kafka.clone();
        let producer = Producer::new(&kafka, "dlt").unwrap();
        let stop = stop.clone();
        async move { run_consumer(&kafka, options, handler, producer, stop).await }
    });

    let applied = platform::testing::eventually(TIMEOUT, || {
        let n = handler.applied.load(Ordering::SeqCst);
        async move { (n == 2).then_some(n) }
    })
    .await;
    assert_eq!(
        applied,
        Some(2),
        "evt-1 once (despite redelivery) and evt-2"
    );
    let dead = read_topic(
        &kafka,
        &topics::dead_letter(topics::CUSTOMER_CREATED),
        TIMEOUT,
        |r| !r.is_empty(),
    )
    .await;
    assert_eq!(dead.len(), 1);
    // evt-2 came after the bad record on the same partition: its dead letter was written before.
    let dead = read_to_end(&kafka, &topics::dead_letter(topics::CUSTOMER_CREATED)).await;
    assert_eq!(dead.len(), 1, "exactly one dead letter");
    assert_eq!(dead[0].payload, b"{not json");
    assert!(dead[0].headers.iter().any(|(k, _)| k == "dlt_error"));
    stop.cancel();
    consumer.await.unwrap().unwrap();
    assert_eq!(handler.applied.load(Ordering::SeqCst), 2);
}
