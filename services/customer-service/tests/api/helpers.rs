//! What these tests need of customer-service beyond `platform::testing`: the service started
//! as its main starts it, its error replies checked to be problems, customers registered, and
//! its `Customer.created` events read back.

use std::ops::Deref;

use contracts::topics::CUSTOMER_CREATED;
use customer_service::CustomerService;
use platform::auth::ApiKeys;
use platform::testing::{outbox_drained, read_to_end, Reply, TestApp};
use platform::Record;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;

/// Where customers are registered and listed.
pub const CUSTOMERS: &str = "/app/customers";

/// A running customer-service: a [`TestApp`] whose calls check that every error is a problem.
pub struct App(TestApp);

impl Deref for App {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.0
    }
}

impl App {
    /// Starts a service without API keys.
    pub async fn start() -> Self {
        Self::start_with_keys(ApiKeys::default()).await
    }

    /// Starts a service that requires `api_keys`.
    pub async fn start_with_keys(api_keys: ApiKeys) -> Self {
        Self(
            TestApp::of::<CustomerService>()
                .api_keys(api_keys)
                .run(())
                .await,
        )
    }

    /// Sends `request`: the status and JSON body (`null` when none). An error reply must be
    /// `application/problem+json` with a `detail`.
    pub async fn call(&self, request: RequestBuilder) -> (StatusCode, Value) {
        let Reply {
            status,
            content_type,
            body,
        } = self.0.send(request).await;
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(content_type, "application/problem+json", "{body}");
            assert!(
                body["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{body}"
            );
        }
        (status, body)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(self.http.get(self.url(path))).await
    }

    /// `POST /app/customers` with `body`.
    pub async fn post(&self, body: Value) -> (StatusCode, Value) {
        self.call(self.http.post(self.url(CUSTOMERS)).json(&body))
            .await
    }

    /// `POST /app/customers` with `body`, which must register a customer (201); its body.
    pub async fn create(&self, body: Value) -> Value {
        let (status, created) = self.post(body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }

    /// Waits until the outbox relay has published everything, then reads the whole
    /// `Customer.created` topic (every partition, to its end).
    pub async fn published_events(&self) -> Vec<Record> {
        outbox_drained(&self.db).await;
        read_to_end(&self.kafka, CUSTOMER_CREATED).await
    }

    /// Stops the service; panics unless it shuts down cleanly.
    pub async fn stop(self) {
        self.0.stop().await;
    }
}

/// How many of `events` are keyed by customer `id`.
pub fn events_for(events: &[Record], id: &str) -> usize {
    events
        .iter()
        .filter(|record| record.key.as_deref() == Some(id))
        .count()
}
