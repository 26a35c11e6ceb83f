//! What is particular to notification-service's tests: its settings (fast retries), starting it
//! with a mail target, publishing events the way its upstream services do, and reading its
//! delivery log. Everything generic comes from `platform::testing`.

use std::time::Duration;

use contracts::envelope::{headers::DLT_ERROR, Event, EventMetadata};
use contracts::{TransactionKind, TransactionProcessed};
use notification_service::delivery::RetryPolicy;
use notification_service::mailer::MailTarget;
use notification_service::{NotificationService, Settings};
use platform::config::Secret;
use platform::testing::{poll_until, read_topic, RecordExt, DEADLINE};
use serde_json::Value;

pub use contracts::samples::{customer, failed, processed, requested as request};
pub use platform::testing::smtp::{read_mails, SmtpServer};
pub use platform::testing::{eventually, free_port, TestApp};

/// `ce_source` of the events the tests publish.
const SOURCE: &str = "/test";

/// Settings for tests: fast retries.
pub fn settings(mail: MailTarget) -> Settings {
    let mut settings = Settings::new(mail);
    settings.retry = RetryPolicy {
        max_attempts: 100,
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
    };
    settings
}

/// A processed deposit (a credit) of `amount` USD to `to`, whose balance is then `balance`.
pub fn deposited(
    transaction_id: &str,
    to: &str,
    amount: &str,
    balance: &str,
) -> TransactionProcessed {
    let credit = request(
        transaction_id,
        TransactionKind::Credit,
        None,
        Some(to),
        amount,
    );
    processed(credit, &[(to, balance)])
}

/// Asserts that `text` (a mail's body) says each of `parts`; shows the text when not.
pub fn assert_says(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "no {part:?} in: {text}");
    }
}

/// Starts the service with `settings`.
pub async fn start(settings: Settings) -> TestApp {
    TestApp::of::<NotificationService>().run(settings).await
}

/// Starts the service sending over SMTP to `smtp`.
pub async fn with_smtp(smtp: &SmtpServer) -> TestApp {
    start(settings(MailTarget::Smtp(Secret::new(smtp.url())))).await
}

/// Starts the service writing mail into a temporary folder that nobody reads.
pub async fn with_mail_folder() -> TestApp {
    let folder = tempfile::tempdir().unwrap().keep();
    start(settings(MailTarget::Folder(folder))).await
}

/// What the tests do with the running service.
pub trait NotificationApp {
    /// Publishes `event` with a fresh event id; returns the id.
    async fn publish<E: Event>(&self, event: &E) -> String;
    /// Publishes `event` with a fresh event id on partition 0; returns the id. Records of one
    /// partition are handled in order: once the last is handled, so are those before it.
    async fn publish_in_order<E: Event>(&self, event: &E) -> String;
    /// Publishes `event` again under event id `id` (a duplicate), on partition 0.
    async fn replay<E: Event>(&self, id: &str, event: &E);
    /// Publishes a `Customer.created` for each `(id, name)` and waits until each welcome is sent.
    async fn welcome(&self, customers: &[(&str, &str)]);
    /// `GET /notifications?customerId=`: the items.
    async fn log(&self, customer_id: &str) -> Vec<Value>;
    /// Waits until the customer's log satisfies `done`; panics with `what` and the log.
    async fn wait_log(
        &self,
        customer_id: &str,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value>;
    /// Waits until the customer has `n` deliveries, all sent.
    async fn wait_sent(&self, customer_id: &str, n: usize) -> Vec<Value>;
    /// The sum of the Prometheus sample lines containing all of `parts`.
    async fn metric(&self, parts: &[&str]) -> f64;
    /// Waits until at least `n` records reached the dead-letter topic of `topic`; returns
    /// their payloads with their `dlt_error` header.
    async fn dead_letters(&self, topic: &str, n: usize) -> Vec<(Value, String)>;
}

impl NotificationApp for TestApp {
    async fn publish<E: Event>(&self, event: &E) -> String {
        self.producer.publish(SOURCE, event).await.id
    }

    async fn publish_in_order<E: Event>(&self, event: &E) -> String {
        let id = uuid::Uuid::now_v7().to_string();
        self.replay(&id, event).await;
        id
    }

    async fn replay<E: Event>(&self, id: &str, event: &E) {
        let metadata = EventMetadata::new(id, E::TYPE, SOURCE);
        self.producer.send_event(&metadata, event, Some(0)).await;
    }

    async fn welcome(&self, customers: &[(&str, &str)]) {
        for (id, name) in customers {
            self.publish(&customer(id, name)).await;
        }
        for (id, _) in customers {
            self.wait_sent(id, 1).await;
        }
    }

    async fn log(&self, customer_id: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/notifications?customerId={customer_id}"))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["customerId"], customer_id);
        body["items"].as_array().unwrap().clone()
    }

    async fn wait_log(
        &self,
        customer_id: &str,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let log = poll_until(DEADLINE, || async {
            let log = self.log(customer_id).await;
            done(&log).then_some(log)
        })
        .await;
        match log {
            Some(log) => log,
            None => panic!(
                "timed out waiting for {what}; the log is {}",
                serde_json::to_string_pretty(&self.log(customer_id).await).unwrap_or_default()
            ),
        }
    }

    async fn wait_sent(&self, customer_id: &str, n: usize) -> Vec<Value> {
        self.wait_log(
            customer_id,
            &format!("{n} sent notifications for {customer_id}"),
            |log| log.len() == n && log.iter().all(|d| d["status"] == "sent"),
        )
        .await
    }

    async fn metric(&self, parts: &[&str]) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn dead_letters(&self, topic: &str, n: usize) -> Vec<(Value, String)> {
        let dlt = contracts::topics::dead_letter(topic);
        let records = read_topic(&self.kafka, &dlt, DEADLINE, |r| r.len() >= n).await;
        assert!(
            records.len() >= n,
            "{n} dead letters on {dlt}, got {}",
            records.len()
        );
        records
            .iter()
            .map(|r| (r.json(), r.header(DLT_ERROR).unwrap_or_default()))
            .collect()
    }
}
