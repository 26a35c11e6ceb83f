//! The consumer loop. A record's offset is stored only after its handler succeeded (the handler
//! commits its database transaction first), and stored offsets are committed in the background
//! and once more, synchronously, on shutdown. Records that can never be processed go to
//! `<topic>.DLT`; transient failures are retried with backoff without skipping the record.

use std::future::Future;
use std::time::Duration;

use contracts::envelope::{headers, Event, EventMetadata, EventType};
use contracts::topics;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{KafkaConfig, KafkaError, OutgoingRecord, Producer};
use crate::telemetry;

/// A consumed record, detached from the client.
#[derive(Debug, Clone)]
pub struct Record {
    /// Topic (without the configured prefix).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, when present and UTF-8.
    pub key: Option<String>,
    /// Value.
    pub payload: Vec<u8>,
    /// Headers with UTF-8 names.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The CloudEvents attributes; a record from a producer that sent none gets an id derived
    /// from its position, so a redelivery carries the same id.
    pub fn metadata(&self) -> EventMetadata {
        EventMetadata::from_headers(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .unwrap_or_else(|| {
                let event_type = EventType::for_topic(&self.topic)
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default();
                EventMetadata {
                    id: format!("{}-{}-{}", self.topic, self.partition, self.offset),
                    event_type,
                    source: String::new(),
                    time: chrono::Utc::now(),
                    traceparent: None,
                }
            })
    }

    /// Decodes the payload as `E`, checking the event type and schema version when a `ce_type`
    /// header is present. Failures are permanent: the record goes to the dead-letter topic.
    pub fn decode<E: Event>(&self) -> Result<(EventMetadata, E), HandleError> {
        let metadata = self.metadata();
        if !metadata.event_type.is_empty() && metadata.event_type != E::TYPE.as_str() {
            return Err(HandleError::Permanent(format!(
                "unsupported event type `{}` on {} (expected `{}`)",
                metadata.event_type,
                self.topic,
                E::TYPE.as_str()
            )));
        }
        let event = serde_json::from_slice(&self.payload).map_err(|e| {
            HandleError::Permanent(format!("payload is not a valid {}: {e}", E::TYPE.as_str()))
        })?;
        Ok((metadata, event))
    }

    /// The W3C `traceparent` header, when present and UTF-8 (with or without CloudEvents
    /// headers; not validated).
    pub fn traceparent(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(name, _)| name == headers::TRACEPARENT)
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
            .map(str::trim)
    }

    pub(crate) fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(str::to_string),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        }
    }

    fn dead_letter(&self, error: &str) -> OutgoingRecord {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.clone()).ok()?)))
            .collect();
        headers.extend([
            (headers::DLT_ERROR.to_string(), error.to_string()),
            (headers::DLT_ORIGINAL_TOPIC.to_string(), self.topic.clone()),
            (
                headers::DLT_ORIGINAL_PARTITION.to_string(),
                self.partition.to_string(),
            ),
            (
                headers::DLT_ORIGINAL_OFFSET.to_string(),
                self.offset.to_string(),
            ),
        ]);
        OutgoingRecord {
            topic: topics::dead_letter(&self.topic),
            key: self.key.clone().unwrap_or_default(),
            payload: String::from_utf8_lossy(&self.payload).into_owned(),
            headers,
        }
    }
}

/// How handling a record failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The record can never be processed: it goes to the dead-letter topic.
    #[error("permanent: {0}")]
    Permanent(String),
    /// Try again later (database busy, SMTP down, a customer not seen yet).
    #[error("transient: {0}")]
    Transient(String),
}

/// Applies one record. Implementations commit their own database transaction (effect + inbox)
/// before returning `Ok`.
pub trait Handler: Send + Sync + 'static {
    /// Handles `record`.
    fn handle(&self, record: &Record) -> impl Future<Output = Result<(), HandleError>> + Send;
}

/// Settings of one consumer loop.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Consumer group id.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// First delay between retries of a transient failure.
    pub initial_backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
}

impl ConsumerOptions {
    /// Options with default backoff (100 ms doubling to 5 s).
    pub fn new(group_id: impl Into<String>, topics: &[&str]) -> Self {
        Self {
            group_id: group_id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Consumes `options.topics` until `shutdown` is cancelled, handing each record to `handler`.
/// Returns after the in-flight record is finished and offsets are committed.
pub async fn run_consumer<H: Handler>(
    config: &KafkaConfig,
    options: ConsumerOptions,
    handler: H,
    dead_letters: Producer,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let consumer: StreamConsumer = config
        .client_config(&options.group_id)
        // Groups carry the topic prefix too: environments (and tests) sharing a cluster never
        // share a group.
        .set("group.id", config.topic_name(&options.group_id))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "2000")
        .set("max.poll.interval.ms", "300000")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()
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
    tracing::info!(group = %options.group_id, topics = ?options.topics, "consumer started");

    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, group = %options.group_id, "consumer error");
                continue;
            }
        };
        let mut record = Record::from_message(&message);
        record.topic = config.strip_prefix(&record.topic).to_string();
        let span = consume_span(&record);
        let handled = telemetry::consumed(
            record.traceparent(),
            process(&record, &handler, &options, &dead_letters, &shutdown),
        )
        .instrument(span)
        .await;
        if handled {
            if let Err(error) = consumer.store_offset_from_message(&message) {
                tracing::debug!(%error, "offset not stored (partition revoked?)");
            }
        } else {
            // Shutdown in the middle of retries: the record stays uncommitted and is redelivered.
            break;
        }
    }

    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(%error, "final offset commit");
    }
    tracing::info!(group = %options.group_id, "consumer stopped");
    Ok(())
}

/// The span around handling one record (retries included): a child of the span that produced it
/// when the record carries a valid `traceparent`, else the root of a new trace.
pub(crate) fn consume_span(record: &Record) -> tracing::Span {
    let span = tracing::info_span!(
        "consume",
        otel.kind = "consumer",
        topic = %record.topic,
        partition = record.partition,
        offset = record.offset,
        event_id = %record.metadata().id,
    );
    if let Some(traceparent) = record.traceparent() {
        telemetry::set_parent(&span, traceparent);
    }
    span
}

/// Handles one record until it succeeds or is dead-lettered (`true`), or shutdown (`false`).
async fn process<H: Handler>(
    record: &Record,
    handler: &H,
    options: &ConsumerOptions,
    dead_letters: &Producer,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = options.initial_backoff;
    loop {
        let started = std::time::Instant::now();
        let outcome = handler.handle(record).await;
        let label = match &outcome {
            Ok(()) => "ok",
            Err(HandleError::Permanent(_)) => "dead_letter",
            Err(HandleError::Transient(_)) => "retry",
        };
        metrics::counter!("events_consumed_total", "topic" => record.topic.clone(), "outcome" => label)
            .increment(1);
        metrics::histogram!("event_handling_seconds", "topic" => record.topic.clone())
            .record(started.elapsed().as_secs_f64());
        let error = match outcome {
            Ok(()) => return true,
            Err(HandleError::Permanent(error)) => {
                tracing::error!(topic = %record.topic, partition = record.partition,
                    offset = record.offset, %error, "record sent to dead-letter topic");
                match dead_letters.send(&record.dead_letter(&error)).await {
                    Ok(()) => return true,
                    Err(e) => format!("dead-letter publish failed: {e}"),
                }
            }
            Err(HandleError::Transient(error)) => error,
        };
        tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset,
            event_id = %record.metadata().id, %error, retry_in_ms = backoff.as_millis() as u64,
            "retrying record");
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(options.max_backoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            let span = consume_span(&with);
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
        assert_eq!(
            attribute(consume, "topic").as_deref(),
            Some("Customer.created")
        );
        assert_eq!(attribute(consume, "partition").as_deref(), Some("2"));
        assert_eq!(attribute(consume, "offset").as_deref(), Some("17"));
        assert_eq!(attribute(consume, "event_id").as_deref(), Some("e-7"));
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
                drop(consume_span(r));
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
    }

    #[test]
    fn dead_letters_keep_the_record_and_say_why() {
        let dlt = record(vec![(headers::ID, "e")], "{oops").dead_letter("bad json");
        assert_eq!(dlt.topic, "Customer.created.DLT");
        assert_eq!(dlt.key, "c1");
        assert_eq!(dlt.payload, "{oops");
        let get = |k: &str| {
            dlt.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get(headers::DLT_ERROR), Some("bad json"));
        assert_eq!(get(headers::DLT_ORIGINAL_OFFSET), Some("17"));
        assert_eq!(get(headers::ID), Some("e"));
    }
}
