//! Topic configs on the real broker: every topic is created with the table's configs
//! (`contracts::topics::configs`), and an existing topic whose configs drifted is reported, one
//! warning per topic naming each config with the expected and the actual value, then fixed on
//! request without losing its other overrides.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contracts::topics;
use platform::kafka::{check_topic_configs, ensure_topics, report_topic_configs, KafkaConfig};
use platform::testing::LocalKafka;
use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;

fn admin(config: &KafkaConfig) -> AdminClient<DefaultClientContext> {
    config.client_config("test-admin").create().unwrap()
}

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

/// The topic-level overrides of `topic` (unprefixed) as the broker describes them.
async fn overrides(config: &KafkaConfig, topic: &str) -> HashMap<String, String> {
    let name = config.topic_name(topic);
    let described = admin(config)
        .describe_configs(&[ResourceSpecifier::Topic(&name)], &options())
        .await
        .unwrap();
    let resource = described.into_iter().next().unwrap().unwrap();
    resource
        .entries
        .into_iter()
        .filter(|e| e.source == ConfigSource::DynamicTopic)
        .filter_map(|e| e.value.map(|v| (e.name, v)))
        .collect()
}

#[tokio::test]
async fn every_topic_is_created_with_the_tables_configs() {
    let config = LocalKafka::load().isolated();
    let all = topics::all_with_dead_letters();
    ensure_topics(&config, &all).await.unwrap();
    for topic in &all {
        let actual = overrides(&config, topic).await;
        let expected = topics::configs(topic).unwrap();
        assert!(!expected.is_empty(), "{topic}");
        for (key, value) in expected {
            assert_eq!(
                actual.get(*key).map(String::as_str),
                Some(*value),
                "{topic} {key}"
            );
        }
    }
    // The figures themselves, on the broker.
    let requested = overrides(&config, topics::TRANSACTION_REQUESTED).await;
    assert_eq!(requested["retention.ms"], "604800000", "7 days");
    assert_eq!(requested["cleanup.policy"], "delete");
    let compacted = overrides(&config, topics::CUSTOMER_CREATED).await;
    assert_eq!(compacted["cleanup.policy"], "compact");
    let dead = overrides(&config, &topics::dead_letter(topics::TRANSACTION_FAILED)).await;
    assert_eq!(dead["retention.ms"], "2592000000", "30 days");
    assert_eq!(
        check_topic_configs(&config, &all, false).await.unwrap(),
        vec![],
        "nothing drifted"
    );
}

/// Collects what the code under test logs (plain text).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Self;
    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

#[tokio::test]
async fn a_drifted_topic_is_reported_and_fixed_on_request() {
    let config = LocalKafka::load().isolated();
    // Made by hand as the broker's defaults would leave them (24 h, delete), with an override
    // of its own that the fix must keep.
    let name = config.topic_name(topics::CUSTOMER_CREATED);
    let drifted = NewTopic::new(&name, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "delete")
        .set("retention.ms", "86400000")
        .set("max.message.bytes", "500000");
    let created = admin(&config)
        .create_topics(&[drifted], &options())
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let all = vec![topics::CUSTOMER_CREATED.to_string()];
    // Creation leaves an existing topic alone.
    ensure_topics(&config, &all).await.unwrap();

    let drifts = check_topic_configs(&config, &all, false).await.unwrap();
    assert_eq!(drifts.len(), 1, "{drifts:?}");
    assert_eq!(drifts[0].topic, name);
    assert_eq!(drifts[0].config, "cleanup.policy");
    assert_eq!(drifts[0].expected, "compact");
    assert_eq!(drifts[0].actual.as_deref(), Some("delete"));

    // Start-up's report: one warning line for the topic, naming config, expected and actual.
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    {
        let _guard = tracing::subscriber::set_default(subscriber);
        report_topic_configs(&config, &all, false).await;
    }
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(
        warnings[0].contains(&name)
            && warnings[0].contains("cleanup.policy: expected compact, actual delete")
            && warnings[0].contains("KAFKA_FIX_TOPIC_CONFIGS"),
        "{text}"
    );
    assert_eq!(
        overrides(&config, topics::CUSTOMER_CREATED).await["cleanup.policy"],
        "delete",
        "reported, not changed"
    );

    // On request: fixed, and what was fixed is returned.
    let fixed = check_topic_configs(&config, &all, true).await.unwrap();
    assert_eq!(fixed, drifts);
    let after = overrides(&config, topics::CUSTOMER_CREATED).await;
    assert_eq!(after["cleanup.policy"], "compact");
    assert_eq!(after["max.message.bytes"], "500000", "other overrides kept");
    assert_eq!(
        check_topic_configs(&config, &all, false).await.unwrap(),
        vec![],
        "nothing left to fix"
    );
}

#[tokio::test]
async fn a_missing_topic_is_not_a_drift() {
    let config = LocalKafka::load().isolated();
    let all = topics::all_with_dead_letters();
    assert_eq!(
        check_topic_configs(&config, &all, true).await.unwrap(),
        vec![]
    );
}
