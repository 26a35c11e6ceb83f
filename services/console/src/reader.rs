//! Reads every topic (and its dead letters) into the window: it starts at the recent tail of
//! each partition, so the window is there when a page opens, and then follows the topics. It
//! uses its own consumer group and commits nothing: the console keeps no state that matters.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use platform::kafka::{KafkaError, TracingContext};
use platform::KafkaConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::state::Console;
use crate::window::ConsoleEvent;

/// The console's consumer group (with the configured prefix on the broker).
pub const GROUP: &str = contracts::topics::groups::CONSOLE;
/// How long a metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The topics the console reads, without the prefix: the four event topics and their DLTs.
pub fn topics() -> Vec<String> {
    contracts::topics::all_with_dead_letters()
}

/// Reads the topics into `console` until `shutdown`, starting `tail` records before each
/// partition's end. Waits for the topics to exist (the services create them).
pub async fn run(
    kafka: KafkaConfig,
    console: Console,
    tail: usize,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let consumer: Arc<StreamConsumer<TracingContext>> = Arc::new(
        kafka
            .client_config("console")
            .set("group.id", kafka.topic_name(GROUP))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create_with_context(TracingContext)
            .map_err(|source| KafkaError::Client {
                client: "consumer",
                source,
            })?,
    );
    let assignment = loop {
        let (consumer, kafka) = (Arc::clone(&consumer), kafka.clone());
        let attempt =
            tokio::task::spawn_blocking(move || tail_assignment(&consumer, &kafka, tail)).await;
        match attempt {
            Ok(Ok(Some(assignment))) => break assignment,
            Ok(Ok(None)) => tracing::info!("waiting for the topics to be created"),
            Ok(Err(error)) => tracing::warn!(%error, "cannot read the topics yet; retrying"),
            Err(error) => tracing::warn!(%error, "cannot read the topics yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    };
    consumer
        .assign(&assignment)
        .map_err(|source| KafkaError::Operation {
            operation: "assign partitions".to_string(),
            source,
        })?;
    tracing::info!(partitions = assignment.count(), tail, "reading the topics");
    let mut stream = consumer.stream();
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            message = stream.next() => message,
        };
        match message {
            None => return Ok(()),
            Some(Err(error)) => {
                tracing::warn!(%error, "console consumer error");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Some(Ok(message)) => console.record(event_of(&kafka, &message)),
        }
    }
}

/// Every partition of every topic, at most `tail` records before its end; `None` while a topic
/// is missing.
fn tail_assignment(
    consumer: &StreamConsumer<TracingContext>,
    kafka: &KafkaConfig,
    tail: usize,
) -> Result<Option<TopicPartitionList>, KafkaError> {
    let operation = |what: &str| {
        let what = what.to_string();
        move |source: rdkafka::error::KafkaError| KafkaError::Operation {
            operation: what,
            source,
        }
    };
    let metadata = consumer
        .fetch_metadata(None, REQUEST_TIMEOUT)
        .map_err(operation("metadata request"))?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics() {
        let name = kafka.topic_name(&topic);
        let Some(found) = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && !t.partitions().is_empty())
        else {
            return Ok(None);
        };
        for partition in found.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(&name, partition.id(), REQUEST_TIMEOUT)
                .map_err(operation("watermark request"))?;
            let start = high.saturating_sub(tail as i64).max(low);
            assignment
                .add_partition_offset(&name, partition.id(), Offset::Offset(start))
                .map_err(operation("assignment"))?;
        }
    }
    Ok(Some(assignment))
}

fn event_of(kafka: &KafkaConfig, message: &impl Message) -> ConsoleEvent {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    ConsoleEvent::of(
        kafka.strip_prefix(message.topic()),
        message.partition(),
        message.offset(),
        message.timestamp().to_millis().unwrap_or_default(),
        message.key(),
        headers,
        message.payload(),
    )
}
