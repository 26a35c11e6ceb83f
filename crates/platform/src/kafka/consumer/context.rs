//! [`LaneContext`]: the client context (revocations, assignment, librdkafka statistics).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::TopicPartitionList;

use super::lanes::{LaneKey, LaneState, LaneStates, NO_TIMESTAMP};
use crate::foundation::health::ConsumerHealth;

/// How long a revocation waits for a lane to finish the batch it is in.
const REVOKE_WAIT: Duration = Duration::from_secs(30);

/// The client context: on revocation, lets each lane finish its batch, then commits the
/// stored offsets before the partition goes away; reports the assignment and, from librdkafka's
/// statistics, the lag of each assigned partition (metrics and [`ConsumerHealth`]).
pub(super) struct LaneContext {
    pub(super) lanes: LaneStates,
    pub(super) revoked: Mutex<Vec<LaneKey>>,
    /// The group as the services name it (without the topic prefix).
    pub(super) group: String,
    pub(super) prefix: String,
    pub(super) health: ConsumerHealth,
    /// The current assignment (unprefixed topics), as of the last rebalance.
    pub(super) assignment: Mutex<Vec<LaneKey>>,
    /// The service's metrics registry: librdkafka's callbacks run on its threads.
    pub(super) metrics: crate::foundation::metrics_scope::Registry,
}

impl LaneContext {
    fn states(&self, tpl: &TopicPartitionList) -> Vec<(LaneKey, Arc<LaneState>)> {
        let lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        tpl.elements()
            .iter()
            .filter_map(|e| {
                let key = (e.topic().to_string(), e.partition());
                lanes.get(&key).map(|s| (key, Arc::clone(s)))
            })
            .collect()
    }
}

impl LaneContext {
    /// Records the consumer's whole assignment after a rebalance.
    fn report_assignment(&self, consumer: &BaseConsumer<Self>) {
        let assignment: Vec<LaneKey> = match consumer.assignment() {
            Ok(tpl) => tpl
                .elements()
                .iter()
                .map(|e| (self.unprefixed(e.topic()), e.partition()))
                .collect(),
            Err(error) => {
                tracing::debug!(%error, "assignment");
                return;
            }
        };
        metrics::gauge!("kafka_consumer_assigned_partitions", "group" => self.group.clone())
            .set(assignment.len() as f64);
        let mut current = self
            .assignment
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A partition that went elsewhere is no longer this replica's lag.
        for (topic, partition) in current.iter().filter(|key| !assignment.contains(key)) {
            lag_gauge(&self.group, topic, *partition).set(0.0);
            lag_age_gauge(&self.group, topic, *partition).set(0.0);
        }
        self.health.assignment(&assignment);
        *current = assignment;
    }

    fn unprefixed(&self, topic: &str) -> String {
        topic
            .strip_prefix(&self.prefix)
            .unwrap_or(topic)
            .to_string()
    }
}

fn lag_gauge(group: &str, topic: &str, partition: i32) -> metrics::Gauge {
    metrics::gauge!("kafka_consumer_lag", "group" => group.to_string(),
        "topic" => topic.to_string(), "partition" => partition.to_string())
}

fn lag_age_gauge(group: &str, topic: &str, partition: i32) -> metrics::Gauge {
    metrics::gauge!("kafka_consumer_lag_age_seconds", "group" => group.to_string(),
        "topic" => topic.to_string(), "partition" => partition.to_string())
}

/// The age of the oldest record of a partition not processed yet, as far as the lane knows:
/// 0 when nothing waits; else the age of the first record of the batch the lane started last
/// (an upper bound: the records before it are done), `None` when the lane has not started one.
fn lag_age_seconds(waiting: i64, batch_timestamp_ms: i64, now_ms: i64) -> Option<f64> {
    if waiting == 0 {
        Some(0.0)
    } else if batch_timestamp_ms >= 0 {
        Some((now_ms - batch_timestamp_ms).max(0) as f64 / 1000.0)
    } else {
        None
    }
}

/// The part of librdkafka's statistics the consumer reads (see its STATISTICS.md).
#[derive(serde::Deserialize)]
struct Statistics {
    #[serde(default)]
    topics: HashMap<String, TopicStatistics>,
    cgrp: Option<GroupStatistics>,
}

#[derive(serde::Deserialize)]
struct TopicStatistics {
    #[serde(default)]
    partitions: HashMap<String, PartitionStatistics>,
}

#[derive(serde::Deserialize)]
struct PartitionStatistics {
    partition: i32,
    committed_offset: i64,
    consumer_lag: i64,
    lo_offset: i64,
    hi_offset: i64,
}

impl PartitionStatistics {
    /// Records waiting: the lag, or, before the group ever committed on the partition (its
    /// lag is unknown), every record on it (`auto.offset.reset` is `earliest`).
    fn waiting(&self) -> Option<i64> {
        if self.consumer_lag >= 0 {
            Some(self.consumer_lag)
        } else if self.committed_offset < 0 && self.lo_offset >= 0 && self.hi_offset >= 0 {
            Some(self.hi_offset - self.lo_offset)
        } else {
            None
        }
    }
}

#[derive(serde::Deserialize)]
struct GroupStatistics {
    join_state: String,
}

impl rdkafka::ClientContext for LaneContext {
    fn stats_raw(&self, statistics: &[u8]) {
        self.metrics.in_scope(|| self.record_statistics(statistics));
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::client::log_to_tracing(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::client::error_to_tracing(&error, reason);
    }
}

impl LaneContext {
    /// Lag gauges and the group's health from one librdkafka statistics report.
    fn record_statistics(&self, statistics: &[u8]) {
        let statistics: Statistics = match serde_json::from_slice(statistics) {
            Ok(statistics) => statistics,
            Err(error) => {
                tracing::debug!(%error, "unreadable librdkafka statistics");
                return;
            }
        };
        let assignment = self
            .assignment
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut partitions = Vec::new();
        let lanes = self
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let now_ms = chrono::Utc::now().timestamp_millis();
        for (broker_name, topic) in &statistics.topics {
            let name = self.unprefixed(broker_name);
            for p in topic.partitions.values() {
                // -1 is librdkafka's internal partition.
                let key = (name.clone(), p.partition);
                if p.partition < 0 || !assignment.contains(&key) {
                    continue;
                }
                // A negative lag is not known yet: no series.
                if p.consumer_lag >= 0 {
                    lag_gauge(&self.group, &name, p.partition).set(p.consumer_lag as f64);
                }
                if let Some(waiting) = p.waiting() {
                    let started = lanes
                        .get(&(broker_name.clone(), p.partition))
                        .map_or(NO_TIMESTAMP, |lane| {
                            lane.batch_timestamp_ms.load(Ordering::SeqCst)
                        });
                    if let Some(age) = lag_age_seconds(waiting, started, now_ms) {
                        lag_age_gauge(&self.group, &name, p.partition).set(age);
                    }
                    partitions.push((key, p.committed_offset, waiting));
                }
            }
        }
        let settled = statistics.cgrp.is_some_and(|g| g.join_state == "steady");
        self.health.statistics(settled, &partitions);
    }
}

impl ConsumerContext for LaneContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let states = self.states(tpl);
        for (_, state) in &states {
            state.generation.fetch_add(1, Ordering::SeqCst);
        }
        let deadline = Instant::now() + REVOKE_WAIT;
        while states.iter().any(|(_, s)| s.busy.load(Ordering::SeqCst)) && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(%error, "offset commit on revocation");
        }
        tracing::info!(partitions = tpl.count(), "partitions revoked");
        self.revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(states.into_iter().map(|(key, _)| key));
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // A partition paused before it was revoked must not stay paused when it returns.
            if let Err(error) = consumer.resume(tpl) {
                tracing::debug!(%error, "resume of assigned partitions");
            }
            tracing::info!(partitions = tpl.count(), "partitions assigned");
        }
        self.report_assignment(consumer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_age_is_zero_when_caught_up_and_the_batch_age_otherwise() {
        let now = 1_000_000_000;
        assert_eq!(lag_age_seconds(0, now - 5_000, now), Some(0.0));
        assert_eq!(lag_age_seconds(0, -1, now), Some(0.0));
        assert_eq!(lag_age_seconds(12, now - 90_000, now), Some(90.0));
        assert_eq!(lag_age_seconds(12, -1, now), None, "no batch yet: unknown");
        assert_eq!(
            lag_age_seconds(1, now + 2_000, now),
            Some(0.0),
            "clock skew"
        );
    }
}
