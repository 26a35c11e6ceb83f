//! Topics on a broker: created for the stack, deleted after the tests.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

/// An admin client of `brokers`.
fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating a Kafka admin client")
}

/// Creates `topics` (ignoring those that exist) with `partitions` partitions, replication 1, and
/// the configs of `contracts::topics::configs` (retention, cleanup policy), as the services do.
pub fn create_topics(brokers: &str, topics: &[String], partitions: i32) -> Result<()> {
    let admin = admin(brokers)?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            contracts::topics::configs(t)
                .unwrap_or_default()
                .iter()
                .fold(
                    NewTopic::new(t, partitions, TopicReplication::Fixed(1)),
                    |new, (key, value)| new.set(key, value),
                )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results =
        futures::executor::block_on(admin.create_topics(&new, &opts)).context("creating topics")?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Deletes the topics the tests created (names `<kind>-<32 hex digits>.<topic>`, from
/// `platform::testing::unique`), so the local broker does not accumulate them run after run.
/// Returns how many were deleted.
pub fn delete_test_topics(brokers: &str) -> Result<usize> {
    delete_topics_where(brokers, is_test_topic)
}

/// Deletes every topic whose name starts with `prefix` (one run's isolated topics); returns how
/// many.
pub fn delete_topics_with_prefix(brokers: &str, prefix: &str) -> Result<usize> {
    delete_topics_where(brokers, |name| name.starts_with(prefix))
}

/// Deletes the topics of `brokers` whose names `doomed` picks (500 a request); returns how many.
fn delete_topics_where(brokers: &str, doomed: impl Fn(&str) -> bool) -> Result<usize> {
    let admin = admin(brokers)?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .context("listing topics")?;
    let names: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|name| doomed(name))
        .collect();
    for chunk in names.chunks(500) {
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
        futures::executor::block_on(admin.delete_topics(chunk, &opts))
            .context("deleting topics")?;
    }
    Ok(names.len())
}

/// `t-0123…ef.Customer.created` and the like: a test's isolated topic.
fn is_test_topic(name: &str) -> bool {
    let Some((prefix, _)) = name.split_once('.') else {
        return false;
    };
    let Some((_, id)) = prefix.split_once('-') else {
        return false;
    };
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_isolated_test_topics_are_test_topics() {
        assert!(is_test_topic(
            "t-0123456789abcdef0123456789abcdef.Customer.created"
        ));
        assert!(is_test_topic(
            "conn-0123456789abcdef0123456789abcdef.transaction.failed.DLT"
        ));
        assert!(!is_test_topic("Customer.created"));
        assert!(!is_test_topic("transaction.requested.DLT"));
        assert!(!is_test_topic("staging.Customer.created"));
        assert!(!is_test_topic("t-123.Customer.created"));
    }
}
