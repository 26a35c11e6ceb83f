//! Kafka topic names (the seed's names), their dead-letter companions, and the one table of
//! topic configurations ([`configs`]) that every place creating topics applies: the services'
//! admin client, `deploy/topics.txt` (generated from it, read by `deploy/codeengine/deploy.sh` and
//! `deploy/compose/create-topics.sh`) and the drift check at start-up.
//!
//! | Topic | `cleanup.policy` | `retention.ms` | Why |
//! |---|---|---|---|
//! | `Customer.created` | `compact` | (none: compaction keeps each key's last record) | keyed by customer id: any service can rebuild its customers from it |
//! | `transaction.requested`, `transaction.processed`, `transaction.failed` | `delete` | 604800000 (7 days) | far beyond any plausible outage (a weekend, a broken deploy) |
//! | every `<topic>.DLT` | `delete` | 2592000000 (30 days) | the longest Event Streams' Standard plan allows; dead letters wait for an operator |
//!
//! Event Streams (Standard plan) accepts `cleanup.policy` and `retention.ms` (1 hour to 30 days,
//! in whole hours); its default is 24 hours, which is why no topic may rely on the default.

/// A new customer was registered.
pub const CUSTOMER_CREATED: &str = "Customer.created";
/// A debit, credit or transfer was requested.
pub const TRANSACTION_REQUESTED: &str = "transaction.requested";
/// A requested transaction was applied to the ledger.
pub const TRANSACTION_PROCESSED: &str = "transaction.processed";
/// A requested transaction was rejected.
pub const TRANSACTION_FAILED: &str = "transaction.failed";

/// Every business topic of the system.
pub const ALL: [&str; 4] = [
    CUSTOMER_CREATED,
    TRANSACTION_REQUESTED,
    TRANSACTION_PROCESSED,
    TRANSACTION_FAILED,
];

/// How long `transaction.requested` and the outcome topics keep a record: 7 days, in ms.
pub const EVENT_RETENTION_MS: &str = "604800000";
/// How long a `<topic>.DLT` keeps a dead letter: 30 days in ms, the longest Event Streams'
/// Standard plan allows (its maximum `retention.ms`; Enterprise allows more).
pub const DEAD_LETTER_RETENTION_MS: &str = "2592000000";

/// A topic configuration: (name, value) as Kafka's topic configs spell them.
pub type TopicConfig = (&'static str, &'static str);

/// `Customer.created`: compacted (keyed by customer id), never deleted by age.
const COMPACTED: &[TopicConfig] = &[("cleanup.policy", "compact")];
/// Business events: deleted after [`EVENT_RETENTION_MS`].
const EVENTS: &[TopicConfig] = &[
    ("cleanup.policy", "delete"),
    ("retention.ms", EVENT_RETENTION_MS),
];
/// Dead letters: deleted after [`DEAD_LETTER_RETENTION_MS`].
const DEAD_LETTERS: &[TopicConfig] = &[
    ("cleanup.policy", "delete"),
    ("retention.ms", DEAD_LETTER_RETENTION_MS),
];

/// The configs `topic` (a name without prefix: a business topic or its `.DLT`) is created with
/// and checked against; `None` for a topic the system does not own.
pub fn configs(topic: &str) -> Option<&'static [TopicConfig]> {
    if let Some(original) = topic.strip_suffix(DEAD_LETTER_SUFFIX) {
        return ALL.contains(&original).then_some(DEAD_LETTERS);
    }
    match topic {
        CUSTOMER_CREATED => Some(COMPACTED),
        TRANSACTION_REQUESTED | TRANSACTION_PROCESSED | TRANSACTION_FAILED => Some(EVENTS),
        _ => None,
    }
}

/// `deploy/topics.txt` as generated from this table: one line per topic (business topics and
/// their dead letters), `<topic> <key>=<value>...`, after a comment header.
pub fn deploy_table() -> String {
    let mut text = String::from(
        "# Generated from crates/contracts/src/topics.rs \
         (`UPDATE_TOPICS=1 cargo test -p contracts --test topics`);\n\
         # a test fails when it differs. One line per topic: the name, then the configs it is\n\
         # created with (deploy/codeengine/deploy.sh: `es topic-create --config`,\n\
         # deploy/compose/create-topics.sh: `kafka-topics.sh --config`) and checked against.\n",
    );
    for topic in all_with_dead_letters() {
        text.push_str(&topic);
        for (key, value) in configs(&topic).unwrap_or_default() {
            text.push_str(&format!(" {key}={value}"));
        }
        text.push('\n');
    }
    text
}

/// Suffix of the dead-letter topic of a topic.
pub const DEAD_LETTER_SUFFIX: &str = ".DLT";

/// The dead-letter topic of `topic`: `<topic>.DLT`.
pub fn dead_letter(topic: &str) -> String {
    format!("{topic}{DEAD_LETTER_SUFFIX}")
}

/// Every topic the system needs, business topics and their dead letters.
pub fn all_with_dead_letters() -> Vec<String> {
    ALL.iter()
        .flat_map(|t| [t.to_string(), dead_letter(t)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_topics_follow_the_convention() {
        assert_eq!(dead_letter("Customer.created"), "Customer.created.DLT");
        let all = all_with_dead_letters();
        assert_eq!(all.len(), 8);
        assert!(all.contains(&"transaction.failed.DLT".to_string()));
    }

    #[test]
    fn every_topic_has_explicit_configs_with_the_documented_figures() {
        for topic in all_with_dead_letters() {
            assert!(configs(&topic).is_some_and(|c| !c.is_empty()), "{topic}");
        }
        assert_eq!(
            EVENT_RETENTION_MS,
            (7u64 * 24 * 3600 * 1000).to_string(),
            "7 days"
        );
        assert_eq!(
            DEAD_LETTER_RETENTION_MS,
            (30u64 * 24 * 3600 * 1000).to_string(),
            "30 days"
        );
        assert_eq!(
            configs(CUSTOMER_CREATED),
            Some(&[("cleanup.policy", "compact")][..])
        );
        assert_eq!(
            configs("transaction.failed.DLT")
                .and_then(|c| c.iter().find(|(k, _)| *k == "retention.ms")),
            Some(&("retention.ms", DEAD_LETTER_RETENTION_MS))
        );
        assert_eq!(configs("other"), None);
        assert_eq!(configs("other.DLT"), None);
    }
}

/// The consumer groups of the services (before `KAFKA_TOPIC_PREFIX`): part of the contract, since
/// the AsyncAPI document names them and operators reset or watch them by name.
pub mod groups {
    /// transaction-service: opens accounts from `Customer.created`.
    pub const TRANSACTION_ACCOUNTS: &str = "transaction-service.accounts";
    /// transaction-service: applies `transaction.requested`.
    pub const TRANSACTION_REQUESTS: &str = "transaction-service";
    /// notification-service: keeps its customer projection and sends welcomes.
    pub const NOTIFICATION_CUSTOMERS: &str = "notification-service.customers";
    /// notification-service: sends alerts for `transaction.processed` and `transaction.failed`.
    pub const NOTIFICATION_TRANSACTIONS: &str = "notification-service.transactions";
    /// The read-only console: reads every topic, dead letters included.
    pub const CONSOLE: &str = "console";
}
