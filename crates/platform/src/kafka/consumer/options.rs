//! [`ConsumerOptions`]: the settings of one consumer.

use std::time::Duration;

use crate::foundation::health::ConsumerHealth;

/// Settings of one consumer.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Consumer group id.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Most records handed to the handler at once.
    pub max_batch: usize,
    /// First delay between retries of a transient failure.
    pub initial_backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
    /// How long a record may keep failing transiently before it is dead-lettered.
    pub retry_limit: Duration,
    /// How often librdkafka reports statistics (consumer lag, assignment).
    pub statistics_interval: Duration,
    /// Where the consumer reports its state for `/readyz` (none: reports go nowhere).
    pub health: Option<ConsumerHealth>,
}

impl ConsumerOptions {
    /// Options with the defaults: batches of up to 500 records, backoff from 100 ms doubling
    /// to 5 s, dead-lettered after 5 minutes of transient failures, statistics every 5 s.
    pub fn new(group_id: impl Into<String>, topics: &[&str]) -> Self {
        Self {
            group_id: group_id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            max_batch: 500,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            retry_limit: Duration::from_secs(300),
            statistics_interval: Duration::from_secs(5),
            health: None,
        }
    }
}
