//! The idempotent producer (acks=all) with production defaults.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use super::{KafkaConfig, KafkaError, TracingContext};

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    /// Destination topic (without the configured prefix).
    pub topic: String,
    /// Record key (the aggregate id).
    pub key: String,
    /// JSON payload.
    pub payload: String,
    /// Headers (CloudEvents attributes, trace context, dead-letter details).
    pub headers: Vec<(String, String)>,
}

/// Where the broker wrote a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
}

/// A cheaply cloneable idempotent producer.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer<TracingContext>,
    topic_prefix: String,
    config: KafkaConfig,
    client_id: String,
}

impl Producer {
    /// Creates the producer: idempotent, acks=all, bounded delivery timeout.
    pub fn new(config: &KafkaConfig, client_id: &str) -> Result<Self, KafkaError> {
        let inner = config
            .client_config(client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("message.timeout.ms", "30000")
            .set("request.timeout.ms", "10000")
            .set("retry.backoff.ms", "100")
            .set("retry.backoff.max.ms", "2000")
            .set("linger.ms", "1")
            .set("compression.type", "lz4")
            .create_with_context(TracingContext)
            .map_err(|source| KafkaError::Client {
                client: "producer",
                source,
            })?;
        Ok(Self {
            inner,
            topic_prefix: config.topic_prefix.clone(),
            config: config.clone(),
            client_id: client_id.to_string(),
        })
    }

    /// A new producer with the same configuration: what replaces one that hit a fatal error.
    pub fn recreate(&self) -> Result<Self, KafkaError> {
        Self::new(&self.config, &self.client_id)
    }

    /// The fatal error the producer hit, if any (e.g. the idempotent producer was fenced or lost
    /// its sequence): it cannot deliver anything more and must be replaced ([`Self::recreate`]).
    pub fn fatal_error(&self) -> Option<String> {
        self.inner
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code:?}: {reason}"))
    }

    /// Puts the producer in the fatal state librdkafka enters when the broker reports an
    /// out-of-order sequence: what tests use to see a fatal error handled.
    #[cfg(feature = "testing")]
    pub fn inject_fatal_error(&self) {
        use rdkafka::bindings::{rd_kafka_resp_err_t, rd_kafka_test_fatal_error};
        let reason = c"injected by a test";
        // SAFETY: the client pointer is valid while `self.inner` lives; the reason is a
        // NUL-terminated string librdkafka copies.
        unsafe {
            rd_kafka_test_fatal_error(
                self.inner.client().native_ptr(),
                rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
    }

    /// Publishes one record and waits for the broker's acknowledgement.
    pub async fn send(&self, record: &OutgoingRecord) -> Result<Delivered, KafkaError> {
        self.produce(record)?.await
    }

    /// Hands a record to the producer's queue and returns a future of its acknowledgement;
    /// records produced in order are written in order per partition.
    pub fn produce(
        &self,
        record: &OutgoingRecord,
    ) -> Result<impl std::future::Future<Output = Result<Delivered, KafkaError>>, KafkaError> {
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_bytes()))
            .collect();
        self.produce_bytes(
            &record.topic,
            record.key.as_bytes(),
            record.payload.as_bytes(),
            &headers,
        )
    }

    /// Like [`produce`](Self::produce) for a record given as bytes, copied as they are (dead
    /// letters keep the original payload and headers byte for byte).
    pub fn produce_bytes(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<impl std::future::Future<Output = Result<Delivered, KafkaError>>, KafkaError> {
        self.produce_record(topic, Some(key), payload, headers)
    }

    /// Like [`produce_bytes`](Self::produce_bytes), for a record that may have no key.
    pub fn produce_record(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<impl std::future::Future<Output = Result<Delivered, KafkaError>>, KafkaError> {
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(*value),
                })
            });
        let topic = format!("{}{topic}", self.topic_prefix);
        let mut future = FutureRecord::<[u8], [u8]>::to(&topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = key {
            future = future.key(key);
        }
        let delivery =
            self.inner
                .send_result(future)
                .map_err(|(source, _)| KafkaError::Operation {
                    operation: format!("enqueue to {topic}"),
                    source,
                })?;
        Ok(async move {
            match delivery.await {
                Ok(Ok(delivery)) => Ok(Delivered {
                    partition: delivery.partition,
                    offset: delivery.offset,
                }),
                Ok(Err((source, _))) => Err(KafkaError::Operation {
                    operation: format!("delivery to {topic}"),
                    source,
                }),
                Err(_) => Err(KafkaError::Timeout(format!("delivery to {topic}"))),
            }
        })
    }

    /// Waits for every queued record to be delivered (on shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner
            .flush(Timeout::After(timeout))
            .map_err(|source| KafkaError::Operation {
                operation: "flush".to_string(),
                source,
            })
    }
}
