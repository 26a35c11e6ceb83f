//! Kafka topic names (the seed's names) and their dead-letter companions.

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
