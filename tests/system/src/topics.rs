//! What the services published: outcome events read from Kafka ([`read_outcomes`],
//! [`OutcomeClock`]) and consumer groups' progress ([`committed_total`], [`lag`]).

use std::collections::BTreeMap;
use std::time::Duration;

use platform::kafka::KafkaConfig;

/// One outcome event of a transaction, as read from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `transaction.processed` or `transaction.failed`.
    pub topic: String,
    /// The event id (`ce_id`).
    pub event_id: String,
    /// The payload.
    pub payload: serde_json::Value,
    /// When it was processed: its `ce_time` (written with the outcome, in the same database
    /// transaction).
    pub time: Option<std::time::SystemTime>,
}

/// Reads `transaction.processed` and `transaction.failed` until `expected` distinct transactions
/// have an outcome (or `timeout`), then keeps reading until the topics are quiet for `quiet`, so
/// that late extra outcomes are seen too. Returns the outcomes per transaction id.
pub async fn read_outcomes(
    kafka: &KafkaConfig,
    expected: usize,
    timeout: Duration,
    quiet: Duration,
) -> BTreeMap<String, Vec<Outcome>> {
    use contracts::topics::{TRANSACTION_FAILED, TRANSACTION_PROCESSED};
    use rdkafka::consumer::Consumer;
    use rdkafka::Message;
    let consumer = reader(
        kafka,
        "outcome-reader",
        "outcomes",
        ("auto.offset.reset", "earliest"),
    );
    let topics = [
        kafka.topic_name(TRANSACTION_PROCESSED),
        kafka.topic_name(TRANSACTION_FAILED),
    ];
    consumer
        .subscribe(&[&topics[0], &topics[1]])
        .expect("subscribe");
    let mut outcomes: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let wait = if outcomes.len() >= expected {
            tokio::time::Instant::now() + quiet
        } else {
            deadline
        };
        let message = match tokio::time::timeout_at(wait.min(deadline), consumer.recv()).await {
            Ok(Ok(message)) => message,
            Ok(Err(error)) => panic!("reading outcomes: {error}"),
            Err(_) => break,
        };
        let payload: serde_json::Value =
            serde_json::from_slice(message.payload().unwrap_or_default()).expect("JSON outcome");
        let event_id = header(&message, "ce_id").expect("ce_id header");
        let id = payload["transactionId"]
            .as_str()
            .expect("transactionId")
            .to_string();
        let time = header(&message, contracts::envelope::headers::TIME)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(std::time::SystemTime::from);
        outcomes.entry(id).or_default().push(Outcome {
            topic: kafka.strip_prefix(message.topic()).to_string(),
            event_id,
            payload,
            time,
        });
    }
    outcomes
}

/// The value of header `name` of `message`, as text.
fn header(message: &impl rdkafka::Message, name: &str) -> Option<String> {
    rdkafka::message::Headers::iter(message.headers()?)
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A consumer of `kafka` with client id `client_id` in a group of its own (`group` made unique)
/// that commits nothing, with `(key, value)` added to its configuration.
fn reader(
    kafka: &KafkaConfig,
    client_id: &str,
    group: &str,
    (key, value): (&str, &str),
) -> rdkafka::consumer::StreamConsumer {
    kafka
        .client_config(client_id)
        .set("group.id", platform::testing::unique(group))
        .set("enable.auto.commit", "false")
        .set(key, value)
        .create()
        .expect("consumer")
}

/// When an outcome event was read from Kafka, and what it said.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// `transaction.processed` or `transaction.failed` (unprefixed).
    pub topic: String,
    /// When the reader received it.
    pub at: std::time::Instant,
    /// The payload.
    pub payload: serde_json::Value,
    /// Wall-clock instants along the way, for the bench's split of the latency.
    pub stages: Stages,
}

/// Wall-clock instants of one transfer's path (each `None` when unknown): the relay handing
/// `transaction.requested` to the producer (its record's create time), the consumer drafting the
/// outcome (its `ce_time`), the relay handing the outcome to the producer, and the reader
/// receiving it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stages {
    /// `transaction.requested`'s record timestamp.
    pub requested_produced: Option<std::time::SystemTime>,
    /// The outcome's `ce_time`.
    pub outcome_drafted: Option<std::time::SystemTime>,
    /// The outcome's record timestamp.
    pub outcome_produced: Option<std::time::SystemTime>,
    /// When the reader received the outcome.
    pub outcome_read: Option<std::time::SystemTime>,
}

/// A background reader of `transaction.processed` and `transaction.failed` that notes the
/// instant each outcome is read, to measure request → outcome latency. It is assigned every
/// partition of both topics (and of `transaction.requested`, for the record's create time) from
/// the beginning (no consumer group, so no rebalance delays the first records); the first outcome
/// of each transaction counts. Stops when dropped.
pub struct OutcomeClock {
    arrivals: tokio::sync::mpsc::UnboundedReceiver<(String, Arrival)>,
    seen: std::collections::HashMap<String, Arrival>,
    requested: std::collections::HashMap<String, std::time::SystemTime>,
    reader: tokio::task::JoinHandle<()>,
}

/// A record's create time, when it has one.
fn record_time(message: &impl rdkafka::Message) -> Option<std::time::SystemTime> {
    let millis = message.timestamp().to_millis()?;
    Some(std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).ok()?))
}

impl OutcomeClock {
    /// Starts reading the outcome topics of `kafka` (all `kafka.topic_partitions` partitions).
    pub fn start(kafka: &KafkaConfig) -> Self {
        use contracts::topics::{TRANSACTION_FAILED, TRANSACTION_PROCESSED, TRANSACTION_REQUESTED};
        use rdkafka::consumer::Consumer;
        use rdkafka::{Message, Offset, TopicPartitionList};
        let consumer = reader(
            kafka,
            "outcome-clock",
            "outcome-clock",
            ("fetch.wait.max.ms", "100"),
        );
        let mut partitions = TopicPartitionList::new();
        for topic in [
            TRANSACTION_PROCESSED,
            TRANSACTION_FAILED,
            TRANSACTION_REQUESTED,
        ] {
            for partition in 0..kafka.topic_partitions {
                partitions
                    .add_partition_offset(&kafka.topic_name(topic), partition, Offset::Beginning)
                    .expect("partition offset");
            }
        }
        consumer.assign(&partitions).expect("assign");
        let (sender, arrivals) = tokio::sync::mpsc::unbounded_channel();
        let prefix = kafka.topic_prefix.clone();
        let reader = tokio::spawn(async move {
            loop {
                let message = match consumer.recv().await {
                    Ok(message) => message,
                    Err(error) => {
                        eprintln!("outcome reader: {error}");
                        continue;
                    }
                };
                let at = std::time::Instant::now();
                let Ok(payload) = serde_json::from_slice::<serde_json::Value>(
                    message.payload().unwrap_or_default(),
                ) else {
                    continue;
                };
                let Some(id) = payload["transactionId"].as_str().map(str::to_string) else {
                    continue;
                };
                let topic = message.topic();
                let topic = topic.strip_prefix(&prefix).unwrap_or(topic).to_string();
                let stages = Stages {
                    outcome_drafted: header(&message, contracts::envelope::headers::TIME)
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                        .map(std::time::SystemTime::from),
                    outcome_produced: record_time(&message),
                    outcome_read: Some(std::time::SystemTime::now()),
                    requested_produced: None,
                };
                let arrival = Arrival {
                    topic,
                    at,
                    payload,
                    stages,
                };
                if sender.send((id, arrival)).is_err() {
                    return;
                }
            }
        });
        Self {
            arrivals,
            seen: std::collections::HashMap::new(),
            requested: std::collections::HashMap::new(),
            reader,
        }
    }

    /// Waits until each of `ids` has an outcome, or `timeout` passes; returns the outcomes found.
    pub async fn wait_for(
        &mut self,
        ids: &[String],
        timeout: Duration,
    ) -> std::collections::HashMap<String, Arrival> {
        let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut missing = wanted
            .iter()
            .filter(|id| !self.seen.contains_key(**id))
            .count();
        let deadline = tokio::time::Instant::now() + timeout;
        while missing > 0 {
            let Ok(Some((id, mut arrival))) =
                tokio::time::timeout_at(deadline, self.arrivals.recv()).await
            else {
                break;
            };
            if arrival.topic == contracts::topics::TRANSACTION_REQUESTED {
                if let Some(produced) = arrival.stages.outcome_produced {
                    self.requested.entry(id).or_insert(produced);
                }
                continue;
            }
            arrival.stages.requested_produced = self.requested.get(&id).copied();
            if self.seen.contains_key(&id) {
                continue;
            }
            if wanted.contains(id.as_str()) {
                missing -= 1;
            }
            self.seen.insert(id, arrival);
        }
        wanted
            .iter()
            .filter_map(|id| Some((id.to_string(), self.seen.get(*id)?.clone())))
            .collect()
    }
}

impl Drop for OutcomeClock {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The offsets consumer group `group` (unprefixed) has committed on `topic` (unprefixed), summed
/// over its partitions: the number of records the group has finished with.
pub fn committed_total(kafka: &KafkaConfig, group: &str, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = kafka
        .client_config("offset-reader")
        .set("group.id", kafka.topic_name(group))
        .create()
        .expect("consumer");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..kafka.topic_partitions {
        partitions.add_partition(&kafka.topic_name(topic), partition);
    }
    consumer
        .committed_offsets(partitions, Duration::from_secs(10))
        .expect("committed offsets")
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(n) => n,
            _ => 0,
        })
        .sum()
}

/// Records of `topic` (unprefixed) that consumer group `group` (unprefixed) has not committed
/// yet, summed over the partitions: its lag.
pub fn lag(kafka: &KafkaConfig, group: &str, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = kafka
        .client_config("lag-reader")
        .create()
        .expect("consumer");
    let end: i64 = (0..kafka.topic_partitions)
        .map(|partition| {
            consumer
                .fetch_watermarks(&kafka.topic_name(topic), partition, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .sum();
    end - committed_total(kafka, group, topic)
}
