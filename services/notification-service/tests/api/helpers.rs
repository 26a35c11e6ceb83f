//! Test helpers: the service in-process against the real broker and database, a real SMTP
//! server (aiosmtpd) writing a Maildir, an event producer, and polling with deadlines.

use std::time::{Duration, Instant};

use contracts::envelope::{Event, EventMetadata};
use notification_service::delivery::RetryPolicy;
use notification_service::mailer::MailTarget;
use notification_service::{NotificationService, Settings, MIGRATIONS, NAME};
use platform::config::Secret;
use platform::kafka::KafkaConfig;
use platform::testing::{service_config, LocalKafka, RunningService};
use platform::Definition;
use platform::Service;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Longest wait for any asynchronous outcome.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `probe` until it returns `Some`, failing with `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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

/// The service running in the test process, and what the test needs to talk to it.
pub struct App {
    pub running: RunningService,
    pub kafka: KafkaConfig,
    pub http: reqwest::Client,
    producer: FutureProducer,
}

impl App {
    pub async fn start(settings: Settings) -> Self {
        let kafka = LocalKafka::load().isolated();
        let config = service_config(NAME, kafka.clone()).await;
        let mut service = Service::start_with(config, &MIGRATIONS, CancellationToken::new())
            .await
            .expect("service starts");
        let routes = NotificationService::build(&mut service, settings).expect("service builds");
        let running = RunningService::spawn(service, routes).await;
        let producer = kafka
            .client_config("notification-service-test")
            .create()
            .expect("test producer");
        Self {
            running,
            kafka,
            http: reqwest::Client::new(),
            producer,
        }
    }

    pub async fn with_smtp(smtp: &SmtpServer) -> Self {
        Self::start(settings(MailTarget::Smtp(Secret::new(smtp.url())))).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.base_url)
    }

    /// Produces `event` onto its (prefixed) topic with CloudEvents headers and id `event_id`;
    /// on `partition` when given.
    pub async fn produce<E: Event>(&self, event_id: &str, event: &E, partition: Option<i32>) {
        let metadata = EventMetadata::new(event_id, E::TYPE, "/test");
        let headers =
            metadata
                .to_headers()
                .into_iter()
                .fold(OwnedHeaders::new(), |headers, (key, value)| {
                    headers.insert(Header {
                        key,
                        value: Some(value.as_str()),
                    })
                });
        let topic = self.kafka.topic_name(E::TYPE.topic());
        let payload = serde_json::to_string(event).unwrap();
        let mut record = FutureRecord::to(&topic)
            .key(event.key())
            .payload(&payload)
            .headers(headers);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("event produced");
    }

    /// Produces raw bytes onto `topic` (e.g. a malformed record).
    pub async fn produce_raw(&self, topic: &str, key: &str, payload: &str, partition: i32) {
        let topic = self.kafka.topic_name(topic);
        self.producer
            .send(
                FutureRecord::to(&topic)
                    .key(key)
                    .payload(payload)
                    .partition(partition),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("record produced");
    }

    /// `GET /notifications?customerId=`: the items.
    pub async fn log(&self, customer_id: &str) -> Vec<Value> {
        let response = self
            .http
            .get(self.url("/notifications"))
            .query(&[("customerId", customer_id)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["customerId"], customer_id);
        body["items"].as_array().unwrap().clone()
    }

    /// Waits until the customer's log satisfies `done`.
    pub async fn wait_log(
        &self,
        customer_id: &str,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let log = self.log(customer_id).await;
            if done(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the log is {}",
                serde_json::to_string_pretty(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the customer has `n` deliveries, all sent.
    pub async fn wait_sent(&self, customer_id: &str, n: usize) -> Vec<Value> {
        self.wait_log(
            customer_id,
            &format!("{n} sent notifications for {customer_id}"),
            |log| log.len() == n && log.iter().all(|d| d["status"] == "sent"),
        )
        .await
    }

    /// The value of a Prometheus counter line containing all of `parts`.
    pub async fn metric(&self, parts: &[&str]) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until at least `n` records reached the dead-letter topic of `topic`; returns them
    /// with their `dlt_error` header.
    pub async fn dead_letters(&self, topic: &str, n: usize) -> Vec<(Value, String)> {
        let dlt = contracts::topics::dead_letter(topic);
        let records =
            platform::testing::read_topic(&self.kafka, &dlt, DEADLINE, |r| r.len() >= n).await;
        assert!(
            records.len() >= n,
            "{n} dead letters on {dlt}, got {}",
            records.len()
        );
        records
            .iter()
            .map(|r| {
                let error = r
                    .headers
                    .iter()
                    .find(|(k, _)| k == contracts::envelope::headers::DLT_ERROR)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                (
                    serde_json::from_slice(&r.payload).unwrap_or(Value::Null),
                    error,
                )
            })
            .collect()
    }

    pub async fn stop(self) {
        self.running.stop().await.expect("clean shutdown");
    }
}

pub use platform::testing::free_port;
pub use platform::testing::smtp::{read_mails, SmtpServer};

pub use contracts::samples::{customer, failed, processed, requested as request};

/// A fresh event id.
pub fn event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
