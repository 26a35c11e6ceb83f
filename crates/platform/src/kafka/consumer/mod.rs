//! The consumer: partition lanes and batches.
//!
//! One thread polls the broker and hands each record to its partition's lane (a task). A lane
//! takes what has arrived, up to `max_batch` records, and gives them to the handler as one
//! batch, which commits their effects in one database transaction; only then is the offset
//! stored (and committed in the background, once more synchronously on shutdown and before a
//! partition is revoked). Partitions run concurrently, each in order. A batch that fails is
//! applied again record by record; a record that fails transiently is retried with backoff
//! while only its partition is paused, and is dead-lettered after `retry_limit`. Records that
//! can never be processed go to `<topic>.DLT` (see [`super::dead_letter`]).

mod context;
mod dispatch;
mod error;
mod lane;
mod record;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use tokio_util::sync::CancellationToken;

pub use error::{chain, BoxError, HandleError};
pub use record::Record;

use super::{KafkaConfig, KafkaError, Producer};
use crate::health::ConsumerHealth;
use crate::telemetry;
use context::LaneContext;
use dispatch::Dispatcher;

/// A record of a batch that can never be processed: it goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its position in the batch.
    pub index: usize,
    /// Why (the `dlt_error` header).
    pub reason: String,
}

/// Applies batches of records.
pub trait Handler: Send + Sync + 'static {
    /// Applies `records` — consecutive records of one partition, in offset order — and commits
    /// their effects (one database transaction) before returning. Returns the records it
    /// rejects for good; they are dead-lettered and the partition moves on. An `Err` means
    /// nothing was applied: the consumer retries the records one by one.
    fn handle(
        &self,
        records: &[Record],
    ) -> impl Future<Output = Result<Vec<Rejected>, HandleError>> + Send;
}

/// Settings of one consumer.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Consumer group id.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Most records handed to the handler at once.
    pub max_batch: usize,
    /// First delay between retries of a transient failure.
    pub initial_backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
    /// How long a record may keep failing transiently before it is dead-lettered.
    pub retry_limit: Duration,
    /// How often librdkafka reports statistics (consumer lag, assignment).
    pub statistics_interval: Duration,
    /// Where the consumer reports its state for `/readyz` (none: reports go nowhere).
    pub health: Option<ConsumerHealth>,
}

impl ConsumerOptions {
    /// Options with the defaults: batches of up to 500 records, backoff from 100 ms doubling
    /// to 5 s, dead-lettered after 5 minutes of transient failures, statistics every 5 s.
    pub fn new(group_id: impl Into<String>, topics: &[&str]) -> Self {
        Self {
            group_id: group_id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            max_batch: 500,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            retry_limit: Duration::from_secs(300),
            statistics_interval: Duration::from_secs(5),
            health: None,
        }
    }
}

/// What a partition's lane shares with the dispatcher and the rebalance callback.
#[derive(Debug)]
struct LaneState {
    /// Bumped when the partition is revoked: records of an older generation are dropped.
    generation: AtomicU64,
    /// The lane is inside a batch (set before it checks the generation).
    busy: AtomicBool,
    /// The timestamp (ms since the epoch) of the first record of the batch the lane started
    /// last, [`NO_TIMESTAMP`] before the first: while the partition has lag, the oldest record
    /// not yet processed is no older than it (the `kafka_consumer_lag_age_seconds` gauge).
    batch_timestamp_ms: AtomicI64,
}

/// [`LaneState::batch_timestamp_ms`] when no batch was started (or its record had no timestamp).
const NO_TIMESTAMP: i64 = -1;

impl Default for LaneState {
    fn default() -> Self {
        Self {
            generation: AtomicU64::default(),
            busy: AtomicBool::default(),
            batch_timestamp_ms: AtomicI64::new(NO_TIMESTAMP),
        }
    }
}

type LaneKey = (String, i32);
type LaneStates = Arc<Mutex<HashMap<LaneKey, Arc<LaneState>>>>;

type KafkaConsumer = BaseConsumer<LaneContext>;

/// A record on its way to a lane, with the partition's generation when it was read and its
/// timestamp (ms since the epoch, when the broker gave one).
struct Envelope {
    generation: u64,
    record: Record,
    timestamp_ms: Option<i64>,
}

/// Everything a lane needs.
struct LaneEnv<H> {
    handler: H,
    options: ConsumerOptions,
    /// Replaced when it hits a fatal error (fenced or out-of-sequence idempotent producer).
    dead_letters: Mutex<Producer>,
    consumer: Arc<KafkaConsumer>,
    /// Where a lane reports a dead letter it cannot publish.
    health: ConsumerHealth,
    shutdown: CancellationToken,
}

/// Consumes `options.topics` until `shutdown` is cancelled. Each partition has a lane of its
/// own: its records are handed to `handler` in batches, in order; partitions are handled
/// concurrently; a lane that retries pauses only its partition. Returns after each lane
/// finished the batch it was in and the offsets are committed.
pub async fn run_consumer<H: Handler>(
    config: &KafkaConfig,
    options: ConsumerOptions,
    handler: H,
    dead_letters: Producer,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let lanes = LaneStates::default();
    let health = options
        .health
        .clone()
        .unwrap_or_else(|| ConsumerHealth::detached(&options.group_id));
    let consumer = subscribe(config, &options, &lanes, &health)?;
    tracing::info!(group = %options.group_id, topics = ?options.topics, "consumer started");
    health.started();
    let group = options.group_id.clone();
    let consumer = Arc::new(consumer);
    let env = Arc::new(LaneEnv {
        handler,
        options,
        dead_letters: Mutex::new(dead_letters),
        consumer: Arc::clone(&consumer),
        health: health.clone(),
        shutdown: shutdown.clone(),
    });
    let dispatcher = Dispatcher::new(env, lanes, config.topic_prefix.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = Arc::clone(&stop);
        let metrics = crate::metrics_scope::current();
        std::thread::Builder::new()
            .name(format!("consume-{group}"))
            .spawn(move || metrics.in_scope(|| dispatcher.run(&stop)))
            .map_err(|e| KafkaError::Timeout(format!("consumer thread: {e}")))?
    };

    shutdown.cancelled().await;
    stop.store(true, Ordering::SeqCst);
    health.stopped();
    let lanes = tokio::task::spawn_blocking(move || thread.join().unwrap_or_default())
        .await
        .unwrap_or_default();
    // Each lane finishes the batch it is in (and stores its offsets).
    for lane in lanes {
        let _ = lane.await;
    }
    tokio::task::spawn_blocking(move || {
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(%error, "final offset commit");
        }
        drop(consumer);
    })
    .await
    .ok();
    tracing::info!(%group, "consumer stopped");
    Ok(())
}

/// Creates the group's consumer (manual offset storage, cooperative rebalancing) and subscribes
/// it to `options.topics`.
fn subscribe(
    config: &KafkaConfig,
    options: &ConsumerOptions,
    lanes: &LaneStates,
    health: &ConsumerHealth,
) -> Result<KafkaConsumer, KafkaError> {
    let consumer: KafkaConsumer = config
        .client_config(&options.group_id)
        // Groups carry the topic prefix too: environments (and tests) sharing a cluster never
        // share a group.
        .set("group.id", config.topic_name(&options.group_id))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            crate::health::SESSION_TIMEOUT.as_millis().to_string(),
        )
        .set(
            "statistics.interval.ms",
            options.statistics_interval.as_millis().max(1).to_string(),
        )
        .set("heartbeat.interval.ms", "2000")
        .set("max.poll.interval.ms", "300000")
        .set("partition.assignment.strategy", "cooperative-sticky")
        // Small fetch waits keep latency low when traffic is light; a bounded prefetch keeps
        // memory low when a paused partition's records wait.
        .set("fetch.wait.max.ms", "100")
        .set("queued.max.messages.kbytes", "8192")
        .create_with_context(LaneContext {
            lanes: Arc::clone(lanes),
            revoked: Mutex::default(),
            group: options.group_id.clone(),
            prefix: config.topic_prefix.clone(),
            health: health.clone(),
            assignment: Mutex::default(),
            metrics: crate::metrics_scope::current(),
        })
        .map_err(|source| KafkaError::Client {
            client: "consumer",
            source,
        })?;
    let broker_topics: Vec<String> = options
        .topics
        .iter()
        .map(|t| config.topic_name(t))
        .collect();
    let topic_refs: Vec<&str> = broker_topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .map_err(|source| KafkaError::Operation {
            operation: format!("subscribe to {topic_refs:?}"),
            source,
        })?;
    Ok(consumer)
}

/// The span around applying one record (OpenTelemetry messaging conventions, operation
/// `process`), a consumer of group `group` when given: a child of the span that produced it
/// when the record carries a valid `traceparent`, else the root of a new trace.
pub fn consume_span(record: &Record, group: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "consume",
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = %record.topic,
        messaging.destination.partition.id = %record.partition,
        messaging.kafka.offset = record.offset,
        messaging.kafka.message.key = tracing::field::Empty,
        messaging.consumer.group.name = tracing::field::Empty,
        event_id = %record.event_id_for_logs(),
    );
    if let Some(key) = &record.key {
        span.record("messaging.kafka.message.key", key.as_str());
    }
    if let Some(group) = group {
        span.record("messaging.consumer.group.name", group);
    }
    if let Some(traceparent) = record.traceparent() {
        telemetry::set_parent(&span, traceparent);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::envelope::headers;
    use contracts::topics;
    use contracts::CustomerCreated;

    fn record(headers: Vec<(&str, &str)>, payload: &str) -> Record {
        Record {
            topic: topics::CUSTOMER_CREATED.to_string(),
            partition: 2,
            offset: 17,
            key: Some("c1".into()),
            payload: payload.as_bytes().to_vec(),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    const CUSTOMER: &str =
        r#"{"id":"c1","name":"Ann","email":"ann@example.com","createdAt":"2026-01-01T00:00:00Z"}"#;

    #[test]
    fn decodes_records_with_and_without_cloudevents_headers() {
        let with = record(
            vec![(headers::ID, "e-9"), (headers::TYPE, "customer.created.v1")],
            CUSTOMER,
        );
        let (meta, customer) = with.decode::<CustomerCreated>().unwrap();
        assert_eq!(meta.id, "e-9");
        assert_eq!(customer.email, "ann@example.com");

        let plain = record(vec![], CUSTOMER);
        let (meta, _) = plain.decode::<CustomerCreated>().unwrap();
        assert_eq!(meta.id, "Customer.created-2-17");
    }

    #[test]
    fn bad_json_and_unknown_versions_are_permanent() {
        let bad = record(vec![], "{not json");
        assert!(matches!(
            bad.decode::<CustomerCreated>(),
            Err(HandleError::Permanent(_))
        ));
        let v2 = record(
            vec![(headers::ID, "e"), (headers::TYPE, "customer.created.v2")],
            CUSTOMER,
        );
        let err = v2.decode::<CustomerCreated>().unwrap_err();
        assert!(err.to_string().contains("customer.created.v2"));
    }

    #[test]
    fn an_oversized_event_id_is_permanent_and_cut_in_logs() {
        let longest = "e".repeat(contracts::envelope::MAX_ID_BYTES);
        let fits = record(vec![(headers::ID, &longest)], CUSTOMER);
        assert!(fits.decode::<CustomerCreated>().is_ok());
        let hostile_id = "é".repeat(5_000);
        let hostile = record(vec![(headers::ID, &hostile_id)], CUSTOMER);
        let err = hostile.decode::<CustomerCreated>().unwrap_err();
        assert!(matches!(err, HandleError::Permanent(_)), "{err}");
        assert!(err.to_string().contains("10000 bytes"), "{err}");
        let logged = hostile.event_id_for_logs();
        assert!(
            logged.len() < 200 && logged.ends_with("(10000 bytes)"),
            "{logged}"
        );
    }

    /// Collects the spans a test tracer provider ends.
    #[derive(Debug, Clone, Default)]
    struct Collected(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Collected {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// Runs `work` under a subscriber with an OpenTelemetry layer; returns its result and the
    /// spans it ended.
    fn traced<T>(work: impl FnOnce() -> T) -> (T, Vec<opentelemetry_sdk::trace::SpanData>) {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let collected = Collected::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(collected.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let out = tracing::subscriber::with_default(subscriber, work);
        provider.force_flush().unwrap();
        let spans = collected.0.lock().unwrap().clone();
        (out, spans)
    }

    fn attribute(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn the_records_traceparent_is_the_parent_of_the_consume_span() {
        let with = record(
            vec![(headers::ID, "e-7"), (headers::TRACEPARENT, PARENT)],
            CUSTOMER,
        );
        let (handed_on, spans) = traced(|| {
            let span = consume_span(&with, Some("ledger"));
            let _entered = span.enter();
            // What a handler's outbox write would carry on: this span, in the same trace.
            telemetry::current_traceparent()
        });
        assert_eq!(spans.len(), 1);
        let consume = &spans[0];
        assert_eq!(consume.name, "consume");
        assert_eq!(
            consume.span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(consume.parent_span_id.to_string(), "b7ad6b7169203331");
        assert!(consume.parent_span_is_remote);
        assert_eq!(consume.span_kind, opentelemetry::trace::SpanKind::Consumer);
        for (name, value) in [
            ("messaging.system", "kafka"),
            ("messaging.operation.type", "process"),
            ("messaging.destination.name", "Customer.created"),
            ("messaging.destination.partition.id", "2"),
            ("messaging.kafka.offset", "17"),
            ("messaging.kafka.message.key", "c1"),
            ("messaging.consumer.group.name", "ledger"),
            ("event_id", "e-7"),
        ] {
            assert_eq!(attribute(consume, name).as_deref(), Some(value), "{name}");
        }
        assert_eq!(
            handed_on,
            Some(format!(
                "00-0af7651916cd43dd8448eb211c80319c-{}-01",
                consume.span_context.span_id()
            ))
        );
    }

    #[test]
    fn a_record_without_a_valid_traceparent_starts_a_trace() {
        let records = [
            record(vec![(headers::ID, "e-8")], CUSTOMER),
            record(vec![(headers::TRACEPARENT, "00-garbage-01")], CUSTOMER),
        ];
        let ((), spans) = traced(|| {
            for r in &records {
                drop(consume_span(r, None));
            }
        });
        assert_eq!(spans.len(), 2);
        for span in &spans {
            assert!(span.span_context.is_valid());
            assert_eq!(span.parent_span_id, opentelemetry::trace::SpanId::INVALID);
            assert_ne!(
                span.span_context.trace_id().to_string(),
                "0af7651916cd43dd8448eb211c80319c"
            );
        }
        assert_eq!(
            attribute(&spans[1], "event_id").as_deref(),
            Some("Customer.created-2-17")
        );
        assert_eq!(
            attribute(&spans[1], "messaging.consumer.group.name"),
            None,
            "no group, no attribute"
        );
    }
}
