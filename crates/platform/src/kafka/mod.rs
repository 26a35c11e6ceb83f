//! Kafka: the connection configuration, the producer, the consumer loop (manual offset storage,
//! retries, dead letters) and idempotent topic creation. Every service goes through this module.

pub mod admin;
pub mod config;
pub mod consumer;
pub mod producer;

pub use admin::ensure_topics;
pub use config::{KafkaConfig, SaslCredentials, SaslMechanism, SecurityProtocol};
pub use consumer::{run_consumer, ConsumerOptions, HandleError, Handler, Record};
pub use producer::{OutgoingRecord, Producer};

use std::time::Duration;

/// Errors of Kafka clients, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A client could not be created (bad configuration).
    #[error("cannot create Kafka {client}: {source}")]
    Client {
        /// Which client: producer, consumer, admin.
        client: &'static str,
        /// The librdkafka error.
        source: rdkafka::error::KafkaError,
    },
    /// The broker could not be reached or refused the request.
    #[error("Kafka {operation} failed: {source}")]
    Operation {
        /// What was attempted.
        operation: String,
        /// The librdkafka error.
        source: rdkafka::error::KafkaError,
    },
    /// The broker did not answer in time.
    #[error("Kafka {0} timed out")]
    Timeout(String),
}

/// Asks the brokers for cluster metadata: the readiness probe and the start-up check.
pub async fn check_connection(
    config: &KafkaConfig,
    timeout: Duration,
) -> Result<usize, KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer =
        config
            .client_config("readiness-probe")
            .create()
            .map_err(|source| KafkaError::Client {
                client: "metadata client",
                source,
            })?;
    tokio::task::spawn_blocking(move || {
        consumer
            .fetch_metadata(None, timeout)
            .map(|m| m.brokers().len())
            .map_err(|source| KafkaError::Operation {
                operation: "metadata request".to_string(),
                source,
            })
    })
    .await
    .map_err(|_| KafkaError::Timeout("metadata request".to_string()))?
}
