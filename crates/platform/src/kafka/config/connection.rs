//! The validated connection ([`KafkaConfig`]): read once from the environment, and turned into
//! the librdkafka configuration every client shares.

use std::path::PathBuf;

use rdkafka::ClientConfig;

use crate::foundation::env::{ConfigError, Env};

use super::brokers::{broker_list, parse_broker_list};
use super::group::GroupProtocol;
use super::security::{
    credentials, one_of, sasl, ssl_ca_location, SaslCredentials, SaslMechanism, SecurityProtocol,
};

/// A validated Kafka connection configuration (its `Debug` shows no password: [`Secret`](crate::foundation::env::Secret)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Security protocol.
    pub security_protocol: SecurityProtocol,
    /// SASL credentials, present exactly when the protocol uses SASL.
    pub sasl: Option<SaslCredentials>,
    /// CA file to trust for TLS (system store when absent).
    pub ssl_ca_location: Option<PathBuf>,
    /// Partitions of topics this service creates (`KAFKA_TOPIC_PARTITIONS`, default 3).
    pub topic_partitions: i32,
    /// Replication factor of topics this service creates (`KAFKA_TOPIC_REPLICATION_FACTOR`;
    /// default 3 on Event Streams, 1 on a local broker).
    pub topic_replication_factor: i32,
    /// Prefix of every topic name on the broker (`KAFKA_TOPIC_PREFIX`, default none): lets several
    /// environments, or tests, share one cluster. Services always see the unprefixed names.
    pub topic_prefix: String,
    /// The consumer group protocol (`KAFKA_GROUP_PROTOCOL`, default `classic`).
    pub group_protocol: GroupProtocol,
}

impl KafkaConfig {
    /// A plaintext connection to `brokers` with local defaults.
    pub fn plaintext(brokers: &str) -> Self {
        Self {
            brokers: parse_broker_list(brokers).unwrap_or_default(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl: None,
            ssl_ca_location: None,
            topic_partitions: 3,
            topic_replication_factor: 1,
            topic_prefix: String::new(),
            group_protocol: GroupProtocol::Classic,
        }
    }

    /// The broker-side name of `topic` (with the prefix).
    pub fn topic_name(&self, topic: &str) -> String {
        format!("{}{topic}", self.topic_prefix)
    }

    /// The service-side name of a broker topic (without the prefix).
    pub fn strip_prefix<'a>(&self, topic: &'a str) -> &'a str {
        topic.strip_prefix(&self.topic_prefix).unwrap_or(topic)
    }

    /// Reads and validates the connection from `env`. The brokers come from the first of
    /// [`BROKER_VARIABLES`](crate::kafka::config::BROKER_VARIABLES) that is set, else
    /// [`DEFAULT_BROKERS`](crate::kafka::config::DEFAULT_BROKERS); on Code Engine (`CE_APP` set)
    /// a missing broker list is an error, since no broker runs next to the application there.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let (brokers_var, brokers_text) = broker_list(env)?;
        let event_streams = brokers_var.starts_with("EVENT_STREAMS_");
        let brokers =
            parse_broker_list(&brokers_text).map_err(|p| ConfigError::new(brokers_var, p))?;
        let credentials = credentials(env)?;
        let default_protocol = match credentials {
            Some(_) => SecurityProtocol::SaslSsl,
            None => SecurityProtocol::Plaintext,
        };
        let security_protocol = one_of(env, "KAFKA_SECURITY_PROTOCOL", default_protocol)?;
        let mechanism = one_of(env, "KAFKA_SASL_MECHANISM", SaslMechanism::Plain)?;
        let sasl = sasl(security_protocol, mechanism, credentials)?;
        let ssl_ca_location = ssl_ca_location(env, security_protocol)?;
        let topic_partitions = positive_int(env, "KAFKA_TOPIC_PARTITIONS", 3)?;
        let default_replication = if event_streams { 3 } else { 1 };
        let topic_replication_factor =
            positive_int(env, "KAFKA_TOPIC_REPLICATION_FACTOR", default_replication)?;
        Ok(Self {
            brokers,
            security_protocol,
            sasl,
            ssl_ca_location,
            topic_partitions,
            topic_replication_factor,
            topic_prefix: topic_prefix(env)?,
            group_protocol: GroupProtocol::from_env(env)?,
        })
    }

    /// The librdkafka client configuration shared by producers, consumers and admin clients.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", client_id)
            .set("security.protocol", self.security_protocol.as_str())
            .set("socket.keepalive.enable", "true")
            // Small requests go out at once: with Nagle's algorithm a produce or fetch request
            // can wait for the broker's delayed ACK of the previous one (tens of milliseconds).
            .set("socket.nagle.disable", "true")
            // Fail fast on a wrong password or an unreachable broker instead of retrying forever.
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "10000")
            // Failover (a broker of the cluster dies or hangs): a silent connection is given up
            // after 10 s (librdkafka's default is 60 s), and leaders are looked up again at least
            // every 10 s besides the refresh an error triggers.
            .set("socket.timeout.ms", "10000")
            .set("topic.metadata.refresh.interval.ms", "10000");
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        if let Some(ca) = &self.ssl_ca_location {
            config.set("ssl.ca.location", ca.to_string_lossy());
        }
        if self.security_protocol.uses_tls() {
            config.set("ssl.endpoint.identification.algorithm", "https");
        }
        config
    }
}

/// `KAFKA_TOPIC_PREFIX`: letters, digits, `.`, `_` and `-` only (none by default).
fn topic_prefix(env: &impl Env) -> Result<String, ConfigError> {
    let prefix = env.var("KAFKA_TOPIC_PREFIX").unwrap_or_default();
    if prefix
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ConfigError::new(
            "KAFKA_TOPIC_PREFIX",
            "may hold only letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(prefix)
}

fn positive_int(env: &impl Env, variable: &'static str, default: i32) -> Result<i32, ConfigError> {
    match env.var(variable) {
        Some(v) => v
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ConfigError::new(variable, format!("`{v}` is not a positive integer"))),
        None => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::super::brokers::{BROKER_VARIABLES, DEFAULT_BROKERS};
    use super::*;

    fn config(env: &[(&str, &str)]) -> Result<KafkaConfig, ConfigError> {
        let map: std::collections::HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        KafkaConfig::from_env(&map)
    }

    #[test]
    fn defaults_to_the_local_plaintext_broker() {
        let c = config(&[]).unwrap();
        assert_eq!(c.brokers, vec!["127.0.0.1:9092"]);
        assert_eq!(c.security_protocol, SecurityProtocol::Plaintext);
        assert_eq!(c.sasl, None);
        assert_eq!((c.topic_partitions, c.topic_replication_factor), (3, 1));
    }

    #[test]
    fn topic_prefix_applies_at_the_broker_boundary() {
        let c = config(&[("KAFKA_TOPIC_PREFIX", "staging.")]).unwrap();
        assert_eq!(c.topic_name("Customer.created"), "staging.Customer.created");
        assert_eq!(
            c.strip_prefix("staging.Customer.created"),
            "Customer.created"
        );
        assert_eq!(config(&[]).unwrap().topic_name("x"), "x");
    }

    #[test]
    fn the_group_protocol_is_classic_unless_kip_848_is_asked_for() {
        assert_eq!(config(&[]).unwrap().group_protocol, GroupProtocol::Classic);
        let kip848 = config(&[("KAFKA_GROUP_PROTOCOL", " Consumer ")]).unwrap();
        assert_eq!(kip848.group_protocol, GroupProtocol::Consumer);
        let error = config(&[("KAFKA_GROUP_PROTOCOL", "cooperative")]).unwrap_err();
        assert_eq!(error.variable, "KAFKA_GROUP_PROTOCOL");
        assert!(error.to_string().contains("classic, consumer"), "{error}");
    }

    #[test]
    fn kafka_brokers_sets_a_plain_broker_list() {
        let c = config(&[("KAFKA_BROKERS", "k1:9092, k2:9092,")]).unwrap();
        assert_eq!(c.brokers, vec!["k1:9092", "k2:9092"]);
    }

    #[test]
    fn event_streams_credentials_mean_sasl_ssl_plain() {
        let c = config(&[
            (
                "EVENT_STREAMS_KAFKA_BROKERS_SASL",
                r#"["b0:9093","b1:9093"]"#,
            ),
            ("EVENT_STREAMS_USER", "token"),
            ("EVENT_STREAMS_PASSWORD", "api-key-123"),
        ])
        .unwrap();
        assert_eq!(c.brokers.len(), 2);
        assert_eq!(c.security_protocol, SecurityProtocol::SaslSsl);
        let sasl = c.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::Plain);
        assert_eq!(sasl.username, "token");
        assert_eq!(c.topic_replication_factor, 3);
        let rd = c.client_config("t");
        assert_eq!(rd.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(rd.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(rd.get("sasl.password"), Some("api-key-123"));
        assert_eq!(rd.get("bootstrap.servers"), Some("b0:9093,b1:9093"));
    }

    #[test]
    fn event_streams_brokers_win_over_kafka_brokers() {
        let c = config(&[
            ("EVENT_STREAMS_KAFKA_BROKERS_SASL", "es:9093"),
            ("KAFKA_BROKERS", "local:9092"),
        ])
        .unwrap();
        assert_eq!(c.brokers, vec!["es:9093"]);
    }

    #[test]
    fn event_streams_bootstrap_endpoints_as_a_code_engine_binding_gives_them() {
        // A binding with the prefix EVENT_STREAMS: `bootstrap_endpoints` is a comma list.
        let c = config(&[
            (
                "EVENT_STREAMS_BOOTSTRAP_ENDPOINTS",
                "broker-0-x.kafka.svc01.us-south.eventstreams.cloud.ibm.com:9093,\
                 broker-1-x.kafka.svc01.us-south.eventstreams.cloud.ibm.com:9093",
            ),
            ("EVENT_STREAMS_USER", "token"),
            ("EVENT_STREAMS_PASSWORD", "api-key-123"),
            ("KAFKA_BROKERS", "local:9092"),
        ])
        .unwrap();
        assert_eq!(
            c.brokers,
            vec![
                "broker-0-x.kafka.svc01.us-south.eventstreams.cloud.ibm.com:9093",
                "broker-1-x.kafka.svc01.us-south.eventstreams.cloud.ibm.com:9093"
            ]
        );
        assert_eq!(c.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(c.topic_replication_factor, 3);
        // The SASL broker list wins when both are given.
        let c = config(&[
            ("EVENT_STREAMS_KAFKA_BROKERS_SASL", r#"["sasl:9093"]"#),
            ("EVENT_STREAMS_BOOTSTRAP_ENDPOINTS", "bootstrap:9093"),
        ])
        .unwrap();
        assert_eq!(c.brokers, vec!["sasl:9093"]);
        let err = config(&[("EVENT_STREAMS_BOOTSTRAP_ENDPOINTS", "no-port")]).unwrap_err();
        assert_eq!(err.variable, "EVENT_STREAMS_BOOTSTRAP_ENDPOINTS");
    }

    #[test]
    fn on_code_engine_a_missing_broker_list_is_an_error_not_the_local_default() {
        let err = config(&[("CE_APP", "customer-service")]).unwrap_err();
        assert_eq!(err.variable, "KAFKA_BROKERS");
        let message = err.to_string();
        for needle in [
            "customer-service",
            "Code Engine",
            "EVENT_STREAMS_KAFKA_BROKERS_SASL",
            "EVENT_STREAMS_BOOTSTRAP_ENDPOINTS",
        ] {
            assert!(message.contains(needle), "{needle} missing from: {message}");
        }
        // Any broker variable is enough there; off Code Engine the local default stays.
        for variable in BROKER_VARIABLES {
            let c = config(&[("CE_APP", "customer-service"), (variable, "b:9093")]).unwrap();
            assert_eq!(c.brokers, vec!["b:9093"], "{variable}");
        }
        assert_eq!(config(&[]).unwrap().brokers, vec![DEFAULT_BROKERS]);
    }

    #[test]
    fn overrides_select_protocol_and_mechanism() {
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let c = config(&[
            ("KAFKA_BROKERS", "127.0.0.1:9093"),
            ("EVENT_STREAMS_USER", "alice"),
            ("EVENT_STREAMS_PASSWORD", "pw"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("KAFKA_SSL_CA_LOCATION", ca),
        ])
        .unwrap();
        assert_eq!(
            c.sasl.as_ref().unwrap().mechanism,
            SaslMechanism::ScramSha512
        );
        assert_eq!(c.client_config("t").get("ssl.ca.location"), Some(ca));
        let c = config(&[
            ("KAFKA_SECURITY_PROTOCOL", "SSL"),
            ("KAFKA_SSL_CA_LOCATION", ca),
        ])
        .unwrap();
        assert_eq!(c.security_protocol, SecurityProtocol::Ssl);
        assert_eq!(c.sasl, None);
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("KAFKA_BROKERS", "nohost")], "KAFKA_BROKERS"),
            (
                &[("EVENT_STREAMS_KAFKA_BROKERS_SASL", "[]")],
                "EVENT_STREAMS_KAFKA_BROKERS_SASL",
            ),
            (&[("EVENT_STREAMS_USER", "token")], "EVENT_STREAMS_PASSWORD"),
            (&[("EVENT_STREAMS_PASSWORD", "pw")], "EVENT_STREAMS_USER"),
            (
                &[("KAFKA_SECURITY_PROTOCOL", "TLS")],
                "KAFKA_SECURITY_PROTOCOL",
            ),
            (
                &[("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")],
                "EVENT_STREAMS_USER",
            ),
            (
                &[
                    ("EVENT_STREAMS_USER", "u"),
                    ("EVENT_STREAMS_PASSWORD", "p"),
                    ("KAFKA_SASL_MECHANISM", "GSSAPI"),
                ],
                "KAFKA_SASL_MECHANISM",
            ),
            (
                &[
                    ("EVENT_STREAMS_USER", "u"),
                    ("EVENT_STREAMS_PASSWORD", "p"),
                    ("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
                ],
                "KAFKA_SECURITY_PROTOCOL",
            ),
            (
                &[
                    ("KAFKA_SECURITY_PROTOCOL", "SSL"),
                    ("KAFKA_SSL_CA_LOCATION", "/nonexistent/ca.pem"),
                ],
                "KAFKA_SSL_CA_LOCATION",
            ),
            (
                &[("KAFKA_SSL_CA_LOCATION", "/nonexistent/ca.pem")],
                "KAFKA_SSL_CA_LOCATION",
            ),
            (&[("KAFKA_TOPIC_PARTITIONS", "0")], "KAFKA_TOPIC_PARTITIONS"),
            (
                &[("KAFKA_TOPIC_REPLICATION_FACTOR", "three")],
                "KAFKA_TOPIC_REPLICATION_FACTOR",
            ),
            (&[("KAFKA_TOPIC_PREFIX", "a b")], "KAFKA_TOPIC_PREFIX"),
        ];
        for (env, variable) in cases {
            let err = config(env).expect_err(variable);
            assert_eq!(err.variable, *variable, "{env:?}: {err}");
        }
    }

    #[test]
    fn a_bad_name_lists_the_accepted_values() {
        let err = config(&[("KAFKA_SECURITY_PROTOCOL", " tls ")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: KAFKA_SECURITY_PROTOCOL: \
             `TLS` is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
        );
        let err = config(&[
            ("EVENT_STREAMS_USER", "u"),
            ("EVENT_STREAMS_PASSWORD", "p"),
            ("KAFKA_SASL_MECHANISM", "gssapi"),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: KAFKA_SASL_MECHANISM: \
             `GSSAPI` is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
        );
        let c = config(&[
            ("KAFKA_SECURITY_PROTOCOL", " sasl_plaintext "),
            ("EVENT_STREAMS_USER", "u"),
            ("EVENT_STREAMS_PASSWORD", "p"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-256"),
        ])
        .unwrap();
        assert_eq!(c.security_protocol.as_str(), "SASL_PLAINTEXT");
        assert_eq!(c.sasl.unwrap().mechanism.as_str(), "SCRAM-SHA-256");
    }

    #[test]
    fn the_password_never_shows_in_debug_or_errors() {
        let c = config(&[
            ("EVENT_STREAMS_KAFKA_BROKERS_SASL", "b0:9093"),
            ("EVENT_STREAMS_USER", "token"),
            ("EVENT_STREAMS_PASSWORD", "s3cr3t-api-key"),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let err = config(&[
            ("EVENT_STREAMS_USER", "token"),
            ("EVENT_STREAMS_PASSWORD", "s3cr3t-api-key"),
            ("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        ])
        .unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
    }
}
