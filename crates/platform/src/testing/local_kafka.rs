//! The local broker (`cargo xtask kafka start`): its addresses and credentials, and Kafka
//! connections whose topics carry a prefix unique to one test.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::foundation::env::{ProcessEnv, Secret};
use crate::kafka::{GroupProtocol, KafkaConfig, SaslCredentials, SaslMechanism, SecurityProtocol};

use super::database::unique;

/// The local broker's addresses and credentials, from the `kafka.env` file its start wrote.
#[derive(Debug, Clone)]
pub struct LocalKafka {
    /// PLAINTEXT bootstrap address.
    pub brokers: String,
    /// SASL_SSL bootstrap address.
    pub sasl_brokers: String,
    /// CA certificate that signed the broker's TLS certificate.
    pub ca_location: PathBuf,
    /// SASL/PLAIN user (`token`).
    pub plain_user: String,
    /// SASL/PLAIN password (an API-key-like string).
    pub plain_password: Secret,
    /// SCRAM-SHA-512 user.
    pub scram_user: String,
    /// SCRAM-SHA-512 password.
    pub scram_password: Secret,
    /// Replication factor of the topics tests create (`KAFKA_TOPIC_REPLICATION_FACTOR`: 3 on
    /// the three-node cluster, 1 when the file does not say).
    pub replication: i32,
}

/// Path of the broker's env file: `EMS_KAFKA_ENV`, else `<cache>/kafka/kafka.env`.
pub fn kafka_env_path() -> PathBuf {
    if let Some(path) = std::env::var_os("EMS_KAFKA_ENV") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("EMS_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/event-microservices")
        });
    cache.join("kafka/kafka.env")
}

impl LocalKafka {
    /// Reads the local broker's env file; panics with the command to run when it is missing.
    pub fn load() -> Self {
        let path = kafka_env_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}. Start the local broker first: `cargo xtask kafka start` \
                 (or run the suite with `cargo xtask test`)",
                path.display()
            )
        });
        let vars: HashMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let get = |key: &str| {
            vars.get(key)
                .map(|v| v.to_string())
                .unwrap_or_else(|| panic!("{} has no {key}", path.display()))
        };
        Self {
            brokers: get("KAFKA_BROKERS"),
            sasl_brokers: get("KAFKA_SASL_BROKERS"),
            ca_location: PathBuf::from(get("KAFKA_CA_LOCATION")),
            plain_user: get("KAFKA_PLAIN_USER"),
            plain_password: Secret::new(get("KAFKA_PLAIN_PASSWORD")),
            scram_user: get("KAFKA_SCRAM_USER"),
            scram_password: Secret::new(get("KAFKA_SCRAM_PASSWORD")),
            replication: vars
                .get("KAFKA_TOPIC_REPLICATION_FACTOR")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
        }
    }

    /// A plaintext connection to the local broker, with the group protocol
    /// `KAFKA_GROUP_PROTOCOL` names (as the services read it; `cargo xtask test` clears it).
    pub fn plaintext(&self) -> KafkaConfig {
        KafkaConfig {
            topic_replication_factor: self.replication,
            group_protocol: GroupProtocol::from_env(&ProcessEnv).expect("KAFKA_GROUP_PROTOCOL"),
            ..KafkaConfig::plaintext(&self.brokers)
        }
    }

    /// A SASL_SSL connection with the given mechanism and credentials, trusting the local CA.
    pub fn sasl_ssl(
        &self,
        mechanism: SaslMechanism,
        username: &str,
        password: &str,
    ) -> KafkaConfig {
        KafkaConfig {
            brokers: vec![self.sasl_brokers.clone()],
            security_protocol: SecurityProtocol::SaslSsl,
            sasl: Some(SaslCredentials {
                mechanism,
                username: username.to_string(),
                password: Secret::new(password),
            }),
            ssl_ca_location: Some(self.ca_location.clone()),
            ..self.plaintext()
        }
    }
}

impl LocalKafka {
    /// A plaintext connection whose topics carry a unique prefix: a test's events never meet
    /// another test's. Two partitions per topic keep the broker light.
    pub fn isolated(&self) -> KafkaConfig {
        KafkaConfig {
            topic_prefix: format!("{}.", unique("t")),
            topic_partitions: 2,
            ..self.plaintext()
        }
    }
}

impl LocalKafka {
    /// Like [`LocalKafka::isolated`], over the SASL_SSL listener with `mechanism` and the
    /// broker's user for it (PLAIN: `token`; SCRAM-SHA-512: the SCRAM user).
    pub fn isolated_sasl_ssl(&self, mechanism: SaslMechanism) -> KafkaConfig {
        let (user, password) = match mechanism {
            SaslMechanism::Plain => (&self.plain_user, &self.plain_password),
            SaslMechanism::ScramSha512 => (&self.scram_user, &self.scram_password),
            SaslMechanism::ScramSha256 => panic!("the local broker has no SCRAM-SHA-256 user"),
        };
        KafkaConfig {
            topic_prefix: format!("{}.", unique("t")),
            topic_partitions: 2,
            ..self.sasl_ssl(mechanism, user, password.expose())
        }
    }
}

impl LocalKafka {
    /// Like [`LocalKafka::isolated`], with every topic (and its dead-letter topic) created:
    /// for tests that produce or consume before any service has created them.
    pub async fn isolated_with_topics(&self) -> KafkaConfig {
        let kafka = self.isolated();
        crate::kafka::ensure_topics(&kafka, &contracts::topics::all_with_dead_letters())
            .await
            .expect("create the isolated topics");
        kafka
    }
}
