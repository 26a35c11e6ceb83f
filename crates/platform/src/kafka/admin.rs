//! Idempotent topic creation through the admin API (Event Streams creates no topic on demand).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

use super::{KafkaConfig, KafkaError, TracingContext};

/// Creates each topic that does not exist yet, with the configured partitions and replication.
/// Topics that exist already are left as they are. Names get the configured prefix.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[String]) -> Result<(), KafkaError> {
    let admin: AdminClient<TracingContext> = config
        .client_config("topic-admin")
        .create_with_context(TracingContext)
        .map_err(|source| KafkaError::Client {
            client: "admin client",
            source,
        })?;
    let names: Vec<String> = topics.iter().map(|t| config.topic_name(t)).collect();
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                config.topic_partitions,
                TopicReplication::Fixed(config.topic_replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|source| KafkaError::Operation {
            operation: "create topics".to_string(),
            source,
        })?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::Operation {
                    operation: format!("create topic {topic}"),
                    source: rdkafka::error::KafkaError::AdminOp(code),
                })
            }
        }
    }
    Ok(())
}
