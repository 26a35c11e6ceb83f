//! A service in the test process: [`TestApp`] starts one on an ephemeral port with a fresh
//! database and isolated topics, and calls it; [`RunningService`] serves an already built
//! [`Service`](crate::runtime::service::Service).

use std::time::Duration;

use axum::Router;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use super::database::fresh_database_url;
use super::local_kafka::LocalKafka;
use super::produce::TestProducer;
use crate::guard::auth::ApiKeys;
use crate::kafka::KafkaConfig;
use crate::runtime::config::ServiceConfig;
use crate::runtime::service::Service;
use crate::store::db::Database;

/// A service configuration for tests: port 0, a fresh database, the given Kafka connection.
pub async fn service_config(
    name: &'static str,
    kafka: KafkaConfig,
) -> crate::runtime::config::ServiceConfig {
    crate::runtime::config::ServiceConfig {
        name,
        port: 0,
        database_url: fresh_database_url().await,
        database_ca: None,
        kafka,
        api_keys: crate::guard::auth::ApiKeys::default(),
        bind: crate::guard::bind::Bind {
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            anonymous: true,
        },
        log_format: crate::runtime::config::LogFormat::Pretty,
        otlp_endpoint: None,
        consumer: crate::runtime::config::ConsumerSettings {
            max_batch: 500,
            retry_limit: Duration::from_secs(300),
        },
        http: crate::guard::server::ServerSettings::default(),
        create_topics: true,
        fix_topic_configs: false,
        ready_stall: crate::foundation::health::DEFAULT_STALL,
        retention: crate::events::retention::RetentionSettings::default(),
        // Its own: other services of the test binary cannot read or move its series.
        metrics: crate::foundation::metrics_scope::Registry::private(),
    }
}

/// A service running in the test process on an ephemeral port.
pub struct RunningService {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// Cancel to stop the service gracefully.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Completes when the service has stopped.
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningService {
    /// Serves `routes` of `service` on 127.0.0.1 with an ephemeral port; returns once the
    /// broker has come (topics created, consumers starting), as tests expect.
    pub async fn spawn(service: crate::runtime::service::Service, routes: axum::Router) -> Self {
        let health = service.health.clone();
        let running = Self::spawn_now(service, routes).await;
        if tokio::time::timeout(Duration::from_secs(60), health.broker_ready())
            .await
            .is_err()
        {
            panic!("the service did not reach the broker within 60 s");
        }
        running
    }

    /// Serves `routes` of `service` at once, whether the broker has come or not.
    pub async fn spawn_now(
        service: crate::runtime::service::Service,
        routes: axum::Router,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let base_url = format!("http://{}", listener.local_addr().expect("local address"));
        let shutdown = service.shutdown.clone();
        let handle = tokio::spawn(service.serve_on(listener, routes));
        Self {
            base_url,
            shutdown,
            handle,
        }
    }

    /// Stops the service and waits for its orderly shutdown.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await?
    }
}

/// Adjusts a [`ServiceConfig`] before the service starts.
type Configure = Box<dyn FnOnce(&mut ServiceConfig) + Send>;

/// How to start a [`TestApp`]: from [`TestApp::of`] then [`Starter::run`], or from
/// [`TestApp::builder`] then [`Starter::start`]. `D` is the service's [`crate::runtime::definition::Definition`]
/// (`()` for a service wired by hand).
#[must_use = "call run or start"]
pub struct Starter<D = ()> {
    name: &'static str,
    migrations: &'static Migrator,
    kafka: Option<KafkaConfig>,
    database_url: Option<String>,
    configure: Vec<Configure>,
    service: std::marker::PhantomData<D>,
}

impl<D: crate::runtime::definition::Definition<Storage = Database>> Starter<D> {
    /// Starts service `D` with `settings` (`D::build` wires it), like its `main`; see
    /// [`Starter::start`].
    pub async fn run(self, settings: D::Settings) -> TestApp {
        self.start(|service| D::build(service, settings)).await
    }
}

impl<D> Starter<D> {
    fn new(name: &'static str, migrations: &'static Migrator) -> Self {
        Self {
            name,
            migrations,
            kafka: None,
            database_url: None,
            configure: Vec::new(),
            service: std::marker::PhantomData,
        }
    }

    /// Requires these API keys (none by default: the API is open).
    pub fn api_keys(self, keys: ApiKeys) -> Self {
        self.configure(move |config| config.api_keys = keys)
    }

    /// Adjusts the configuration (after the other knobs), e.g. `|c| c.ready_stall = …`.
    pub fn configure(mut self, adjust: impl FnOnce(&mut ServiceConfig) + Send + 'static) -> Self {
        self.configure.push(Box::new(adjust));
        self
    }

    /// Uses this Kafka connection instead of fresh isolated topics.
    pub fn kafka(mut self, kafka: KafkaConfig) -> Self {
        self.kafka = Some(kafka);
        self
    }

    /// Uses this database instead of a fresh one.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Another replica of `app`: the same topics and the same database.
    pub fn replica_of(self, app: &TestApp) -> Self {
        self.kafka(app.kafka.clone())
            .database_url(app.database_url.clone())
    }

    /// Starts the service, lets `build` wire its routes (and consumers), serves them on
    /// 127.0.0.1 with an ephemeral port and returns once the service has reached the broker.
    pub async fn start(
        self,
        build: impl FnOnce(&mut Service) -> anyhow::Result<Router>,
    ) -> TestApp {
        let kafka = self.kafka.unwrap_or_else(|| LocalKafka::load().isolated());
        let mut config = service_config(self.name, kafka).await;
        if let Some(url) = self.database_url {
            config.database_url = url;
        }
        for adjust in self.configure {
            adjust(&mut config);
        }
        let (kafka, database_url) = (config.kafka.clone(), config.database_url.clone());
        let mut service = Service::start_with(config, self.migrations, CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{} starts: {e:#}", self.name));
        // What `build` starts (committers, samplers) records into the service's registry.
        let metrics = service.config.metrics.clone();
        let routes = metrics
            .in_scope(|| build(&mut service))
            .unwrap_or_else(|e| panic!("{} builds: {e:#}", self.name));
        let db = service.db.clone();
        let running = RunningService::spawn(service, routes).await;
        TestApp {
            base_url: running.base_url.clone(),
            http: reqwest::Client::new(),
            db,
            database_url,
            producer: TestProducer::new(&kafka),
            kafka,
            running: Some(running),
        }
    }
}

/// A service running in the test process, and what a test needs to talk to it. Dropping it
/// cancels the service; [`TestApp::stop`] also waits for its orderly stop.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// An HTTP client.
    pub http: reqwest::Client,
    /// The service's database.
    pub db: Database,
    /// Its URL (replicas share it).
    pub database_url: String,
    /// The Kafka connection, with the test's own topic prefix.
    pub kafka: KafkaConfig,
    /// A producer on those topics.
    pub producer: TestProducer,
    running: Option<RunningService>,
}

/// An HTTP answer: status, `content-type` and the body as JSON (`Value::Null` when not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The `content-type` header; empty when absent.
    pub content_type: String,
    /// The body as JSON; `Value::Null` when it is empty or not JSON.
    pub body: Value,
}

impl TestApp {
    /// Starts to describe service `D` (its name and migrations); [`Starter::run`] then starts it
    /// with its settings, the way `main` does. `D` keeps a database: a test's app has one.
    pub fn of<D: crate::runtime::definition::Definition<Storage = Database>>() -> Starter<D> {
        Starter::new(D::NAME, D::migrations())
    }

    /// Starts to describe service `name` with its `migrations`; see [`Starter`].
    pub fn builder(name: &'static str, migrations: &'static Migrator) -> Starter {
        Starter::new(name, migrations)
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `GET path`: status and JSON body.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let reply = self.send(self.http.get(self.url(path))).await;
        (reply.status, reply.body)
    }

    /// `POST path` with a JSON body: status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let reply = self.send(self.http.post(self.url(path)).json(body)).await;
        (reply.status, reply.body)
    }

    /// Sends `request` (built on [`TestApp::http`], with any headers or body): the whole reply.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("HTTP request: {e}"));
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response.json().await.unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            body,
        }
    }

    /// The text of `/metrics` (Prometheus exposition).
    pub async fn metrics(&self) -> String {
        let response = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        response.text().await.expect("the /metrics text")
    }

    /// Stops the service and waits for its orderly shutdown; panics when it stops with an
    /// error.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running
                .stop()
                .await
                .unwrap_or_else(|e| panic!("orderly stop: {e:#}"));
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.shutdown.cancel();
        }
    }
}
