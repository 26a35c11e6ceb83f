//! The pipeline's progress as the broker's offsets tell it: per consumer group of the services,
//! the lag of each partition (partition end minus the group's committed offset), and the dead
//! letters per topic. Measured every [`INTERVAL`] through the consumer API (offset fetches; the
//! console joins no group) into the page's [`PipelineHealth`]. (Not `/readyz`: that is
//! `platform::health` and `platform::readiness`.)

use std::collections::BTreeMap;
use std::time::Duration;

use platform::kafka::{KafkaError, TracingContext};
use platform::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::state::{Console, DeadLetterCount, PartitionLag, PipelineHealth};

/// How often the health is measured.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The services whose consumer groups are shown (a group's name starts with its service's).
pub const SERVICES: [&str; 3] = [
    "customer-service",
    "transaction-service",
    "notification-service",
];

/// Measures the health into `console` every [`INTERVAL`] until `shutdown`.
pub async fn run(kafka: KafkaConfig, console: Console, shutdown: CancellationToken) {
    let mut meter = None;
    loop {
        let taken = meter.take();
        let kafka_for_task = kafka.clone();
        let measured = tokio::task::spawn_blocking(move || {
            let mut meter = match taken {
                Some(meter) => meter,
                None => Meter::new(kafka_for_task)?,
            };
            let health = meter.measure();
            Ok::<_, KafkaError>((meter, health))
        })
        .await;
        let health = match measured {
            Ok(Ok((kept, measured))) => {
                meter = Some(kept);
                measured.unwrap_or_else(|error| failed(error.to_string()))
            }
            Ok(Err(error)) => failed(error.to_string()),
            Err(error) => failed(error.to_string()),
        };
        console.health(health);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

fn failed(error: String) -> PipelineHealth {
    tracing::debug!(%error, "pipeline health not measured");
    PipelineHealth {
        error: Some(error),
        checked_at: Some(chrono::Utc::now().to_rfc3339()),
        ..PipelineHealth::default()
    }
}

/// The clients the measurement uses: one for metadata and watermarks, one per group for its
/// committed offsets.
struct Meter {
    kafka: KafkaConfig,
    admin: BaseConsumer<TracingContext>,
    groups: BTreeMap<String, BaseConsumer<TracingContext>>,
}

impl Meter {
    fn new(kafka: KafkaConfig) -> Result<Self, KafkaError> {
        let admin = kafka
            .client_config("console-health")
            .create_with_context(TracingContext)
            .map_err(|source| KafkaError::Client {
                client: "consumer",
                source,
            })?;
        Ok(Self {
            kafka,
            admin,
            groups: BTreeMap::new(),
        })
    }

    fn measure(&mut self) -> Result<PipelineHealth, KafkaError> {
        let operation = |what: &'static str| {
            move |source: rdkafka::error::KafkaError| KafkaError::Operation {
                operation: what.to_string(),
                source,
            }
        };
        // Every partition of our topics, and its watermarks.
        let metadata = self
            .admin
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map_err(operation("metadata request"))?;
        let mut ends = BTreeMap::new();
        let mut all = TopicPartitionList::new();
        for topic in crate::reader::topics() {
            let name = self.kafka.topic_name(&topic);
            let Some(found) = metadata.topics().iter().find(|t| t.name() == name) else {
                continue;
            };
            for partition in found.partitions() {
                let marks = self
                    .admin
                    .fetch_watermarks(&name, partition.id(), REQUEST_TIMEOUT)
                    .map_err(operation("watermark request"))?;
                ends.insert((topic.clone(), partition.id()), marks);
                all.add_partition(&name, partition.id());
            }
        }
        let dead_letters = dead_letters(&ends);
        // The services' groups, and what each has committed.
        let groups = self
            .admin
            .fetch_group_list(None, REQUEST_TIMEOUT)
            .map_err(operation("group list"))?;
        // Ours (with our prefix) and a service's; another environment's groups have another prefix.
        let names: Vec<String> = groups
            .groups()
            .iter()
            .filter_map(|g| g.name().strip_prefix(self.kafka.topic_prefix.as_str()))
            .filter(|name| SERVICES.iter().any(|s| name.starts_with(s)))
            .map(str::to_string)
            .collect();
        let mut lag = Vec::new();
        for group in names {
            let committed = self.committed(&group, &all)?;
            lag.extend(group_lag(&group, &committed, &ends));
        }
        Ok(PipelineHealth {
            lag,
            dead_letters,
            checked_at: Some(chrono::Utc::now().to_rfc3339()),
            error: None,
            outbox: Vec::new(),
        })
    }

    /// The committed offsets of `group` on `partitions`: `(topic, partition) -> offset`.
    fn committed(
        &mut self,
        group: &str,
        partitions: &TopicPartitionList,
    ) -> Result<BTreeMap<(String, i32), i64>, KafkaError> {
        if !self.groups.contains_key(group) {
            let client: BaseConsumer<TracingContext> = self
                .kafka
                .client_config("console-health")
                .set("group.id", self.kafka.topic_name(group))
                .set("enable.auto.commit", "false")
                .create_with_context(TracingContext)
                .map_err(|source| KafkaError::Client {
                    client: "consumer",
                    source,
                })?;
            self.groups.insert(group.to_string(), client);
        }
        let Some(client) = self.groups.get(group) else {
            return Ok(BTreeMap::new());
        };
        let committed = client
            .committed_offsets(partitions.clone(), REQUEST_TIMEOUT)
            .map_err(|source| KafkaError::Operation {
                operation: format!("committed offsets of {group}"),
                source,
            })?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some((
                    (
                        self.kafka.strip_prefix(e.topic()).to_string(),
                        e.partition(),
                    ),
                    offset,
                )),
                _ => None,
            })
            .collect())
    }
}

/// The lag of `group` on every partition of the topics it has committed on.
fn group_lag(
    group: &str,
    committed: &BTreeMap<(String, i32), i64>,
    ends: &BTreeMap<(String, i32), (i64, i64)>,
) -> Vec<PartitionLag> {
    ends.iter()
        .filter(|((topic, _), _)| committed.keys().any(|(t, _)| t == topic))
        .map(|((topic, partition), (low, high))| {
            let offset = committed.get(&(topic.clone(), *partition)).copied();
            PartitionLag {
                group: group.to_string(),
                topic: topic.clone(),
                partition: *partition,
                committed: offset,
                end: *high,
                lag: (high - offset.unwrap_or(*low)).max(0),
            }
        })
        .collect()
}

/// Records on each dead-letter topic.
fn dead_letters(ends: &BTreeMap<(String, i32), (i64, i64)>) -> Vec<DeadLetterCount> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for ((topic, _), (low, high)) in ends {
        if topic.ends_with(contracts::topics::DEAD_LETTER_SUFFIX) {
            *counts.entry(topic).or_default() += high - low;
        }
    }
    counts
        .into_iter()
        .map(|(topic, count)| DeadLetterCount {
            topic: topic.to_string(),
            count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends() -> BTreeMap<(String, i32), (i64, i64)> {
        [
            (("transaction.requested".to_string(), 0), (0, 10)),
            (("transaction.requested".to_string(), 1), (2, 5)),
            (("Customer.created".to_string(), 0), (0, 3)),
            (("Customer.created.DLT".to_string(), 0), (1, 3)),
            (("Customer.created.DLT".to_string(), 1), (0, 1)),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn lag_is_the_end_minus_the_committed_offset_on_the_group_s_topics() {
        let committed = [(("transaction.requested".to_string(), 0), 7)]
            .into_iter()
            .collect();
        let lag = group_lag("transaction-service.requests", &committed, &ends());
        assert_eq!(lag.len(), 2, "only the topic the group commits on: {lag:?}");
        assert_eq!((lag[0].committed, lag[0].end, lag[0].lag), (Some(7), 10, 3));
        assert_eq!(
            (lag[1].committed, lag[1].lag),
            (None, 3),
            "nothing committed: all of it"
        );
    }

    #[test]
    fn dead_letters_are_counted_per_topic() {
        assert_eq!(
            dead_letters(&ends()),
            [DeadLetterCount {
                topic: "Customer.created.DLT".into(),
                count: 3
            }]
        );
    }
}
