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
mod handler;
mod lane;
mod lane_env;
mod lanes;
mod options;
pub(in crate::kafka) mod record;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{CommitMode, Consumer};
use tokio_util::sync::CancellationToken;

pub use error::{chain, BoxError, HandleError};
pub use handler::{Handler, Rejected};
pub use options::ConsumerOptions;
pub use record::Record;

use crate::foundation::health::ConsumerHealth;
use crate::foundation::telemetry;
use crate::kafka::client::KafkaError;
use crate::kafka::config::{GroupProtocol, KafkaConfig};
use crate::kafka::producer::Producer;
use context::LaneContext;
use dispatch::Dispatcher;
use lane_env::{KafkaConsumer, LaneEnv};
use lanes::LaneStates;

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
        let metrics = crate::foundation::metrics_scope::current();
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
    let mut client = config.client_config(&options.group_id);
    client
        // Groups carry the topic prefix too: environments (and tests) sharing a cluster never
        // share a group.
        .set("group.id", config.topic_name(&options.group_id))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "statistics.interval.ms",
            options.statistics_interval.as_millis().max(1).to_string(),
        )
        .set("max.poll.interval.ms", "300000")
        // Small fetch waits keep latency low when traffic is light; a bounded prefetch keeps
        // memory low when a paused partition's records wait.
        .set("fetch.wait.max.ms", "100")
        .set("queued.max.messages.kbytes", "8192");
    match config.group_protocol {
        GroupProtocol::Classic => client
            .set(
                "session.timeout.ms",
                crate::foundation::health::SESSION_TIMEOUT
                    .as_millis()
                    .to_string(),
            )
            .set("heartbeat.interval.ms", "2000")
            .set("partition.assignment.strategy", "cooperative-sticky"),
        // The broker owns the session, the heartbeat and the assignor (incremental, like
        // cooperative-sticky); librdkafka refuses those settings with this protocol.
        GroupProtocol::Consumer => client.set("group.protocol", GroupProtocol::Consumer.as_str()),
    };
    let consumer: KafkaConsumer = client
        .create_with_context(LaneContext {
            lanes: Arc::clone(lanes),
            revoked: Mutex::default(),
            group: options.group_id.clone(),
            prefix: config.topic_prefix.clone(),
            health: health.clone(),
            assignment: Mutex::default(),
            metrics: crate::foundation::metrics_scope::current(),
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
