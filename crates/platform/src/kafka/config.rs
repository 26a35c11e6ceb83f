//! The Kafka connection, read once from the environment: IBM Event Streams variables
//! (`EVENT_STREAMS_KAFKA_BROKERS_SASL` or `EVENT_STREAMS_BOOTSTRAP_ENDPOINTS`, `EVENT_STREAMS_USER`,
//! `EVENT_STREAMS_PASSWORD`: the names a Code Engine service binding with the prefix
//! `EVENT_STREAMS` gives the credential's `kafka_brokers_sasl`, `bootstrap_endpoints`, `user` and
//! `password`), the overrides `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_MECHANISM`,
//! `KAFKA_SSL_CA_LOCATION`, `KAFKA_GROUP_PROTOCOL`, and `KAFKA_BROKERS` for a plain local broker.

mod brokers;
mod connection;
mod group;
mod security;

pub use brokers::{parse_broker_list, BROKER_VARIABLES, DEFAULT_BROKERS};
pub use connection::KafkaConfig;
pub use group::GroupProtocol;
pub use security::{SaslCredentials, SaslMechanism, SecurityProtocol};
