//! SASL_SSL end to end, as on IBM Event Streams: the three services configured only through
//! `EVENT_STREAMS_KAFKA_BROKERS_SASL` / `EVENT_STREAMS_USER` / `EVENT_STREAMS_PASSWORD` (plus
//! the local CA, and `KAFKA_SASL_MECHANISM` for SCRAM) run the seed flow against the local
//! broker's SASL_SSL listener — outbox relays, consumers and dead letters all on the encrypted
//! listener, which is the only one they know — once with PLAIN and once with SCRAM-SHA-512; the
//! outcomes and a dead letter are read back over SASL_SSL too. And a wrong password stops a
//! service at start-up with the authentication error, without waiting for the topic retries.

use std::time::Duration;

use contracts::topics::{dead_letter, TRANSACTION_REQUESTED};
use platform::kafka::{KafkaConfig, SaslMechanism, SecurityProtocol};
use platform::testing::{
    fresh_database_url, produce_raw, read_to_end, read_topic, summary_line, LocalKafka, SmtpServer,
};
use system_tests::{read_outcomes, run_to_exit, seed_flow, service_kafka_env, Stack, SERVICES};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The seed flow with every service on SASL_SSL with `mechanism`.
async fn seed_flow_over(mechanism: SaslMechanism) {
    let kafka = LocalKafka::load().isolated_sasl_ssl(mechanism);
    let env = service_kafka_env(&kafka);
    assert!(env.iter().all(|(k, _)| k != "KAFKA_BROKERS"), "{env:?}");
    let mut stack =
        Stack::start_with(kafka.clone(), SmtpServer::start().await, &[], |_, _| {}).await;
    for name in SERVICES {
        let log = stack.services[name].log();
        assert!(
            log.contains("SASL_SSL") && log.contains(&kafka.brokers[0]),
            "{name} started on the SASL_SSL listener:\n{log}"
        );
    }
    let client = reqwest::Client::new();
    seed_flow(&client, &stack).await;

    // The outcome events, read over SASL_SSL from every partition: one per transaction.
    let outcomes = read_outcomes(&stack.kafka, 4, TIMEOUT, Duration::from_secs(1)).await;
    let topics: Vec<(&str, &str)> = ["txn-123", "dep-1", "txn-124", "txn-125"]
        .iter()
        .map(|id| {
            let events = &outcomes[*id];
            assert_eq!(events.len(), 1, "{id}: {events:?}");
            (*id, events[0].topic.as_str())
        })
        .collect();
    assert_eq!(
        topics,
        [
            ("txn-123", "transaction.failed"),
            ("dep-1", "transaction.processed"),
            ("txn-124", "transaction.processed"),
            ("txn-125", "transaction.failed"),
        ]
    );

    // A record that can never be processed goes to the dead-letter topic over SASL_SSL.
    produce_raw(
        &stack.kafka,
        TRANSACTION_REQUESTED,
        "cust-001",
        "{not json",
        &[],
    )
    .await;
    let dlt = dead_letter(TRANSACTION_REQUESTED);
    let dead = read_topic(&stack.kafka, &dlt, TIMEOUT, |r| !r.is_empty()).await;
    assert!(!dead.is_empty(), "a dead letter on {dlt}");
    let dead = read_to_end(&stack.kafka, &dlt).await;
    assert_eq!(dead.len(), 1, "exactly one dead letter on {dlt}");
    assert_eq!(dead[0].payload, b"{not json");

    for name in SERVICES {
        assert_eq!(
            stack.service(name).terminate().await,
            Some(0),
            "{name} exits 0 on SIGTERM"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_flow_runs_over_sasl_ssl_with_plain_and_scram() {
    let _turn = crate::shared().await;
    seed_flow_over(SaslMechanism::Plain).await;
    seed_flow_over(SaslMechanism::ScramSha512).await;
    summary_line("sasl_ssl: seed flow passed (PLAIN, SCRAM-SHA-512)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_the_service_at_start_up_with_the_authentication_error() {
    let _turn = crate::shared().await;
    let local = LocalKafka::load();
    for mechanism in [SaslMechanism::Plain, SaslMechanism::ScramSha512] {
        let right = local.isolated_sasl_ssl(mechanism);
        let mut sasl = right.sasl.clone().expect("credentials");
        sasl.password = platform::config::Secret::new("not-the-password");
        let wrong = KafkaConfig {
            sasl: Some(sasl),
            ..right
        };
        assert_eq!(wrong.security_protocol, SecurityProtocol::SaslSsl);
        for name in SERVICES {
            let mut env = service_kafka_env(&wrong);
            env.push(("DATABASE_URL".to_string(), fresh_database_url().await));
            // Well under the 60 s of topic-creation retries a broker that is down gets.
            let exit = run_to_exit(name, &env, Duration::from_secs(30))
                .await
                .unwrap_or_else(|| panic!("{name}, {mechanism:?}: still running 30 s after start"));
            let context = format!("{name}, {mechanism:?}:\n{}", exit.stderr);
            assert!(exit.code.is_some_and(|c| c != 0), "{context}");
            let line = exit
                .stderr
                .lines()
                .find(|l| l.contains("Kafka authentication failed"))
                .unwrap_or_else(|| panic!("no authentication error: {context}"));
            assert!(
                line.contains("EVENT_STREAMS_PASSWORD"),
                "the line names what to check: {line}"
            );
            assert!(!exit.stderr.contains("not-the-password"), "{context}");
            assert!(
                !exit.stderr.contains("retrying topic creation"),
                "no retries: {context}"
            );
        }
    }
}
