//! Topics: idempotent creation through the admin API (Event Streams creates no topic on demand),
//! each topic with the configs of `contracts::topics::configs`, and the check of existing topics
//! against those configs ([`check_topic_configs`]): a topic whose configs differ is reported, one
//! warning per config, and fixed on request (`KAFKA_FIX_TOPIC_CONFIGS=true`,
//! `cargo xtask kafka fix-topics`).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::types::RDKafkaErrorCode;

use super::client::{KafkaError, TracingContext};
use super::config::KafkaConfig;

/// How long an admin request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A config of an existing topic that differs from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDrift {
    /// The topic, as the broker names it (with the prefix).
    pub topic: String,
    /// The config, e.g. `retention.ms`.
    pub config: &'static str,
    /// The value of the table.
    pub expected: &'static str,
    /// The broker's value (`None`: not reported by the broker).
    pub actual: Option<String>,
}

impl std::fmt::Display for TopicDrift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "topic {} has {}={} (expected {})",
            self.topic,
            self.config,
            self.actual.as_deref().unwrap_or("<unset>"),
            self.expected
        )
    }
}

/// The topic configs of `topic` (without the prefix): the table's, none for a topic the table
/// does not know.
fn table(topic: &str) -> &'static [contracts::topics::TopicConfig] {
    contracts::topics::configs(topic).unwrap_or_default()
}

fn admin_client(config: &KafkaConfig) -> Result<AdminClient<TracingContext>, KafkaError> {
    config
        .client_config("topic-admin")
        .create_with_context(TracingContext)
        .map_err(|source| KafkaError::Client {
            client: "admin client",
            source,
        })
}

fn options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(ADMIN_TIMEOUT))
        .request_timeout(Some(ADMIN_TIMEOUT))
}

/// Creates each topic that does not exist yet, with the configured partitions and replication
/// and the configs of `contracts::topics::configs` (retention, cleanup policy). Topics that
/// exist already are left as they are (see [`check_topic_configs`]). Names get the prefix.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[String]) -> Result<(), KafkaError> {
    let admin = admin_client(config)?;
    let names: Vec<(String, &str)> = topics
        .iter()
        .map(|t| (config.topic_name(t), t.as_str()))
        .collect();
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|(name, topic)| {
            table(topic).iter().fold(
                NewTopic::new(
                    name,
                    config.topic_partitions,
                    TopicReplication::Fixed(config.topic_replication_factor),
                ),
                |new, (key, value)| new.set(key, value),
            )
        })
        .collect();
    let results = admin
        .create_topics(&new_topics, &options())
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

/// Compares the configs of the existing `topics` (names without the prefix) with the table and
/// returns every difference; topics that do not exist, or whose configs this credential may not
/// describe, are skipped. With `fix`, each drifted
/// topic is altered to the table's values first (its other topic-level overrides are kept: the
/// admin API's non-incremental AlterConfigs is given them all), and what was fixed is returned.
pub async fn check_topic_configs(
    config: &KafkaConfig,
    topics: &[String],
    fix: bool,
) -> Result<Vec<TopicDrift>, KafkaError> {
    let admin = admin_client(config)?;
    let names: Vec<(String, &str)> = topics
        .iter()
        .map(|t| (config.topic_name(t), t.as_str()))
        .collect();
    let specifiers: Vec<ResourceSpecifier<'_>> = names
        .iter()
        .map(|(name, _)| ResourceSpecifier::Topic(name))
        .collect();
    let described = admin
        .describe_configs(&specifiers, &options())
        .await
        .map_err(|source| KafkaError::Operation {
            operation: "describe topic configs".to_string(),
            source,
        })?;
    let mut drifts = Vec::new();
    for ((name, topic), result) in names.iter().zip(described) {
        let resource = match result {
            Ok(resource) => resource,
            Err(RDKafkaErrorCode::UnknownTopicOrPartition) => continue,
            // A service may read only its own topics (Event Streams' least privilege): the
            // others are the deploy's or another service's to check.
            Err(
                code @ (RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed),
            ) => {
                tracing::debug!(topic = %name, %code, "not allowed to describe its configs");
                continue;
            }
            Err(code) => {
                return Err(KafkaError::Operation {
                    operation: format!("describe configs of {name}"),
                    source: rdkafka::error::KafkaError::AdminOp(code),
                })
            }
        };
        // A topic that does not exist is described with no entries (or the error above).
        if resource.entries.is_empty() {
            continue;
        }
        let entries = resource.entry_map();
        let topic_drifts: Vec<TopicDrift> = table(topic)
            .iter()
            .filter_map(|(key, expected)| {
                let actual = entries.get(key).and_then(|e| e.value.clone());
                (actual.as_deref() != Some(*expected)).then(|| TopicDrift {
                    topic: name.clone(),
                    config: key,
                    expected,
                    actual,
                })
            })
            .collect();
        if fix && !topic_drifts.is_empty() {
            // The topic's own overrides, then the table's values over them.
            let mut wanted: HashMap<&str, &str> = resource
                .entries
                .iter()
                .filter(|e| e.source == ConfigSource::DynamicTopic && !e.is_read_only)
                .filter_map(|e| e.value.as_deref().map(|v| (e.name.as_str(), v)))
                .collect();
            wanted.extend(table(topic).iter().copied());
            alter(&admin, name, wanted).await?;
        }
        drifts.extend(topic_drifts);
    }
    Ok(drifts)
}

/// Sets the topic-level configs of `name` to exactly `entries`.
async fn alter(
    admin: &AdminClient<TracingContext>,
    name: &str,
    entries: HashMap<&str, &str>,
) -> Result<(), KafkaError> {
    let alter = AlterConfig {
        specifier: ResourceSpecifier::Topic(name),
        entries,
    };
    let results = admin
        .alter_configs(&[alter], &options())
        .await
        .map_err(|source| KafkaError::Operation {
            operation: format!("alter configs of {name}"),
            source,
        })?;
    for result in results {
        if let Err((_, code)) = result {
            return Err(KafkaError::Operation {
                operation: format!("alter configs of {name}"),
                source: rdkafka::error::KafkaError::AdminOp(code),
            });
        }
    }
    Ok(())
}

/// The start-up check: one warning per drifted topic naming each config with the expected
/// and the actual value, saying whether it was fixed (`fix`). A broker that refuses to describe
/// or alter configs (a credential without the role) is a warning, not a failure.
pub async fn report_topic_configs(config: &KafkaConfig, topics: &[String], fix: bool) {
    let drifts = match check_topic_configs(config, topics, fix).await {
        Ok(drifts) => drifts,
        Err(error) => {
            tracing::warn!(%error, "cannot check the topics' configs");
            return;
        }
    };
    let mut by_topic: Vec<(&str, Vec<String>)> = Vec::new();
    for drift in &drifts {
        let text = format!(
            "{}: expected {}, actual {}",
            drift.config,
            drift.expected,
            drift.actual.as_deref().unwrap_or("<unset>")
        );
        match by_topic.iter_mut().find(|(t, _)| *t == drift.topic) {
            Some((_, texts)) => texts.push(text),
            None => by_topic.push((&drift.topic, vec![text])),
        }
    }
    for (topic, texts) in by_topic {
        let configs = texts.join("; ");
        if fix {
            tracing::warn!(topic, %configs, "topic configs drifted; fixed (KAFKA_FIX_TOPIC_CONFIGS=true)");
        } else {
            tracing::warn!(topic, %configs,
                "topic configs differ from the table; fix with KAFKA_FIX_TOPIC_CONFIGS=true or \
                 `cargo xtask kafka fix-topics` (Event Streams: deploy.sh with ES_FIX_TOPIC_CONFIGS=true)");
        }
    }
}
