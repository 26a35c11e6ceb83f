//! Reading again what a consumer group has consumed of a topic, without joining the group: what
//! a service whose database is empty replays from the compacted `Customer.created` before it
//! takes work ([`crate::Service::consume_events_rebuilding`]).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::client::{KafkaError, TracingContext};
use super::config::KafkaConfig;
use super::consumer::record::Record;

/// How long one metadata or watermark request, and the reading of one partition, may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Every record of `topic` (unprefixed) that consumer group `group` (unprefixed) has consumed:
/// partition by partition in offset order, from the start of the partition up to the group's
/// committed offset (nothing of a partition where the group has committed none: its records
/// are still ahead of the group, which will consume them as usual). Partitions are assigned,
/// never subscribed: the group is not joined and nothing is committed (its offsets are only
/// read). A topic that does not exist reads as empty.
pub async fn read_consumed(
    config: &KafkaConfig,
    topic: &str,
    group: &str,
) -> Result<Vec<Record>, KafkaError> {
    let consumer: BaseConsumer<TracingContext> = config
        .client_config("replay-reader")
        // The group's name as its consumers use it, to read its committed offsets; assigned
        // partitions never join it.
        .set("group.id", config.topic_name(group))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(TracingContext)
        .map_err(|source| KafkaError::Client {
            client: "replay reader",
            source,
        })?;
    let name = config.topic_name(topic);
    let prefix = config.topic_prefix.clone();
    tokio::task::spawn_blocking(move || read_all(&consumer, &name, &prefix))
        .await
        .map_err(|e| KafkaError::Timeout(format!("replay reader: {e}")))?
}

fn operation(what: String) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaError {
    move |source| KafkaError::Operation {
        operation: what,
        source,
    }
}

/// The group's committed offsets of `asked`. The group coordinator may be moving or loading (a
/// cluster that just started creates `__consumer_offsets`, a failover moves it): those answers
/// are asked again for up to [`TIMEOUT`].
fn committed_offsets(
    consumer: &BaseConsumer<TracingContext>,
    asked: &TopicPartitionList,
) -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match consumer.committed_offsets(asked.clone(), TIMEOUT) {
            Err(error)
                if matches!(
                    error.rdkafka_error_code(),
                    Some(
                        Code::NotCoordinator
                            | Code::CoordinatorLoadInProgress
                            | Code::CoordinatorNotAvailable
                    )
                ) && Instant::now() < deadline =>
            {
                tracing::debug!(%error, "group coordinator not ready; asking again");
                std::thread::sleep(Duration::from_millis(500));
            }
            result => return result,
        }
    }
}

fn read_all(
    consumer: &BaseConsumer<TracingContext>,
    name: &str,
    prefix: &str,
) -> Result<Vec<Record>, KafkaError> {
    let metadata = consumer
        .fetch_metadata(Some(name), TIMEOUT)
        .map_err(operation(format!("metadata of {name}")))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == name && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut asked = TopicPartitionList::new();
    for partition in &partitions {
        asked.add_partition(name, *partition);
    }
    let committed = committed_offsets(consumer, &asked)
        .map_err(operation(format!("committed offsets on {name}")))?;
    let mut records = Vec::new();
    for partition in partitions {
        let Some(Offset::Offset(consumed)) = committed
            .find_partition(name, partition)
            .map(|p| p.offset())
        else {
            continue;
        };
        let (low, high) = consumer
            .fetch_watermarks(name, partition, TIMEOUT)
            .map_err(operation(format!("offsets of {name}/{partition}")))?;
        let end = high.min(consumed);
        if end > low {
            read_range(consumer, name, partition, low, end, &mut records)?;
        }
    }
    for record in &mut records {
        record.topic = record
            .topic
            .strip_prefix(prefix)
            .unwrap_or(&record.topic)
            .to_string();
    }
    Ok(records)
}

/// Appends the records of `partition` from `from` up to (not including) `to`.
fn read_range(
    consumer: &BaseConsumer<TracingContext>,
    name: &str,
    partition: i32,
    from: i64,
    to: i64,
    records: &mut Vec<Record>,
) -> Result<(), KafkaError> {
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(name, partition, Offset::Offset(from))
        .and_then(|()| consumer.assign(&assignment))
        .map_err(operation(format!("read {name}/{partition}")))?;
    let deadline = Instant::now() + TIMEOUT;
    let mut next = from;
    while next < to {
        if Instant::now() >= deadline {
            return Err(KafkaError::Timeout(format!("reading {name}/{partition}")));
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            // The end: what is left are transaction markers, or compaction removed it.
            Err(rdkafka::error::KafkaError::PartitionEOF(_)) => break,
            Err(source) => return Err(operation(format!("read {name}/{partition}"))(source)),
        };
        // Offsets skip where compaction removed records: wait for the one after this one.
        next = rdkafka::Message::offset(&message) + 1;
        if rdkafka::Message::offset(&message) < to {
            records.push(Record::from_message(&message));
        }
    }
    Ok(())
}
