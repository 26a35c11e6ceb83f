//! What is particular to transaction-service's tests: the [`Ledger`] (the service started by
//! `platform::testing`'s [`TestApp`], plus a [`Collector`] of the records it publishes) with
//! helpers to open accounts, request transactions and wait for their outcomes. Everything
//! generic (starting a service, waiting, reading and producing records) is `platform::testing`.

#![allow(dead_code)]

use std::ops::Deref;

use contracts::envelope::Event;
use contracts::{samples, topics, CustomerCreated, EventMetadata, Invalid, Validate};
use platform::kafka::Record;
use platform::testing::{eventually, Collector, RecordExt, Reply, TestApp, DEADLINE};
use serde_json::{json, Value};
use transaction_service::{LedgerSettings, TransactionService};

/// The topics the [`Ledger`]'s collector reads (and the dead-letter topics of [`CONSUMED`]).
const COLLECTED: [&str; 3] = [
    topics::TRANSACTION_REQUESTED,
    topics::TRANSACTION_PROCESSED,
    topics::TRANSACTION_FAILED,
];
/// The topics the service consumes.
const CONSUMED: [&str; 2] = [topics::TRANSACTION_REQUESTED, topics::CUSTOMER_CREATED];

/// The service under test (a [`TestApp`], which it derefs to) and what it published.
pub struct Ledger {
    app: TestApp,
    /// What the service (and the tests) published on the [`COLLECTED`] topics and the
    /// dead-letter topics.
    pub events: Collector,
}

impl Deref for Ledger {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// An answer to `POST /transactions`: status, `Retry-After`, `content-type` and the JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub content_type: String,
    pub body: Value,
}

impl Ledger {
    /// `POST /transactions` with `body`, answered as an [`Answer`].
    pub async fn post_answer(&self, body: &Value) -> Answer {
        let response = self
            .http
            .post(self.url("/transactions"))
            .json(body)
            .send()
            .await
            .unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (retry_after, content_type) = (header("retry-after"), header("content-type"));
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            retry_after,
            content_type: content_type.unwrap_or_default(),
            body,
        }
    }

    /// Starts the service with `settings` on fresh topics and a fresh database.
    pub async fn start(settings: LedgerSettings) -> Self {
        Self::collecting(TestApp::of::<TransactionService>().run(settings).await)
    }

    /// Collects what `app` publishes.
    pub fn collecting(app: TestApp) -> Self {
        let dead_letters = CONSUMED.map(topics::dead_letter);
        let topics: Vec<&str> = COLLECTED
            .into_iter()
            .chain(dead_letters.iter().map(String::as_str))
            .collect();
        let events = Collector::start(&app.kafka, &topics);
        Self { app, events }
    }

    /// Another replica of this ledger's service: the same topics and the same database.
    pub async fn replica(&self, settings: LedgerSettings) -> Self {
        let starter = TestApp::of::<TransactionService>().replica_of(&self.app);
        Self::collecting(starter.run(settings).await)
    }

    /// Stops the service (orderly) and the collector.
    pub async fn stop(self) {
        self.app.stop().await;
    }

    /// `POST /transactions` with a JSON body: (status, body).
    pub async fn post_transaction(&self, body: Value) -> (u16, Value) {
        let (status, body) = self.app.post("/transactions", &body).await;
        (status.as_u16(), body)
    }

    /// `POST /transactions` with `body` sent as is (`application/json`).
    pub async fn post_transaction_raw(&self, body: impl Into<reqwest::Body>) -> Reply {
        let request = self.http.post(self.url("/transactions"));
        self.send(
            request
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// Publishes `Customer.created` for `id` as customer-service does (CloudEvents headers).
    pub async fn customer_created(&self, id: &str) {
        self.publish_customer(&samples::customer(id, &format!("Customer {id}")))
            .await;
    }

    /// Publishes `customer` on `Customer.created` with CloudEvents headers, whatever it holds.
    pub async fn publish_customer(&self, customer: &CustomerCreated) {
        self.producer.publish("/customer-service", customer).await;
    }

    /// Publishes `Customer.created` for each id and waits until their accounts are open.
    pub async fn open_accounts(&self, ids: &[&str]) {
        for id in ids {
            self.customer_created(id).await;
        }
        for id in ids {
            let path = format!("/accounts/{id}");
            eventually(&format!("account {id} to open"), DEADLINE, || async {
                (self.get(&path).await.0 == 200).then_some(())
            })
            .await;
        }
    }

    /// The balance of account `id` (decimal string).
    pub async fn balance(&self, id: &str) -> String {
        let (status, body) = self.get(&format!("/accounts/{id}")).await;
        assert_eq!(status, 200, "GET /accounts/{id}: {body}");
        body["balance"].as_str().expect("balance").to_string()
    }

    /// Publishes `payload` on `transaction.requested` keyed `key` as another producer would:
    /// with the CloudEvents headers of `metadata`, or none.
    pub async fn send_request(&self, key: &str, payload: &[u8], metadata: Option<&EventMetadata>) {
        let headers = metadata.map(EventMetadata::to_headers).unwrap_or_default();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.producer
            .send(topics::TRANSACTION_REQUESTED, key, payload, &headers, None)
            .await;
    }

    /// Publishes a credit of `amount` to `to` straight to `transaction.requested`, as another
    /// producer would (no CloudEvents headers).
    pub async fn send_credit(&self, id: &str, to: &str, amount: &str) {
        let payload = json!({"transactionId": id, "kind": "credit", "to": to,
                             "amount": amount, "requestedAt": chrono::Utc::now()});
        self.send_request(to, payload.to_string().as_bytes(), None)
            .await;
    }

    /// Waits until at least `n` records reached the dead-letter topic of `topic`; returns them.
    pub async fn dead_letters_of(&self, topic: &str, n: usize) -> Vec<Record> {
        self.events.wait_for(&topics::dead_letter(topic), n).await
    }

    /// How many requests are parked, waiting for an account.
    pub async fn parked(&self) -> i64 {
        platform::parking::parked_count(&self.db, transaction_service::handlers::REQUESTS_GROUP)
            .await
            .expect("parked count")
    }

    /// Waits until exactly `n` requests are parked.
    pub async fn wait_parked(&self, n: i64) {
        eventually(&format!("{n} parked requests"), DEADLINE, || async {
            (self.parked().await == n).then_some(())
        })
        .await;
    }

    /// Payloads seen on `topic` for transaction `id`.
    pub fn payloads_for(&self, topic: &str, id: &str) -> Vec<Value> {
        self.events
            .on(topic)
            .iter()
            .map(RecordExt::json)
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

    /// Waits for a `transaction.processed` of `id` and returns it (fails on `transaction.failed`).
    pub async fn processed(&self, id: &str) -> Value {
        self.outcome::<contracts::TransactionProcessed>(id).await
    }

    /// Waits for a `transaction.failed` of `id` and returns it.
    pub async fn failed(&self, id: &str) -> Value {
        self.outcome::<contracts::TransactionFailed>(id).await
    }

    /// Waits for the (first) outcome event of transaction `id`, asserts that it is an `E` that
    /// consumers accept ([`Validate`]) and returns its payload.
    async fn outcome<E: Event + Validate>(&self, id: &str) -> Value {
        let (topic, payload) = eventually(&format!("an outcome event for {id}"), DEADLINE, || {
            let first = self.outcomes_for(id).into_iter().next();
            async move { first }
        })
        .await;
        assert_eq!(topic, E::TYPE.topic(), "{id}: {payload}");
        let event: E = serde_json::from_value(payload.clone()).expect("an outcome event");
        assert_eq!(
            event.validate(),
            Ok::<_, Invalid>(()),
            "consumers accept it: {payload}"
        );
        payload
    }

    /// Credits `amount` to `to` through the API and waits until it is processed.
    pub async fn deposit(&self, id: &str, to: &str, amount: &str) -> Value {
        let (status, body) = self
            .post_transaction(json!({"transactionId": id, "to": to, "amount": amount}))
            .await;
        assert_eq!(status, 202, "{body}");
        self.processed(id).await
    }
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

/// Whether the suite runs on PostgreSQL, which tests of several replicas need (they share one
/// database; a SQLite file belongs to one process); says why a test is skipped when not.
pub fn replicas_can_share_the_database() -> bool {
    let postgres = std::env::var("TEST_DATABASE_URL").is_ok_and(|u| u.starts_with("postgres"));
    if !postgres {
        println!(
            "skipped: replicas share a PostgreSQL database (set TEST_DATABASE_URL); \
             a SQLite file belongs to one process"
        );
    }
    postgres
}
