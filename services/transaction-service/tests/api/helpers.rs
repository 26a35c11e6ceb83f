//! Test harness: the service in-process against the real local broker (topics with a unique
//! prefix per test) and a fresh database, a collector of the records it publishes, and helpers to
//! produce records as other services (or other producers) would.

#![allow(dead_code)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contracts::envelope::EventType;
use contracts::{topics, CustomerCreated, EventMetadata};
use platform::kafka::{
    run_consumer, ConsumerOptions, HandleError, Handler, KafkaConfig, OutgoingRecord, Producer,
    Record, Rejected,
};
use platform::testing::{service_config, unique, LocalKafka, RunningService};
use platform::Definition;
use platform::{Database, Service, ServiceConfig};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use transaction_service::{LedgerSettings, TransactionService, MIGRATIONS, NAME};

/// How long asynchronous outcomes may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` until it yields a value; panics naming `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records of the given topics, as a consumer of another service would see them.
#[derive(Clone, Default)]
pub struct Collector {
    records: Arc<Mutex<Vec<Record>>>,
}

impl Handler for Collector {
    async fn handle(&self, records: &[Record]) -> Result<Vec<Rejected>, HandleError> {
        self.records
            .lock()
            .expect("collector lock")
            .extend_from_slice(records);
        Ok(Vec::new())
    }
}

impl Collector {
    /// Every record seen so far on `topic`.
    pub fn on(&self, topic: &str) -> Vec<Record> {
        self.records
            .lock()
            .expect("collector lock")
            .iter()
            .filter(|r| r.topic == topic)
            .cloned()
            .collect()
    }

    /// Payloads seen on `topic` for transaction `id`.
    pub fn payloads_for(&self, topic: &str, id: &str) -> Vec<Value> {
        self.on(topic)
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.payload).ok())
            .filter(|v| v["transactionId"] == id)
            .collect()
    }

    /// Outcome events (`transaction.processed` and `transaction.failed`) for transaction `id`,
    /// as (topic, payload).
    pub fn outcomes_for(&self, id: &str) -> Vec<(String, Value)> {
        [topics::TRANSACTION_PROCESSED, topics::TRANSACTION_FAILED]
            .into_iter()
            .flat_map(|topic| {
                self.payloads_for(topic, id)
                    .into_iter()
                    .map(move |v| (topic.to_string(), v))
            })
            .collect()
    }
}

/// The service under test and its surroundings.
pub struct Ledger {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// The service's database (to check ledger invariants).
    pub db: Database,
    /// Its URL (replicas share it).
    pub database_url: String,
    /// The isolated Kafka connection.
    pub kafka: KafkaConfig,
    /// A producer on the isolated topics.
    pub producer: Producer,
    /// What the service (and the tests) published.
    pub events: Collector,
    /// HTTP client.
    pub http: reqwest::Client,
    running: RunningService,
    collector_stop: CancellationToken,
}

impl Ledger {
    /// Starts the service with `settings` on fresh topics and a fresh database.
    pub async fn start(settings: LedgerSettings) -> Self {
        Self::start_configured(settings, |_| {}).await
    }

    /// Like [`Ledger::start`], with a chance to adjust the service configuration.
    pub async fn start_configured(
        settings: LedgerSettings,
        adjust: impl FnOnce(&mut ServiceConfig),
    ) -> Self {
        let kafka = LocalKafka::load().isolated();
        let config = service_config(NAME, kafka.clone()).await;
        Self::start_with(settings, config, adjust).await
    }

    /// Another replica of this ledger's service: the same topics and the same database.
    pub async fn replica(&self, settings: LedgerSettings) -> Self {
        let mut config = service_config(NAME, self.kafka.clone()).await;
        config.database_url = self.database_url.clone();
        Self::start_with(settings, config, |_| {}).await
    }

    async fn start_with(
        settings: LedgerSettings,
        mut config: ServiceConfig,
        adjust: impl FnOnce(&mut ServiceConfig),
    ) -> Self {
        adjust(&mut config);
        let kafka = config.kafka.clone();
        let database_url = config.database_url.clone();
        let mut service = Service::start_with(config, &MIGRATIONS, CancellationToken::new())
            .await
            .expect("service starts");
        let routes = TransactionService::build(&mut service, settings).expect("service builds");
        let db = service.db.clone();
        let producer = Producer::new(&kafka, "test-producer").expect("test producer");
        let running = RunningService::spawn(service, routes).await;

        let events = Collector::default();
        let collector_stop = CancellationToken::new();
        let options = ConsumerOptions::new(
            unique("collector"),
            &[
                topics::TRANSACTION_REQUESTED,
                topics::TRANSACTION_PROCESSED,
                topics::TRANSACTION_FAILED,
                &topics::dead_letter(topics::TRANSACTION_REQUESTED),
                &topics::dead_letter(topics::CUSTOMER_CREATED),
            ],
        );
        tokio::spawn({
            let (kafka, events, producer, stop) = (
                kafka.clone(),
                events.clone(),
                producer.clone(),
                collector_stop.clone(),
            );
            async move {
                if let Err(error) = run_consumer(&kafka, options, events, producer, stop).await {
                    panic!("collector failed: {error}");
                }
            }
        });
        let ledger = Self {
            base_url: running.base_url.clone(),
            db,
            database_url,
            kafka,
            producer,
            events,
            http: reqwest::Client::new(),
            running,
            collector_stop,
        };
        ledger.wait_until_ready().await;
        ledger
    }

    async fn wait_until_ready(&self) {
        eventually("the service to answer /healthz", || async {
            let response = self.http.get(self.url("/healthz")).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }

    /// Stops the service (orderly) and the collector.
    pub async fn stop(self) {
        self.collector_stop.cancel();
        self.running.stop().await.expect("service stops cleanly");
    }

    /// Full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `POST /transactions` with a JSON body: (status, body).
    pub async fn post(&self, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/transactions"))
            .json(&body)
            .send()
            .await
            .expect("POST /transactions");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST /transactions` with `body` sent as is (`application/json`): (status, body, content
    /// type).
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> (u16, Value, String) {
        let response = self
            .http
            .post(self.url("/transactions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /transactions");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (
            status,
            response.json().await.unwrap_or(Value::Null),
            content_type,
        )
    }

    /// `GET path`: (status, body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Publishes `Customer.created` for `id` as customer-service does (CloudEvents headers).
    pub async fn customer_created(&self, id: &str) {
        self.publish_customer(&CustomerCreated {
            id: id.to_string(),
            name: format!("Customer {id}"),
            email: format!("{id}@example.com"),
            created_at: chrono::Utc::now(),
        })
        .await;
    }

    /// Publishes `customer` on `Customer.created` with CloudEvents headers, whatever it holds.
    pub async fn publish_customer(&self, customer: &CustomerCreated) {
        let id = customer.id.as_str();
        let metadata = EventMetadata::new(
            uuid::Uuid::now_v7().to_string(),
            EventType::CustomerCreated,
            "/customer-service",
        );
        self.send(
            topics::CUSTOMER_CREATED,
            id,
            serde_json::to_string(customer).expect("customer json"),
            metadata.to_headers(),
        )
        .await;
    }

    /// Publishes `Customer.created` for each id and waits until their accounts are open.
    pub async fn open_accounts(&self, ids: &[&str]) {
        for id in ids {
            self.customer_created(id).await;
        }
        for id in ids {
            self.wait_account(id).await;
        }
    }

    /// Waits until account `id` exists; returns it.
    pub async fn wait_account(&self, id: &str) -> Value {
        let path = format!("/accounts/{id}");
        eventually(&format!("account {id} to open"), || async {
            let (status, body) = self.get(&path).await;
            (status == 200).then_some(body)
        })
        .await
    }

    /// The balance of account `id` (decimal string).
    pub async fn balance(&self, id: &str) -> String {
        let (status, body) = self.get(&format!("/accounts/{id}")).await;
        assert_eq!(status, 200, "GET /accounts/{id}: {body}");
        body["balance"].as_str().expect("balance").to_string()
    }

    /// Publishes a raw record.
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: String,
        headers: Vec<(&'static str, String)>,
    ) {
        let record = OutgoingRecord {
            topic: topic.to_string(),
            key: key.to_string(),
            payload,
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        };
        self.producer.send(&record).await.expect("record published");
    }

    /// Publishes a record of raw bytes (no headers) with a producer that allows records up to
    /// 2 MB, as a misbehaving producer might.
    pub async fn send_bytes(&self, topic: &str, key: &str, payload: &[u8]) {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = self
            .kafka
            .client_config("big-producer")
            .set("message.max.bytes", "2000000")
            .create()
            .expect("producer");
        let topic = self.kafka.topic_name(topic);
        producer
            .send(
                FutureRecord::to(&topic).key(key).payload(payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(error, _)| error)
            .expect("raw record published");
    }

    /// Publishes a credit of `amount` to `to` straight to `transaction.requested`, as another
    /// producer would (no CloudEvents headers).
    pub async fn send_credit(&self, id: &str, to: &str, amount: &str) {
        let payload = json!({"transactionId": id, "kind": "credit", "to": to,
                             "amount": amount, "requestedAt": chrono::Utc::now()});
        self.send(
            topics::TRANSACTION_REQUESTED,
            to,
            payload.to_string(),
            vec![],
        )
        .await;
    }

    /// Waits until at least `n` records reached `transaction.requested.DLT`; returns them.
    pub async fn dead_letters(&self, n: usize) -> Vec<Record> {
        self.dead_letters_of(topics::TRANSACTION_REQUESTED, n).await
    }

    /// Waits until at least `n` records reached the dead-letter topic of `topic`; returns them.
    pub async fn dead_letters_of(&self, topic: &str, n: usize) -> Vec<Record> {
        let dlt = topics::dead_letter(topic);
        eventually(&format!("{n} dead letters"), || async {
            let dead = self.events.on(&dlt);
            (dead.len() >= n).then_some(dead)
        })
        .await
    }

    /// How many requests are parked, waiting for an account.
    pub async fn parked(&self) -> i64 {
        platform::parking::parked_count(&self.db, transaction_service::handlers::REQUESTS_GROUP)
            .await
            .expect("parked count")
    }

    /// Waits until exactly `n` requests are parked.
    pub async fn wait_parked(&self, n: i64) {
        eventually(&format!("{n} parked requests"), || async {
            (self.parked().await == n).then_some(())
        })
        .await;
    }

    /// Waits for the (first) outcome event of transaction `id`: (topic, payload).
    pub async fn outcome(&self, id: &str) -> (String, Value) {
        eventually(&format!("an outcome event for {id}"), || async {
            self.events.outcomes_for(id).into_iter().next()
        })
        .await
    }

    /// Waits for a `transaction.processed` of `id` and returns it (fails on `transaction.failed`).
    pub async fn processed(&self, id: &str) -> Value {
        let (topic, payload) = self.outcome(id).await;
        assert_eq!(
            topic,
            topics::TRANSACTION_PROCESSED,
            "{id} should be processed: {payload}"
        );
        let event: contracts::TransactionProcessed =
            serde_json::from_value(payload.clone()).expect("a transaction.processed");
        assert_eq!(event.validate(), Ok(()), "consumers accept it: {payload}");
        payload
    }

    /// Waits for a `transaction.failed` of `id` and returns it.
    pub async fn failed(&self, id: &str) -> Value {
        let (topic, payload) = self.outcome(id).await;
        assert_eq!(
            topic,
            topics::TRANSACTION_FAILED,
            "{id} should fail: {payload}"
        );
        let event: contracts::TransactionFailed =
            serde_json::from_value(payload.clone()).expect("a transaction.failed");
        assert_eq!(event.validate(), Ok(()), "consumers accept it: {payload}");
        payload
    }

    /// Credits `amount` to `to` through the API and waits until it is processed.
    pub async fn deposit(&self, id: &str, to: &str, amount: &str) -> Value {
        let (status, body) = self
            .post(json!({"transactionId": id, "to": to, "amount": amount}))
            .await;
        assert_eq!(status, 202, "{body}");
        self.processed(id).await
    }
}

/// The value of header `name` of `record`, as text.
pub fn header(record: &Record, name: &str) -> Option<String> {
    record
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// A tiny deterministic pseudo-random generator (xorshift), seeded per test run.
pub struct Random(u64);

impl Random {
    /// Seeded from a fresh UUID (printed, to reproduce a failure).
    pub fn new() -> Self {
        let seed = (uuid::Uuid::new_v4().as_u128() as u64) | 1;
        eprintln!("random seed: {seed}");
        Self(seed)
    }

    /// The next value in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}
