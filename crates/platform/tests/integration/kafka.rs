//! The Kafka module against the real local broker: every connection form the services support.

use std::time::Duration;

use contracts::envelope::{headers, EventMetadata, EventType};
use contracts::topics;
use platform::kafka::{
    check_connection, ensure_topics, KafkaConfig, KafkaError, OutgoingRecord, Producer,
    SaslMechanism, SecurityProtocol,
};
use platform::testing::{partition_count, read_to_end, unique, LocalKafka};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Creates the system's topics under a unique prefix, produces one record and reads it back.
async fn round_trip(config: KafkaConfig) {
    let config = KafkaConfig {
        topic_prefix: format!("{}.", unique("conn")),
        topic_partitions: 1,
        ..config
    };
    ensure_topics(&config, &topics::all_with_dead_letters())
        .await
        .expect("create topics");
    let producer = Producer::new(&config, "test").expect("producer");
    let metadata = EventMetadata::new(unique("evt"), EventType::CustomerCreated, "/test");
    let record = OutgoingRecord {
        topic: topics::CUSTOMER_CREATED.to_string(),
        key: "cust-1".to_string(),
        payload: r#"{"hello":"kafka"}"#.to_string(),
        headers: metadata
            .to_headers()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    };
    producer.send(&record).await.expect("delivery acknowledged");
    for topic in topics::all_with_dead_letters() {
        assert_eq!(
            partition_count(&config, &topic).await,
            Some(1),
            "{topic} was created with the configured partitions"
        );
    }
    // Every partition up to the end: the acknowledged record, once, and nothing else.
    let read = read_to_end(&config, topics::CUSTOMER_CREATED).await;
    assert_eq!(read.len(), 1, "the record comes back");
    assert_eq!(read[0].key.as_deref(), Some("cust-1"));
    assert_eq!(read[0].payload, br#"{"hello":"kafka"}"#);
    assert_eq!(read[0].metadata().id, metadata.id);
    let content_type = read[0]
        .headers
        .iter()
        .find(|(k, _)| k == headers::CONTENT_TYPE)
        .map(|(_, v)| v.as_slice());
    assert_eq!(content_type, Some(b"application/json".as_slice()));
}

#[tokio::test]
async fn plaintext_produce_and_consume() {
    round_trip(LocalKafka::load().plaintext()).await;
}

#[tokio::test]
async fn sasl_ssl_plain_with_the_event_streams_shape() {
    let local = LocalKafka::load();
    assert_eq!(local.plain_user, "token");
    let config = local.sasl_ssl(
        SaslMechanism::Plain,
        &local.plain_user,
        local.plain_password.expose(),
    );
    assert_eq!(config.security_protocol, SecurityProtocol::SaslSsl);
    round_trip(config).await;
}

#[tokio::test]
async fn sasl_ssl_scram_sha_512() {
    let local = LocalKafka::load();
    let config = local.sasl_ssl(
        SaslMechanism::ScramSha512,
        &local.scram_user,
        local.scram_password.expose(),
    );
    round_trip(config).await;
}

#[tokio::test]
async fn event_streams_variables_reach_the_sasl_listener() {
    let local = LocalKafka::load();
    let env = [
        (
            "EVENT_STREAMS_KAFKA_BROKERS_SASL",
            format!("[\"{}\"]", local.sasl_brokers),
        ),
        ("EVENT_STREAMS_USER", local.plain_user.clone()),
        (
            "EVENT_STREAMS_PASSWORD",
            local.plain_password.expose().to_string(),
        ),
        (
            "KAFKA_SSL_CA_LOCATION",
            local.ca_location.display().to_string(),
        ),
    ];
    let env: std::collections::HashMap<String, String> =
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let config = KafkaConfig::from_env(&env).expect("valid Event Streams configuration");
    assert_eq!(config.security_protocol, SecurityProtocol::SaslSsl);
    let brokers = check_connection(&config, TIMEOUT)
        .await
        .expect("metadata over SASL_SSL");
    assert_eq!(brokers, 1);
}

#[tokio::test]
async fn a_wrong_password_fails_fast_with_an_authentication_error() {
    let local = LocalKafka::load();
    for (mechanism, user) in [
        (SaslMechanism::Plain, local.plain_user.as_str()),
        (SaslMechanism::ScramSha512, local.scram_user.as_str()),
    ] {
        let config = local.sasl_ssl(mechanism, user, "not-the-password");
        let started = std::time::Instant::now();
        let error = check_connection(&config, TIMEOUT)
            .await
            .expect_err("wrong password must be refused");
        assert!(
            matches!(error, KafkaError::Authentication(_)),
            "{mechanism:?}: expected an authentication error, got: {error}"
        );
        assert!(!error.to_string().contains("not-the-password"));
        // Reported when the broker refuses, not when the whole timeout has passed.
        assert!(started.elapsed() < TIMEOUT, "took {:?}", started.elapsed());
    }
}

#[tokio::test]
async fn tls_fails_without_the_ca() {
    let local = LocalKafka::load();
    let mut config = local.sasl_ssl(
        SaslMechanism::Plain,
        &local.plain_user,
        local.plain_password.expose(),
    );
    config.ssl_ca_location = None;
    let error = check_connection(&config, TIMEOUT)
        .await
        .expect_err("an untrusted certificate must be refused");
    assert!(
        matches!(error, KafkaError::Tls(_)),
        "expected a TLS error, got: {error}"
    );
}

#[tokio::test]
async fn topic_creation_is_idempotent() {
    let config = KafkaConfig {
        topic_prefix: format!("{}.", unique("idem")),
        topic_partitions: 2,
        ..LocalKafka::load().plaintext()
    };
    let all = topics::all_with_dead_letters();
    assert_eq!(
        partition_count(&config, topics::CUSTOMER_CREATED).await,
        None
    );
    ensure_topics(&config, &all).await.expect("first creation");
    for topic in &all {
        assert_eq!(
            partition_count(&config, topic).await,
            Some(2),
            "{topic} exists with the configured partitions"
        );
    }
    // Existing topics are left as they are, whatever the configuration says now.
    let wider = KafkaConfig {
        topic_partitions: 3,
        ..config.clone()
    };
    ensure_topics(&wider, &all)
        .await
        .expect("second creation is a no-op");
    for topic in &all {
        assert_eq!(partition_count(&config, topic).await, Some(2), "{topic}");
    }
}
