//! The idempotent producer (acks=all) with production defaults.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use super::client::{KafkaError, TracingContext};
use super::config::KafkaConfig;

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

/// The producer's timeouts, chosen for IBM Event Streams' maintenance, during which a broker's
/// connections drop and come back within 60 s (and for a leader that dies or hangs):
///
/// - `message.timeout.ms` (librdkafka's name for `delivery.timeout.ms`, which is an alias of
///   it) 10 s: how long one record may wait for its acknowledgement, retries included. It is
///   well under the 60 s window on purpose: every producer in the services publishes for the
///   outbox relay or the dead-letter path, both of which keep the record (the outbox row stays
///   unsent, the consumer does not commit) and try again. A relay round awaits its whole batch,
///   so a partition whose leader is away holds the records of the other partitions for at most
///   this long per round, not for the whole window; its own records are retried round after
///   round until the broker is back.
/// - `request.timeout.ms` 5 s: one produce request's acknowledgement (acks=all is milliseconds
///   when the brokers are healthy); leaves room for a retry on the new leader within the
///   message timeout.
/// - `socket.timeout.ms` 10 s (librdkafka's default is 60 s) and
///   `socket.connection.setup.timeout.ms` 10 s (default 30 s): a connection that went silent
///   (a broker restarted under maintenance sends no reset) is given up after 10 s instead of
///   the whole window.
/// - `reconnect.backoff.ms` 100 ms doubling to `reconnect.backoff.max.ms` 5 s: a broker that
///   comes back is reconnected to within about 5 s, retried at most a dozen times a minute while
///   it is away.
/// - `retry.backoff.ms` 100 ms to `retry.backoff.max.ms` 2 s between retries of a request.
pub const TIMEOUTS: [(&str, &str); 8] = [
    ("message.timeout.ms", "10000"),
    ("request.timeout.ms", "5000"),
    ("socket.timeout.ms", "10000"),
    ("socket.connection.setup.timeout.ms", "10000"),
    ("reconnect.backoff.ms", "100"),
    ("reconnect.backoff.max.ms", "5000"),
    ("retry.backoff.ms", "100"),
    ("retry.backoff.max.ms", "2000"),
];

/// The librdkafka configuration of the producer: the connection's ([`KafkaConfig::client_config`]),
/// idempotence with acks=all, and [`TIMEOUTS`].
pub fn producer_config(config: &KafkaConfig, client_id: &str) -> rdkafka::ClientConfig {
    let mut client = config.client_config(client_id);
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "1")
        .set("compression.type", "lz4");
    for (key, value) in TIMEOUTS {
        client.set(key, value);
    }
    client
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
    /// Creates the producer: idempotent, acks=all, the timeouts of [`TIMEOUTS`].
    pub fn new(config: &KafkaConfig, client_id: &str) -> Result<Self, KafkaError> {
        let inner = producer_config(config, client_id)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(config: &rdkafka::ClientConfig, key: &str) -> u64 {
        config
            .get(key)
            .unwrap_or_else(|| panic!("{key} is not set"))
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a number"))
    }

    #[test]
    fn the_timeouts_are_chosen_for_event_streams_maintenance() {
        let config = producer_config(&KafkaConfig::plaintext("127.0.0.1:9092"), "t");
        for (key, value) in [
            ("message.timeout.ms", 10_000),
            ("request.timeout.ms", 5_000),
            ("socket.timeout.ms", 10_000),
            ("socket.connection.setup.timeout.ms", 10_000),
            ("reconnect.backoff.ms", 100),
            ("reconnect.backoff.max.ms", 5_000),
            ("retry.backoff.ms", 100),
            ("retry.backoff.max.ms", 2_000),
        ] {
            assert_eq!(millis(&config, key), value, "{key}");
        }
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        // A delivery attempt gives up well inside the 60 s maintenance window (the outbox retries),
        // a produce request can be retried within it, and a returning broker is found within 5 s.
        let window = 60_000;
        assert!(millis(&config, "message.timeout.ms") * 4 <= window);
        assert!(millis(&config, "request.timeout.ms") * 2 <= millis(&config, "message.timeout.ms"));
        assert!(millis(&config, "socket.timeout.ms") < window);
        assert!(millis(&config, "reconnect.backoff.max.ms") <= 5_000);
        // librdkafka accepts the combination (it checks the configuration when the client is made).
        Producer::new(&KafkaConfig::plaintext("127.0.0.1:9"), "t").expect("a valid configuration");
    }
}
