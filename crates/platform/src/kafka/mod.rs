//! Kafka: the connection configuration, the producer, the consumer loop (manual offset storage,
//! retries, dead letters) and idempotent topic creation. Every service goes through this module.

pub mod admin;
mod client;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod dead_letters;
pub mod producer;
pub mod replay;

pub use admin::{check_topic_configs, ensure_topics, report_topic_configs, TopicDrift};
pub use client::{check_connection, KafkaError, TracingContext};
pub use config::{GroupProtocol, KafkaConfig, SaslCredentials, SaslMechanism, SecurityProtocol};
pub use consumer::{run_consumer, ConsumerOptions, HandleError, Handler, Record, Rejected};
pub use producer::{Delivered, OutgoingRecord, Producer};
