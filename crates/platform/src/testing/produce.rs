//! Producing records as other producers would: events with CloudEvents headers, or raw bytes
//! with whatever headers (or none) a misbehaving producer sends.

use std::time::Duration;

use contracts::envelope::{Event, EventMetadata};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::kafka::KafkaConfig;

/// Largest record the test producer sends (2 MB, over the services' limits, to test them).
const MAX_RECORD_BYTES: &str = "2000000";

/// A producer on a (prefixed) Kafka connection for tests.
#[derive(Clone)]
pub struct TestProducer {
    kafka: KafkaConfig,
    producer: FutureProducer,
}

impl TestProducer {
    /// A producer on `kafka` that sends records up to 2 MB.
    pub fn new(kafka: &KafkaConfig) -> Self {
        let producer = kafka
            .client_config("test-producer")
            .set("message.max.bytes", MAX_RECORD_BYTES)
            .create()
            .expect("create test producer");
        Self {
            kafka: kafka.clone(),
            producer,
        }
    }

    /// Sends `payload` with `key` and `headers` to `topic` (unprefixed name), on `partition`
    /// when given; panics when the broker does not take it.
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: &[(&str, &str)],
        partition: Option<i32>,
    ) {
        let name = self.kafka.topic_name(topic);
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |all, &(key, value)| {
                all.insert(Header {
                    key,
                    value: Some(value),
                })
            });
        let mut record = FutureRecord::to(&name)
            .key(key)
            .payload(payload)
            .headers(headers);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(error, _)| error)
            .unwrap_or_else(|e| panic!("produce to {topic}: {e}"));
    }

    /// Sends `event` to its topic, keyed as its type says, with the CloudEvents headers of
    /// `metadata`; on `partition` when given.
    pub async fn send_event<E: Event>(
        &self,
        metadata: &EventMetadata,
        event: &E,
        partition: Option<i32>,
    ) {
        let headers = metadata.to_headers();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let payload = serde_json::to_vec(event).expect("an event serializes");
        self.send(E::TYPE.topic(), event.key(), &payload, &headers, partition)
            .await;
    }

    /// Sends `event` with a fresh id and source `source` (e.g. `/customer-service`); returns
    /// the metadata sent.
    pub async fn publish<E: Event>(&self, source: &str, event: &E) -> EventMetadata {
        let metadata = EventMetadata::new(uuid::Uuid::now_v7().to_string(), E::TYPE, source);
        self.send_event(&metadata, event, None).await;
        metadata
    }
}

/// Publishes a raw record to `topic` (unprefixed name) as any other producer could.
pub async fn produce_raw(
    config: &KafkaConfig,
    topic: &str,
    key: &str,
    payload: &str,
    headers: &[(&str, &str)],
) {
    TestProducer::new(config)
        .send(topic, key, payload.as_bytes(), headers, None)
        .await;
}
