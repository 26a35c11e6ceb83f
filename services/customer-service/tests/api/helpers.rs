//! The harness of these tests: a customer-service on the local broker and its own database,
//! called over HTTP, and its `Customer.created` topic read back.

use std::time::Duration;

use customer_service::{CustomerService, MIGRATIONS, NAME};
use platform::auth::ApiKeys;
use platform::kafka::KafkaConfig;
use platform::testing::{poll_until, read_to_end, service_config, LocalKafka, RunningService};
use platform::Definition;
use platform::{Database, Record, Service};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// How long the outbox relay may take to publish.
const DEADLINE: Duration = Duration::from_secs(30);

/// A running customer-service, its database and broker settings, and an HTTP client.
pub struct App {
    running: RunningService,
    db: Database,
    kafka: KafkaConfig,
    /// The client the requests go through.
    pub http: reqwest::Client,
}

impl App {
    /// Starts a service without API keys.
    pub async fn start() -> Self {
        Self::start_with_keys(ApiKeys::default()).await
    }

    /// Starts a service that requires `api_keys`.
    pub async fn start_with_keys(api_keys: ApiKeys) -> Self {
        let kafka = LocalKafka::load().isolated();
        let mut config = service_config(NAME, kafka.clone()).await;
        config.api_keys = api_keys;
        let mut service = Service::start_with(config, &MIGRATIONS, CancellationToken::new())
            .await
            .expect("service starts");
        let routes = CustomerService::build(&mut service, ()).expect("service builds");
        let db = service.db.clone();
        let running = RunningService::spawn(service, routes).await;
        Self {
            running,
            db,
            kafka,
            http: reqwest::Client::new(),
        }
    }

    /// The address of `path` on the service.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.base_url)
    }

    /// `POST /app/customers` with `body`.
    pub async fn post(&self, body: Value) -> (StatusCode, Value) {
        call(self.http.post(self.url("/app/customers")).json(&body)).await
    }

    /// `POST /app/customers` with `body`, which must register a customer (201); its body.
    pub async fn create(&self, body: Value) -> Value {
        let (status, created) = self.post(body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        call(self.http.get(self.url(path))).await
    }

    /// Waits until the outbox relay has published everything, then reads the whole
    /// `Customer.created` topic (every partition, to its end).
    pub async fn published_events(&self) -> Vec<Record> {
        let drained = poll_until(DEADLINE, || async {
            let pending = platform::outbox::pending(&self.db).await.unwrap();
            (pending == 0).then_some(())
        })
        .await;
        assert!(drained.is_some(), "events never published");
        read_to_end(&self.kafka, contracts::topics::CUSTOMER_CREATED).await
    }

    /// Stops the service; panics unless it shuts down cleanly.
    pub async fn stop(self) {
        self.running.stop().await.expect("clean shutdown");
    }
}

/// Sends `request`; the status and JSON body of the response, as [`read`] checks them.
pub async fn call(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    read(request.send().await.unwrap()).await
}

/// The status and JSON body (`null` when none) of `response`; an error must be problem+json
/// with a `detail`.
async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(content_type, "application/problem+json", "{body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
    (status, body)
}

/// The value of `record`'s header `name`, if any.
pub fn header(record: &Record, name: &str) -> Option<String> {
    record
        .headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| String::from_utf8(value.clone()).unwrap())
}

/// How many of `events` are keyed by customer `id`.
pub fn events_for(events: &[Record], id: &str) -> usize {
    events
        .iter()
        .filter(|record| record.key.as_deref() == Some(id))
        .count()
}

/// `join_all` without a `futures` dependency: spawn and await each.
pub async fn futures_join_all<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
