//! Reading topics as another service would: the records of a topic read once
//! ([`read_topic`], [`read_to_end`]), or collected in the background while a test runs
//! ([`Collector`]); and what a record holds ([`RecordExt`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::config::FromClientConfig;
use rdkafka::consumer::Consumer;
use serde_json::Value;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::database::unique;
use super::wait::{eventually, DEADLINE};
use crate::kafka::KafkaConfig;
use crate::kafka::Record;

/// A consumer of a fresh group that reads from the beginning and commits nothing.
fn reader<C: FromClientConfig>(config: &KafkaConfig) -> C {
    config
        .client_config("test-reader")
        .set("group.id", unique("test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("create test consumer")
}

/// What a test reads off a [`Record`]: its headers as text and its payload as JSON.
pub trait RecordExt {
    /// The value of header `name` (e.g. `ce_type`), as text.
    fn header(&self, name: &str) -> Option<String>;
    /// The payload as JSON; `Value::Null` when it is not JSON.
    fn json(&self) -> Value;
}

impl RecordExt for Record {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// Reads records of `topic` (unprefixed name) from the beginning with a fresh consumer group until
/// `until` accepts the records read so far, or `timeout` passes; returns what was read.
pub async fn read_topic(
    config: &KafkaConfig,
    topic: &str,
    timeout: std::time::Duration,
    until: impl Fn(&[crate::kafka::Record]) -> bool,
) -> Vec<crate::kafka::Record> {
    use rdkafka::consumer::StreamConsumer;
    let consumer: StreamConsumer = reader(config);
    consumer
        .subscribe(&[&config.topic_name(topic)])
        .expect("subscribe");
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !until(&records) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => {
                let mut record = crate::kafka::Record::from_message(&message);
                record.topic = config.strip_prefix(&record.topic).to_string();
                records.push(record);
            }
            Ok(Err(error)) => panic!("reading {topic}: {error}"),
            Err(_) => break,
        }
    }
    records
}

/// The number of partitions of `topic` (unprefixed name) as the broker's metadata reports it;
/// `None` when the topic does not exist.
pub async fn partition_count(config: &KafkaConfig, topic: &str) -> Option<usize> {
    use rdkafka::consumer::BaseConsumer;
    let consumer: BaseConsumer = config
        .client_config("test-metadata")
        .create()
        .expect("metadata client");
    let name = config.topic_name(topic);
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(Some(&name), std::time::Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("metadata of {name}: {e}"));
        let topic = metadata.topics().iter().find(|t| t.name() == name)?;
        match topic.error() {
            None => Some(topic.partitions().len()),
            Some(_) => None,
        }
    })
    .await
    .expect("metadata task")
}

/// Every record of `topic` (unprefixed name), from every partition, from the beginning up to the
/// high watermarks as they are now: all that was written before the call, nothing less (panics
/// when that cannot be read within 30 s) and nothing that came after. (It reads with a blocking
/// consumer on a blocking thread; the call itself is async.)
pub async fn read_to_end(config: &KafkaConfig, topic: &str) -> Vec<crate::kafka::Record> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Message, Offset, TopicPartitionList};
    use std::time::{Duration, Instant};
    let consumer: BaseConsumer = reader(config);
    let config = config.clone();
    let name = config.topic_name(topic);
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(Some(&name), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("metadata of {name}: {e}"));
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map(|t| t.partitions().len())
            .unwrap_or_else(|| panic!("topic {name} does not exist"));
        let mut assignment = TopicPartitionList::new();
        let mut remaining = HashMap::new();
        for partition in 0..partitions as i32 {
            // A topic created a moment ago may not have elected its leaders yet.
            let asked = Instant::now();
            let (low, high) = loop {
                match consumer.fetch_watermarks(&name, partition, Duration::from_secs(10)) {
                    Ok(marks) => break marks,
                    Err(e) if asked.elapsed() > Duration::from_secs(30) => {
                        panic!("watermarks of {name}/{partition}: {e}")
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            };
            if high > low {
                remaining.insert(partition, high);
            }
            assignment
                .add_partition_offset(&name, partition, Offset::Beginning)
                .expect("assignment");
        }
        consumer.assign(&assignment).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut records = Vec::new();
        while !remaining.is_empty() {
            assert!(
                Instant::now() < deadline,
                "could not read {name} to its end"
            );
            let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let message = message.unwrap_or_else(|e| panic!("reading {name}: {e}"));
            let Some(&high) = remaining.get(&message.partition()) else {
                continue;
            };
            if message.offset() >= high {
                continue;
            }
            if message.offset() + 1 >= high {
                remaining.remove(&message.partition());
            }
            let mut record = crate::kafka::Record::from_message(&message);
            record.topic = config.strip_prefix(&record.topic).to_string();
            records.push(record);
        }
        records
    })
    .await
    .expect("reader task")
}

/// The records of some topics, read in the background from the beginning while a test runs,
/// as a consumer of another service would see them. Stops when the last clone is dropped.
#[derive(Clone)]
pub struct Collector {
    records: Arc<Mutex<Vec<Record>>>,
    _stop: Arc<DropGuard>,
}

impl Collector {
    /// Starts reading `topics` (unprefixed names; they should exist) with a fresh group.
    pub fn start(config: &KafkaConfig, topics: &[&str]) -> Self {
        use rdkafka::consumer::StreamConsumer;
        let consumer: StreamConsumer = reader(config);
        let names: Vec<String> = topics.iter().map(|t| config.topic_name(t)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        consumer.subscribe(&names).expect("subscribe");
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        tokio::spawn(collect(
            consumer,
            config.clone(),
            Arc::clone(&records),
            stop.clone(),
        ));
        Self {
            records,
            _stop: Arc::new(stop.drop_guard()),
        }
    }

    /// Every record read so far from `topic` (unprefixed name), in the order read.
    pub fn on(&self, topic: &str) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|r| r.topic == topic)
            .cloned()
            .collect()
    }

    /// Waits until at least `n` records of `topic` have been read; returns them. Panics after
    /// [`DEADLINE`].
    pub async fn wait_for(&self, topic: &str, n: usize) -> Vec<Record> {
        eventually(&format!("{n} records on {topic}"), DEADLINE, || async {
            let seen = self.on(topic);
            (seen.len() >= n).then_some(seen)
        })
        .await
    }
}

/// The [`Collector`]'s loop: every record into `records` until `stop`.
async fn collect(
    consumer: rdkafka::consumer::StreamConsumer,
    config: KafkaConfig,
    records: Arc<Mutex<Vec<Record>>>,
    stop: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = consumer.recv() => received,
        };
        match received {
            Ok(message) => {
                let mut record = Record::from_message(&message);
                record.topic = config.strip_prefix(&record.topic).to_string();
                records
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(record);
            }
            // A topic still being created, a rebalance: the consumer carries on.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}
