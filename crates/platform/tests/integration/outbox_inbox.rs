//! Outbox, relay, inbox and the consumer loop against the real broker and database
//! (SQLite, or PostgreSQL with TEST_DATABASE_URL).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use contracts::{topics, CustomerCreated, EventMetadata};

use crate::{customer, NO_MIGRATIONS};
use platform::inbox::{Applied, Apply, Attempt, Inboxed};
use platform::kafka::{run_consumer, ConsumerOptions, HandleError, KafkaConfig, Producer, Record};
use platform::parking::ParkingLot;
use platform::testing::{
    fresh_database, outbox_drained, poll_until, produce_raw, read_to_end, read_topic, unique,
    LocalKafka, RecordExt,
};
use platform::{inbox, outbox, Database, Outbox};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(30);

async fn database() -> Database {
    fresh_database(&NO_MIGRATIONS).await
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

/// Commits `n` events for one key, one transaction each; returns their ids.
async fn enqueue_one_by_one(db: &Database, outbox: &Outbox, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let mut tx = db.begin().await.unwrap();
        let meta = outbox
            .enqueue(&mut tx, &customer("same-key"), None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        outbox.notify();
        ids.push(meta.id);
    }
    ids
}

#[tokio::test]
async fn the_relay_publishes_committed_events_in_order_and_marks_them_sent() {
    let kafka = LocalKafka::load().isolated_with_topics().await;
    let db = database().await;
    let outbox = Outbox::new("test");
    let mut expected = enqueue_one_by_one(&db, &outbox, 20).await;
    assert_eq!(outbox::pending(&db).await.unwrap(), 20);

    let stop = CancellationToken::new();
    let relay = tokio::spawn(outbox::run_relay(
        db.clone(),
        Producer::new(&kafka, "relay").unwrap(),
        outbox.clone(),
        stop.clone(),
    ));
    outbox.notify();
    // Rows are deleted only once the broker acknowledged them.
    outbox_drained(&db).await;
    // Rows written after the table emptied are numbered after the published ones (the relay
    // reads after the highest number it published), so they are published too.
    expected.extend(enqueue_one_by_one(&db, &outbox, 5).await);
    outbox_drained(&db).await;
    // So every partition, read to its end, holds each event exactly once, in commit order.
    let read = read_to_end(&kafka, topics::CUSTOMER_CREATED).await;
    let read_ids: Vec<String> = read.iter().map(|r| r.metadata().id).collect();
    assert_eq!(
        read_ids, expected,
        "one key, one partition: commit order is kept"
    );
    stop.cancel();
    relay.await.unwrap();
}

#[tokio::test]
async fn the_consumer_retries_dedupes_and_dead_letters() {
    let kafka = LocalKafka::load().isolated_with_topics().await;
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

    let recorder = Recorder {
        transient_failures: 2,
        ..Recorder::default()
    };
    let stop = CancellationToken::new();
    let mut options = ConsumerOptions::new(unique("group"), &[topics::CUSTOMER_CREATED]);
    options.initial_backoff = Duration::from_millis(10);
    let consumer = spawn_consumer(&kafka, &database().await, &recorder, options, &stop);

    let applied = poll_until(TIMEOUT, || {
        let n = recorder.applied().len();
        async move { (n == 2).then_some(n) }
    })
    .await;
    assert_eq!(
        applied,
        Some(2),
        "evt-1 once (despite redelivery) and evt-2"
    );
    let dead = first_dead_letters(&kafka).await;
    assert_eq!(dead.len(), 1);
    // evt-2 came after the bad record on the same partition: its dead letter was written before.
    let dead = read_to_end(&kafka, &topics::dead_letter(topics::CUSTOMER_CREATED)).await;
    assert_eq!(dead.len(), 1, "exactly one dead letter");
    assert_eq!(dead[0].payload, b"{not json");
    assert!(dead[0].headers.iter().any(|(k, _)| k == "dlt_error"));
    stop.cancel();
    consumer.await.unwrap().unwrap();
    assert_eq!(recorder.applied().len(), 2);
}

/// Applies `Customer.created` events and remembers, in commit order, the (id, name) of each;
/// fails its first `transient_failures` attempts, and forever on the event named `poison`; bad
/// JSON is rejected by `decode` (dead-lettered).
#[derive(Clone, Default)]
struct Recorder {
    applied: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    attempts: Arc<AtomicUsize>,
    transient_failures: usize,
    /// The cause of `poison`'s failures is fixed: it applies.
    fixed: Arc<AtomicBool>,
}

impl Apply for Recorder {
    type Event = CustomerCreated;
    type Done = (String, String);

    fn decode(&self, record: &Record) -> Result<(EventMetadata, CustomerCreated), HandleError> {
        record.decode::<CustomerCreated>()
    }

    async fn apply(
        &self,
        _conn: &mut platform::db::Conn,
        _metadata: &EventMetadata,
        customer: &CustomerCreated,
        _attempt: Attempt,
    ) -> Result<Applied<(String, String)>, HandleError> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) < self.transient_failures {
            return Err(HandleError::Transient("not yet".into()));
        }
        if customer.name == "poison" && !self.fixed.load(Ordering::SeqCst) {
            return Err(HandleError::Transient(
                "the database refuses this one".into(),
            ));
        }
        Ok(Applied::Done((customer.id.clone(), customer.name.clone())))
    }

    fn committed(&self, done: Vec<(String, String)>) {
        self.applied.lock().unwrap().extend(done);
    }
}

impl Recorder {
    fn applied(&self) -> Vec<(String, String)> {
        self.applied.lock().unwrap().clone()
    }
}

async fn send_customer(producer: &Producer, key: &str, name: &str, event_id: &str) {
    let mut customer = customer(key);
    customer.name = name.to_string();
    producer
        .send(&platform::kafka::OutgoingRecord {
            topic: topics::CUSTOMER_CREATED.to_string(),
            key: key.to_string(),
            payload: serde_json::to_string(&customer).unwrap(),
            headers: [("ce_id", event_id), ("ce_type", "customer.created.v1")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .await
        .unwrap();
}

fn spawn_consumer(
    kafka: &platform::KafkaConfig,
    db: &Database,
    recorder: &Recorder,
    options: ConsumerOptions,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<Result<(), platform::kafka::KafkaError>> {
    let handler = Inboxed::new(
        db.clone(),
        Arc::new(recorder.clone()),
        ParkingLot::new("recorder", Duration::ZERO),
    );
    let kafka = kafka.clone();
    let producer = Producer::new(&kafka, "dlt").unwrap();
    let stop = stop.clone();
    tokio::spawn(async move { run_consumer(&kafka, options, handler, producer, stop).await })
}

/// Isolated topics holding `poison` then `after` on key `k` (sent by the producer returned),
/// and options for consumer `group` that give up on a record after 500 ms of transient
/// failures.
async fn poison_then_after(group: &str) -> (platform::KafkaConfig, Producer, ConsumerOptions) {
    let kafka = LocalKafka::load().isolated_with_topics().await;
    let producer = Producer::new(&kafka, "test").unwrap();
    send_customer(&producer, "k", "poison", "evt-poison").await;
    send_customer(&producer, "k", "after", "evt-after").await;
    let mut options = ConsumerOptions::new(group, &[topics::CUSTOMER_CREATED]);
    options.initial_backoff = Duration::from_millis(20);
    options.retry_limit = Duration::from_millis(500);
    (kafka, producer, options)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_failing_past_the_retry_limit_is_dead_lettered_and_the_partition_moves_on() {
    let (kafka, _, options) = poison_then_after(&unique("group")).await;
    let recorder = Recorder::default();
    let stop = CancellationToken::new();
    let consumer = spawn_consumer(&kafka, &database().await, &recorder, options, &stop);

    let dead = first_dead_letters(&kafka).await;
    assert_eq!(dead.len(), 1);
    let error = dead[0].header("dlt_error").unwrap();
    assert!(error.starts_with("gave up after"), "{error}");
    assert!(error.contains("the database refuses this one"), "{error}");
    let after = poll_until(TIMEOUT, || {
        let applied = recorder.applied();
        async move { (!applied.is_empty()).then_some(applied) }
    })
    .await;
    assert_eq!(after, Some(vec![("k".to_string(), "after".to_string())]));
    stop.cancel();
    consumer.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_lanes_apply_everything_once_and_in_order_across_a_rebalance() {
    let kafka = LocalKafka::load().isolated_with_topics().await;
    let assignor = lanes_across_a_rebalance(kafka).await;
    assert_eq!(assignor, "consumer/cooperative-sticky");
}

/// The same with KIP-848's group protocol (`KAFKA_GROUP_PROTOCOL=consumer`): the broker shares
/// the partitions out as members join and leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_lanes_apply_everything_once_and_in_order_across_a_kip_848_rebalance() {
    let kafka = KafkaConfig {
        group_protocol: platform::kafka::GroupProtocol::Consumer,
        ..LocalKafka::load().isolated_with_topics().await
    };
    let assignor = lanes_across_a_rebalance(kafka).await;
    // Not a classic group: the classic DescribeGroups API knows no type and no assignor of it
    // (the broker's own assignor shared the partitions out, not the client's).
    assert_eq!(assignor, "/");
}

/// The protocol type and assignor of consumer group `group` (prefixed as the consumer does),
/// as the broker's classic DescribeGroups API gives them.
fn assignor(kafka: &KafkaConfig, group: &str) -> String {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = kafka.client_config("test").create().unwrap();
    let groups = client
        .fetch_group_list(Some(&kafka.topic_name(group)), TIMEOUT)
        .unwrap();
    let described = groups.groups().first().expect("the group is known");
    format!("{}/{}", described.protocol_type(), described.protocol())
}

/// Eight keys, 50 records each, applied by one member, then two, then the second alone: each
/// record is applied exactly once and every key in order. Returns the group's assignor as the
/// broker describes it while the second member runs alone.
async fn lanes_across_a_rebalance(kafka: KafkaConfig) -> String {
    let keys: Vec<String> = (0..8).map(|k| format!("key-{k}")).collect();
    let producer = Producer::new(&kafka, "test").unwrap();
    let send_round = |round: std::ops::Range<usize>| {
        let producer = producer.clone();
        let keys = keys.clone();
        async move {
            for seq in round {
                for key in &keys {
                    send_customer(
                        &producer,
                        key,
                        &format!("{seq:04}"),
                        &format!("{key}-{seq}"),
                    )
                    .await;
                }
            }
        }
    };
    let db = database().await;
    let recorder = Recorder::default();
    let group = unique("group");
    let options = || {
        let mut options = ConsumerOptions::new(group.clone(), &[topics::CUSTOMER_CREATED]);
        options.max_batch = 7;
        options
    };
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    send_round(0..20).await;
    let a = spawn_consumer(&kafka, &db, &recorder, options(), &stop_a);
    poll_until(TIMEOUT, || {
        let n = recorder.applied().len();
        async move { (n > 0).then_some(()) }
    })
    .await
    .expect("the first consumer applies records");
    // A second member joins (the partitions are shared out) while records keep coming, then
    // the first one leaves (its partitions move again).
    let b = spawn_consumer(&kafka, &db, &recorder, options(), &stop_b);
    send_round(20..40).await;
    stop_a.cancel();
    a.await.unwrap().unwrap();
    send_round(40..50).await;
    let total = keys.len() * 50;
    let applied = poll_until(TIMEOUT, || {
        let applied = recorder.applied();
        async move { (applied.len() >= total).then_some(applied) }
    })
    .await
    .expect("every record applied");
    let assignor = assignor(&kafka, &group);
    stop_b.cancel();
    b.await.unwrap().unwrap();

    assert_eq!(applied.len(), total, "each record applied exactly once");
    for key in &keys {
        let sequence: Vec<&str> = applied
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, seq)| seq.as_str())
            .collect();
        let expected: Vec<String> = (0..50).map(|seq| format!("{seq:04}")).collect();
        assert_eq!(sequence, expected, "{key}: in order, none missing");
    }
    assignor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_producer_in_a_fatal_state_is_replaced() {
    let kafka = LocalKafka::load().isolated_with_topics().await;
    produce_raw(&kafka, topics::CUSTOMER_CREATED, "k", "{not json", &[]).await;
    let dead_letters = Producer::new(&kafka, "dlt").unwrap();
    dead_letters.inject_fatal_error();
    assert!(dead_letters.fatal_error().is_some());

    let handler = Inboxed::new(
        database().await,
        Arc::new(Recorder::default()),
        ParkingLot::new("recorder", Duration::ZERO),
    );
    let stop = CancellationToken::new();
    let mut options = ConsumerOptions::new(unique("group"), &[topics::CUSTOMER_CREATED]);
    options.initial_backoff = Duration::from_millis(20);
    let consumer = tokio::spawn({
        let (kafka, stop) = (kafka.clone(), stop.clone());
        async move { run_consumer(&kafka, options, handler, dead_letters, stop).await }
    });
    let dead = first_dead_letters(&kafka).await;
    assert_eq!(dead.len(), 1, "dead-lettered through a new producer");
    assert_eq!(dead[0].payload, b"{not json");
    stop.cancel();
    consumer.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_dead_letter_is_applied_once_and_a_second_replay_changes_nothing() {
    use platform::kafka::dead_letters;
    let group = unique("group");
    let (kafka, producer, options) = poison_then_after(&group).await;

    // The record fails transiently for longer than the retry limit: it is dead-lettered.
    let recorder = Recorder::default();
    let stop = CancellationToken::new();
    let consumer = spawn_consumer(&kafka, &database().await, &recorder, options, &stop);
    let applied = |n: usize| {
        let recorder = recorder.clone();
        async move {
            poll_until(TIMEOUT, || {
                let applied = recorder.applied();
                async move { (applied.len() >= n).then_some(applied) }
            })
            .await
            .unwrap_or_else(|| panic!("{n} events applied: {:?}", recorder.applied()))
        }
    };
    assert_eq!(applied(1).await, [("k".into(), "after".into())]);
    let letter = the_one_dead_letter_of(&kafka, &group).await;
    let letter = &letter;

    // The cause is fixed; the dead letter is replayed: applied once.
    recorder.fixed.store(true, Ordering::SeqCst);
    let replayed = dead_letters::replay(&producer, letter, "tester")
        .await
        .unwrap();
    assert_eq!(replayed.topic, topics::CUSTOMER_CREATED);
    assert_eq!(replayed.from, letter.position());
    assert_eq!(
        applied(2).await,
        [("k".into(), "after".into()), ("k".into(), "poison".into())]
    );

    // A second replay is read, recognised in the inbox and skipped: the event behind it on the
    // same key (same partition) is applied, the poison event not again.
    dead_letters::replay(&producer, letter, "tester")
        .await
        .unwrap();
    send_customer(&producer, "k", "marker", "evt-marker").await;
    let names: Vec<String> = applied(3).await.into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["after", "poison", "marker"]);
    the_replays_are_the_original_record(&kafka, letter, replayed.delivered.offset).await;
    stop.cancel();
    consumer.await.unwrap().unwrap();
    assert_eq!(recorder.applied().len(), 3);
}

/// The one dead letter of `Customer.created`, from `group`, readable alone by its position.
async fn the_one_dead_letter_of(
    kafka: &KafkaConfig,
    group: &str,
) -> platform::kafka::dead_letters::StoredDeadLetter {
    use platform::kafka::dead_letters;
    let dlt = topics::dead_letter(topics::CUSTOMER_CREATED);
    let letters = dead_letters::read_all(kafka, &dlt).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.header("dlt_consumer_group").as_deref(), Some(group));
    assert_eq!(letter.header("ce_id").as_deref(), Some("evt-poison"));
    let one = dead_letters::read_one(kafka, &dlt, letter.partition, letter.offset)
        .await
        .unwrap();
    assert_eq!(&one, letter);
    let missing = dead_letters::read_one(kafka, &dlt, letter.partition, letter.offset + 1).await;
    assert!(
        matches!(missing, Err(dead_letters::DeadLetterError::NotFound { .. })),
        "{missing:?}"
    );
    letters.into_iter().next().unwrap()
}

/// The two replays of `letter` are the original record (the one before `first_replay`), byte
/// for byte, with who replayed it and where from, and no dead-letter headers.
async fn the_replays_are_the_original_record(
    kafka: &KafkaConfig,
    letter: &platform::kafka::dead_letters::StoredDeadLetter,
    first_replay: i64,
) {
    let records = read_to_end(kafka, topics::CUSTOMER_CREATED).await;
    let original = records
        .iter()
        .find(|r| r.metadata().id == "evt-poison" && r.offset < first_replay)
        .expect("the original record");
    let replays: Vec<&Record> = records
        .iter()
        .filter(|r| r.headers.iter().any(|(k, _)| k == "dlt_replayed_from"))
        .collect();
    assert_eq!(replays.len(), 2);
    for replay in replays {
        assert_eq!(replay.key, original.key);
        assert_eq!(replay.payload, original.payload);
        let header = |name: &str| {
            replay
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("dlt_replayed_by").as_deref(), Some("tester"));
        assert_eq!(header("dlt_replayed_from"), Some(letter.position()));
        assert!(header("dlt_replayed_at").is_some());
        assert_eq!(header("dlt_error"), None, "no dead-letter headers");
        let without_replay: Vec<&(String, Vec<u8>)> = replay
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with("dlt_replayed_"))
            .collect();
        assert_eq!(without_replay, original.headers.iter().collect::<Vec<_>>());
    }
}

/// The dead letters of `Customer.created`, once there is at least one.
async fn first_dead_letters(kafka: &KafkaConfig) -> Vec<Record> {
    let dlt = topics::dead_letter(topics::CUSTOMER_CREATED);
    read_topic(kafka, &dlt, TIMEOUT, |r| !r.is_empty()).await
}
