//! Operating dead letters (`cargo xtask dlt`): reading what `<topic>.DLT` holds, and replaying
//! a dead letter to its original topic once its cause is fixed.
//!
//! A replay publishes the original record again — same key, payload and headers, byte for byte,
//! without the `dlt_*` headers and with `dlt_replayed_from`, `dlt_replayed_at` and
//! `dlt_replayed_by` added — through the idempotent producer. Every consumer group of the
//! original topic reads it; the groups that applied the event before find its id in their inbox
//! and skip it, so replaying (even twice) applies each event at most once per consumer. A
//! truncated dead letter (`dlt_truncated=true`) is refused: it no longer holds the record.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use contracts::envelope::headers;
use contracts::topics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::client::{KafkaError, TracingContext};
use super::config::KafkaConfig;
use super::producer::{Delivered, Producer};

/// Header naming the dead letter a record was replayed from: `<topic>.DLT/<partition>/<offset>`.
pub const REPLAYED_FROM: &str = "dlt_replayed_from";
/// Header with when a record was replayed (RFC 3339).
pub const REPLAYED_AT: &str = "dlt_replayed_at";
/// Header with who replayed a record.
pub const REPLAYED_BY: &str = "dlt_replayed_by";

/// How long reading waits for the broker.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of reading or replaying dead letters.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The broker failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The topic is not a dead-letter topic.
    #[error("{0} is not a dead-letter topic (its name must end in {suffix})", suffix = topics::DEAD_LETTER_SUFFIX)]
    NotADeadLetterTopic(String),
    /// The topic does not exist on the broker.
    #[error("topic {0} does not exist")]
    NoSuchTopic(String),
    /// The topic has no such partition.
    #[error("topic {topic} has no partition {partition}")]
    NoSuchPartition {
        /// The dead-letter topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// No record at that position (never written, or removed by retention).
    #[error("no dead letter at {topic} partition {partition} offset {offset} ({held})")]
    NotFound {
        /// The dead-letter topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset asked for.
        offset: i64,
        /// What the partition holds: `it is empty`, `it holds offsets 3 to 9`.
        held: String,
    },
    /// The dead letter holds only the start of the record: it cannot be replayed byte for byte.
    #[error("{position} is truncated (the original had {size} bytes, SHA-256 {sha256}): it cannot be replayed byte for byte; publish the original again from its source (it was at {original})")]
    Truncated {
        /// `<topic>.DLT/<partition>/<offset>`.
        position: String,
        /// The original payload's size.
        size: String,
        /// The original payload's SHA-256.
        sha256: String,
        /// Where the original was: `<topic>/<partition>/<offset>`.
        original: String,
    },
}

/// A record read from a dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeadLetter {
    /// The dead-letter topic (without the configured prefix).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// When it was dead-lettered (the record's timestamp).
    pub time: Option<DateTime<Utc>>,
    /// The original key (`None` when it had none).
    pub key: Option<Vec<u8>>,
    /// The original payload (cut when [`Self::is_truncated`]).
    pub payload: Vec<u8>,
    /// The original headers, then the `dlt_*` ones.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl StoredDeadLetter {
    /// `<topic>.DLT/<partition>/<offset>`: how the commands name a dead letter.
    pub fn position(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }

    /// The value of header `name`, as text (lossy).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    }

    /// The topic it came from: the `dlt_original_topic` header, else the topic's name without
    /// `.DLT`.
    pub fn original_topic(&self) -> String {
        self.header(headers::DLT_ORIGINAL_TOPIC).unwrap_or_else(|| {
            self.topic
                .strip_suffix(topics::DEAD_LETTER_SUFFIX)
                .unwrap_or(&self.topic)
                .to_string()
        })
    }

    /// Where the original record was: `<topic>/<partition>/<offset>`.
    pub fn original_position(&self) -> String {
        let field = |name| self.header(name).unwrap_or_else(|| "?".to_string());
        format!(
            "{}/{}/{}",
            self.original_topic(),
            field(headers::DLT_ORIGINAL_PARTITION),
            field(headers::DLT_ORIGINAL_OFFSET)
        )
    }

    /// Whether only the start of the payload was kept (`dlt_truncated=true`).
    pub fn is_truncated(&self) -> bool {
        self.header(headers::DLT_TRUNCATED).as_deref() == Some("true")
    }

    /// The original headers, without the dead-letter ones (`dlt_*`).
    pub fn original_headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers
            .iter()
            .filter(|(key, _)| !key.starts_with("dlt_"))
            .map(|(key, value)| (key.as_str(), value.as_slice()))
    }
}

/// A dead letter published again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The dead letter (`<topic>.DLT/<partition>/<offset>`).
    pub from: String,
    /// The topic it went to.
    pub topic: String,
    /// Where the broker wrote it.
    pub delivered: Delivered,
    /// When.
    pub at: DateTime<Utc>,
    /// By whom.
    pub by: String,
}

/// The dead-letter topics of the system's topics: `<topic>.DLT` for each.
pub fn dead_letter_topics() -> Vec<String> {
    topics::ALL.iter().map(|t| topics::dead_letter(t)).collect()
}

/// `topic` as a dead-letter topic name: `t` and `t.DLT` both name `t.DLT`.
pub fn dead_letter_topic(topic: &str) -> String {
    if topic.ends_with(topics::DEAD_LETTER_SUFFIX) {
        topic.to_string()
    } else {
        topics::dead_letter(topic)
    }
}

/// Every dead letter in `topic` (a `.DLT` topic, unprefixed), partition by partition, in offset
/// order.
pub async fn read_all(
    config: &KafkaConfig,
    topic: &str,
) -> Result<Vec<StoredDeadLetter>, DeadLetterError> {
    let reader = Reader::new(config, topic)?;
    blocking(move || reader.read_all()).await
}

/// The dead letter at `offset` of `partition` of `topic` (a `.DLT` topic, unprefixed).
pub async fn read_one(
    config: &KafkaConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<StoredDeadLetter, DeadLetterError> {
    let reader = Reader::new(config, topic)?;
    blocking(move || reader.read_one(partition, offset)).await
}

/// Publishes `letter`'s record to its original topic again (see the module's documentation),
/// recording `by` and the time in headers; refuses a truncated one.
pub async fn replay(
    producer: &Producer,
    letter: &StoredDeadLetter,
    by: &str,
) -> Result<Replayed, DeadLetterError> {
    if letter.is_truncated() {
        return Err(DeadLetterError::Truncated {
            position: letter.position(),
            size: letter
                .header(headers::DLT_ORIGINAL_SIZE)
                .unwrap_or_else(|| "?".to_string()),
            sha256: letter
                .header(headers::DLT_PAYLOAD_SHA256)
                .unwrap_or_else(|| "?".to_string()),
            original: letter.original_position(),
        });
    }
    let topic = letter.original_topic();
    let from = letter.position();
    let at = Utc::now();
    let at_text = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut record_headers: Vec<(&str, &[u8])> = letter.original_headers().collect();
    record_headers.extend([
        (REPLAYED_FROM, from.as_bytes()),
        (REPLAYED_AT, at_text.as_bytes()),
        (REPLAYED_BY, by.as_bytes()),
    ]);
    let delivered = producer
        .produce_record(
            &topic,
            letter.key.as_deref(),
            &letter.payload,
            &record_headers,
        )?
        .await?;
    tracing::info!(%from, %topic, partition = delivered.partition, offset = delivered.offset,
        by, "dead letter replayed");
    Ok(Replayed {
        from,
        topic,
        delivered,
        at,
        by: by.to_string(),
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DeadLetterError> + Send + 'static,
) -> Result<T, DeadLetterError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| KafkaError::Timeout(format!("dead-letter reader: {e}")))?
}

/// Reads a dead-letter topic without a consumer group (nothing is committed).
struct Reader {
    consumer: BaseConsumer<TracingContext>,
    /// The topic as the broker names it.
    name: String,
    /// As the commands name it.
    topic: String,
}

impl Reader {
    fn new(config: &KafkaConfig, topic: &str) -> Result<Self, DeadLetterError> {
        if !topic.ends_with(topics::DEAD_LETTER_SUFFIX) {
            return Err(DeadLetterError::NotADeadLetterTopic(topic.to_string()));
        }
        let consumer = config
            .client_config("dead-letter-reader")
            // Partitions are assigned, never subscribed: the group is not joined and nothing
            // is committed, but librdkafka wants one.
            .set(
                "group.id",
                format!("dead-letter-reader-{}", uuid::Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .create_with_context(TracingContext)
            .map_err(|source| KafkaError::Client {
                client: "dead-letter reader",
                source,
            })?;
        Ok(Self {
            consumer,
            name: config.topic_name(topic),
            topic: topic.to_string(),
        })
    }

    fn partitions(&self) -> Result<Vec<i32>, DeadLetterError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.name), TIMEOUT)
            .map_err(|source| KafkaError::Operation {
                operation: format!("metadata of {}", self.name),
                source,
            })?;
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.name && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .ok_or_else(|| DeadLetterError::NoSuchTopic(self.topic.clone()))
    }

    fn watermarks(&self, partition: i32) -> Result<(i64, i64), DeadLetterError> {
        self.consumer
            .fetch_watermarks(&self.name, partition, TIMEOUT)
            .map_err(|source| {
                KafkaError::Operation {
                    operation: format!("offsets of {}/{partition}", self.name),
                    source,
                }
                .into()
            })
    }

    fn read_all(&self) -> Result<Vec<StoredDeadLetter>, DeadLetterError> {
        let mut letters = Vec::new();
        for partition in self.partitions()? {
            let (low, high) = self.watermarks(partition)?;
            if high > low {
                letters.extend(self.read_range(partition, low, high)?);
            }
        }
        Ok(letters)
    }

    fn read_one(&self, partition: i32, offset: i64) -> Result<StoredDeadLetter, DeadLetterError> {
        if !self.partitions()?.contains(&partition) {
            return Err(DeadLetterError::NoSuchPartition {
                topic: self.topic.clone(),
                partition,
            });
        }
        let (low, high) = self.watermarks(partition)?;
        if offset < low || offset >= high {
            return Err(self.not_found(partition, offset, low, high));
        }
        self.read_range(partition, offset, offset + 1)?
            .into_iter()
            .find(|letter| letter.offset == offset)
            .ok_or_else(|| self.not_found(partition, offset, low, high))
    }

    fn not_found(&self, partition: i32, offset: i64, low: i64, high: i64) -> DeadLetterError {
        DeadLetterError::NotFound {
            topic: self.topic.clone(),
            partition,
            offset,
            held: if high > low {
                format!("it holds offsets {low} to {}", high - 1)
            } else {
                "it is empty".to_string()
            },
        }
    }

    /// The records of `partition` from `from` up to (not including) `to`.
    fn read_range(
        &self,
        partition: i32,
        from: i64,
        to: i64,
    ) -> Result<Vec<StoredDeadLetter>, DeadLetterError> {
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.name, partition, Offset::Offset(from))
            .and_then(|()| self.consumer.assign(&assignment))
            .map_err(|source| KafkaError::Operation {
                operation: format!("read {}/{partition}", self.name),
                source,
            })?;
        let deadline = Instant::now() + TIMEOUT;
        let mut letters = Vec::new();
        let mut next = from;
        while next < to {
            if Instant::now() >= deadline {
                return Err(
                    KafkaError::Timeout(format!("reading {}/{partition}", self.name)).into(),
                );
            }
            let Some(message) = self.consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let message = match message {
                Ok(message) => message,
                // The end (what is left are transaction markers, or retention removed it).
                Err(rdkafka::error::KafkaError::PartitionEOF(_)) => break,
                Err(source) => {
                    return Err(KafkaError::Operation {
                        operation: format!("read {}/{partition}", self.name),
                        source,
                    }
                    .into())
                }
            };
            // Offsets may skip (transaction markers): the next one to wait for follows this one.
            next = message.offset() + 1;
            if message.offset() < to {
                letters.push(self.letter(&message));
            }
        }
        Ok(letters)
    }

    fn letter(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> StoredDeadLetter {
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        StoredDeadLetter {
            topic: self.topic.clone(),
            partition: message.partition(),
            offset: message.offset(),
            time: message
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis),
            // A record without a key is dead-lettered with an empty one.
            key: message.key().filter(|k| !k.is_empty()).map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(headers: &[(&str, &str)]) -> StoredDeadLetter {
        StoredDeadLetter {
            topic: "transaction.requested.DLT".to_string(),
            partition: 1,
            offset: 9,
            time: None,
            key: Some(b"acc-1".to_vec()),
            payload: b"{}".to_vec(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn the_original_headers_are_those_without_the_dead_letter_ones() {
        let letter = letter(&[
            ("ce_id", "e1"),
            ("traceparent", "00-a-b-01"),
            (headers::DLT_ERROR, "boom"),
            (headers::DLT_ORIGINAL_TOPIC, "transaction.requested"),
            (headers::DLT_ORIGINAL_PARTITION, "2"),
            (headers::DLT_ORIGINAL_OFFSET, "40"),
        ]);
        let kept: Vec<&str> = letter.original_headers().map(|(k, _)| k).collect();
        assert_eq!(kept, ["ce_id", "traceparent"]);
        assert_eq!(letter.original_position(), "transaction.requested/2/40");
        assert_eq!(letter.position(), "transaction.requested.DLT/1/9");
        assert!(!letter.is_truncated());
    }

    #[test]
    fn the_original_topic_falls_back_to_the_name_without_dlt() {
        assert_eq!(letter(&[]).original_topic(), "transaction.requested");
        assert_eq!(dead_letter_topic("a.b"), "a.b.DLT");
        assert_eq!(dead_letter_topic("a.b.DLT"), "a.b.DLT");
        assert_eq!(dead_letter_topics().len(), topics::ALL.len());
    }

    #[tokio::test]
    async fn a_truncated_dead_letter_is_refused() {
        let truncated = letter(&[
            (headers::DLT_TRUNCATED, "true"),
            (headers::DLT_ORIGINAL_SIZE, "1000100"),
            (headers::DLT_PAYLOAD_SHA256, "abc"),
        ]);
        // Never reaches the broker: nothing listens on this address.
        let producer = Producer::new(&KafkaConfig::plaintext("127.0.0.1:1"), "t").unwrap();
        let error = replay(&producer, &truncated, "ann").await.unwrap_err();
        assert!(
            matches!(error, DeadLetterError::Truncated { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains("transaction.requested.DLT/1/9 is truncated"),
            "{message}"
        );
        assert!(message.contains("1000100"), "{message}");
    }
}
